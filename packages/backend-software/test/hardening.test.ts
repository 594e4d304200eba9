import { constants, createVerify, randomBytes } from 'node:crypto';
import { chmod, cp, mkdir, readFile, readdir, realpath, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { exportPublicKey, verifyLocally } from '@olocus/hsm-core';
import { expectHsmError, independentVerify } from '@olocus/hsm-core/testing';
import { SoftwareBackend, softwareBackendFactory } from '../src/index.js';
import { PACKAGE_DIR, backendFor, openBackend, removeStore, snapshot, tempStore } from './helpers.js';

const PASSPHRASE = `pp-${randomBytes(12).toString('hex')}`;
const dirs: string[] = [];
async function newStore(label: string): Promise<string> {
  const dir = await tempStore(label);
  dirs.push(dir);
  return dir;
}
afterAll(async () => {
  for (const dir of dirs) await removeStore(dir);
});

/**
 * Written by the previous release (default scrypt N=2^15) and checked in unchanged: store.json,
 * an ECDSA P-256 key `legacy-p256` and an Ed25519 key `legacy-ed`.
 */
const LEGACY_STORE = join(PACKAGE_DIR, 'test', 'fixtures', 'store-n15');
const LEGACY_PASSPHRASE = 'fixture passphrase (not secret)';
const LEGACY_MESSAGE = Buffer.from('olocus legacy fixture');
const LEGACY_SIGNATURE = Buffer.from('qOOqPUqvoXjjasId0KJLbOxRNSw6lCKe27EAnjzAdVAFhx5MZYHDoF7qgOfVM5kOf326pliCIMyvQiDoez9XYA==', 'base64');

describe('scrypt cost (issue 10 item 8)', () => {
  it('a new store with default options is written with N=2^17, r=8, p=1', async () => {
    const dir = await newStore('kdf-default');
    const backend = new SoftwareBackend({ directory: dir, cacheRevalidateMs: 0 }, { passphrase: PASSPHRASE });
    const started = performance.now();
    await backend.initialize();
    const elapsed = performance.now() - started;
    const header = JSON.parse(await readFile(join(dir, 'store.json'), 'utf8'));
    expect(header.kdf).toMatchObject({ name: 'scrypt', N: 2 ** 17, r: 8, p: 1, keyLength: 32 });
    expect((await backend.info()).details).toMatchObject({ kdf: 'scrypt N=131072 r=8 p=1' });
    expect((await backend.info()).details).not.toHaveProperty('kdfWarning');
    // A guess must cost real work: far more than the ~1 ms of the old test setting.
    expect(elapsed).toBeGreaterThan(50);
    await backend.generateKeyPair({ id: 'k', algorithm: 'Ed25519' });
    await backend.close();
    // and it opens again (the stored N needs more than node's default 32 MiB maxmem)
    const again = await openBackend(dir, PASSPHRASE);
    expect(verifyLocally('Ed25519', (await again.getPublicKey('k')).spki, Buffer.from('x'), await again.sign('k', Buffer.from('x')))).toBe(true);
    await again.close();
  });

  it('configs below N=2^15 are refused as InvalidConfiguration naming backend.options.scrypt.N', () => {
    for (const N of [2 ** 10, 2 ** 12, 2 ** 14]) {
      let caught: unknown;
      try {
        softwareBackendFactory.parseOptions({ directory: '/tmp/x', scrypt: { N } });
      } catch (error) {
        caught = error;
      }
      expect(caught).toMatchObject({ name: 'HsmError', code: 'InvalidConfiguration', details: { field: 'backend.options.scrypt.N' } });
      expect((caught as Error).message).toContain('backend.options.scrypt.N');
      expect((caught as Error).message).toContain('32768');
    }
    expect(softwareBackendFactory.parseOptions({ directory: '/tmp/x', scrypt: { N: 2 ** 15 } }).scrypt.N).toBe(2 ** 15);
  });

  it('a store written by the previous release (N=2^15) opens with the new defaults, signs and is not rewritten', async () => {
    const dir = await newStore('legacy');
    await cp(LEGACY_STORE, dir, { recursive: true });
    const before = await snapshot(dir);
    const backend = new SoftwareBackend({ directory: dir, cacheRevalidateMs: 0 }, { passphrase: LEGACY_PASSPHRASE });
    await backend.initialize();
    expect((await backend.info()).details).toMatchObject({ kdf: 'scrypt N=32768 r=8 p=1' });
    const p256 = await backend.getPublicKey('legacy-p256');
    expect(await backend.verify('legacy-p256', LEGACY_MESSAGE, LEGACY_SIGNATURE)).toBe(true);
    const data = randomBytes(32);
    for (const id of ['legacy-p256', 'legacy-ed']) {
      const pub = await backend.getPublicKey(id);
      expect(independentVerify(pub.algorithm, exportPublicKey(pub, 'pem'), data, await backend.sign(id, data))).toBe(true);
    }
    expect((await backend.getKey('legacy-p256')).metadata?.['label.made']).toBe('before-n17');
    expect(p256.algorithm).toBe('ECDSA_P256');
    await backend.close();
    expect(await snapshot(dir)).toEqual(before);
  });

  it('a store written with N=2^10 (allowed before) still opens, and info() says it is weak', async () => {
    const dir = await newStore('weak');
    await cp(join(PACKAGE_DIR, 'test', 'fixtures', 'store-n10'), dir, { recursive: true });
    const backend = await openBackend(dir, LEGACY_PASSPHRASE);
    const details = (await backend.info()).details;
    expect(details).toMatchObject({ kdf: 'scrypt N=1024 r=8 p=1' });
    expect(String(details?.kdfWarning)).toContain('N=1024');
    await backend.sign('weak-ed', randomBytes(8));
    await backend.close();
  });
});

describe('file modes (issue 10 item 7, store side)', () => {
  it.runIf(process.platform !== 'win32')('store.json and key files are 0600 and a pre-existing 0755 directory becomes 0700', async () => {
    const parent = await newStore('modes');
    const dir = join(parent, 'store');
    await mkdir(dir, { mode: 0o755 });
    await chmod(dir, 0o755); // whatever the umask
    expect((await stat(dir)).mode & 0o777).toBe(0o755);
    const backend = await openBackend(dir, PASSPHRASE);
    await backend.generateKeyPair({ id: 'alpha', algorithm: 'Ed25519' });
    await backend.generateKeyPair({ id: 'ns:beta', algorithm: 'ECDSA_P256' });
    expect((await backend.healthCheck()).details).not.toHaveProperty('directoryWarning');
    await backend.close();
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const names = await readdir(dir);
    expect(names.sort()).toEqual(['alpha.key.json', 'ns+beta.key.json', 'store.json']);
    for (const name of names) expect({ name, mode: (await stat(join(dir, name))).mode & 0o777 }).toEqual({ name, mode: 0o600 });
  });

  it.runIf(process.platform !== 'win32')('created directories (parents too) are 0700', async () => {
    const parent = await newStore('modes-nested');
    const dir = join(parent, 'a', 'b');
    const backend = await openBackend(dir, PASSPHRASE);
    await backend.close();
    for (const path of [join(parent, 'a'), dir]) expect((await stat(path)).mode & 0o777).toBe(0o700);
  });
});

describe('close() racing signs (issue 10 item 10)', () => {
  it('every sign that loses the race to close() is Closed, never StorageCorrupted', async () => {
    const dir = await newStore('close-race');
    const setup = await openBackend(dir, PASSPHRASE);
    const ids = ['p256', 'ed', 'rsa'];
    await setup.generateKeyPair({ id: 'p256', algorithm: 'ECDSA_P256' });
    await setup.generateKeyPair({ id: 'ed', algorithm: 'Ed25519' });
    await setup.generateKeyPair({ id: 'rsa', algorithm: 'RSA_2048' });
    await setup.close();
    const codes = new Map<string, number>();
    let succeeded = 0;
    // Close at different points: before any file is read, while key files are being read and
    // authenticated, and while private keys are being unsealed.
    for (let round = 0; round < 24; round++) {
      const backend = backendFor(dir, PASSPHRASE);
      await backend.initialize();
      if (round % 3 === 2) await backend.getKey('p256'); // cached record, signer not made yet
      const signs = Array.from({ length: 60 }, (_, i) => backend.sign(ids[i % ids.length]!, randomBytes(32)));
      for (let tick = 0; tick < round % 8; tick++) await new Promise((resolve) => setImmediate(resolve));
      await backend.close();
      for (const outcome of await Promise.allSettled(signs)) {
        if (outcome.status === 'fulfilled') {
          succeeded++;
          continue;
        }
        const code = (outcome.reason as { code?: string }).code ?? String(outcome.reason);
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
    }
    expect(Object.fromEntries(codes)).not.toHaveProperty('StorageCorrupted');
    expect([...codes.keys()]).toEqual(['Closed']);
    expect(codes.get('Closed')).toBeGreaterThan(0);
    expect(succeeded + (codes.get('Closed') ?? 0)).toBe(24 * 60);
    // nothing was marked corrupted on disk either: a new instance signs with every key
    const after = await openBackend(dir, PASSPHRASE);
    expect((await after.healthCheck()).healthy).toBe(true);
    for (const id of ids) await after.sign(id, randomBytes(8));
    await after.close();
  });

  it('a close() during initialize() leaves the instance Closed', async () => {
    const dir = await newStore('close-init');
    const backend = backendFor(dir, PASSPHRASE);
    const opening = backend.initialize();
    await backend.close();
    await expectHsmError(opening, 'Closed');
    await expectHsmError(backend.sign('k', randomBytes(8)), 'Closed');
    await expectHsmError(backend.initialize(), 'Closed');
  });
});

describe('core contract v2', () => {
  it('instanceId is the real path of the store: a symlinked or relative path is the same instance, another store is not', async () => {
    const parent = await newStore('instance');
    const real = join(parent, 'store');
    const link = join(parent, 'link');
    const a = await openBackend(real, PASSPHRASE);
    await symlink(real, link);
    const b = await openBackend(link, PASSPHRASE);
    const other = await openBackend(join(parent, 'other'), PASSPHRASE);
    try {
      expect(a.instanceId).toBe(`software:${await realpath(real)}`);
      expect(b.instanceId).toBe(a.instanceId);
      expect(other.instanceId).not.toBe(a.instanceId);
      const key = await a.generateKeyPair({ id: 'k', algorithm: 'ECDSA_P256', labels: { team: 'payments' } });
      expect(key).toMatchObject({ instance: a.instanceId, state: 'enabled', labels: { team: 'payments' } });
      expect((await b.getKey(key)).ref).toBe(key.ref); // same instance: b accepts a's handle
      await other.generateKeyPair({ id: 'k', algorithm: 'ECDSA_P256' });
      await expectHsmError(other.sign(key, randomBytes(8)), 'InvalidArgument'); // same id, other store: refused
    } finally {
      await Promise.all([a.close(), b.close(), other.close()]);
    }
  });

  it('signStream hashes ECDSA and RSA incrementally: a 64 MiB stream signs without the message ever being held', async () => {
    const dir = await newStore('stream');
    const backend = await openBackend(dir, PASSPHRASE);
    try {
      for (const algorithm of ['ECDSA_P384', 'RSA_PSS_2048', 'RSA_2048'] as const) {
        const key = await backend.generateKeyPair({ id: `s-${algorithm}`, algorithm });
        const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
        const chunk = randomBytes(1024 * 1024);
        let produced = 0;
        const heapBefore = process.memoryUsage().arrayBuffers;
        let heapPeak = heapBefore;
        async function* chunks(): AsyncGenerator<Uint8Array> {
          for (let i = 0; i < 64; i++) {
            produced += chunk.length;
            heapPeak = Math.max(heapPeak, process.memoryUsage().arrayBuffers);
            yield chunk;
          }
        }
        const signature = await backend.signStream(key, chunks());
        expect(produced).toBe(64 * 1024 * 1024);
        // an independent streaming verifier over the same bytes, so the test never holds 64 MiB either
        const verifier = createVerify(algorithm === 'ECDSA_P384' ? 'sha384' : 'sha256');
        for (let i = 0; i < 64; i++) verifier.update(chunk);
        const ok =
          algorithm === 'ECDSA_P384'
            ? verifier.verify({ key: pem, dsaEncoding: 'ieee-p1363' }, signature)
            : verifier.verify(algorithm === 'RSA_PSS_2048' ? { key: pem, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } : { key: pem }, signature);
        expect(ok, algorithm).toBe(true);
        // far less than the 64 MiB message was ever held at once (the 1 MiB chunk is reused)
        expect(heapPeak - heapBefore).toBeLessThan(32 * 1024 * 1024);
      }
      const ed = await backend.generateKeyPair({ id: 's-ed', algorithm: 'Ed25519' });
      await expectHsmError(
        backend.signStream(ed, (async function* () {
          yield randomBytes(8);
        })()),
        'InvalidArgument',
      );
      const aborted = new AbortController();
      const rsa = 's-RSA_2048';
      const failing = backend.signStream(rsa, (async function* () {
        yield randomBytes(8);
        aborted.abort();
        yield randomBytes(8);
      })(), { signal: aborted.signal });
      await expectHsmError(failing, 'Timeout');
    } finally {
      await backend.close();
    }
  });
});

describe('through HsmManager (core v2)', () => {
  it('a stream signed through the manager reaches signStream (ECDSA) and verifies; Ed25519 streams are buffered and signed whole', async () => {
    const { BackendRegistry, HsmManager } = await import('@olocus/hsm-core');
    const dir = await newStore('manager');
    const registry = new BackendRegistry({ env: { OLOCUS_HSM_PASSPHRASE: PASSPHRASE } }).register(softwareBackendFactory);
    const manager = new HsmManager({ backend: { type: 'software', options: { directory: dir, scrypt: { N: 2 ** 15 } } } }, { registry });
    await manager.initialize();
    try {
      const parts = [randomBytes(300_000), randomBytes(5), randomBytes(70_000)];
      const whole = Buffer.concat(parts);
      const stream = () =>
        (async function* () {
          yield* parts;
        })();
      const streamed = vi.spyOn(SoftwareBackend.prototype, 'signStream');
      for (const algorithm of ['ECDSA_P256', 'Ed25519'] as const) {
        const key = await manager.generateKey({ id: `m-${algorithm}`, algorithm });
        expect(key.instance).toBe(`software:${await realpath(dir)}`);
        streamed.mockClear();
        const signature = await manager.sign(key, stream());
        expect(streamed).toHaveBeenCalledTimes(algorithm === 'Ed25519' ? 0 : 1);
        expect(await manager.verify(key, whole, signature)).toBe(true);
        expect(await manager.verify(key.id, stream(), signature)).toBe(true);
      }
    } finally {
      await manager.close();
    }
  });
});

describe('message size (issue 11)', () => {
  it('a 2 GiB message is InvalidArgument naming the limit and signStream, not a bare SigningFailed', async () => {
    const dir = await newStore('huge');
    const backend = await openBackend(dir, PASSPHRASE);
    try {
      await backend.generateKeyPair({ id: 'ed', algorithm: 'Ed25519' });
      // never touched: the refusal comes before the bytes are read, so no 2 GiB is resident
      const huge = new Uint8Array(2 ** 31);
      const error = await expectHsmError(backend.sign('ed', huge), 'InvalidArgument');
      expect(error.message).toContain('2147483647');
      expect(error.message).toContain('signStream');
      expect(error.details).toMatchObject({ field: 'data', limit: 2 ** 31 - 1 });
    } finally {
      await backend.close();
    }
  });
});
