import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll } from 'vitest';

export const PG_URL = process.env['OLOCUS_TEST_PG_URL'] ?? 'postgres://olocus_test@127.0.0.1:5432/olocus_test';

const dirs: string[] = [];
const schemas: string[] = [];

afterAll(async () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  if (schemas.length > 0) {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    for (const s of schemas) await c.query(`drop schema if exists "${s}" cascade`);
    await c.end();
  }
});

export function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `olocus-audit-${tag}-`));
  dirs.push(d);
  return d;
}

/** A fresh PostgreSQL schema (dropped after the file's tests); fails with how to start the server. */
export async function pgSchema(tag: string): Promise<string> {
  const c = new pg.Client({ connectionString: PG_URL });
  try {
    await c.connect();
  } catch (error) {
    throw new Error(`these tests need PostgreSQL at ${new URL(PG_URL).host} (set OLOCUS_TEST_PG_URL, or start it: bash scripts/start-postgres.sh): ${(error as Error).message}`);
  }
  const schema = `audit_${tag}_${randomBytes(4).toString('hex')}`;
  await c.query(`create schema "${schema}"`);
  await c.end();
  schemas.push(schema);
  return schema;
}

/** Raw SQL against the store, as an attacker with database access would run it. */
export interface Raw {
  exec(sql: string, params?: unknown[]): Promise<void>;
  all<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

export function rawSqlite(path: string): Raw {
  const db = new BetterSqlite3(path, { timeout: 5000 });
  return {
    async exec(sql, params = []) {
      db.prepare(sql).run(...params);
    },
    async all(sql, params = []) {
      return db.prepare(sql).all(...params) as never;
    },
    async close() {
      db.close();
    },
  };
}

export function rawPg(schema: string): Raw {
  const pool = new pg.Pool({ connectionString: PG_URL, max: 1, options: `-c search_path=${schema}` });
  const toPg = (sql: string) => {
    let i = 0;
    return sql.replace(/\?/g, () => `$${++i}`);
  };
  return {
    async exec(sql, params = []) {
      await pool.query(toPg(sql), params);
    },
    async all(sql, params = []) {
      return (await pool.query(toPg(sql), params)).rows as never;
    },
    async close() {
      await pool.end();
    },
  };
}

/** 'sqlite-thread': SQLite with commits in the writer thread (writerThread: true). */
export type StorageKind = 'sqlite' | 'sqlite-thread' | 'postgres';

export async function storageFor(
  kind: StorageKind,
  tag: string,
): Promise<{ storage: { kind: 'sqlite'; path: string; writerThread?: boolean } | { kind: 'postgres'; connectionString: string; schema: string }; raw: () => Raw }> {
  if (kind !== 'postgres') {
    const path = join(tempDir(tag), 'audit.db');
    return { storage: { kind: 'sqlite', path, ...(kind === 'sqlite-thread' ? { writerThread: true } : {}) }, raw: () => rawSqlite(path) };
  }
  const schema = await pgSchema(tag);
  return { storage: { kind: 'postgres', connectionString: PG_URL, schema }, raw: () => rawPg(schema) };
}
