/**
 * The bundle on real SoftHSM tokens with the PKCS#11 backend's `wrapped` export: the KEK made on a
 * backup token B and enrolled on production token A; logical keys (rotated, one version revoked)
 * and a plain key made backup-eligible on A, a key made without backup listed as ineligible with
 * the backend's reason; A's token directory deleted; a fresh token C enrolled from B; the bundle
 * restored on C into a new SQLite registry; every restored key signs on C and OpenSSL verifies
 * with the public keys exported before the backup; a drill on scratch token D passes.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublicKey } from 'node:crypto';
import { encodeSignature, type KeyAlgorithm } from '@olocus/hsm-core';
import { checkpointSignerFromBackend, openAuditLog } from '@olocus/hsm-compliance';
import { openRotation } from '@olocus/hsm-rotation';
import { Pkcs11Backend, createBackupKek, enrollBackupKek } from '@olocus/hsm-backend-pkcs11';
import { SOFTHSM_LIB, createToken, requireTools, type TestToken } from '@olocus/hsm-test-support';
import { createBundle, drillBundle, restoreBundle, verifyBundle, withBackupByDefault, type BundleFile } from '../src/index.js';

requireTools();
const work = mkdtempSync(join(tmpdir(), 'olocus-backup-p11-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const B = createToken('bb-backup');
const A = createToken('bb-prod');
const backendOn = (t: TestToken) => new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: t.label, signThreads: 0 }, { pin: t.pin });
const so = (t: TestToken) => ({ tokenLabel: t.label, soPin: t.soPin });

const spkiBefore = new Map<string, { algorithm: KeyAlgorithm; spki: Uint8Array }>();
const bundle = join(work, 'p11.olb');
let signer = '';
const ctx = { actor: 'alice', reason: 'test' };

function opensslVerifies(algorithm: KeyAlgorithm, spki: Uint8Array, message: Buffer, raw: Uint8Array, name: string): boolean {
  const pem = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' }) as string;
  const files = { pem: join(work, `${name}.pem`), msg: join(work, `${name}.msg`), sig: join(work, `${name}.sig`) };
  writeFileSync(files.pem, pem);
  writeFileSync(files.msg, message);
  writeFileSync(files.sig, encodeSignature(algorithm, raw, 'der'));
  const digest = algorithm === 'ECDSA_P384' ? 'sha384' : 'sha256';
  try {
    const out = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', files.pem, '-digest', digest, '-rawin', '-in', files.msg, '-sigfile', files.sig], { encoding: 'utf8' });
    return /Signature Verified Successfully/.test(out);
  } catch {
    return false;
  }
}

beforeAll(async () => {
  await createBackupKek({ libraryPath: SOFTHSM_LIB, ...so(B) });
  await enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(B), to: { ...so(A), unwrap: false } }); // production exports only
  const backend = backendOn(A);
  await backend.initialize();
  const rot = await openRotation({ storage: { kind: 'sqlite', path: join(work, 'rotation-a.db') }, backend, startScheduler: false, reconcile: false });
  const audit = await openAuditLog({
    storage: { kind: 'sqlite', path: join(work, 'audit-a.db') },
    logName: 'p11',
    checkpoint: { signer: checkpointSignerFromBackend(backend, 'olocus-audit-checkpoint'), everyRecords: 1000, intervalMs: 0 },
  });
  try {
    const m = rot.manager;
    await m.createKey('pay.sign', 'ECDSA_P256', { actor: 'alice', backup: true });
    await m.rotateKey('pay.sign', ctx);
    await m.createKey('pay.rsa', 'RSA_2048', { actor: 'alice', backup: true });
    await m.rotateKey('pay.rsa', ctx);
    await m.revokeKey('pay.rsa.v2', ctx);
    // a plain key made through the backup-by-default view
    await withBackupByDefault(backend).generateKeyPair({ id: 'plain-384', algorithm: 'ECDSA_P384' });
    await backend.generateKeyPair({ id: 'hsm-only', algorithm: 'ECDSA_P256' });
    await audit.append({ type: 'admin.action', actor: 'alice', outcome: 'success', details: { action: 'setup' } });
    for (const id of ['pay.sign.v1', 'pay.sign.v2', 'pay.rsa.v1', 'pay.rsa.v2', 'plain-384']) {
      const info = await backend.getPublicKey(id);
      spkiBefore.set(id, { algorithm: info.algorithm, spki: info.spki });
    }
    const created = await createBundle(bundle, { backend, registry: rot.registry, audit, actor: 'alice', exclude: ['olocus-audit-checkpoint'] });
    signer = created.signer.fingerprint;
    expect(created.ineligible).toEqual([{ id: 'hsm-only', reason: expect.stringMatching(/non-extractable|without backup/) }]);
  } finally {
    await audit.close();
    await rot.close();
    await backend.close();
  }
  // the production token is lost
  rmSync(A.path, { recursive: true, force: true });
});

describe('PKCS#11 round trip (SoftHSM, wrapped under the backup KEK)', () => {
  it('the bundle holds wrapped keys only: method wrapped, CKM_AES_KEY_WRAP_PAD, no blob parses as a key', async () => {
    const verified = await verifyBundle(bundle, { trustedSigners: [signer] });
    expect(verified.keys.map((k) => k.id).sort()).toEqual(['pay.rsa.v1', 'pay.rsa.v2', 'pay.sign.v1', 'pay.sign.v2', 'plain-384']);
    for (const k of verified.keys) {
      expect(k.method).toBe('wrapped');
      expect(k.parameters['mechanism']).toBe('CKM_AES_KEY_WRAP_PAD');
    }
    const text = readFileSync(bundle, 'utf8');
    expect(text).not.toMatch(/PRIVATE KEY/);
    expect((JSON.parse(text) as BundleFile).format).toBe('olocus-backup/1');
  });

  it('restores on a fresh token that received the KEK: states kept, every key signs, OpenSSL verifies with the pre-backup public keys', async () => {
    const C = createToken('bb-fresh');
    await enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(B), to: { ...so(C), userPin: C.pin } });
    const backend = backendOn(C);
    await backend.initialize();
    const rot = await openRotation({ storage: { kind: 'sqlite', path: join(work, 'rotation-c.db') }, backend, startScheduler: false, reconcile: false });
    try {
      const result = await restoreBundle(bundle, { trustedSigners: [signer], backend, registry: rot.registry });
      expect(result.keys.map((k) => k.action)).toEqual(Array(5).fill('imported'));
      const states = async (id: string) => (await rot.registry.getKeyVersions(id)).map((v) => `v${v.version} ${v.state}`);
      expect(await states('pay.sign')).toEqual(['v1 Superseded', 'v2 Active']);
      expect(await states('pay.rsa')).toEqual(['v1 Superseded', 'v2 Revoked']);
      for (const [id, before] of spkiBefore) {
        const message = Buffer.from(`after the loss: ${id}`);
        const raw = await backend.sign(id, message);
        expect(opensslVerifies(before.algorithm, before.spki, message, raw, id), id).toBe(true);
      }
      // the registry's key refs point at token C now
      const v2 = await rot.registry.getKeyVersion('pay.sign.v2');
      expect(v2.keyRef).toBe((await backend.getKey('pay.sign.v2')).ref);
      const again = await restoreBundle(bundle, { trustedSigners: [signer], backend, registry: rot.registry });
      expect(new Set(again.keys.map((k) => k.action))).toEqual(new Set(['already-present']));
      // the logical key's backup flag came back with its row: a version made after the restore is exportable too
      const rotated = await rot.manager.rotateKey('pay.sign', ctx);
      expect(rotated.current.version).toBe(3);
      expect((await backend.backup.exportKey('pay.sign.v3')).method).toBe('wrapped');
    } finally {
      await rot.close();
      await backend.close();
    }
  });

  it('a drill on a scratch token holding the KEK passes for every key', async () => {
    const D = createToken('bb-scratch');
    await enrollBackupKek({ libraryPath: SOFTHSM_LIB, from: so(B), to: { ...so(D), userPin: D.pin } });
    const scratch = backendOn(D);
    await scratch.initialize();
    try {
      const result = await drillBundle(bundle, { trustedSigners: [signer], scratch });
      expect(result.rows.filter((r) => r.result === 'ok')).toHaveLength(5);
      expect(result.rows.find((r) => r.id === 'hsm-only')).toMatchObject({ result: 'ineligible' });
      expect(result.ok).toBe(true);
    } finally {
      await scratch.close();
    }
  });
});
