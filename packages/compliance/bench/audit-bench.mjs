// The audit log's cost and speed, side by side in one run:
//  1. signing throughput on SoftHSM ECDSA P-256 (@olocus/hsm-backend-pkcs11, concurrency 16) with
//     durable auditing (SQLite, synchronous=FULL, group commit, signed checkpoints) on vs off;
//     the modes alternate within each round (order rotated per round) so machine noise hits
//     them alike; medians of the rounds and the ratio (target >= 0.80). Also the event-loop
//     delay while auditing (better-sqlite3 commits on the main thread).
//  2. appends/s on SQLite and PostgreSQL (many appenders in flight: group commit at work).
//  3. verify() over 1,000,000 records on SQLite (a valid chain bulk-inserted first; target
//     > 200,000 records/s), and over --pg-verify-records on PostgreSQL.
//
//   node bench/audit-bench.mjs [--seconds 2] [--rounds 5] [--concurrency 16] [--verify-records 1000000]
//                              [--pg-verify-records 200000] [--skip-pg] [--json]
//   (pnpm --filter @olocus/hsm-compliance bench; build core, backend-pkcs11 and compliance first.
//    PostgreSQL: OLOCUS_TEST_PG_URL or postgres://olocus_test@127.0.0.1:5432/olocus_test)
import { register } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';

// The token helpers of @olocus/hsm-backend-pkcs11/testing register their cleanup with vitest's
// afterAll; outside vitest a tiny stand-in collects it and runs it at the end.
const cleanups = [];
globalThis.__olocusBenchCleanups = cleanups;
const stub = 'export const afterAll = (fn) => globalThis.__olocusBenchCleanups.push(fn);';
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier === 'vitest') return { url: 'data:text/javascript,' + encodeURIComponent(${JSON.stringify(stub)}), shortCircuit: true };
  return next(specifier, context);
}`;
register('data:text/javascript,' + encodeURIComponent(hooks));

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '5' },
    concurrency: { type: 'string', default: '16' },
    'verify-records': { type: 'string', default: '1000000' },
    'pg-verify-records': { type: 'string', default: '200000' },
    'skip-pg': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);
const verifyRecords = Number(values['verify-records']);
const pgVerifyRecords = Number(values['pg-verify-records']);
const PG_URL = process.env.OLOCUS_TEST_PG_URL ?? 'postgres://olocus_test@127.0.0.1:5432/olocus_test';
const log = values.json ? () => undefined : (...a) => console.error(...a);

const distPath = process.env.OLOCUS_AUDIT_BENCH_DIST ?? '../dist/index.js';
let audit;
try {
  audit = await import(new URL(distPath, import.meta.url).href);
  if (typeof audit.openAuditLog !== 'function') throw new Error('openAuditLog is not exported');
} catch (error) {
  console.error(`cannot load the built package (${distPath}): ${error.message}\nbuild it first: pnpm --filter @olocus/hsm-compliance... build`);
  process.exit(2);
}
const { openAuditLog, withAudit, checkpointSignerFromBackend, recordHash } = audit;
const { createToken, SOFTHSM_LIB } = await import('@olocus/hsm-test-support');
const { Pkcs11Backend } = await import('@olocus/hsm-backend-pkcs11');
const { default: Database } = await import('better-sqlite3');
const { default: pg } = await import('pg');

const work = mkdtempSync(join(tmpdir(), 'olocus-audit-bench-'));
cleanups.push(() => rmSync(work, { recursive: true, force: true }));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const results = { machine: { node: process.version, cpus: (await import('node:os')).cpus().length }, params: { seconds, rounds, concurrency, verifyRecords, pgVerifyRecords } };

// ---------- 1. signing with and without durable auditing ----------
const token = createToken('audit-bench');
const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, sessionPool: { minSessions: 2, maxSessions: concurrency } }, { pin: token.pin });
await backend.initialize();
const key = await backend.generateKeyPair({ id: 'bench-p256', algorithm: 'ECDSA_P256' });
const signer = checkpointSignerFromBackend(backend, 'bench-audit-checkpoints');
const signLog = await openAuditLog({ storage: { kind: 'sqlite', path: join(work, 'sign.db'), writerThread: true }, logName: 'bench-sign', checkpoint: { signer, everyRecords: 1000, intervalMs: 60_000 } });
const audited = withAudit(backend, signLog, { actor: 'bench' });
// the default: the SQLite commit inline on the event-loop thread (writerThread: false)
const inlineLog = await openAuditLog({ storage: { kind: 'sqlite', path: join(work, 'sign-inline.db'), writerThread: false }, logName: 'bench-sign', checkpoint: { signer, everyRecords: 1000, intervalMs: 60_000 } });
const auditedInline = withAudit(backend, inlineLog, { actor: 'bench' });
const data = new TextEncoder().encode('olocus audit bench message');
const MODES = { off: backend, 'audit-sqlite-thread': audited, 'audit-sqlite': auditedInline };
for (const b of Object.values(MODES)) for (let i = 0; i < 50; i++) await b.sign(key, data); // warm-up

async function signSample(mode) {
  const b = MODES[mode];
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const end = performance.now() + seconds * 1000;
  let ops = 0;
  const worker = async () => {
    while (performance.now() < end) {
      await b.sign(key, data);
      ops++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  h.disable();
  return { opsPerSec: ops / elapsed, loopDelayP99Ms: h.percentile(99) / 1e6, loopDelayMaxMs: h.max / 1e6 };
}
const samples = { off: [], 'audit-sqlite-thread': [], 'audit-sqlite': [] };
const names = Object.keys(MODES);
for (let r = 0; r < rounds; r++) {
  const order = names.map((_, i) => names[(i + r) % names.length]);
  for (const m of order) {
    const s = await signSample(m);
    samples[m].push(s);
    log(`round ${r + 1} ${m}: ${s.opsPerSec.toFixed(0)} signs/s (event-loop delay p99 ${s.loopDelayP99Ms.toFixed(2)} ms, max ${s.loopDelayMaxMs.toFixed(2)} ms)`);
  }
}
const threadStats = signLog.stats();
const inlineStats = inlineLog.stats();
const med = (mode, k) => median(samples[mode].map((x) => x[k]));
const maxOf = (mode, k) => Math.max(...samples[mode].map((x) => x[k]));
const offMedian = med('off', 'opsPerSec');
results.sign = {
  offOpsPerSec: offMedian,
  offLoopDelayP99Ms: med('off', 'loopDelayP99Ms'),
  // default: commit inline on the event loop, WAL checkpoints in a helper thread
  auditedOpsPerSec: med('audit-sqlite', 'opsPerSec'),
  ratio: med('audit-sqlite', 'opsPerSec') / offMedian,
  auditedLoopDelayP99Ms: med('audit-sqlite', 'loopDelayP99Ms'),
  auditedLoopDelayMaxMs: maxOf('audit-sqlite', 'loopDelayMaxMs'),
  recordsPerTransaction: inlineStats.appends / inlineStats.transactions,
  maxTransactionMs: inlineStats.maxTransactionMs,
  // writerThread: true: commit in a worker thread
  threadOpsPerSec: med('audit-sqlite-thread', 'opsPerSec'),
  threadRatio: med('audit-sqlite-thread', 'opsPerSec') / offMedian,
  threadLoopDelayP99Ms: med('audit-sqlite-thread', 'loopDelayP99Ms'),
  threadLoopDelayMaxMs: maxOf('audit-sqlite-thread', 'loopDelayMaxMs'),
  threadRecordsPerTransaction: threadStats.appends / threadStats.transactions,
};
for (const l of [signLog, inlineLog]) {
  const v = await l.verify();
  if (!v.ok) throw new Error(`the benchmark's own log does not verify: ${v.message}`);
  await l.close();
}
await backend.close();

// ---------- 2. appends/s ----------
async function appendRate(storage, label) {
  const l = await openAuditLog({ storage, logName: `bench-append-${label}`, checkpoint: { everyRecords: 10_000, intervalMs: 0 } });
  const inFlight = 256;
  const end = performance.now() + seconds * 1000;
  let n = 0;
  const before = l.stats();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async (_, w) => {
      while (performance.now() < end) {
        await l.append({ type: 'key.sign', actor: `w${w}`, outcome: 'success', backend: 'pkcs11', keyId: 'bench', dataDigest: 'sha256:' + 'ab'.repeat(32), latencyMs: 0.42 });
        n++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const s = l.stats();
  await l.close();
  return { appendsPerSec: n / elapsed, recordsPerTransaction: (s.appends - before.appends) / (s.transactions - before.transactions), maxTransactionMs: s.maxTransactionMs };
}
results.appends = { sqlite: await appendRate({ kind: 'sqlite', path: join(work, 'append.db') }, 'sqlite') };
log(`appends sqlite: ${results.appends.sqlite.appendsPerSec.toFixed(0)}/s`);
let pgSchema;
if (!values['skip-pg']) {
  pgSchema = `audit_bench_${randomBytes(4).toString('hex')}`;
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  await c.query(`create schema ${pgSchema}`);
  await c.end();
  cleanups.push(async () => {
    const d = new pg.Client({ connectionString: PG_URL });
    await d.connect();
    await d.query(`drop schema if exists ${pgSchema} cascade`);
    await d.end();
  });
  results.appends.postgres = await appendRate({ kind: 'postgres', connectionString: PG_URL, schema: pgSchema }, 'pg');
  log(`appends postgres: ${results.appends.postgres.appendsPerSec.toFixed(0)}/s`);
}

// ---------- 3. verify ----------
function* chain(startSeq, prevHash, n) {
  const t0 = Date.parse('2026-01-01T00:00:00.000Z');
  let prev = prevHash;
  const types = ['key.sign', 'key.verify', 'key.access'];
  for (let i = 0; i < n; i++) {
    const seq = startSeq + i;
    const r = { seq, time: new Date(t0 + seq).toISOString(), type: types[seq % 3], actor: `svc-${seq % 17}`, outcome: 'success', origin: 'bench-node:1', backend: 'pkcs11', keyId: `payments.v${1 + (seq % 3)}`, baseKeyId: 'payments', keyVersion: 1 + (seq % 3), algorithm: 'ECDSA_P256', latencyMs: (seq % 1000) / 7, dataDigest: 'sha256:' + 'cd'.repeat(32), prevHash: prev };
    if (seq % 2 === 0) r.details = `{"operation":"sign","valid":true}`;
    r.hash = recordHash(r);
    prev = r.hash;
    yield r;
  }
}
const row = (logName, r) => [logName, r.seq, r.time, r.type, r.actor, r.outcome, r.origin, r.backend ?? null, r.keyId ?? null, r.baseKeyId ?? null, r.keyVersion ?? null, r.algorithm ?? null, r.latencyMs ?? null, r.dataDigest ?? null, r.errorCode ?? null, r.reason ?? null, r.details ?? null, r.prevHash, r.hash];
const COLS = 'log_name, seq, time, type, actor, outcome, origin, backend, key_id, base_key_id, key_version, algorithm, latency_ms, data_digest, error_code, reason, details, prev_hash, hash';

async function verifyBench(storage, n, bulk) {
  const logName = 'bench-verify';
  let l = await openAuditLog({ storage, logName, checkpoint: { intervalMs: 0, everyRecords: 1e9 } });
  await l.close(); // records 1..2 (start, stop) and a checkpoint at 2
  l = await openAuditLog({ storage, logName, checkpoint: { intervalMs: 0, everyRecords: 1e9 } }); // record 3
  await l.flush();
  const head = await l.head();
  const t0 = performance.now();
  const last = await bulk(logName, chain(head.seq + 1, head.hash, n));
  const insertS = (performance.now() - t0) / 1000;
  const v = await l.verify();
  await l.close();
  if (!v.ok) throw new Error(`bulk chain does not verify: ${v.message}`);
  return { records: v.records, verifyMs: v.durationMs, recordsPerSec: v.records / (v.durationMs / 1000), bulkInsertS: insertS, lastSeq: last };
}
results.verify = {
  sqlite: await verifyBench({ kind: 'sqlite', path: join(work, 'verify.db') }, verifyRecords, async (logName, records) => {
    const db = new Database(join(work, 'verify.db'));
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = OFF'); // the bench's bulk load only
    const ins = db.prepare(`insert into audit_records (${COLS}) values (${COLS.split(',').map(() => '?').join(', ')})`);
    let last;
    let batch = [];
    const flush = db.transaction((rs) => {
      for (const r of rs) ins.run(...row(logName, r));
    });
    for (const r of records) {
      batch.push(r);
      last = r;
      if (batch.length === 50_000) {
        flush(batch);
        batch = [];
      }
    }
    flush(batch);
    db.prepare('update audit_head set seq = ?, hash = ? where log_name = ?').run(last.seq, last.hash, logName);
    db.close();
    return last.seq;
  }),
};
log(`verify sqlite: ${results.verify.sqlite.records} records in ${results.verify.sqlite.verifyMs.toFixed(0)} ms`);
if (!values['skip-pg'] && pgVerifyRecords > 0) {
  results.verify.postgres = await verifyBench({ kind: 'postgres', connectionString: PG_URL, schema: pgSchema }, pgVerifyRecords, async (logName, records) => {
    const c = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${pgSchema}` });
    await c.connect();
    let last;
    let batch = [];
    const flush = async () => {
      if (batch.length === 0) return;
      const values = [];
      const tuples = batch.map((r) => {
        const base = values.length;
        values.push(...row(logName, r));
        return `(${Array.from({ length: 19 }, (_, i) => `$${base + i + 1}`).join(',')})`;
      });
      await c.query(`insert into audit_records (${COLS}) values ${tuples.join(',')}`, values);
      batch = [];
    };
    await c.query('begin');
    for (const r of records) {
      batch.push(r);
      last = r;
      if (batch.length === 3000) await flush();
    }
    await flush();
    await c.query('update audit_head set seq = $1, hash = $2 where log_name = $3', [last.seq, last.hash, logName]);
    await c.query('commit');
    await c.end();
    return last.seq;
  });
  log(`verify postgres: ${results.verify.postgres.records} records in ${results.verify.postgres.verifyMs.toFixed(0)} ms`);
}

for (const c of cleanups.reverse()) await c();

if (values.json) {
  console.log(JSON.stringify(results, null, 2));
} else {
  const f = (x, d = 0) => x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  const s = results.sign;
  const lines = [
    `| measure | value |`,
    `| --- | --- |`,
    `| signs/s, SoftHSM ECDSA P-256, concurrency ${concurrency}, no audit (median of ${rounds}) | ${f(s.offOpsPerSec)} |`,
    `| signs/s, durable audit on SQLite, default (commit inline, median of ${rounds}) | ${f(s.auditedOpsPerSec)} |`,
    `| ratio audited / not audited (target >= 0.80) | ${f(s.ratio, 3)} |`,
    `| records per SQLite transaction while signing | ${f(s.recordsPerTransaction, 1)} |`,
    `| longest inline SQLite transaction (event loop held) | ${f(s.maxTransactionMs, 2)} ms |`,
    `| event-loop delay p99 / max while auditing | ${f(s.auditedLoopDelayP99Ms, 2)} / ${f(s.auditedLoopDelayMaxMs, 2)} ms (no audit: p99 ${f(s.offLoopDelayP99Ms, 2)} ms) |`,
    `| signs/s, durable audit, commit in a worker thread (writerThread: true) | ${f(s.threadOpsPerSec)} (ratio ${f(s.threadRatio, 3)}; loop delay p99 / max ${f(s.threadLoopDelayP99Ms, 2)} / ${f(s.threadLoopDelayMaxMs, 2)} ms) |`,
    `| appends/s, SQLite (256 in flight) | ${f(results.appends.sqlite.appendsPerSec)} (${f(results.appends.sqlite.recordsPerTransaction, 1)} per transaction) |`,
    ...(results.appends.postgres ? [`| appends/s, PostgreSQL (256 in flight) | ${f(results.appends.postgres.appendsPerSec)} (${f(results.appends.postgres.recordsPerTransaction, 1)} per transaction) |`] : []),
    `| verify, SQLite, ${f(results.verify.sqlite.records)} records | ${f(results.verify.sqlite.verifyMs)} ms = ${f(results.verify.sqlite.recordsPerSec)} records/s (target > 200,000) |`,
    ...(results.verify.postgres ? [`| verify, PostgreSQL, ${f(results.verify.postgres.records)} records | ${f(results.verify.postgres.verifyMs)} ms = ${f(results.verify.postgres.recordsPerSec)} records/s |`] : []),
  ];
  console.log(`Olocus audit log benchmark — node ${process.version}, ${results.machine.cpus} CPUs\n`);
  console.log(lines.join('\n'));
}
