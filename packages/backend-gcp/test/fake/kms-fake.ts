/**
 * A project-owned Cloud KMS server for the cases gcp-kms-emulator lacks (Ed25519, RSA-PSS,
 * PENDING_GENERATION, integrity failures, error mapping, throttling).
 *
 * The wire format is Google's: the service and messages are loaded with @grpc/proto-loader from
 * the .proto files that ship inside @google-cloud/kms (and the google/api protos of its
 * google-gax), and served with @grpc/grpc-js. The crypto is node:crypto. ECDSA is not offered:
 * node:crypto cannot sign a digest given from outside with an EC key, and the emulator covers
 * ECDSA; a request for an EC algorithm gets UNIMPLEMENTED.
 */
import { constants, createHash, generateKeyPairSync, privateDecrypt, privateEncrypt, randomBytes, sign as nodeSign, type KeyObject } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Server, ServerCredentials, status, loadPackageDefinition, type ServiceDefinition, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { crc32c } from '@node-rs/crc32';

const require = createRequire(import.meta.url);

/** The .proto folders shipped by the client library (and its google-gax, for google/api/*). */
export function protoIncludeDirs(): { kms: string; gax: string } {
  const kmsEntry = realpathSync(require.resolve('@google-cloud/kms'));
  const kmsRoot = kmsEntry.slice(0, kmsEntry.lastIndexOf('/build/'));
  const gaxEntry = realpathSync(createRequire(kmsEntry).resolve('google-gax'));
  const gaxRoot = gaxEntry.slice(0, gaxEntry.lastIndexOf('/build/'));
  return { kms: join(kmsRoot, 'build', 'protos'), gax: join(gaxRoot, 'build', 'protos') };
}

/** KeyManagementService as grpc-js serves it, from Google's .proto files. */
export function loadService(): ServiceDefinition {
  const dirs = protoIncludeDirs();
  const definition = loadSync(join(dirs.kms, 'google/cloud/kms/v1/service.proto'), {
    includeDirs: [dirs.kms, dirs.gax],
    keepCase: false,
    longs: String,
    enums: String,
    bytes: Buffer,
    defaults: true,
    oneofs: true,
  });
  const loaded = loadPackageDefinition(definition) as unknown as {
    google: { cloud: { kms: { v1: { KeyManagementService: { service: ServiceDefinition } } } } };
  };
  return loaded.google.cloud.kms.v1.KeyManagementService.service;
}

// biome-ignore lint/suspicious/noExplicitAny: messages decoded by proto-loader, read field by field as the protos define them
type Json = Record<string, any>;

interface FakeVersion {
  name: string;
  state: string;
  algorithm: string;
  protectionLevel: string;
  createTime: { seconds: string; nanos: number };
  privateKey: KeyObject;
  publicPem: string;
  /** Reads left before PENDING_GENERATION turns ENABLED. */
  pendingReads: number;
}

interface FakeKey {
  name: string;
  purpose: string;
  labels: Record<string, string>;
  versionTemplate: Json;
  createTime: { seconds: string; nanos: number };
  versions: FakeVersion[];
}

/** One injected misbehaviour of AsymmetricSign / GetPublicKey, used `times` times. */
export type SignFault = 'corrupt-signature' | 'verified-false' | 'wrong-name' | 'drop-signature-crc';
export type PublicKeyFault = 'corrupt-pem-crc' | 'wrong-name';

export interface FakeOptions {
  /** Reads of a new version's state before it leaves PENDING_GENERATION (0: ENABLED at once). */
  pendingReads?: number;
  /** Largest page ListCryptoKeys returns whatever the client asks (to make paging real). */
  maxPageSize?: number;
}

const EC_ALGORITHMS = new Set(['EC_SIGN_P256_SHA256', 'EC_SIGN_P384_SHA384', 'EC_SIGN_SECP256K1_SHA256']);
const RSA = /^RSA_SIGN_(PKCS1|PSS)_(2048|3072|4096)_SHA(256|512)$/;
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

const now = () => {
  const ms = Date.now();
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
};

class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export class KmsFake {
  readonly keyRings = new Set<string>();
  readonly keys = new Map<string, FakeKey>();
  /** Calls per method name, for assertions. */
  readonly calls = new Map<string, number>();
  /** Requests as received (method, request), the latest last; bounded. */
  readonly requests: Array<{ method: string; request: Json }> = [];
  pendingReads: number;
  maxPageSize: number;
  private signFaults: SignFault[] = [];
  private publicKeyFaults: PublicKeyFault[] = [];
  /** Errors to answer instead of serving, per method ('*' for all), consumed in order. */
  private statusFaults = new Map<string, Array<{ code: number; message: string }>>();
  /** Until this epoch ms every call is answered RESOURCE_EXHAUSTED. */
  throttleUntil = 0;
  /** Calls answered RESOURCE_EXHAUSTED by the throttle. */
  throttled = 0;
  private server: Server | undefined;
  port = 0;

  constructor(options: FakeOptions = {}) {
    this.pendingReads = options.pendingReads ?? 0;
    this.maxPageSize = options.maxPageSize ?? 1000;
  }

  injectSignFaults(...faults: SignFault[]): void {
    this.signFaults.push(...faults);
  }

  injectPublicKeyFaults(...faults: PublicKeyFault[]): void {
    this.publicKeyFaults.push(...faults);
  }

  /** The next `times` calls of `method` ('*' = any) fail with gRPC `code`. */
  injectStatus(method: string, code: number, times = 1, message = `injected ${status[code]}`): void {
    const list = this.statusFaults.get(method) ?? [];
    for (let i = 0; i < times; i++) list.push({ code, message });
    this.statusFaults.set(method, list);
  }

  async start(): Promise<number> {
    const service = loadService();
    const server = new Server();
    const handlers: Record<string, (request: Json) => Json> = {
      GetKeyRing: (r) => this.getKeyRing(r),
      CreateKeyRing: (r) => this.createKeyRing(r),
      CreateCryptoKey: (r) => this.createCryptoKey(r),
      GetCryptoKey: (r) => this.cryptoKeyJson(this.key(r.name)),
      ListCryptoKeys: (r) => this.listCryptoKeys(r),
      ListCryptoKeyVersions: (r) => this.listVersions(r),
      GetCryptoKeyVersion: (r) => this.versionJson(this.version(r.name)),
      CreateCryptoKeyVersion: (r) => this.createVersion(r),
      GetPublicKey: (r) => this.getPublicKey(r),
      AsymmetricSign: (r) => this.asymmetricSign(r),
      DestroyCryptoKeyVersion: (r) => this.destroyVersion(r),
    };
    const implementation: Record<string, (call: ServerUnaryCall<Json, Json>, callback: sendUnaryData<Json>) => void> = {};
    for (const [key, method] of Object.entries(service)) {
      const name = (method as { originalName?: string }).originalName ?? key;
      const rpc = key.charAt(0).toUpperCase() + key.slice(1);
      const handler = handlers[rpc] ?? handlers[name];
      implementation[key] = (call, callback) => {
        this.calls.set(rpc, (this.calls.get(rpc) ?? 0) + 1);
        this.requests.push({ method: rpc, request: call.request });
        if (this.requests.length > 500) this.requests.shift();
        try {
          if (Date.now() < this.throttleUntil) {
            this.throttled++;
            throw new RpcError(status.RESOURCE_EXHAUSTED, 'Quota exceeded for quota metric cryptographic requests (fake)');
          }
          const fault = this.statusFaults.get(rpc)?.shift() ?? this.statusFaults.get('*')?.shift();
          if (fault) throw new RpcError(fault.code, fault.message);
          if (!handler) throw new RpcError(status.UNIMPLEMENTED, `${rpc} is not served by the fake`);
          callback(null, handler(call.request));
        } catch (error) {
          if (error instanceof RpcError) callback({ code: error.code, details: error.message, name: 'Error', message: error.message });
          else callback({ code: status.INTERNAL, details: String(error), name: 'Error', message: String(error) });
        }
      };
    }
    server.addService(service, implementation);
    this.port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))),
    );
    this.server = server;
    return this.port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  }

  count(method: string): number {
    return this.calls.get(method) ?? 0;
  }

  // --- resources ----------------------------------------------------------------------------

  private getKeyRing(r: Json): Json {
    if (!this.keyRings.has(r.name)) throw new RpcError(status.NOT_FOUND, `KeyRing ${r.name} not found.`);
    return { name: r.name, createTime: now() };
  }

  private createKeyRing(r: Json): Json {
    const name = `${r.parent}/keyRings/${r.keyRingId}`;
    if (this.keyRings.has(name)) throw new RpcError(status.ALREADY_EXISTS, `KeyRing ${name} already exists.`);
    this.keyRings.add(name);
    return { name, createTime: now() };
  }

  private key(name: string): FakeKey {
    const key = this.keys.get(name);
    if (!key) throw new RpcError(status.NOT_FOUND, `CryptoKey ${name} not found.`);
    return key;
  }

  private version(name: string): FakeVersion {
    const keyName = name.replace(/\/cryptoKeyVersions\/[^/]+$/, '');
    const version = this.key(keyName).versions.find((v) => v.name === name);
    if (!version) throw new RpcError(status.NOT_FOUND, `CryptoKeyVersion ${name} not found.`);
    return version;
  }

  private createCryptoKey(r: Json): Json {
    if (!this.keyRings.has(r.parent)) throw new RpcError(status.NOT_FOUND, `KeyRing ${r.parent} not found.`);
    if (!/^[a-zA-Z0-9_-]{1,63}$/.test(r.cryptoKeyId)) throw new RpcError(status.INVALID_ARGUMENT, `invalid crypto_key_id ${r.cryptoKeyId}`);
    const name = `${r.parent}/cryptoKeys/${r.cryptoKeyId}`;
    if (this.keys.has(name)) throw new RpcError(status.ALREADY_EXISTS, `CryptoKey ${name} already exists.`);
    const spec = r.cryptoKey ?? {};
    if (spec.purpose !== 'ASYMMETRIC_SIGN') throw new RpcError(status.INVALID_ARGUMENT, `the fake serves ASYMMETRIC_SIGN keys only, not ${spec.purpose}`);
    for (const [k, v] of Object.entries<string>(spec.labels ?? {})) {
      if (!/^[a-z][a-z0-9_-]{0,62}$/.test(k) || !/^[a-z0-9_-]{0,63}$/.test(v)) throw new RpcError(status.INVALID_ARGUMENT, `invalid label ${k}`);
    }
    const key: FakeKey = { name, purpose: spec.purpose, labels: { ...(spec.labels ?? {}) }, versionTemplate: spec.versionTemplate ?? {}, createTime: now(), versions: [] };
    this.addVersion(key);
    this.keys.set(name, key);
    return this.cryptoKeyJson(key);
  }

  private createVersion(r: Json): Json {
    return this.versionJson(this.addVersion(this.key(r.parent)));
  }

  private addVersion(key: FakeKey): FakeVersion {
    const algorithm = String(key.versionTemplate.algorithm ?? '');
    const pair = generate(algorithm);
    const version: FakeVersion = {
      name: `${key.name}/cryptoKeyVersions/${key.versions.length + 1}`,
      state: this.pendingReads > 0 ? 'PENDING_GENERATION' : 'ENABLED',
      algorithm,
      protectionLevel: String(key.versionTemplate.protectionLevel || 'SOFTWARE'),
      createTime: now(),
      privateKey: pair.privateKey,
      publicPem: pair.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
      pendingReads: this.pendingReads,
    };
    key.versions.push(version);
    return version;
  }

  /** A read of a version's state: PENDING_GENERATION counts down to ENABLED. */
  private observe(version: FakeVersion): FakeVersion {
    if (version.state === 'PENDING_GENERATION' && --version.pendingReads <= 0) version.state = 'ENABLED';
    return version;
  }

  private versionJson(version: FakeVersion): Json {
    this.observe(version);
    return {
      name: version.name,
      state: version.state,
      algorithm: version.algorithm,
      protectionLevel: version.protectionLevel,
      createTime: version.createTime,
      ...(version.state === 'ENABLED' ? { generateTime: version.createTime } : {}),
    };
  }

  private cryptoKeyJson(key: FakeKey): Json {
    // Cloud KMS sets no primary on asymmetric keys
    return { name: key.name, purpose: key.purpose, labels: key.labels, versionTemplate: key.versionTemplate, createTime: key.createTime };
  }

  private page<T>(items: T[], pageSize: number, pageToken: string): { items: T[]; nextPageToken: string } {
    const size = Math.min(pageSize > 0 ? pageSize : 100, this.maxPageSize);
    const start = pageToken ? Number(Buffer.from(pageToken, 'base64url').toString()) : 0;
    if (!Number.isInteger(start) || start < 0) throw new RpcError(status.INVALID_ARGUMENT, 'invalid page_token');
    const slice = items.slice(start, start + size);
    const next = start + size < items.length ? Buffer.from(String(start + size)).toString('base64url') : '';
    return { items: slice, nextPageToken: next };
  }

  private listCryptoKeys(r: Json): Json {
    if (!this.keyRings.has(r.parent)) throw new RpcError(status.NOT_FOUND, `KeyRing ${r.parent} not found.`);
    const all = [...this.keys.values()].filter((k) => k.name.startsWith(`${r.parent}/cryptoKeys/`)).sort((a, b) => a.name.localeCompare(b.name));
    const { items, nextPageToken } = this.page(all, r.pageSize, r.pageToken);
    return { cryptoKeys: items.map((k) => this.cryptoKeyJson(k)), nextPageToken, totalSize: all.length };
  }

  private listVersions(r: Json): Json {
    const key = this.key(r.parent);
    const { items, nextPageToken } = this.page(key.versions, r.pageSize, r.pageToken);
    return { cryptoKeyVersions: items.map((v) => this.versionJson(v)), nextPageToken, totalSize: key.versions.length };
  }

  private destroyVersion(r: Json): Json {
    const version = this.version(r.name);
    if (version.state !== 'ENABLED' && version.state !== 'DISABLED') {
      throw new RpcError(status.FAILED_PRECONDITION, `CryptoKeyVersion ${r.name} is not in state ENABLED or DISABLED (${version.state}).`);
    }
    version.state = 'DESTROY_SCHEDULED';
    return this.versionJson(version);
  }

  // --- crypto -------------------------------------------------------------------------------

  private getPublicKey(r: Json): Json {
    const version = this.observe(this.version(r.name));
    if (version.state !== 'ENABLED' && version.state !== 'DISABLED') {
      throw new RpcError(status.FAILED_PRECONDITION, `CryptoKeyVersion ${r.name} is ${version.state}.`);
    }
    const fault = this.publicKeyFaults.shift();
    const pem = version.publicPem;
    return {
      pem,
      algorithm: version.algorithm,
      pemCrc32c: { value: String(fault === 'corrupt-pem-crc' ? (crc32c(Buffer.from(pem)) ^ 1) >>> 0 : crc32c(Buffer.from(pem))) },
      name: fault === 'wrong-name' ? `${r.name.replace(/\d+$/, '')}99` : r.name,
      protectionLevel: version.protectionLevel,
    };
  }

  private asymmetricSign(r: Json): Json {
    const version = this.observe(this.version(r.name));
    if (version.state !== 'ENABLED') throw new RpcError(status.FAILED_PRECONDITION, `CryptoKeyVersion ${r.name} is not enabled, current state is: ${version.state}.`);
    let signature: Buffer;
    let verifiedDigest = false;
    let verifiedData = false;
    if (version.algorithm === 'EC_SIGN_ED25519') {
      const data: Buffer = r.data ?? Buffer.alloc(0);
      if (r.digest) throw new RpcError(status.INVALID_ARGUMENT, 'EC_SIGN_ED25519 signs data, not a digest.');
      if (data.length > 64 * 1024) throw new RpcError(status.INVALID_ARGUMENT, 'data is larger than 64 KiB.');
      if (r.dataCrc32c) {
        if (Number(r.dataCrc32c.value) !== crc32c(data)) throw new RpcError(status.INVALID_ARGUMENT, 'The checksum in field data_crc32c did not match the data in field data.');
        verifiedData = true;
      }
      signature = nodeSign(null, data, version.privateKey);
    } else {
      const match = RSA.exec(version.algorithm);
      if (!match) throw new RpcError(status.UNIMPLEMENTED, `the fake does not sign with ${version.algorithm}`);
      const digest: Buffer | undefined = r.digest?.sha256;
      if (digest?.length !== 32) throw new RpcError(status.INVALID_ARGUMENT, `${version.algorithm} needs a 32-byte SHA-256 digest.`);
      if (r.digestCrc32c) {
        if (Number(r.digestCrc32c.value) !== crc32c(digest)) throw new RpcError(status.INVALID_ARGUMENT, 'The checksum in field digest_crc32c did not match the data in field digest.');
        verifiedDigest = true;
      }
      const bits = Number(match[2]);
      signature = match[1] === 'PSS' ? pssSign(version.privateKey, digest, bits) : privateEncrypt({ key: version.privateKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, digest]));
    }
    const fault = this.signFaults.shift();
    const crc = crc32c(signature);
    const sent = Buffer.from(signature);
    if (fault === 'corrupt-signature') sent[sent.length - 1] = sent[sent.length - 1]! ^ 0x01; // the checksum still describes the real signature
    return {
      signature: sent,
      ...(fault === 'drop-signature-crc' ? {} : { signatureCrc32c: { value: String(crc) } }),
      verifiedDigestCrc32c: fault === 'verified-false' ? false : verifiedDigest,
      verifiedDataCrc32c: fault === 'verified-false' ? false : verifiedData,
      name: fault === 'wrong-name' ? `${r.name.replace(/\d+$/, '')}99` : r.name,
      protectionLevel: version.protectionLevel,
    };
  }
}

function generate(algorithm: string): { privateKey: KeyObject; publicKey: KeyObject } {
  if (algorithm === 'EC_SIGN_ED25519') return generateKeyPairSync('ed25519');
  if (EC_ALGORITHMS.has(algorithm)) throw new RpcError(status.UNIMPLEMENTED, `the fake does not make ${algorithm} keys (ECDSA is tested on gcp-kms-emulator)`);
  const match = RSA.exec(algorithm);
  if (!match) throw new RpcError(status.INVALID_ARGUMENT, `unknown or non-signing algorithm ${algorithm}`);
  return generateKeyPairSync('rsa', { modulusLength: Number(match[2]), publicExponent: 0x10001 });
}

function mgf1(seed: Buffer, length: number): Buffer {
  const out: Buffer[] = [];
  for (let counter = 0; out.length * 32 < length; counter++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    out.push(createHash('sha256').update(seed).update(c).digest());
  }
  return Buffer.concat(out).subarray(0, length);
}

/** RSASSA-PSS (SHA-256, MGF1-SHA-256, salt = 32 bytes, as Cloud KMS) over a given digest: EMSA-PSS, then raw RSA. */
function pssSign(privateKey: KeyObject, mHash: Buffer, modBits: number): Buffer {
  const emBits = modBits - 1;
  const emLen = Math.ceil(emBits / 8);
  const salt = randomBytes(32);
  const h = createHash('sha256').update(Buffer.alloc(8)).update(mHash).update(salt).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - 32 - 32 - 2), Buffer.from([0x01]), salt]);
  const mask = mgf1(h, emLen - 32 - 1);
  for (let i = 0; i < db.length; i++) db[i] = db[i]! ^ mask[i]!;
  db[0] = db[0]! & (0xff >> (8 * emLen - emBits));
  const em = Buffer.concat([db, h, Buffer.from([0xbc])]);
  const padded = emLen < modBits / 8 ? Buffer.concat([Buffer.alloc(modBits / 8 - emLen), em]) : em;
  return privateDecrypt({ key: privateKey, padding: constants.RSA_NO_PADDING }, padded);
}

