import { resolve } from 'node:path';
import { HsmError } from '@olocus/hsm-core';
import { CedarAuthorizer, type PolicySource } from './cedar.js';
import type { PgPoolLike } from './rate-limit-pg.js';

/**
 * Cedar policies kept in the registry's database (SQLite or PostgreSQL) instead of files, so that
 * every node reads the same set and every change is a new, kept version. A policy is named by
 * its scope (`global`, or an application id) and a name; `put` adds a version (checked against
 * the schema first: a policy that does not parse never lands), `remove` adds a tombstone version,
 * nothing is ever overwritten. Loaded policies are named `registry:SCOPE/NAME@vN`, which is what
 * errors and a decision's determining policies show.
 */
export interface StoredPolicy {
  scope: string;
  name: string;
  version: number;
  /** null: the policy was removed at this version. */
  text: string | null;
  createdAt: Date;
  createdBy: string;
}

/** The SQL the store needs, over either database. `?` placeholders; the PostgreSQL adapter numbers them. */
interface PolicyDb {
  all(sql: string, params: unknown[]): Promise<Array<Record<string, unknown>>>;
  run(sql: string, params: unknown[]): Promise<void>;
  /** Runs `fn` in a transaction that serialises writers (BEGIN IMMEDIATE / a table lock). */
  writing<T>(fn: (db: Omit<PolicyDb, 'writing' | 'close'>) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

const TABLE = 'olocus_enterprise_policies';
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SCHEMA_SQL = `CREATE TABLE IF NOT EXISTS ${TABLE} (scope TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, text TEXT, created_at TEXT NOT NULL, created_by TEXT NOT NULL, PRIMARY KEY (scope, name, version))`;

export type PolicyStoreStorage = { kind: 'sqlite'; path: string } | { kind: 'postgres'; connectionString: string; schema?: string };

function checkName(field: 'scope' | 'name', value: string): void {
  if (typeof value !== 'string' || !NAME.test(value)) {
    throw new HsmError('InvalidArgument', `policy ${field} ${JSON.stringify(String(value).slice(0, 64))} must be 1-64 letters, digits, '.', '_' or '-'`, { details: { field } });
  }
}

export class PolicyStore {
  private constructor(private readonly db: PolicyDb) {}

  /** Opens (and creates if needed) the policy table in the registry's database. */
  static async open(storage: PolicyStoreStorage): Promise<PolicyStore> {
    const db = storage.kind === 'sqlite' ? await sqliteDb(storage.path) : await postgresDb(storage.connectionString, storage.schema);
    return new PolicyStore(db);
  }

  /**
   * Adds a version of a policy. The text is checked against the Cedar schema first (an error
   * names `registry:SCOPE/NAME` and the line); an unchanged text adds nothing and returns the
   * current version.
   */
  async put(scope: string, name: string, text: string, actor: string): Promise<StoredPolicy> {
    checkName('scope', scope);
    checkName('name', name);
    CedarAuthorizer.check([{ file: `registry:${scope}/${name}`, text }]);
    return this.db.writing(async (db) => {
      const latest = (await db.all(`SELECT version, text FROM ${TABLE} WHERE scope = ? AND name = ? ORDER BY version DESC LIMIT 1`, [scope, name]))[0];
      if (latest && latest.text === text) return (await this.history(scope, name, db)).at(-1)!;
      const version = latest ? Number(latest.version) + 1 : 1;
      const createdAt = new Date();
      await db.run(`INSERT INTO ${TABLE} (scope, name, version, text, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)`, [scope, name, version, text, createdAt.toISOString(), actor]);
      return { scope, name, version, text, createdAt, createdBy: actor };
    });
  }

  /** Removes a policy from the current set (a tombstone version; its history stays). */
  async remove(scope: string, name: string, actor: string): Promise<StoredPolicy> {
    checkName('scope', scope);
    checkName('name', name);
    return this.db.writing(async (db) => {
      const latest = (await db.all(`SELECT version, text FROM ${TABLE} WHERE scope = ? AND name = ? ORDER BY version DESC LIMIT 1`, [scope, name]))[0];
      if (!latest || latest.text === null) throw new HsmError('KeyNotFound', `no policy ${scope}/${name} in the registry`, { details: { field: 'name' } });
      const version = Number(latest.version) + 1;
      const createdAt = new Date();
      await db.run(`INSERT INTO ${TABLE} (scope, name, version, text, created_at, created_by) VALUES (?, ?, ?, NULL, ?, ?)`, [scope, name, version, createdAt.toISOString(), actor]);
      return { scope, name, version, text: null, createdAt, createdBy: actor };
    });
  }

  /** Every version of one policy, oldest first. */
  async history(scope: string, name: string, db: Pick<PolicyDb, 'all'> = this.db): Promise<StoredPolicy[]> {
    const rows = await db.all(`SELECT scope, name, version, text, created_at, created_by FROM ${TABLE} WHERE scope = ? AND name = ? ORDER BY version`, [scope, name]);
    return rows.map(toStored);
  }

  /** The current version of every policy that is not removed, by scope and name. */
  async current(): Promise<StoredPolicy[]> {
    const rows = await this.db.all(
      `SELECT p.scope, p.name, p.version, p.text, p.created_at, p.created_by FROM ${TABLE} p
       JOIN (SELECT scope, name, MAX(version) AS version FROM ${TABLE} GROUP BY scope, name) m ON p.scope = m.scope AND p.name = m.name AND p.version = m.version
       WHERE p.text IS NOT NULL ORDER BY p.scope, p.name`,
      [],
    );
    return rows.map(toStored);
  }

  /**
   * Loads the current policies into an authorizer: scope `global` as global policies, every other
   * scope as that application's set (added to what files already gave it).
   */
  async loadInto(authorizer: CedarAuthorizer): Promise<{ global: number; applications: Record<string, number> }> {
    const byScope = new Map<string, PolicySource[]>();
    for (const p of await this.current()) {
      const list = byScope.get(p.scope) ?? [];
      list.push({ file: `registry:${p.scope}/${p.name}@v${p.version}`, text: p.text! });
      byScope.set(p.scope, list);
    }
    const applications: Record<string, number> = {};
    let global = 0;
    for (const [scope, files] of byScope) {
      if (scope === 'global') {
        authorizer.loadGlobal([...authorizer.globalSources(), ...files]);
        global = files.length;
      } else {
        authorizer.loadApplication(scope, [...authorizer.applicationSources(scope), ...files]);
        applications[scope] = files.length;
      }
    }
    return { global, applications };
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

function toStored(r: Record<string, unknown>): StoredPolicy {
  return { scope: String(r.scope), name: String(r.name), version: Number(r.version), text: r.text === null ? null : String(r.text), createdAt: new Date(String(r.created_at)), createdBy: String(r.created_by) };
}

/** The last write queued per SQLite file in this process. */
const sqliteWriters = new Map<string, Promise<void>>();

async function sqliteDb(file: string): Promise<PolicyDb> {
  const path = resolve(file);
  let Database: typeof import('better-sqlite3');
  try {
    Database = (await import('better-sqlite3')).default;
  } catch (cause) {
    throw new HsmError('InitializationFailed', `policies in the registry database need the better-sqlite3 package (${(cause as Error).message})`, { cause });
  }
  const db = new Database(path);
  db.pragma('busy_timeout = 5000');
  db.exec(SCHEMA_SQL);
  const ops = {
    all: async (sql: string, params: unknown[]) => db.prepare(sql).all(...params) as Array<Record<string, unknown>>,
    run: async (sql: string, params: unknown[]) => {
      db.prepare(sql).run(...params);
    },
  };
  return {
    ...ops,
    writing(fn) {
      // Writers in this process take turns (better-sqlite3 is synchronous: a second connection's
      // BEGIN IMMEDIATE would block the thread the first needs to commit); BEGIN IMMEDIATE then
      // takes the file's write lock against other processes, so two writers never read the same
      // latest version.
      const turn = (sqliteWriters.get(path) ?? Promise.resolve()).then(async () => {
        db.exec('BEGIN IMMEDIATE');
        try {
          const result = await fn(ops);
          db.exec('COMMIT');
          return result;
        } catch (error) {
          db.exec('ROLLBACK');
          throw error;
        }
      });
      const settled = turn.then(
        () => undefined,
        () => undefined,
      );
      sqliteWriters.set(path, settled);
      void settled.then(() => {
        if (sqliteWriters.get(path) === settled) sqliteWriters.delete(path);
      });
      return turn;
    },
    async close() {
      db.close();
    },
  };
}

async function postgresDb(connectionString: string, schema?: string): Promise<PolicyDb> {
  let pg: { default: { Pool: new (o: object) => PgPoolLike & { end(): Promise<void> } } };
  try {
    pg = (await import('pg')) as unknown as typeof pg;
  } catch (cause) {
    throw new HsmError('InitializationFailed', `policies in the registry's PostgreSQL need the pg package (${(cause as Error).message})`, { cause });
  }
  if (schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new HsmError('InvalidConfiguration', `schema ${JSON.stringify(schema)} must be lower-case letters, digits and _`, { details: { field: 'schema' } });
  const table = schema ? `${schema}.${TABLE}` : TABLE;
  const pool = new pg.default.Pool({ connectionString, max: 2 });
  const numbered = (sql: string) => {
    let i = 0;
    return sql.replaceAll(TABLE, table).replace(/\?/g, () => `$${++i}`);
  };
  const onClient = async <T>(fn: (client: Awaited<ReturnType<PgPoolLike['connect']>>) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    let failed: Error | undefined;
    try {
      return await fn(client);
    } catch (error) {
      failed = error as Error;
      throw error;
    } finally {
      client.release(failed);
    }
  };
  await onClient(async (client) => {
    try {
      await client.query(numbered(SCHEMA_SQL));
    } catch (error) {
      // two nodes creating the table at once: the loser sees a unique violation on the catalog
      if ((error as { code?: string }).code !== '23505') throw error;
    }
  });
  return {
    all: (sql, params) => onClient(async (c) => (await c.query(numbered(sql), params)).rows),
    run: (sql, params) => onClient(async (c) => void (await c.query(numbered(sql), params))),
    writing: (fn) =>
      onClient(async (client) => {
        await client.query('BEGIN');
        try {
          // one writer at a time: versions are numbered from the latest, which two writers must not both read
          await client.query(`LOCK TABLE ${table} IN SHARE ROW EXCLUSIVE MODE`);
          const result = await fn({
            all: async (sql, params) => (await client.query(numbered(sql), params)).rows,
            run: async (sql, params) => void (await client.query(numbered(sql), params)),
          });
          await client.query('COMMIT');
          return result;
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw error;
        }
      }),
    close: () => pool.end(),
  };
}
