import { HsmError, algorithmInfo, type KeyAlgorithm } from '@olocus/hsm-core';

/** The CryptoKeyVersionAlgorithm of each contract algorithm (Cloud KMS fixes padding and hash per key). */
export const GCP_ALGORITHM_OF: Readonly<Partial<Record<KeyAlgorithm, string>>> = Object.freeze({
  Ed25519: 'EC_SIGN_ED25519',
  ECDSA_P256: 'EC_SIGN_P256_SHA256',
  ECDSA_P384: 'EC_SIGN_P384_SHA384',
  RSA_2048: 'RSA_SIGN_PKCS1_2048_SHA256',
  RSA_3072: 'RSA_SIGN_PKCS1_3072_SHA256',
  RSA_4096: 'RSA_SIGN_PKCS1_4096_SHA256',
  RSA_PSS_2048: 'RSA_SIGN_PSS_2048_SHA256',
  RSA_PSS_3072: 'RSA_SIGN_PSS_3072_SHA256',
  RSA_PSS_4096: 'RSA_SIGN_PSS_4096_SHA256',
});

const CONTRACT_OF: ReadonlyMap<string, KeyAlgorithm> = new Map(Object.entries(GCP_ALGORITHM_OF).map(([k, v]) => [v!, k as KeyAlgorithm]));

/** The contract algorithm of a Cloud KMS version algorithm, or undefined for one the library cannot use. */
export function contractAlgorithm(gcpAlgorithm: string): KeyAlgorithm | undefined {
  return CONTRACT_OF.get(gcpAlgorithm);
}

export function gcpAlgorithm(algorithm: KeyAlgorithm): string {
  const name = GCP_ALGORITHM_OF[algorithm];
  if (name === undefined) {
    throw new HsmError(
      'UnsupportedAlgorithm',
      algorithm === 'ECDSA_P521'
        ? 'Cloud KMS has no P-521 keys (ECDSA_P521); use ECDSA_P384, or a backend that offers P-521 (AWS KMS, Azure Key Vault, PKCS#11)'
        : `Cloud KMS has no ${algorithm} signing keys`,
      { details: { field: 'algorithm', algorithm } },
    );
  }
  return name;
}

/** The digest field of AsymmetricSignRequest for an algorithm that signs a digest. */
export function digestField(algorithm: KeyAlgorithm): 'sha256' | 'sha384' | 'sha512' {
  const hash = algorithmInfo(algorithm).hash;
  return hash === 'SHA-384' ? 'sha384' : hash === 'SHA-512' ? 'sha512' : 'sha256';
}

/** pure Ed25519 sends the message itself; Cloud KMS takes at most 64 KiB in `data`. */
export const ED25519_MAX_MESSAGE_BYTES = 64 * 1024;
