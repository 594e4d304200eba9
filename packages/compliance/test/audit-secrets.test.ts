import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HsmError, HsmManager, verifyLocally } from '@olocus/hsm-core';
import { Pkcs11Backend } from '@olocus/hsm-backend-pkcs11';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';
import { auditorFor, checkpointSignerFromBackend, openAuditLog, verifyExport, withAudit, type AuditRecord } from '../src/audit/index.js';
import { tempDir } from './audit-helpers.js';

const token = createToken('audit-secrets'); // fails with how to install SoftHSM when it is missing
const PASS_ENV = 'OLOCUS_AUDIT_SECRET_PASSPHRASE';
const passphrase = `pass-${randomBytes(10).toString('hex')}`;
const wrongPassphrase = `wrong-${randomBytes(10).toString('hex')}`;
const wrongPin = randomBytes(8).toString('hex');
const payload = `DISTINCTIVE-PAYLOAD-${randomBytes(8).toString('hex')}`;
const closers: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
});

describe('no secret reaches the audit log', () => {
  it('PKCS#11 with a PIN and a passphrase-protected software store, failed logins included', async () => {
    const dir = tempDir('secrets');
    const dbPath = join(dir, 'audit.db');
    // a wrong PIN first (login is per process and token: once logged in, C_Login is not asked again);
    // it fails once, never retried, and is recorded as auth.failure below
    const bad = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, sessionPool: { minSessions: 1, maxSessions: 1 } }, { pin: wrongPin });
    const loginError = await bad.initialize().catch((e) => e);
    await bad.close().catch(() => undefined);
    expect(loginError).toBeInstanceOf(HsmError);
    expect(['LoginFailed', 'PinLocked']).toContain(loginError.code);
    
    const p11 = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, sessionPool: { minSessions: 1, maxSessions: 4 } }, { pin: token.pin });
    await p11.initialize();
    closers.push(() => p11.close());
    // checkpoints signed on the token with the raw backend; key operations audited through the wrapper
    const signer = checkpointSignerFromBackend(p11, 'audit-checkpoints');
    const log = await openAuditLog({ storage: { kind: 'sqlite', path: dbPath }, logName: 'secrets', checkpoint: { signer, everyRecords: 5, intervalMs: 0 } });
    closers.push(() => log.close());
    const auditor = auditorFor(log, { actor: 'alice@example' });
    await auditor.recordFailure({ backend: 'pkcs11', operation: 'initialize' }, loginError);
    const audited = withAudit(p11, log, { actor: 'alice@example' });
    const data = Buffer.from(payload);
    const key = await audited.generateKeyPair({ id: 'p11-signing', algorithm: 'ECDSA_P256' });
    const sig = await audited.sign(key, data);
    expect(await audited.verify(key, data, sig)).toBe(true);
    expect(verifyLocally('ECDSA_P256', (await audited.getPublicKey(key)).spki, data, sig)).toBe(true);

    // software backend behind HsmManager, passphrase from the environment
    const swDir = tempDir('secrets-sw');
    process.env[PASS_ENV] = passphrase;
    const config = { backend: { type: 'software', options: { directory: swDir, passphrase: { env: PASS_ENV }, scrypt: { N: 2 ** 15, r: 8, p: 1 } } } };
    const m = new HsmManager(config, { auditor });
    await m.initialize();
    closers.push(() => m.close());
    const swKey = await m.generateKey({ id: 'sw-signing', algorithm: 'Ed25519' });
    expect(await m.verify(swKey, data, await m.sign(swKey, data))).toBe(true);
    // a wrong passphrase on the same store
    process.env[PASS_ENV] = wrongPassphrase;
    const m2 = new HsmManager(config, { auditor });
    const passError = await m2.initialize().catch((e) => e);
    expect(passError).toMatchObject({ code: 'WrongPassphrase' });
    await auditor.recordFailure({ backend: 'software', operation: 'initialize' }, passError);
    // a credential failure during an operation is recorded twice: as the operation and as auth.failure
    await auditor.record({ operation: 'sign', backend: 'pkcs11', keyId: 'p11-signing', data, outcome: 'failure', error: new HsmError('LoginFailed', 'C_Login: CKR_PIN_INCORRECT'), latencyMs: 1 });
    delete process.env[PASS_ENV];

    const records: AuditRecord[] = [];
    for await (const r of log.iterate()) records.push(r);
    const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');
    expect(records.filter((r) => r.type === 'key.sign' && r.outcome === 'success').map((r) => r.dataDigest)).toEqual([digest, digest]);
    expect(records.filter((r) => r.type === 'auth.failure').map((r) => [r.backend, r.errorCode])).toEqual([
      ['pkcs11', loginError.code],
      ['software', 'WrongPassphrase'],
      ['pkcs11', 'LoginFailed'],
    ]);
    expect(records.find((r) => r.type === 'key.verify')).toMatchObject({ details: { valid: true } });
    expect(records.every((r) => r.actor.length > 0 && r.origin.length > 0)).toBe(true);

    const secrets = { pin: token.pin, soPin: token.soPin, wrongPin, passphrase, wrongPassphrase, payload };
    const scan = (what: string, bytes: Buffer) => {
      for (const [name, value] of Object.entries(secrets)) expect(bytes.includes(Buffer.from(value)), `${name} found in ${what}`).toBe(false);
    };
    const exportPath = join(dir, 'export.jsonl');
    await log.checkpoint(); // signed on the token; automatic ones run in the background
    await log.export(exportPath);
    const files = [dbPath, `${dbPath}-wal`].filter(existsSync);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) scan(f, readFileSync(f));
    scan('export', readFileSync(exportPath));
    expect(readFileSync(exportPath, 'utf8')).toContain(digest);
    await log.close();
    for (const f of [dbPath, `${dbPath}-wal`].filter(existsSync)) scan(f, readFileSync(f));
    const v = await verifyExport(exportPath, { publicKey: await signer.publicKey() });
    expect(v).toMatchObject({ ok: true });
    expect(v.checkpoints).toBeGreaterThan(0);
  });
});
