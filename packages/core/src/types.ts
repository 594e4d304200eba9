import type { KeyAlgorithm } from './algorithms.js';

export type KeyUsage = 'sign' | 'verify';

/** What a caller asks a backend to generate. */
export interface KeySpec {
  /**
   * The caller's name for the key: letters, digits, `.`, `_`, `-`, `:`; 1–128 characters.
   * Unique within a backend. It becomes the stable reference's basis (PKCS#11 CKA_ID/CKA_LABEL,
   * cloud key name), so it survives restarts.
   */
  id: string;
  algorithm: KeyAlgorithm;
  /** Defaults to ['sign', 'verify']. */
  usages?: KeyUsage[];
  /** After this instant the backend refuses to sign with the key (KeyExpired). */
  expiresAt?: Date;
  /** Free, non-secret labels stored beside the key where the backend can. */
  labels?: Record<string, string>;
}

/**
 * A key as the library names it. `ref` is stable across restarts and reconnects:
 * never a session-scoped PKCS#11 object handle.
 */
export interface HsmKeyHandle {
  id: string;
  /** Backend-specific stable reference: `pkcs11:id=%..;object=..`, a KMS key ARN, a Key Vault key id... */
  ref: string;
  algorithm: KeyAlgorithm;
  usages: KeyUsage[];
  createdAt: Date;
  expiresAt?: Date;
  /** The backend `type` that holds the key. */
  backend: string;
  /** Non-secret backend facts (slot, key version, CKA_ID hex...). */
  metadata: Record<string, string>;
}

/** A reference to a key: its id, or a handle returned earlier. */
export type KeyRef = string | HsmKeyHandle;

export interface PublicKeyInfo {
  algorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo, DER. */
  spki: Uint8Array;
}

export interface SignOptions {
  /** Cancels the wait for a session; the operation itself cannot be cancelled once started. */
  signal?: AbortSignal;
}

export type VerifyOptions = SignOptions;

export interface HsmInfo {
  /** Backend `type`, as in config. */
  backend: string;
  /** Human description, e.g. "SoftHSM slot 0 token 'olocus'". */
  description: string;
  manufacturer?: string;
  model?: string;
  serialNumber?: string;
  firmwareVersion?: string;
  libraryVersion?: string;
  /** Extra non-secret facts (token flags, region, vault URL). */
  details?: Record<string, string | number | boolean>;
}

export type FipsStandard = 'none' | 'FIPS 140-2' | 'FIPS 140-3';

export interface FipsStatus {
  standard: FipsStandard;
  /** Security level 1–4; 0 when `standard` is 'none'. */
  level: 0 | 1 | 2 | 3 | 4;
  /** Whether the module reports running in its approved mode. */
  approvedMode: boolean;
  /** CMVP certificate number when known. */
  certificate?: string;
  certificateStatus?: 'active' | 'historical' | 'revoked' | 'unknown';
  /** Whether the certificate's algorithm list includes EdDSA (ALG-EDDSA). */
  eddsaValidated?: boolean;
  /** How the status was determined and what it cannot prove. */
  notes: string;
}

export interface Capabilities {
  /** Algorithms this backend instance can generate and sign with, as measured on the device. */
  algorithms: KeyAlgorithm[];
  /** Keys outlive `close()` and process restarts. */
  persistentKeys: boolean;
  /** Private keys are generated and used inside a hardware boundary. */
  hardwareBacked: boolean;
  /** Verification runs in the backend (otherwise the library verifies locally with the public key). */
  remoteVerify: boolean;
  /** Largest number of operations the backend runs at once (pool size, client concurrency). */
  maxConcurrency?: number;
}

export interface HealthStatus {
  healthy: boolean;
  /** Time the check took. */
  latencyMs: number;
  message: string;
  details?: Record<string, string | number | boolean>;
}

export interface ListKeysOptions {
  /** Only keys whose id starts with this. */
  prefix?: string;
  /** Maximum keys in one page (default 100, at most 1000). */
  limit?: number;
  /** Opaque cursor from a previous page. */
  cursor?: string;
}

export interface KeyPage {
  keys: HsmKeyHandle[];
  /** Present when more keys follow. */
  nextCursor?: string;
}

/**
 * The contract every backend fulfils. All methods are async and fail only with HsmError.
 *
 * Signatures: `sign` returns, and `verify` accepts, the library's one format per family:
 * ECDSA raw r||s (IEEE P1363, fixed length), Ed25519 64 bytes, RSA the modulus-length octet
 * string. DER conversion happens at the edges (see `ecdsaRawToDer`).
 */
export interface HsmBackend {
  /** Backend `type`, as in config (`software`, `pkcs11`, `aws-kms`...). */
  readonly type: string;
  initialize(): Promise<void>;
  /** Releases every resource. Idempotent. Any later call fails with HsmError('Closed'). */
  close(): Promise<void>;
  info(): Promise<HsmInfo>;
  capabilities(): Promise<Capabilities>;
  fipsStatus(): Promise<FipsStatus>;
  generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle>;
  /** The handle for a key id (or stable reference); KeyNotFound when absent. */
  getKey(key: KeyRef): Promise<HsmKeyHandle>;
  getPublicKey(key: KeyRef): Promise<PublicKeyInfo>;
  sign(key: KeyRef, data: Uint8Array, options?: SignOptions): Promise<Uint8Array>;
  /** Resolves false for a signature that does not verify; rejects only for real errors. */
  verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options?: VerifyOptions): Promise<boolean>;
  listKeys(options?: ListKeysOptions): Promise<KeyPage>;
  destroyKey(key: KeyRef): Promise<void>;
  healthCheck(): Promise<HealthStatus>;
}

/** Context the registry passes to a backend factory. */
export interface BackendContext {
  /** Reads a secret from an environment variable name or a file path given in config. */
  readSecret(source: SecretSource, field: string): Promise<string>;
  /** Environment to read from (defaults to process.env); injectable for tests. */
  env: Record<string, string | undefined>;
}

/** Where a secret comes from: never the config file itself. */
export type SecretSource = { env: string } | { file: string };

export interface BackendFactory<TOptions = unknown> {
  readonly type: string;
  /**
   * Validates raw options from config. Throws HsmError('InvalidConfiguration') naming the field.
   */
  parseOptions(raw: unknown): TOptions;
  create(options: TOptions, context: BackendContext): HsmBackend | Promise<HsmBackend>;
}

/**
 * Resolves a logical key (a base id whose versions rotate) to the concrete key version to use.
 * Implemented by @olocus/hsm-rotation's key registry; HsmManager uses it for
 * `signWithLogicalKey` / `verifyWithLogicalKey` so callers never pick versions themselves.
 */
export interface KeyVersionResolver {
  /** The Active version of `baseKeyId`; KeyNotFound when it has none. */
  resolveForSigning(baseKeyId: string): Promise<ResolvedKeyVersion>;
  /**
   * The version that was valid for signing at `signatureTime` (Active or Superseded then and
   * still allowed to verify); KeyNotFound when none was.
   */
  resolveForVerification(baseKeyId: string, signatureTime: Date): Promise<ResolvedKeyVersion>;
  /** Called after each successful signature; must not slow the signing path (batch or defer). */
  recordUsage?(version: ResolvedKeyVersion): void;
}

export interface ResolvedKeyVersion {
  baseKeyId: string;
  version: number;
  /** The key in the backend: id or stable reference. */
  key: KeyRef;
  algorithm: import('./algorithms.js').KeyAlgorithm;
}
