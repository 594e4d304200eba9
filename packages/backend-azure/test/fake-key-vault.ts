import { constants, createECDH, createHash, generateKeyPair, privateEncrypt, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';

/**
 * A project-owned Key Vault that speaks the Key Vault keys REST API (api-version 7.2–7.6 and
 * 2025-07-01) over HTTPS, with the 401 bearer challenge and a managed-identity token endpoint
 * on a plain-HTTP port, as Lowkey Vault does. It exists because Lowkey Vault's runnable jar is
 * not served by the registries this machine reaches (see the package README). It is built from
 * the published REST definitions (KeyBundle, DeletedKeyBundle, KeyListResult, KeySignParameters,
 * KeyOperationResult, KeyVaultError) and signs a given digest the way the service does: ECDSA
 * raw r||s, RSASSA-PKCS1-v1_5 and PSS with salt = digest length.
 */

const gen = promisify(generateKeyPair);
const API_VERSIONS = new Set(['7.2', '7.3', '7.4', '7.5', '7.6', '2025-07-01']);
const CURVES: Record<string, { ecdh: string; n: bigint; bytes: number; hash: number }> = {
  'P-256': { ecdh: 'prime256v1', n: BigInt('0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551'), bytes: 32, hash: 32 },
  'P-384': {
    ecdh: 'secp384r1',
    n: BigInt('0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973'),
    bytes: 48,
    hash: 48,
  },
  'P-521': {
    ecdh: 'secp521r1',
    n: BigInt(`0x01FF${'FFFFFFFF'.repeat(7)}FFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409`),
    bytes: 66,
    hash: 64,
  },
};
const DIGEST_INFO: Record<number, string> = {
  32: '3031300d060960864801650304020105000420',
  48: '3041300d060960864801650304020205000430',
  64: '3051300d060960864801650304020305000440',
};
const ALG_HASH: Record<string, number> = { ES256: 32, ES384: 48, ES512: 64, RS256: 32, RS384: 48, RS512: 64, PS256: 32, PS384: 48, PS512: 64 };
const ES_CURVE: Record<string, string> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };

interface Version {
  version: string;
  kty: string;
  privateKey: KeyObject;
  /** The EC private scalar, read once. */
  d?: bigint;
  jwk: Record<string, string>;
  keyOps: string[];
  attributes: { enabled: boolean; created: number; updated: number; exp?: number; nbf?: number };
  tags?: Record<string, string>;
}
interface StoredKey {
  name: string;
  versions: Version[];
}
interface Deleted {
  key: StoredKey;
  deletedDate: number;
}

export interface FakeKeyVault {
  /** https://127.0.0.1:PORT */
  vaultUrl: string;
  port: number;
  /** The managed-identity token endpoint (plain HTTP, as App Service and Lowkey Vault serve it). */
  identityEndpoint: string;
  identityHeader: string;
  /** Requests served per route, for assertions. */
  readonly counts: Map<string, number>;
  /** Makes the token endpoint refuse every request (a credential that cannot get a token). */
  refuseTokens: boolean;
  /** Makes the vault refuse every token (an identity the vault's tenant does not know). */
  rejectTokens: boolean;
  /** Stops listening (connections refused) without forgetting the keys. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
  close(): Promise<void>;
}

const now = () => Math.floor(Date.now() / 1000);
const b64u = (b: Buffer | Uint8Array) => Buffer.from(b).toString('base64url');

function modPow(base: bigint, exp: bigint, mod: bigint): bigint {
  let result = 1n;
  let b = base % mod;
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % mod;
    b = (b * b) % mod;
    e >>= 1n;
  }
  return result;
}
const toBig = (b: Buffer) => BigInt(`0x${b.toString('hex') || '0'}`);
const toBytes = (v: bigint, len: number) => Buffer.from(v.toString(16).padStart(len * 2, '0'), 'hex');

/** ECDSA over a given digest (FIPS 186-4), k·G computed by node's ECDH. */
function ecdsaSignDigest(curve: string, d: bigint, digest: Buffer): Buffer {
  const c = CURVES[curve]!;
  const nBits = c.n.toString(2).length;
  let e = toBig(digest);
  if (digest.length * 8 > nBits) e >>= BigInt(digest.length * 8 - nBits);
  for (;;) {
    const k = (toBig(randomBytes(c.bytes + 8)) % (c.n - 1n)) + 1n;
    const ecdh = createECDH(c.ecdh);
    ecdh.setPrivateKey(toBytes(k, c.bytes));
    const point = ecdh.getPublicKey();
    const r = toBig(point.subarray(1, 1 + c.bytes)) % c.n;
    if (r === 0n) continue;
    const s = (modPow(k, c.n - 2n, c.n) * ((e + r * d) % c.n)) % c.n;
    if (s === 0n) continue;
    return Buffer.concat([toBytes(r, c.bytes), toBytes(s, c.bytes)]);
  }
}

function mgf1(seed: Buffer, length: number, hash: string): Buffer {
  const out: Buffer[] = [];
  for (let counter = 0; Buffer.concat(out).length < length; counter++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    out.push(createHash(hash).update(seed).update(c).digest());
  }
  return Buffer.concat(out).subarray(0, length);
}

/** RSASSA-PSS over a given digest (RFC 8017 9.1.1), salt length = digest length. */
function pssSignDigest(privateKey: KeyObject, modBits: number, digest: Buffer): Buffer {
  const hash = digest.length === 32 ? 'sha256' : digest.length === 48 ? 'sha384' : 'sha512';
  const hLen = digest.length;
  const emBits = modBits - 1;
  const emLen = Math.ceil(emBits / 8);
  const salt = randomBytes(hLen);
  const h = createHash(hash).update(Buffer.alloc(8)).update(digest).update(salt).digest();
  const db = Buffer.concat([Buffer.alloc(emLen - 2 * hLen - 2), Buffer.from([1]), salt]);
  const mask = mgf1(h, emLen - hLen - 1, hash);
  for (let i = 0; i < db.length; i++) db[i] = db[i]! ^ mask[i]!;
  db[0] = db[0]! & (0xff >> (8 * emLen - emBits));
  const em = Buffer.concat([db, h, Buffer.from([0xbc])]);
  const k = Math.ceil(modBits / 8);
  return privateEncrypt({ key: privateKey, padding: constants.RSA_NO_PADDING }, Buffer.concat([Buffer.alloc(k - em.length), em]));
}

function vaultError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(JSON.stringify({ error: { code, message } }));
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Backups by blob, shared by every test vault of the process, with the geography of the vault that
 * made them: the service restores a key backup only in the same geography and subscription, which
 * is what `geography` stands for here (one fake vault = one subscription in one geography).
 */
const backups = new Map<string, StoredKey & { geography: string }>();

/**
 * Tokens issued by any test vault's identity endpoint, accepted by every test vault of the process:
 * one Entra tenant whose identity reaches several vaults (DefaultAzureCredential reads the
 * managed-identity endpoint from process-wide variables, so one process has one identity).
 */
const tokens = new Set<string>();

export interface FakeKeyVaultOptions {
  /** The vault's Azure geography and subscription, as one opaque name (default 'test-geography'). */
  geography?: string;
}

export async function startFakeKeyVault(options: FakeKeyVaultOptions = {}): Promise<FakeKeyVault> {
  const geography = options.geography ?? 'test-geography';
  const keyPath = process.env.OLOCUS_TEST_AZURE_TLS_KEY;
  const certPath = process.env.OLOCUS_TEST_AZURE_TLS_CERT;
  const trusted = process.env.NODE_EXTRA_CA_CERTS;
  if (!keyPath || !certPath || !trusted || !readFileSync(trusted, 'utf8').includes(readFileSync(certPath, 'utf8').trim())) {
    throw new Error('the test vault\'s certificate is not trusted by this process: run these tests through vitest with this package\'s vitest.config.ts (its globalSetup makes the certificate and sets NODE_EXTRA_CA_CERTS before the test processes start)');
  }
  const keys = new Map<string, StoredKey>();
  const deleted = new Map<string, Deleted>();
  const identityHeader = randomUUID();
  const counts = new Map<string, number>();

  const bundle = (vaultUrl: string, key: StoredKey, v: Version) => ({
    key: { kid: `${vaultUrl}/keys/${key.name}/${v.version}`, kty: v.kty, key_ops: v.keyOps, ...v.jwk },
    attributes: { ...v.attributes, recoveryLevel: 'Recoverable+Purgeable', recoverableDays: 7, ...(v.kty.endsWith('-HSM') ? { hsmPlatform: '2' } : {}) },
    ...(v.tags ? { tags: v.tags } : {}),
  });
  const item = (vaultUrl: string, key: StoredKey) => {
    const v = key.versions[key.versions.length - 1]!;
    return { kid: `${vaultUrl}/keys/${key.name}`, attributes: { ...v.attributes, recoveryLevel: 'Recoverable+Purgeable', recoverableDays: 7 }, ...(v.tags ? { tags: v.tags } : {}) };
  };
  const deletedBundle = (vaultUrl: string, d: Deleted) => {
    const v = d.key.versions[d.key.versions.length - 1]!;
    return {
      ...bundle(vaultUrl, d.key, v),
      recoveryId: `${vaultUrl}/deletedkeys/${d.key.name}`,
      deletedDate: d.deletedDate,
      scheduledPurgeDate: d.deletedDate + 7 * 86400,
    };
  };

  async function makeVersion(body: Record<string, unknown>): Promise<Version | string> {
    const kty = String(body.kty ?? '');
    const attrs = (body.attributes ?? {}) as { enabled?: boolean; exp?: number; nbf?: number };
    const keyOps = Array.isArray(body.key_ops) ? (body.key_ops as string[]) : ['sign', 'verify', 'encrypt', 'decrypt', 'wrapKey', 'unwrapKey'];
    const base = { version: randomBytes(16).toString('hex'), kty, keyOps, attributes: { enabled: attrs.enabled ?? true, created: now(), updated: now(), ...(attrs.exp ? { exp: attrs.exp } : {}), ...(attrs.nbf ? { nbf: attrs.nbf } : {}) }, ...(body.tags ? { tags: body.tags as Record<string, string> } : {}) };
    if (kty === 'EC' || kty === 'EC-HSM') {
      const crv = String(body.crv ?? 'P-256');
      if (!CURVES[crv]) return `curve ${crv} is not supported`;
      const pair = await gen('ec', { namedCurve: crv });
      const pub = pair.publicKey.export({ format: 'jwk' });
      return { ...base, privateKey: pair.privateKey, jwk: { crv, x: pub.x!, y: pub.y! } };
    }
    if (kty === 'RSA' || kty === 'RSA-HSM') {
      const size = Number(body.key_size ?? 2048);
      if (![2048, 3072, 4096].includes(size)) return `key_size ${size} is not supported`;
      const pair = await gen('rsa', { modulusLength: size, publicExponent: 0x10001 });
      const pub = pair.publicKey.export({ format: 'jwk' });
      return { ...base, privateKey: pair.privateKey, jwk: { n: pub.n!, e: pub.e! } };
    }
    return `kty ${kty} is not supported`;
  }

  function sign(v: Version, alg: string, digest: Buffer): Buffer | string {
    const hLen = ALG_HASH[alg];
    if (!hLen) return `algorithm ${alg} is not supported`;
    if (digest.length !== hLen) return `the digest is ${digest.length} bytes; ${alg} needs ${hLen}`;
    if (alg.startsWith('ES')) {
      if (!v.kty.startsWith('EC') || ES_CURVE[alg] !== v.jwk.crv) return `algorithm ${alg} does not fit key type ${v.kty} ${v.jwk.crv}`;
      v.d ??= toBig(Buffer.from(v.privateKey.export({ format: 'jwk' }).d!, 'base64url'));
      return ecdsaSignDigest(v.jwk.crv!, v.d, digest);
    }
    if (!v.kty.startsWith('RSA')) return `algorithm ${alg} does not fit key type ${v.kty}`;
    const modBits = Buffer.from(v.jwk.n!, 'base64url').length * 8;
    if (alg.startsWith('RS')) return privateEncrypt({ key: v.privateKey, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([Buffer.from(DIGEST_INFO[hLen]!, 'hex'), digest]));
    return pssSignDigest(v.privateKey, modBits, digest);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // key ids name the vault as the client addressed it (a real vault: its DNS name), so a
    // client behind a proxy keeps talking through the proxy
    const vaultUrl = `https://${req.headers.host ?? `127.0.0.1:${fake.port}`}`;
    const url = new URL(req.url ?? '/', vaultUrl);
    const apiVersion = url.searchParams.get('api-version');
    const body = await readBody(req);
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (!tokens.has(token) || fake.rejectTokens) {
      // the challenge real vaults answer an unauthenticated request with
      return vaultError(res, 401, 'Unauthorized', 'AKV10000: Request is missing a Bearer or PoP token.', {
        'www-authenticate': 'Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net"',
      });
    }
    if (!apiVersion || !API_VERSIONS.has(apiVersion)) return vaultError(res, 400, 'BadParameter', `The specified version (${apiVersion}) is not recognized.`);
    const parts = url.pathname.split('/').filter((p, i, all) => p !== '' || i === all.length - 1).filter((p) => p !== '');
    const input = body ? (JSON.parse(body) as Record<string, unknown>) : {};
    const route = `${req.method} ${parts[3] ?? parts[2] ?? parts[0] ?? ''}`;
    counts.set(route, (counts.get(route) ?? 0) + 1);
    const [collection, rawName, second, third] = parts;
    const name = rawName?.toLowerCase();

    if (collection === 'keys' && req.method === 'GET' && !rawName) {
      const max = Number(url.searchParams.get('maxresults') ?? 25);
      const skip = Number(url.searchParams.get('$skiptoken') ?? 0);
      const all = [...keys.values()];
      const page = all.slice(skip, skip + max).map((k) => item(vaultUrl, k));
      const next = skip + max < all.length ? `${vaultUrl}/keys?api-version=${apiVersion}&maxresults=${max}&$skiptoken=${skip + max}` : null;
      return json(res, 200, { value: page, nextLink: next });
    }
    if (collection === 'keys' && rawName === 'restore' && req.method === 'POST') {
      const stored = backups.get(String(input.value ?? ''));
      if (!stored) return vaultError(res, 400, 'BadParameter', 'Backup blob contains invalid or corrupt version.');
      // the service's wording for a blob from elsewhere is not published; the status and code are those of any refused blob
      if (stored.geography !== geography) return vaultError(res, 400, 'BadParameter', 'Backup blob was created in a different geography or subscription and cannot be restored in this vault.');
      const lower = stored.name.toLowerCase();
      if (keys.has(lower) || deleted.has(lower)) return vaultError(res, 409, 'Conflict', `Key ${stored.name} already exists or is deleted and not purged.`);
      const copy = { name: stored.name, versions: stored.versions.map((v) => ({ ...v, attributes: { ...v.attributes } })) };
      keys.set(lower, copy);
      return json(res, 200, bundle(vaultUrl, copy, copy.versions[copy.versions.length - 1]!));
    }
    if (collection === 'keys' && name) {
      const key = keys.get(name);
      if (second === 'backup' && req.method === 'POST') {
        if (!key) return vaultError(res, 404, 'KeyNotFound', `A key with (name/id) ${rawName} was not found in this key vault.`);
        const blob = b64u(Buffer.concat([Buffer.from('olocus-test-vault-backup:'), randomBytes(48)]));
        backups.set(blob, { name: key.name, geography, versions: key.versions.map((v) => ({ ...v, attributes: { ...v.attributes } })) });
        return json(res, 200, { value: blob });
      }
      if (second === 'create' && req.method === 'POST') {
        if (deleted.has(name)) return vaultError(res, 409, 'Conflict', `Key ${rawName} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.`);
        const made = await makeVersion(input);
        if (typeof made === 'string') return vaultError(res, 400, 'BadParameter', made);
        const stored = key ?? { name: rawName!, versions: [] };
        stored.versions.push(made);
        keys.set(name, stored);
        return json(res, 200, bundle(vaultUrl, stored, made));
      }
      if (second === 'rotate' && req.method === 'POST') {
        if (!key) return vaultError(res, 404, 'KeyNotFound', `A key with (name/id) ${rawName} was not found in this key vault.`);
        const last = key.versions[key.versions.length - 1]!;
        const made = await makeVersion({ kty: last.kty, crv: last.jwk.crv, key_size: last.jwk.n ? Buffer.from(last.jwk.n, 'base64url').length * 8 : undefined, key_ops: last.keyOps, tags: last.tags });
        if (typeof made === 'string') return vaultError(res, 400, 'BadParameter', made);
        key.versions.push(made);
        return json(res, 200, bundle(vaultUrl, key, made));
      }
      if (!key) return vaultError(res, 404, 'KeyNotFound', `A key with (name/id) ${rawName} was not found in this key vault.`);
      if (req.method === 'DELETE' && !second) {
        keys.delete(name);
        const d = { key, deletedDate: now() };
        deleted.set(name, d);
        return json(res, 200, deletedBundle(vaultUrl, d));
      }
      const version = second && second !== 'versions' ? key.versions.find((v) => v.version === second) : key.versions[key.versions.length - 1];
      if (!version) return vaultError(res, 404, 'KeyNotFound', `A key with (name/id) ${rawName}/${second} was not found in this key vault.`);
      if (req.method === 'GET' && (!second || !third)) {
        if (second === 'versions') return json(res, 200, { value: key.versions.map((v) => ({ kid: `${vaultUrl}/keys/${key.name}/${v.version}`, attributes: v.attributes, tags: v.tags })), nextLink: null });
        return json(res, 200, bundle(vaultUrl, key, version));
      }
      if (req.method === 'PATCH' && !third) {
        const attrs = (input.attributes ?? {}) as Partial<Version['attributes']>;
        Object.assign(version.attributes, attrs, { updated: now() });
        if (Array.isArray(input.key_ops)) version.keyOps = input.key_ops as string[];
        if (input.tags) version.tags = input.tags as Record<string, string>;
        return json(res, 200, bundle(vaultUrl, key, version));
      }
      if (req.method === 'POST' && third === 'sign') {
        if (!version.attributes.enabled) return vaultError(res, 403, 'Forbidden', 'Operation sign is not allowed on a disabled key.');
        if (version.attributes.exp && version.attributes.exp <= now()) return vaultError(res, 403, 'Forbidden', 'Operation sign is not allowed on an expired key.');
        if (version.attributes.nbf && version.attributes.nbf > now()) return vaultError(res, 403, 'Forbidden', 'Operation sign is not allowed on a key that is not yet valid.');
        if (!version.keyOps.includes('sign')) return vaultError(res, 403, 'Forbidden', 'Operation sign is not permitted on this key.');
        const signed = sign(version, String(input.alg), Buffer.from(String(input.value ?? ''), 'base64url'));
        if (typeof signed === 'string') return vaultError(res, 400, 'BadParameter', signed);
        return json(res, 200, { kid: `${vaultUrl}/keys/${key.name}/${version.version}`, value: b64u(signed) });
      }
    }
    if (collection === 'deletedkeys' && name) {
      const d = deleted.get(name);
      if (!d) return vaultError(res, 404, 'KeyNotFound', `Deleted Key not found: ${rawName}`);
      if (req.method === 'GET' && !second) return json(res, 200, deletedBundle(vaultUrl, d));
      if (req.method === 'DELETE' && !second) {
        deleted.delete(name);
        res.writeHead(204);
        return void res.end();
      }
    }
    return vaultError(res, 400, 'BadParameter', `${req.method} ${url.pathname} is not served by the test vault`);
  }

  const tls = { key: readFileSync(keyPath), cert: readFileSync(certPath) };
  const vault = createHttpsServer(tls, (req, res) => {
    handle(req, res).catch((error: unknown) => vaultError(res, 500, 'InternalError', String(error)));
  });
  const fake: FakeKeyVault = {
    vaultUrl: '',
    port: 0,
    identityEndpoint: '',
    identityHeader,
    counts,
    refuseTokens: false,
    rejectTokens: false,
    stop: () => new Promise((resolve) => {
      vault.close(() => resolve());
      vault.closeAllConnections();
    }),
    start: () => new Promise((resolve, reject) => {
      vault.once('error', reject);
      vault.listen(fake.port, '127.0.0.1', () => resolve());
    }),
    close: async () => {
      vault.closeAllConnections();
      identity.closeAllConnections();
      await Promise.all([new Promise((r) => vault.close(() => r(undefined))), new Promise((r) => identity.close(() => r(undefined)))]);
    },
  };
  // the managed-identity endpoint of App Service (api-version 2019-08-01), as Lowkey Vault serves it
  const identity = createHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    counts.set('identity', (counts.get('identity') ?? 0) + 1);
    if (fake.refuseTokens || req.headers['x-identity-header'] !== identityHeader) {
      res.writeHead(401, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify({ statusCode: 401, message: 'Identity header mismatch or identity refused', correlationId: randomUUID() }));
    }
    const token = randomBytes(24).toString('base64url');
    tokens.add(token);
    const expiresOn = now() + 3600;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ access_token: token, expires_on: String(expiresOn), resource: url.searchParams.get('resource') ?? 'https://vault.azure.net', token_type: 'Bearer', client_id: randomUUID() }));
  });
  await new Promise<void>((resolve) => vault.listen(0, '127.0.0.1', () => resolve()));
  await new Promise<void>((resolve) => identity.listen(0, '127.0.0.1', () => resolve()));
  fake.port = (vault.address() as AddressInfo).port;
  fake.vaultUrl = `https://127.0.0.1:${fake.port}`;
  fake.identityEndpoint = `http://127.0.0.1:${(identity.address() as AddressInfo).port}/metadata/identity/oauth2/token`;
  return fake;
}

/** Points DefaultAzureCredential's managed-identity path at the test vault's token endpoint. */
export function useManagedIdentityOf(fake: FakeKeyVault): void {
  process.env.IDENTITY_ENDPOINT = fake.identityEndpoint;
  process.env.IDENTITY_HEADER = fake.identityHeader;
  for (const name of ['AZURE_CLIENT_ID', 'AZURE_CLIENT_SECRET', 'AZURE_TENANT_ID', 'AZURE_FEDERATED_TOKEN_FILE', 'MSI_ENDPOINT', 'MSI_SECRET', 'IMDS_ENDPOINT']) delete process.env[name];
}
