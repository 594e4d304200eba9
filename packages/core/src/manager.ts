import { z } from 'zod';
import type { KeyObject } from 'node:crypto';
import { parseWithSchema } from './config.js';
import { HsmError } from './errors.js';
import { BackendRegistry } from './registry.js';
import type { KeyAlgorithm } from './algorithms.js';
import type {
  Capabilities,
  FipsStatus,
  HealthStatus,
  HsmBackend,
  HsmInfo,
  HsmKeyHandle,
  KeyPage,
  KeyRef,
  KeySpec,
  ListKeysOptions,
  KeyVersionResolver,
  MessageInput,
  PublicKeyInfo,
  ResolvedKeyVersion,
  SignOptions,
} from './types.js';
import { readAll, verifyLocally, verifyStreamLocally } from './verify.js';
import { publicKeyObject } from './encoding.js';
import { audited, auditedBackend, auditedWithDigest, digestWhileReading, type OperationAuditor, type OperationEvent } from './audit.js';
import { assertSameInstance } from './validate.js';

export const DEFAULT_MAX_BUFFERED_MESSAGE_BYTES = 64 * 1024 * 1024;

export const managerConfigSchema = z
  .object({
    backend: z
      .object({
        type: z.string({ required_error: 'is required' }).min(1, 'must not be empty'),
        /** The package that provides `type` when core does not know it (a third-party backend). */
        package: z.string().min(1, 'must not be empty').optional(),
        options: z.unknown().optional(),
      })
      .strict(),
    /** Public keys kept for local verification (entries). 0 verifies through the backend every time. */
    publicKeyCacheSize: z.number().int().min(0).max(1_000_000).default(10_000),
    /**
     * How long a cached public key is trusted before the backend is asked again, so a key
     * destroyed or disabled elsewhere stops verifying here within this time.
     */
    publicKeyCacheTtlMs: z.number().int().min(0).max(86_400_000).default(300_000),
    /**
     * The most a streamed message may hold when it must be buffered (Ed25519, or a backend that
     * cannot hash incrementally).
     */
    maxBufferedMessageBytes: z.number().int().min(1).max(1_073_741_824).default(DEFAULT_MAX_BUFFERED_MESSAGE_BYTES),
  })
  .strict();

export type ManagerConfig = z.input<typeof managerConfigSchema>;

export interface ManagerOptions {
  registry?: BackendRegistry;
  /** Enables `signWithLogicalKey` / `verifyWithLogicalKey` (the rotation package provides one). */
  resolver?: KeyVersionResolver;
  /**
   * Receives every key operation, including verifications done locally with a cached public
   * key; results are returned only after it resolves (see `OperationAuditor`). `backend` is the
   * audited backend, so code that uses it directly (the rotation manager) is audited too.
   */
  auditor?: OperationAuditor;
  /** Clock for cache expiry (tests). */
  now?: () => number;
}

interface CachedKey {
  /** As the backend resolved it: never a caller's handle. */
  handle: HsmKeyHandle;
  publicKey: KeyObject;
  expiresAt: number;
}

export interface LogicalSignature {
  signature: Uint8Array;
  version: ResolvedKeyVersion;
  /** When the registry confirmed the version Active: the time this signature is dated by. */
  signedAt: Date;
}

export interface LogicalVerification {
  valid: boolean;
  /** The version the signature verified under; absent when it verified under none. */
  version?: ResolvedKeyVersion;
}

type LogicalKeyTag = { baseKeyId: string; version: number };

function isStream(data: MessageInput): data is AsyncIterable<Uint8Array> {
  return !(data instanceof Uint8Array);
}

/**
 * The entry point: validates config, builds the backend through the registry, and keeps the
 * signing path short (public keys cached per backend instance and stable reference; verification
 * local when the key is known).
 *
 * A caller's handle is never believed: the cache is filled only with what the backend itself
 * resolved, and is keyed by what the backend resolves by (its instance and the handle's `ref`,
 * or the id string given), so a forged handle cannot lend its key to another name.
 */
export class HsmManager {
  readonly config: z.output<typeof managerConfigSchema>;
  private readonly registry: BackendRegistry;
  private backendInstance: HsmBackend | undefined;
  /** The backend itself, under the audit wrapper (the same object when there is no auditor). */
  private innerBackend: HsmBackend | undefined;
  private readonly auditor: OperationAuditor | undefined;
  private state: 'new' | 'initializing' | 'ready' | 'closed' = 'new';
  private readonly keys = new Map<string, CachedKey>();
  private resolver: KeyVersionResolver | undefined;
  private readonly now: () => number;

  constructor(config: unknown, options: ManagerOptions = {}) {
    this.config = parseWithSchema(managerConfigSchema, config, 'config');
    this.registry = options.registry ?? new BackendRegistry();
    this.resolver = options.resolver;
    this.auditor = options.auditor;
    this.now = options.now ?? Date.now;
  }

  /** Sets (or replaces) the resolver for logical keys. */
  useResolver(resolver: KeyVersionResolver): void {
    this.resolver = resolver;
  }

  get backend(): HsmBackend {
    if (this.state === 'closed') throw new HsmError('Closed', 'the HSM manager is closed');
    if (!this.backendInstance || this.state !== 'ready') throw new HsmError('NotInitialized', 'call initialize() before using the HSM manager');
    return this.backendInstance;
  }

  /**
   * The backend without the audit wrapper, for lookups that are part of an operation already
   * being audited (one record per operation).
   */
  get unauditedBackend(): HsmBackend {
    this.backend;
    return this.innerBackend!;
  }

  async initialize(): Promise<void> {
    if (this.state === 'ready') return;
    if (this.state === 'closed') throw new HsmError('Closed', 'the HSM manager is closed');
    if (this.state === 'initializing') throw new HsmError('InvalidArgument', 'initialize() is already running');
    this.state = 'initializing';
    try {
      const backend = await this.registry.create(this.config.backend);
      await backend.initialize();
      try {
        await this.auditor?.attach?.(backend);
      } catch (error) {
        await backend.close().catch(() => undefined);
        throw error;
      }
      this.innerBackend = backend;
      this.backendInstance = this.auditor ? auditedBackend(backend, this.auditor) : backend;
      this.state = 'ready';
    } catch (error) {
      this.state = 'new';
      throw error;
    }
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.keys.clear();
    await (this.innerBackend ?? this.backendInstance)?.close();
  }

  info(): Promise<HsmInfo> {
    return this.backend.info();
  }
  capabilities(): Promise<Capabilities> {
    return this.backend.capabilities();
  }
  fipsStatus(): Promise<FipsStatus> {
    return this.backend.fipsStatus();
  }
  healthCheck(): Promise<HealthStatus> {
    return this.backend.healthCheck();
  }
  listKeys(options?: ListKeysOptions): Promise<KeyPage> {
    return this.backend.listKeys(options);
  }

  async generateKey(spec: KeySpec): Promise<HsmKeyHandle> {
    const handle = await this.backend.generateKeyPair(spec);
    this.evictKey(handle);
    return handle;
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    return (await this.cached(key, this.backend))?.handle ?? this.backend.getKey(key);
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    return this.backend.getPublicKey(key);
  }

  /** Signs `data`, given whole or as chunks (hashed as they are read where the algorithm allows). */
  async sign(key: KeyRef, data: MessageInput, options?: SignOptions): Promise<Uint8Array> {
    if (!isStream(data)) return this.backend.sign(key, data, options);
    const handle = (await this.cached(key, this.unauditedBackend))?.handle ?? (await this.unauditedBackend.getKey(key));
    return this.signResolved(handle, data, options);
  }

  /** Verifies locally with the cached public key; the backend is asked only for the key. */
  verify(key: KeyRef, data: MessageInput, signature: Uint8Array, options?: SignOptions): Promise<boolean> {
    return this.verifyWith(key, data, signature, undefined, options);
  }

  /**
   * Signs with the Active version of a logical key. Returns the signature, the version used and
   * `signedAt`: the moment the registry confirmed that version Active, which is what the
   * signature is dated by (`verifyWithLogicalKey(..., signedAt)` always finds this version).
   */
  async signWithLogicalKey(baseKeyId: string, data: MessageInput, options?: SignOptions): Promise<LogicalSignature> {
    const resolver = this.requireResolver();
    const version = await resolver.resolveForSigning(baseKeyId);
    const signedAt = version.confirmedActiveAt ?? new Date();
    const logicalKey = { baseKeyId, version: version.version };
    let signature: Uint8Array;
    if (isStream(data)) {
      const handle = (await this.cached(version.key, this.unauditedBackend))?.handle ?? (await this.unauditedBackend.getKey(version.key));
      signature = await this.signResolved(handle, data, options, logicalKey, signedAt);
    } else {
      const sign = (): Promise<Uint8Array> => this.innerBackend!.sign(version.key, data, options);
      signature = this.auditor
        ? await audited(this.auditor, { ...this.eventBase('sign', version.key, version.algorithm, options), data, logicalKey, signedAt }, sign)
        : await this.backend.sign(version.key, data, options);
    }
    resolver.recordUsage?.(version);
    return { signature, version, signedAt };
  }

  /**
   * Verifies with the version of a logical key that was valid at `signatureTime`. Without a time,
   * tries the versions that were never compromised or revoked (see
   * `KeyVersionResolver.versionsForVerification`): a signature valid under one of them was made
   * while it was Active.
   */
  async verifyWithLogicalKey(baseKeyId: string, data: MessageInput, signature: Uint8Array, signatureTime?: Date): Promise<boolean> {
    return (await this.verifyWithLogicalKeyDetailed(baseKeyId, data, signature, signatureTime)).valid;
  }

  /** `verifyWithLogicalKey`, saying which version matched. */
  async verifyWithLogicalKeyDetailed(baseKeyId: string, data: MessageInput, signature: Uint8Array, signatureTime?: Date): Promise<LogicalVerification> {
    const resolver = this.requireResolver();
    let candidates: ResolvedKeyVersion[];
    if (signatureTime && resolver.versionsForVerificationAt) {
      candidates = await resolver.versionsForVerificationAt(baseKeyId, signatureTime);
      if (candidates.length === 0) {
        throw new HsmError('KeyNotFound', `logical key ${baseKeyId} has no version that was Active at ${signatureTime.toISOString()} and may still verify`, {
          details: { keyId: baseKeyId, signatureTime: signatureTime.toISOString() },
        });
      }
    } else if (signatureTime) {
      candidates = [await resolver.resolveForVerification(baseKeyId, signatureTime)];
    } else {
      if (!resolver.versionsForVerification) {
        throw new HsmError('InvalidArgument', `verifying with logical key ${baseKeyId} needs the signature's time: this key registry cannot list its versions`, {
          details: { field: 'signatureTime' },
        });
      }
      candidates = await resolver.versionsForVerification(baseKeyId);
      if (candidates.length === 0) throw new HsmError('KeyNotFound', `logical key ${baseKeyId} has no version that may verify`, { details: { keyId: baseKeyId } });
    }
    return this.verifyAgainst(baseKeyId, candidates, data, signature);
  }

  /** Tries each version in order; one audit record for the whole verification. */
  private async verifyAgainst(baseKeyId: string, candidates: ResolvedKeyVersion[], data: MessageInput, signature: Uint8Array): Promise<LogicalVerification> {
    if (candidates.length === 1) {
      const only = candidates[0]!;
      const valid = await this.verifyWith(only.key, data, signature, { baseKeyId, version: only.version });
      return valid ? { valid, version: only } : { valid };
    }
    // Several candidates read the message more than once: hold it (bounded) and audit one record.
    const message = isStream(data) ? await readAll(data, this.config.maxBufferedMessageBytes) : data;
    const attempt = async (): Promise<LogicalVerification> => {
      for (const version of candidates) {
        const entry = await this.cached(version.key, this.unauditedBackend);
        const valid = entry ? verifyLocally(entry.handle.algorithm, entry.publicKey, message, signature) : await this.unauditedBackend.verify(version.key, message, signature);
        if (valid) return { valid, version };
      }
      return { valid: false };
    };
    if (!this.auditor) return attempt();
    const first = candidates[0]!;
    return audited(this.auditor, { ...this.eventBase('verify', first.key, first.algorithm), data: message, logicalKey: { baseKeyId, version: first.version } }, attempt, (result) => ({
      valid: result.valid,
      ...(result.version ? { logicalKey: { baseKeyId, version: result.version.version }, keyId: keyIdOf(result.version.key) } : {}),
    }));
  }

  async destroyKey(key: KeyRef): Promise<void> {
    const known = typeof key === 'string' ? this.keys.get(this.cacheKey(key)) : undefined;
    await this.backend.destroyKey(key);
    this.evictKey(key);
    if (known) this.evictKey(known.handle);
  }

  /**
   * Forgets what the cache holds for a key (by id, or every entry of a handle's stable
   * reference), so its next use asks the backend. Call it after revoking a key elsewhere.
   */
  evictKey(key: KeyRef): void {
    const ref = typeof key === 'string' ? undefined : key.ref;
    const id = typeof key === 'string' ? key : key.id;
    for (const [name, entry] of this.keys) {
      if (entry.handle.ref === ref || entry.handle.ref === id || entry.handle.id === id) this.keys.delete(name);
    }
  }

  private requireResolver(): KeyVersionResolver {
    if (!this.resolver) throw new HsmError('InvalidConfiguration', 'logical keys need a key version resolver (install @olocus/hsm-rotation and pass its registry)');
    return this.resolver;
  }

  private eventBase(operation: 'sign' | 'verify', key: KeyRef, algorithm?: KeyAlgorithm, options?: SignOptions): Pick<OperationEvent, 'operation' | 'backend' | 'keyId' | 'algorithm' | 'purpose'> {
    const known = algorithm ?? (typeof key === 'string' ? undefined : key.algorithm);
    return {
      operation,
      backend: this.backend.type,
      keyId: keyIdOf(key),
      ...(known ? { algorithm: known } : {}),
      ...(options?.purpose ? { purpose: options.purpose } : {}),
    };
  }

  /** Streams to the backend where it hashes incrementally; otherwise holds at most the configured bytes. */
  private async signResolved(handle: HsmKeyHandle, chunks: AsyncIterable<Uint8Array>, options: SignOptions | undefined, logicalKey?: LogicalKeyTag, signedAt?: Date): Promise<Uint8Array> {
    const inner = this.unauditedBackend;
    const streams = handle.algorithm !== 'Ed25519' && inner.signStream !== undefined;
    const hashed = digestWhileReading(chunks);
    const run = async (): Promise<Uint8Array> =>
      streams ? inner.signStream!(handle, hashed.chunks, options) : inner.sign(handle, await readAll(hashed.chunks, this.config.maxBufferedMessageBytes), options);
    if (!this.auditor) return run();
    return auditedWithDigest(this.auditor, { ...this.eventBase('sign', handle, handle.algorithm, options), ...(logicalKey ? { logicalKey } : {}), ...(signedAt ? { signedAt } : {}) }, hashed, run);
  }

  private async verifyWith(key: KeyRef, data: MessageInput, signature: Uint8Array, logicalKey?: LogicalKeyTag, options?: SignOptions): Promise<boolean> {
    const inner = this.unauditedBackend;
    const entry = await this.cached(key, inner);
    const limit = this.config.maxBufferedMessageBytes;
    const run = (message: MessageInput): Promise<boolean> => {
      if (entry) {
        return isStream(message)
          ? verifyStreamLocally(entry.handle.algorithm, entry.publicKey, message, signature, limit)
          : Promise.resolve(verifyLocally(entry.handle.algorithm, entry.publicKey, message, signature));
      }
      return isStream(message) ? readAll(message, limit).then((bytes) => inner.verify(key, bytes, signature, options)) : inner.verify(key, message, signature, options);
    };
    const auditor = this.auditor;
    if (!auditor) return run(data);
    // Audited: one record per verification, whichever way it is done.
    const base = {
      ...this.eventBase('verify', key, entry?.handle.algorithm, options),
      ...(logicalKey ? { logicalKey } : {}),
      ...(entry ? { verifiedLocally: true } : {}),
    };
    const describe = (valid: boolean): Partial<OperationEvent> => ({ valid });
    if (!isStream(data)) return audited(auditor, { ...base, data }, () => run(data), describe);
    const hashed = digestWhileReading(data);
    return auditedWithDigest(auditor, base, hashed, () => run(hashed.chunks), describe);
  }

  private cacheKey(key: KeyRef, instance = this.unauditedBackend.instanceId): string {
    return typeof key === 'string' ? `id\u0000${instance}\u0000${key}` : `ref\u0000${instance}\u0000${key.ref}`;
  }

  /**
   * The backend's own view of `key` with its public key, from the cache while fresh. Undefined
   * when caching is off.
   */
  private async cached(key: KeyRef, backend: HsmBackend): Promise<CachedKey | undefined> {
    if (this.config.publicKeyCacheSize === 0) return undefined;
    assertSameInstance(key, backend.instanceId);
    const name = this.cacheKey(key, backend.instanceId);
    const now = this.now();
    const hit = this.keys.get(name);
    if (hit && hit.expiresAt > now) {
      // least recently used goes first
      this.keys.delete(name);
      this.keys.set(name, hit);
      return hit;
    }
    if (hit) this.keys.delete(name);
    const handle = await backend.getKey(key);
    const info = await backend.getPublicKey(handle);
    if (info.algorithm !== handle.algorithm) {
      throw new HsmError('Internal', `backend ${backend.type} reported ${info.algorithm} for the public key of ${handle.id}, whose handle says ${handle.algorithm}`);
    }
    const entry: CachedKey = { handle, publicKey: publicKeyObject(info.spki), expiresAt: now + this.config.publicKeyCacheTtlMs };
    this.store(name, entry);
    this.store(this.cacheKey(handle, backend.instanceId), entry);
    return entry;
  }

  private store(name: string, entry: CachedKey): void {
    this.keys.delete(name);
    while (this.keys.size >= this.config.publicKeyCacheSize) {
      const oldest = this.keys.keys().next().value;
      if (oldest === undefined) break;
      this.keys.delete(oldest);
    }
    this.keys.set(name, entry);
  }
}

function keyIdOf(key: KeyRef): string {
  return typeof key === 'string' ? key : key.id;
}
