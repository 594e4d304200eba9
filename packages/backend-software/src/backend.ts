import {
  constants as cryptoConstants,
  createHash,
  createPrivateKey,
  createSign,
  createPublicKey,
  createSecretKey,
  generateKeyPair as generateKeyPairCallback,
  getFips,
  hkdf,
  randomBytes,
  scrypt,
  sign as nodeSign,
  timingSafeEqual,
  webcrypto,
  type KeyObject,
  type ScryptOptions,
} from 'node:crypto';
import { chmod, mkdir, open, readdir, realpath, stat, unlink } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { promisify } from 'node:util';
import {
  HsmError,
  KEY_ALGORITHMS,
  algorithmInfo,
  assertKeyMatches,
  assertSameInstance,
  assertUsable,
  assertValidKeyId,
  isHsmError,
  nodeHashName,
  normalizeKeySpec,
  normalizeListOptions,
  throwIfAborted,
  pssSaltLength,
  readSecret,
  verifyLocally,
  type BackendContext,
  type Capabilities,
  type ExportedKey,
  type FipsStatus,
  type HealthStatus,
  type HsmBackend,
  type HsmInfo,
  type HsmKeyHandle,
  type KeyAlgorithm,
  type KeyBackupCapability,
  type KeyPage,
  type KeyRef,
  type KeySpec,
  type KeyUsage,
  type ListKeysOptions,
  type PublicKeyInfo,
  type SignOptions,
  type VerifyOptions,
} from '@olocus/hsm-core';
import {
  CIPHER,
  FORMAT_VERSION,
  KEY_BYTES,
  KEY_FORMAT,
  MASTER_KEY_HKDF_INFO,
  MASTER_KEY_STORE_VERSION,
  SALT_BYTES,
  STORE_FILE,
  STORE_FORMAT,
  kdfSchema,
  sealedSchema,
  VERIFIER_PLAINTEXT,
  keyAad,
  keyFileName,
  keyFileSchema,
  keyIdFromFileName,
  metadataFor,
  seal,
  storeAad,
  storeHeaderSchema,
  storeVersionFor,
  unseal,
  canonicalJson,
  type KdfParams,
  type ScryptKdfParams,
  type KeyFile,
  type KeyMetadata,
  type Sealed,
  type StoreHeader,
} from './format.js';
import { DIRECTORY_MODE, errnoOf, ioError, syncDirectory, tempName, writeFileExclusive } from './fs-util.js';
import { MASTER_KEY_BYTES, SCRYPT_LIMITS, parseSoftwareOptions, type SoftwareBackendOptions, type SoftwareBackendOptionsInput } from './options.js';

export const SOFTWARE_BACKEND_TYPE = 'software';
/** Stable references are `software:<id>`. */
export const REF_PREFIX = `${SOFTWARE_BACKEND_TYPE}:`;

const generateKeyPairAsync = promisify(generateKeyPairCallback);

/**
 * Algorithms whose one-shot node:crypto sign takes long enough (≳0.3 ms, measured: RSA-2048
 * 0.3 ms, RSA-3072 1.8 ms, RSA-4096 4.1 ms, P-384 1 ms, P-521 2.4 ms) to stall the event loop:
 * these sign through WebCrypto, which runs on the libuv thread pool. Ed25519 and P-256 sign in
 * ~35 µs, less than a thread-pool round trip, so they stay on the calling thread.
 */
const OFF_THREAD: ReadonlySet<KeyAlgorithm> = new Set([
  'ECDSA_P384',
  'ECDSA_P521',
  'RSA_2048',
  'RSA_3072',
  'RSA_4096',
  'RSA_PSS_2048',
  'RSA_PSS_3072',
  'RSA_PSS_4096',
]);


type Signer = (data: Uint8Array) => Promise<Uint8Array>;

/** What opens a store: a passphrase (stretched with scrypt) or a master key (HKDF). */
type StoreSecret = { kind: 'passphrase'; passphrase: string } | { kind: 'masterKey'; key: Buffer };

const SECRET_NAME = { passphrase: 'a passphrase', masterKey: 'a master key' } as const;
const SECRET_FIELD = { passphrase: 'backend.options.passphrase', masterKey: 'backend.options.masterKey' } as const;

/** The kind of secret a store's KDF takes. */
function secretKindOf(kdf: KdfParams): StoreSecret['kind'] {
  return kdf.name === 'scrypt' ? 'passphrase' : 'masterKey';
}

/** Master key bytes are zeroed once the store key is derived from them. */
function dropSecret(secret: StoreSecret): void {
  if (secret.kind === 'masterKey') secret.key.fill(0);
}

/** node:crypto's one-shot sign takes at most INT_MAX bytes. */
const MAX_ONE_SHOT_BYTES = 2 ** 31 - 1;

/** A key ready to sign: the one-shot signer, and the private key itself for signStream. */
interface SigningKey {
  readonly sign: Signer;
  readonly privateKey: KeyObject;
}

interface FileStamp {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

/** A key whose file has been read and authenticated. The private key is unsealed on first sign. */
interface KeyRecord {
  readonly id: string;
  readonly fileName: string;
  readonly metadata: KeyMetadata;
  readonly algorithm: KeyAlgorithm;
  readonly usages: readonly KeyUsage[];
  readonly createdAt: Date;
  readonly expiresAt: Date | undefined;
  readonly spki: Buffer;
  readonly publicKey: KeyObject;
  readonly sealed: Sealed;
  readonly stamp: FileStamp;
  checkedAt: number;
  /** The private key as generated, kept until the first sign turns it into a signer. */
  generated?: KeyObject | undefined;
  signer?: Promise<SigningKey> | undefined;
}

/** Extra constructor arguments for programmatic use. */
export interface SoftwareBackendInit {
  /**
   * The passphrase itself. When given it is used instead of `options.passphrase` (the secret
   * source). It is kept in a private field only until initialize() has derived the key.
   */
  passphrase?: string;
  /** Secret reader and environment; the registry passes its own. Default: process.env. */
  context?: BackendContext;
}

type State = 'new' | 'initializing' | 'ready' | 'closed';

/**
 * The embedded backend: keys made and used by node:crypto in this process, stored one file per
 * key, private keys sealed with AES-256-GCM under a scrypt-derived key. Not an HSM: see
 * fipsStatus() and README.md.
 */
export class SoftwareBackend implements HsmBackend {
  readonly type = SOFTWARE_BACKEND_TYPE;
  readonly options: SoftwareBackendOptions;
  /** Absolute path of the key store folder. */
  readonly directory: string;
  /**
   * `software:<real path of the store directory>`: two instances on one store (a symlink, a
   * relative path) are the same instance, and a handle from another store is refused.
   * Provisional (the resolved path) until initialize() has found the directory's real path.
   */
  get instanceId(): string {
    return this.#instanceId;
  }
  #instanceId: string;

  #state: State = 'new';
  #initializing: Promise<void> | undefined;
  #passphrase: string | undefined;
  readonly #context: BackendContext;
  #key: KeyObject | undefined;
  #kdf: KdfParams | undefined;
  readonly #cache = new Map<string, KeyRecord>();
  readonly #loading = new Map<string, Promise<KeyRecord | undefined>>();
  /** Key files found corrupted by this instance (file name → reason); reported by healthCheck. */
  readonly #corrupt = new Map<string, string>();

  /**
   * Backup (method `sealed-file`): exportKey gives the key's sealed file as it is on disk (still
   * sealed by the store's passphrase) with the store's non-secret KDF parameters and verifier;
   * importKey opens it in memory only, checks it against the exported public key, re-seals it under
   * this store's key and writes it atomically. See the README, "Backup".
   */
  readonly backup: KeyBackupCapability = {
    method: 'sealed-file',
    exportKey: (key, options) => this.#exportKey(key, options),
    importKey: (exported, options) => this.#importKey(exported, options),
  };

  constructor(options: SoftwareBackendOptionsInput | SoftwareBackendOptions, init: SoftwareBackendInit = {}) {
    this.options = parseSoftwareOptions(options);
    this.directory = resolvePath(this.options.directory);
    this.#instanceId = `${REF_PREFIX}${this.directory}`;
    if (init.passphrase !== undefined) {
      if (typeof init.passphrase !== 'string' || init.passphrase.length === 0) {
        throw new HsmError('InvalidConfiguration', 'passphrase: must be a non-empty string', { details: { field: 'passphrase' } });
      }
      if (this.options.masterKey !== undefined) {
        throw new HsmError('InvalidConfiguration', 'passphrase: given to the constructor, but backend.options.masterKey is set (a store is protected by one of them)', { details: { field: 'passphrase' } });
      }
      this.#passphrase = init.passphrase;
    }
    this.#context = init.context ?? { env: process.env, readSecret: (source, field) => readSecret(source, field, process.env) };
  }

  // ---------------------------------------------------------------- lifecycle

  async initialize(): Promise<void> {
    if (this.#state === 'closed') throw closedError();
    if (this.#state === 'ready') return;
    if (this.#initializing) return this.#initializing;
    this.#state = 'initializing';
    this.#initializing = this.#open().then(
      ({ key, kdf }) => {
        this.#initializing = undefined;
        if (this.#state === 'closed') throw closedError(); // closed while opening: drop the key
        this.#key = key;
        this.#kdf = kdf;
        this.#passphrase = undefined;
        this.#state = 'ready';
      },
      (error: unknown) => {
        this.#initializing = undefined;
        // close() during the open drops the passphrase, so the open's own error is a side effect.
        if (this.#state === 'closed') throw closedError();
        this.#state = 'new';
        throw error;
      },
    );
    return this.#initializing;
  }

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#key = undefined;
    this.#kdf = undefined;
    this.#passphrase = undefined;
    this.#cache.clear();
    this.#loading.clear();
  }

  async #open(): Promise<{ key: KeyObject; kdf: KdfParams }> {
    await this.#prepareDirectory();
    try {
      this.#instanceId = `${REF_PREFIX}${await realpath(this.directory)}`;
    } catch (cause) {
      throw ioError(cause, 'resolve the real path of', this.directory);
    }
    const secret = await this.#readStoreSecret();
    try {
      let header = await this.#readHeader();
      if (!header) {
        const created = await this.#createHeader(secret);
        if (created) return created;
        header = await this.#readHeader(); // another process created it first: use theirs
        if (!header) throw corrupted(STORE_FILE, 'it appeared and vanished while the store was being created', this.directory);
      }
      const needs = secretKindOf(header.kdf);
      if (needs !== secret.kind) {
        throw new HsmError(
          'InvalidConfiguration',
          `the software key store at ${this.directory} is protected by ${SECRET_NAME[needs]} (${header.kdf.name}), but ${SECRET_NAME[secret.kind]} is configured: set ${SECRET_FIELD[needs]} instead of ${SECRET_FIELD[secret.kind]} (or ${STORE_FILE} was altered)`,
          { details: { field: SECRET_FIELD[secret.kind], directory: this.directory } },
        );
      }
      const key = await deriveStoreKey(secret, header.kdf);
      try {
        const plain = unseal(key, header.verifier, storeAad(header.kdf));
        if (!timingSafeEqualStrings(plain.toString('utf8'), VERIFIER_PLAINTEXT)) throw new Error('verifier mismatch');
      } catch {
        // Nothing is written before this point for an existing store: a wrong secret changes nothing on disk.
        const what = secret.kind === 'passphrase' ? 'passphrase' : 'master key';
        throw new HsmError(
          'WrongPassphrase',
          `the ${what} does not open the software key store at ${this.directory} (wrong ${what}, or ${STORE_FILE} was altered)`,
          { details: { directory: this.directory, file: STORE_FILE } },
        );
      }
      await this.#removeStaleTempFiles();
      return { key, kdf: header.kdf };
    } finally {
      dropSecret(secret);
    }
  }

  /**
   * Removes this backend's own temporary files (`.new-*.tmp`, `.health-*.tmp`) older than an hour:
   * what a process killed between writing and linking leaves behind. Key files are never touched.
   */
  async #removeStaleTempFiles(): Promise<void> {
    const cutoff = Date.now() - 3_600_000;
    let names: string[];
    try {
      names = await readdir(this.directory);
    } catch {
      return;
    }
    for (const name of names) {
      if (!/^\.(new|health)-\d+-[0-9a-f]{12}\.tmp$/.test(name)) continue;
      const path = join(this.directory, name);
      try {
        if ((await stat(path)).mtimeMs < cutoff) await unlink(path);
      } catch {
        // best effort: another process may have removed it
      }
    }
  }

  async #prepareDirectory(): Promise<void> {
    const dir = this.directory;
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(dir);
    } catch (cause) {
      if (errnoOf(cause) !== 'ENOENT') {
        throw new HsmError('InitializationFailed', `cannot access the key store directory ${dir} (${errnoOf(cause) ?? 'error'})`, {
          cause,
          details: { directory: dir },
        });
      }
      if (!this.options.create) {
        throw new HsmError(
          'InitializationFailed',
          `the key store directory ${dir} does not exist (backend.options.create is false: create it, or set create: true)`,
          { details: { directory: dir, field: 'backend.options.directory' } },
        );
      }
      try {
        await mkdir(dir, { recursive: true, mode: DIRECTORY_MODE });
      } catch (mkdirCause) {
        throw new HsmError('InitializationFailed', `cannot create the key store directory ${dir} (${errnoOf(mkdirCause) ?? 'error'})`, {
          cause: mkdirCause,
          details: { directory: dir },
        });
      }
      return;
    }
    if (!info.isDirectory()) {
      throw new HsmError('InitializationFailed', `the key store path ${dir} is not a directory`, { details: { directory: dir } });
    }
  }

  /**
   * A new store in a directory made by someone else (`mkdir -p`, 0755) is narrowed to 0700, so
   * nobody else can list key ids or copy the sealed files for an offline passphrase guess.
   * An existing store is left as it is (an operator may have chosen its mode); healthCheck warns.
   */
  async #restrictDirectory(): Promise<void> {
    if (process.platform === 'win32') return;
    try {
      const info = await stat(this.directory);
      if ((info.mode & 0o077) !== 0) await chmod(this.directory, DIRECTORY_MODE);
    } catch (cause) {
      // Not the owner (EPERM): the store still works; healthCheck reports the wide mode.
      if (errnoOf(cause) !== 'EPERM') throw ioError(cause, 'restrict the mode of', this.directory);
    }
  }

  /** The configured secret: the master key when `masterKey` is set, else the passphrase. */
  async #readStoreSecret(): Promise<StoreSecret> {
    if (this.options.masterKey !== undefined) return { kind: 'masterKey', key: await this.#readMasterKey() };
    return { kind: 'passphrase', passphrase: await this.#readPassphrase() };
  }

  /**
   * The master key's bytes. Only its shape is checked (32 bytes of canonical base64, not an
   * obviously constant value): randomness cannot be proven, and a key with too little of it is
   * the operator's to avoid, as a weak passphrase is. The value never appears in an error.
   */
  async #readMasterKey(): Promise<Buffer> {
    const field = SECRET_FIELD.masterKey;
    const source = this.options.masterKey!;
    const from = 'env' in source ? `environment variable ${source.env}` : `file ${source.file}`;
    const text = (await this.#context.readSecret(source, field)).trim();
    const advice = `it must be ${MASTER_KEY_BYTES} random bytes in base64, 44 characters (e.g. \`openssl rand -base64 ${MASTER_KEY_BYTES}\`)`;
    const bytes = Buffer.from(text, 'base64');
    const wrong = !/^[A-Za-z0-9+/]+={0,2}$/.test(text)
      ? `it is not base64 (${text.length} characters, not all of the base64 alphabet)`
      : bytes.length !== MASTER_KEY_BYTES
        ? `it decodes to ${bytes.length} bytes`
        : bytes.toString('base64') !== text
          ? 'it is not canonical base64 (its last character carries stray bits)'
          : undefined;
    if (wrong !== undefined) {
      bytes.fill(0);
      throw new HsmError('InvalidConfiguration', `${field}: the value in ${from} is not a master key: ${advice}; ${wrong}`, { details: { field } });
    }
    // 32 random bytes take 16 or fewer distinct values with a probability far below 2^-100
    if (new Set(bytes).size <= 16) {
      bytes.fill(0);
      throw new HsmError('InvalidConfiguration', `${field}: the value in ${from} does not look random (few distinct bytes): ${advice}`, { details: { field } });
    }
    return bytes;
  }

  async #readPassphrase(): Promise<string> {
    // the options schema sets `passphrase` (its default source) whenever `masterKey` is absent
    const passphrase = this.#passphrase ?? (await this.#context.readSecret(this.options.passphrase!, 'backend.options.passphrase'));
    if (typeof passphrase !== 'string' || passphrase.length === 0) {
      throw new HsmError('InvalidConfiguration', 'backend.options.passphrase: the passphrase is empty', {
        details: { field: 'backend.options.passphrase' },
      });
    }
    return passphrase;
  }

  async #readHeader(): Promise<StoreHeader | undefined> {
    const path = join(this.directory, STORE_FILE);
    let text: string;
    try {
      text = await readText(path);
    } catch (cause) {
      if (errnoOf(cause) === 'ENOENT') return undefined;
      throw ioError(cause, 'read', path);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (cause) {
      throw corrupted(STORE_FILE, 'it is not valid JSON (truncated?)', this.directory, cause);
    }
    const version = (json as { version?: unknown } | null)?.version;
    if ((json as { format?: unknown } | null)?.format === STORE_FORMAT && typeof version === 'number' && version > MASTER_KEY_STORE_VERSION) {
      throw new HsmError('InitializationFailed', `${join(this.directory, STORE_FILE)} has format version ${version}; this library reads versions ${FORMAT_VERSION} and ${MASTER_KEY_STORE_VERSION}: upgrade @olocus/hsm-backend-software`, {
        details: { directory: this.directory, file: STORE_FILE },
      });
    }
    const parsed = storeHeaderSchema.safeParse(json);
    if (!parsed.success) throw corrupted(STORE_FILE, describeIssue(parsed.error), this.directory);
    return parsed.data;
  }

  /** Creates store.json; undefined when another writer created it first. */
  async #createHeader(secret: StoreSecret): Promise<{ key: KeyObject; kdf: KdfParams } | undefined> {
    const existing = await this.#keyFileNames();
    if (existing.length > 0) {
      throw corrupted(
        STORE_FILE,
        `it is missing but ${existing.length} key file(s) are present; restore it from a backup (a new header would not open them)`,
        this.directory,
      );
    }
    await this.#restrictDirectory();
    const salt = randomBytes(SALT_BYTES).toString('base64');
    const { N, r, p } = this.options.scrypt;
    const kdf: KdfParams = secret.kind === 'masterKey' ? { name: 'hkdf-sha256', salt, keyLength: KEY_BYTES } : { name: 'scrypt', N, r, p, salt, keyLength: KEY_BYTES };
    const key = await deriveStoreKey(secret, kdf);
    const header: StoreHeader = {
      format: STORE_FORMAT,
      version: storeVersionFor(kdf),
      createdAt: new Date().toISOString(),
      kdf,
      verifier: seal(key, Buffer.from(VERIFIER_PLAINTEXT, 'utf8'), storeAad(kdf)),
    };
    const outcome = await writeFileExclusive(this.directory, STORE_FILE, `${JSON.stringify(header, null, 2)}\n`);
    return outcome === 'created' ? { key, kdf } : undefined;
  }

  // ---------------------------------------------------------------- descriptive

  async info(): Promise<HsmInfo> {
    this.#ready();
    const kdf = this.#kdf!;
    return {
      backend: this.type,
      description: `software key store at ${this.directory} (keys in process memory, sealed at rest with AES-256-GCM)`,
      manufacturer: 'Olocus',
      model: 'software (node:crypto)',
      libraryVersion: `node ${process.version}, OpenSSL ${process.versions.openssl ?? 'unknown'}`,
      details: {
        directory: this.directory,
        formatVersion: FORMAT_VERSION,
        cipher: CIPHER,
        kdf: kdf.name === 'scrypt' ? `scrypt N=${kdf.N} r=${kdf.r} p=${kdf.p}` : 'HKDF-SHA256 (master key)',
        ...(kdf.name === 'scrypt' && kdf.N < SCRYPT_LIMITS.minN
          ? { kdfWarning: `this store was created with scrypt N=${kdf.N}, below the ${SCRYPT_LIMITS.minN} now required for new stores: a stolen copy is cheaper to guess` }
          : {}),
      },
    };
  }

  async capabilities(): Promise<Capabilities> {
    this.#ready();
    return { algorithms: [...KEY_ALGORITHMS], persistentKeys: true, hardwareBacked: false, remoteVerify: false };
  }

  async fipsStatus(): Promise<FipsStatus> {
    this.#ready();
    const fipsProvider = safeGetFips();
    return {
      standard: 'none',
      level: 0,
      approvedMode: false,
      evidence: 'none',
      notes:
        `The software backend is not a FIPS 140 validated cryptographic module. Keys are generated and used by node:crypto ` +
        `(OpenSSL ${process.versions.openssl ?? 'unknown'}) inside this process` +
        (fipsProvider === 1
          ? ` — OpenSSL reports its FIPS provider enabled (crypto.getFips() = 1), but this library, the key files and the process memory that holds the private keys are outside any validated boundary, so this is not approved-mode operation`
          : `, which is not running a validated FIPS provider in approved mode (crypto.getFips() = ${fipsProvider})`) +
        `. Private keys are sealed at rest (AES-256-GCM, under a key from scrypt or a master key) but are decrypted into process memory on first use and stay there until close(). ` +
        `There is no hardware boundary. Use a PKCS#11 or cloud HSM backend where FIPS 140-2/140-3 evidence is required (e.g. PCI DSS 3.6.1.2).`,
    };
  }

  async healthCheck(): Promise<HealthStatus> {
    this.#ready();
    const started = performance.now();
    const dir = this.directory;
    const probe = join(dir, tempName('health'));
    const details: Record<string, string | number | boolean> = { directory: dir, cachedKeys: this.#cache.size };
    try {
      const info = await stat(dir);
      details.directoryMode = (info.mode & 0o777).toString(8).padStart(4, '0');
      if (process.platform !== 'win32' && (info.mode & 0o077) !== 0) details.directoryWarning = 'group or others have access to the key store directory (expected 0700)';
      await stat(join(dir, STORE_FILE));
      const handle = await open(probe, 'wx', 0o600);
      try {
        await handle.writeFile('health');
      } finally {
        await handle.close();
      }
      await unlink(probe);
      details.keyFiles = (await this.#keyFileNames()).length;
    } catch (cause) {
      await unlink(probe).catch(() => undefined);
      return {
        healthy: false,
        latencyMs: performance.now() - started,
        message: `key store directory ${dir} is not readable and writable (${errnoOf(cause) ?? String(cause)})`,
        details,
      };
    }
    // Re-check files found corrupted earlier: a restored file clears, a removed one is forgotten.
    for (const fileName of [...this.#corrupt.keys()]) {
      const id = keyIdFromFileName(fileName);
      const outcome = id === undefined ? undefined : await this.#load(id).catch((error: unknown) => error);
      if (!isHsmError(outcome, 'StorageCorrupted')) this.#corrupt.delete(fileName);
    }
    const latencyMs = performance.now() - started;
    if (this.#corrupt.size > 0) {
      const files = [...this.#corrupt.keys()].sort();
      details.corruptKeyFiles = files.join(', ');
      return { healthy: false, latencyMs, message: `key store ${dir} has ${files.length} corrupted key file(s): ${files.join(', ')}`, details };
    }
    return { healthy: true, latencyMs, message: `key store ${dir} is readable and writable`, details };
  }

  // ---------------------------------------------------------------- keys

  async generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle> {
    this.#ready();
    const { id, algorithm, usages, expiresAt, labels = {} } = normalizeKeySpec(spec);
    if (id.startsWith(REF_PREFIX)) {
      throw new HsmError('InvalidArgument', `id ${JSON.stringify(id)} may not start with "${REF_PREFIX}": that is how this backend's references begin`, {
        details: { field: 'id' },
      });
    }

    const fileName = keyFileName(id);
    // Cheap early refusal so an RSA-4096 key is not generated for nothing; the exclusive link below decides.
    if (await this.#exists(fileName)) throw alreadyExists(id);

    let privateKey: KeyObject;
    let publicKey: KeyObject;
    try {
      ({ privateKey, publicKey } = await generate(algorithm));
    } catch (cause) {
      throw new HsmError('KeyGenerationFailed', `node:crypto could not generate a ${algorithm} key for ${id}`, { cause, details: { keyId: id, algorithm } });
    }
    this.#ready(); // closed while generating: do not write
    const spki = publicKey.export({ format: 'der', type: 'spki' });
    const metadata = metadataFor({ id, algorithm, usages, createdAt: new Date(), expiresAt, labels, spki });
    const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
    let sealed: Sealed;
    try {
      sealed = seal(this.#key!, pkcs8, keyAad(metadata));
    } finally {
      pkcs8.fill(0);
    }
    const file: KeyFile = { format: KEY_FORMAT, version: FORMAT_VERSION, metadata, sealed };
    const outcome = await writeFileExclusive(this.directory, fileName, `${JSON.stringify(file, null, 2)}\n`);
    if (outcome === 'exists') throw alreadyExists(id);

    const stamp = await this.#stamp(fileName);
    const record = recordFrom(id, fileName, metadata, sealed, publicKey, spki, stamp ?? { ino: -1, size: -1, mtimeMs: -1, ctimeMs: -1 });
    record.generated = privateKey;
    this.#cache.set(id, record);
    this.#corrupt.delete(fileName);
    return handleOf(record, this.#instanceId);
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    this.#ready();
    return handleOf(await this.#resolve(key), this.#instanceId);
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    this.#ready();
    const record = await this.#resolve(key);
    return { algorithm: record.algorithm, spki: new Uint8Array(record.spki) };
  }

  async sign(key: KeyRef, data: Uint8Array, options?: SignOptions): Promise<Uint8Array> {
    this.#ready();
    assertBytes(data, 'data');
    if (data.length > MAX_ONE_SHOT_BYTES) {
      // node:crypto refuses these with a bare "data is too big" (reported as SigningFailed before)
      throw new HsmError(
        'InvalidArgument',
        `the message is ${data.length} bytes; the software backend signs at most ${MAX_ONE_SHOT_BYTES} bytes in one call: hash large files as a stream (signStream, ECDSA and RSA)`,
        { details: { field: 'data', limit: MAX_ONE_SHOT_BYTES, length: data.length } },
      );
    }
    throwIfAborted(options?.signal);
    const record = await this.#resolve(key);
    // the record's own handle: usages and expiry come from the authenticated file, never the caller's handle
    assertUsable(handleOf(record, this.#instanceId), 'sign');
    const { sign } = await this.#signer(record);
    throwIfAborted(options?.signal);
    try {
      return await sign(data);
    } catch (cause) {
      throw new HsmError('SigningFailed', `signing with key ${record.id} (${record.algorithm}) failed`, { cause, details: { keyId: record.id } });
    }
  }

  /**
   * Signs a message read in chunks: ECDSA and RSA hash it incrementally (node:crypto createSign),
   * so the message is never held whole. Ed25519 (pure EdDSA) needs the whole message and is
   * refused here; HsmManager buffers it up to its limit and calls sign().
   */
  async signStream(key: KeyRef, chunks: AsyncIterable<Uint8Array>, options?: SignOptions): Promise<Uint8Array> {
    this.#ready();
    throwIfAborted(options?.signal);
    if (chunks === null || typeof (chunks as { [Symbol.asyncIterator]?: unknown })?.[Symbol.asyncIterator] !== 'function') {
      throw new HsmError('InvalidArgument', 'chunks must be an async iterable of Uint8Array', { details: { field: 'chunks' } });
    }
    const record = await this.#resolve(key);
    assertUsable(handleOf(record, this.#instanceId), 'sign');
    const info = algorithmInfo(record.algorithm);
    if (info.family === 'EdDSA') {
      throw new HsmError('InvalidArgument', `key ${record.id} is Ed25519, which signs the whole message and cannot hash a stream; sign() it instead`, {
        details: { field: 'data', keyId: record.id },
      });
    }
    const { privateKey } = await this.#signer(record);
    const hasher = createSign(nodeHashName(info.hash!));
    for await (const chunk of chunks) {
      assertBytes(chunk, 'chunk');
      throwIfAborted(options?.signal);
      hasher.update(chunk);
    }
    this.#ready(); // closed while the stream was read
    try {
      const signature =
        info.family === 'ECDSA'
          ? hasher.sign({ key: privateKey, dsaEncoding: 'ieee-p1363' })
          : info.padding === 'PSS'
            ? hasher.sign({ key: privateKey, padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: pssSaltLength(info.hash!) })
            : hasher.sign({ key: privateKey, padding: cryptoConstants.RSA_PKCS1_PADDING });
      return new Uint8Array(signature);
    } catch (cause) {
      throw new HsmError('SigningFailed', `signing a stream with key ${record.id} (${record.algorithm}) failed`, { cause, details: { keyId: record.id } });
    }
  }

  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options?: VerifyOptions): Promise<boolean> {
    this.#ready();
    assertBytes(data, 'data');
    assertBytes(signature, 'signature');
    throwIfAborted(options?.signal);
    const record = await this.#resolve(key);
    assertUsable(handleOf(record, this.#instanceId), 'verify');
    return verifyLocally(record.algorithm, record.publicKey, data, signature);
  }

  async listKeys(options: ListKeysOptions = {}): Promise<KeyPage> {
    this.#ready();
    const { prefix, limit, cursor } = normalizeListOptions(options);
    const candidates = (await this.#keyFileNames())
      .map(keyIdFromFileName)
      .filter((id): id is string => id !== undefined && id.startsWith(prefix) && (cursor === undefined || id > cursor))
      .sort(compareIds);
    const keys: HsmKeyHandle[] = [];
    let index = 0;
    while (keys.length < limit && index < candidates.length) {
      const batch = candidates.slice(index, index + (limit - keys.length));
      index += batch.length;
      const loaded = await Promise.all(
        batch.map((id) =>
          this.#load(id).catch((error: unknown) => {
            // A corrupted file is left alone and reported by getKey/sign and healthCheck; the rest of the store lists.
            if (isHsmError(error, 'StorageCorrupted')) return undefined;
            throw error;
          }),
        ),
      );
      for (const record of loaded) if (record) keys.push(handleOf(record, this.#instanceId));
    }
    const last = candidates[index - 1];
    return index < candidates.length && last !== undefined ? { keys, nextCursor: last } : { keys };
  }

  async destroyKey(key: KeyRef): Promise<void> {
    this.#ready();
    const record = await this.#resolve(key);
    const path = join(this.directory, record.fileName);
    this.#cache.delete(record.id);
    try {
      await unlink(path);
    } catch (cause) {
      if (errnoOf(cause) === 'ENOENT') throw notFound(record.id);
      throw ioError(cause, 'remove', path);
    }
    await syncDirectory(this.directory);
  }

  // ---------------------------------------------------------------- backup

  async #exportKey(key: KeyRef, options: { signal?: AbortSignal } = {}): Promise<ExportedKey> {
    this.#ready();
    throwIfAborted(options.signal);
    const record = await this.#resolve(key);
    const storeKey = this.#storeKey();
    const kdf = this.#kdf!;
    const header = await this.#readHeader();
    if (!header) throw corrupted(STORE_FILE, 'it is missing', this.directory);
    const path = join(this.directory, record.fileName);
    let bytes: Buffer;
    try {
      bytes = Buffer.from(await readText(path), 'utf8');
    } catch (cause) {
      if (errnoOf(cause) === 'ENOENT') throw notFound(record.id);
      throw ioError(cause, 'read', path);
    }
    // the bytes handed out are the ones just read: authenticated here, not the cached record's
    let json: unknown;
    try {
      json = JSON.parse(bytes.toString('utf8'));
    } catch (cause) {
      throw corrupted(record.fileName, 'it is not valid JSON (changed while being exported?)', this.directory, cause, record.id);
    }
    const parsed = keyFileSchema.safeParse(json);
    if (!parsed.success || parsed.data.metadata.id !== record.id) throw corrupted(record.fileName, 'it changed while being exported', this.directory, undefined, record.id);
    try {
      unseal(storeKey, parsed.data.sealed, keyAad(parsed.data.metadata)).fill(0);
    } catch (cause) {
      throw corrupted(record.fileName, 'authentication failed: the metadata or the sealed key was altered', this.directory, cause, record.id);
    }
    const metadata = parsed.data.metadata;
    const parameters: Record<string, string> = {
      format: KEY_FORMAT,
      formatVersion: String(FORMAT_VERSION),
      cipher: CIPHER,
      kdf: kdf.name,
      ...(kdf.name === 'scrypt' ? { kdfN: String(kdf.N), kdfR: String(kdf.r), kdfP: String(kdf.p) } : {}),
      kdfSalt: kdf.salt,
      kdfKeyLength: String(kdf.keyLength),
      // the store's verifier (a known plaintext sealed by the store key, as in store.json): lets a
      // restore tell a wrong passphrase or master key from an altered file
      storeVerifier: JSON.stringify(header.verifier),
      fileName: record.fileName,
    };
    return {
      method: 'sealed-file',
      id: record.id,
      algorithm: metadata.algorithm,
      usages: [...metadata.usages],
      publicKeySpki: new Uint8Array(Buffer.from(metadata.publicKey, 'base64')),
      blob: new Uint8Array(bytes),
      parameters,
    };
  }

  async #importKey(exported: ExportedKey, options: { id?: string; signal?: AbortSignal } = {}): Promise<HsmKeyHandle> {
    this.#ready();
    throwIfAborted(options.signal);
    if (!exported || typeof exported !== 'object') throw new HsmError('InvalidArgument', 'exported must be an ExportedKey', { details: { field: 'exported' } });
    if (exported.method !== 'sealed-file') {
      throw new HsmError('InvalidArgument', `a '${String(exported.method)}' export cannot be restored into the software store; it restores 'sealed-file' exports`, { details: { field: 'exported.method' } });
    }
    if (!(exported.blob instanceof Uint8Array) || exported.blob.length === 0) throw new HsmError('InvalidArgument', 'a sealed-file export needs its blob', { details: { field: 'exported.blob' } });
    const id = options.id ?? exported.id;
    assertValidKeyId(id, 'id');
    if (id.startsWith(REF_PREFIX)) throw new HsmError('InvalidArgument', `id may not start with "${REF_PREFIX}"`, { details: { field: 'id' } });
    const p = exported.parameters ?? {};
    if (p.format !== KEY_FORMAT || p.formatVersion !== String(FORMAT_VERSION)) {
      throw new HsmError('InvalidArgument', `parameters.format/formatVersion must be ${KEY_FORMAT} ${FORMAT_VERSION}`, { details: { field: 'parameters.format' } });
    }
    const kdfParsed = kdfSchema.safeParse(
      p.kdf === 'hkdf-sha256'
        ? { name: p.kdf, salt: p.kdfSalt, keyLength: Number(p.kdfKeyLength) }
        : { name: p.kdf, N: Number(p.kdfN), r: Number(p.kdfR), p: Number(p.kdfP), salt: p.kdfSalt, keyLength: Number(p.kdfKeyLength) },
    );
    if (!kdfParsed.success) throw new HsmError('InvalidArgument', `parameters.kdf*: ${describeIssue(kdfParsed.error)}`, { details: { field: 'parameters.kdf' } });
    const kdf = kdfParsed.data;
    let verifierJson: unknown;
    try {
      verifierJson = JSON.parse(p.storeVerifier ?? '');
    } catch {
      verifierJson = undefined;
    }
    const verifier = sealedSchema.safeParse(verifierJson);
    if (!verifier.success) throw new HsmError('InvalidArgument', 'parameters.storeVerifier is not a sealed verifier', { details: { field: 'parameters.storeVerifier' } });

    const tampered = (reason: string, cause?: unknown) =>
      new HsmError('IntegrityError', `the sealed key file for ${id} cannot be restored: ${reason}`, { cause, details: { keyId: id } });
    let fileJson: unknown;
    try {
      fileJson = JSON.parse(Buffer.from(exported.blob).toString('utf8'));
    } catch (cause) {
      throw tampered('the blob is not a sealed key file (not JSON)', cause);
    }
    const file = keyFileSchema.safeParse(fileJson);
    if (!file.success) throw tampered(`the blob is not a sealed key file (${describeIssue(file.error)})`);
    const source = file.data.metadata;
    if (source.algorithm !== exported.algorithm) throw tampered(`the file holds a ${source.algorithm} key, the export says ${exported.algorithm}`);
    const spki = Buffer.from(exported.publicKeySpki ?? []);
    if (!Buffer.from(source.publicKey, 'base64').equals(spki)) throw tampered("the file's public key is not publicKeySpki");

    const fileName = keyFileName(id);
    if (await this.#exists(fileName)) throw alreadyExists(id);
    const storeKey = this.#storeKey();
    const ownKdf = this.#kdf!;
    const sameStore = canonicalJson(kdf) === canonicalJson(ownKdf);
    let sourceKey = storeKey;
    if (!sameStore) {
      // sealed by another store: its key is derived from this store's secret (read again from its source) and the file's salt
      const own = secretKindOf(ownKdf);
      const what = own === 'passphrase' ? 'passphrase' : 'master key';
      if (secretKindOf(kdf) !== own) {
        throw new HsmError('WrongPassphrase', `the sealed key file for ${id} was sealed by a store protected by ${SECRET_NAME[secretKindOf(kdf)]}, and this store opens with ${SECRET_NAME[own]}: restore it into a store protected the same way`, {
          details: { keyId: id, directory: this.directory },
        });
      }
      let secret: StoreSecret;
      try {
        secret = await this.#readStoreSecret();
      } catch (cause) {
        throw new HsmError('InvalidConfiguration', `restoring ${id}, sealed by another store, needs this store's ${what} again, read from ${SECRET_FIELD[own]} (a passphrase given to the constructor is dropped by initialize()): ${(cause as Error).message}`, {
          cause,
          details: { field: SECRET_FIELD[own], keyId: id },
        });
      }
      try {
        sourceKey = await deriveStoreKey(secret, kdf);
      } finally {
        dropSecret(secret);
      }
      try {
        const plain = unseal(sourceKey, verifier.data, storeAad(kdf));
        if (!timingSafeEqualStrings(plain.toString('utf8'), VERIFIER_PLAINTEXT)) throw new Error('verifier mismatch');
      } catch {
        throw new HsmError('WrongPassphrase', `the sealed key file for ${id} was sealed by a store with another ${what} (its verifier does not open with this store's ${what})`, {
          details: { keyId: id, directory: this.directory },
        });
      }
    }
    let pkcs8: Buffer;
    try {
      pkcs8 = unseal(sourceKey, file.data.sealed, keyAad(source));
    } catch (cause) {
      throw tampered('authentication failed: the file was altered', cause);
    }
    let sealed: Sealed;
    let publicKey: KeyObject;
    const metadata = metadataFor({
      id,
      algorithm: source.algorithm,
      usages: [...source.usages],
      createdAt: new Date(source.createdAt),
      expiresAt: source.expiresAt === undefined ? undefined : new Date(source.expiresAt),
      labels: source.labels,
      spki,
    });
    try {
      let privateKey: KeyObject;
      try {
        privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
        publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
        assertKeyMatches(source.algorithm, publicKey);
      } catch (cause) {
        throw tampered('the sealed private key or the public key is not valid', cause);
      }
      if (!createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).equals(spki)) throw tampered('the private key does not match publicKeySpki');
      sealed = seal(storeKey, pkcs8, keyAad(metadata));
    } finally {
      pkcs8.fill(0);
    }
    this.#ready(); // closed meanwhile: do not write
    const keyFile: KeyFile = { format: KEY_FORMAT, version: FORMAT_VERSION, metadata, sealed };
    const outcome = await writeFileExclusive(this.directory, fileName, `${JSON.stringify(keyFile, null, 2)}\n`);
    if (outcome === 'exists') throw alreadyExists(id);
    const stamp = await this.#stamp(fileName);
    const record = recordFrom(id, fileName, metadata, sealed, publicKey, spki, stamp ?? { ino: -1, size: -1, mtimeMs: -1, ctimeMs: -1 });
    this.#cache.set(id, record);
    this.#corrupt.delete(fileName);
    return handleOf(record, this.#instanceId);
  }

  // ---------------------------------------------------------------- internals

  /**
   * The store key, captured by each operation before its first await: close() drops the field, and
   * an operation that read it afterwards would fail to authenticate and report a false corruption.
   */
  #storeKey(): KeyObject {
    this.#ready();
    return this.#key!;
  }

  #ready(): void {
    if (this.#state === 'closed') throw closedError();
    if (this.#state !== 'ready') throw new HsmError('NotInitialized', 'call initialize() before using the software backend');
  }

  /**
   * Finds a key by handle, id, or `software:<id>` reference. A handle is resolved by its `ref`
   * alone, after checking it names this instance: its id, algorithm and metadata are the caller's
   * and are never believed. Ids may not begin with `software:` (generateKeyPair refuses them), so
   * a string with that prefix is always a reference.
   */
  async #resolve(key: KeyRef): Promise<KeyRecord> {
    if (key !== null && typeof key === 'object') {
      assertSameInstance(key, this.#instanceId);
      const ref = key.ref;
      if (!ref.startsWith(REF_PREFIX)) {
        throw new HsmError('InvalidArgument', `key handle ref ${JSON.stringify(ref.slice(0, 200))} is not a ${REF_PREFIX} reference`, { details: { field: 'key.ref' } });
      }
      const id = ref.slice(REF_PREFIX.length);
      assertValidKeyId(id, 'key.ref');
      return (await this.#load(id)) ?? throwNotFound(ref);
    }
    if (typeof key !== 'string') throw new HsmError('InvalidArgument', 'key must be a key id, a software: reference or a key handle', { details: { field: 'key' } });
    const id = key.startsWith(REF_PREFIX) ? key.slice(REF_PREFIX.length) : key;
    assertValidKeyId(id, 'key');
    return (await this.#load(id)) ?? throwNotFound(key);
  }

  /** The authenticated record for `id`, from cache (re-stat-ed every cacheRevalidateMs) or disk; undefined when absent. */
  async #load(id: string): Promise<KeyRecord | undefined> {
    const cached = this.#cache.get(id);
    if (cached) {
      const now = Date.now();
      if (now - cached.checkedAt < this.options.cacheRevalidateMs) return cached;
      const stamp = await this.#stamp(cached.fileName);
      if (stamp && sameStamp(stamp, cached.stamp)) {
        cached.checkedAt = now;
        return cached;
      }
      if (this.#cache.get(id) === cached) this.#cache.delete(id); // destroyed or replaced by someone else
      if (!stamp) return undefined;
    }
    const inflight = this.#loading.get(id);
    if (inflight) return inflight;
    const loading = this.#readKeyFile(id).finally(() => this.#loading.delete(id));
    this.#loading.set(id, loading);
    return loading;
  }

  async #readKeyFile(id: string): Promise<KeyRecord | undefined> {
    const fileName = keyFileName(id);
    const path = join(this.directory, fileName);
    let text: string;
    let stamp: FileStamp;
    try {
      const handle = await open(path, 'r');
      try {
        const info = await handle.stat();
        stamp = { ino: info.ino, size: info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs };
        text = await handle.readFile('utf8');
      } finally {
        await handle.close();
      }
    } catch (cause) {
      if (errnoOf(cause) === 'ENOENT') return undefined;
      throw ioError(cause, 'read', path);
    }
    const storeKey = this.#storeKey();
    const fail = (reason: string, cause?: unknown): never => {
      this.#ready(); // closed meanwhile: report Closed, never a false tamper alarm
      this.#corrupt.set(fileName, reason);
      throw corrupted(fileName, reason, this.directory, cause, id);
    };
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (cause) {
      return fail('it is not valid JSON (truncated?)', cause);
    }
    const parsed = keyFileSchema.safeParse(json);
    if (!parsed.success) return fail(describeIssue(parsed.error));
    const { metadata, sealed } = parsed.data;
    if (metadata.id !== id) {
      if (metadata.id.toLowerCase() === id.toLowerCase()) {
        // A case-insensitive file system maps both ids to one file: this id does not exist.
        return undefined;
      }
      return fail(`it holds key ${JSON.stringify(metadata.id)}, not ${JSON.stringify(id)} (file renamed or swapped)`);
    }
    try {
      unseal(storeKey, sealed, keyAad(metadata)).fill(0);
    } catch (cause) {
      return fail('authentication failed: the metadata or the sealed key was altered, or the file belongs to another store', cause);
    }
    const spki = Buffer.from(metadata.publicKey, 'base64');
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
      assertKeyMatches(metadata.algorithm, publicKey);
    } catch (cause) {
      return fail(`its public key does not fit ${metadata.algorithm}`, cause);
    }
    const record = recordFrom(id, fileName, metadata, sealed, publicKey, spki, stamp);
    this.#ready(); // closed meanwhile: do not repopulate the cache
    this.#cache.set(id, record);
    this.#corrupt.delete(fileName);
    return record;
  }

  /** The record's signer, unsealing the private key on first use (shared by concurrent callers). */
  #signer(record: KeyRecord): Promise<SigningKey> {
    if (!record.signer) {
      record.signer = this.#makeSigner(record);
      record.signer.catch(() => {
        record.signer = undefined; // allow a retry after e.g. a transient failure
      });
    }
    return record.signer;
  }

  async #makeSigner(record: KeyRecord): Promise<SigningKey> {
    let privateKey = record.generated;
    let pkcs8: Buffer | undefined;
    const storeKey = this.#storeKey();
    const fail = (reason: string, cause?: unknown): never => {
      this.#ready(); // closed meanwhile: report Closed, never a false tamper alarm
      this.#corrupt.set(record.fileName, reason);
      throw corrupted(record.fileName, reason, this.directory, cause, record.id);
    };
    try {
      if (!privateKey) {
        try {
          pkcs8 = unseal(storeKey, record.sealed, keyAad(record.metadata));
        } catch (cause) {
          return fail('authentication failed: the sealed key was altered', cause);
        }
        try {
          privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
        } catch (cause) {
          return fail('the sealed private key is not valid PKCS#8', cause);
        }
        const derived = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
        if (!derived.equals(record.spki)) fail('the private key does not match the public key in the metadata');
      }
      const key = privateKey;
      const info = algorithmInfo(record.algorithm);
      if (!OFF_THREAD.has(record.algorithm)) {
        if (info.family === 'EdDSA') return { privateKey: key, sign: async (data) => new Uint8Array(nodeSign(null, data, key)) };
        const hash = nodeHashName(info.hash!);
        return { privateKey: key, sign: async (data) => new Uint8Array(nodeSign(hash, data, { key, dsaEncoding: 'ieee-p1363' })) };
      }
      const der = pkcs8 ?? key.export({ format: 'der', type: 'pkcs8' });
      try {
        return { privateKey: key, sign: await webCryptoSigner(record.algorithm, der) };
      } finally {
        der.fill(0);
      }
    } finally {
      pkcs8?.fill(0);
      record.generated = undefined;
    }
  }

  async #exists(fileName: string): Promise<boolean> {
    return (await this.#stamp(fileName)) !== undefined;
  }

  async #stamp(fileName: string): Promise<FileStamp | undefined> {
    const path = join(this.directory, fileName);
    try {
      const info = await stat(path);
      return { ino: info.ino, size: info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs };
    } catch (cause) {
      if (errnoOf(cause) === 'ENOENT') return undefined;
      throw ioError(cause, 'stat', path);
    }
  }

  async #keyFileNames(): Promise<string[]> {
    try {
      return (await readdir(this.directory)).filter((name) => keyIdFromFileName(name) !== undefined);
    } catch (cause) {
      throw ioError(cause, 'list', this.directory);
    }
  }
}

// -------------------------------------------------------------------- helpers

async function generate(algorithm: KeyAlgorithm): Promise<{ privateKey: KeyObject; publicKey: KeyObject }> {
  const info = algorithmInfo(algorithm);
  if (info.family === 'EdDSA') return generateKeyPairAsync('ed25519');
  if (info.family === 'ECDSA') return generateKeyPairAsync('ec', { namedCurve: info.curve! });
  // rsaEncryption keys (not id-RSASSA-PSS) for both paddings: the most interoperable SPKI.
  return generateKeyPairAsync('rsa', { modulusLength: info.modulusBits!, publicExponent: 0x10001 });
}

async function webCryptoSigner(algorithm: KeyAlgorithm, pkcs8: Buffer): Promise<Signer> {
  const info = algorithmInfo(algorithm);
  const hash = info.hash!;
  const subtle = webcrypto.subtle;
  let importParams: Parameters<typeof subtle.importKey>[2];
  let signParams: Parameters<typeof subtle.sign>[0];
  if (info.family === 'ECDSA') {
    importParams = { name: 'ECDSA', namedCurve: info.curve! };
    signParams = { name: 'ECDSA', hash }; // WebCrypto ECDSA signatures are IEEE P1363 r||s
  } else if (info.padding === 'PSS') {
    importParams = { name: 'RSA-PSS', hash };
    signParams = { name: 'RSA-PSS', saltLength: pssSaltLength(hash) };
  } else {
    importParams = { name: 'RSASSA-PKCS1-v1_5', hash };
    signParams = { name: 'RSASSA-PKCS1-v1_5' };
  }
  const cryptoKey = await subtle.importKey('pkcs8', pkcs8, importParams, false, ['sign']);
  return async (data) => new Uint8Array(await subtle.sign(signParams, cryptoKey, data));
}

/** The store key for a KDF; the caller has checked that the secret is of the kind the KDF takes. */
async function deriveStoreKey(secret: StoreSecret, kdf: KdfParams): Promise<KeyObject> {
  if (kdf.name === 'scrypt') {
    if (secret.kind !== 'passphrase') throw new HsmError('InvalidConfiguration', 'a scrypt store is opened by a passphrase');
    return deriveKey(secret.passphrase, kdf);
  }
  if (secret.kind !== 'masterKey') throw new HsmError('InvalidConfiguration', 'a master-key store is opened by a master key');
  try {
    const derived = Buffer.from(
      await new Promise<ArrayBuffer>((resolve, reject) =>
        hkdf('sha256', secret.key, Buffer.from(kdf.salt, 'base64'), MASTER_KEY_HKDF_INFO, kdf.keyLength, (error, key) => (error ? reject(error) : resolve(key))),
      ),
    );
    try {
      return createSecretKey(derived);
    } finally {
      derived.fill(0);
    }
  } catch (cause) {
    throw new HsmError('InitializationFailed', 'HKDF-SHA256 key derivation failed', { cause });
  }
}

async function deriveKey(passphrase: string, kdf: ScryptKdfParams): Promise<KeyObject> {
  const password = Buffer.from(passphrase.normalize('NFC'), 'utf8');
  // OpenSSL refuses unless maxmem covers 128·r·(N + p + 2) bytes; node's default cap (32 MiB) is
  // below what N=2^17 needs (128 MiB), so the cap is set from the parameters, plus 1 MiB of slack.
  const options: ScryptOptions = { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: scryptMemoryBytes(kdf) + 2 ** 20 };
  try {
    const derived = await new Promise<Buffer>((resolve, reject) =>
      scrypt(password, Buffer.from(kdf.salt, 'base64'), kdf.keyLength, options, (error, key) => (error ? reject(error) : resolve(key))),
    );
    try {
      return createSecretKey(derived);
    } finally {
      derived.fill(0);
    }
  } catch (cause) {
    throw new HsmError('InitializationFailed', `scrypt key derivation failed (N=${kdf.N} r=${kdf.r} p=${kdf.p})`, { cause });
  } finally {
    password.fill(0);
  }
}

/** The memory scrypt needs for these parameters (what OpenSSL checks against maxmem). */
export function scryptMemoryBytes(kdf: { N: number; r: number; p: number }): number {
  return 128 * kdf.r * (kdf.N + kdf.p + 2);
}

function recordFrom(id: string, fileName: string, metadata: KeyMetadata, sealed: Sealed, publicKey: KeyObject, spki: Buffer, stamp: FileStamp): KeyRecord {
  return {
    id,
    fileName,
    metadata,
    algorithm: metadata.algorithm,
    usages: Object.freeze([...metadata.usages]),
    createdAt: new Date(metadata.createdAt),
    expiresAt: metadata.expiresAt === undefined ? undefined : new Date(metadata.expiresAt),
    spki,
    publicKey,
    sealed,
    stamp,
    checkedAt: Date.now(),
  };
}

function handleOf(record: KeyRecord, instance: string): HsmKeyHandle {
  const metadata: Record<string, string> = {
    file: record.fileName,
    publicKeySha256: createHash('sha256').update(record.spki).digest('hex'),
  };
  const labels = record.metadata.labels;
  for (const [name, value] of Object.entries(labels)) metadata[`label.${name}`] = value;
  return {
    id: record.id,
    ref: `${REF_PREFIX}${record.id}`,
    algorithm: record.algorithm,
    usages: [...record.usages],
    createdAt: new Date(record.createdAt),
    ...(record.expiresAt ? { expiresAt: new Date(record.expiresAt) } : {}),
    backend: SOFTWARE_BACKEND_TYPE,
    instance,
    state: 'enabled',
    ...(Object.keys(labels).length > 0 ? { labels: { ...labels } } : {}),
    metadata,
  };
}

function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function assertBytes(value: unknown, field: string): void {
  if (!(value instanceof Uint8Array)) throw new HsmError('InvalidArgument', `${field} must be a Uint8Array`, { details: { field } });
}

function timingSafeEqualStrings(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function safeGetFips(): number {
  try {
    return getFips();
  } catch {
    return 0;
  }
}

function closedError(): HsmError {
  return new HsmError('Closed', 'the software backend is closed');
}

function notFound(key: string): HsmError {
  return new HsmError('KeyNotFound', `no key ${JSON.stringify(key)} in the software key store`, { details: { keyId: key } });
}

function throwNotFound(key: string): never {
  throw notFound(key);
}

function alreadyExists(id: string): HsmError {
  return new HsmError(
    'KeyAlreadyExists',
    `key ${JSON.stringify(id)} already exists in the software key store (on a case-insensitive file system, ids differing only in case collide)`,
    { details: { keyId: id } },
  );
}

function corrupted(file: string, reason: string, directory: string, cause?: unknown, keyId?: string): HsmError {
  return new HsmError('StorageCorrupted', `key store file ${join(directory, file)} is corrupted: ${reason}. The file was left as it is.`, {
    ...(cause === undefined ? {} : { cause }),
    details: { file, directory, ...(keyId ? { keyId } : {}) },
  });
}

function describeIssue(error: import('zod').ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'unexpected structure';
  return `field ${issue.path.join('.') || '(root)'}: ${issue.message}`;
}

async function readText(path: string): Promise<string> {
  const handle = await open(path, 'r');
  try {
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}
