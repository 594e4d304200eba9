/**
 * Backup (method `sealed-file`): a key's sealed file leaves the store still sealed, and is restored
 * into a second store directory that has the same passphrase (but its own salt): opened in memory
 * only, checked against the exported public key, re-sealed under the second store's key and written
 * atomically. A flipped byte, another passphrase, or a public key that is not the file's are refused.
 */
import { createPrivateKey, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KEY_ALGORITHMS, verifyLocally, type ExportedKey } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { SoftwareBackend } from '../src/index.js';
import { FAST_SCRYPT, openBackend, storesRemovedAfterAll } from './helpers.js';

const PASS_VAR = 'OLOCUS_TEST_BACKUP_PASSPHRASE';
const store = storesRemovedAfterAll();

/** A backend whose passphrase comes from its configured source (the way an application runs it). */
async function openFromEnv(directory: string, variable = PASS_VAR): Promise<SoftwareBackend> {
  const backend = new SoftwareBackend({ directory, scrypt: FAST_SCRYPT, cacheRevalidateMs: 0, passphrase: { env: variable } });
  await backend.initialize();
  return backend;
}

describe('software backend backup (sealed-file)', () => {
  const passphrase = randomBytes(18).toString('base64url');
  process.env[PASS_VAR] = passphrase;

  it('round trip of every algorithm into a second store with the same passphrase; the blob is the sealed file, never a key', async () => {
    const first = await openFromEnv(await store('bk-a'));
    const secondDir = await store('bk-b');
    const second = await openFromEnv(secondDir);
    try {
      expect(first.backup.method).toBe('sealed-file');
      const exports: ExportedKey[] = [];
      for (const algorithm of KEY_ALGORITHMS) {
        const id = `k-${algorithm}`;
        await first.generateKeyPair({ id, algorithm, backup: true, labels: { team: 'ops' } });
        const out = await first.backup.exportKey(id);
        expect(out).toMatchObject({ method: 'sealed-file', id, algorithm, usages: ['sign', 'verify'] });
        expect(out.parameters).toMatchObject({ format: 'olocus-hsm-software-key', formatVersion: '1', cipher: 'aes-256-gcm', kdf: 'scrypt', kdfN: String(FAST_SCRYPT.N), kdfR: '8', kdfP: '1', kdfKeyLength: '32' });
        expect(Buffer.from(out.parameters.kdfSalt!, 'base64')).toHaveLength(32);
        // the blob is the file as it is on disk, sealed; no private key in it, and no passphrase anywhere
        expect(Buffer.from(out.blob!).equals(await readFile(join(first.directory, out.parameters.fileName!)))).toBe(true);
        expect(() => createPrivateKey({ key: Buffer.from(out.blob!), format: 'der', type: 'pkcs8' })).toThrow();
        expect(() => createPrivateKey(Buffer.from(out.blob!).toString('utf8'))).toThrow();
        expect(JSON.stringify(out.parameters) + Buffer.from(out.blob!).toString('utf8')).not.toContain(passphrase);
        exports.push(out);
      }
      for (const out of exports) {
        const handle = await second.backup.importKey(out);
        expect(handle).toMatchObject({ id: out.id, algorithm: out.algorithm, labels: { team: 'ops' } });
        const message = randomBytes(64);
        const signature = await second.sign(out.id, message);
        expect(verifyLocally(out.algorithm, out.publicKeySpki, message, signature), out.algorithm).toBe(true);
      }
      // written atomically and exclusively: the key files and the header, no temporary file left
      expect((await readdir(secondDir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
      await expectHsmError(second.backup.importKey(exports[0]!), 'KeyAlreadyExists');
      // under another id
      const renamed = await second.backup.importKey(exports[0]!, { id: 'renamed' });
      expect(renamed.id).toBe('renamed');
      expect(await second.verify('renamed', Buffer.from('x'), await second.sign('renamed', Buffer.from('x')))).toBe(true);
      // a reopened store reads the restored files (they are sealed under its own key)
      await second.close();
      const reopened = await openFromEnv(secondDir);
      expect((await reopened.listKeys({ limit: 100 })).keys.map((k) => k.id)).toContain(exports[3]!.id);
      await reopened.close();
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('a flipped byte, another passphrase, or a public key that is not the file is refused, and nothing is written', async () => {
    const source = await openFromEnv(await store('bk-c'));
    const targetDir = await store('bk-d');
    const target = await openFromEnv(targetDir);
    process.env.OLOCUS_TEST_OTHER_PASSPHRASE = `other-${randomBytes(6).toString('hex')}`;
    const other = await openFromEnv(await store('bk-e'), 'OLOCUS_TEST_OTHER_PASSPHRASE');
    // a passphrase given to the constructor is gone after initialize(): a foreign file cannot be opened, and the error says why
    delete process.env.OLOCUS_HSM_PASSPHRASE; // the default source, which this instance was not given
    const programmatic = await openBackend(await store('bk-f'), passphrase, { scrypt: FAST_SCRYPT });
    try {
      await source.generateKeyPair({ id: 'p256', algorithm: 'ECDSA_P256' });
      await source.generateKeyPair({ id: 'p256-b', algorithm: 'ECDSA_P256' });
      const out = await source.backup.exportKey('p256');
      const before = (await readdir(targetDir)).sort();

      // one flipped byte inside the sealed ciphertext (base64 digits), and in the metadata
      const text = Buffer.from(out.blob!).toString('utf8');
      const cipherAt = text.indexOf('"ciphertext": "') + 20;
      const yearDigit = text.indexOf('"createdAt": "') + 14 + 3; // still a valid date, another year
      for (const at of [cipherAt, yearDigit]) {
        const flipped = Buffer.from(out.blob!);
        flipped[at] = at === yearDigit ? (flipped[at] === 0x37 ? 0x36 : 0x37) : flipped[at] === 0x41 ? 0x42 : 0x41;
        const error = await expectHsmError(target.backup.importKey({ ...out, blob: flipped }, { id: 'tampered' }), 'IntegrityError');
        expect(error.message).toContain('authentication failed');
      }
      // a byte that breaks the JSON
      const broken = Buffer.from(out.blob!);
      broken[0] = 0x00;
      await expectHsmError(target.backup.importKey({ ...out, blob: broken }, { id: 'tampered' }), 'IntegrityError');
      // the file of another key, under this key's public key
      const otherOut = await source.backup.exportKey('p256-b');
      const swapped = await expectHsmError(target.backup.importKey({ ...otherOut, publicKeySpki: out.publicKeySpki }, { id: 'swapped' }), 'IntegrityError');
      expect(swapped.message).toContain('publicKeySpki');
      // a store with another passphrase cannot open it
      const wrong = await expectHsmError(other.backup.importKey(out), 'WrongPassphrase');
      expect(wrong.message).not.toContain(passphrase);
      const noSource = await expectHsmError(programmatic.backup.importKey(out, { id: 'x' }), 'InvalidConfiguration');
      expect(noSource.message).toContain('dropped by initialize()');
      // a provider's reference is not a sealed file
      await expectHsmError(target.backup.importKey({ ...out, method: 'reference-only' }), 'InvalidArgument');
      expect((await readdir(targetDir)).sort()).toEqual(before);
    } finally {
      await source.close();
      await target.close();
      await other.close();
      await programmatic.close();
    }
  });
});
