import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import { checkpointSignerFromBackend, openAuditLog, recordHash, type AuditLog, type AuditRecord, type CheckpointSigner } from '../src/audit/index.js';
import { storageFor, tempDir, type Raw, type StorageKind } from './audit-helpers.js';

let backend: SoftwareBackend;
let signer: CheckpointSigner;

beforeAll(async () => {
  backend = new SoftwareBackend({ directory: tempDir('tamper-keys'), scrypt: { N: 2 ** 15, r: 8, p: 1 } }, { passphrase: randomBytes(12).toString('hex') });
  await backend.initialize();
  signer = checkpointSignerFromBackend(backend, 'audit-checkpoints');
});
afterAll(() => backend?.close());

/** A log of 20 records (1 = audit.start) with signed checkpoints at 10 and 20. */
async function seeded(kind: StorageKind, tag: string): Promise<{ log: AuditLog; raw: Raw; records: AuditRecord[] }> {
  const { storage, raw } = await storageFor(kind, tag);
  const log = await openAuditLog({ storage, logName: 'tamper', origin: 'node-t', checkpoint: { signer, everyRecords: 1000, intervalMs: 0 } });
  for (let i = 2; i <= 20; i++) {
    await log.append({ type: i % 3 ? 'key.sign' : 'key.verify', actor: `user${i}`, outcome: 'success', keyId: 'app', latencyMs: i / 3, details: { n: i } });
    if (i === 10) await log.checkpoint();
  }
  await log.checkpoint();
  const records: AuditRecord[] = [];
  for await (const r of log.iterate()) records.push(r);
  return { log, raw: raw(), records };
}

const COLS = 'log_name, seq, time, type, actor, outcome, origin, backend, key_id, base_key_id, key_version, algorithm, latency_ms, data_digest, error_code, reason, details, prev_hash, hash';

describe.each(['sqlite', 'postgres'] as const)('tamper evidence on %s', (kind) => {
  it('a clean log verifies, with both checkpoint signatures', async () => {
    const { log, raw } = await seeded(kind, 'clean');
    const v = await log.verify();
    expect(v).toMatchObject({ ok: true, records: 20, checkpoints: 2 });
    expect(v.message).toMatch(/signatures valid/);
    expect((await log.checkpoints()).map((c) => c.size)).toEqual([10, 20]);
    await raw.close();
    await log.close();
  });

  it('detects an edited field', async () => {
    const { log, raw } = await seeded(kind, 'edit');
    await raw.exec("update audit_records set actor = 'mallory' where seq = 7");
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 7, problem: 'edited' });
    await raw.close();
    await log.close();
  });

  it('detects an inserted record (well-formed, chained, later records renumbered)', async () => {
    const { log, raw, records } = await seeded(kind, 'insert');
    await raw.exec('update audit_records set seq = -seq - 1 where seq >= 8');
    await raw.exec('update audit_records set seq = -seq where seq < 0');
    const forged = { ...records[7]!, seq: 8, actor: 'mallory', prevHash: records[6]!.hash, details: { n: 999 } };
    forged.hash = recordHash(forged);
    await raw.exec(`insert into audit_records (${COLS}) values (?, ?, ?, ?, ?, ?, ?, null, ?, null, null, null, ?, null, null, null, ?, ?, ?)`, [
      'tamper', 8, forged.time, forged.type, forged.actor, forged.outcome, forged.origin, forged.keyId, forged.latencyMs, JSON.stringify(forged.details), forged.prevHash, forged.hash,
    ]);
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 8, problem: 'inserted' });
    await raw.close();
    await log.close();
  });

  it('detects text moved between the details column and its neighbours (same canonical bytes)', async () => {
    const { log, raw } = await seeded(kind, 'splice');
    // record 9 has details {"n":9} and keyId "app": move keyId into the details text
    await raw.exec(`update audit_records set details = '{"n":9},"keyId":"app"', key_id = null where seq = 9`);
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 9, problem: 'edited' });
    await expect((async () => {
      for await (const _ of log.iterate()) void _;
    })()).rejects.toMatchObject({ code: 'StorageCorrupted', details: { auditCode: 'AuditRecordCorrupted' } });
    await raw.close();
    await log.close();
  });

  it('detects a deleted record', async () => {
    const { log, raw } = await seeded(kind, 'delete');
    await raw.exec('delete from audit_records where seq = 5');
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 5, problem: 'deleted' });
    await raw.close();
    await log.close();
  });

  it('detects a deleted record when the rest were renumbered to close the gap', async () => {
    const { log, raw } = await seeded(kind, 'delete2');
    await raw.exec('delete from audit_records where seq = 5');
    await raw.exec('update audit_records set seq = -seq + 1 where seq > 5');
    await raw.exec('update audit_records set seq = -seq where seq < 0');
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 5, problem: 'deleted' });
    await raw.close();
    await log.close();
  });

  it('detects two swapped records', async () => {
    const { log, raw } = await seeded(kind, 'swap');
    await raw.exec('update audit_records set seq = 1000 where seq = 12');
    await raw.exec('update audit_records set seq = 12 where seq = 13');
    await raw.exec('update audit_records set seq = 13 where seq = 1000');
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 12, problem: 'reordered' });
    await raw.close();
    await log.close();
  });

  it('detects a truncated tail after a checkpoint', async () => {
    const { log, raw } = await seeded(kind, 'trunc');
    await raw.exec('delete from audit_records where seq > 16');
    // the attacker also rewinds the head row so nothing but the checkpoint remembers
    await raw.exec("update audit_head set seq = 16, hash = (select hash from audit_records where seq = 16) where log_name = 'tamper'");
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 17, problem: 'truncated' });
    await raw.close();
    await log.close();
  });

  it('detects a forged checkpoint signature', async () => {
    const { log, raw } = await seeded(kind, 'forge');
    const other = await backend.generateKeyPair({ id: `forger-${kind}`, algorithm: 'ECDSA_P256' });
    const body = Buffer.from(`tamper\n20\n${Buffer.from((await log.head()).hash, 'hex').toString('base64')}\n`);
    const forged = Buffer.from(await backend.sign(other, body)).toString('base64');
    await raw.exec('update audit_checkpoints set signature = ? where size = 20', [forged]);
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 20, problem: 'bad-checkpoint-signature' });
    await raw.close();
    await log.close();
  });

  it('detects a shrunk checkpoint', async () => {
    const { log, raw } = await seeded(kind, 'shrink');
    await raw.exec('update audit_checkpoints set size = 5 where size = 20');
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 5, problem: 'checkpoint-shrank' });
    await raw.close();
    await log.close();
  });
});

describe.each(['sqlite', 'postgres'] as const)('a large log on %s (verified in parallel threads)', (kind) => {
  it('verifies clean, and names an edit or a deletion at a range boundary like the sequential walk', async () => {
    const { storage, raw: openRaw } = await storageFor(kind, 'large');
    const log = await openAuditLog({ storage, logName: 'large', checkpoint: { signer, everyRecords: 5000, intervalMs: 0 } });
    for (let i = 0; i < 30; i++) {
      await Promise.all(Array.from({ length: 1000 }, (_, j) => log.append({ type: 'key.sign', actor: `u${j % 13}`, outcome: 'success', keyId: 'k', ...(j % 3 ? { details: { j } } : {}) })));
    }
    await log.checkpoint();
    const size = await log.size();
    expect(size).toBe(30_001);
    expect(await log.verify()).toMatchObject({ ok: true, records: size });
    const raw = openRaw();
    await raw.exec("update audit_records set outcome = 'failure' where seq = 17000");
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: 17000, problem: 'edited' });
    await raw.exec("update audit_records set outcome = 'success' where seq = 17000");
    expect(await log.verify()).toMatchObject({ ok: true });
    const boundary = Math.floor(size / 2) + 1; // first record of the second range with 2 or 4 threads
    await raw.exec('delete from audit_records where seq = ?', [boundary]);
    expect(await log.verify()).toMatchObject({ ok: false, firstBadSeq: boundary, problem: 'deleted' });
    await raw.close();
    await log.close();
  });
});
