import { HsmError } from '@olocus/hsm-core';
import type { RateSpec } from './rate-limit.js';

/** What is used of a `pg` Pool (structural, so this package needs `pg` only where it is used). */
export interface PgPoolLike {
  connect(): Promise<PgClientLike>;
}
export interface PgClientLike {
  query(text: string, values?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>;
  release(error?: Error | boolean): void;
}

export interface RateLimiter {
  /** Takes one token from each bucket, or from none; false when any is empty. */
  takeAll(entries: ReadonlyArray<readonly [string, RateSpec]>): boolean | Promise<boolean>;
}

const TABLE = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Token buckets shared by every node through PostgreSQL (the registry's database): one row per
 * bucket, refilled by the database's clock so nodes with skewed clocks agree, rows locked in name
 * order within one transaction so that taking from a key's and a caller's bucket is all or
 * nothing and two nodes never deadlock. Costs one transaction per call.
 */
export class PostgresTokenBuckets implements RateLimiter {
  private constructor(
    private readonly pool: PgPoolLike,
    private readonly table: string,
  ) {}

  static async open(pool: PgPoolLike, table = 'olocus_enterprise_rate_buckets'): Promise<PostgresTokenBuckets> {
    if (!TABLE.test(table)) throw new HsmError('InvalidConfiguration', `rate-limit table name ${JSON.stringify(table)} must be lower-case letters, digits and _`, { details: { field: 'table' } });
    const client = await pool.connect();
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS ${table} (name text PRIMARY KEY, tokens double precision NOT NULL, updated_ms double precision NOT NULL)`);
    } catch (error) {
      // two nodes creating the table at once: the loser sees a unique violation on the catalog
      if ((error as { code?: string }).code !== '23505') throw error;
    } finally {
      client.release();
    }
    return new PostgresTokenBuckets(pool, table);
  }

  async takeAll(entries: ReadonlyArray<readonly [string, RateSpec]>): Promise<boolean> {
    const sorted = [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const names = sorted.map(([n]) => n);
    const capacities = sorted.map(([, s]) => s.burst ?? s.limit);
    const client = await this.pool.connect();
    let failed: Error | undefined;
    try {
      await client.query('BEGIN');
      await client.query(
        `INSERT INTO ${this.table} (name, tokens, updated_ms)
         SELECT n, c, extract(epoch from clock_timestamp()) * 1000 FROM unnest($1::text[], $2::float8[]) AS x(n, c)
         ON CONFLICT (name) DO NOTHING`,
        [names, capacities],
      );
      const { rows } = await client.query(
        `SELECT name, tokens, updated_ms, extract(epoch from clock_timestamp()) * 1000 AS now_ms FROM ${this.table} WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE`,
        [names],
      );
      const byName = new Map(rows.map((r) => [String(r.name), r]));
      const refilled = sorted.map(([name, spec]) => {
        const row = byName.get(name)!;
        const now = Number(row.now_ms);
        const capacity = spec.burst ?? spec.limit;
        const tokens = Math.min(capacity, Number(row.tokens) + (Math.max(0, now - Number(row.updated_ms)) * spec.limit) / spec.perMs);
        return { name, tokens, now };
      });
      const ok = refilled.every((r) => r.tokens >= 1);
      await client.query(
        `UPDATE ${this.table} AS b SET tokens = x.t, updated_ms = x.u FROM unnest($1::text[], $2::float8[], $3::float8[]) AS x(n, t, u) WHERE b.name = x.n`,
        [refilled.map((r) => r.name), refilled.map((r) => (ok ? r.tokens - 1 : r.tokens)), refilled.map((r) => r.now)],
      );
      await client.query('COMMIT');
      return ok;
    } catch (error) {
      failed = error as Error;
      await client.query('ROLLBACK').catch(() => undefined);
      throw new HsmError('DeviceUnavailable', `the shared rate-limit store did not answer (${(error as Error).message}); the call is refused rather than let through unlimited`, {
        cause: error,
        retryable: true,
      });
    } finally {
      client.release(failed);
    }
  }
}
