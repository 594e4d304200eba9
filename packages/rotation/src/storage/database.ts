import BetterSqlite3 from 'better-sqlite3';
import type pg from 'pg';

/** pg is loaded only when a PostgreSQL store is opened: a SQLite-only process (a one-shot CLI command) never pays for it. */
const loadPg = async (): Promise<typeof pg> => (await import('pg')).default;
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql } from 'kysely';
import { HsmError, isSqliteBusy, retryWhile, sqliteMigrationsCurrent } from '@olocus/hsm-core';
import type { StorageConfig } from '../config.js';
import type { Database } from './schema.js';
import { migrationProvider, type DialectName } from './migrations.js';
import { MIGRATION_NAMES, MIGRATION_TABLE } from './migration-names.js';

/** The registry's database: Kysely plus the few things that differ between SQLite and PostgreSQL. */
export interface Store {
  readonly dialect: DialectName;
  readonly db: Kysely<Database>;
  /**
   * Runs `fn` in one write transaction. SQLite: `BEGIN IMMEDIATE` (takes the single write lock
   * up front, so two processes never deadlock upgrading a read lock; waits up to busy_timeout).
   * PostgreSQL: READ COMMITTED with explicit row locks (`FOR UPDATE`) where a decision is read
   * before it is written; deadlocks and serialization failures are retried.
   */
  tx<T>(fn: (trx: Kysely<Database>) => Promise<T>): Promise<T>;
  /** Applies pending migrations. */
  migrate(): Promise<void>;
  close(): Promise<void>;
}

const commitHooks = new WeakMap<object, Array<() => Promise<void>>>();

/**
 * Runs `hook` inside the transaction `trx`, after its work and just before COMMIT; a rejection
 * rolls the transaction back. Used to write a change's audit record while the change can still
 * be undone, so the two are never separated by a crash.
 */
export function beforeCommit(trx: object, hook: () => Promise<void>): void {
  const hooks = commitHooks.get(trx);
  if (hooks) hooks.push(hook);
  else commitHooks.set(trx, [hook]);
}

/** Whether an error is a unique-constraint violation (one Active version, one open rotation...). */
export function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string } | undefined;
  return e?.code === '23505' || e?.code === 'SQLITE_CONSTRAINT_UNIQUE' || e?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

function describeTarget(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    return `${url.hostname}:${url.port || '5432'}${url.pathname}`;
  } catch {
    return '(unparseable connection string)';
  }
}

function storageError(error: unknown, what: string, target: string): HsmError {
  if (error instanceof HsmError) return error;
  const e = error as NodeJS.ErrnoException & { code?: string };
  const code = e?.code ?? '';
  const unreachable = ['ECONNREFUSED', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET', '57P03', '3D000', '28000', '28P01'].includes(code);
  return new HsmError(unreachable ? 'DeviceUnavailable' : 'Internal', `${what} ${target} failed: ${code ? `${code} ` : ''}${e?.message ?? String(error)}`, {
    cause: error,
    retryable: unreachable,
    details: { rotationCode: 'StorageUnavailable', target, errorCode: code || undefined },
  });
}

export async function openStore(config: StorageConfig): Promise<Store> {
  return config.kind === 'sqlite' ? openSqlite(config) : openPostgres(config);
}

async function openSqlite(config: Extract<StorageConfig, { kind: 'sqlite' }>): Promise<Store> {
  let database: BetterSqlite3.Database;
  try {
    database = new BetterSqlite3(config.path, { timeout: config.busyTimeout });
  } catch (error) {
    throw storageError(error, 'opening SQLite database', config.path);
  }
  try {
    // Two processes opening a new registry at once can get SQLITE_BUSY from the switch to WAL at
    // once, without SQLite's busy handler being called (it is not where waiting could deadlock).
    await retryWhile(() => database.pragma('journal_mode = WAL'), isSqliteBusy, { timeoutMs: Math.max(config.busyTimeout, 1000), firstDelayMs: 5 });
    database.pragma(`synchronous = ${config.synchronous}`);
    database.pragma('foreign_keys = ON');
  } catch (error) {
    database.close();
    throw storageError(error, 'opening SQLite database', config.path);
  }
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database }) });
  // Kysely's Migrator finds a current schema too, after reading the table list of the whole
  // database (a few ms of every one-shot command): asked first, it runs only when something is due
  return makeStore('sqlite', db, config.path, undefined, () => sqliteMigrationsCurrent(database, MIGRATION_TABLE, MIGRATION_NAMES));
}

async function openPostgres(config: Extract<StorageConfig, { kind: 'postgres' }>): Promise<Store> {
  const pgLib = await loadPg();
  const target = describeTarget(config.connectionString);
  // BIGINT (oid 20) holds millisecond timestamps and counters: read them as numbers.
  const types = {
    getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
      oid === 20 ? (value: string) => Number(value) : pgLib.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
  };
  if (config.schema) {
    const client = new pgLib.Client({ connectionString: config.connectionString, types });
    try {
      await client.connect();
      await client.query(`create schema if not exists "${config.schema}"`).catch(async (error: unknown) => {
        // Two processes creating the schema at once: the loser sees a unique violation.
        const exists = await client.query('select 1 from pg_namespace where nspname = $1', [config.schema]);
        if (exists.rowCount === 0) throw error;
      });
    } catch (error) {
      throw storageError(error, 'connecting to PostgreSQL at', target);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  const pool = new pgLib.Pool({
    connectionString: config.connectionString,
    max: config.maxConnections,
    types,
    ...(config.schema ? { options: `-c search_path=${config.schema}` } : {}),
  });
  pool.on('error', () => undefined); // an idle client's connection dropped: the pool replaces it
  let schema: string;
  try {
    const client = await pool.connect();
    try {
      schema = (await client.query<{ schema: string }>('select current_schema() as schema')).rows[0]?.schema ?? 'public';
    } finally {
      client.release();
    }
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw storageError(error, 'connecting to PostgreSQL at', target);
  }
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  // Kysely's Migrator looks its tables up across every schema unless told which one: name it.
  return makeStore('postgres', db, target, schema);
}

const RETRY_PG = new Set(['40001', '40P01']);

function makeStore(dialect: DialectName, db: Kysely<Database>, target: string, migrationTableSchema?: string, schemaCurrent?: () => boolean): Store {
  let closed = false;
  const store: Store = {
    dialect,
    db,
    async tx<T>(fn: (trx: Kysely<Database>) => Promise<T>): Promise<T> {
      if (closed) throw new HsmError('Closed', 'the key registry is closed');
      for (let attempt = 1; ; attempt++) {
        try {
          return await db.connection().execute(async (conn) => {
            await sql.raw(dialect === 'sqlite' ? 'begin immediate' : 'begin').execute(conn);
            try {
              const result = await fn(conn);
              for (const hook of commitHooks.get(conn) ?? []) await hook();
              await sql.raw('commit').execute(conn);
              return result;
            } catch (error) {
              await sql.raw('rollback').execute(conn).catch(() => undefined);
              throw error;
            } finally {
              commitHooks.delete(conn);
            }
          });
        } catch (error) {
          const code = (error as { code?: string }).code ?? '';
          if (dialect === 'postgres' && RETRY_PG.has(code) && attempt < 5) continue;
          throw error;
        }
      }
    },
    async migrate() {
      try {
        if (schemaCurrent?.()) return;
      } catch {
        // unreadable here (busy, locked): the Migrator below decides, with its own lock and errors
      }
      const migrator = new Migrator({ db, provider: migrationProvider(dialect), ...(migrationTableSchema ? { migrationTableSchema } : {}) });
      const { error, results } = await migrator.migrateToLatest();
      if (error) {
        const failed = results?.find((r) => r.status === 'Error')?.migrationName;
        throw storageError(error, `migrating (${failed ?? 'lock'})`, target);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
    },
  };
  return store;
}
