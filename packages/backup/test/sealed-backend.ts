import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign as nodeSign, type KeyObject } from 'node:crypto';
import {
  HsmError,
  verifyLocally,
  type ExportedKey,
  type HsmBackend,
  type HsmKeyHandle,
  type KeyAlgorithm,
  type KeyBackupCapability,
  type KeyPage,
  type KeyRef,
  type KeySpec,
} from '@olocus/hsm-core';

/**
 * A stand-in backend for the bundle tests while the software backend's own export is not
 * committed: real node:crypto keys, a `sealed-file` backup sealed with AES-256-GCM under a key
 * derived from a store secret (two stores with the same secret can import each other's keys, as
 * two software stores with the same passphrase do). It is NOT a backend of the library; tests
 * that need the real backends say so and use them.
 */
interface Entry {
  handle: HsmKeyHandle;
  privateKey: KeyObject;
  spki: Uint8Array;
  backup: boolean;
}

function generate(algorithm: KeyAlgorithm): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (algorithm) {
    case 'ECDSA_P256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'ECDSA_P384':
      return generateKeyPairSync('ec', { namedCurve: 'P-384' });
    case 'Ed25519':
      return generateKeyPairSync('ed25519');
    case 'RSA_2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048 });
    default:
      throw new HsmError('UnsupportedAlgorithm', `stand-in backend: ${algorithm} not supported`);
  }
}

function signWith(algorithm: KeyAlgorithm, key: KeyObject, data: Uint8Array): Uint8Array {
  if (algorithm === 'Ed25519') return nodeSign(null, data, key);
  const hash = algorithm === 'ECDSA_P384' ? 'sha384' : 'sha256';
  if (algorithm.startsWith('ECDSA')) return nodeSign(hash, data, { key, dsaEncoding: 'ieee-p1363' });
  return nodeSign(hash, data, key);
}

export class SealedStandInBackend implements HsmBackend {
  readonly type = 'sealed-stand-in';
  readonly instanceId: string;
  readonly #keys = new Map<string, Entry>();
  readonly #kek: Buffer;
  readonly backup: KeyBackupCapability;

  /** `exportableByDefault`: as the software store, every key may leave sealed unless created otherwise. */
  constructor(name: string, secret: string, readonly exportableByDefault = true) {
    this.instanceId = `stand-in:${name}`;
    this.#kek = createHash('sha256').update(`olocus-stand-in:${secret}`).digest();
    const self = this;
    this.backup = {
      method: 'sealed-file',
      async exportKey(key: KeyRef): Promise<ExportedKey> {
        const e = self.#entry(key);
        if (!e.backup) throw new HsmError('KeyUsageNotAllowed', `key ${e.handle.id} was created without backup: it cannot be exported`);
        const iv = randomBytes(12);
        const cipher = createCipheriv('aes-256-gcm', self.#kek, iv);
        const pkcs8 = e.privateKey.export({ format: 'der', type: 'pkcs8' });
        const sealed = Buffer.concat([iv, cipher.update(pkcs8), cipher.final(), cipher.getAuthTag()]);
        return { method: 'sealed-file', id: e.handle.id, algorithm: e.handle.algorithm, usages: [...e.handle.usages], publicKeySpki: e.spki, blob: sealed, parameters: { seal: 'AES-256-GCM' } };
      },
      async importKey(exported: ExportedKey, options?: { id?: string }): Promise<HsmKeyHandle> {
        const id = options?.id ?? exported.id;
        if (self.#keys.has(id)) throw new HsmError('KeyAlreadyExists', `key ${id} exists`);
        if (!exported.blob) throw new HsmError('InvalidArgument', `${exported.method}: the provider keeps this key`);
        const blob = Buffer.from(exported.blob);
        let pkcs8: Buffer;
        try {
          const d = createDecipheriv('aes-256-gcm', self.#kek, blob.subarray(0, 12));
          d.setAuthTag(blob.subarray(blob.length - 16));
          pkcs8 = Buffer.concat([d.update(blob.subarray(12, blob.length - 16)), d.final()]);
        } catch (error) {
          throw new HsmError('IntegrityError', `key ${id}: the sealed key does not open (another store, or changed)`, { cause: error });
        }
        const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
        const spki = new Uint8Array(createPublicKey(privateKey).export({ format: 'der', type: 'spki' }));
        if (!Buffer.from(spki).equals(Buffer.from(exported.publicKeySpki))) throw new HsmError('IntegrityError', `key ${id}: the restored key's public key is not the exported one`);
        return self.#add(id, exported.algorithm, privateKey, spki, true);
      },
    };
  }

  #add(id: string, algorithm: KeyAlgorithm, privateKey: KeyObject, spki: Uint8Array, backup: boolean): HsmKeyHandle {
    const handle: HsmKeyHandle = { id, ref: `stand-in:${id}`, algorithm, usages: ['sign', 'verify'], backend: this.type, instance: this.instanceId, createdAt: new Date(), metadata: {} };
    this.#keys.set(id, { handle, privateKey, spki, backup });
    return handle;
  }

  #entry(key: KeyRef): Entry {
    const id = typeof key === 'string' ? key.replace(/^stand-in:/, '') : key.id;
    const e = this.#keys.get(id);
    if (!e) throw new HsmError('KeyNotFound', `key ${id} not found`);
    return e;
  }

  async initialize(): Promise<void> {}
  async close(): Promise<void> {}
  async info() {
    return { backend: this.type, description: 'stand-in' };
  }
  async capabilities() {
    return { algorithms: ['ECDSA_P256', 'ECDSA_P384', 'Ed25519', 'RSA_2048'] as KeyAlgorithm[], persistentKeys: false, hardwareBacked: false, remoteVerify: false };
  }
  async fipsStatus() {
    return { standard: 'none' as const, level: 0 as const, approvedMode: false, notes: 'stand-in', evidence: 'none' as const };
  }
  async generateKeyPair(spec: KeySpec & { backup?: boolean }): Promise<HsmKeyHandle> {
    if (this.#keys.has(spec.id)) throw new HsmError('KeyAlreadyExists', `key ${spec.id} exists`);
    const { privateKey, publicKey } = generate(spec.algorithm);
    return this.#add(spec.id, spec.algorithm, privateKey, new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })), spec.backup ?? this.exportableByDefault);
  }
  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    return this.#entry(key).handle;
  }
  async getPublicKey(key: KeyRef) {
    const e = this.#entry(key);
    return { algorithm: e.handle.algorithm, spki: e.spki };
  }
  async sign(key: KeyRef, data: Uint8Array): Promise<Uint8Array> {
    const e = this.#entry(key);
    return signWith(e.handle.algorithm, e.privateKey, data);
  }
  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array): Promise<boolean> {
    const e = this.#entry(key);
    return verifyLocally(e.handle.algorithm, e.spki, data, signature);
  }
  async listKeys(): Promise<KeyPage> {
    return { keys: [...this.#keys.values()].map((e) => e.handle) };
  }
  async destroyKey(key: KeyRef): Promise<void> {
    this.#keys.delete(this.#entry(key).handle.id);
  }
  async healthCheck() {
    return { healthy: true, latencyMs: 0, message: 'ok' };
  }
  /** Test hook: the private key of one key replaced by another key's (a swapped key). */
  swapPrivate(id: string, from: string): void {
    const e = this.#entry(id);
    e.privateKey = this.#entry(from).privateKey;
  }
}
