import { closeSync, openSync } from 'node:fs';
import BetterSqlite3 from 'better-sqlite3';
import type pg from 'pg';

/** pg is loaded only when a PostgreSQL store is opened: a SQLite-only process (a one-shot CLI command) never pays for it. */
const loadPg = async (): Promise<typeof pg> => (await import('pg')).default;
import type { Kysely, Migration } from 'kysely';
import { HsmError, isHsmError, isSqliteBusy, retryWhile, sqliteMigrationsCurrent } from '@olocus/hsm-core';
import { storageFaultError } from './faults.js';
import type { AuditCheckpoint, AuditRecord } from './types.js';
import { canonicalDetails, recordHash, type RecordLike } from './jcs.js';
import { SqliteWriter, startWalCheckpointer, verifyRanges, verifyRangesPg, verifyThreads, type RangeResult } from './sqlite-worker.js';
import type { ResolvedAuditLogOptions } from './options.js';

export type Dialect = 'sqlite' | 'postgres';

export interface Head {
  seq: number;
  hash: string;
  /** Last pruned seq and its hash: the chain starts after it. */
  anchorSeq: number;
  anchorHash: string;
}

/** A record waiting for its place in the chain, with its details already in canonical text. */
export interface PendingRecord {
  record: Omit<AuditRecord, 'seq' | 'prevHash' | 'hash'>;
  detailsJson: string | null;
}

/** A checkpoint key that took over at a rotation: it signs checkpoints of size > `seq` (the rotation record). */
export interface CheckpointKeyRow {
  seq: number;
  keyId: string;
  algorithm: string;
  fingerprint: string;
  /** Base64 SPKI DER. */
  spki: string;
  time: string;
}

export interface RecordFilter {
  from?: string;
  to?: string;
  types?: string[];
  keyId?: string;
  baseKeyId?: string;
}

/** Storage for one or more audit logs (tables `audit_*`). */
export interface AuditStore {
  readonly dialect: Dialect;
  readonly target: string;
  migrate(): Promise<void>;
  ensureHead(logName: string, zeroHash: string): Promise<void>;
  /**
   * One write transaction: locks the log's head row, hands it to `build`, inserts what it returns
   * and moves the head. SQLite: BEGIN IMMEDIATE (busy waits are async retries, never a blocked
   * event loop); PostgreSQL: SELECT ... FOR UPDATE on audit_head.
   */
  appendBatch(logName: string, batch: PendingRecord[]): Promise<AuditRecord[]>;
  /**
   * Checks the chain in parallel ranges when the store can (SQLite); undefined when it found
   * nothing wrong is not certain — the caller then walks the chain itself to name the break.
   */
  verifyParallel?(logName: string, anchor: { seq: number; hash: string }, headSeq: number, checkpoints: Map<number, string>): Promise<{ records: number; lastSeq: number } | undefined>;
  head(logName: string): Promise<Head>;
  /** Records with seq > afterSeq in seq order (details as stored JSON text). */
  page(logName: string, afterSeq: number, limit: number, filter?: RecordFilter, toSeq?: number): Promise<RecordLike[]>;
  /** Highest seq first. */
  lastRecords(logName: string, limit: number): Promise<RecordLike[]>;
  checkpoints(logName: string): Promise<AuditCheckpoint[]>;
  latestCheckpoint(logName: string): Promise<AuditCheckpoint | undefined>;
  /** Inserts when `cp.size` exceeds every stored checkpoint's size (under the head lock); false otherwise. */
  insertCheckpoint(logName: string, cp: AuditCheckpoint): Promise<boolean>;
  /** Checkpoint keys after rotations, oldest first (the chain's rotation records are the evidence; this is their index). */
  checkpointKeys(logName: string): Promise<CheckpointKeyRow[]>;
  insertCheckpointKey(logName: string, row: CheckpointKeyRow): Promise<void>;
  /** First seq whose time is >= `time` (undefined when none). */
  firstSeqAtOrAfter(logName: string, time: string): Promise<number | undefined>;
  lastSeqBefore(logName: string, time: string): Promise<number | undefined>;
  oldestTime(logName: string): Promise<string | undefined>;
  count(logName: string): Promise<number>;
  /** Deletes records seq <= throughSeq (> the current anchor) and makes throughSeq the anchor. */
  prune(logName: string, throughSeq: number): Promise<number>;
  close(): Promise<void>;
}

const COLUMNS = [
  'seq', 'time', 'type', 'actor', 'outcome', 'origin', 'backend', 'key_id', 'base_key_id', 'key_version', 'algorithm',
  'latency_ms', 'data_digest', 'error_code', 'reason', 'details', 'prev_hash', 'hash',
] as const;
const SELECT = COLUMNS.join(', ');

function migrations(dialect: Dialect): Record<string, Migration> {
  const big = dialect === 'postgres' ? 'bigint' : 'integer';
  const real = dialect === 'postgres' ? 'double precision' : 'real';
  return {
    '0001_audit': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('audit_records')
          .ifNotExists()
          .addColumn('log_name', 'text', (c) => c.notNull())
          .addColumn('seq', big, (c) => c.notNull())
          .addColumn('time', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('outcome', 'text', (c) => c.notNull())
          .addColumn('origin', 'text', (c) => c.notNull())
          .addColumn('backend', 'text')
          .addColumn('key_id', 'text')
          .addColumn('base_key_id', 'text')
          .addColumn('key_version', 'integer')
          .addColumn('algorithm', 'text')
          .addColumn('latency_ms', real)
          .addColumn('data_digest', 'text')
          .addColumn('error_code', 'text')
          .addColumn('reason', 'text')
          .addColumn('details', 'text')
          .addColumn('prev_hash', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          // one chain per log: a seq is written once (two writers can never both take seq N)
          .addPrimaryKeyConstraint('audit_records_pk', ['log_name', 'seq'])
          .execute();
        await db.schema.createIndex('audit_records_time').ifNotExists().on('audit_records').columns(['log_name', 'time']).execute();
        await db.schema
          .createTable('audit_head')
          .ifNotExists()
          .addColumn('log_name', 'text', (c) => c.primaryKey())
          .addColumn('seq', big, (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .addColumn('anchor_seq', big, (c) => c.notNull())
          .addColumn('anchor_hash', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('audit_checkpoints')
          .ifNotExists()
          .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('log_name', 'text', (c) => c.notNull())
          .addColumn('size', big, (c) => c.notNull())
          .addColumn('head_hash', 'text', (c) => c.notNull())
          .addColumn('time', 'text', (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('algorithm', 'text', (c) => c.notNull())
          .addColumn('signature', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('audit_checkpoints_log').ifNotExists().on('audit_checkpoints').columns(['log_name', 'id']).execute();
      },
      async down(db: Kysely<any>) {
        for (const t of ['audit_checkpoints', 'audit_head', 'audit_records']) await db.schema.dropTable(t).ifExists().execute();
      },
    },
    '0002_checkpoint_keys': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('audit_checkpoint_keys')
          .ifNotExists()
          .addColumn('log_name', 'text', (c) => c.notNull())
          .addColumn('seq', big, (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('algorithm', 'text', (c) => c.notNull())
          .addColumn('fingerprint', 'text', (c) => c.notNull())
          .addColumn('spki', 'text', (c) => c.notNull())
          .addColumn('time', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('audit_checkpoint_keys_pk', ['log_name', 'seq'])
          .execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('audit_checkpoint_keys').ifExists().execute();
      },
    },
  };
}

function rowToKey(r: Record<string, unknown>): CheckpointKeyRow {
  return { seq: Number(r['seq']), keyId: String(r['key_id']), algorithm: String(r['algorithm']), fingerprint: String(r['fingerprint']), spki: String(r['spki']), time: String(r['time']) };
}

/**
 * Storage failures as HsmError through the one mapping (faults.ts): a full disk, a busy or
 * unreachable store are retryable DeviceUnavailable naming the file; corruption, permissions
 * and read-only stores are not retryable.
 */
export function storageError(error: unknown, what: string, target: string): HsmError {
  if (isHsmError(error)) return error;
  const driverCode = typeof (error as { code?: unknown })?.code === 'string' ? (error as { code: string }).code : undefined;
  return storageFaultError(error, {
    store: 'audit log',
    action: what,
    target,
    ...(target.startsWith('postgres') ? {} : { file: target }),
    details: { auditCode: 'AuditWriteFailed', errorCode: driverCode },
  });
}

function describeTarget(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    return `postgres://${url.hostname}:${url.port || '5432'}${url.pathname}`;
  } catch {
    return 'postgres (unparseable connection string)';
  }
}

type Row = unknown[];

function rowToRecord(r: Row): RecordLike {
  const rec: RecordLike = {
    seq: Number(r[0]),
    time: r[1] as string,
    type: r[2] as AuditRecord['type'],
    actor: r[3] as string,
    outcome: r[4] as AuditRecord['outcome'],
    origin: r[5] as string,
    prevHash: r[16] as string,
    hash: r[17] as string,
  };
  if (r[6] !== null) rec.backend = r[6] as string;
  if (r[7] !== null) rec.keyId = r[7] as string;
  if (r[8] !== null) rec.baseKeyId = r[8] as string;
  if (r[9] !== null) rec.keyVersion = Number(r[9]);
  if (r[10] !== null) rec.algorithm = r[10] as string;
  if (r[11] !== null) rec.latencyMs = Number(r[11]);
  if (r[12] !== null) rec.dataDigest = r[12] as string;
  if (r[13] !== null) rec.errorCode = r[13] as string;
  if (r[14] !== null) rec.reason = r[14] as string;
  if (r[15] !== null) rec.details = r[15] as string;
  return rec;
}

function recordToRow(logName: string, r: AuditRecord, detailsJson: string | null): unknown[] {
  return [
    logName, r.seq, r.time, r.type, r.actor, r.outcome, r.origin, r.backend ?? null, r.keyId ?? null, r.baseKeyId ?? null, r.keyVersion ?? null,
    r.algorithm ?? null, r.latencyMs ?? null, r.dataDigest ?? null, r.errorCode ?? null, r.reason ?? null, detailsJson, r.prevHash, r.hash,
  ];
}

function rowToCheckpoint(r: Record<string, unknown>): AuditCheckpoint {
  return {
    logName: r['log_name'] as string,
    size: Number(r['size']),
    headHash: r['head_hash'] as string,
    time: r['time'] as string,
    keyId: r['key_id'] as string,
    algorithm: r['algorithm'] as string,
    signature: r['signature'] as string,
  };
}

function filterSql(filter: RecordFilter | undefined, param: (v: unknown) => string): string {
  if (!filter) return '';
  let s = '';
  if (filter.from) s += ` and time >= ${param(filter.from)}`;
  if (filter.to) s += ` and time < ${param(filter.to)}`;
  if (filter.keyId) s += ` and key_id = ${param(filter.keyId)}`;
  if (filter.baseKeyId) s += ` and base_key_id = ${param(filter.baseKeyId)}`;
  if (filter.types && filter.types.length > 0) s += ` and type in (${filter.types.map((t) => param(t)).join(', ')})`;
  return s;
}

/** (from, to] ranges for parallel verification, the last one open-ended; undefined for small logs. */
function splitRanges(anchorSeq: number, headSeq: number): [number, number][] | undefined {
  const span = headSeq - anchorSeq;
  if (span < 20_000) return undefined;
  const k = verifyThreads();
  const ranges: [number, number][] = [];
  for (let i = 0; i < k; i++) {
    ranges.push([anchorSeq + Math.floor((span * i) / k), i === k - 1 ? Number.MAX_SAFE_INTEGER : anchorSeq + Math.floor((span * (i + 1)) / k)]);
  }
  return ranges;
}

/** Joins range results into one chain from the anchor; undefined when any range or seam is wrong. */
function stitch(results: RangeResult[], anchor: { seq: number; hash: string }): { records: number; lastSeq: number } | undefined {
  let lastSeq = anchor.seq;
  let lastHash = anchor.hash;
  let records = 0;
  for (const r of results) {
    if (r.bad) return undefined;
    if (r.count === 0) continue;
    if (r.firstSeq !== lastSeq + 1 || r.firstPrev !== lastHash) return undefined;
    records += r.count;
    lastSeq = r.lastSeq;
    lastHash = r.lastHash!;
  }
  return { records, lastSeq };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** How long after its first write a SQLite audit store starts its WAL checkpointer thread... */
const CHECKPOINTER_DELAY_MS = 1_000;
/** ...or after how many write transactions, whichever comes first (a one-shot command writes two or three). */
const CHECKPOINTER_AFTER_WRITES = 32;

export async function openStore(storage: ResolvedAuditLogOptions['storage']): Promise<AuditStore> {
  return storage.kind === 'sqlite' ? openSqlite(storage) : openPostgres(storage);
}

/**
 * kysely only builds and runs the schema migrations (and drives Postgres): loaded when needed, a
 * one-shot command on an up-to-date SQLite log never compiles its ~430 KB.
 */
const loadKysely = () => import('kysely');
const MIGRATION_TABLE = 'audit_kysely_migration';

async function runMigrations(db: Kysely<any>, dialect: Dialect, target: string, schema?: string): Promise<void> {
  const { Migrator } = await loadKysely();
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations(dialect) },
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: 'audit_kysely_migration_lock',
    ...(schema ? { migrationTableSchema: schema } : {}),
  });
  const { error } = await migrator.migrateToLatest();
  if (error) throw storageError(error, 'migrating', target);
}

async function openSqlite(storage: Extract<ResolvedAuditLogOptions['storage'], { kind: 'sqlite' }>): Promise<AuditStore> {
  const target = storage.path;
  let database: BetterSqlite3.Database;
  try {
    // The log names keys, actors and operations: create it 0600 (SQLite gives its -wal and -shm
    // files the database file's mode). An existing file keeps the mode its operator chose.
    if (storage.path !== ':memory:' && !storage.path.startsWith('file:')) closeSync(openSync(storage.path, 'a', 0o600));
  } catch (error) {
    throw storageError(error, 'creating the SQLite database file', target);
  }
  try {
    // Opening may wait for another process (WAL setup, migrations); after open the busy timeout
    // is 0: a busy database is retried asynchronously (writeTx), never waited for inside the
    // synchronous driver, which would block the event loop while another process writes.
    database = new BetterSqlite3(storage.path, { timeout: storage.busyTimeoutMs });
  } catch (error) {
    throw storageError(error, 'opening SQLite database', target);
  }
  try {
    // Two processes opening a new log at once can get SQLITE_BUSY from the switch to WAL at once,
    // without SQLite's busy handler being called (it is not where waiting could deadlock): CI saw
    // the second of two appenders fail to open. Retried, without blocking the loop.
    await retryWhile(() => database.pragma('journal_mode = WAL'), isSqliteBusy, { timeoutMs: Math.max(storage.busyTimeoutMs, 1000), firstDelayMs: 5 });
    database.pragma('synchronous = FULL');
  } catch (error) {
    database.close();
    throw storageError(error, 'opening SQLite database', target);
  }
  let db: Parameters<typeof runMigrations>[0] | undefined;
  const kyselyDb = async () => {
    if (!db) {
      const { Kysely, SqliteDialect } = await loadKysely();
      db = new Kysely<any>({ dialect: new SqliteDialect({ database }) });
    }
    return db;
  };
  const writer = storage.writerThread ? new SqliteWriter(storage.path, storage.busyTimeoutMs) : undefined;
  // inline commits: no WAL checkpoint inside a commit on this thread; a helper thread does them
  // Inline commits run with wal_autocheckpoint off (no checkpoint on the caller's thread); the
  // helper thread checkpoints, and truncates the WAL whenever it passes walMaxBytes, in both modes.
  if (!writer) database.pragma('wal_autocheckpoint = 0');
  // after a checkpoint resets the WAL, SQLite trims the file back to this size
  database.pragma(`journal_size_limit = ${storage.walMaxBytes}`);
  // The checkpointer thread starts a moment after the first write: a one-shot command (one
  // signature, then exit) never pays for a thread; it checkpoints its few pages inline at close.
  // A busy writer starts it at once (after CHECKPOINTER_AFTER_WRITES transactions): with inline
  // commits nothing else checkpoints, and a second of full-speed signing grew the WAL past its bound.
  let walCheckpointer: ReturnType<typeof startWalCheckpointer> | undefined;
  let checkpointerTimer: NodeJS.Timeout | undefined;
  let writes = 0;
  const startCheckpointer = () => {
    clearTimeout(checkpointerTimer);
    if (!closed && !walCheckpointer) walCheckpointer = startWalCheckpointer(storage.path, 200, storage.walMaxBytes, Math.max(1000, storage.busyTimeoutMs));
  };
  const wrote = () => {
    if (walCheckpointer || closed) return;
    if (++writes >= CHECKPOINTER_AFTER_WRITES) return startCheckpointer();
    if (checkpointerTimer) return;
    checkpointerTimer = setTimeout(startCheckpointer, CHECKPOINTER_DELAY_MS);
    checkpointerTimer.unref();
  };
  let stmts: ReturnType<typeof prepare> | undefined;
  const prepare = () => ({
    head: database.prepare('select seq, hash, anchor_seq, anchor_hash from audit_head where log_name = ?').raw(true),
    insert: database.prepare(`insert into audit_records (log_name, ${SELECT}) values (${COLUMNS.map(() => '?').join(', ')}, ?)`),
    setHead: database.prepare('update audit_head set seq = ?, hash = ? where log_name = ?'),
    page: database.prepare(`select ${SELECT} from audit_records where log_name = ? and seq > ? and seq <= ? order by seq limit ?`).raw(true),
    begin: database.prepare('begin immediate'),
    commit: database.prepare('commit'),
    rollback: database.prepare('rollback'),
  });
  const s = () => (stmts ??= prepare());
  let closed = false;

  /** BEGIN IMMEDIATE, retrying SQLITE_BUSY asynchronously until busyTimeoutMs. */
  async function writeTx<T>(fn: () => T): Promise<T> {
    wrote();
    if (closed) throw new HsmError('Closed', 'the audit log is closed', { details: { auditCode: 'AuditClosed' } });
    // BEGIN, fn and COMMIT run in one synchronous stretch once BEGIN succeeds: an await between
    // them would let another writeTx begin inside this transaction
    const deadline = Date.now() + storage.busyTimeoutMs;
    for (let delay = 1; ; delay = Math.min(delay * 2, 4)) {
      try {
        s().begin.run();
        break;
      } catch (error) {
        if (isSqliteBusy(error) && Date.now() < deadline) {
          await sleep(delay * (0.5 + Math.random()));
          continue;
        }
        throw error;
      }
    }
    try {
      const result = fn();
      s().commit.run();
      return result;
    } catch (error) {
      if (database.inTransaction) s().rollback.run();
      throw error;
    }
  }
  const readHead = (logName: string): Head => {
    const r = s().head.get(logName) as Row | undefined;
    if (!r) throw new HsmError('StorageCorrupted', `audit log ${logName} has no head row`, { details: { auditCode: 'AuditHeadMissing' } });
    return { seq: Number(r[0]), hash: r[1] as string, anchorSeq: Number(r[2]), anchorHash: r[3] as string };
  };
  const all = (q: string, ...params: unknown[]) => database.prepare(q).all(...params) as Record<string, unknown>[];

  return {
    dialect: 'sqlite',
    target,
    async migrate() {
      // Two processes migrating at once (Kysely's SQLite migrator takes no cross-process lock): a
      // deferred transaction that cannot upgrade gets SQLITE_BUSY, a migration row may already be
      // there. The migrations are idempotent (if not exists): retry; the next attempt finds them done.
      const deadline = Date.now() + storage.busyTimeoutMs;
      for (let attempt = 1; ; attempt++) {
        try {
          // without kysely when nothing is due (a new log, a pending or unknown migration go through its Migrator)
          if (sqliteMigrationsCurrent(database, MIGRATION_TABLE, Object.keys(migrations('sqlite')))) return;
          await runMigrations(await kyselyDb(), 'sqlite', target);
          return;
        } catch (error) {
          const code = (error as { code?: string; cause?: { code?: string } }).cause?.code ?? (error as { code?: string }).code ?? '';
          if (!code.startsWith('SQLITE_') || attempt >= 10 || Date.now() >= deadline) throw error;
          await sleep(5 + Math.random() * 20);
        }
      }
    },
    async ensureHead(logName, zero) {
      await writeTx(() => database.prepare('insert into audit_head (log_name, seq, hash, anchor_seq, anchor_hash) values (?, 0, ?, 0, ?) on conflict (log_name) do nothing').run(logName, zero, zero));
      database.pragma('busy_timeout = 0');
    },
    async appendBatch(logName, batch) {
      if (closed) throw new HsmError('Closed', 'the audit log is closed', { details: { auditCode: 'AuditClosed' } });
      if (!writer) {
        // inline: the whole transaction runs synchronously on this thread (fsync included)
        return writeTx(() => {
          const head = readHead(logName);
          let seq = head.seq;
          let prev = head.hash;
          const ins = s().insert;
          const records = batch.map((p) => {
            const r = { ...p.record, seq: ++seq, prevHash: prev } as AuditRecord;
            r.hash = recordHash(p.detailsJson === null ? r : { ...r, details: p.detailsJson });
            prev = r.hash;
            ins.run(...recordToRow(logName, r, p.detailsJson));
            return r;
          });
          s().setHead.run(seq, prev, logName);
          return records;
        });
      }
      wrote();
      const placed = await writer.append(
        logName,
        batch.map((p) => (p.detailsJson === null ? p.record : { ...p.record, details: p.detailsJson })),
      );
      return batch.map((p, i) => {
        const [seq, prevHash, hash] = placed[i]!;
        return { ...p.record, seq, prevHash, hash } as AuditRecord;
      });
    },
    async verifyParallel(logName, anchor, headSeq, checkpoints) {
      const ranges = splitRanges(anchor.seq, headSeq);
      return ranges ? stitch(await verifyRanges(target, logName, ranges, [...checkpoints]), anchor) : undefined;
    },
    async head(logName) {
      return readHead(logName);
    },
    async page(logName, afterSeq, limit, filter, toSeq) {
      if (!filter) return (s().page.all(logName, afterSeq, toSeq ?? Number.MAX_SAFE_INTEGER, limit) as Row[]).map(rowToRecord);
      const params: unknown[] = [logName, afterSeq, toSeq ?? Number.MAX_SAFE_INTEGER];
      const where = filterSql(filter, (v) => (params.push(v), '?'));
      params.push(limit);
      return (database.prepare(`select ${SELECT} from audit_records where log_name = ? and seq > ? and seq <= ?${where} order by seq limit ?`).raw(true).all(...params) as Row[]).map(rowToRecord);
    },
    async lastRecords(logName, limit) {
      return (database.prepare(`select ${SELECT} from audit_records where log_name = ? order by seq desc limit ?`).raw(true).all(logName, limit) as Row[]).map(rowToRecord);
    },
    async checkpoints(logName) {
      return all('select * from audit_checkpoints where log_name = ? order by id', logName).map(rowToCheckpoint);
    },
    async latestCheckpoint(logName) {
      const r = all('select * from audit_checkpoints where log_name = ? order by id desc limit 1', logName)[0];
      return r ? rowToCheckpoint(r) : undefined;
    },
    insertCheckpoint(logName, cp) {
      return writeTx(() => {
        readHead(logName);
        const max = Number((database.prepare('select max(size) as m from audit_checkpoints where log_name = ?').get(logName) as { m: number | null }).m ?? 0);
        if (cp.size <= max) return false;
        database
          .prepare('insert into audit_checkpoints (log_name, size, head_hash, time, key_id, algorithm, signature) values (?, ?, ?, ?, ?, ?, ?)')
          .run(logName, cp.size, cp.headHash, cp.time, cp.keyId, cp.algorithm, cp.signature);
        return true;
      });
    },
    async checkpointKeys(logName) {
      return all('select * from audit_checkpoint_keys where log_name = ? order by seq', logName).map(rowToKey);
    },
    async insertCheckpointKey(logName, k) {
      await writeTx(() => database.prepare('insert into audit_checkpoint_keys (log_name, seq, key_id, algorithm, fingerprint, spki, time) values (?, ?, ?, ?, ?, ?, ?)').run(logName, k.seq, k.keyId, k.algorithm, k.fingerprint, k.spki, k.time));
    },
    async firstSeqAtOrAfter(logName, time) {
      const r = database.prepare('select min(seq) as s from audit_records where log_name = ? and time >= ?').get(logName, time) as { s: number | null };
      return r.s === null ? undefined : Number(r.s);
    },
    async lastSeqBefore(logName, time) {
      const r = database.prepare('select max(seq) as s from audit_records where log_name = ? and time < ?').get(logName, time) as { s: number | null };
      return r.s === null ? undefined : Number(r.s);
    },
    async oldestTime(logName) {
      const r = database.prepare('select time from audit_records where log_name = ? order by seq limit 1').get(logName) as { time: string } | undefined;
      return r?.time;
    },
    async count(logName) {
      return Number((database.prepare('select count(*) as n from audit_records where log_name = ?').get(logName) as { n: number }).n);
    },
    prune(logName, throughSeq) {
      return writeTx(() => {
        const head = readHead(logName);
        if (throughSeq <= head.anchorSeq) return 0;
        const at = database.prepare('select hash from audit_records where log_name = ? and seq = ?').get(logName, throughSeq) as { hash: string } | undefined;
        if (!at) throw new HsmError('StorageCorrupted', `audit record ${throughSeq} is missing; nothing pruned`, { details: { auditCode: 'AuditPruneFailed' } });
        const n = database.prepare('delete from audit_records where log_name = ? and seq <= ?').run(logName, throughSeq).changes;
        database.prepare('update audit_head set anchor_seq = ?, anchor_hash = ? where log_name = ?').run(throughSeq, at.hash, logName);
        return n;
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      clearTimeout(checkpointerTimer);
      await writer?.close();
      if (walCheckpointer) await walCheckpointer.terminate();
      else if (checkpointerTimer) {
        // PASSIVE never waits for other connections; the WAL holds only this short process's writes
        try {
          database.pragma('wal_checkpoint(PASSIVE)');
        } catch {
          // a busy database: the next process's checkpointer will do it
        }
      }
      // kysely's SQLite driver closes the database it was given
      if (db) await db.destroy();
      else database.close();
    },
  };
}

async function openPostgres(storage: Extract<ResolvedAuditLogOptions['storage'], { kind: 'postgres' }>): Promise<AuditStore> {
  const pgLib = await loadPg();
  const target = describeTarget(storage.connectionString);
  const types = {
    getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === 20 ? (v: string) => Number(v) : pgLib.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
  };
  if (storage.schema) {
    const client = new pgLib.Client({ connectionString: storage.connectionString, types });
    try {
      await client.connect();
      await client.query(`create schema if not exists "${storage.schema}"`).catch(async (error: unknown) => {
        const exists = await client.query('select 1 from pg_namespace where nspname = $1', [storage.schema]);
        if (exists.rowCount === 0) throw error;
      });
    } catch (error) {
      throw storageError(error, 'connecting to PostgreSQL', target);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  const pool = new pgLib.Pool({ connectionString: storage.connectionString, max: storage.maxConnections, types, ...(storage.schema ? { options: `-c search_path=${storage.schema}` } : {}) });
  pool.on('error', () => undefined);
  let schema: string;
  try {
    schema = (await pool.query<{ s: string }>('select current_schema() as s')).rows[0]?.s ?? 'public';
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw storageError(error, 'connecting to PostgreSQL', target);
  }
  const { Kysely, PostgresDialect } = await loadKysely();
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  let closed = false;
  const RETRY = new Set(['40001', '40P01']);

  async function tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    if (closed) throw new HsmError('Closed', 'the audit log is closed', { details: { auditCode: 'AuditClosed' } });
    for (let attempt = 1; ; attempt++) {
      const client = await pool.connect();
      let broken = false;
      try {
        await client.query('begin');
        try {
          const result = await fn(client);
          await client.query('commit');
          return result;
        } catch (error) {
          await client.query('rollback').catch(() => {
            broken = true;
          });
          throw error;
        }
      } catch (error) {
        if (RETRY.has((error as { code?: string }).code ?? '') && attempt < 5) continue;
        throw error;
      } finally {
        client.release(broken ? true : undefined);
      }
    }
  }
  const lockHead = async (c: pg.PoolClient, logName: string): Promise<Head> => {
    const r = (await c.query({ text: 'select seq, hash, anchor_seq, anchor_hash from audit_head where log_name = $1 for update', values: [logName], rowMode: 'array' })).rows[0] as Row | undefined;
    if (!r) throw new HsmError('StorageCorrupted', `audit log ${logName} has no head row`, { details: { auditCode: 'AuditHeadMissing' } });
    return { seq: Number(r[0]), hash: r[1] as string, anchorSeq: Number(r[2]), anchorHash: r[3] as string };
  };
  const q = async (text: string, values: unknown[]) => (await pool.query({ text, values })).rows as Record<string, unknown>[];
  const qa = async (text: string, values: unknown[]) => (await pool.query({ text, values, rowMode: 'array' })).rows as Row[];
  const ncol = COLUMNS.length + 1;

  return {
    dialect: 'postgres',
    target,
    migrate: () => runMigrations(db, 'postgres', target, schema),
    async ensureHead(logName, zero) {
      await pool.query('insert into audit_head (log_name, seq, hash, anchor_seq, anchor_hash) values ($1, 0, $2, 0, $2) on conflict (log_name) do nothing', [logName, zero]);
    },
    appendBatch(logName, batch) {
      return tx(async (c) => {
        const head = await lockHead(c, logName);
        let seq = head.seq;
        let prev = head.hash;
        const records = batch.map((p) => {
          const r = { ...p.record, seq: ++seq, prevHash: prev } as AuditRecord;
          r.hash = recordHash(p.detailsJson === null ? r : { ...r, details: p.detailsJson });
          prev = r.hash;
          return r;
        });
        if (records.length === 0) return records;
        const values: unknown[] = [];
        const tuples: string[] = [];
        for (const r of records) {
          const base = values.length;
          values.push(...recordToRow(logName, r, r.details === undefined ? null : canonicalDetails(r.details)));
          tuples.push(`(${Array.from({ length: ncol }, (_, i) => `$${base + i + 1}`).join(', ')})`);
        }
        await c.query({ text: `insert into audit_records (log_name, ${SELECT}) values ${tuples.join(', ')}`, values });
        const last = records[records.length - 1]!;
        await c.query('update audit_head set seq = $1, hash = $2 where log_name = $3', [last.seq, last.hash, logName]);
        return records;
      });
    },
    async head(logName) {
      const r = (await qa('select seq, hash, anchor_seq, anchor_hash from audit_head where log_name = $1', [logName]))[0];
      if (!r) throw new HsmError('StorageCorrupted', `audit log ${logName} has no head row`, { details: { auditCode: 'AuditHeadMissing' } });
      return { seq: Number(r[0]), hash: r[1] as string, anchorSeq: Number(r[2]), anchorHash: r[3] as string };
    },
    async page(logName, afterSeq, limit, filter, toSeq) {
      const params: unknown[] = [logName, afterSeq, toSeq ?? Number.MAX_SAFE_INTEGER];
      const where = filterSql(filter, (v) => (params.push(v), `$${params.length}`));
      params.push(limit);
      return (await qa(`select ${SELECT} from audit_records where log_name = $1 and seq > $2 and seq <= $3${where} order by seq limit $${params.length}`, params)).map(rowToRecord);
    },
    async verifyParallel(logName, anchor, headSeq, checkpoints) {
      const ranges = splitRanges(anchor.seq, headSeq);
      const connection = { connectionString: storage.connectionString, ...(storage.schema ? { schema: storage.schema } : {}) };
      return ranges ? stitch(await verifyRangesPg(connection, logName, ranges, [...checkpoints]), anchor) : undefined;
    },
    async lastRecords(logName, limit) {
      return (await qa(`select ${SELECT} from audit_records where log_name = $1 order by seq desc limit $2`, [logName, limit])).map(rowToRecord);
    },
    async checkpoints(logName) {
      return (await q('select * from audit_checkpoints where log_name = $1 order by id', [logName])).map(rowToCheckpoint);
    },
    async latestCheckpoint(logName) {
      const r = (await q('select * from audit_checkpoints where log_name = $1 order by id desc limit 1', [logName]))[0];
      return r ? rowToCheckpoint(r) : undefined;
    },
    insertCheckpoint(logName, cp) {
      return tx(async (c) => {
        await lockHead(c, logName);
        const max = Number((await c.query('select coalesce(max(size), 0) as m from audit_checkpoints where log_name = $1', [logName])).rows[0].m);
        if (cp.size <= max) return false;
        await c.query('insert into audit_checkpoints (log_name, size, head_hash, time, key_id, algorithm, signature) values ($1, $2, $3, $4, $5, $6, $7)', [
          logName, cp.size, cp.headHash, cp.time, cp.keyId, cp.algorithm, cp.signature,
        ]);
        return true;
      });
    },
    async checkpointKeys(logName) {
      return (await q('select * from audit_checkpoint_keys where log_name = $1 order by seq', [logName])).map(rowToKey);
    },
    async insertCheckpointKey(logName, k) {
      await pool.query('insert into audit_checkpoint_keys (log_name, seq, key_id, algorithm, fingerprint, spki, time) values ($1, $2, $3, $4, $5, $6, $7)', [logName, k.seq, k.keyId, k.algorithm, k.fingerprint, k.spki, k.time]);
    },
    async firstSeqAtOrAfter(logName, time) {
      const r = (await q('select min(seq) as s from audit_records where log_name = $1 and time >= $2', [logName, time]))[0];
      return r?.['s'] === null || r?.['s'] === undefined ? undefined : Number(r['s']);
    },
    async lastSeqBefore(logName, time) {
      const r = (await q('select max(seq) as s from audit_records where log_name = $1 and time < $2', [logName, time]))[0];
      return r?.['s'] === null || r?.['s'] === undefined ? undefined : Number(r['s']);
    },
    async oldestTime(logName) {
      return (await q('select time from audit_records where log_name = $1 order by seq limit 1', [logName]))[0]?.['time'] as string | undefined;
    },
    async count(logName) {
      return Number((await q('select count(*) as n from audit_records where log_name = $1', [logName]))[0]!['n']);
    },
    prune(logName, throughSeq) {
      return tx(async (c) => {
        const head = await lockHead(c, logName);
        if (throughSeq <= head.anchorSeq) return 0;
        const at = (await c.query('select hash from audit_records where log_name = $1 and seq = $2', [logName, throughSeq])).rows[0] as { hash: string } | undefined;
        if (!at) throw new HsmError('StorageCorrupted', `audit record ${throughSeq} is missing; nothing pruned`, { details: { auditCode: 'AuditPruneFailed' } });
        const n = (await c.query('delete from audit_records where log_name = $1 and seq <= $2', [logName, throughSeq])).rowCount ?? 0;
        await c.query('update audit_head set anchor_seq = $1, anchor_hash = $2 where log_name = $3', [throughSeq, at.hash, logName]);
        return n;
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
    },
  };
}


