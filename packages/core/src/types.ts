import type { KeyAlgorithm } from './algorithms.js';
import type { HsmError } from './errors.js';

export type KeyUsage = 'sign' | 'verify';

/**
 * Where a key stands in its provider. `destroyKey` means "signs no more from now on"; providers
 * that delete later (KMS deletion windows, soft delete) report `pending-deletion` until then.
 */
export type KeyState = 'enabled' | 'disabled' | 'pending-deletion' | 'destroyed';

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
  /**
   * The key may be backed up (see `KeyBackupCapability`). On PKCS#11 the private key is created
   * CKA_EXTRACTABLE with CKA_WRAP_WITH_TRUSTED: it can leave the token only wrapped under a
   * CKA_TRUSTED key-encryption key. Without it a key is never extractable. Backends whose keys never
   * leave the provider accept it: their backup records the reference (`KeyBackupCapability.method`).
   */
  backup?: boolean;
}

/**
 * A key as the library names it. `ref` is stable across restarts and reconnects:
 * never a session-scoped PKCS#11 object handle.
 */
export interface HsmKeyHandle {
  id: string;
  /**
   * Backend-specific stable reference: `pkcs11:id=%..;object=..`, a KMS key ARN, a Key Vault key
   * id... A backend resolves a handle by `ref` alone (and checks `instance`); every other field
   * is informational and never believed without the backend's own resolution.
   */
  ref: string;
  algorithm: KeyAlgorithm;
  usages: KeyUsage[];
  /** Absent when the backend cannot know it (a key made by another tool), never a made-up epoch. */
  createdAt?: Date;
  expiresAt?: Date;
  /** The backend `type` that holds the key. */
  backend: string;
  /** The backend instance that holds the key (`HsmBackend.instanceId`). */
  instance: string;
  /** Absent means `enabled`. */
  state?: KeyState;
  /** The non-secret labels given at creation, where the backend keeps them. */
  labels?: Record<string, string>;
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
  /**
   * A non-secret tag that the audit record carries (`health-canary`, `audit-checkpoint`...), so
   * that operations the library makes for itself are told apart from the application's.
   */
  purpose?: string;
}

export type VerifyOptions = SignOptions;

/** A message given whole, or as chunks read from a file or a socket. */
export type MessageInput = Uint8Array | AsyncIterable<Uint8Array>;

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

/** `unknown`: the module's facts could not be matched to what its configuration claims. */
export type FipsStandard = 'none' | 'unknown' | 'FIPS 140-2' | 'FIPS 140-3';

/**
 * How a FIPS claim is known. `measured`: read from the device and matching a validated module;
 * `attested`: stated by the operator in the config's attestation section; `provider-claim`: a
 * cloud provider's documentation, which the client cannot check; `none`: nothing to claim.
 */
export type FipsEvidence = 'measured' | 'attested' | 'provider-claim' | 'none';

export interface FipsStatus {
  standard: FipsStandard;
  /** Security level 1–4; 0 when `standard` is 'none' or 'unknown'. */
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
  evidence: FipsEvidence;
  /** Contradictions found while establishing the status (a profile the device does not match...). */
  findings?: string[];
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
  /**
   * Largest message `sign` accepts, for algorithms the backend cannot pre-hash (pure Ed25519 on
   * a cloud API). Above it `sign` fails with InvalidArgument naming the limit.
   */
  maxMessageBytes?: Partial<Record<KeyAlgorithm, number>>;
}

/** Telemetry a backend may expose; monitoring reads it. */
export interface BackendMetrics {
  pool?:
    | {
        size: number;
        inUse: number;
        waiting: number;
        max: number;
        created?: number | undefined;
        evicted?: number | undefined;
        recycled?: number | undefined;
        timeouts?: number | undefined;
      }
    | undefined;
  circuitOpen?: boolean | undefined;
  circuitOpens?: number | undefined;
  recoveries?: number | undefined;
  loginFailures?: number | undefined;
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
  prefix?: string | undefined;
  /** Maximum keys in one page (default 100, at most 1000). */
  limit?: number | undefined;
  /** Opaque cursor from a previous page. */
  cursor?: string | undefined;
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
  /**
   * Stable identity of this instance: module + token serial, store directory, vault URL, region
   * and account, key ring. Handles carry it; a handle from another instance is refused with
   * InvalidArgument (`assertSameInstance`). Final once `initialize()` resolved.
   */
  readonly instanceId: string;
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
  /**
   * Optional: signs a message read in chunks, hashing it incrementally (ECDSA, RSA), so a large
   * file never sits in memory. Without it HsmManager buffers up to its limit.
   */
  signStream?(key: KeyRef, chunks: AsyncIterable<Uint8Array>, options?: SignOptions): Promise<Uint8Array>;
  /** Resolves false for a signature that does not verify; rejects only for real errors. */
  verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options?: VerifyOptions): Promise<boolean>;
  listKeys(options?: ListKeysOptions): Promise<KeyPage>;
  destroyKey(key: KeyRef): Promise<void>;
  healthCheck(): Promise<HealthStatus>;
  /** Optional telemetry (pool, circuit, recoveries). Must be cheap and never throw. */
  metrics?(): BackendMetrics;
  /** Optional: how this backend's keys are backed up and restored (issue "Backup and verified restore"). */
  readonly backup?: KeyBackupCapability;
}

/**
 * How a key is kept in a backup, per backend, the honest way:
 * - `wrapped`: the private key wrapped (never in clear) under a key-encryption key that lives in
 *   an HSM (PKCS#11 C_WrapKey under a CKA_TRUSTED KEK); restored by C_UnwrapKey on a token that holds the same KEK.
 * - `sealed-file`: the software backend's sealed key file and its parameters (still sealed by the store's passphrase).
 * - `provider-blob`: the provider's own protected backup (Azure Key Vault `backupKey`), restorable only where the provider allows.
 * - `provider-backup`: the provider backs up the whole HSM (AWS CloudHSM cluster backups); the bundle references them.
 * - `reference-only`: the private key cannot leave the provider (AWS KMS, Google Cloud KMS asymmetric keys); the
 *   bundle records the reference and the key relies on the provider's durability.
 */
export type KeyBackupMethod = 'wrapped' | 'sealed-file' | 'provider-blob' | 'provider-backup' | 'reference-only';

/** One key as a backend exports it for a backup bundle. Never holds key material in clear. */
export interface ExportedKey {
  method: KeyBackupMethod;
  /** The key id the backend knows it by. */
  id: string;
  algorithm: KeyAlgorithm;
  usages: KeyUsage[];
  /** SubjectPublicKeyInfo, DER: what a restored key is checked against. */
  publicKeySpki: Uint8Array;
  /** The wrapped key, sealed file or provider blob; absent for `reference-only` and `provider-backup`. */
  blob?: Uint8Array;
  /**
   * What restore needs besides the blob, never secret: the wrapping mechanism actually used
   * (`CKM_AES_KEY_WRAP_PAD`), the KEK's label, the provider reference, backup ids, KDF parameters...
   */
  parameters: Record<string, string>;
}

/** Why a key cannot be backed up (listed by `backup create`, never silently skipped). */
export interface BackupIneligibility {
  id: string;
  reason: string;
}

export interface KeyBackupCapability {
  /** The method this backend uses for every key it can export. */
  readonly method: KeyBackupMethod;
  /**
   * Exports one key for a backup bundle. A key that cannot be exported (created without `backup`,
   * non-extractable) is refused with HsmError('KeyUsageNotAllowed') whose message says why.
   */
  exportKey(key: KeyRef, options?: { signal?: AbortSignal }): Promise<ExportedKey>;
  /**
   * Restores an exported key under `id` (usually `exported.id`). Refuses with KeyAlreadyExists
   * when the id is taken, and IntegrityError when the restored key's public key is not
   * `exported.publicKeySpki`. `reference-only` and `provider-backup` keys cannot be imported:
   * InvalidArgument saying that the provider keeps them.
   */
  importKey(exported: ExportedKey, options?: { id?: string; signal?: AbortSignal }): Promise<HsmKeyHandle>;
  /**
   * Restores several exported keys in order under their own ids, with importKey's checks and
   * errors, stopping at the first key that fails. Optional: for a backend whose per-key look-ups
   * cost a pass over the whole store (a PKCS#11 token's C_FindObjects on SoftHSM), one pass serves
   * the batch. Callers use `importKeys` from this package, which falls back to importKey.
   */
  importKeys?(exported: readonly ExportedKey[], options?: { signal?: AbortSignal }): Promise<ImportKeysResult>;
}

/** What a batch import did: the first `imported.length` keys are restored, in order. */
export interface ImportKeysResult {
  /** The keys restored, in the order given. */
  imported: HsmKeyHandle[];
  /** The key that failed (its position in the list) and why; the keys after it were not attempted. */
  failed?: { index: number; error: HsmError };
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
  /**
   * Versions a signature of unknown time may be checked against: those never compromised or
   * revoked, which were Active at some time, newest first. A signature that verifies under one
   * was necessarily made while it was Active.
   */
  versionsForVerification?(baseKeyId: string): Promise<ResolvedKeyVersion[]>;
  /**
   * Versions a signature dated `signatureTime` may come from: the one Active then first, then
   * those superseded within their overlap before it (a signer that read the registry just before
   * a rotation committed dates its signature by that read). Empty when none.
   */
  versionsForVerificationAt?(baseKeyId: string, signatureTime: Date): Promise<ResolvedKeyVersion[]>;
}

export interface ResolvedKeyVersion {
  baseKeyId: string;
  version: number;
  /** The key in the backend: id or stable reference. */
  key: KeyRef;
  algorithm: import('./algorithms.js').KeyAlgorithm;
  /**
   * The registry's time at which it read this version as Active. A signature made with it is
   * dated by this moment (not by when the signature came back), so that the date always
   * verifies against the registry even when a rotation lands while the signature is being made.
   */
  confirmedActiveAt?: Date;
}
