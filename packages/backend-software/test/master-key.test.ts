/**
 * A store protected by a master key (`masterKey`): 32 random bytes from a secret source, extracted
 * and expanded with HKDF-SHA256 instead of stretched with scrypt (there is nothing to guess). The
 * store header says which kind of secret opens it; the other kind, a wrong key or a key of the
 * wrong shape are refused without writing anything and without the value in any message.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KEY_ALGORITHMS, verifyLocally, type ExportedKey } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { SoftwareBackend, parseSoftwareOptions } from '../src/index.js';
import { FAST_SCRYPT, openBackend, snapshot, storesRemovedAfterAll } from './helpers.js';

const KEY_VAR = 'OLOCUS_TEST_MASTER_KEY';
const OTHER_VAR = 'OLOCUS_TEST_MASTER_KEY_OTHER';
const PASS_VAR = 'OLOCUS_TEST_MASTER_KEY_PASSPHRASE';
const masterKey = randomBytes(32).toString('base64');
process.env[KEY_VAR] = masterKey;
process.env[PASS_VAR] = randomBytes(18).toString('base64url');

const store = storesRemovedAfterAll();

function keyed(directory: string, source: { env: string } | { file: string } = { env: KEY_VAR }): SoftwareBackend {
  return new SoftwareBackend({ directory, cacheRevalidateMs: 0, masterKey: source });
}

async function openKeyed(directory: string, source?: { env: string } | { file: string }): Promise<SoftwareBackend> {
  const backend = keyed(directory, source);
  await backend.initialize();
  return backend;
}

async function signsAndVerifies(backend: SoftwareBackend, id: string): Promise<void> {
  const message = randomBytes(32);
  const signature = await backend.sign(id, message);
  expect(await backend.verify(id, message, signature)).toBe(true);
}

describe('software store protected by a master key', () => {
  it('creates a version 2 store with HKDF-SHA256 (no scrypt parameters), signs every algorithm, and reopens', async () => {
    const dir = await store('mk-create');
    const backend = await openKeyed(dir);
    try {
      for (const algorithm of KEY_ALGORITHMS) {
        const handle = await backend.generateKeyPair({ id: `k-${algorithm}`, algorithm });
        const message = randomBytes(48);
        const signature = await backend.sign(handle, message);
        expect(verifyLocally(algorithm, (await backend.getPublicKey(handle)).spki, message, signature), algorithm).toBe(true);
      }
      expect((await backend.info()).details).toMatchObject({ kdf: 'HKDF-SHA256 (master key)' });
    } finally {
      await backend.close();
    }
    const header = JSON.parse(await readFile(join(dir, 'store.json'), 'utf8'));
    expect(header.version).toBe(2);
    expect(Object.keys(header.kdf).sort()).toEqual(['keyLength', 'name', 'salt']);
    expect(header.kdf).toMatchObject({ name: 'hkdf-sha256', keyLength: 32 });
    expect(Buffer.from(header.kdf.salt, 'base64')).toHaveLength(32);
    // key files stay version 1: only the header changed
    const keyFile = JSON.parse(await readFile(join(dir, 'k-ECDSA_P256.key.json'), 'utf8'));
    expect(keyFile.version).toBe(1);
    // nothing on disk holds the master key, in base64 or raw
    for (const name of Object.keys(await snapshot(dir))) {
      const bytes = await readFile(join(dir, name));
      expect(bytes.toString('utf8'), name).not.toContain(masterKey);
      expect(bytes.includes(Buffer.from(masterKey, 'base64')), name).toBe(false);
    }
    const reopened = await openKeyed(dir);
    await signsAndVerifies(reopened, 'k-Ed25519');
    await reopened.close();
  });

  it('reads the key from a file (trailing newline as `openssl rand -base64 32` writes it)', async () => {
    const dir = await store('mk-file');
    const file = join(await store('mk-file-secret'), 'master.key');
    await writeFile(file, `${masterKey}\n`, { mode: 0o600 });
    const fromFile = await openKeyed(dir, { file });
    await fromFile.generateKeyPair({ id: 'a', algorithm: 'ECDSA_P256' });
    await fromFile.close();
    // the same bytes from the environment open the same store
    const fromEnv = await openKeyed(dir);
    await signsAndVerifies(fromEnv, 'a');
    await fromEnv.close();
  });

  it('another master key is WrongPassphrase, names no value, and changes nothing on disk', async () => {
    const dir = await store('mk-wrong');
    const first = await openKeyed(dir);
    await first.generateKeyPair({ id: 'a', algorithm: 'Ed25519' });
    await first.close();
    const before = await snapshot(dir);
    const other = randomBytes(32).toString('base64');
    process.env[OTHER_VAR] = other;
    const error = await expectHsmError(keyed(dir, { env: OTHER_VAR }).initialize(), 'WrongPassphrase');
    expect(error.message).toContain('master key does not open');
    expect(error.message).toContain(dir);
    expect(JSON.stringify({ m: error.message, d: error.details })).not.toContain(other);
    expect(await snapshot(dir)).toEqual(before);
  });

  it('a value that is not 32 bytes of canonical base64, or not random, is InvalidConfiguration naming the source, never the value', async () => {
    const dir = await store('mk-shape');
    const bad: Array<[string, string]> = [
      [randomBytes(31).toString('base64'), 'it decodes to 31 bytes'],
      [randomBytes(33).toString('base64'), 'it decodes to 33 bytes'],
      [randomBytes(32).toString('hex'), 'it decodes to 48 bytes'],
      [`_${randomBytes(32).toString('base64url').slice(1)}`, 'it is not base64'], // base64url alphabet
      [`${randomBytes(32).toString('base64').slice(0, -2)}B=`, 'not canonical base64'], // stray bits in the last character
      [Buffer.alloc(32).toString('base64'), 'does not look random'],
      [Buffer.from('0123456789abcdef0123456789abcdef').toString('base64'), 'does not look random'], // 16 distinct bytes
      ['correct horse battery staple, a passphrase', 'it is not base64'],
    ];
    for (const [value, reason] of bad) {
      process.env[OTHER_VAR] = value;
      const error = await expectHsmError(keyed(dir, { env: OTHER_VAR }).initialize(), 'InvalidConfiguration');
      expect(error.details['field']).toBe('backend.options.masterKey');
      expect(error.message).toContain(`environment variable ${OTHER_VAR}`);
      expect(error.message).toContain('openssl rand -base64 32');
      expect(error.message).toContain(reason);
      expect(error.message).not.toContain(value);
    }
    // nothing was created for a refused key
    expect(Object.keys(await snapshot(dir))).toEqual([]);
  });

  it('a store of the other kind says which secret opens it, and nothing is written', async () => {
    const keyedDir = await store('mk-kind-a');
    const a = await openKeyed(keyedDir);
    await a.close();
    const before = await snapshot(keyedDir);
    const withPassphrase = new SoftwareBackend({ directory: keyedDir, scrypt: FAST_SCRYPT, passphrase: { env: PASS_VAR } });
    const e1 = await expectHsmError(withPassphrase.initialize(), 'InvalidConfiguration');
    expect(e1.message).toContain('protected by a master key');
    expect(e1.message).toContain('set backend.options.masterKey instead of backend.options.passphrase (or store.json was altered)');
    expect(await snapshot(keyedDir)).toEqual(before);

    const passDir = await store('mk-kind-b');
    const b = new SoftwareBackend({ directory: passDir, scrypt: FAST_SCRYPT, passphrase: { env: PASS_VAR } });
    await b.initialize();
    await b.close();
    const e2 = await expectHsmError(keyed(passDir).initialize(), 'InvalidConfiguration');
    expect(e2.message).toContain('protected by a passphrase (scrypt)');
    expect(e2.message).toContain('set backend.options.passphrase instead of backend.options.masterKey');
  });

  it('options: passphrase and masterKey together are refused; masterKey alone drops the passphrase default', () => {
    expect(() => parseSoftwareOptions({ directory: '/x', passphrase: { env: 'A' }, masterKey: { env: 'B' } })).toThrow(/backend\.options\.masterKey.*not both/);
    expect(() => parseSoftwareOptions({ directory: '/x', masterKey: masterKey })).toThrow(/backend\.options\.masterKey/);
    const parsed = parseSoftwareOptions({ directory: '/x', masterKey: { file: '/k' } });
    expect(parsed.masterKey).toEqual({ file: '/k' });
    expect(parsed.passphrase).toBeUndefined();
    expect(parseSoftwareOptions({ directory: '/x' }).passphrase).toEqual({ env: 'OLOCUS_HSM_PASSPHRASE' });
    expect(() => new SoftwareBackend({ directory: '/x', masterKey: { env: KEY_VAR } }, { passphrase: 'a passphrase given in code' })).toThrow(/masterKey is set/);
  });

  it('backup: restores into another master-key store (its own salt), and is refused by a passphrase store', async () => {
    const first = await openKeyed(await store('mk-bk-a'));
    const second = await openKeyed(await store('mk-bk-b'));
    const passStore = new SoftwareBackend({ directory: await store('mk-bk-p'), scrypt: FAST_SCRYPT, cacheRevalidateMs: 0, passphrase: { env: PASS_VAR } });
    await passStore.initialize();
    try {
      await first.generateKeyPair({ id: 'k', algorithm: 'ECDSA_P384', backup: true });
      const out: ExportedKey = await first.backup.exportKey('k');
      expect(out.parameters).toMatchObject({ kdf: 'hkdf-sha256', kdfKeyLength: '32' });
      expect(out.parameters).not.toHaveProperty('kdfN');
      expect(JSON.stringify(out.parameters) + Buffer.from(out.blob!).toString('utf8')).not.toContain(masterKey);
      await second.backup.importKey(out);
      await signsAndVerifies(second, 'k');
      // the same store takes its own export back under another id
      await first.backup.importKey(out, { id: 'k2' });
      await signsAndVerifies(first, 'k2');
      const refused = await expectHsmError(passStore.backup.importKey(out), 'WrongPassphrase');
      expect(refused.message).toContain('protected by a master key');
      expect((await passStore.listKeys({ limit: 10 })).keys).toEqual([]);
      // and the other way round
      await passStore.generateKeyPair({ id: 'p', algorithm: 'Ed25519', backup: true });
      await expectHsmError(second.backup.importKey(await passStore.backup.exportKey('p')), 'WrongPassphrase');
    } finally {
      await first.close();
      await second.close();
      await passStore.close();
    }
  });

  it('a master key from another store cannot restore its files (the verifier does not open)', async () => {
    const first = await openKeyed(await store('mk-bk-c'));
    process.env[OTHER_VAR] = randomBytes(32).toString('base64');
    const foreign = await openKeyed(await store('mk-bk-d'), { env: OTHER_VAR });
    try {
      await first.generateKeyPair({ id: 'k', algorithm: 'Ed25519', backup: true });
      const error = await expectHsmError(foreign.backup.importKey(await first.backup.exportKey('k')), 'WrongPassphrase');
      expect(error.message).toContain('another master key');
      expect((await foreign.listKeys({ limit: 10 })).keys).toEqual([]);
    } finally {
      await first.close();
      await foreign.close();
    }
  });

  it('a passphrase store still opens and still uses scrypt (the default path is unchanged)', async () => {
    const dir = await store('mk-pass');
    const backend = await openBackend(dir, 'a passphrase for this test only');
    await backend.close();
    const header = JSON.parse(await readFile(join(dir, 'store.json'), 'utf8'));
    expect(header).toMatchObject({ version: 1, kdf: { name: 'scrypt', N: FAST_SCRYPT.N } });
  });
});
