import { z } from 'zod';
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
  PublicKeyInfo,
  ResolvedKeyVersion,
  SignOptions,
} from './types.js';
import { verifyLocally } from './verify.js';
import { publicKeyObject } from './encoding.js';
import type { KeyObject } from 'node:crypto';
import { audited, auditedBackend, type OperationAuditor, type OperationEvent } from './audit.js';

export const managerConfigSchema = z
  .object({
    backend: z
      .object({
        type: z.string({ required_error: 'is required' }).min(1, 'must not be empty'),
        options: z.unknown().optional(),
      })
      .strict(),
    /** Public keys kept for local verification (entries). 0 verifies through the backend every time. */
    publicKeyCacheSize: z.number().int().min(0).max(1_000_000).default(10_000),
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
}

interface CachedKey {
  handle: HsmKeyHandle;
  publicKey: KeyObject;
}

/**
 * The entry point: validates config, builds the backend through the registry, and keeps the
 * signing path short (public keys cached by key id; verification local when the key is known).
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

  constructor(config: unknown, options: ManagerOptions = {}) {
    this.config = parseWithSchema(managerConfigSchema, config, 'config');
    this.registry = options.registry ?? new BackendRegistry();
    this.resolver = options.resolver;
    this.auditor = options.auditor;
  }

  /** Sets (or replaces) the resolver for logical keys. */
  useResolver(resolver: KeyVersionResolver): void {
    this.resolver = resolver;
  }

  /** Signs with the Active version of a logical key; returns the signature and the version used. */
  async signWithLogicalKey(baseKeyId: string, data: Uint8Array, options?: SignOptions): Promise<{ signature: Uint8Array; version: ResolvedKeyVersion }> {
    const resolver = this.requireResolver();
    const version = await resolver.resolveForSigning(baseKeyId);
    const backend = this.backend;
    const sign = (): Promise<Uint8Array> => this.innerBackend!.sign(version.key, data, options);
    const signature = this.auditor
      ? await audited(this.auditor, { ...this.eventBase('sign', version.key, version.algorithm), data, logicalKey: { baseKeyId, version: version.version } }, sign)
      : await backend.sign(version.key, data, options);
    resolver.recordUsage?.(version);
    return { signature, version };
  }

  /** Verifies with the version of a logical key that was valid at `signatureTime`. */
  async verifyWithLogicalKey(baseKeyId: string, data: Uint8Array, signature: Uint8Array, signatureTime: Date): Promise<boolean> {
    const version = await this.requireResolver().resolveForVerification(baseKeyId, signatureTime);
    return this.verifyWith(version.key, data, signature, { baseKeyId, version: version.version });
  }

  private eventBase(operation: 'sign' | 'verify', key: KeyRef, algorithm?: KeyAlgorithm): Pick<OperationEvent, 'operation' | 'backend' | 'keyId' | 'algorithm'> {
    const known = algorithm ?? (typeof key === 'string' ? undefined : key.algorithm);
    return { operation, backend: this.backend.type, keyId: typeof key === 'string' ? key : key.id, ...(known ? { algorithm: known } : {}) };
  }

  private requireResolver(): KeyVersionResolver {
    if (!this.resolver) throw new HsmError('InvalidConfiguration', 'logical keys need a key version resolver (install @olocus/hsm-rotation and pass its registry)');
    return this.resolver;
  }

  get backend(): HsmBackend {
    if (this.state === 'closed') throw new HsmError('Closed', 'the HSM manager is closed');
    if (!this.backendInstance || this.state !== 'ready') throw new HsmError('NotInitialized', 'call initialize() before using the HSM manager');
    return this.backendInstance;
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
    this.keys.delete(handle.id);
    return handle;
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    return (await this.cached(key))?.handle ?? this.backend.getKey(key);
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    return this.backend.getPublicKey(key);
  }

  sign(key: KeyRef, data: Uint8Array, options?: SignOptions): Promise<Uint8Array> {
    return this.backend.sign(key, data, options);
  }

  /** Verifies locally with the cached public key; the backend is asked only for the key. */
  verify(key: KeyRef, data: Uint8Array, signature: Uint8Array): Promise<boolean> {
    return this.verifyWith(key, data, signature);
  }

  private async verifyWith(key: KeyRef, data: Uint8Array, signature: Uint8Array, logicalKey?: { baseKeyId: string; version: number }): Promise<boolean> {
    const auditor = this.auditor;
    if (!auditor) {
      const entry = await this.cached(key);
      if (!entry) return this.backend.verify(key, data, signature);
      return verifyLocally(entry.handle.algorithm, entry.publicKey, data, signature);
    }
    // Audited: one record per verification, whichever way it is done (the key lookup for the
    // cache goes to the unaudited backend: it is part of this verification, not a key access).
    const entry = await this.cached(key, this.innerBackend);
    const base = { ...this.eventBase('verify', key, entry?.handle.algorithm), data, ...(logicalKey ? { logicalKey } : {}) };
    if (!entry) return audited(auditor, base, () => this.innerBackend!.verify(key, data, signature), (valid) => ({ valid }));
    return audited(auditor, { ...base, verifiedLocally: true }, async () => verifyLocally(entry.handle.algorithm, entry.publicKey, data, signature), (valid) => ({ valid }));
  }

  async destroyKey(key: KeyRef): Promise<void> {
    const id = typeof key === 'string' ? key : key.id;
    await this.backend.destroyKey(key);
    for (const [name, entry] of this.keys) if (name === id || entry.handle.id === id || entry.handle.ref === id) this.keys.delete(name);
  }

  private async cached(key: KeyRef, through?: HsmBackend): Promise<CachedKey | undefined> {
    if (this.config.publicKeyCacheSize === 0) return undefined;
    const id = typeof key === 'string' ? key : key.id;
    const hit = this.keys.get(id);
    if (hit) return hit;
    const backend = through ?? this.backend;
    const handle = typeof key === 'string' ? await backend.getKey(key) : key;
    const info = await backend.getPublicKey(handle);
    const entry = { handle, publicKey: publicKeyObject(info.spki) };
    if (this.keys.size >= this.config.publicKeyCacheSize) {
      const oldest = this.keys.keys().next().value;
      if (oldest !== undefined) this.keys.delete(oldest);
    }
    this.keys.set(id, entry);
    if (handle.id !== id) this.keys.set(handle.id, entry);
    return entry;
  }
}
