/**
 * The algorithms of the contract. The names are the ones the CLI accepts, so a
 * script, a config file and the API spell an algorithm the same way.
 */
export const KEY_ALGORITHMS = [
  'Ed25519',
  'ECDSA_P256',
  'ECDSA_P384',
  'ECDSA_P521',
  'RSA_2048',
  'RSA_3072',
  'RSA_4096',
  'RSA_PSS_2048',
  'RSA_PSS_3072',
  'RSA_PSS_4096',
] as const;

export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

export type HashAlgorithm = 'SHA-256' | 'SHA-384' | 'SHA-512';

export type KeyFamily = 'EdDSA' | 'ECDSA' | 'RSA';

export type NamedCurve = 'P-256' | 'P-384' | 'P-521' | 'Ed25519';

export interface AlgorithmInfo {
  readonly name: KeyAlgorithm;
  readonly family: KeyFamily;
  /** Curve for ECDSA and EdDSA keys. */
  readonly curve?: NamedCurve;
  /** Modulus length for RSA keys. */
  readonly modulusBits?: number;
  /** RSA padding used for signatures. */
  readonly padding?: 'PKCS1v15' | 'PSS';
  /**
   * Hash applied to the message before signing; `undefined` for Ed25519,
   * which signs the message itself (PureEdDSA).
   */
  readonly hash?: HashAlgorithm;
  /** Security strength in bits (SP 800-57 Part 1 Table 2). */
  readonly securityBits: number;
  /** Length of a raw signature in bytes (ECDSA r||s, Ed25519, RSA modulus). */
  readonly signatureBytes: number;
}

const table: Record<KeyAlgorithm, AlgorithmInfo> = {
  Ed25519: { name: 'Ed25519', family: 'EdDSA', curve: 'Ed25519', securityBits: 128, signatureBytes: 64 },
  ECDSA_P256: { name: 'ECDSA_P256', family: 'ECDSA', curve: 'P-256', hash: 'SHA-256', securityBits: 128, signatureBytes: 64 },
  ECDSA_P384: { name: 'ECDSA_P384', family: 'ECDSA', curve: 'P-384', hash: 'SHA-384', securityBits: 192, signatureBytes: 96 },
  ECDSA_P521: { name: 'ECDSA_P521', family: 'ECDSA', curve: 'P-521', hash: 'SHA-512', securityBits: 256, signatureBytes: 132 },
  RSA_2048: { name: 'RSA_2048', family: 'RSA', modulusBits: 2048, padding: 'PKCS1v15', hash: 'SHA-256', securityBits: 112, signatureBytes: 256 },
  RSA_3072: { name: 'RSA_3072', family: 'RSA', modulusBits: 3072, padding: 'PKCS1v15', hash: 'SHA-256', securityBits: 128, signatureBytes: 384 },
  RSA_4096: { name: 'RSA_4096', family: 'RSA', modulusBits: 4096, padding: 'PKCS1v15', hash: 'SHA-256', securityBits: 152, signatureBytes: 512 },
  RSA_PSS_2048: { name: 'RSA_PSS_2048', family: 'RSA', modulusBits: 2048, padding: 'PSS', hash: 'SHA-256', securityBits: 112, signatureBytes: 256 },
  RSA_PSS_3072: { name: 'RSA_PSS_3072', family: 'RSA', modulusBits: 3072, padding: 'PSS', hash: 'SHA-256', securityBits: 128, signatureBytes: 384 },
  RSA_PSS_4096: { name: 'RSA_PSS_4096', family: 'RSA', modulusBits: 4096, padding: 'PSS', hash: 'SHA-256', securityBits: 152, signatureBytes: 512 },
};

export function isKeyAlgorithm(value: unknown): value is KeyAlgorithm {
  return typeof value === 'string' && (KEY_ALGORITHMS as readonly string[]).includes(value);
}

export function algorithmInfo(algorithm: KeyAlgorithm): AlgorithmInfo {
  const info = table[algorithm];
  if (!info) throw new TypeError(`unknown key algorithm "${String(algorithm)}"`);
  return info;
}

/** node:crypto's digest name for a contract hash. */
export function nodeHashName(hash: HashAlgorithm): 'sha256' | 'sha384' | 'sha512' {
  return hash === 'SHA-256' ? 'sha256' : hash === 'SHA-384' ? 'sha384' : 'sha512';
}

/** PSS salt length used everywhere in the library: the digest length (RFC 8017 recommendation). */
export function pssSaltLength(hash: HashAlgorithm): number {
  return hash === 'SHA-256' ? 32 : hash === 'SHA-384' ? 48 : 64;
}
