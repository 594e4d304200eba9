import type { KeyAlgorithm } from './algorithms.js';
import { createHash } from 'node:crypto';
import type { HsmBackend, HsmKeyHandle, KeyRef, SignOptions } from './types.js';

/**
 * The seam between the signing path and an audit log. Core knows nothing of storage: it reports
 * each operation to an `OperationAuditor` and returns the operation's result only after the
 * auditor's promise resolves — so a signature never leaves before its record is durable, and an
 * auditor that rejects withholds the result (fail closed). @olocus/hsm-compliance implements it.
 */

export type AuditedOperation = 'generateKey' | 'getKey' | 'getPublicKey' | 'sign' | 'verify' | 'destroyKey';

export interface OperationEvent {
  operation: AuditedOperation;
  /** Backend `type`. */
  backend: string;
  /** The key's id when known (the handle's id, or the string the caller gave). */
  keyId?: string | undefined;
  algorithm?: KeyAlgorithm | undefined;
  /** The data signed or verified. An auditor records a digest of it, never the bytes. */
  data?: Uint8Array;
  /**
   * `sha256:<hex>` of data that was streamed rather than held (then `data` is absent); an auditor
   * records it as it would record the digest of `data`.
   */
  dataDigest?: string;
  /** The caller's non-secret tag (`SignOptions.purpose`): `health-canary`, `audit-checkpoint`... */
  purpose?: string;
  outcome: 'success' | 'failure';
  /** verify only: whether the signature was valid. */
  valid?: boolean;
  /** The failure (an HsmError as a rule). */
  error?: unknown;
  latencyMs: number;
  /** Set when the operation went through a logical key (rotation registry). */
  logicalKey?: { baseKeyId: string; version: number };
  /**
   * sign through a logical key: the time the signature is dated by — when the registry confirmed
   * the version Active (`ResolvedKeyVersion.confirmedActiveAt`). Compliance judges by this.
   */
  signedAt?: Date;
  /** verify only: checked with a cached public key instead of the backend. */
  verifiedLocally?: boolean;
}

export interface OperationAuditor {
  /**
   * Resolves once the record is durable. A rejection withholds the operation's result and
   * becomes the caller's error; an auditor configured not to fail closed swallows its own
   * failures (and raises an alert) instead.
   */
  record(event: OperationEvent): Promise<void>;
  /**
   * Called once by HsmManager.initialize() with the backend itself (not audited), before the
   * manager is ready: an audit log signs its checkpoints with it, and those signatures must
   * not themselves wait on the log they protect.
   */
  attach?(backend: HsmBackend): Promise<void> | void;
}

function keyIdOf(key: KeyRef): string {
  return typeof key === 'string' ? key : key.id;
}

function algorithmOf(key: KeyRef): KeyAlgorithm | undefined {
  return typeof key === 'string' ? undefined : key.algorithm;
}

/**
 * Runs `op`, reports it, and only then settles. When `op` fails the auditor's verdict cannot
 * change the outcome: the original error is what the caller sees (a failed audit of a failure
 * is the auditor's to report).
 */
export async function audited<T>(
  auditor: OperationAuditor,
  base: Omit<OperationEvent, 'outcome' | 'latencyMs' | 'error' | 'valid'>,
  op: () => Promise<T>,
  describe?: (result: T) => Partial<OperationEvent>,
): Promise<T> {
  const started = performance.now();
  let result: T;
  try {
    result = await op();
  } catch (error) {
    await auditor.record({ ...base, outcome: 'failure', error, latencyMs: performance.now() - started }).catch(() => undefined);
    throw error;
  }
  await auditor.record({ ...base, ...describe?.(result), outcome: 'success', latencyMs: performance.now() - started });
  return result;
}

/**
 * A backend whose key operations are reported to `auditor` (see `audited`). Everything else —
 * info, capabilities, health, an optional `metrics()` — is passed through untouched.
 */
export function auditedBackend(backend: HsmBackend, auditor: OperationAuditor): HsmBackend {
  const type = backend.type;
  const purposeOf = (options?: SignOptions): { purpose?: string } => (options?.purpose ? { purpose: options.purpose } : {});
  const wrapped: HsmBackend & { readonly inner: HsmBackend } = {
    type,
    get instanceId() {
      return backend.instanceId;
    },
    inner: backend,
    initialize: () => backend.initialize(),
    close: () => backend.close(),
    info: () => backend.info(),
    capabilities: () => backend.capabilities(),
    fipsStatus: () => backend.fipsStatus(),
    healthCheck: () => backend.healthCheck(),
    listKeys: (options) => backend.listKeys(options),
    generateKeyPair: (spec) =>
      audited(auditor, { operation: 'generateKey', backend: type, keyId: spec.id, algorithm: spec.algorithm }, () => backend.generateKeyPair(spec)),
    getKey: (key) =>
      audited(auditor, { operation: 'getKey', backend: type, keyId: keyIdOf(key) }, () => backend.getKey(key), (h: HsmKeyHandle) => ({ algorithm: h.algorithm })),
    getPublicKey: (key) =>
      audited(auditor, { operation: 'getPublicKey', backend: type, keyId: keyIdOf(key), algorithm: algorithmOf(key) }, () => backend.getPublicKey(key), (p) => ({
        algorithm: p.algorithm,
      })),
    sign: (key, data, options) =>
      audited(auditor, { operation: 'sign', backend: type, keyId: keyIdOf(key), algorithm: algorithmOf(key), data, ...purposeOf(options) }, () => backend.sign(key, data, options)),
    verify: (key, data, signature, options) =>
      audited(
        auditor,
        { operation: 'verify', backend: type, keyId: keyIdOf(key), algorithm: algorithmOf(key), data, ...purposeOf(options) },
        () => backend.verify(key, data, signature, options),
        (valid) => ({ valid }),
      ),
    destroyKey: (key) => audited(auditor, { operation: 'destroyKey', backend: type, keyId: keyIdOf(key) }, () => backend.destroyKey(key)),
  };
  if (backend.signStream) {
    const signStream = backend.signStream.bind(backend);
    wrapped.signStream = (key, chunks, options) => {
      const hashed = digestWhileReading(chunks);
      return auditedWithDigest(auditor, { operation: 'sign', backend: type, keyId: keyIdOf(key), algorithm: algorithmOf(key), ...purposeOf(options) }, hashed, () =>
        signStream(key, hashed.chunks, options),
      );
    };
  }
  if (backend.metrics) {
    const metrics = backend.metrics.bind(backend);
    wrapped.metrics = () => metrics();
  }
  return wrapped;
}

/** Chunks passed through unchanged while their SHA-256 is taken, for the audit record. */
export interface DigestingChunks {
  chunks: AsyncIterable<Uint8Array>;
  /** `sha256:<hex>` once the chunks were read to the end. */
  digest(): string | undefined;
}

export function digestWhileReading(source: AsyncIterable<Uint8Array>): DigestingChunks {
  const hash = createHash('sha256');
  let digest: string | undefined;
  return {
    chunks: {
      async *[Symbol.asyncIterator]() {
        for await (const chunk of source) {
          hash.update(chunk);
          yield chunk;
        }
        digest = 'sha256:' + hash.digest('hex');
      },
    },
    digest: () => digest,
  };
}

/** `audited` for streamed data: the digest is known only once the operation has read it all. */
export async function auditedWithDigest<T>(
  auditor: OperationAuditor,
  base: Omit<OperationEvent, 'outcome' | 'latencyMs' | 'error' | 'valid' | 'data' | 'dataDigest'>,
  hashed: DigestingChunks,
  op: () => Promise<T>,
  describe?: (result: T) => Partial<OperationEvent>,
): Promise<T> {
  const withDigest = (): Partial<OperationEvent> => {
    const digest = hashed.digest();
    return digest ? { dataDigest: digest } : {};
  };
  const started = performance.now();
  let result: T;
  try {
    result = await op();
  } catch (error) {
    await auditor.record({ ...base, ...withDigest(), outcome: 'failure', error, latencyMs: performance.now() - started }).catch(() => undefined);
    throw error;
  }
  await auditor.record({ ...base, ...withDigest(), ...describe?.(result), outcome: 'success', latencyMs: performance.now() - started });
  return result;
}
