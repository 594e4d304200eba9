import { describe, expect, it } from 'vitest';
import canonicalizeModule from 'canonicalize';
import { existsSync } from 'node:fs';
import { canonicalRecord, openAuditLog, recordHash, ZERO_HASH, type AuditRecord } from '../src/audit/index.js';
import { storageFor, tempDir } from './audit-helpers.js';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';

// CommonJS default export: typed as the module under NodeNext
const canonicalize = ((canonicalizeModule as unknown as { default?: unknown }).default ?? canonicalizeModule) as (v: unknown) => string;

describe('canonical form', () => {
  it('is byte-identical to canonicalize (RFC 8785) for varied records', () => {
    const samples: Omit<AuditRecord, 'hash'>[] = [
      { seq: 1, time: '2026-01-01T00:00:00.000Z', type: 'key.sign', actor: 'alice', outcome: 'success', origin: 'n1', prevHash: ZERO_HASH },
      {
        seq: 9007199254740991, time: '2026-01-01T00:00:00.123Z', type: 'auth.failure', actor: 'Ünïcødé 👩‍💻 \u2028 "q" \\ \t\n', outcome: 'failure', origin: 'höst:1',
        backend: 'pkcs11', keyId: 'k€y.v2', baseKeyId: 'k€y', keyVersion: 2, algorithm: 'ECDSA_P256', latencyMs: 0.1 + 0.2, dataDigest: 'sha256:' + 'a'.repeat(64),
        errorCode: 'LoginFailed', reason: 'lone surrogate \ud800 and emoji 😀',
        details: { z: 1e21, a: -0, B: 1e-7, 'é': null, '\u20ac': true, '\ud83d\ude00k': 'v', n: 123.456, big: 2 ** 53, neg: -1.5e-300, s: '\u0000\u001f' },
        prevHash: 'f'.repeat(64),
      },
      { seq: 42, time: '2026-06-30T23:59:59.999Z', type: 'key.verify', actor: 'svc', outcome: 'success', origin: 'o', latencyMs: 12, details: {}, prevHash: '0'.repeat(63) + '1' },
    ];
    for (let i = 0; i < 200; i++) {
      samples.push({
        seq: i + 1, time: new Date(1_700_000_000_000 + i * 1234567).toISOString(), type: 'key.sign', actor: `u${i}\u00e9${String.fromCharCode(0x4e00 + i)}`, outcome: i % 2 ? 'success' : 'failure', origin: 'x',
        latencyMs: Math.random() * 10 ** (i % 12), keyVersion: i, details: { [`k${i}`]: i / 7, ['K' + i]: `${i}`, ['_' + i]: i % 3 === 0 }, prevHash: ZERO_HASH,
      });
    }
    for (const s of samples) expect(canonicalRecord(s)).toBe(canonicalize(s));
  });
});

describe.each(['sqlite', 'postgres'] as const)('audit log on %s', (kind) => {
  it('chains records, survives a reopen, records start/stop and verifies', async () => {
    const { storage } = await storageFor(kind, 'basic');
    let log = await openAuditLog({ storage, logName: 'basic', origin: 'node-a' });
    const r1 = await log.append({ type: 'key.sign', actor: 'alice', outcome: 'success', keyId: 'k1', dataDigest: 'sha256:' + 'ab'.repeat(32) });
    expect(r1.seq).toBe(2); // 1 is audit.start
    expect(r1.hash).toBe(recordHash(r1));
    await log.close();
    log = await openAuditLog({ storage, logName: 'basic', origin: 'node-a' });
    const all = [];
    for await (const r of log.iterate()) all.push(r);
    expect(all.map((r) => r.type)).toEqual(['audit.start', 'key.sign', 'audit.stop', 'audit.start']);
    expect(all[0]!.prevHash).toBe(ZERO_HASH);
    for (let i = 1; i < all.length; i++) expect(all[i]!.prevHash).toBe(all[i - 1]!.hash);
    const v = await log.verify();
    expect(v).toMatchObject({ ok: true, records: 4, checkpoints: 1 });
    expect(log.settings).toMatchObject({ retentionDays: 365, hotDays: 90, failClosed: true, checkpointsSigned: false });
    await log.close();
  });

  it('refuses secret-looking detail keys without echoing the value, and bad input', async () => {
    const { storage } = await storageFor(kind, 'secret');
    const log = await openAuditLog({ storage });
    for (const key of ['pin', 'userPIN', 'passphrase', 'clientSecret', 'privateKey', 'password', 'credentials', 'masterKey', 'master_key']) {
      const err = await log.append({ type: 'config.change', actor: 'a', outcome: 'success', details: { [key]: 'hunter2-value' } }).catch((e) => e);
      expect(err).toMatchObject({ code: 'InvalidArgument', details: { field: `details.${key}` } });
      expect(err.message).toContain(key);
      expect(err.message).not.toContain('hunter2-value');
    }
    await expect(log.append({ type: 'nope' as never, actor: 'a', outcome: 'success' })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'type' } });
    await expect(log.append({ type: 'key.sign', actor: ' ', outcome: 'success' })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'actor' } });
    await expect(log.append({ type: 'key.sign', actor: 'a', outcome: 'success', dataDigest: 'raw data' })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'dataDigest' } });
    await expect(log.append({ type: 'key.sign', actor: 'a\u0000b', outcome: 'success' })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'actor' } });
    await expect(log.append({ type: 'key.sign', actor: 'a', outcome: 'success', reason: 'lone \ud800' })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'reason' } });
    expect(await log.size()).toBe(1);
    await log.close();
  });
});

describe('options', () => {
  it('names the bad field', async () => {
    const path = join(tempDir('opts'), 'a.db');
    await expect(openAuditLog({ storage: { kind: 'sqlite', path }, retention: { days: 30, hotDays: 90 } })).rejects.toMatchObject({ code: 'InvalidConfiguration', details: { field: 'audit.retention.hotDays' } });
    await expect(openAuditLog({ storage: { kind: 'sqlite', path }, retention: { days: 0 } })).rejects.toMatchObject({ code: 'InvalidConfiguration', details: { field: 'audit.retention.days' } });
    await expect(openAuditLog({ storage: { kind: 'nope' } as never })).rejects.toMatchObject({ code: 'InvalidConfiguration', details: { field: 'audit.storage.kind' } });
    expect(existsSync(path)).toBe(false);
  });
});

describe('SQLite schema check on open (kysely is loaded only when a migration is due)', () => {
  const migrationRows = (path: string) => {
    const db = new BetterSqlite3(path, { readonly: true });
    try {
      return (db.prepare('select name from audit_kysely_migration order by name').pluck().all() as string[]);
    } finally {
      db.close();
    }
  };

  it('applies a migration that an older version of the log lacks', async () => {
    const storage = { kind: 'sqlite' as const, path: join(tempDir('schema-old'), 'audit.db') };
    await (await openAuditLog({ storage })).close();
    expect(migrationRows(storage.path)).toEqual(['0001_audit', '0002_checkpoint_keys']);
    // the log as the version before 0002 left it
    const db = new BetterSqlite3(storage.path);
    db.exec("drop table audit_checkpoint_keys; delete from audit_kysely_migration where name = '0002_checkpoint_keys'");
    db.close();
    const log = await openAuditLog({ storage });
    expect(migrationRows(storage.path)).toEqual(['0001_audit', '0002_checkpoint_keys']);
    const check = new BetterSqlite3(storage.path, { readonly: true });
    expect(check.prepare("select name from sqlite_master where name = 'audit_checkpoint_keys'").pluck().get()).toBe('audit_checkpoint_keys');
    check.close();
    expect(await log.verify()).toMatchObject({ ok: true });
    await log.close();
  });

  it('refuses a log migrated by a newer version instead of writing to a schema it does not know', async () => {
    const storage = { kind: 'sqlite' as const, path: join(tempDir('schema-new'), 'audit.db') };
    await (await openAuditLog({ storage })).close();
    const db = new BetterSqlite3(storage.path);
    db.prepare('insert into audit_kysely_migration (name, timestamp) values (?, ?)').run('0003_from_the_future', new Date().toISOString());
    db.close();
    const error = await openAuditLog({ storage }).then(
      async (log) => {
        await log.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ message: expect.stringContaining('0003_from_the_future') });
  });
});
