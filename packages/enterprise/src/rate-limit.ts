/**
 * Token buckets per key and per caller, in this process. A bucket holds up to `burst` tokens and
 * refills at `limit` per `per`; an operation takes one token or is refused. Buckets shared by
 * every node through the registry's PostgreSQL are `PostgresTokenBuckets` (rate-limit-pg.ts).
 */
export interface RateSpec {
  limit: number;
  /** Window in ms over which `limit` tokens refill. */
  perMs: number;
  burst?: number;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Takes one token for `name` under `spec`; false when the bucket is empty. */
  take(name: string, spec: RateSpec): boolean {
    return this.takeAll([[name, spec]]);
  }

  /**
   * Takes one token from each bucket, or from none: a call refused by the per-caller limit must
   * not use up the per-key allowance.
   */
  takeAll(entries: ReadonlyArray<readonly [string, RateSpec]>): boolean {
    const t = this.now();
    const refilled = entries.map(([name, spec]) => {
      const capacity = spec.burst ?? spec.limit;
      const bucket = this.buckets.get(name) ?? { tokens: capacity, updatedAt: t };
      const tokens = Math.min(capacity, bucket.tokens + ((t - bucket.updatedAt) * spec.limit) / spec.perMs);
      return { name, bucket: { tokens, updatedAt: t } };
    });
    const ok = refilled.every((r) => r.bucket.tokens >= 1);
    for (const r of refilled) {
      if (ok) r.bucket.tokens -= 1;
      this.buckets.set(r.name, r.bucket);
    }
    return ok;
  }
}
