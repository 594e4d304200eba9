import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import { checkpointSignerFromBackend, openAuditLog, verifyExport, type AuditRecord, type CheckpointSigner } from '../src/audit/index.js';
import { storageFor, tempDir } from './audit-helpers.js';

let backend: SoftwareBackend;
let signer: CheckpointSigner;
beforeAll(async () => {
  backend = new SoftwareBackend({ directory: tempDir('ops-keys'), scrypt: { N: 2 ** 15, r: 8, p: 1 } }, { passphrase: randomBytes(12).toString('hex') });
  await backend.initialize();
  signer = checkpointSignerFromBackend(backend, 'audit-cp');
});
afterAll(() => backend?.close());

const DAY = 86_400_000;

/** Polls until `predicate` holds; the deadline bounds a hung test, it is not a timing assertion. */
async function until(what: string, predicate: () => Promise<boolean>, deadlineMs = 10_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.each(['sqlite', 'sqlite-thread', 'postgres'] as const)('group commit on %s', (kind) => {
  it('writes many concurrent appends in fewer transactions; every resolved record is durable', async () => {
    const { storage } = await storageFor(kind, 'gc');
    const log = await openAuditLog({ storage, logName: 'gc', groupCommit: { maxBatch: 200, maxDelayMs: 2 } });
    const before = log.stats();
    const n = 1000;
    const records = await Promise.all(Array.from({ length: n }, (_, i) => log.append({ type: 'key.sign', actor: `c${i % 7}`, outcome: 'success', details: { i } })));
    const s = log.stats();
    expect(s.appends - before.appends).toBe(n);
    expect(s.transactions - before.transactions).toBeLessThan(n / 10);
    expect(s.largestBatch).toBeLessThanOrEqual(200);
    expect(new Set(records.map((r) => r.seq)).size).toBe(n);
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 2)); // in append order
    // a second, independent connection sees them all (durable, not just cached)
    const other = await openAuditLog({ storage, logName: 'gc' });
    expect(await other.count()).toBe(n + 2); // + the two audit.start records
    await other.close();
    await log.close();
    const reopened = await openAuditLog({ storage, logName: 'gc' });
    expect(await reopened.verify()).toMatchObject({ ok: true, records: n + 5 });
    await reopened.close();
  });
});

describe('checkpoints', () => {
  it('are written every N records and on an interval, signed, and never shrink', async () => {
    const { storage } = await storageFor('sqlite', 'cp');
    const log = await openAuditLog({ storage, logName: 'cp', checkpoint: { everyRecords: 10, intervalMs: 0, signer } });
    expect(log.settings).toMatchObject({ checkpointsSigned: true, checkpointKeyId: 'audit-cp', checkpointBackend: 'software' });
    for (let i = 0; i < 25; i++) await log.append({ type: 'key.sign', actor: 'a', outcome: 'success' });
    await until('two automatic checkpoints', async () => (await log.checkpoints()).length >= 2);
    const sizes = (await log.checkpoints()).map((c) => c.size);
    expect(sizes.length).toBeGreaterThanOrEqual(2);
    expect(sizes[0]).toBeGreaterThanOrEqual(10);
    expect(sizes.every((s, i) => i === 0 || s > sizes[i - 1]!)).toBe(true);
    const onDemand = await log.checkpoint();
    expect(onDemand).toMatchObject({ size: 26, keyId: 'audit-cp', algorithm: 'ECDSA_P256' });
    expect(await log.checkpoint()).toEqual(onDemand); // nothing new: no second checkpoint
    await log.close();

    const timed = await openAuditLog({ storage: { kind: 'sqlite', path: join(tempDir('cp2'), 'a.db') }, logName: 'timed', checkpoint: { everyRecords: 1_000_000, intervalMs: 100 } });
    expect(timed.settings.checkpointsSigned).toBe(false);
    await timed.append({ type: 'key.sign', actor: 'a', outcome: 'success' });
    await until('a timed checkpoint', async () => (await timed.checkpoints()).length > 0);
    await new Promise((r) => setTimeout(r, 250)); // more intervals pass: nothing new, no second checkpoint
    const cps = await timed.checkpoints();
    expect(cps).toHaveLength(1);
    expect(cps[0]).toMatchObject({ size: 2, signature: '', keyId: '' });
    await timed.close();
  });
});

describe('export and verifyExport', () => {
  it('round-trips, and an edited line is detected', async () => {
    const { storage } = await storageFor('sqlite', 'exp');
    const log = await openAuditLog({ storage, logName: 'exp', checkpoint: { everyRecords: 5, intervalMs: 0, signer } });
    for (let i = 0; i < 12; i++) await log.append({ type: 'key.sign', actor: 'a', outcome: 'success', keyId: 'k', details: { i, note: 'ünïcode ✓' } });
    await log.checkpoint();
    const path = join(tempDir('exp'), 'audit.jsonl');
    const summary = await log.export(path);
    expect(summary).toMatchObject({ records: 13, firstSeq: 1, lastSeq: 13 });
    const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ kind: 'header', logName: 'exp' });
    expect(lines.filter((l) => l.kind === 'record')).toHaveLength(13);
    expect(lines.filter((l) => l.kind === 'checkpoint').length).toBeGreaterThanOrEqual(2);
    const publicKey = await signer.publicKey();
    expect(await verifyExport(path, { publicKey })).toMatchObject({ ok: true, records: 13 });

    // a stream destination, a time range
    const sink = new PassThrough();
    const chunks: Buffer[] = [];
    sink.on('data', (c) => chunks.push(c));
    await log.export(sink, { from: new Date(0), to: new Date(Date.now() + DAY) });
    expect(Buffer.concat(chunks).toString('utf8').split('\n').filter((l) => l.includes('"kind":"record"'))).toHaveLength(13);

    const text = readFileSync(path, 'utf8').split('\n');
    const edited = text.map((l) => (l.includes('"seq":6,') ? l.replace('"actor":"a"', '"actor":"b"') : l));
    const editedPath = join(tempDir('exp2'), 'edited.jsonl');
    writeFileSync(editedPath, edited.join('\n'));
    expect(await verifyExport(editedPath, { publicKey })).toMatchObject({ ok: false, firstBadSeq: 6, problem: 'edited' });

    const cut = text.filter((l) => !/"seq":1[23],/.test(l));
    writeFileSync(editedPath, cut.join('\n'));
    expect(await verifyExport(editedPath, { publicKey })).toMatchObject({ ok: false, firstBadSeq: 12, problem: 'truncated' });

    const forged = text.map((l) => (l.startsWith('{"kind":"checkpoint"') ? l.replace(/"signature":"[^"]+"/, `"signature":"${Buffer.alloc(64, 1).toString('base64')}"`) : l));
    writeFileSync(editedPath, forged.join('\n'));
    expect(await verifyExport(editedPath, { publicKey })).toMatchObject({ ok: false, problem: 'bad-checkpoint-signature' });
    await log.close();
  });
});

describe.each(['sqlite', 'postgres'] as const)('prune on %s', (kind) => {
  it('refuses inside retention, deletes only checkpointed old records, keeps the chain verifiable', async () => {
    const { storage } = await storageFor(kind, 'prune');
    let now = Date.parse('2026-06-01T00:00:00.000Z');
    const clock = () => new Date(now);
    const log = await openAuditLog({ storage, logName: 'prune', clock, retention: { days: 30, hotDays: 7 }, checkpoint: { everyRecords: 1_000_000, intervalMs: 0, signer } });
    // records 2..11 at day 0, checkpoint at 6 and 11
    for (let i = 2; i <= 11; i++) {
      await log.append({ type: 'key.sign', actor: 'a', outcome: 'success' });
      if (i === 6) await log.checkpoint();
    }
    await log.checkpoint();
    now += 40 * DAY;
    for (let i = 0; i < 5; i++) await log.append({ type: 'key.sign', actor: 'a', outcome: 'success' }); // 12..16, recent
    await expect(log.prune({ before: new Date(now - 10 * DAY) })).rejects.toMatchObject({ code: 'PolicyViolation', details: { auditCode: 'AuditRetention' } });
    expect(await log.count()).toBe(16);

    const result = await log.prune({ before: new Date(now - 35 * DAY) });
    expect(result).toEqual({ removed: 11, anchorSeq: 11 });
    expect(await log.count()).toBe(6); // 12..16 + the audit.prune record
    const oldest = await log.oldestRecordTime();
    expect(oldest?.getTime()).toBe(Date.parse('2026-07-11T00:00:00.000Z'));
    const last: AuditRecord[] = [];
    for await (const r of log.tail({ limit: 1 })) last.push(r);
    expect(last[0]).toMatchObject({ seq: 17, type: 'audit.prune', details: { throughSeq: 11, removed: 11 } });
    expect(await log.verify()).toMatchObject({ ok: true, records: 6 });
    await log.close();
  });
});

describe('iterate and tail', () => {
  it('filters by type, key, time and pages; tail follows until aborted', async () => {
    const { storage } = await storageFor('sqlite', 'iter');
    const log = await openAuditLog({ storage, logName: 'iter' });
    for (let i = 0; i < 2500; i++) await log.append({ type: i % 2 ? 'key.sign' : 'key.verify', actor: 'a', outcome: 'success', keyId: i % 5 === 0 ? 'five' : 'other', baseKeyId: 'b', keyVersion: 1, time: new Date(Date.UTC(2026, 0, 1) + i * 1000) });
    const count = async (q: Parameters<typeof log.iterate>[0]) => {
      let n = 0;
      for await (const _ of log.iterate(q)) n++;
      return n;
    };
    expect(await count({ types: ['key.sign'] })).toBe(1250);
    expect(await count({ keyId: 'five', types: ['key.verify'] })).toBe(250);
    expect(await count({ from: new Date(Date.UTC(2026, 0, 1) + 100_000), to: new Date(Date.UTC(2026, 0, 1) + 200_000) })).toBe(100);
    expect(await count({ afterSeq: 2000, limit: 100 })).toBe(100);
    const controller = new AbortController();
    const seen: number[] = [];
    const following = (async () => {
      for await (const r of log.tail({ limit: 2, follow: true, signal: controller.signal, pollMs: 20 })) {
        seen.push(r.seq);
        if (seen.length === 4) controller.abort();
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    await log.append({ type: 'audit.access', actor: 'a', outcome: 'success' });
    await log.append({ type: 'audit.access', actor: 'a', outcome: 'success' });
    await following;
    expect(seen).toEqual([2500, 2501, 2502, 2503]);
    await log.close();
  });
});
