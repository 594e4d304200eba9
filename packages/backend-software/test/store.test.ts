import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendRegistry, HsmError, exportPublicKey, verifyLocally, type HsmBackend } from '@olocus/hsm-core';
import { expectHsmError, independentVerify } from '@olocus/hsm-core/testing';
import { SoftwareBackend, backendFactories, keyFileName, softwareBackendFactory } from '../src/index.js';
import { DIST_ENTRY, FAST_SCRYPT, PACKAGE_DIR, backendFor, openBackend, removeStore, requireDist, snapshot, tempStore } from './helpers.js';

const PASSPHRASE = `pp-${randomBytes(12).toString('hex')}-never-log-me`;
const WRONG = `wrong-${randomBytes(12).toString('hex')}`;
const dirs: string[] = [];
/** Every error the tests provoke, checked at the end for the passphrase. */
const errors: unknown[] = [];

async function newStore(label: string): Promise<string> {
  const dir = await tempStore(label);
  dirs.push(dir);
  return dir;
}

async function expectCode(promise: Promise<unknown>, code: HsmError['code']): Promise<HsmError> {
  const error = await expectHsmError(promise, code);
  errors.push(error);
  return error;
}

function expectCodeSync(fn: () => unknown, code: HsmError['code']): HsmError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(HsmError);
  expect((caught as HsmError).code).toBe(code);
  errors.push(caught);
  return caught as HsmError;
}

/** A store with ECDSA_P256 keys `ids`, closed again. */
async function storeWithKeys(label: string, ids: string[]): Promise<string> {
  const dir = await newStore(label);
  const backend = await openBackend(dir, PASSPHRASE);
  for (const id of ids) await backend.generateKeyPair({ id, algorithm: 'ECDSA_P256' });
  await backend.close();
  return dir;
}

/** A sealed key file as stored: the parts the tests tamper with. */
interface KeyFileJson {
  sealed: { ciphertext: string; tag: string; [field: string]: string };
  metadata: Record<string, unknown>;
}

async function readKeyFile(dir: string, id: string): Promise<KeyFileJson> {
  return JSON.parse(await readFile(join(dir, keyFileName(id)), 'utf8'));
}

async function writeKeyFile(dir: string, id: string, content: unknown): Promise<void> {
  await writeFile(join(dir, keyFileName(id)), `${JSON.stringify(content, null, 2)}\n`);
}

async function signsAndVerifies(backend: HsmBackend, id: string): Promise<void> {
  const data = randomBytes(64);
  const signature = await backend.sign(id, data);
  const pub = await backend.getPublicKey(id);
  expect(independentVerify(pub.algorithm, exportPublicKey(pub, 'pem'), data, signature)).toBe(true);
}

/** Opens a fresh instance and checks `id` is reported corrupted, naming its file, and `healthy` keys still sign. */
async function expectCorrupted(dir: string, id: string, healthy: string[]): Promise<void> {
  const before = await snapshot(dir);
  const backend = await openBackend(dir, PASSPHRASE);
  try {
    for (const call of [() => backend.sign(id, randomBytes(8)), () => backend.getKey(id), () => backend.getPublicKey(id), () => backend.destroyKey(id)]) {
      const error = await expectCode(call(), 'StorageCorrupted');
      expect(error.message).toContain(keyFileName(id));
      expect(error.details.keyId).toBe(id);
      expect(error.details.file).toBe(keyFileName(id));
    }
    for (const other of healthy) await signsAndVerifies(backend, other);
    const listed = (await backend.listKeys()).keys.map((k) => k.id);
    expect(listed).not.toContain(id);
    for (const other of healthy) expect(listed).toContain(other);
    const health = await backend.healthCheck();
    expect(health.healthy).toBe(false);
    expect(health.message).toContain(keyFileName(id));
  } finally {
    await backend.close();
  }
  // the bad file is neither deleted nor rewritten, and nothing else changed
  expect(await snapshot(dir)).toEqual(before);
}

afterAll(async () => {
  for (const dir of dirs) await removeStore(dir);
});

describe('passphrase', () => {
  it('a wrong passphrase fails initialize with WrongPassphrase and changes nothing on disk', async () => {
    const dir = await storeWithKeys('wrong-pass', ['alpha', 'bravo']);
    const before = await snapshot(dir);
    const backend = backendFor(dir, WRONG);
    const error = await expectCode(backend.initialize(), 'WrongPassphrase');
    expect(error.message).toContain(dir);
    await expectCode(backend.sign('alpha', randomBytes(8)), 'NotInitialized');
    expect(await snapshot(dir)).toEqual(before);

    const right = await openBackend(dir, PASSPHRASE);
    await signsAndVerifies(right, 'alpha');
    await right.close();
  });

  it('the store keeps its own scrypt parameters: other options still open it', async () => {
    const dir = await storeWithKeys('kdf-params', ['alpha']);
    const header = JSON.parse(await readFile(join(dir, 'store.json'), 'utf8'));
    expect(header.kdf).toMatchObject({ name: 'scrypt', N: FAST_SCRYPT.N, r: 8, p: 1, keyLength: 32 });
    const backend = await openBackend(dir, PASSPHRASE, { scrypt: { N: 2 ** 16, r: 4 } });
    await signsAndVerifies(backend, 'alpha');
    await backend.close();
  });

  it('an altered store.json is refused before any key is touched', async () => {
    const dir = await storeWithKeys('header-edit', ['alpha']);
    const path = join(dir, 'store.json');
    const header = JSON.parse(await readFile(path, 'utf8'));
    header.kdf.N = 2048;
    await writeFile(path, JSON.stringify(header));
    await expectCode(backendFor(dir, PASSPHRASE).initialize(), 'WrongPassphrase');

    await writeFile(path, '{"format": "olocus-hsm-software-store", "vers');
    const error = await expectCode(backendFor(dir, PASSPHRASE).initialize(), 'StorageCorrupted');
    expect(error.message).toContain('store.json');
  });

  it('a missing store.json beside existing key files is StorageCorrupted, not a fresh store', async () => {
    const dir = await storeWithKeys('header-missing', ['alpha']);
    await rename(join(dir, 'store.json'), join(dir, 'store.json.bak'));
    const error = await expectCode(backendFor(dir, PASSPHRASE).initialize(), 'StorageCorrupted');
    expect(error.message).toContain('store.json');
    expect(await readdir(dir)).not.toContain('store.json');
  });
});

describe('tampered and truncated key files', () => {
  it('a flipped ciphertext byte is StorageCorrupted naming the key; other keys keep signing', async () => {
    const dir = await storeWithKeys('flip', ['alpha', 'bravo', 'charlie']);
    const file = await readKeyFile(dir, 'alpha');
    const ciphertext = Buffer.from(file.sealed.ciphertext, 'base64');
    ciphertext[10] = ciphertext[10]! ^ 0x01;
    file.sealed.ciphertext = ciphertext.toString('base64');
    await writeKeyFile(dir, 'alpha', file);
    await expectCorrupted(dir, 'alpha', ['bravo', 'charlie']);
  });

  it('a flipped authentication tag is StorageCorrupted', async () => {
    const dir = await storeWithKeys('tag', ['alpha', 'bravo']);
    const file = await readKeyFile(dir, 'alpha');
    const tag = Buffer.from(file.sealed.tag, 'base64');
    tag[0] = tag[0]! ^ 0x80;
    file.sealed.tag = tag.toString('base64');
    await writeKeyFile(dir, 'alpha', file);
    await expectCorrupted(dir, 'alpha', ['bravo']);
  });

  it('an edited algorithm in the metadata is StorageCorrupted', async () => {
    const dir = await storeWithKeys('alg', ['alpha', 'bravo']);
    const file = await readKeyFile(dir, 'alpha');
    expect(file.metadata.algorithm).toBe('ECDSA_P256');
    file.metadata.algorithm = 'ECDSA_P384';
    await writeKeyFile(dir, 'alpha', file);
    await expectCorrupted(dir, 'alpha', ['bravo']);
  });

  it('edited usages, expiry or labels are StorageCorrupted (all metadata is authenticated)', async () => {
    const dir = await storeWithKeys('usages', ['alpha', 'bravo', 'charlie', 'delta']);
    const alpha = await readKeyFile(dir, 'alpha');
    alpha.metadata.usages = ['verify'];
    await writeKeyFile(dir, 'alpha', alpha);
    const bravo = await readKeyFile(dir, 'bravo');
    bravo.metadata.expiresAt = new Date(Date.now() + 86_400_000).toISOString();
    await writeKeyFile(dir, 'bravo', bravo);
    const charlie = await readKeyFile(dir, 'charlie');
    charlie.metadata.labels = { owner: 'mallory' };
    await writeKeyFile(dir, 'charlie', charlie);
    await expectCorrupted(dir, 'alpha', ['delta']);
    await expectCorrupted(dir, 'bravo', ['delta']);
    await expectCorrupted(dir, 'charlie', ['delta']);
  });

  it('metadata swapped between two files is StorageCorrupted for both', async () => {
    const dir = await storeWithKeys('swap-meta', ['alpha', 'bravo', 'charlie']);
    const alpha = await readKeyFile(dir, 'alpha');
    const bravo = await readKeyFile(dir, 'bravo');
    [alpha.metadata, bravo.metadata] = [bravo.metadata, alpha.metadata];
    await writeKeyFile(dir, 'alpha', alpha);
    await writeKeyFile(dir, 'bravo', bravo);
    await expectCorrupted(dir, 'alpha', ['charlie']);
    await expectCorrupted(dir, 'bravo', ['charlie']);
  });

  it('metadata swapped but the ids kept (public key, created) fails authentication', async () => {
    const dir = await storeWithKeys('swap-meta-keep-id', ['alpha', 'bravo', 'charlie']);
    const alpha = await readKeyFile(dir, 'alpha');
    const bravo = await readKeyFile(dir, 'bravo');
    [alpha.metadata, bravo.metadata] = [
      { ...bravo.metadata, id: 'alpha' },
      { ...alpha.metadata, id: 'bravo' },
    ];
    await writeKeyFile(dir, 'alpha', alpha);
    await writeKeyFile(dir, 'bravo', bravo);
    await expectCorrupted(dir, 'alpha', ['charlie']);
    await expectCorrupted(dir, 'bravo', ['charlie']);
  });

  it('sealed keys swapped between two files fail authentication (metadata is the AAD)', async () => {
    const dir = await storeWithKeys('swap-sealed', ['alpha', 'bravo', 'charlie']);
    const alpha = await readKeyFile(dir, 'alpha');
    const bravo = await readKeyFile(dir, 'bravo');
    [alpha.sealed, bravo.sealed] = [bravo.sealed, alpha.sealed];
    await writeKeyFile(dir, 'alpha', alpha);
    await writeKeyFile(dir, 'bravo', bravo);
    await expectCorrupted(dir, 'alpha', ['charlie']);
    await expectCorrupted(dir, 'bravo', ['charlie']);
  });

  it('a whole file renamed over another key is StorageCorrupted', async () => {
    const dir = await storeWithKeys('rename', ['alpha', 'bravo', 'charlie']);
    await rename(join(dir, keyFileName('bravo')), join(dir, keyFileName('alpha')));
    await expectCorrupted(dir, 'alpha', ['charlie']);
  });

  it('a key file from another store (other salt) is StorageCorrupted', async () => {
    const dir = await storeWithKeys('foreign', ['alpha', 'bravo']);
    const other = await storeWithKeys('foreign-src', ['alpha']);
    await writeFile(join(dir, keyFileName('alpha')), await readFile(join(other, keyFileName('alpha'))));
    await expectCorrupted(dir, 'alpha', ['bravo']);
  });

  it('truncated and empty files are StorageCorrupted', async () => {
    const dir = await storeWithKeys('truncate', ['alpha', 'bravo', 'charlie']);
    const path = join(dir, keyFileName('alpha'));
    const bytes = await readFile(path);
    await writeFile(path, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await writeFile(join(dir, keyFileName('bravo')), '');
    await expectCorrupted(dir, 'alpha', ['charlie']);
    await expectCorrupted(dir, 'bravo', ['charlie']);
  });

  it('healthCheck clears once the corrupted file is restored from a backup', async () => {
    const dir = await storeWithKeys('restore', ['alpha', 'bravo']);
    const path = join(dir, keyFileName('alpha'));
    const good = await readFile(path);
    await writeFile(path, good.subarray(0, 40));
    const backend = await openBackend(dir, PASSPHRASE);
    await expectCode(backend.sign('alpha', randomBytes(8)), 'StorageCorrupted');
    expect((await backend.healthCheck()).healthy).toBe(false);
    await writeFile(path, good);
    expect((await backend.healthCheck()).healthy).toBe(true);
    await signsAndVerifies(backend, 'alpha');
    await backend.close();
  });

  it('a running instance notices a key file altered under it', async () => {
    const dir = await storeWithKeys('live-tamper', ['alpha', 'bravo']);
    const backend = await openBackend(dir, PASSPHRASE); // cacheRevalidateMs: 0
    await signsAndVerifies(backend, 'alpha');
    const file = await readKeyFile(dir, 'alpha');
    file.metadata.algorithm = 'ECDSA_P521';
    await writeKeyFile(dir, 'alpha', file);
    await expectCode(backend.sign('alpha', randomBytes(8)), 'StorageCorrupted');
    await signsAndVerifies(backend, 'bravo');
    await backend.close();
  });
});

describe('key store directory', () => {
  it('create: false and a missing directory is InitializationFailed naming the path', async () => {
    const parent = await newStore('missing');
    const dir = join(parent, 'not', 'there');
    const backend = backendFor(dir, PASSPHRASE, { create: false });
    const error = await expectCode(backend.initialize(), 'InitializationFailed');
    expect(error.message).toContain(dir);
    await expect(stat(dir)).rejects.toThrow();
  });

  it('a path that is a file is InitializationFailed naming it', async () => {
    const parent = await newStore('file-path');
    const path = join(parent, 'a-file');
    await writeFile(path, 'x');
    const error = await expectCode(backendFor(path, PASSPHRASE).initialize(), 'InitializationFailed');
    expect(error.message).toContain(path);
  });

  it('initialize removes its own temporary files older than an hour, and nothing else', async () => {
    const dir = await storeWithKeys('stale-temp', ['alpha']);
    const stale = join(dir, '.new-4242-0123456789ab.tmp');
    const fresh = join(dir, '.new-4243-0123456789ab.tmp');
    const foreign = join(dir, 'notes.txt');
    for (const path of [stale, fresh, foreign]) await writeFile(path, 'x');
    const old = new Date(Date.now() - 2 * 3_600_000);
    await utimes(stale, old, old);
    await utimes(foreign, old, old);
    const backend = await openBackend(dir, PASSPHRASE);
    await backend.close();
    expect((await readdir(dir)).sort()).toEqual(['.new-4243-0123456789ab.tmp', keyFileName('alpha'), 'notes.txt', 'store.json'].sort());
  });

  it('creates the directory 0700 and key files 0600 by default', async () => {
    const parent = await newStore('create');
    const dir = join(parent, 'nested', 'store');
    const backend = await openBackend(dir, PASSPHRASE);
    await backend.generateKeyPair({ id: 'alpha', algorithm: 'Ed25519' });
    await backend.close();
    const names = await readdir(dir);
    expect(names.sort()).toEqual([keyFileName('alpha'), 'store.json']);
    if (process.platform !== 'win32') {
      expect((await stat(dir)).mode & 0o777).toBe(0o700);
      for (const name of names) expect((await stat(join(dir, name))).mode & 0o777).toBe(0o600);
    }
  });
});

describe('concurrent writers (separate processes, built package)', () => {
  beforeAll(() => requireDist());

  it('every id is created exactly once and every file decrypts', async () => {
    const dir = await newStore('concurrent');
    const processes = 4;
    const shared = Array.from({ length: 12 }, (_, i) => `shared-${i}`);
    const lists = Array.from({ length: processes }, (_, p) => {
      const own = Array.from({ length: 3 }, (_, i) => `own-${p}-${i}`);
      return [...shared, ...own].sort(() => Math.random() - 0.5);
    });
    const children = lists.map((ids) =>
      fork(join(PACKAGE_DIR, 'test', 'fixtures', 'writer.mjs'), [DIST_ENTRY, dir, JSON.stringify(ids), 'ECDSA_P256'], {
        env: { ...process.env, OLOCUS_HSM_PASSPHRASE: PASSPHRASE },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      }),
    );
    type Message = { type: string; code?: string; message?: string; results?: Record<string, { outcome: string; spki?: string }> };
    const messages = children.map((child) => {
      const queue: Message[] = [];
      const waiters: ((m: Message) => void)[] = [];
      child.on('message', (m: Message) => (waiters.length ? waiters.shift()!(m) : queue.push(m)));
      child.on('exit', (code) => {
        if (code !== 0) (waiters.shift() ?? (() => undefined))({ type: 'exit', code: String(code) });
      });
      return () => new Promise<Message>((resolve) => (queue.length ? resolve(queue.shift()!) : waiters.push(resolve)));
    });
    // all children open the fresh store at once (store.json creation races too), then start together
    const ready = await Promise.all(messages.map((next) => next()));
    expect(ready.map((m) => m.type), JSON.stringify(ready)).toEqual(Array(processes).fill('ready'));
    for (const child of children) child.send('go');
    const done = await Promise.all(messages.map((next) => next()));
    expect(done.map((m) => m.type), JSON.stringify(done)).toEqual(Array(processes).fill('done'));

    const winners = new Map<string, string>();
    for (const id of [...shared, ...lists.flat()]) {
      const outcomes = done.map((m) => m.results![id]).filter((r) => r !== undefined);
      const created = outcomes.filter((r) => r.outcome === 'created');
      expect(created, `id ${id}: ${JSON.stringify(outcomes)}`).toHaveLength(1);
      expect(outcomes.filter((r) => r.outcome !== 'created').every((r) => r.outcome === 'KeyAlreadyExists'), JSON.stringify(outcomes)).toBe(true);
      winners.set(id, created[0]!.spki!);
    }
    expect(done.flatMap((m) => Object.values(m.results!)).filter((r) => r.outcome === 'KeyAlreadyExists')).toHaveLength(shared.length * (processes - 1));

    // exactly one file per id, no temporary files left behind, one store header
    const names = (await readdir(dir)).sort();
    expect(names).toEqual(['store.json', ...[...winners.keys()].map(keyFileName)].sort());

    const backend = await openBackend(dir, PASSPHRASE);
    const listed = (await backend.listKeys({ limit: 1000 })).keys.map((k) => k.id).sort();
    expect(listed).toEqual([...winners.keys()].sort());
    for (const [id, spki] of winners) {
      expect(Buffer.from((await backend.getPublicKey(id)).spki).toString('base64')).toBe(spki);
      await signsAndVerifies(backend, id); // decrypts
    }
    await backend.close();
  });
});

describe('options', () => {
  it('invalid options are InvalidConfiguration naming the field', () => {
    const cases: [unknown, string][] = [
      [{}, 'backend.options.directory'],
      [undefined, 'backend.options'],
      [{ directory: 42 }, 'backend.options.directory'],
      [{ directory: '' }, 'backend.options.directory'],
      [{ directory: '/tmp/x', create: 'yes' }, 'backend.options.create'],
      [{ directory: '/tmp/x', scrypt: { N: 1000 } }, 'backend.options.scrypt.N'],
      [{ directory: '/tmp/x', scrypt: { N: 16 } }, 'backend.options.scrypt.N'],
      [{ directory: '/tmp/x', scrypt: { N: 2 ** 14 } }, 'backend.options.scrypt.N'],
      [{ directory: '/tmp/x', scrypt: { r: 'eight' } }, 'backend.options.scrypt.r'],
      [{ directory: '/tmp/x', passphrase: { env: '' } }, 'backend.options.passphrase.env'],
      [{ directory: '/tmp/x', passphrase: 'literal' }, 'backend.options.passphrase'],
      [{ directory: '/tmp/x', cacheRevalidateMs: -1 }, 'backend.options.cacheRevalidateMs'],
    ];
    for (const [raw, field] of cases) {
      const error = expectCodeSync(() => softwareBackendFactory.parseOptions(raw), 'InvalidConfiguration');
      expect(error.message, JSON.stringify(raw)).toContain(field);
      expect(error.details.field).toBe(field);
    }
    const unknown = expectCodeSync(() => softwareBackendFactory.parseOptions({ directory: '/tmp/x', passwd: 'x' }), 'InvalidConfiguration');
    expect(unknown.message).toContain('passwd');
  });

  it('a passphrase written into the config is refused without echoing it', () => {
    const error = expectCodeSync(() => softwareBackendFactory.parseOptions({ directory: '/tmp/x', passphrase: PASSPHRASE }), 'InvalidConfiguration');
    expect(error.message).toContain('backend.options.passphrase');
    expect(error.message).not.toContain(PASSPHRASE);
    expectCodeSync(() => new SoftwareBackend({ directory: '/tmp/x' }, { passphrase: '' }), 'InvalidConfiguration');
  });

  it('defaults: passphrase from OLOCUS_HSM_PASSPHRASE, create true, scrypt N=2^17 r=8 p=1', () => {
    expect(softwareBackendFactory.parseOptions({ directory: '/tmp/x' })).toEqual({
      directory: '/tmp/x',
      passphrase: { env: 'OLOCUS_HSM_PASSPHRASE' },
      create: true,
      scrypt: { N: 131072, r: 8, p: 1 },
      cacheRevalidateMs: 1000,
    });
  });

  it('a missing passphrase variable is InvalidConfiguration naming the variable', async () => {
    const dir = await newStore('no-env');
    for (const [options, variable] of [
      [{ directory: dir }, 'OLOCUS_HSM_PASSPHRASE'],
      [{ directory: dir, passphrase: { env: 'MY_STORE_PASSPHRASE' } }, 'MY_STORE_PASSPHRASE'],
    ] as const) {
      const backend = await new BackendRegistry({ env: {} }).register(softwareBackendFactory).create({ type: 'software', options });
      const error = await expectCode(backend.initialize(), 'InvalidConfiguration');
      expect(error.message).toContain(variable);
      expect(error.message).toContain('passphrase');
    }
    expect(await readdir(dir)).toEqual([]);
  });

  it('reads the passphrase from a file source, and a missing file names the path', async () => {
    const dir = await newStore('file-secret');
    const secretDir = await tempStore('secret-file'); // not in `dirs`: it holds the passphrase on purpose
    const secretFile = join(secretDir, 'store.pass');
    await writeFile(secretFile, `${PASSPHRASE}\n`, { mode: 0o600 });
    const registry = new BackendRegistry({ env: {} }).register(softwareBackendFactory);
    const backend = await registry.create({ type: 'software', options: { directory: join(dir, 'store'), passphrase: { file: secretFile }, scrypt: FAST_SCRYPT } });
    await backend.initialize();
    await backend.generateKeyPair({ id: 'alpha', algorithm: 'Ed25519' });
    await backend.close();
    // the same store opens with the same passphrase given directly
    const direct = await openBackend(join(dir, 'store'), PASSPHRASE);
    await signsAndVerifies(direct, 'alpha');
    await direct.close();

    const missing = join(dir, 'nope.pass');
    const broken = await registry.create({ type: 'software', options: { directory: join(dir, 'store'), passphrase: { file: missing } } });
    const error = await expectCode(broken.initialize(), 'InvalidConfiguration');
    expect(error.message).toContain(missing);
    await removeStore(secretDir);
  });

  it("core's registry loads this package by name and reads backendFactories", async () => {
    requireDist();
    expect(backendFactories.map((f) => f.type)).toEqual(['software']);
    const dir = await newStore('registry');
    const registry = new BackendRegistry({ env: { OLOCUS_HSM_PASSPHRASE: PASSPHRASE }, searchPaths: [PACKAGE_DIR] });
    const backend = await registry.create({ type: 'software', options: { directory: dir, scrypt: FAST_SCRYPT } });
    expect(backend.type).toBe('software');
    await backend.initialize();
    const key = await backend.generateKeyPair({ id: 'via-registry', algorithm: 'ECDSA_P256' });
    expect(key.ref).toBe('software:via-registry');
    await backend.close();
  });
});

describe('key policy', () => {
  let dir: string;
  let backend: SoftwareBackend;
  beforeAll(async () => {
    dir = await newStore('policy');
    backend = await openBackend(dir, PASSPHRASE);
  });
  afterAll(async () => {
    await backend.close();
  });

  it('a key whose expiresAt has passed refuses to sign with KeyExpired but still verifies', async () => {
    // an expiry already in the past is refused at creation (core's normalizeKeySpec)
    await expectCode(backend.generateKeyPair({ id: 'expired-already', algorithm: 'Ed25519', expiresAt: new Date(Date.now() - 1000) }), 'InvalidArgument');
    const expired = await backend.generateKeyPair({ id: 'expired', algorithm: 'Ed25519', expiresAt: new Date(Date.now() + 800) });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const error = await expectCode(backend.sign(expired, randomBytes(8)), 'KeyExpired');
    expect(error.message).toContain('expired');
    expect(await backend.verify(expired, randomBytes(8), randomBytes(64))).toBe(false);

    const later = new Date(Date.now() + 3_600_000);
    const valid = await backend.generateKeyPair({ id: 'expires-later', algorithm: 'Ed25519', expiresAt: later });
    await signsAndVerifies(backend, valid.id);
    const reopened = await openBackend(dir, PASSPHRASE);
    expect((await reopened.getKey('expires-later')).expiresAt?.getTime()).toBe(later.getTime());
    await expectCode(reopened.sign('expired', randomBytes(8)), 'KeyExpired');
    await reopened.close();
  });

  it('usages without sign refuse to sign; without verify refuse to verify', async () => {
    const verifyOnly = await backend.generateKeyPair({ id: 'verify-only', algorithm: 'ECDSA_P256', usages: ['verify'] });
    expect(verifyOnly.usages).toEqual(['verify']);
    await expectCode(backend.sign(verifyOnly, randomBytes(8)), 'KeyUsageNotAllowed');
    expect(await backend.verify(verifyOnly, randomBytes(8), randomBytes(64))).toBe(false);

    const signOnly = await backend.generateKeyPair({ id: 'sign-only', algorithm: 'ECDSA_P256', usages: ['sign'] });
    const data = randomBytes(8);
    const signature = await backend.sign(signOnly, data);
    await expectCode(backend.verify(signOnly, data, signature), 'KeyUsageNotAllowed');
    expect(verifyLocally('ECDSA_P256', (await backend.getPublicKey(signOnly)).spki, data, signature)).toBe(true);

    await expectCode(backend.generateKeyPair({ id: 'no-usage', algorithm: 'Ed25519', usages: [] }), 'InvalidArgument');
    await expectCode(backend.generateKeyPair({ id: 'bad-usage', algorithm: 'Ed25519', usages: ['encrypt' as 'sign'] }), 'InvalidArgument');
    await expectCode(backend.generateKeyPair({ id: 'bad-expiry', algorithm: 'Ed25519', expiresAt: new Date('nope') }), 'InvalidArgument');
  });

  it('labels are stored, authenticated and returned in handle metadata', async () => {
    const key = await backend.generateKeyPair({ id: 'labelled', algorithm: 'Ed25519', labels: { owner: 'payments', env: 'test' } });
    expect(key.metadata).toMatchObject({ 'label.owner': 'payments', 'label.env': 'test', file: keyFileName('labelled') });
    const reopened = await openBackend(dir, PASSPHRASE);
    expect((await reopened.getKey('labelled')).metadata['label.owner']).toBe('payments');
    await reopened.close();
  });
});

describe('references, lifecycle and caching', () => {
  it('accepts the id, the software: reference and the handle; ids with ":" round-trip through file names', async () => {
    const dir = await newStore('refs');
    const backend = await openBackend(dir, PASSPHRASE);
    const key = await backend.generateKeyPair({ id: 'team:payments:2025', algorithm: 'ECDSA_P256' });
    expect(key.ref).toBe('software:team:payments:2025');
    expect(await readdir(dir)).toContain('team+payments+2025.key.json');
    for (const ref of [key, key.id, key.ref]) expect((await backend.getKey(ref)).id).toBe(key.id);
    expect((await backend.listKeys({ prefix: 'team:' })).keys.map((k) => k.id)).toEqual([key.id]);

    // ids may not look like references, so a reference is never ambiguous
    const error = await expectCode(backend.generateKeyPair({ id: 'software:x', algorithm: 'Ed25519' }), 'InvalidArgument');
    expect(error.message).toContain('software:');
    const plain = await backend.generateKeyPair({ id: 'x', algorithm: 'Ed25519' });
    expect((await backend.getKey('software:x')).id).toBe(plain.id);
    await expectCode(backend.getKey('software:missing'), 'KeyNotFound');
    await expectCode(backend.getKey('software:../x'), 'InvalidArgument');

    await expectCode(backend.getKey('../escape'), 'InvalidArgument');
    // a handle is resolved by ref and instance alone: other fields lend nothing, another instance is refused
    expect((await backend.getKey({ ...key, id: 'x', backend: 'pkcs11', algorithm: 'Ed25519' })).id).toBe(key.id);
    await expectCode(backend.getKey({ ...key, instance: 'pkcs11:SoftHSM:1234' }), 'InvalidArgument');
    await expectCode(backend.getKey({ ...key, ref: 'pkcs11:id=%01' }), 'InvalidArgument');
    await expectCode(backend.listKeys({ limit: 0 }), 'InvalidArgument');
    await expectCode(backend.sign(key, 'text' as unknown as Uint8Array), 'InvalidArgument');
    const aborted = new AbortController();
    aborted.abort();
    await expectCode(backend.sign(key, randomBytes(8), { signal: aborted.signal }), 'Timeout');
    await backend.close();
  });

  it('every method fails with NotInitialized before initialize and Closed after close', async () => {
    const dir = await newStore('lifecycle');
    const backend = backendFor(dir, PASSPHRASE);
    const calls = (b: SoftwareBackend) => [
      b.info(),
      b.capabilities(),
      b.fipsStatus(),
      b.healthCheck(),
      b.generateKeyPair({ id: 'k', algorithm: 'Ed25519' }),
      b.getKey('k'),
      b.getPublicKey('k'),
      b.sign('k', randomBytes(8)),
      b.verify('k', randomBytes(8), randomBytes(64)),
      b.listKeys(),
      b.destroyKey('k'),
    ];
    for (const call of calls(backend)) await expectCode(call, 'NotInitialized');
    await backend.initialize();
    await backend.initialize();
    await backend.generateKeyPair({ id: 'k', algorithm: 'Ed25519' });
    await backend.close();
    await backend.close();
    for (const call of calls(backend)) await expectCode(call, 'Closed');
    await expectCode(backend.initialize(), 'Closed');
  });

  it('reports info, capabilities and an honest FIPS status', async () => {
    const dir = await newStore('info');
    const backend = await openBackend(dir, PASSPHRASE);
    const info = await backend.info();
    expect(info.backend).toBe('software');
    expect(info.description).toContain(dir);
    expect(await backend.capabilities()).toMatchObject({ persistentKeys: true, hardwareBacked: false, remoteVerify: false });
    const fips = await backend.fipsStatus();
    expect(fips).toMatchObject({ standard: 'none', level: 0, approvedMode: false });
    expect(fips.notes).toMatch(/not a FIPS 140 validated/);
    expect(fips.notes).toMatch(/process memory/);
    const health = await backend.healthCheck();
    expect(health).toMatchObject({ healthy: true });
    expect(health.details?.directory).toBe(dir);
    await backend.close();
  });

  it('a key destroyed or replaced by another instance is noticed by a running one', async () => {
    const dir = await newStore('cross-instance');
    const a = await openBackend(dir, PASSPHRASE);
    const b = await openBackend(dir, PASSPHRASE);
    const first = await a.generateKeyPair({ id: 'shared', algorithm: 'ECDSA_P256' });
    await signsAndVerifies(a, 'shared');
    await b.destroyKey('shared');
    await expectCode(a.sign(first, randomBytes(8)), 'KeyNotFound');
    const again = await b.generateKeyPair({ id: 'shared', algorithm: 'ECDSA_P256' });
    const spki = Buffer.from((await b.getPublicKey(again)).spki);
    expect(Buffer.from((await a.getPublicKey('shared')).spki).equals(spki)).toBe(true);
    await signsAndVerifies(a, 'shared');
    await a.close();
    await b.close();
  });

  it('concurrent creation of one id in one process: one wins, the others get KeyAlreadyExists', async () => {
    const dir = await newStore('same-process');
    const backend = await openBackend(dir, PASSPHRASE);
    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, () => backend.generateKeyPair({ id: 'race', algorithm: 'Ed25519' })));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    for (const o of outcomes) if (o.status === 'rejected') expect((o.reason as HsmError).code).toBe('KeyAlreadyExists');
    expect((await readdir(dir)).sort()).toEqual([keyFileName('race'), 'store.json']);
    await signsAndVerifies(backend, 'race');
    await backend.close();
  });
});

describe('secrets stay secret', () => {
  it('the passphrase appears in no store file, no error and no inspected object', async () => {
    const dir = await storeWithKeys('secret-scan', ['alpha', 'bravo']);
    const backend = backendFor(dir, PASSPHRASE);
    const wrong = backendFor(dir, PASSPHRASE.toUpperCase());
    for (const text of [inspect(backend, { depth: 10, showHidden: true }), JSON.stringify(backend)]) expect(text).not.toContain(PASSPHRASE);
    errors.push(await wrong.initialize().catch((e: unknown) => e));
    await backend.initialize();
    await signsAndVerifies(backend, 'alpha');
    expect(inspect(backend, { depth: 10, showHidden: true })).not.toContain(PASSPHRASE);
    await backend.close();

    const needles = [PASSPHRASE, PASSPHRASE.toUpperCase(), WRONG].map((s) => Buffer.from(s, 'utf8'));
    let scanned = 0;
    const scan = async (root: string): Promise<void> => {
      for (const entry of await readdir(root, { withFileTypes: true })) {
        const path = join(root, entry.name);
        if (entry.isDirectory()) {
          await scan(path);
          continue;
        }
        const bytes = await readFile(path);
        scanned++;
        for (const needle of needles) expect(bytes.includes(needle), `${path} contains a passphrase`).toBe(false);
      }
    };
    for (const d of dirs) await scan(d);
    expect(scanned).toBeGreaterThan(50);

    expect(errors.length).toBeGreaterThan(30);
    for (const error of errors) {
      expect(error).toBeInstanceOf(HsmError);
      const rendered = [
        (error as HsmError).message,
        JSON.stringify((error as HsmError).toJSON()),
        inspect(error, { depth: 10 }),
        String((error as HsmError).cause),
      ].join('\n');
      for (const secret of [PASSPHRASE, PASSPHRASE.toUpperCase(), WRONG]) expect(rendered).not.toContain(secret);
    }
  });
});

describe('programmatic use', () => {
  it('works with the passphrase given to the constructor and mkdir of a nested directory', async () => {
    const parent = await newStore('programmatic');
    const dir = join(parent, 'a', 'b');
    await mkdir(join(parent, 'a'));
    const backend = new SoftwareBackend({ directory: dir, scrypt: FAST_SCRYPT }, { passphrase: PASSPHRASE });
    await backend.initialize();
    const key = await backend.generateKeyPair({ id: 'p256', algorithm: 'ECDSA_P256' });
    const data = randomBytes(100);
    const signature = await backend.sign(key, data);
    expect(signature).toHaveLength(64);
    expect(await backend.verify(key.ref, data, signature)).toBe(true);
    await backend.close();
  });
});
