import { createSign, generateKeyPair, randomUUID, sign as nodeSign, constants, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { algorithmInfo, nodeHashName, pssSaltLength, type KeyAlgorithm } from '../algorithms.js';
import { HsmError } from '../errors.js';
import type { BackendFactory, BackendMetrics, Capabilities, FipsStatus, HealthStatus, HsmBackend, HsmInfo, HsmKeyHandle, KeyPage, KeyRef, KeySpec, ListKeysOptions, PublicKeyInfo, SignOptions } from '../types.js';
import { assertAlgorithmSupported, assertSameInstance, assertUsable, normalizeKeySpec, normalizeListOptions, throwIfAborted } from '../validate.js';
import { verifyLocally } from '../verify.js';

const generate = promisify(generateKeyPair);

/**
 * Keys of a memory backend, kept outside any one instance so that a test can close an instance
 * and open another on the same keys (what "persistent" means for the conformance suite).
 */
export class MemoryKeyStore {
  readonly keys = new Map<string, { handle: HsmKeyHandle; privateKey: KeyObject; spki: Uint8Array }>();
  constructor(readonly name: string = randomUUID()) {}
}

export interface MemoryBackendOptions {
  store?: MemoryKeyStore;
  /** Algorithms this instance offers (default Ed25519, ECDSA P-256/P-384, RSA-2048 PKCS#1 and PSS). */
  algorithms?: readonly KeyAlgorithm[];
  /** Largest message per algorithm, to exercise the message-limit contract. */
  maxMessageBytes?: Partial<Record<KeyAlgorithm, number>>;
}

const DEFAULT_ALGORITHMS: readonly KeyAlgorithm[] = ['Ed25519', 'ECDSA_P256', 'ECDSA_P384', 'RSA_2048', 'RSA_PSS_2048'];

/**
 * A complete backend in memory, built only on core's shared rules: the reference a third-party
 * author can read next to the conformance suite, and the backend core's own tests run on. It is
 * not a place to keep real keys.
 */
export class MemoryBackend implements HsmBackend {
  readonly type = 'memory';
  readonly instanceId: string;
  private readonly store: MemoryKeyStore;
  private readonly algorithms: readonly KeyAlgorithm[];
  private readonly maxMessageBytes: Partial<Record<KeyAlgorithm, number>> | undefined;
  private state: 'new' | 'ready' | 'closed' = 'new';
  private signs = 0;

  constructor(options: MemoryBackendOptions = {}) {
    this.store = options.store ?? new MemoryKeyStore();
    this.instanceId = `memory:${this.store.name}`;
    this.algorithms = options.algorithms ?? DEFAULT_ALGORITHMS;
    this.maxMessageBytes = options.maxMessageBytes;
  }

  async initialize(): Promise<void> {
    if (this.state === 'closed') throw new HsmError('Closed', 'the memory backend is closed');
    this.state = 'ready';
  }

  async close(): Promise<void> {
    this.state = 'closed';
  }

  private ready(): void {
    if (this.state === 'closed') throw new HsmError('Closed', 'the memory backend is closed');
    if (this.state !== 'ready') throw new HsmError('NotInitialized', 'call initialize() before using the memory backend');
  }

  async info(): Promise<HsmInfo> {
    this.ready();
    return { backend: this.type, description: `in-memory keys (${this.store.name})` };
  }

  async capabilities(): Promise<Capabilities> {
    this.ready();
    return {
      algorithms: [...this.algorithms],
      persistentKeys: true,
      hardwareBacked: false,
      remoteVerify: false,
      ...(this.maxMessageBytes ? { maxMessageBytes: { ...this.maxMessageBytes } } : {}),
    };
  }

  async fipsStatus(): Promise<FipsStatus> {
    this.ready();
    return { standard: 'none', level: 0, approvedMode: false, evidence: 'none', notes: 'keys in process memory: no validated module' };
  }

  async healthCheck(): Promise<HealthStatus> {
    this.ready();
    return { healthy: true, latencyMs: 0, message: 'memory backend ready' };
  }

  metrics(): BackendMetrics {
    return { pool: { size: 1, inUse: 0, waiting: 0, max: 1 } };
  }

  get signatures(): number {
    return this.signs;
  }

  async generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle> {
    this.ready();
    const normalized = normalizeKeySpec(spec);
    assertAlgorithmSupported(normalized.algorithm, this.algorithms, 'the memory backend');
    if (this.store.keys.has(normalized.id)) throw new HsmError('KeyAlreadyExists', `key ${normalized.id} already exists`, { details: { keyId: normalized.id } });
    const pair = await generateFor(normalized.algorithm);
    const handle: HsmKeyHandle = {
      id: normalized.id,
      ref: `memory:${this.store.name}/${normalized.id}`,
      algorithm: normalized.algorithm,
      usages: normalized.usages,
      createdAt: new Date(),
      backend: this.type,
      instance: this.instanceId,
      metadata: {},
      ...(normalized.expiresAt ? { expiresAt: normalized.expiresAt } : {}),
      ...(normalized.labels ? { labels: normalized.labels } : {}),
    };
    // a second generate of the same id may have raced this one
    if (this.store.keys.has(normalized.id)) throw new HsmError('KeyAlreadyExists', `key ${normalized.id} already exists`, { details: { keyId: normalized.id } });
    this.store.keys.set(normalized.id, { handle, privateKey: pair.privateKey, spki: pair.publicKey.export({ format: 'der', type: 'spki' }) });
    return { ...handle };
  }

  private find(key: KeyRef): { handle: HsmKeyHandle; privateKey: KeyObject; spki: Uint8Array } {
    this.ready();
    assertSameInstance(key, this.instanceId);
    // a handle is resolved by its ref alone; a string by id, then by ref
    const wanted = typeof key === 'string' ? key : key.ref;
    const byId = typeof key === 'string' ? this.store.keys.get(wanted) : undefined;
    const entry = byId ?? [...this.store.keys.values()].find((k) => k.handle.ref === wanted);
    if (!entry) throw new HsmError('KeyNotFound', `no key ${JSON.stringify(wanted.slice(0, 200))} in the memory backend`, { details: { keyId: wanted.slice(0, 200) } });
    return entry;
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    return { ...this.find(key).handle };
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    const entry = this.find(key);
    return { algorithm: entry.handle.algorithm, spki: entry.spki };
  }

  async sign(key: KeyRef, data: Uint8Array, options: SignOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    const entry = this.find(key);
    assertUsable(entry.handle, 'sign');
    const limit = this.maxMessageBytes?.[entry.handle.algorithm];
    if (limit !== undefined && data.length > limit) {
      throw new HsmError('InvalidArgument', `the message is ${data.length} bytes; the memory backend signs at most ${limit} with ${entry.handle.algorithm}`, { details: { field: 'data', limit } });
    }
    this.signs++;
    const info = algorithmInfo(entry.handle.algorithm);
    if (info.family === 'EdDSA') return nodeSign(null, data, entry.privateKey);
    const signer = createSign(nodeHashName(info.hash!));
    signer.update(data);
    return signer.sign(signingKey(entry.handle.algorithm, entry.privateKey));
  }

  async signStream(key: KeyRef, chunks: AsyncIterable<Uint8Array>, options: SignOptions = {}): Promise<Uint8Array> {
    throwIfAborted(options.signal);
    const entry = this.find(key);
    assertUsable(entry.handle, 'sign');
    const info = algorithmInfo(entry.handle.algorithm);
    if (info.family === 'EdDSA') throw new HsmError('InvalidArgument', 'Ed25519 signs a whole message; it cannot be streamed', { details: { field: 'data' } });
    const signer = createSign(nodeHashName(info.hash!));
    for await (const chunk of chunks) signer.update(chunk);
    this.signs++;
    return signer.sign(signingKey(entry.handle.algorithm, entry.privateKey));
  }

  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options: SignOptions = {}): Promise<boolean> {
    throwIfAborted(options.signal);
    const entry = this.find(key);
    assertUsable(entry.handle, 'verify');
    return verifyLocally(entry.handle.algorithm, entry.spki, data, signature);
  }

  async listKeys(options?: ListKeysOptions): Promise<KeyPage> {
    this.ready();
    const { prefix, limit, cursor } = normalizeListOptions(options);
    const ids = [...this.store.keys.keys()].filter((id) => id.startsWith(prefix) && (cursor === undefined || id > cursor)).sort();
    const page = ids.slice(0, limit);
    const keys = page.map((id) => ({ ...this.store.keys.get(id)!.handle }));
    return ids.length > limit ? { keys, nextCursor: page[page.length - 1]! } : { keys };
  }

  async destroyKey(key: KeyRef): Promise<void> {
    const entry = this.find(key);
    this.store.keys.delete(entry.handle.id);
  }
}

function signingKey(algorithm: KeyAlgorithm, privateKey: KeyObject) {
  const info = algorithmInfo(algorithm);
  if (info.family === 'ECDSA') return { key: privateKey, dsaEncoding: 'ieee-p1363' as const };
  if (info.padding === 'PSS') return { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pssSaltLength(info.hash!) };
  return { key: privateKey, padding: constants.RSA_PKCS1_PADDING };
}

async function generateFor(algorithm: KeyAlgorithm): Promise<{ privateKey: KeyObject; publicKey: KeyObject }> {
  const info = algorithmInfo(algorithm);
  if (info.family === 'EdDSA') return generate('ed25519');
  if (info.family === 'ECDSA') return generate('ec', { namedCurve: info.curve! });
  return generate('rsa', { modulusLength: info.modulusBits!, publicExponent: 0x10001 });
}

/** A factory for the registry (`type: 'memory'`), for tests of code that builds backends from config. */
export function memoryBackendFactory(store: MemoryKeyStore = new MemoryKeyStore()): BackendFactory<MemoryBackendOptions> {
  return {
    type: 'memory',
    parseOptions: () => ({ store }),
    create: (options) => new MemoryBackend(options),
  };
}
