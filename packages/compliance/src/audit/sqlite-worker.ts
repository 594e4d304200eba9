import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { JCS_SOURCE } from './jcs.js';

/**
 * better-sqlite3 is synchronous: a commit with synchronous=FULL waits for fsync on the calling
 * thread. Appends therefore commit in a worker thread (the event loop keeps serving signatures
 * while the disk syncs), and verify reads disjoint seq ranges in parallel workers. Both run from
 * source (the package is a single bundle) with the very canonical/hash code of jcs.ts.
 */

const COLUMNS = 'seq, time, type, actor, outcome, origin, backend, key_id, base_key_id, key_version, algorithm, latency_ms, data_digest, error_code, reason, details, prev_hash, hash';

const WORKER_BODY = String.raw`
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const oneShot = require('node:crypto').hash;
const Database = require(workerData.driver);
` + JCS_SOURCE + '%RANGE%' + String.raw`
const COLUMNS = '${COLUMNS}';
const db = new Database(workerData.path, { timeout: workerData.busyTimeoutMs, readonly: workerData.mode === 'verify' });
if (workerData.mode === 'checkpoint') db.pragma('journal_mode = WAL');
// SQLite's own busy handler sleeps ever longer (up to 100 ms) while another process keeps taking
// the write lock: retry BEGIN IMMEDIATE in short jittered sleeps instead, so writers interleave
const sleeper = new Int32Array(new SharedArrayBuffer(4));
function immediate(begin) {
  const deadline = Date.now() + workerData.busyTimeoutMs;
  for (let d = 0.25; ; d = Math.min(d * 2, 4)) {
    try {
      begin.run();
      return;
    } catch (e) {
      if (e.code !== 'SQLITE_BUSY' || Date.now() >= deadline) throw e;
      Atomics.wait(sleeper, 0, 0, d * (0.5 + Math.random()));
    }
  }
}
const reply = (id, ok, value) => parentPort.postMessage(ok ? { id, ok, value } : { id, ok, error: { code: value && value.code, message: String(value && value.message || value) } });
if (workerData.mode === 'write') {
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 0');
  const head = db.prepare('select seq, hash from audit_head where log_name = ?').raw(true);
  const ins = db.prepare('insert into audit_records (log_name, ' + COLUMNS + ') values (' + COLUMNS.split(',').map(() => '?').join(', ') + ', ?)');
  const setHead = db.prepare('update audit_head set seq = ?, hash = ? where log_name = ?');
  const begin = db.prepare('begin immediate');
  const commit = db.prepare('commit');
  const rollback = db.prepare('rollback');
  const n = (v) => (v === undefined ? null : v);
  parentPort.on('message', (m) => {
    try {
      immediate(begin); // waits for another process's write lock up to busyTimeoutMs (this thread only)
      try {
        const h = head.get(m.logName);
        if (!h) throw Object.assign(new Error('audit log ' + m.logName + ' has no head row'), { code: 'AUDIT_NO_HEAD' });
        let seq = Number(h[0]);
        let prev = h[1];
        const out = new Array(m.records.length);
        for (let i = 0; i < m.records.length; i++) {
          const r = m.records[i];
          r.seq = ++seq;
          r.prevHash = prev;
          r.hash = recordHash(r);
          ins.run(m.logName, r.seq, r.time, r.type, r.actor, r.outcome, r.origin, n(r.backend), n(r.keyId), n(r.baseKeyId), n(r.keyVersion), n(r.algorithm), n(r.latencyMs), n(r.dataDigest), n(r.errorCode), n(r.reason), n(r.details), r.prevHash, r.hash);
          out[i] = [r.seq, r.prevHash, r.hash];
          prev = r.hash;
        }
        setHead.run(seq, prev, m.logName);
        commit.run();
        reply(m.id, true, out);
      } catch (e) {
        if (db.inTransaction) rollback.run();
        throw e;
      }
    } catch (e) {
      reply(m.id, false, e);
    }
  });
} else if (workerData.mode === 'checkpoint') {
  // WAL checkpoints off the event loop: the inline writer runs with wal_autocheckpoint = 0, so its
  // commits never copy the WAL into the database file (and fsync it) on the caller's thread.
  // PASSIVE never waits, so under a steady stream of commits it rarely finds the WAL fully copied
  // at the moment a writer could restart it, and the file grows without bound. Past walMaxBytes
  // a TRUNCATE checkpoint takes the write lock (writers retry asynchronously), copies everything
  // and empties the WAL.
  const fs = require('node:fs');
  const walPath = workerData.path + '-wal';
  const walSize = () => { try { return fs.statSync(walPath).size; } catch (e) { return 0; } };
  let truncations = 0;
  const run = () => {
    try {
      if (walSize() > workerData.walMaxBytes) {
        db.pragma('busy_timeout = ' + workerData.truncateWaitMs);
        try {
          db.pragma('wal_checkpoint(TRUNCATE)');
          truncations++;
        } finally {
          db.pragma('busy_timeout = 0');
        }
      } else {
        db.pragma('wal_checkpoint(PASSIVE)');
      }
    } catch (e) { /* busy: next time */ }
  };
  setInterval(run, workerData.intervalMs);
  parentPort.on('message', (m) => {
    run();
    if (m && m.id !== undefined) parentPort.postMessage({ id: m.id, ok: true, value: { walBytes: walSize(), truncations } });
  });
} else {
  parentPort.on('message', (m) => {
    try {
      const stmt = db.prepare('select ' + COLUMNS + ' from audit_records where log_name = ? and seq > ? and seq <= ? order by seq').raw(true);
      const cps = new Map(m.checkpoints);
      const st = newRangeState(m.from);
      for (const row of stmt.iterate(m.logName, m.from, m.to)) if (!checkRow(row, st, cps)) break;
      reply(m.id, true, st);
    } catch (e) {
      reply(m.id, false, e);
    }
  });
}
`;

/** Range checking, shared by the SQLite and PostgreSQL verify threads. */
const RANGE_SOURCE = String.raw`
function newRangeState(from) {
  return { count: 0, firstSeq: 0, firstPrev: null, lastSeq: from, lastHash: null, bad: 0, expected: from + 1 };
}
function checkRow(row, st, cps) {
  const r = rowRecord(row);
  if (st.firstSeq === 0) { st.firstSeq = r.seq; st.firstPrev = r.prevHash; }
  const ok = r.seq === st.expected && (st.lastHash === null || r.prevHash === st.lastHash) && recordHash(r) === r.hash &&
    (r.details === undefined || detailsTextOk(r.details)) && (!cps.has(r.seq) || cps.get(r.seq) === r.hash);
  if (!ok) { st.bad = r.seq; return false; }
  st.count++;
  st.lastSeq = r.seq;
  st.lastHash = r.hash;
  st.expected = r.seq + 1;
  return true;
}
`;

const PG_VERIFY_SOURCE = String.raw`
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const oneShot = require('node:crypto').hash;
const pg = require(workerData.driver);
` + JCS_SOURCE + RANGE_SOURCE + String.raw`
const COLUMNS = '${COLUMNS}';
parentPort.on('message', async (m) => {
  const types = { getTypeParser: (oid, format) => (oid === 20 ? (v) => Number(v) : pg.types.getTypeParser(oid, format)) };
  const client = new pg.Client({ connectionString: workerData.connectionString, types, ...(workerData.schema ? { options: '-c search_path=' + workerData.schema } : {}) });
  try {
    await client.connect();
    const cps = new Map(m.checkpoints);
    const st = newRangeState(m.from);
    let after = m.from;
    for (;;) {
      const res = await client.query({ text: 'select ' + COLUMNS + ' from audit_records where log_name = $1 and seq > $2 and seq <= $3 order by seq limit 10000', values: [m.logName, after, m.to], rowMode: 'array' });
      let ok = true;
      for (const row of res.rows) if (!(ok = checkRow(row, st, cps))) break;
      if (!ok || res.rows.length < 10000) break;
      after = st.lastSeq;
    }
    parentPort.postMessage({ id: m.id, ok: true, value: st });
  } catch (e) {
    parentPort.postMessage({ id: m.id, ok: false, error: { code: e && e.code, message: String(e && e.message || e) } });
  } finally {
    await client.end().catch(() => undefined);
  }
});
`;

const WORKER_SOURCE = WORKER_BODY.replace('%RANGE%', () => RANGE_SOURCE);

const require = createRequire(import.meta.url);
let driverPath: string | undefined;
const driver = () => (driverPath ??= require.resolve('better-sqlite3'));

export interface WorkerFailure extends Error {
  code?: string;
}

function asError(e: { code?: string; message: string }): WorkerFailure {
  return Object.assign(new Error(e.message), e.code ? { code: e.code } : {});
}

/** One long-lived writer thread per SQLite audit store. */
export class SqliteWriter {
  #worker: Worker | undefined;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  #next = 1;
  constructor(
    private readonly path: string,
    private readonly busyTimeoutMs: number,
  ) {}

  #start(): Worker {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { driver: driver(), path: this.path, busyTimeoutMs: this.busyTimeoutMs, mode: 'write' } });
    w.unref();
    w.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: { code?: string; message: string } }) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (this.#pending.size === 0) w.unref();
      if (m.ok) p.resolve(m.value);
      else p.reject(asError(m.error!));
    });
    const fail = (error: unknown) => {
      if (this.#worker === w) this.#worker = undefined;
      const pending = [...this.#pending.values()];
      this.#pending.clear();
      for (const p of pending) p.reject(error instanceof Error ? error : new Error(`the audit writer thread stopped (${String(error)})`));
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(Object.assign(new Error(`the audit writer thread exited (code ${code})`), { code: 'AUDIT_WRITER_EXIT' })));
    return w;
  }

  /** Chains `records` onto the head in one BEGIN IMMEDIATE transaction; resolves after COMMIT. */
  append(logName: string, records: object[]): Promise<[number, string, string][]> {
    this.#worker ??= this.#start();
    const w = this.#worker;
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      if (this.#pending.size === 0) w.ref();
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      w.postMessage({ id, logName, records });
    });
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    if (w) await w.terminate();
  }
}

/**
 * A thread running WAL checkpoints every `intervalMs`: PASSIVE, or TRUNCATE (waiting up to
 * `truncateWaitMs` for writers and readers) once the WAL passes `walMaxBytes`. Terminate it to stop.
 */
export function startWalCheckpointer(path: string, intervalMs: number, walMaxBytes: number, truncateWaitMs: number): Worker {
  const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { driver: driver(), path, busyTimeoutMs: 0, mode: 'checkpoint', intervalMs, walMaxBytes, truncateWaitMs } });
  w.unref();
  w.on('error', () => undefined); // the WAL then just grows until the next open; writes are unaffected
  return w;
}

export interface RangeResult {
  count: number;
  firstSeq: number;
  firstPrev: string | null;
  lastSeq: number;
  lastHash: string | null;
  bad: number;
}

/**
 * Checks seq ranges (from, to] in parallel threads, each on its own read-only connection: every
 * record's hash, links inside the range, checkpointed hashes. The caller stitches the ranges.
 */
export async function verifyRanges(path: string, logName: string, ranges: [number, number][], checkpoints: [number, string][]): Promise<RangeResult[]> {
  return Promise.all(
    ranges.map(
      ([from, to]) =>
        new Promise<RangeResult>((resolve, reject) => {
          const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { driver: driver(), path, busyTimeoutMs: 5000, mode: 'verify' } });
          w.once('message', (m: { ok: boolean; value?: RangeResult; error?: { code?: string; message: string } }) => {
            void w.terminate();
            if (m.ok) resolve(m.value!);
            else reject(asError(m.error!));
          });
          w.once('error', reject);
          w.postMessage({ id: 1, logName, from, to, checkpoints });
        }),
    ),
  );
}

let pgPath: string | undefined;

/** The PostgreSQL counterpart of verifyRanges: each range on its own connection in its own thread. */
export async function verifyRangesPg(connection: { connectionString: string; schema?: string }, logName: string, ranges: [number, number][], checkpoints: [number, string][]): Promise<RangeResult[]> {
  pgPath ??= require.resolve('pg');
  return Promise.all(
    ranges.map(
      ([from, to]) =>
        new Promise<RangeResult>((resolve, reject) => {
          const w = new Worker(PG_VERIFY_SOURCE, { eval: true, workerData: { driver: pgPath, connectionString: connection.connectionString, schema: connection.schema } });
          w.once('message', (m: { ok: boolean; value?: RangeResult; error?: { code?: string; message: string } }) => {
            void w.terminate();
            if (m.ok) resolve(m.value!);
            else reject(asError(m.error!));
          });
          w.once('error', reject);
          w.postMessage({ id: 1, logName, from, to, checkpoints });
        }),
    ),
  );
}

export function verifyThreads(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}
