/**
 * Backup and verified restore on real SoftHSM tokens, with the KEK ceremony as an operator runs it:
 * the KEK is generated on a backup token B and enrolled onto the production token A; keys made
 * with `backup` on A are exported (wrapped), A's directory is deleted, a fresh token C receives
 * the KEK from B, the keys are restored on C, sign there, and the signatures verify (node:crypto
 * and openssl) under the public keys exported before. pkcs11-tool and C_GetAttributeValue read
 * the key attributes independently. PINs travel in environment variables only.
 */
import { createPrivateKey, createPublicKey, createVerify, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ecdsaRawToDer, type ExportedKey, type KeyAlgorithm, verifyLocally } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { Pkcs11Backend, createBackupKek, enrollBackupKek } from '../src/index.js';
import { CKA_CLASS, CKA_EXTRACTABLE, CKA_ID, CKA_MODIFIABLE, CKA_PRIVATE, CKA_UNWRAP, CKA_WRAP, CKA_KEY_TYPE, CKK_EC, CKA_NEVER_EXTRACTABLE, CKA_SENSITIVE, CKA_TRUSTED, CKA_WRAP_WITH_TRUSTED, CKF_SERIAL_SESSION, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY, CKA_LABEL } from '../src/constants.js';
import { acquireModule, releaseModule } from '../src/module.js';
import { P11KIT_CLIENT_LIB, P11KitServer, SOFTHSM_LIB, createToken, runTool, type TestToken } from '@olocus/hsm-test-support';

const PIN_VAR = 'OLOCUS_TEST_PIN';
const work = mkdtempSync(join(tmpdir(), 'olocus-backup-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const backupToken = createToken('bk-backup'); // B: holds the KEK, no keys
const production = createToken('bk-prod'); // A: lost after the backup
const backendOn = (token: TestToken) => new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, signThreads: 0 }, { pin: token.pin });
const so = (token: TestToken) => ({ tokenLabel: token.label, soPin: token.soPin });

function pkcs11Tool(token: TestToken, args: string[]): string {
  const result = runTool('pkcs11-tool', ['--module', SOFTHSM_LIB, '--token-label', token.label, '--login', '--pin', `env:${PIN_VAR}`, ...args], { [PIN_VAR]: token.pin });
  expect(result.status, `pkcs11-tool ${args.join(' ')} failed: ${result.stderr}`).toBe(0);
  expect(`${result.stdout}${result.stderr}`).not.toContain(token.pin);
  return result.stdout;
}

/** pkcs11-tool's "Access:" line per object label (private and secret keys). */
function accessByLabel(listing: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const block of listing.split(/\n(?=\S)/)) {
    const label = /label:\s+(.+)/.exec(block)?.[1]?.trim();
    const access = /Access:\s+(.+)/.exec(block)?.[1]?.trim();
    if (label && access && /^(Private Key|Secret Key)/.test(block)) out.set(label, access);
  }
  return out;
}

/** CKA_EXTRACTABLE / CKA_WRAP_WITH_TRUSTED / CKA_NEVER_EXTRACTABLE / CKA_SENSITIVE / CKA_MODIFIABLE of a private key, read with C_GetAttributeValue. */
function privateAttributes(token: TestToken, id: string) {
  const mod = acquireModule(SOFTHSM_LIB);
  const p11 = mod.p11;
  const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === token.label)!;
  const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION);
  try {
    // the backend of this file holds the user login, so private objects are visible here too
    p11.C_FindObjectsInit(session, [
      { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
      { type: CKA_ID, value: Buffer.from(id) },
    ]);
    const [object] = p11.C_FindObjects(session, 1);
    p11.C_FindObjectsFinal(session);
    if (!object) throw new Error(`no private key ${id} on ${token.label}`);
    const attrs = p11.C_GetAttributeValue(session, object, [{ type: CKA_EXTRACTABLE }, { type: CKA_WRAP_WITH_TRUSTED }, { type: CKA_NEVER_EXTRACTABLE }, { type: CKA_SENSITIVE }, { type: CKA_MODIFIABLE }]);
    const b = (i: number) => attrs[i]!.value[0] === 1;
    return { extractable: b(0), wrapWithTrusted: b(1), neverExtractable: b(2), sensitive: b(3), modifiable: b(4) };
  } finally {
    p11.C_CloseSession(session);
    void releaseModule(mod);
  }
}

/** Objects with this CKA_ID on the token (any class), read with a raw session. */
function objectsWithId(token: TestToken, id: string): number {
  const mod = acquireModule(SOFTHSM_LIB);
  const p11 = mod.p11;
  const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === token.label)!;
  const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION);
  try {
    let n = 0;
    for (const cls of [CKO_PRIVATE_KEY, CKO_PUBLIC_KEY]) {
      p11.C_FindObjectsInit(session, [
        { type: CKA_CLASS, value: cls },
        { type: CKA_ID, value: Buffer.from(id) },
      ]);
      n += p11.C_FindObjects(session, 10).length;
      p11.C_FindObjectsFinal(session);
    }
    return n;
  } finally {
    p11.C_CloseSession(session);
    void releaseModule(mod);
  }
}

/** openssl as the independent verifier, with the public key exported before the backup. */
function opensslVerifies(algorithm: KeyAlgorithm, spki: Uint8Array, message: Buffer, signature: Uint8Array, name: string): boolean {
  const pem = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' }) as string;
  const pubFile = join(work, `${name}.pem`);
  const msgFile = join(work, `${name}.msg`);
  const sigFile = join(work, `${name}.sig`);
  writeFileSync(pubFile, pem);
  writeFileSync(msgFile, message);
  if (algorithm === 'Ed25519') {
    writeFileSync(sigFile, signature);
    return runTool('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', pubFile, '-rawin', '-in', msgFile, '-sigfile', sigFile]).status === 0;
  }
  const digest = algorithm === 'ECDSA_P384' ? '-sha384' : algorithm === 'ECDSA_P521' ? '-sha512' : '-sha256';
  writeFileSync(sigFile, algorithm.startsWith('ECDSA') ? ecdsaRawToDer(signature) : signature);
  const pss = algorithm.startsWith('RSA_PSS') ? ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32'] : [];
  const result = runTool('openssl', ['dgst', digest, ...pss, '-verify', pubFile, '-signature', sigFile, msgFile]);
  return result.status === 0 && /Verified OK/.test(result.stdout);
}

function blobParsesAsKey(blob: Uint8Array): boolean {
  for (const attempt of [
    { format: 'der', type: 'pkcs8' },
    { format: 'der', type: 'pkcs1' },
    { format: 'der', type: 'sec1' },
  ] as const) {
    try {
      createPrivateKey({ key: Buffer.from(blob), ...attempt });
      return true;
    } catch {
      // expected
    }
  }
  try {
    createPrivateKey(Buffer.from(blob));
    return true;
  } catch {
    return false;
  }
}

const exported = new Map<string, ExportedKey>();
const spkiBefore = new Map<string, Uint8Array>();
let algorithms: KeyAlgorithm[] = [];
const timings = { wrapMs: [] as number[], unwrapMs: [] as number[] };

describe('backup and verified restore (SoftHSM, KEK ceremony)', () => {
  it('the SO makes the KEK on the backup token and enrolls it onto the production token; no clear KEK anywhere', async () => {
    const created = await createBackupKek({ libraryPath: SOFTHSM_LIB, ...so(backupToken) });
    expect(created.label).toBe('olocus-backup-kek');
    expect(created.checkValue).toMatch(/^[0-9a-f]{16}$/);
    // the ceremony never replaces a KEK
    await expectHsmError(createBackupKek({ libraryPath: SOFTHSM_LIB, ...so(backupToken) }), 'KeyAlreadyExists');
    const wrongPin = `wrong-${randomBytes(4).toString('hex')}`;
    const refused = await expectHsmError(createBackupKek({ libraryPath: SOFTHSM_LIB, tokenLabel: production.label, soPin: wrongPin }), 'LoginFailed');
    expect(JSON.stringify(refused.toJSON())).not.toContain(wrongPin);

    // the production token only exports: it gets nothing that may unwrap
    const enrolled = await enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(backupToken), to: { ...so(production), unwrap: false } });
    expect(enrolled.checkValue).toBe(created.checkValue);
    expect(enrolled.unwrapWith).toBe('none');
    // SoftHSM 2.6.1 refuses OAEP with SHA-256 (CKR_ARGUMENTS_BAD): the ceremony says it used SHA-1
    expect(enrolled.transport).toEqual({ mechanism: 'CKM_RSA_PKCS_OAEP', hash: 'SHA-1', modulusBits: 3072, sha256Refused: 'CKR_ARGUMENTS_BAD' });
    await expectHsmError(enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(backupToken), to: { ...so(production), unwrap: false } }), 'KeyAlreadyExists');
    // a token that may unwrap needs its user PIN (the private half): the public-half unwrap is never made
    await expectHsmError(enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(backupToken), to: so(production) }), 'InvalidArgument');

    // pkcs11-tool sees one KEK on each token, and no transport key left behind
    for (const token of [backupToken, production]) {
      const listing = pkcs11Tool(token, ['--list-objects']);
      expect(listing).not.toContain('olocus-kek-transport');
      expect(listing).not.toContain('olocus-kek-check');
      const access = accessByLabel(listing).get('olocus-backup-kek');
      expect(access, listing).toBeDefined();
      expect(access).toContain('sensitive');
    }
    // and C_GetAttributeValue: trusted, sensitive, extractable only under a trusted key, value unreadable
    const mod = acquireModule(SOFTHSM_LIB);
    try {
      const p11 = mod.p11;
      const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === production.label)!;
      const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION);
      p11.C_FindObjectsInit(session, [
        { type: CKA_CLASS, value: CKO_SECRET_KEY },
        { type: CKA_LABEL, value: 'olocus-backup-kek' },
      ]);
      const [kek] = p11.C_FindObjects(session, 2);
      p11.C_FindObjectsFinal(session);
      // the trusted half may wrap but not unwrap: it is a public object (the SO makes no others)
      const attrs = p11.C_GetAttributeValue(session, kek!, [{ type: CKA_TRUSTED }, { type: CKA_SENSITIVE }, { type: CKA_EXTRACTABLE }, { type: CKA_WRAP_WITH_TRUSTED }, { type: CKA_MODIFIABLE }, { type: CKA_WRAP }, { type: CKA_UNWRAP }, { type: CKA_PRIVATE }]);
      expect(attrs.map((a) => a.value[0])).toEqual([1, 1, 1, 1, 0, 1, 0, 0]);
      expect(() => p11.C_GetAttributeValue(session, kek!, [{ type: 0x11 /* CKA_VALUE */ }])).toThrow(/CKR_ATTRIBUTE_SENSITIVE/);
      p11.C_CloseSession(session);
    } finally {
      await releaseModule(mod);
    }
  });

  it('keys of every algorithm made with backup on the production token are exported wrapped; a key made without backup is refused with the reason', async () => {
    const backend = backendOn(production);
    await backend.initialize();
    try {
      algorithms = (await backend.capabilities()).algorithms;
      expect(algorithms).toEqual(expect.arrayContaining(['ECDSA_P256', 'ECDSA_P384', 'ECDSA_P521', 'Ed25519', 'RSA_2048', 'RSA_3072', 'RSA_4096', 'RSA_PSS_2048']));
      for (const algorithm of algorithms) {
        const id = `bk-${algorithm}`;
        await backend.generateKeyPair({ id, algorithm, backup: true, labels: { team: 'payments' }, expiresAt: new Date(Date.now() + 86_400_000 * 30) });
        spkiBefore.set(id, (await backend.getPublicKey(id)).spki);
        expect(privateAttributes(production, id)).toMatchObject({ extractable: true, wrapWithTrusted: true, sensitive: true, modifiable: false });
        if (algorithm === 'Ed25519') {
          // SoftHSM 2.6.1's C_WrapKey has no EdDSA private-key encoding: refused, with the reason
          const error = await expectHsmError(backend.backup.exportKey(id), 'KeyUsageNotAllowed');
          expect(error.message).toContain('CKR_KEY_NOT_WRAPPABLE');
          expect(error.details.reason).toBe('token-cannot-wrap-key-type');
          continue;
        }
        const started = performance.now();
        const out = await backend.backup.exportKey(id);
        timings.wrapMs.push(performance.now() - started);
        expect(out.method).toBe('wrapped');
        expect(out.algorithm).toBe(algorithm);
        expect(Buffer.from(out.publicKeySpki).equals(Buffer.from(spkiBefore.get(id)!))).toBe(true);
        expect(out.parameters).toMatchObject({ format: 'olocus-pkcs11-wrapped/v1', mechanism: 'CKM_AES_KEY_WRAP_PAD', kekLabel: 'olocus-backup-kek', ckaId: Buffer.from(id).toString('hex'), label: id, tokenLabel: production.label });
        expect(JSON.parse(out.parameters.labels!)).toEqual({ team: 'payments' });
        // the blob is not a key: no parser takes it
        expect(out.blob!.length).toBeGreaterThan(16);
        expect(blobParsesAsKey(out.blob!), `${algorithm} blob parsed as a key`).toBe(false);
        exported.set(id, out);
      }
      // even the user-PIN holder (this process is logged in) finds nothing on the production token that may unwrap
      const mod = acquireModule(SOFTHSM_LIB);
      try {
        const p11 = mod.p11;
        const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === production.label)!;
        const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION);
        p11.C_FindObjectsInit(session, [{ type: CKA_UNWRAP, value: true }]);
        expect(p11.C_FindObjects(session, 10)).toHaveLength(0);
        p11.C_FindObjectsFinal(session);
        p11.C_CloseSession(session);
      } finally {
        await releaseModule(mod);
      }
      await backend.generateKeyPair({ id: 'no-backup', algorithm: 'ECDSA_P256' });
      expect(privateAttributes(production, 'no-backup')).toMatchObject({ extractable: false, neverExtractable: true, sensitive: true });
      const refused = await expectHsmError(backend.backup.exportKey('no-backup'), 'KeyUsageNotAllowed');
      expect(refused.message).toContain('was created non-extractable (without backup); the library cannot back it up');

      // pkcs11-tool: extractable only on the backup keys, never on the other
      const access = accessByLabel(pkcs11Tool(production, ['--list-objects']));
      expect(access.get('no-backup')).toMatch(/never extractable/);
      expect(access.get('no-backup')).not.toMatch(/(^|, )extractable/);
      for (const algorithm of algorithms) expect(access.get(`bk-${algorithm}`), `bk-${algorithm}`).toMatch(/(^|, )extractable/);
    } finally {
      await backend.close();
    }
  });

  it('after the production token is deleted, a fresh token receives the KEK from the backup token and every key is restored, signs, and verifies under the key exported before (node:crypto and openssl)', async () => {
    rmSync(production.path, { recursive: true, force: true });
    expect(existsSync(production.path)).toBe(false);
    const fresh = createToken('bk-fresh');
    const enrolled = await enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(backupToken), to: { ...so(fresh), userPin: fresh.pin } });
    expect(enrolled).toMatchObject({ tokenLabel: 'bk-fresh', unwrapWith: 'private-half' });

    const backend = backendOn(fresh);
    await backend.initialize();
    try {
      expect([...exported.keys()].sort()).toEqual(algorithms.filter((a) => a !== 'Ed25519').map((a) => `bk-${a}`).sort());
      for (const algorithm of algorithms.filter((a) => a !== 'Ed25519')) {
        const id = `bk-${algorithm}`;
        const started = performance.now();
        const handle = await backend.backup.importKey(exported.get(id)!);
        timings.unwrapMs.push(performance.now() - started);
        expect(handle).toMatchObject({ id, algorithm, usages: ['sign', 'verify'], labels: { team: 'payments' } });
        expect(handle.expiresAt?.toISOString()).toBe(exported.get(id)!.parameters.expiresAt);
        const message = randomBytes(100);
        const signature = await backend.sign(id, message);
        expect(verifyLocally(algorithm, spkiBefore.get(id)!, message, signature), `${algorithm} node:crypto`).toBe(true);
        if (algorithm === 'ECDSA_P256') {
          // node:crypto's own verifier on the DER form, beside verifyLocally
          const der = ecdsaRawToDer(signature);
          expect(createVerify('sha256').update(message).verify(createPublicKey({ key: Buffer.from(spkiBefore.get(id)!), format: 'der', type: 'spki' }), der)).toBe(true);
        }
        expect(opensslVerifies(algorithm, spkiBefore.get(id)!, message, signature, id), `${algorithm} openssl`).toBe(true);
        expect(privateAttributes(fresh, id)).toMatchObject({ extractable: true, wrapWithTrusted: true, sensitive: true, modifiable: false });
      }
      // the KEK's private half, visible to the logged-in user only: unwrap-only, never extractable, not trusted
      const mod = acquireModule(SOFTHSM_LIB);
      try {
        const p11 = mod.p11;
        const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === fresh.label)!;
        const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION);
        p11.C_FindObjectsInit(session, [
          { type: CKA_CLASS, value: CKO_SECRET_KEY },
          { type: CKA_LABEL, value: 'olocus-backup-kek' },
          { type: CKA_PRIVATE, value: true },
        ]);
        const [half] = p11.C_FindObjects(session, 2);
        p11.C_FindObjectsFinal(session);
        const attrs = p11.C_GetAttributeValue(session, half!, [{ type: CKA_UNWRAP }, { type: CKA_WRAP }, { type: CKA_EXTRACTABLE }, { type: CKA_SENSITIVE }, { type: CKA_TRUSTED }, { type: CKA_MODIFIABLE }]);
        expect(attrs.map((a) => a.value[0])).toEqual([1, 0, 0, 1, 0, 0]);
        p11.C_CloseSession(session);
      } finally {
        await releaseModule(mod);
      }
      const access = accessByLabel(pkcs11Tool(fresh, ['--list-objects']));
      for (const id of exported.keys()) expect(access.get(id)).toMatch(/(^|, )extractable/);
      // a restored key can be backed up again, under the same KEK, to the same bytes (RFC 5649 is deterministic)
      const again = await backend.backup.exportKey('bk-ECDSA_P256');
      expect(Buffer.from(again.blob!).equals(Buffer.from(exported.get('bk-ECDSA_P256')!.blob!))).toBe(true);
      expect(again.parameters.kekCheckValue).toBe(exported.get('bk-ECDSA_P256')!.parameters.kekCheckValue);

      // the id is taken
      await expectHsmError(backend.backup.importKey(exported.get('bk-ECDSA_P256')!), 'KeyAlreadyExists');

      // one flipped byte: the RFC 5649 check fails, a typed IntegrityError, nothing left behind
      for (const id of ['bk-ECDSA_P256', 'bk-RSA_2048']) {
        const original = exported.get(id)!;
        for (const position of [0, Math.floor(original.blob!.length / 2), original.blob!.length - 1]) {
          const blob = Buffer.from(original.blob!);
          blob[position]! ^= 0x01;
          const error = await expectHsmError(backend.backup.importKey({ ...original, blob }, { id: 'tampered' }), 'IntegrityError');
          expect(error.message).toContain('does not unwrap');
          expect(objectsWithId(fresh, 'tampered')).toBe(0);
        }
      }

      // another key's blob under this key's public key: it unwraps, but does not prove itself
      const other = exported.get('bk-ECDSA_P384')!;
      const swapped = { ...exported.get('bk-ECDSA_P384')!, publicKeySpki: await freshP384Spki() };
      const mismatch = await expectHsmError(backend.backup.importKey(swapped, { id: 'swapped' }), 'IntegrityError');
      expect(mismatch.message).toContain('is not the exported key');
      expect(objectsWithId(fresh, 'swapped')).toBe(0);
      expect(other.parameters.ckaId).toBe(Buffer.from('bk-ECDSA_P384').toString('hex'));

      // a provider reference is not something a token can restore
      await expectHsmError(backend.backup.importKey({ ...other, method: 'reference-only' }, { id: 'ref' }), 'InvalidArgument');
    } finally {
      await backend.close();
    }
    // without a PIN, a session on the token sees only the trusted half, and it may not unwrap: a
    // stolen blob cannot be turned into a readable key by whoever can open a session on the token
    const mod = acquireModule(SOFTHSM_LIB);
    try {
      const p11 = mod.p11;
      const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === fresh.label)!;
      const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION);
      p11.C_FindObjectsInit(session, [
        { type: CKA_CLASS, value: CKO_SECRET_KEY },
        { type: CKA_LABEL, value: 'olocus-backup-kek' },
      ]);
      const visible = p11.C_FindObjects(session, 5);
      p11.C_FindObjectsFinal(session);
      expect(visible).toHaveLength(1);
      const stolen = Buffer.from(exported.get('bk-ECDSA_P256')!.blob!);
      expect(() =>
        p11.C_UnwrapKey(session, { mechanism: 0x210a }, visible[0]!, stolen, [
          { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
          { type: CKA_KEY_TYPE, value: CKK_EC },
          { type: CKA_PRIVATE, value: false },
          { type: CKA_SENSITIVE, value: false },
        ]),
      ).toThrow(/CKR_KEY_FUNCTION_NOT_PERMITTED/);
      p11.C_CloseSession(session);
    } finally {
      await releaseModule(mod);
    }
    console.log(
      `backup timings on SoftHSM (${timings.unwrapMs.length} keys): exportKey (C_WrapKey + lookups) median ${median(timings.wrapMs).toFixed(2)} ms, importKey (C_UnwrapKey + public object + sign proof + metadata) median ${median(timings.unwrapMs).toFixed(2)} ms`,
    );
  });

  it('importKeys restores a batch from one look-up of the token: the keys before a failure stay, the failing one is named and leaves nothing, the rest are not attempted', async () => {
    const batchToken = createToken('bk-batch');
    await enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(backupToken), to: { ...so(batchToken), userPin: batchToken.pin } });
    const backend = backendOn(batchToken);
    await backend.initialize();
    try {
      await expectHsmError(backend.backup.importKeys('not a list' as never), 'InvalidArgument');
      expect(await backend.backup.importKeys([])).toEqual({ imported: [] });
      // an id already taken on the token, by a key made there
      await backend.generateKeyPair({ id: 'bk-ECDSA_P384', algorithm: 'ECDSA_P384' });
      const first = await backend.backup.importKeys(['bk-ECDSA_P256', 'bk-RSA_2048', 'bk-ECDSA_P384', 'bk-RSA_3072'].map((id) => exported.get(id)!));
      expect(first.imported.map((h) => h.id)).toEqual(['bk-ECDSA_P256', 'bk-RSA_2048']);
      expect(first.failed?.index).toBe(2);
      expect(first.failed?.error.code).toBe('KeyAlreadyExists');
      expect(objectsWithId(batchToken, 'bk-RSA_3072')).toBe(0);

      // a tampered blob first: IntegrityError, nothing of it left, and the index is looked up again
      const original = exported.get('bk-RSA_3072')!;
      const blob = Buffer.from(original.blob!);
      blob[5]! ^= 0x01;
      const second = await backend.backup.importKeys([{ ...original, blob }, original]);
      expect(second.imported).toHaveLength(0);
      expect(second.failed?.index).toBe(0);
      expect(second.failed?.error.code).toBe('IntegrityError');
      expect(objectsWithId(batchToken, 'bk-RSA_3072')).toBe(0);

      // the same id twice in one batch: the second is refused from the index kept up to date
      const third = await backend.backup.importKeys([original, original]);
      expect(third.imported.map((h) => h.id)).toEqual(['bk-RSA_3072']);
      expect(third.failed?.index).toBe(1);
      expect(third.failed?.error.code).toBe('KeyAlreadyExists');
      expect(objectsWithId(batchToken, 'bk-RSA_3072')).toBe(2); // one private, one public object

      for (const id of ['bk-ECDSA_P256', 'bk-RSA_2048', 'bk-RSA_3072']) {
        const algorithm = exported.get(id)!.algorithm;
        const message = randomBytes(64);
        expect(verifyLocally(algorithm, spkiBefore.get(id)!, message, await backend.sign(id, message)), id).toBe(true);
      }
      // the metadata written in the batch is what a fresh process reads back
      const reopened = backendOn(batchToken);
      await reopened.initialize();
      try {
        const listed = (await reopened.listKeys()).keys.filter((k) => k.id.startsWith('bk-'));
        expect(listed.map((k) => k.id).sort()).toEqual(['bk-ECDSA_P256', 'bk-ECDSA_P384', 'bk-RSA_2048', 'bk-RSA_3072']);
        for (const k of listed.filter((k) => k.id !== 'bk-ECDSA_P384')) {
          expect(k.labels).toEqual({ team: 'payments' });
          expect(k.expiresAt?.toISOString()).toBe(exported.get(k.id)!.parameters.expiresAt);
        }
      } finally {
        await reopened.close();
      }
    } finally {
      await backend.close();
    }
  });

  it('a token without the KEK refuses to export, naming the label and the ceremony; under another KEK restore refuses with IntegrityError', async () => {
    const lone = createToken('bk-lone');
    let backend = backendOn(lone);
    await backend.initialize();
    try {
      await backend.generateKeyPair({ id: 'lone-key', algorithm: 'ECDSA_P256', backup: true });
      const error = await expectHsmError(backend.backup.exportKey('lone-key'), 'KeyNotFound');
      expect(error.message).toContain("'olocus-backup-kek'");
      expect(error.message).toContain('enrollBackupKek');
      await expectHsmError(backend.backup.importKey(exported.get('bk-RSA_3072')!), 'KeyNotFound');
    } finally {
      await backend.close();
    }
    // its own KEK, made by its SO: not the one the keys were wrapped under
    await createBackupKek({ libraryPath: SOFTHSM_LIB, ...so(lone) });
    backend = backendOn(lone);
    await backend.initialize();
    try {
      const error = await expectHsmError(backend.backup.importKey(exported.get('bk-RSA_3072')!), 'IntegrityError');
      expect(error.message).toContain('wrapped under another KEK');
      expect(objectsWithId(lone, 'bk-RSA_3072')).toBe(0);
    } finally {
      await backend.close();
    }
  });
});

describe('backup through a module thread', () => {
  it('SoftHSM loaded as a remote module (remote: true): C_WrapKey, C_UnwrapKey and C_CopyObject cross the module thread', async () => {
    const token = createToken('bk-thread');
    const vault = createToken('bk-thread-kek');
    await createBackupKek({ libraryPath: SOFTHSM_LIB, ...so(vault) });
    await enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(vault), to: { ...so(token), userPin: token.pin } });
    const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, remote: true }, { pin: token.pin });
    try {
      await backend.initialize();
      expect(backend.metrics().remote).toBe(true);
      const key = await backend.generateKeyPair({ id: 'thread-backup', algorithm: 'RSA_2048', backup: true });
      const spki = (await backend.getPublicKey(key)).spki;
      const out = await backend.backup.exportKey(key);
      expect(blobParsesAsKey(out.blob!)).toBe(false);
      await backend.destroyKey(key);
      await backend.backup.importKey(out);
      const message = randomBytes(40);
      expect(verifyLocally('RSA_2048', spki, message, await backend.sign('thread-backup', message))).toBe(true);
      const flipped = Buffer.from(out.blob!);
      flipped[5]! ^= 0x01;
      await expectHsmError(backend.backup.importKey({ ...out, blob: flipped }, { id: 'thread-tampered' }), 'IntegrityError');
    } finally {
      await backend.close();
    }
  });

  it('behind p11-kit server (p11-kit-client.so) the RPC does not carry CKM_AES_KEY_WRAP_PAD: export and import refuse, naming the mechanism', async () => {
    const net = createToken('bk-net');
    await createBackupKek({ libraryPath: SOFTHSM_LIB, ...so(net) });
    const server = new P11KitServer(join(work, 'p11kit.sock'), net.label);
    await server.start();
    process.env.P11_KIT_SERVER_ADDRESS = server.address; // read by p11-kit-client.so at C_Initialize
    const backend = new Pkcs11Backend({ libraryPath: P11KIT_CLIENT_LIB, tokenLabel: net.label }, { pin: net.pin });
    try {
      await backend.initialize();
      expect(backend.metrics().remote).toBe(true);
      await backend.generateKeyPair({ id: 'net-backup', algorithm: 'ECDSA_P256', backup: true });
      const error = await expectHsmError(backend.backup.exportKey('net-backup'), 'UnsupportedAlgorithm');
      expect(error.message).toContain('does not list CKM_AES_KEY_WRAP_PAD');
      expect(error.details.mechanism).toBe('CKM_AES_KEY_WRAP_PAD');
      const spki = (await backend.getPublicKey('net-backup')).spki;
      const blob = randomBytes(40); // never reaches the token: the mechanism check comes first
      const wrapped: ExportedKey = { method: 'wrapped', id: 'net-import', algorithm: 'ECDSA_P256', usages: ['sign', 'verify'], publicKeySpki: spki, blob, parameters: { mechanism: 'CKM_AES_KEY_WRAP_PAD' } };
      await expectHsmError(backend.backup.importKey(wrapped), 'UnsupportedAlgorithm');
    } finally {
      await backend.close();
      server.kill();
    }
  });
});

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/** The public key of another P-384 key pair (node:crypto), as the "wrong" publicKeySpki. */
async function freshP384Spki(): Promise<Uint8Array> {
  const { generateKeyPairSync } = await import('node:crypto');
  return new Uint8Array(generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ type: 'spki', format: 'der' }));
}
