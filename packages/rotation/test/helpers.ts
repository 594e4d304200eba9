import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { BackendRegistry, type BackendConfig } from '@olocus/hsm-core';
import { SoftwareBackend, softwareBackendFactory } from '@olocus/hsm-backend-software';
import type { StorageConfigInput } from '../src/index.js';

export const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = join(PACKAGE_DIR, '..', '..');
export const DIST_ENTRY = join(PACKAGE_DIR, 'dist', 'index.js');
export const CHILD_SCRIPT = join(PACKAGE_DIR, 'test', 'fixtures', 'child.mjs');

export const PG_URL = process.env['OLOCUS_TEST_PG_URL'] ?? 'postgres://olocus_test@127.0.0.1:5432/olocus_test';
export const PASSPHRASE = 'rotation-test-passphrase';
export const FAST_SCRYPT = { N: 2 ** 15, r: 8, p: 1 } as const; // the smallest N the software backend accepts

export type StorageKind = 'sqlite' | 'postgres';
export const STORAGE_KINDS: StorageKind[] = ['sqlite', 'postgres'];

/** A clock tests move by hand: no sleeping for real time. */
export class FakeClock {
  constructor(public ms = Date.UTC(2026, 0, 1, 0, 0, 0)) {}
  readonly now = (): Date => new Date(this.ms);
  advance(ms: number): void {
    this.ms += ms;
  }
}

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

export async function tempDir(label: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `olocus-rot-${label}-`));
}

let pgChecked = false;
/** Fails (never skips) with the way to get PostgreSQL when it is unreachable. */
export async function requirePostgres(): Promise<void> {
  if (pgChecked) return;
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query('select 1');
  } catch (error) {
    throw new Error(
      `PostgreSQL is not reachable at ${PG_URL} (${(error as Error).message}). Start it with: bash scripts/start-postgres.sh (from the repository root), or set OLOCUS_TEST_PG_URL.`,
    );
  } finally {
    await client.end().catch(() => undefined);
  }
  pgChecked = true;
}

const schemas: string[] = [];
const dirs: string[] = [];

/** A fresh, empty storage of the given kind: a new SQLite file, or a new PostgreSQL schema. */
export async function freshStorage(kind: StorageKind, label = 't'): Promise<StorageConfigInput> {
  if (kind === 'sqlite') {
    const dir = await tempDir(`db-${label}`);
    dirs.push(dir);
    return { kind: 'sqlite', path: join(dir, 'registry.db') };
  }
  await requirePostgres();
  const schema = `rot_${label.replace(/[^a-z0-9_]/g, '_').slice(0, 20)}_${randomBytes(5).toString('hex')}`;
  schemas.push(schema);
  return { kind: 'postgres', connectionString: PG_URL, schema, maxConnections: 4 };
}

/** Drops the schemas and folders made by this file's tests. */
export async function cleanupStorage(): Promise<void> {
  if (schemas.length > 0) {
    const client = new pg.Client({ connectionString: PG_URL });
    try {
      await client.connect();
      for (const s of schemas.splice(0)) await client.query(`drop schema if exists "${s}" cascade`);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
}

/** A raw SQL client on the same storage (to test what the storage itself enforces). */
export interface RawSql {
  exec(sqlText: string, params?: unknown[]): Promise<unknown[]>;
  close(): Promise<void>;
}

export async function rawSql(storage: StorageConfigInput): Promise<RawSql> {
  if (storage.kind === 'sqlite') {
    const { default: Sqlite } = await import('better-sqlite3');
    const db = new Sqlite(storage.path, { timeout: 5000 });
    return {
      async exec(text, params = []) {
        const stmt = db.prepare(text);
        return stmt.reader ? (stmt.all(...params) as unknown[]) : (stmt.run(...params), []);
      },
      async close() {
        db.close();
      },
    };
  }
  const client = new pg.Client({ connectionString: storage.connectionString, options: `-c search_path=${storage.schema}` });
  await client.connect();
  return {
    async exec(text, params = []) {
      let i = 0;
      const r = await client.query(text.replace(/\?/g, () => `$${++i}`), params);
      return r.rows;
    },
    async close() {
      await client.end();
    },
  };
}

export async function softwareStore(): Promise<string> {
  const dir = await tempDir('keys');
  dirs.push(dir);
  return dir;
}

export function softwareBackend(directory: string): SoftwareBackend {
  return new SoftwareBackend({ directory, scrypt: FAST_SCRYPT, cacheRevalidateMs: 0 }, { passphrase: PASSPHRASE });
}

/** Backend config for HsmManager (passphrase through the environment, as config requires). */
export function softwareBackendConfig(directory: string): BackendConfig {
  process.env['OLOCUS_ROTATION_TEST_PASSPHRASE'] = PASSPHRASE;
  return { type: 'software', options: { directory, scrypt: FAST_SCRYPT, cacheRevalidateMs: 0, passphrase: { env: 'OLOCUS_ROTATION_TEST_PASSPHRASE' } } };
}

export function softwareRegistry(): BackendRegistry {
  return new BackendRegistry().register(softwareBackendFactory);
}

export function requireDist(): void {
  if (!existsSync(DIST_ENTRY)) throw new Error(`${DIST_ENTRY} is missing: run "pnpm build" in packages/rotation first (child-process tests run the built package)`);
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last JSON line the child printed. */
  result?: Record<string, unknown>;
}

export interface ChildHandle {
  /** Resolves when the child printed "ready". */
  ready: Promise<void>;
  go(): void;
  done: Promise<ChildResult>;
}

/** Runs test/fixtures/child.mjs with a JSON config; with `barrier` it waits for go() after "ready". */
export function runChild(config: Record<string, unknown>, env: Record<string, string> = {}): ChildHandle {
  requireDist();
  const child = spawn(process.execPath, [CHILD_SCRIPT], {
    cwd: PACKAGE_DIR,
    env: { ...process.env, ...env, OLOCUS_CHILD_CONFIG: JSON.stringify(config) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let readyResolve!: () => void;
  const ready = new Promise<void>((r) => (readyResolve = r));
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (stdout.split('\n').includes('ready')) readyResolve();
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<ChildResult>((resolve) => {
    child.on('close', (code, signal) => {
      readyResolve();
      const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{'));
      const last = lines[lines.length - 1];
      resolve({ code, signal, stdout, stderr, ...(last ? { result: JSON.parse(last) as Record<string, unknown> } : {}) });
    });
  });
  return {
    ready,
    go: () => {
      child.stdin.write('go\n');
      child.stdin.end();
    },
    done,
  };
}
