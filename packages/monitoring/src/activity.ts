import { HsmError } from '@olocus/hsm-core';

/**
 * Installation-wide activity: every process that uses the keys appends to one audit log, so
 * the operator's view (rate, failures, latency, login failures) is read from there rather than
 * from the counters of the one process that serves the page. Structurally typed: monitoring
 * has no run-time dependency on `@olocus/hsm-compliance`; an adapter maps the log to
 * `ActivitySource` (its `AuditRecord` already fits `ActivityRecord`).
 */

/** One recorded event, as the aggregator reads it (`@olocus/hsm-compliance`'s AuditRecord fits). */
export interface ActivityRecord {
  /** Position in the source; strictly increasing, used to read only what is new. */
  seq: number;
  /** ISO 8601 time or a Date. */
  time: string | Date;
  /** `key.sign`, `key.verify`, `key.generate`, `key.access`, `key.destroy`, `auth.failure`, ... */
  type: string;
  outcome: 'success' | 'failure';
  /** The process or node that performed it (the audit log's `host:pid`). */
  origin?: string;
  actor?: string;
  backend?: string;
  keyId?: string;
  algorithm?: string;
  latencyMs?: number;
  errorCode?: string;
  details?: Record<string, string | number | boolean | null> | undefined;
}

export interface ActivityQuery {
  /** Records at or after this time (used for the first read). */
  from: Date;
  /** Only records with a greater seq (used for every later read). */
  afterSeq?: number;
}

/** Where activity comes from: e.g. the audit log, through a small adapter. */
export interface ActivitySource {
  /** Shown on the page, e.g. "audit log olocus (sqlite /var/lib/olocus/audit.db)". */
  readonly description?: string;
  /** Records in seq order matching the query. Never asked for more than one window at a time. */
  read(query: ActivityQuery): AsyncIterable<ActivityRecord>;
}

/** Record types that are key operations (counted in rate, failures and latency). */
export const OPERATION_TYPES = ['key.sign', 'key.verify', 'key.generate', 'key.access', 'key.destroy'] as const;
const OPERATION_SET = new Set<string>(OPERATION_TYPES);

export interface ActivityAggregatorOptions {
  /** Omit to feed the aggregator with `observe()` only (this process's own operations). */
  source?: ActivitySource;
  /** How far back the view reaches. Default 3600000 (1 h). */
  windowMs?: number;
  /** Width of one chart point. Default 60000 (1 min). */
  bucketMs?: number;
  /** Record types whose latency is charted. Default ['key.sign']. */
  latencyTypes?: string[];
  /** Source reads are joined and not repeated within this many ms. Default 1000. */
  minRefreshMs?: number;
  /**
   * Operations whose `details.purpose` is one of these are left out: the health monitor's canary
   * signatures are probes, not traffic. Default ['health-canary'].
   */
  ignorePurposes?: string[];
  /** Login failures kept for the "recent" list. Default 20. */
  recentLoginFailures?: number;
  now?: () => number;
}

/** Latencies per bucket: a sparse log-scale histogram (2 % relative error), so memory stays bounded at any rate. */
const GROWTH = 1.04;
const LOG_GROWTH = Math.log(GROWTH);
const MIN_MS = 0.001;
function binOf(ms: number): number {
  return ms <= MIN_MS ? 0 : Math.round(Math.log(ms / MIN_MS) / LOG_GROWTH);
}
function binValue(bin: number): number {
  return MIN_MS * GROWTH ** bin;
}

class LatencyHistogram {
  readonly bins = new Map<number, number>();
  count = 0;
  sum = 0;
  max = 0;
  add(ms: number): void {
    const b = binOf(ms);
    this.bins.set(b, (this.bins.get(b) ?? 0) + 1);
    this.count++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }
  merge(other: LatencyHistogram): void {
    for (const [b, n] of other.bins) this.bins.set(b, (this.bins.get(b) ?? 0) + n);
    this.count += other.count;
    this.sum += other.sum;
    if (other.max > this.max) this.max = other.max;
  }
  quantile(q: number): number | undefined {
    if (this.count === 0) return undefined;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (const b of [...this.bins.keys()].sort((x, y) => x - y)) {
      seen += this.bins.get(b)!;
      if (seen >= rank) return Math.min(binValue(b), this.max);
    }
    return this.max;
  }
}

interface TypeStats {
  success: number;
  failure: number;
  latency: LatencyHistogram;
}

interface Bucket {
  start: number;
  types: Map<string, TypeStats>;
  errors: Map<string, number>;
  origins: Map<string, { operations: number; failures: number; lastSeen: number }>;
  loginFailures: number;
}

export interface LoginFailureRecord {
  time: string;
  origin?: string;
  actor?: string;
  backend?: string;
  errorCode?: string;
  operation?: string;
}

export interface ActivityPoint {
  /** Start of the minute (ISO). */
  start: string;
  success: number;
  failure: number;
  /** Latency of `latencyTypes` in that minute; absent when none ran. */
  p50Ms?: number;
  p99Ms?: number;
}

export interface ActivityView {
  source: string;
  /** False when the view holds only this process's own operations (no source connected). */
  connected: boolean;
  windowMs: number;
  bucketMs: number;
  from: string;
  to: string;
  /** Key operations in the window. */
  totals: { success: number; failure: number; perMinute: number };
  operations: Array<{ type: string; success: number; failure: number; meanMs?: number; p50Ms?: number; p99Ms?: number; maxMs?: number }>;
  latencyTypes: string[];
  /** p50/p99 of `latencyTypes` over the window. */
  latency: { count: number; p50Ms?: number; p99Ms?: number; maxMs?: number };
  errors: Array<{ type: string; code: string; count: number }>;
  processes: Array<{ origin: string; operations: number; failures: number; lastSeen: string }>;
  loginFailures: { count: number; recent: LoginFailureRecord[] };
  /** One point per bucket, oldest first, covering the whole window (empty minutes are zeros). */
  series: ActivityPoint[];
  /** Highest seq read so far. */
  lastSeq: number;
  /** When the last read of the source failed: why (the view shows what was read before). */
  readError?: string;
  lastReadAt?: string;
}

const MAX_LOGIN_TIMES = 100_000;
const timeOf = (t: string | Date): number => (t instanceof Date ? t.getTime() : Date.parse(t));

/**
 * Per-minute aggregates of an activity source over a sliding window (default the last hour).
 * The first read covers the window; later reads ask only for records after the last seq seen,
 * so a refresh costs what was appended since. Buckets older than the window are dropped.
 */
export class ActivityAggregator {
  readonly windowMs: number;
  readonly bucketMs: number;
  readonly latencyTypes: string[];
  private readonly source: ActivitySource | undefined;
  private readonly now: () => number;
  private readonly minRefreshMs: number;
  private readonly recentMax: number;
  private readonly ignorePurposes: Set<string>;
  private readonly buckets = new Map<number, Bucket>();
  /** Per type since this aggregator started (monotonic, unlike the window): for the alert rules. */
  private readonly cumulative = new Map<string, { success: number; failure: number; timedCount: number; timedSumMs: number }>();
  private readonly recentLogins: LoginFailureRecord[] = [];
  private readonly loginTimes: number[] = [];
  private loginTotal = 0;
  private lastSeq = 0;
  private started = false;
  private lastRead = 0;
  private reading: Promise<void> | undefined;
  private readError: string | undefined;
  private lastReadAt: number | undefined;

  constructor(options: ActivityAggregatorOptions = {}) {
    this.windowMs = positive(options.windowMs ?? 3_600_000, 'windowMs');
    this.bucketMs = positive(options.bucketMs ?? 60_000, 'bucketMs');
    if (this.windowMs / this.bucketMs > 10_000) throw new HsmError('InvalidArgument', 'windowMs / bucketMs: at most 10000 buckets', { details: { field: 'bucketMs' } });
    this.latencyTypes = options.latencyTypes ?? ['key.sign'];
    this.source = options.source;
    this.now = options.now ?? Date.now;
    this.minRefreshMs = options.minRefreshMs ?? 1000;
    this.recentMax = options.recentLoginFailures ?? 20;
    this.ignorePurposes = new Set(options.ignorePurposes ?? ['health-canary']);
  }

  /** Whether a source is connected (otherwise only this process's own operations are seen). */
  get connected(): boolean {
    return this.source !== undefined;
  }

  /**
   * Operations per type counted since this aggregator started, shaped like `MetricsSnapshot`
   * operations (`operation` is the type without `key.`: sign, verify...; latency of successes).
   */
  counters(): Array<{ operation: string; algorithm: string; success: number; failure: number; meanMs: number; maxMs: number; timedCount: number; timedSumMs: number }> {
    return [...this.cumulative.entries()].map(([type, c]) => ({
      operation: type.replace(/^key\./, ''),
      algorithm: 'all',
      success: c.success,
      failure: c.failure,
      meanMs: c.timedCount > 0 ? c.timedSumMs / c.timedCount : 0,
      maxMs: 0,
      timedCount: c.timedCount,
      timedSumMs: c.timedSumMs,
    }));
  }

  /** auth.failure records read since this aggregator started (monotonic). */
  get loginFailuresTotal(): number {
    return this.loginTotal;
  }

  get description(): string {
    return this.source ? (this.source.description ?? 'activity source') : 'this process only (no audit log connected)';
  }

  /** Reads what the source appended since the last read (joins a read in progress; at most one per `minRefreshMs`). */
  refresh(force = false): Promise<void> {
    if (!this.source) return Promise.resolve();
    if (this.reading) return this.reading;
    if (!force && this.started && this.now() - this.lastRead < this.minRefreshMs) return Promise.resolve();
    this.reading = this.read(this.source).finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async read(source: ActivitySource): Promise<void> {
    const now = this.now();
    const query: ActivityQuery = { from: new Date(this.firstStart(now)) };
    if (this.started) query.afterSeq = this.lastSeq;
    try {
      for await (const r of source.read(query)) {
        if (r.seq > this.lastSeq) this.lastSeq = r.seq;
        this.add(r);
      }
      this.started = true;
      this.readError = undefined;
    } catch (error) {
      // The page goes on with what was read; the reason is shown beside it.
      this.readError = error instanceof Error ? error.message : String(error);
    } finally {
      this.lastRead = now;
      this.lastReadAt = this.now();
    }
  }

  /** Adds one record (from the source, or pushed by the caller). */
  add(r: ActivityRecord): void {
    const at = timeOf(r.time);
    if (!Number.isFinite(at)) return;
    const isOperation = OPERATION_SET.has(r.type);
    const isLogin = r.type === 'auth.failure';
    if (!isOperation && !isLogin) return;
    const purpose = r.details?.['purpose'];
    if (isOperation && typeof purpose === 'string' && this.ignorePurposes.has(purpose)) return;
    const bucket = this.bucketAt(at);
    if (!bucket) return;
    if (isLogin) {
      bucket.loginFailures++;
      this.loginTotal++;
      // Kept sorted (records arrive nearly in order) for exact counts over any shorter window.
      let i = this.loginTimes.length;
      while (i > 0 && this.loginTimes[i - 1]! > at) i--;
      this.loginTimes.splice(i, 0, at);
      if (this.loginTimes.length > MAX_LOGIN_TIMES) this.loginTimes.splice(0, this.loginTimes.length - MAX_LOGIN_TIMES);
      const entry: LoginFailureRecord = { time: new Date(at).toISOString() };
      if (r.origin) entry.origin = r.origin;
      if (r.actor) entry.actor = r.actor;
      if (r.backend) entry.backend = r.backend;
      if (r.errorCode) entry.errorCode = r.errorCode;
      const op = r.details?.['operation'];
      if (typeof op === 'string') entry.operation = op;
      this.recentLogins.push(entry);
      this.recentLogins.sort((a, b) => a.time.localeCompare(b.time));
      if (this.recentLogins.length > this.recentMax) this.recentLogins.splice(0, this.recentLogins.length - this.recentMax);
      return;
    }
    let t = bucket.types.get(r.type);
    if (!t) {
      t = { success: 0, failure: 0, latency: new LatencyHistogram() };
      bucket.types.set(r.type, t);
    }
    const failed = r.outcome === 'failure';
    if (failed) t.failure++;
    else t.success++;
    let c = this.cumulative.get(r.type);
    if (!c) {
      c = { success: 0, failure: 0, timedCount: 0, timedSumMs: 0 };
      this.cumulative.set(r.type, c);
    }
    if (failed) c.failure++;
    else c.success++;
    if (!failed && typeof r.latencyMs === 'number' && Number.isFinite(r.latencyMs) && r.latencyMs >= 0) {
      c.timedCount++;
      c.timedSumMs += r.latencyMs;
    }
    // Latency of what succeeded: a failure's time (a timeout, a refused key) is not the signing path's speed.
    if (!failed && typeof r.latencyMs === 'number' && Number.isFinite(r.latencyMs) && r.latencyMs >= 0) t.latency.add(r.latencyMs);
    if (failed) {
      const key = `${r.type}\u0000${r.errorCode ?? 'unknown'}`;
      bucket.errors.set(key, (bucket.errors.get(key) ?? 0) + 1);
    }
    const origin = r.origin ?? 'unknown';
    let o = bucket.origins.get(origin);
    if (!o) {
      o = { operations: 0, failures: 0, lastSeen: at };
      bucket.origins.set(origin, o);
    }
    o.operations++;
    if (failed) o.failures++;
    if (at > o.lastSeen) o.lastSeen = at;
  }

  /** This process's own operation (for a page without an audit log): the same aggregates, no object per call beyond the bucket's. */
  observe(type: string, failed: boolean, latencyMs: number, errorCode?: string): void {
    this.add({ seq: 0, time: new Date(this.now()), type, outcome: failed ? 'failure' : 'success', latencyMs, ...(errorCode ? { errorCode } : {}), origin: 'this process' });
  }

  /** Login failures (auth.failure records) at or after `since` (ms since epoch), within the window. */
  loginFailuresSince(since: number): number {
    this.prune();
    let n = 0;
    for (let i = this.loginTimes.length - 1; i >= 0 && this.loginTimes[i]! >= since; i--) n++;
    return n;
  }

  /** The aggregates over the window, one point per bucket. */
  view(): ActivityView {
    this.prune();
    const now = this.now();
    const firstStart = this.firstStart(now);
    const series: ActivityPoint[] = [];
    const byType = new Map<string, TypeStats>();
    const errors = new Map<string, number>();
    const origins = new Map<string, { operations: number; failures: number; lastSeen: number }>();
    const latency = new LatencyHistogram();
    let success = 0;
    let failure = 0;
    let logins = 0;
    for (let start = firstStart; start <= now; start += this.bucketMs) {
      const b = this.buckets.get(start);
      const point: ActivityPoint = { start: new Date(start).toISOString(), success: 0, failure: 0 };
      if (b) {
        const lat = new LatencyHistogram();
        for (const [type, t] of b.types) {
          point.success += t.success;
          point.failure += t.failure;
          let all = byType.get(type);
          if (!all) {
            all = { success: 0, failure: 0, latency: new LatencyHistogram() };
            byType.set(type, all);
          }
          all.success += t.success;
          all.failure += t.failure;
          all.latency.merge(t.latency);
          if (this.latencyTypes.includes(type)) lat.merge(t.latency);
        }
        const p50 = lat.quantile(0.5);
        const p99 = lat.quantile(0.99);
        if (p50 !== undefined) point.p50Ms = p50;
        if (p99 !== undefined) point.p99Ms = p99;
        latency.merge(lat);
        for (const [k, n] of b.errors) errors.set(k, (errors.get(k) ?? 0) + n);
        for (const [origin, o] of b.origins) {
          const all = origins.get(origin);
          if (!all) origins.set(origin, { ...o });
          else {
            all.operations += o.operations;
            all.failures += o.failures;
            all.lastSeen = Math.max(all.lastSeen, o.lastSeen);
          }
        }
        logins += b.loginFailures;
      }
      success += point.success;
      failure += point.failure;
      series.push(point);
    }
    const windowStart = firstStart;
    const view: ActivityView = {
      source: this.description,
      connected: this.source !== undefined,
      windowMs: this.windowMs,
      bucketMs: this.bucketMs,
      from: new Date(windowStart).toISOString(),
      to: new Date(now).toISOString(),
      totals: { success, failure, perMinute: round((success + failure) / (this.windowMs / 60_000)) },
      operations: [...byType.entries()]
        .sort((a, b) => a[0].localeCompare(b[0]))
        .map(([type, t]) => {
          const o: ActivityView['operations'][number] = { type, success: t.success, failure: t.failure };
          if (t.latency.count > 0) {
            o.meanMs = round(t.latency.sum / t.latency.count);
            o.p50Ms = round(t.latency.quantile(0.5)!);
            o.p99Ms = round(t.latency.quantile(0.99)!);
            o.maxMs = round(t.latency.max);
          }
          return o;
        }),
      latencyTypes: [...this.latencyTypes],
      latency: { count: latency.count },
      errors: [...errors.entries()]
        .map(([k, count]) => {
          const [type, code] = k.split('\u0000') as [string, string];
          return { type, code, count };
        })
        .sort((a, b) => b.count - a.count || a.type.localeCompare(b.type)),
      processes: [...origins.entries()]
        .sort((a, b) => b[1].lastSeen - a[1].lastSeen)
        .map(([origin, o]) => ({ origin, operations: o.operations, failures: o.failures, lastSeen: new Date(o.lastSeen).toISOString() })),
      loginFailures: { count: logins, recent: this.recentLogins.filter((l) => Date.parse(l.time) >= windowStart).reverse() },
      series,
      lastSeq: this.lastSeq,
    };
    if (latency.count > 0) {
      view.latency.p50Ms = round(latency.quantile(0.5)!);
      view.latency.p99Ms = round(latency.quantile(0.99)!);
      view.latency.maxMs = round(latency.max);
    }
    if (this.readError !== undefined) view.readError = this.readError;
    if (this.lastReadAt !== undefined) view.lastReadAt = new Date(this.lastReadAt).toISOString();
    return view;
  }

  private bucketAt(at: number): Bucket | undefined {
    const now = this.now();
    // Records from the future (clock skew between nodes) land in the current minute.
    const t = Math.min(at, now);
    if (t < this.firstStart(now)) return undefined;
    const start = Math.floor(t / this.bucketMs) * this.bucketMs;
    let b = this.buckets.get(start);
    if (!b) {
      b = { start, types: new Map(), errors: new Map(), origins: new Map(), loginFailures: 0 };
      this.buckets.set(start, b);
    }
    return b;
  }

  /** Start of the oldest bucket shown: the window is whole buckets ending with the current one. */
  private firstStart(now: number): number {
    return Math.floor(now / this.bucketMs) * this.bucketMs - (Math.ceil(this.windowMs / this.bucketMs) - 1) * this.bucketMs;
  }

  private prune(): void {
    const first = this.firstStart(this.now());
    for (const start of this.buckets.keys()) if (start < first) this.buckets.delete(start);
    let drop = 0;
    while (drop < this.loginTimes.length && this.loginTimes[drop]! < first) drop++;
    if (drop > 0) this.loginTimes.splice(0, drop);
  }
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function positive(value: number, field: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new HsmError('InvalidArgument', `${field} must be a positive number`, { details: { field } });
  return value;
}

/** Backend methods as audit record types (the ones that are key operations). */
const OPERATION_TYPE: Record<string, string> = {
  sign: 'key.sign',
  verify: 'key.verify',
  generateKeyPair: 'key.generate',
  getKey: 'key.access',
  getPublicKey: 'key.access',
  destroyKey: 'key.destroy',
};

/**
 * Feeds an aggregator without a source from an `HsmMetrics`' instrumented calls: the status page
 * of a process without an audit log charts that process's own operations. Returns an unsubscribe function.
 */
export function feedFromMetrics(aggregator: ActivityAggregator, metrics: { onOperation(listener: (operation: string, ms: number, error: unknown) => void): () => void }): () => void {
  return metrics.onOperation((operation, ms, error) => {
    const type = OPERATION_TYPE[operation];
    if (!type) return;
    const code = error === undefined ? undefined : typeof (error as { code?: unknown })?.code === 'string' ? (error as { code: string }).code : 'Unclassified';
    aggregator.observe(type, error !== undefined, ms, code);
  });
}
