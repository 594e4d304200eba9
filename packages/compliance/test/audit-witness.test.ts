import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import { checkpointSignerFromBackend, openAuditLog, recordHash, type AuditLog, type AuditRecord, type CheckpointSigner, type WitnessConfig, type WitnessEntry } from '../src/audit/index.js';
import { PG_URL, pgSchema, storageFor, tempDir, type Raw, type StorageKind } from './audit-helpers.js';

/**
 * Issue 18 items 6 and 11: rollback and wipe of the audit log. Without a witness a log whose tail
 * was deleted together with its checkpoints still verifies; with one, `verify` names the rollback,
 * the wipe or the fork and the witnesses it consulted, and an emptied log is not opened as new.
 */

let backend: SoftwareBackend;
let signer: CheckpointSigner;

beforeAll(async () => {
  backend = new SoftwareBackend({ directory: tempDir('witness-keys'), scrypt: { N: 2 ** 15, r: 8, p: 1 } }, { passphrase: randomBytes(12).toString('hex') });
  await backend.initialize();
  signer = checkpointSignerFromBackend(backend, 'audit-checkpoints');
});
afterAll(() => backend?.close());

/** A log of 20 records with checkpoints at 10 and 20, each sent to `witnesses`. */
async function seeded(kind: StorageKind, tag: string, witnesses: WitnessConfig[]): Promise<{ log: AuditLog; raw: Raw; storage: Awaited<ReturnType<typeof storageFor>>['storage'] }> {
  const { storage, raw } = await storageFor(kind, tag);
  const log = await openAuditLog({ storage, logName: 'wit', checkpoint: { signer, everyRecords: 1000, intervalMs: 0 }, witnesses });
  for (let i = 2; i <= 20; i++) {
    await log.append({ type: 'key.sign', actor: `user${i}`, outcome: 'success', keyId: 'app', details: { n: i } });
    if (i === 10) await log.checkpoint();
  }
  await log.checkpoint();
  return { log, raw: raw(), storage };
}

/** What an attacker with write access to the store does to roll the log back to `size`. */
async function rollBack(raw: Raw, size: number): Promise<void> {
  await raw.exec('delete from audit_records where log_name = ? and seq > ?', ['wit', size]);
  await raw.exec('delete from audit_checkpoints where log_name = ? and size > ?', ['wit', size]);
  const [row] = await raw.all<{ hash: string }>('select hash from audit_records where log_name = ? and seq = ?', ['wit', size]);
  await raw.exec('update audit_head set seq = ?, hash = ? where log_name = ?', [size, row!.hash, 'wit']);
}

function fileWitness(tag: string): { config: WitnessConfig; path: string } {
  const path = join(tempDir(tag), 'audit.witness.jsonl');
  return { config: { kind: 'file', path }, path };
}

describe('file witness (SQLite log)', () => {
  it('every checkpoint lands in the witness file as a signed C2SP note; a rollback that verifies without the witness is a ROLLBACK with it', async () => {
    const w = fileWitness('w-file');
    const { log, raw } = await seeded('sqlite', 'rollback', [w.config]);
    const lines = readFileSync(w.path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as WitnessEntry);
    expect(lines.map((e) => e.size)).toEqual([10, 20]);
    expect(lines[1]!.note).toMatch(/^wit\n20\n[A-Za-z0-9+/=]+\n\n\u2014 audit-checkpoints [A-Za-z0-9+/=]+\n$/);
    expect(lines[1]!.keyFingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);

    await rollBack(raw, 12);
    // the bug of issue 18: the log alone cannot tell
    const alone = await log.verify({ witnesses: false });
    expect(alone.ok).toBe(true);

    const t0 = performance.now();
    const result = await log.verify();
    const ms = performance.now() - t0;
    expect(result).toMatchObject({ ok: false, problem: 'rollback', firstBadSeq: 13, witnessed: { size: 20, witness: `file ${w.path}` } });
    expect(result.message).toMatch(/^ROLLBACK: the log ends at record 12, but file .* witnessed a checkpoint of 20 records/);
    expect(result.message).toContain(`witnesses consulted: file ${w.path}: consulted 20`);
    expect(result.witnesses).toEqual([expect.objectContaining({ witness: `file ${w.path}`, kind: 'file', status: 'consulted', size: 20 })]);
    console.log(`[figures] rollback of 8 records (SQLite log, file witness): detected as ${result.problem} in ${ms.toFixed(1)} ms`);
    await raw.close();
    await log.close();
  });

  it('a log rolled back and then run on past the witnessed size is a FORK at the older witnessed checkpoint', async () => {
    const w = fileWitness('w-runon');
    const { log, raw } = await seeded('sqlite', 'runon', [w.config]);
    await rollBack(raw, 12);
    // the rolled-back log keeps working, and its new checkpoints reach the witness too
    for (let i = 0; i < 20; i++) await log.append({ type: 'key.sign', actor: 'after', outcome: 'success' });
    await log.checkpoint();
    const sizes = readFileSync(w.path, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as WitnessEntry).size);
    expect(sizes).toEqual([10, 20, 32]);
    expect((await log.verify({ witnesses: false })).ok).toBe(true);
    const result = await log.verify();
    expect(result).toMatchObject({ ok: false, problem: 'fork', firstBadSeq: 20, witnessed: { size: 32 } });
    expect(result.message).toMatch(/^FORK: record 20 is not the record file .* witnessed at size 20 .*rolled back and rewritten past it/);
    await raw.close();
    await log.close();
  });

  it('a log wiped in place is a WIPE; a deleted log file is refused at open, naming the file (item 11)', async () => {
    const w = fileWitness('w-wipe');
    const { log, raw, storage } = await seeded('sqlite', 'wipe', [w.config]);
    await raw.exec('delete from audit_records where log_name = ?', ['wit']);
    await raw.exec('delete from audit_checkpoints where log_name = ?', ['wit']);
    await raw.exec("update audit_head set seq = 0, hash = ? where log_name = 'wit'", ['0'.repeat(64)]);
    const t0 = performance.now();
    const result = await log.verify();
    console.log(`[figures] wipe of 20 records (SQLite log, file witness): detected as ${result.problem} in ${(performance.now() - t0).toFixed(1)} ms`);
    expect(result).toMatchObject({ ok: false, problem: 'wipe', witnessed: { size: 20 } });
    expect(result.message).toMatch(/^WIPE: the log is empty, but file .* witnessed a checkpoint of 20 records/);
    await raw.close();
    await log.close();

    const path = (storage as { path: string }).path;
    for (const f of [path, `${path}-wal`, `${path}-shm`]) rmSync(f, { force: true });
    const refused = await openAuditLog({ storage, logName: 'wit', checkpoint: { signer, intervalMs: 0 }, witnesses: [w.config] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toMatchObject({ name: 'HsmError', code: 'IntegrityError', details: { auditCode: 'AuditLogMissing', file: path } });
    expect((refused as Error).message).toContain(`audit log ${path} holds no records of log wit, but a log was kept there: witness file ${w.path} holds a checkpoint of 20 records`);
    expect((refused as Error).message).toMatch(/restore .* from a backup/);

    // accepted as new on purpose (recorded), then checked: still a WIPE (its first record is newer than the witnessed checkpoint)
    const fresh = await openAuditLog({ storage, logName: 'wit', checkpoint: { signer, intervalMs: 0 }, witnesses: [w.config], acceptNewLog: true });
    const [start] = await fresh.tail({ limit: 1 }).next().then((r) => [r.value]);
    expect(start).toMatchObject({ seq: 1, type: 'audit.start', details: { acceptedNewLog: true } });
    await fresh.close();
    // then grown past the witnessed size by a writer that does not tell the witness
    const quiet = await openAuditLog({ storage, logName: 'wit', checkpoint: { signer, intervalMs: 0 } });
    for (let i = 0; i < 30; i++) await quiet.append({ type: 'key.sign', actor: 'x', outcome: 'success' });
    await quiet.close();
    const reopened = await openAuditLog({ storage, logName: 'wit', checkpoint: { signer, intervalMs: 0 }, witnesses: [w.config] });
    const anew = await reopened.verify();
    expect(anew).toMatchObject({ ok: false, problem: 'wipe' });
    expect(anew.message).toMatch(/the log was started anew/);
    await reopened.close();
  });

  it('expectExisting: a missing or 0-byte log file is an error naming the file, never a new log', async () => {
    const dir = tempDir('expect');
    const path = join(dir, 'audit.db');
    const missing = await openAuditLog({ storage: { kind: 'sqlite', path }, expectExisting: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(missing).toMatchObject({ code: 'IntegrityError', details: { auditCode: 'AuditLogMissing', file: path } });
    expect((missing as Error).message).toContain(`audit log ${path} does not exist`);
    expect(() => readFileSync(path)).toThrow(); // nothing was created
    writeFileSync(path, '');
    const empty = await openAuditLog({ storage: { kind: 'sqlite', path }, expectExisting: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((empty as Error).message).toContain(`audit log ${path} is empty (0 bytes)`);
    // an existing log opens as before
    rmSync(path);
    const log = await openAuditLog({ storage: { kind: 'sqlite', path } });
    await log.close();
    const again = await openAuditLog({ storage: { kind: 'sqlite', path }, expectExisting: true });
    expect(await again.size()).toBeGreaterThan(1);
    await again.close();
  });

  it('a log rewritten from record 5 with every hash recomputed and its checkpoints dropped is a FORK', async () => {
    const w = fileWitness('w-fork');
    const { log, raw } = await seeded('sqlite', 'fork', [w.config]);
    const rows = await raw.all<Record<string, unknown>>("select * from audit_records where log_name = 'wit' order by seq");
    let prev = String(rows[3]!['hash']);
    for (const row of rows.slice(4)) {
      const r = {
        seq: Number(row['seq']), time: String(row['time']), type: row['type'], actor: row['seq'] === 5 ? 'mallory' : String(row['actor']), outcome: row['outcome'], origin: String(row['origin']),
        ...(row['key_id'] ? { keyId: String(row['key_id']) } : {}), ...(row['details'] ? { details: String(row['details']) } : {}), prevHash: prev,
      } as unknown as AuditRecord;
      const hash = recordHash(r as never);
      await raw.exec("update audit_records set actor = ?, prev_hash = ?, hash = ? where log_name = 'wit' and seq = ?", [r.actor, prev, hash, r.seq]);
      prev = hash;
    }
    await raw.exec("delete from audit_checkpoints where log_name = 'wit'");
    await raw.exec("update audit_head set hash = ? where log_name = 'wit'", [prev]);
    expect((await log.verify({ witnesses: false })).ok).toBe(true);
    const result = await log.verify();
    expect(result).toMatchObject({ ok: false, problem: 'fork', firstBadSeq: 20 });
    expect(result.message).toMatch(/^FORK: record 20 is not the record file .* witnessed at size 20/);
    await raw.close();
    await log.close();
  });

  it('a forged witness entry (not signed by the checkpoint key) is reported invalid and ignored', async () => {
    const w = fileWitness('w-forged');
    const { log, raw } = await seeded('sqlite', 'forged', [w.config]);
    const real = JSON.parse(readFileSync(w.path, 'utf8').trim().split('\n')[1]!) as WitnessEntry;
    appendFileSync(w.path, JSON.stringify({ ...real, size: 500, headHash: 'ab'.repeat(32) }) + '\n');
    const result = await log.verify();
    expect(result.ok).toBe(true);
    expect(result.witnesses![0]).toMatchObject({ status: 'invalid' });
    expect(result.witnesses![0]!.message).toMatch(/not signed by a checkpoint key of this log/);
    await raw.close();
    await log.close();
  });
});

describe('PostgreSQL witness (PostgreSQL log)', () => {
  it('checkpoints are stored in the witness table; a rollback of the log is a ROLLBACK', async () => {
    const schema = await pgSchema('witness');
    const table = `witness_${randomBytes(3).toString('hex')}`;
    const config: WitnessConfig = { kind: 'postgres', connectionString: PG_URL, schema, table };
    const { log, raw } = await seeded('postgres', 'pgw', [config]);
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    const rows = (await c.query(`select size, key_fingerprint from "${schema}"."${table}" order by id`)).rows as Array<{ size: string; key_fingerprint: string }>;
    await c.end();
    expect(rows.map((r) => Number(r.size))).toEqual([10, 20]);
    await rollBack(raw, 10);
    const result = await log.verify();
    expect(result).toMatchObject({ ok: false, problem: 'rollback', firstBadSeq: 11, witnesses: [expect.objectContaining({ kind: 'postgres', status: 'consulted', size: 20 })] });
    expect(result.message).not.toContain('olocus_test@'); // the connection string is not echoed
    await raw.close();
    await log.close();
  });
});

describe('missing logs on PostgreSQL (item 11)', () => {
  it('expectExisting refuses a schema without records of the log; a witnessed log emptied in its database is refused at open', async () => {
    const { storage } = await storageFor('postgres', 'pgexpect');
    await expect(openAuditLog({ storage, logName: 'wit', expectExisting: true })).rejects.toMatchObject({ code: 'IntegrityError', details: { auditCode: 'AuditLogMissing' }, message: expect.stringContaining('holds no records of log wit') });
    const w = fileWitness('w-pgexpect');
    const log = await openAuditLog({ storage, logName: 'wit', checkpoint: { signer, intervalMs: 0 }, witnesses: [w.config] });
    await log.append({ type: 'key.sign', actor: 'a', outcome: 'success' });
    await log.close();
    const opened = await openAuditLog({ storage, logName: 'wit', expectExisting: true, checkpoint: { signer, intervalMs: 0 } });
    await opened.close();
    const { rawPg } = await import('./audit-helpers.js');
    const raw = rawPg((storage as { schema: string }).schema);
    await raw.exec("delete from audit_records where log_name = 'wit'");
    await raw.exec("delete from audit_checkpoints where log_name = 'wit'");
    await raw.exec("update audit_head set seq = 0, hash = ? where log_name = 'wit'", ['0'.repeat(64)]);
    await raw.close();
    await expect(openAuditLog({ storage, logName: 'wit', checkpoint: { signer, intervalMs: 0 }, witnesses: [w.config] })).rejects.toMatchObject({
      code: 'IntegrityError',
      message: expect.stringContaining(`witness file ${w.path} holds a checkpoint of`),
    });
  });
});

describe('HTTP and syslog witnesses', () => {
  let server: Server;
  let url: string;
  const held = new Map<string, WitnessEntry>();
  const posts: string[] = [];
  beforeAll(async () => {
    server = createHttpServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (req.method === 'POST') {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          posts.push(req.headers['authorization'] ?? '');
          const e = JSON.parse(body) as WitnessEntry;
          if (!held.has(e.logName) || held.get(e.logName)!.size < e.size) held.set(e.logName, e);
          res.writeHead(202).end();
        });
        return;
      }
      const e = held.get(u.searchParams.get('logName') ?? '');
      if (!e) return void res.writeHead(404).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(e));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as { port: number }).port}/witness`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('POSTs each checkpoint (with its headers) and is asked back: a rollback is a ROLLBACK; an unreachable witness is reported, not fatal', async () => {
    const dead = await new Promise<number>((resolve) => {
      const s = createTcpServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as { port: number }).port;
        s.close(() => resolve(port));
      });
    });
    const failures: unknown[] = [];
    const { storage, raw } = await storageFor('sqlite', 'httpw');
    const log = await openAuditLog({
      storage,
      logName: 'wit',
      checkpoint: { signer, everyRecords: 1000, intervalMs: 0 },
      witnesses: [{ kind: 'http', url, headers: { authorization: 'Bearer witness-token-123' } }, { kind: 'http', url: `http://127.0.0.1:${dead}/w`, timeoutMs: 2000 }],
      onFailure: (e) => failures.push(e),
    });
    for (let i = 2; i <= 20; i++) await log.append({ type: 'key.sign', actor: 'u', outcome: 'success' });
    const cp = await log.checkpoint();
    expect(cp?.size).toBe(20);
    expect(held.get('wit')?.size).toBe(20);
    expect(posts).toContain('Bearer witness-token-123');
    expect(failures.some((e) => (e as { details?: { auditCode?: string } }).details?.auditCode === 'WitnessUnavailable')).toBe(true);
    const r = raw();
    await rollBack(r, 8);
    const result = await log.verify();
    expect(result).toMatchObject({ ok: false, problem: 'rollback' });
    expect(result.witnesses!.map((w) => w.status)).toEqual(['consulted', 'unreachable']);
    expect(JSON.stringify(result)).not.toContain('witness-token-123');
    await r.close();
    await log.close();
  });

  it('syslog: RFC 5424 messages over UDP and TCP (octet counting) reach local listeners; syslog is reported write-only', async () => {
    const udp = createSocket('udp4');
    const udpGot: string[] = [];
    udp.on('message', (m) => udpGot.push(m.toString('utf8')));
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    const tcpGot: string[] = [];
    const tcp = createTcpServer((sock) => {
      let buf = '';
      sock.on('data', (d) => (buf += d.toString('utf8')));
      sock.on('end', () => tcpGot.push(buf));
    });
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const w = fileWitness('w-sys');
    const { log } = await seeded('sqlite', 'sysw', [
      { kind: 'syslog', transport: 'udp', host: '127.0.0.1', port: (udp.address() as { port: number }).port },
      { kind: 'syslog', transport: 'tcp', host: '127.0.0.1', port: (tcp.address() as { port: number }).port },
      w.config,
    ]);
    await new Promise((r) => setTimeout(r, 200));
    expect(udpGot).toHaveLength(2);
    const m = udpGot[1]!;
    expect(m).toMatch(/^<109>1 \d{4}-\d{2}-\d{2}T[\d:.]+Z \S+ olocus-hsm \d+ checkpoint \[olocusCheckpoint@32473 logName="wit" size="20" headHash="[0-9a-f]{64}" keyId="audit-checkpoints" keyFingerprint="sha256:[0-9a-f]{64}"\] \uFEFF\{/);
    expect(JSON.parse(m.slice(m.indexOf('\uFEFF') + 1)).size).toBe(20);
    expect(tcpGot).toHaveLength(2);
    const framed = /^(\d+) (<109>1 .*)$/s.exec(tcpGot[1]!);
    expect(framed).not.toBeNull();
    expect(Buffer.byteLength(framed![2]!)).toBe(Number(framed![1]));
    const result = await log.verify();
    expect(result.ok).toBe(true);
    expect(result.witnesses!.map((x) => [x.kind, x.status])).toEqual([
      ['syslog', 'write-only'],
      ['syslog', 'write-only'],
      ['file', 'consulted'],
    ]);
    expect(result.message).toContain('matches the newest witnessed checkpoint (size 20');
    udp.close();
    tcp.close();
    await log.close();
  });

  it('a bad witness config names the field', async () => {
    const { storage } = await storageFor('sqlite', 'badw');
    await expect(openAuditLog({ storage, witnesses: [{ kind: 'http', url: 'ftp://x' } as WitnessConfig] })).rejects.toMatchObject({ code: 'InvalidConfiguration', message: expect.stringContaining('witnesses[0]') });
  });
});
