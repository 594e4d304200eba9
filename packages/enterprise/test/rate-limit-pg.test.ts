/**
 * Rate limits shared through PostgreSQL: N per window let through and the rest refused, per key
 * and per caller, within one process and across two processes on one database.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendRegistry } from '@olocus/hsm-core';
import { memoryBackendFactory } from '@olocus/hsm-core/testing';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { PostgresTokenBuckets, openEnterprise } from '../src/index.js';

const PG_URL = process.env.OLOCUS_TEST_PG_URL ?? 'postgres://olocus_test@127.0.0.1:5432/olocus_test';
const table = `olocus_rl_test_${process.pid}_${randomBytes(3).toString('hex')}`;
const pool = new pg.Pool({ connectionString: PG_URL, max: 8 });
const run = promisify(execFile);

beforeAll(async () => {
  try {
    await pool.query('SELECT 1');
  } catch (error) {
    throw new Error(`PostgreSQL is not reachable at ${PG_URL} (${(error as Error).message}). Start it with: bash scripts/start-postgres.sh (from the repository root), or set OLOCUS_TEST_PG_URL.`);
  }
});
afterAll(async () => {
  await pool.query(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
  await pool.end();
});

describe('PostgresTokenBuckets', () => {
  it('lets N through per window and refuses the rest, takes from every bucket or none, refills with time', async () => {
    const buckets = await PostgresTokenBuckets.open(pool, table);
    const spec = { limit: 10, perMs: 600_000 };
    const results = await Promise.all(Array.from({ length: 15 }, () => buckets.takeAll([['key:one', spec]])));
    expect(results.filter(Boolean).length).toBe(10);
    // a caller bucket of 1: the second call is refused and the key bucket keeps its token
    await pool.query(`DELETE FROM ${table}`);
    expect(await buckets.takeAll([['key:two', spec], ['caller:c', { limit: 1, perMs: 600_000 }]])).toBe(true);
    expect(await buckets.takeAll([['key:two', spec], ['caller:c', { limit: 1, perMs: 600_000 }]])).toBe(false);
    const tokens = (await pool.query(`SELECT tokens FROM ${table} WHERE name = 'key:two'`)).rows[0].tokens;
    expect(tokens).toBeGreaterThanOrEqual(9);
    expect(tokens).toBeLessThan(9.01);
    // 20 per second: the bucket refills while the transactions queue for its row, so the bound
    // is 20 plus what the elapsed time refilled (measured, not assumed: the machine is shared)
    const fast = { limit: 20, perMs: 1000 };
    const burst = async (n: number) => {
      const started = performance.now();
      const got = (await Promise.all(Array.from({ length: n }, () => buckets.takeAll([['key:fast', fast]])))).filter(Boolean).length;
      return { got, refill: Math.ceil(((performance.now() - started) * 20) / 1000) };
    };
    const first = await burst(40);
    expect(first.got).toBeGreaterThanOrEqual(20);
    expect(first.got).toBeLessThanOrEqual(20 + first.refill);
    const pause = performance.now();
    await new Promise((r) => setTimeout(r, 300));
    const second = await burst(40);
    const refilled = Math.ceil(((performance.now() - pause) * 20) / 1000);
    expect(second.got).toBeGreaterThanOrEqual(5);
    expect(second.got).toBeLessThanOrEqual(refilled + 1);
  });

  it('two processes on one database share the key bucket and keep their own caller buckets', async () => {
    const dist = join(import.meta.dirname, '..', 'dist', 'index.js');
    if (!existsSync(dist)) throw new Error('this test runs the built package in child processes: pnpm --filter @olocus/hsm-enterprise build');
    await PostgresTokenBuckets.open(pool, table);
    await pool.query(`DELETE FROM ${table}`);
    const script = join(import.meta.dirname, 'fixtures', 'pg-taker.mjs');
    const env = { ...process.env, OLOCUS_TEST_PG_URL: PG_URL };
    const [a, b] = await Promise.all(['node-a', 'node-b'].map((caller) => run(process.execPath, [script, table, caller, '20'], { env, timeout: 60_000 })));
    const granted = [a!, b!].map((r) => (JSON.parse(r.stdout) as { granted: number }).granted);
    // 25 for the key across both; at most 15 each (their caller limit)
    expect(granted[0]! + granted[1]!).toBe(25);
    for (const g of granted) expect(g).toBeLessThanOrEqual(15);
    for (const g of granted) expect(g).toBeGreaterThanOrEqual(10);
  });

  it('openEnterprise keeps the buckets in the registry database when it is PostgreSQL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'olocus-ent-pg-'));
    const schema = `olocus_ent_${process.pid}_${randomBytes(3).toString('hex')}`;
    const registry = new BackendRegistry();
    registry.register(memoryBackendFactory());
    const appended: unknown[] = [];
    const ent = await openEnterprise({
      config: { pool: { members: [{ name: 'm', backend: { type: 'memory' } }] } },
      baseDir: dir,
      storage: { kind: 'postgres', connectionString: PG_URL, schema },
      audit: { append: async (e) => appended.push(e) },
      registry,
    });
    const app = `rl${randomBytes(4).toString('hex')}`;
    try {
      ent.authorizer.loadApplication(app, [{ file: 'a.cedar', text: `permit (principal == Olocus::Application::"${app}", action, resource);` }]);
      await ent.manager.generateApplicationKey(app, { algorithm: 'Ed25519', rateLimits: { perKey: { limit: 3, per: '600s' } } }, { actor: 'alice' });
      const outcomes = await Promise.allSettled(Array.from({ length: 5 }, () => ent.manager.signWithPolicyEnforcement(app, new Uint8Array(8), { principal: { type: 'Application', id: app } })));
      expect(outcomes.filter((o) => o.status === 'fulfilled').length).toBe(3);
      const row = await pool.query('SELECT tokens FROM olocus_enterprise_rate_buckets WHERE name = $1', [`key:${app}`]);
      expect(row.rows[0].tokens).toBeLessThan(1);
    } finally {
      await ent.close();
      await pool.query('DELETE FROM olocus_enterprise_rate_buckets WHERE name LIKE $1', [`%${app}%`]);
      await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
