import type { FipsStandard, KeyAlgorithm } from '@olocus/hsm-core';

export const VENDOR_NAMES = ['softhsm', 'luna', 'nshield', 'utimaco', 'cloudhsm', 'yubihsm'] as const;
export type VendorName = (typeof VENDOR_NAMES)[number];

export interface VendorProfile {
  readonly name: VendorName;
  readonly displayName: string;
  /** Candidate module paths, first existing one wins when `libraryPath` is not configured. */
  readonly libraryPaths: readonly string[];
  /** What the "PIN" is on this product. */
  readonly pinFormat: 'pin' | 'user:password' | 'authkey-id+password';
  /** Checked before C_Login, so a malformed PIN never costs a login attempt. */
  readonly pinPattern?: RegExp;
  readonly pinHint: string;
  /** Keys live inside a hardware boundary. */
  readonly hardwareBacked: boolean;
  /**
   * What the vendor's documentation says about FIPS 140. Context for the operator only: it is
   * quoted in fipsStatus() notes and never reported as the status (see fips.ts).
   */
  readonly documentedFips: { readonly standard: Exclude<FipsStandard, 'unknown'>; readonly level: 0 | 1 | 2 | 3 | 4; readonly notes: string };
  /**
   * How the product names itself in C_GetTokenInfo / C_GetInfo: the manufacturer (token's or
   * library's) must match, and the token model too when given, or the profile does not describe
   * the device that answered.
   */
  readonly identity: { readonly manufacturer: RegExp; readonly model?: RegExp };
  /** Algorithms the product is documented not to do through standard PKCS#11 mechanisms. */
  readonly unsupportedAlgorithms: readonly KeyAlgorithm[];
  /** CKA_EC_PARAMS form for Ed25519 keys: DER OID 1.3.101.112 or PrintableString "edwards25519". */
  readonly edwardsParams: 'oid' | 'printable';
  /** Whether CKA_ALLOWED_MECHANISMS can be set at generation (used to mark RSA-PSS keys). */
  readonly allowedMechanisms: boolean;
  /** Whether CKA_START_DATE / CKA_END_DATE are accepted at generation (the key's own expiry). */
  readonly keyDates: boolean;
  readonly quirks: readonly string[];
  /** Only SoftHSM is exercised by this package's tests. */
  readonly testedHere: boolean;
}

const VENDOR_DECLARED = 'Vendor documentation, not evidence: check the CMVP entry for your exact model and firmware and state it in the attestation section.';

export const vendorProfiles: Readonly<Record<VendorName, VendorProfile>> = Object.freeze({
  softhsm: {
    name: 'softhsm',
    displayName: 'SoftHSM v2',
    libraryPaths: [
      '/usr/lib/softhsm/libsofthsm2.so',
      '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
      '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
      '/usr/local/lib/softhsm/libsofthsm2.so',
      '/usr/lib64/pkcs11/libsofthsm2.so',
      '/opt/homebrew/lib/softhsm/libsofthsm2.so',
    ],
    pinFormat: 'pin',
    pinHint: 'the token user PIN (4-255 characters)',
    hardwareBacked: false,
    identity: { manufacturer: /^SoftHSM/i, model: /^SoftHSM/i },
    documentedFips: { standard: 'none', level: 0, notes: 'SoftHSM is a software token for development and tests; it has no FIPS 140 validation.' },
    unsupportedAlgorithms: [],
    edwardsParams: 'oid',
    allowedMechanisms: true,
    keyDates: true,
    quirks: [
      'C_Initialize without CKF_OS_LOCKING_OK has no locking: always initialise with it',
      'no CKM_ECDSA_SHA256/384/512: the backend hashes in the client and uses CKM_ECDSA',
      'CKA_EC_POINT is returned DER-wrapped in an OCTET STRING',
      '2.6.1: concurrent token-object creation can fail with CKR_GENERAL_ERROR; key creation is serialised per token',
      'C_GetTokenInfo reports ulSessionCount as unavailable',
      'SOFTHSM2_CONF is read once, by C_Initialize',
      '2.6.1: CKA_START_DATE/CKA_END_DATE of private objects are stored unencrypted and then cannot be read (CKR_GENERAL_ERROR, also in C_FindObjectsInit templates): key dates are read from the public key',
    ],
    testedHere: true,
  },
  luna: {
    name: 'luna',
    displayName: 'Thales Luna Network HSM 7 / Luna PCIe',
    libraryPaths: ['/usr/safenet/lunaclient/lib/libCryptoki2_64.so', '/usr/safenet/lunaclient/lib/libCryptoki2.so'],
    pinFormat: 'pin',
    pinHint: 'the partition Crypto Officer (or Crypto User) password',
    hardwareBacked: true,
    identity: { manufacturer: /safenet|gemalto|thales/i, model: /luna/i },
    documentedFips: { standard: 'FIPS 140-2', level: 3, notes: `Luna 7 is sold as FIPS 140-2 Level 3 (newer firmware: FIPS 140-3 Level 3). ${VENDOR_DECLARED}` },
    unsupportedAlgorithms: [],
    edwardsParams: 'oid',
    allowedMechanisms: true,
    keyDates: true,
    quirks: [
      'in FIPS mode (partition policy) CKM_RSA_PKCS raw signing and non-approved key sizes may be refused: the backend falls back to CKM_SHA256_RSA_PKCS(_PSS) when the raw mechanism is not listed',
      'older firmware exposes EdDSA only under vendor-defined mechanism numbers, which the probe does not claim',
      'HA groups appear as a virtual slot; select it by tokenLabel',
      'the client configuration is read from Chrystoki.conf (ChrystokiConfigurationPath)',
    ],
    testedHere: false,
  },
  nshield: {
    name: 'nshield',
    displayName: 'Entrust nShield (Connect, Solo, 5c)',
    libraryPaths: ['/opt/nfast/toolkits/pkcs11/libcknfast.so'],
    pinFormat: 'pin',
    pinHint: 'the softcard or Operator Card Set passphrase',
    hardwareBacked: true,
    identity: { manufacturer: /ncipher|entrust|thales/i },
    documentedFips: { standard: 'FIPS 140-2', level: 3, notes: `nShield XC / Solo XC are sold as FIPS 140-2 Level 3, nShield 5 as FIPS 140-3 Level 3. ${VENDOR_DECLARED}` },
    unsupportedAlgorithms: [],
    edwardsParams: 'oid',
    allowedMechanisms: false,
    keyDates: true,
    quirks: [
      'set CKNFAST_LOADSHARING=1 to see softcards as one slot; token labels are softcard/OCS names',
      'module-protected keys need CKNFAST_FAKE_ACCELERATOR_LOGIN or a login-less configuration',
      'the Security World must be present on the client (/opt/nfast/kmdata)',
      'RSA-PSS keys cannot be marked with CKA_ALLOWED_MECHANISMS; keys default to PKCS#1 v1.5 when reloaded',
    ],
    testedHere: false,
  },
  utimaco: {
    name: 'utimaco',
    displayName: 'Utimaco CryptoServer / SecurityServer (PKCS#11 R3)',
    libraryPaths: ['/opt/utimaco/lib/libcs_pkcs11_R3.so', '/opt/utimaco/PKCS11_R3/lib/libcs_pkcs11_R3.so', '/usr/lib/libcs_pkcs11_R3.so'],
    pinFormat: 'pin',
    pinHint: 'the slot user PIN',
    hardwareBacked: true,
    identity: { manufacturer: /utimaco/i },
    documentedFips: { standard: 'FIPS 140-2', level: 3, notes: `CryptoServer Se-Series Gen2 is sold as FIPS 140-2 Level 3. ${VENDOR_DECLARED}` },
    unsupportedAlgorithms: [],
    edwardsParams: 'oid',
    allowedMechanisms: true,
    keyDates: true,
    quirks: [
      'configuration from cs_pkcs11_R3.cfg (CS_PKCS11_R3_CFG); slots map to HSM slots',
      'the device or cluster address is set in the configuration file, not by this backend',
    ],
    testedHere: false,
  },
  cloudhsm: {
    name: 'cloudhsm',
    displayName: 'AWS CloudHSM (Client SDK 5)',
    libraryPaths: ['/opt/cloudhsm/lib/libcloudhsm_pkcs11.so'],
    pinFormat: 'user:password',
    pinPattern: /^[^:\s]+:.+$/s,
    pinHint: 'crypto-user name and password joined by a colon: `user:password`',
    hardwareBacked: true,
    identity: { manufacturer: /amazon|aws|marvell|cavium/i },
    documentedFips: { standard: 'FIPS 140-2', level: 3, notes: `hsm1.medium is sold as FIPS 140-2 Level 3, hsm2m.medium as FIPS 140-3 Level 3 (in FIPS mode clusters). ${VENDOR_DECLARED}` },
    unsupportedAlgorithms: [],
    edwardsParams: 'oid',
    allowedMechanisms: false,
    keyDates: false,
    quirks: [
      'one slot per cluster; token label is "hsm1"',
      'CKA_START_DATE/CKA_END_DATE are not accepted at generation',
      'the client must be configured (configure-pkcs11 -a <ENI IP> / --cluster-id) before use',
      'key generation is replicated to every HSM in the cluster: slower than signing by orders of magnitude',
    ],
    testedHere: false,
  },
  yubihsm: {
    name: 'yubihsm',
    displayName: 'Yubico YubiHSM 2',
    libraryPaths: ['/usr/lib/x86_64-linux-gnu/pkcs11/yubihsm_pkcs11.so', '/usr/local/lib/pkcs11/yubihsm_pkcs11.so', '/usr/lib64/pkcs11/yubihsm_pkcs11.so'],
    pinFormat: 'authkey-id+password',
    pinPattern: /^[0-9a-fA-F]{4}.+$/s,
    pinHint: 'four hex digits of the authentication key id followed by its password, e.g. `0001password`',
    hardwareBacked: true,
    identity: { manufacturer: /yubico/i, model: /yubihsm/i },
    documentedFips: { standard: 'FIPS 140-2', level: 3, notes: `Only the "YubiHSM 2 FIPS" model is sold as FIPS 140-2 Level 3; the standard YubiHSM 2 has no validation. ${VENDOR_DECLARED}` },
    unsupportedAlgorithms: [],
    edwardsParams: 'oid',
    allowedMechanisms: false,
    keyDates: true,
    quirks: [
      'at most 16 sessions per device: the pool is capped by ulMaxSessionCount',
      'connector URL comes from yubihsm_pkcs11.conf (YUBIHSM_PKCS11_CONF)',
      'CKA_ID is the 2-byte object id: the UTF-8 key-id scheme of this backend does not fit, so generateKeyPair is expected to fail there; keys made with yubihsm-shell are usable through `pkcs11:id=%xx%xx` URIs (not tested)',
      'RSA-4096 generation takes minutes',
    ],
    testedHere: false,
  },
});

export function getVendorProfile(name: VendorName): VendorProfile {
  return vendorProfiles[name];
}
