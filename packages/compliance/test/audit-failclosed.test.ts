import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { HsmManager, verifyLocally } from '@olocus/hsm-core';
import { auditorFor, openAuditLog, type AuditLog } from '../src/audit/index.js';
import { storageFor, tempDir, type Raw, type StorageKind } from './audit-helpers.js';

const PASS_ENV = 'OLOCUS_AUDIT_TEST_PASSPHRASE';
process.env[PASS_ENV] = randomBytes(12).toString('hex');

const managers: HsmManager[] = [];
afterAll(async () => {
  for (const m of managers) await m.close().catch(() => undefined);
});

async function manager(auditor: ReturnType<typeof auditorFor>): Promise<HsmManager> {
  const m = new HsmManager(
    { backend: { type: 'software', options: { directory: tempDir('fc-keys'), passphrase: { env: PASS_ENV }, scrypt: { N: 2 ** 15, r: 8, p: 1 } } } },
    { auditor },
  );
  await m.initialize();
  managers.push(m);
  return m;
}

/** Makes every insert into the audit table fail, as a broken store would. */
async function breakStore(kind: StorageKind, raw: Raw): Promise<void> {
  if (kind !== 'postgres') {
    await raw.exec("create trigger audit_broken before insert on audit_records begin select raise(abort, 'injected: store refuses writes'); end");
  } else {
    await raw.exec("create function audit_broken() returns trigger language plpgsql as $$ begin raise exception 'injected: store refuses writes'; end $$");
    await raw.exec('create trigger audit_broken before insert on audit_records for each row execute function audit_broken()');
  }
}

describe.each(['sqlite', 'sqlite-thread', 'postgres'] as const)('failClosed through HsmManager on %s', (kind) => {
  it('withholds the signature when its record cannot be written; with failClosed off signs and alerts', async () => {
    const { storage, raw: openRaw } = await storageFor(kind, 'fc');
    const failures: unknown[] = [];
    const log: AuditLog = await openAuditLog({ storage, logName: 'fc', onFailure: (e) => failures.push(e) });
    const raw = openRaw();
    const closed = auditorFor(log, { actor: 'svc-payments' });
    const m = await manager(closed);
    const key = await m.generateKey({ id: 'pay', algorithm: 'ECDSA_P256' });
    const pub = await m.getPublicKey(key);
    const data = Buffer.from('invoice 42');
    expect(verifyLocally('ECDSA_P256', pub.spki, data, await m.sign(key, data))).toBe(true);
    const before = await log.size();

    await breakStore(kind, raw);
    const err = await m.sign(key, data).catch((e) => e);
    expect(err).toMatchObject({
      name: 'HsmError',
      code: 'PolicyViolation',
      details: { auditCode: 'AuditUnavailable' },
    });
    // the refusal says why (the store's error, naming the store), not only that it refused
    expect(err.message).toMatch(/^audit record could not be written \(audit log .+\); operation refused \(failClosed\)$/);
    // the log's own error: a write failure with a stable auditCode, and the alert hook saw it
    expect(err.cause).toMatchObject({ name: 'HsmError', details: { auditCode: 'AuditWriteFailed' } });
    expect(['Internal', 'DeviceUnavailable']).toContain(err.cause.code);
    expect(failures.length).toBeGreaterThan(0);
    expect(log.stats().failures).toBeGreaterThan(0);

    // failClosed off: the signature comes back (and is valid), onAuditFailure is told
    const tolerated: unknown[] = [];
    const open = auditorFor(log, { actor: 'svc-payments', failClosed: false, onAuditFailure: (e) => tolerated.push(e) });
    const m2 = await manager(open);
    const k2 = await m2.generateKey({ id: 'pay2', algorithm: 'ECDSA_P256' }); // its record fails too: tolerated
    const sig = await m2.sign(k2, data);
    expect(verifyLocally('ECDSA_P256', (await m2.getPublicKey(k2)).spki, data, sig)).toBe(true);
    expect(tolerated.length).toBeGreaterThanOrEqual(2);
    expect(tolerated[0]).toMatchObject({ details: { auditCode: 'AuditWriteFailed' } });

    // the store recovers: records are written again and the chain never lost a link
    await raw.exec(kind !== 'postgres' ? 'drop trigger audit_broken' : 'drop trigger audit_broken on audit_records');
    await m.sign(key, data);
    expect(await log.size()).toBe(before + 1);
    expect(await log.verify()).toMatchObject({ ok: true });
    await raw.close();
    await log.close();
  });
});

describe.each([false, true])('failClosed when another process holds the SQLite write lock too long (writerThread %s)', (writerThread) => {
  it('refuses the signature after the busy timeout, then signs again once the lock is released', async () => {
    const { storage } = await storageFor('sqlite', 'busy');
    const path = (storage as { path: string }).path;
    const log = await openAuditLog({ storage: { kind: 'sqlite', path, busyTimeoutMs: 200, writerThread }, logName: 'busy' });
    const m = await manager(auditorFor(log, { actor: () => 'svc' }));
    const key = await m.generateKey({ id: 'k', algorithm: 'Ed25519' });
    const { default: Database } = await import('better-sqlite3');
    const blocker = new Database(path);
    blocker.exec('begin immediate');
    const started = Date.now();
    const err = await m.sign(key, Buffer.from('x')).catch((e) => e);
    // a busy store is a retryable storage fault: the refusal keeps its code and says so
    expect(err).toMatchObject({ code: 'DeviceUnavailable', retryable: true, details: { auditCode: 'AuditUnavailable', storageFault: 'busy' } });
    expect(err.message).toContain('busy');
    expect(err.cause).toMatchObject({ code: 'DeviceUnavailable', details: { auditCode: 'AuditWriteFailed', errorCode: 'SQLITE_BUSY' } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    // opening another log while the lock is held fails the same way (no raw driver error)
    await expect(openAuditLog({ storage: { kind: 'sqlite', path, busyTimeoutMs: 100 }, logName: 'other' })).rejects.toMatchObject({ code: 'DeviceUnavailable', details: { auditCode: 'AuditWriteFailed' } });
    blocker.exec('rollback');
    blocker.close();
    expect(await m.sign(key, Buffer.from('x'))).toBeInstanceOf(Uint8Array);
    expect(await log.verify()).toMatchObject({ ok: true });
    await log.close();
  });
});
