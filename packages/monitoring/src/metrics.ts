import {
  isHsmError,
  type Capabilities,
  type FipsStatus,
  type HealthStatus,
  type HsmBackend,
  type HsmInfo,
  type HsmKeyHandle,
  type KeyPage,
  type KeyRef,
  type KeySpec,
  type ListKeysOptions,
  type PublicKeyInfo,
  type SignOptions,
  type VerifyOptions,
} from '@olocus/hsm-core';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { readBackendMetrics, type BackendMetricsView } from './backend-metrics.js';
import { HEALTH_LEVEL_VALUE, type HealthLevel, type HealthReport } from './health.js';

export const OPERATIONS = [
  'initialize',
  'close',
  'info',
  'capabilities',
  'fipsStatus',
  'generateKeyPair',
  'getKey',
  'getPublicKey',
  'sign',
  'verify',
  'listKeys',
  'destroyKey',
  'healthCheck',
] as const;
export type Operation = (typeof OPERATIONS)[number];

export interface HsmMetricsOptions {
  /** Prefix of every metric name. Default `olocus_hsm_`. */
  prefix?: string;
  /** Latency histogram buckets, seconds. */
  buckets?: number[];
  /** Labels added to every series (e.g. `{ instance: 'signer-1' }`). */
  defaultLabels?: Record<string, string>;
  /** Clock (ms since epoch) for uptime. Default Date.now. */
  now?: () => number;
}

export interface OperationStats {
  operation: string;
  algorithm: string;
  success: number;
  failure: number;
  meanMs: number;
  maxMs: number;
  /**
   * When present, the latency figures cover only these calls (the activity view times successes
   * only); the alert rules then use them instead of `meanMs` × all calls.
   */
  timedCount?: number;
  timedSumMs?: number;
}

export interface MetricsSnapshot {
  uptimeSeconds: number;
  totals: { success: number; failure: number };
  operations: OperationStats[];
  /** Failures by error code (all operations). */
  errorsByCode: Record<string, number>;
  errors: Array<{ operation: string; code: string; count: number }>;
  keyGenerations: number;
  pool?: BackendMetricsView['pool'];
  circuitOpen?: boolean;
  circuitOpens?: number;
  health?: { status: HealthLevel; timestamp: string; checks: Record<string, HealthLevel> };
  /** Key versions by state, when a key registry feeds `recordKeyCounts`. */
  keyCounts?: Record<string, number>;
  /** The most recent operation latencies, oldest first (at most 256). */
  recentLatencies: Array<{ operation: string; ms: number }>;
}

export type ErrorListener = (error: unknown, operation: Operation) => void;

interface Series {
  operation: string;
  algorithm: string;
  success: number;
  failure: number;
  sumMs: number;
  maxMs: number;
  ok: Counter.Internal;
  fail: Counter.Internal;
  latency: Histogram.Internal<string>;
}

interface ErrorSeries {
  count: number;
  child: Counter.Internal;
}

export type OperationListener = (operation: Operation, ms: number, error: unknown) => void;

const RING = 256;
const DEFAULT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const OP_INDEX = new Map<string, number>(OPERATIONS.map((op, i) => [op, i]));

/**
 * Prometheus metrics for one backend (or several, with a label per instance via defaultLabels),
 * in a registry of their own: never prom-client's global default registry.
 */
export class HsmMetrics {
  readonly registry: Registry;
  readonly prefix: string;
  private readonly now: () => number;
  private readonly startedAt: number;
  private readonly opsTotal: Counter<string>;
  private readonly latency: Histogram<string>;
  private readonly errorsTotal: Counter<string>;
  private readonly keyGenTotal: Counter<string>;
  private readonly healthStatus: Gauge<string>;
  private readonly healthCheckStatus: Gauge<string>;
  private readonly healthTimestamp: Gauge<string>;
  private readonly keysGauge: Gauge<string>;
  private readonly auditOps: Counter<string>;
  private readonly auditLogins: Counter<string>;
  /** Last cumulative values pushed to the audit counters (they only move by the difference). */
  private readonly auditSeen = new Map<string, number>();
  private keyCounts: Record<string, number> | undefined;
  private readonly series = new Map<string, Map<string, Series>>();
  private readonly operationListeners = new Set<OperationListener>();
  private readonly errorSeries = new Map<string, Map<string, ErrorSeries>>();
  private readonly errorListeners = new Set<ErrorListener>();
  private keyGenerations = 0;
  private readonly ringMs = new Float64Array(RING);
  private readonly ringOp = new Uint8Array(RING);
  private ringNext = 0;
  private ringCount = 0;
  private source: HsmBackend | undefined;
  private lastHealth: MetricsSnapshot['health'];
  private readonly poolSeen = { created: 0, evicted: 0, recycled: 0, circuitOpens: 0 };

  constructor(options: HsmMetricsOptions = {}) {
    this.prefix = options.prefix ?? 'olocus_hsm_';
    this.now = options.now ?? Date.now;
    this.startedAt = this.now();
    this.registry = new Registry();
    if (options.defaultLabels) this.registry.setDefaultLabels(options.defaultLabels);
    const p = this.prefix;
    const registers = [this.registry];
    this.opsTotal = new Counter({ name: `${p}operations_total`, help: 'Backend calls by operation, key algorithm and outcome (success|failure).', labelNames: ['operation', 'algorithm', 'outcome'], registers });
    this.latency = new Histogram({
      name: `${p}operation_duration_seconds`,
      help: 'Backend call latency by operation and key algorithm, seconds.',
      labelNames: ['operation', 'algorithm'],
      buckets: options.buckets ?? DEFAULT_BUCKETS,
      registers,
    });
    this.errorsTotal = new Counter({ name: `${p}errors_total`, help: 'Failed backend calls by operation and HsmError code.', labelNames: ['operation', 'code'], registers });
    this.keyGenTotal = new Counter({ name: `${p}key_generations_total`, help: 'Keys generated, by algorithm.', labelNames: ['algorithm'], registers });

    const self = this;
    const view = () => readBackendMetrics(self.source);
    const poolGauge = (name: string, help: string, field: 'size' | 'inUse' | 'waiting' | 'max') =>
      new Gauge({
        name: `${p}${name}`,
        help,
        registers,
        collect() {
          const v = view()?.pool?.[field];
          if (v !== undefined) this.set(v);
        },
      });
    poolGauge('session_pool_size', 'Sessions open in the backend pool.', 'size');
    poolGauge('session_pool_in_use', 'Pool sessions lent to callers.', 'inUse');
    poolGauge('session_pool_waiting', 'Callers waiting for a pool session.', 'waiting');
    poolGauge('session_pool_max', 'Pool size limit.', 'max');
    const poolCounter = (name: string, help: string, read: (v: BackendMetricsView) => number | undefined, key: keyof HsmMetrics['poolSeen']) =>
      new Counter({
        name: `${p}${name}`,
        help,
        registers,
        collect() {
          const m = view();
          const v = m ? read(m) : undefined;
          if (v === undefined) return;
          // the backend keeps cumulative counts: add what is new since the last scrape
          const delta = v - self.poolSeen[key];
          if (delta > 0) this.inc(delta);
          self.poolSeen[key] = v;
        },
      });
    poolCounter('session_pool_created_total', 'Pool sessions created.', (m) => m.pool?.created, 'created');
    poolCounter('session_pool_evicted_total', 'Pool sessions evicted as broken.', (m) => m.pool?.evicted, 'evicted');
    poolCounter('session_pool_recycled_total', 'Pool sessions recycled by age or use count.', (m) => m.pool?.recycled, 'recycled');
    poolCounter('circuit_opens_total', 'Times the backend circuit breaker opened.', (m) => m.circuitOpens, 'circuitOpens');
    new Gauge({
      name: `${p}circuit_open`,
      help: 'Circuit breaker state: 1 open (device unavailable), 0 closed.',
      registers,
      collect() {
        const m = view();
        if (m?.circuitOpen !== undefined) this.set(m.circuitOpen ? 1 : 0);
      },
    });
    new Gauge({
      name: `${p}uptime_seconds`,
      help: 'Seconds since this metrics instance was created.',
      registers,
      collect() {
        this.set((self.now() - self.startedAt) / 1000);
      },
    });
    this.healthStatus = new Gauge({ name: `${p}health_status`, help: 'Overall status of the last health check: 0 Healthy, 1 Degraded, 2 Critical.', registers });
    this.healthCheckStatus = new Gauge({ name: `${p}health_check_status`, help: 'Status of each check in the last health check: 0 Healthy, 1 Degraded, 2 Critical.', labelNames: ['check'], registers });
    this.healthTimestamp = new Gauge({ name: `${p}health_check_timestamp_seconds`, help: 'Unix time of the last health check.', registers });
    this.keysGauge = new Gauge({ name: `${p}keys`, help: 'Key versions in the key registry, by lifecycle state.', labelNames: ['state'], registers });
    this.auditOps = new Counter({ name: `${p}audit_operations_total`, help: 'Key operations of every process, read from the audit log since this monitor started (the first read covers the last hour).', labelNames: ['operation', 'outcome'], registers });
    this.auditLogins = new Counter({ name: `${p}audit_login_failures_total`, help: 'auth.failure records of every process, read from the audit log since this monitor started.', registers });
  }

  /** The backend whose optional `metrics()` (pool, circuit) is read at scrape time. */
  trackBackend(backend: HsmBackend): void {
    this.source = backend;
  }

  /** Called with every failed call an instrumented backend sees. Returns an unsubscribe function. */
  onError(listener: ErrorListener): () => void {
    this.errorListeners.add(listener);
    return () => this.errorListeners.delete(listener);
  }

  /**
   * Called with every finished call (operation, latency ms, the error when it failed). Used to
   * chart this process's own activity when no audit log is connected. Returns an unsubscribe function.
   */
  onOperation(listener: OperationListener): () => void {
    this.operationListeners.add(listener);
    return () => this.operationListeners.delete(listener);
  }

  /** Wraps a backend so that every call is counted and timed here. */
  instrument<T extends HsmBackend>(backend: T): HsmBackend {
    return instrument(backend, this);
  }

  /** Records a finished call. `startedAt` is a `performance.now()` reading. */
  record(operation: Operation, algorithm: string, startedAt: number, error?: unknown): void {
    const ms = performance.now() - startedAt;
    const s = this.seriesFor(operation, algorithm);
    s.latency.observe(ms / 1000);
    s.sumMs += ms;
    if (ms > s.maxMs) s.maxMs = ms;
    const i = this.ringNext;
    this.ringMs[i] = ms;
    this.ringOp[i] = OP_INDEX.get(operation) ?? 0;
    this.ringNext = (i + 1) % RING;
    if (this.ringCount < RING) this.ringCount++;
    if (this.operationListeners.size > 0) {
      for (const listener of this.operationListeners) {
        try {
          listener(operation, ms, error);
        } catch {
          // never let a listener break the call path
        }
      }
    }
    if (error === undefined) {
      s.success++;
      s.ok.inc();
      if (operation === 'generateKeyPair') {
        this.keyGenerations++;
        this.keyGenTotal.labels(algorithm).inc();
      }
      return;
    }
    s.failure++;
    s.fail.inc();
    const code = isHsmError(error) ? error.code : 'Unclassified';
    let byCode = this.errorSeries.get(operation);
    if (!byCode) {
      byCode = new Map();
      this.errorSeries.set(operation, byCode);
    }
    let e = byCode.get(code);
    if (!e) {
      e = { count: 0, child: this.errorsTotal.labels(operation, code) };
      byCode.set(code, e);
    }
    e.count++;
    e.child.inc();
    for (const listener of this.errorListeners) {
      try {
        listener(error, operation);
      } catch {
        // never let a listener break the call path
      }
    }
  }

  /** Records a health report (status gauges and the snapshot's `health`). */
  recordHealth(report: HealthReport): void {
    this.healthStatus.set(HEALTH_LEVEL_VALUE[report.status]);
    this.healthTimestamp.set(report.timestamp.getTime() / 1000);
    const checks: Record<string, HealthLevel> = {};
    for (const c of report.checks) {
      this.healthCheckStatus.labels(c.name).set(HEALTH_LEVEL_VALUE[c.status]);
      checks[c.name] = c.status;
    }
    this.lastHealth = { status: report.status, timestamp: report.timestamp.toISOString(), checks };
  }

  /** Records the key registry's versions by state (the `keys{state}` gauge and the snapshot's `keyCounts`). */
  recordKeyCounts(counts: Record<string, number>): void {
    this.keysGauge.reset();
    for (const [state, n] of Object.entries(counts)) this.keysGauge.labels(state).set(n);
    this.keyCounts = { ...counts };
  }

  /**
   * Installation-wide counts from an activity aggregator (`counters()` and `loginFailuresTotal`):
   * the `audit_operations_total{operation,outcome}` and `audit_login_failures_total` counters.
   * Short-lived processes (CLI commands) cannot be scraped; their audit records can.
   */
  recordActivity(counters: ReadonlyArray<{ operation: string; success: number; failure: number }>, loginFailuresTotal: number): void {
    const bump = (key: string, value: number, inc: (by: number) => void) => {
      const before = this.auditSeen.get(key) ?? 0;
      if (value > before) inc(value - before);
      this.auditSeen.set(key, Math.max(before, value));
    };
    for (const c of counters) {
      bump(`${c.operation}\u0000success`, c.success, (by) => this.auditOps.labels(c.operation, 'success').inc(by));
      bump(`${c.operation}\u0000failure`, c.failure, (by) => this.auditOps.labels(c.operation, 'failure').inc(by));
    }
    bump('\u0000login', loginFailuresTotal, (by) => this.auditLogins.inc(by));
  }

  /** The Prometheus text exposition of this instance's registry. */
  prometheus(): Promise<string> {
    return this.registry.metrics();
  }

  /** Content-Type of `prometheus()`'s output. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The same numbers as a plain object (no prom-client round trip). */
  snapshot(): MetricsSnapshot {
    const operations: OperationStats[] = [];
    let success = 0;
    let failure = 0;
    for (const byAlg of this.series.values()) {
      for (const s of byAlg.values()) {
        const count = s.success + s.failure;
        operations.push({ operation: s.operation, algorithm: s.algorithm, success: s.success, failure: s.failure, meanMs: count ? s.sumMs / count : 0, maxMs: s.maxMs });
        success += s.success;
        failure += s.failure;
      }
    }
    const errorsByCode: Record<string, number> = {};
    const errors: MetricsSnapshot['errors'] = [];
    for (const [operation, byCode] of this.errorSeries) {
      for (const [code, e] of byCode) {
        errors.push({ operation, code, count: e.count });
        errorsByCode[code] = (errorsByCode[code] ?? 0) + e.count;
      }
    }
    const recentLatencies: MetricsSnapshot['recentLatencies'] = [];
    for (let k = RING - this.ringCount; k < RING; k++) {
      const i = (this.ringNext + k) % RING;
      const ms = this.ringMs[i]!;
      recentLatencies.push({ operation: OPERATIONS[this.ringOp[i]!] ?? 'unknown', ms });
    }
    const out: MetricsSnapshot = {
      uptimeSeconds: (this.now() - this.startedAt) / 1000,
      totals: { success, failure },
      operations,
      errorsByCode,
      errors,
      keyGenerations: this.keyGenerations,
      recentLatencies,
    };
    const view = readBackendMetrics(this.source);
    if (view?.pool) out.pool = view.pool;
    if (view?.circuitOpen !== undefined) out.circuitOpen = view.circuitOpen;
    if (view?.circuitOpens !== undefined) out.circuitOpens = view.circuitOpens;
    if (this.lastHealth) out.health = this.lastHealth;
    if (this.keyCounts) out.keyCounts = { ...this.keyCounts };
    return out;
  }

  private seriesFor(operation: string, algorithm: string): Series {
    let byAlg = this.series.get(operation);
    if (!byAlg) {
      byAlg = new Map();
      this.series.set(operation, byAlg);
    }
    let s = byAlg.get(algorithm);
    if (!s) {
      s = {
        operation,
        algorithm,
        success: 0,
        failure: 0,
        sumMs: 0,
        maxMs: 0,
        ok: this.opsTotal.labels(operation, algorithm, 'success'),
        fail: this.opsTotal.labels(operation, algorithm, 'failure'),
        latency: this.latency.labels(operation, algorithm),
      };
      byAlg.set(algorithm, s);
    }
    return s;
  }
}

const MAX_KNOWN_KEYS = 10_000;

/**
 * An `HsmBackend` that forwards every call to `inner` and records it in `metrics`: count by
 * outcome, latency, error code. The key algorithm label comes from handles the wrapper has seen
 * (generateKeyPair, getKey, listKeys, handle arguments); a key first used by id alone is looked
 * up once in the background after its first successful call. An optional `metrics()` of the
 * inner backend is passed through, so health checks and scrapes can still read the pool.
 */
export function instrument(inner: HsmBackend, metrics: HsmMetrics): HsmBackend {
  metrics.trackBackend(inner);
  const algorithms = new Map<string, string>();
  const resolving = new Set<string>();
  const learn = (handle: HsmKeyHandle) => {
    if (algorithms.size >= MAX_KNOWN_KEYS) return;
    algorithms.set(handle.id, handle.algorithm);
    algorithms.set(handle.ref, handle.algorithm);
  };
  const algorithmOf = (key: KeyRef): string => {
    if (typeof key !== 'string') return key?.algorithm ?? 'unknown';
    return algorithms.get(key) ?? 'unknown';
  };
  const resolveLater = (key: KeyRef) => {
    if (typeof key !== 'string' || algorithms.has(key) || resolving.has(key) || algorithms.size >= MAX_KNOWN_KEYS) return;
    resolving.add(key);
    inner.getKey(key).then(
      (h) => {
        learn(h);
        algorithms.set(key, h.algorithm);
        resolving.delete(key);
      },
      () => resolving.delete(key),
    );
  };
  const none = 'none';

  const wrapper: HsmBackend = {
    get type() {
      return inner.type;
    },
    get instanceId() {
      return inner.instanceId;
    },
    async initialize(): Promise<void> {
      const t = performance.now();
      try {
        await inner.initialize();
        metrics.record('initialize', none, t);
      } catch (error) {
        metrics.record('initialize', none, t, error);
        throw error;
      }
    },
    async close(): Promise<void> {
      const t = performance.now();
      try {
        await inner.close();
        metrics.record('close', none, t);
      } catch (error) {
        metrics.record('close', none, t, error);
        throw error;
      }
    },
    async info(): Promise<HsmInfo> {
      const t = performance.now();
      try {
        const r = await inner.info();
        metrics.record('info', none, t);
        return r;
      } catch (error) {
        metrics.record('info', none, t, error);
        throw error;
      }
    },
    async capabilities(): Promise<Capabilities> {
      const t = performance.now();
      try {
        const r = await inner.capabilities();
        metrics.record('capabilities', none, t);
        return r;
      } catch (error) {
        metrics.record('capabilities', none, t, error);
        throw error;
      }
    },
    async fipsStatus(): Promise<FipsStatus> {
      const t = performance.now();
      try {
        const r = await inner.fipsStatus();
        metrics.record('fipsStatus', none, t);
        return r;
      } catch (error) {
        metrics.record('fipsStatus', none, t, error);
        throw error;
      }
    },
    async generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle> {
      const t = performance.now();
      const alg = typeof spec?.algorithm === 'string' ? spec.algorithm : 'unknown';
      try {
        const r = await inner.generateKeyPair(spec);
        metrics.record('generateKeyPair', alg, t);
        learn(r);
        return r;
      } catch (error) {
        metrics.record('generateKeyPair', alg, t, error);
        throw error;
      }
    },
    async getKey(key: KeyRef): Promise<HsmKeyHandle> {
      const t = performance.now();
      try {
        const r = await inner.getKey(key);
        learn(r);
        metrics.record('getKey', r.algorithm, t);
        return r;
      } catch (error) {
        metrics.record('getKey', algorithmOf(key), t, error);
        throw error;
      }
    },
    async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
      const t = performance.now();
      try {
        const r = await inner.getPublicKey(key);
        if (typeof key === 'string' && !algorithms.has(key) && algorithms.size < MAX_KNOWN_KEYS) algorithms.set(key, r.algorithm);
        metrics.record('getPublicKey', r.algorithm, t);
        return r;
      } catch (error) {
        metrics.record('getPublicKey', algorithmOf(key), t, error);
        throw error;
      }
    },
    async sign(key: KeyRef, data: Uint8Array, options?: SignOptions): Promise<Uint8Array> {
      const t = performance.now();
      try {
        const r = await inner.sign(key, data, options);
        const alg = algorithmOf(key);
        metrics.record('sign', alg, t);
        if (alg === 'unknown') resolveLater(key);
        return r;
      } catch (error) {
        metrics.record('sign', algorithmOf(key), t, error);
        throw error;
      }
    },
    async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options?: VerifyOptions): Promise<boolean> {
      const t = performance.now();
      try {
        const r = await inner.verify(key, data, signature, options);
        const alg = algorithmOf(key);
        metrics.record('verify', alg, t);
        if (alg === 'unknown') resolveLater(key);
        return r;
      } catch (error) {
        metrics.record('verify', algorithmOf(key), t, error);
        throw error;
      }
    },
    async listKeys(options?: ListKeysOptions): Promise<KeyPage> {
      const t = performance.now();
      try {
        const r = await inner.listKeys(options);
        for (const h of r.keys) learn(h);
        metrics.record('listKeys', none, t);
        return r;
      } catch (error) {
        metrics.record('listKeys', none, t, error);
        throw error;
      }
    },
    async destroyKey(key: KeyRef): Promise<void> {
      const t = performance.now();
      const alg = algorithmOf(key);
      try {
        await inner.destroyKey(key);
        metrics.record('destroyKey', alg, t);
        if (typeof key === 'string') algorithms.delete(key);
        else {
          algorithms.delete(key.id);
          algorithms.delete(key.ref);
        }
      } catch (error) {
        metrics.record('destroyKey', alg, t, error);
        throw error;
      }
    },
    async healthCheck(): Promise<HealthStatus> {
      const t = performance.now();
      try {
        const r = await inner.healthCheck();
        metrics.record('healthCheck', none, t);
        return r;
      } catch (error) {
        metrics.record('healthCheck', none, t, error);
        throw error;
      }
    },
  };
  if (typeof inner.metrics === 'function') wrapper.metrics = () => inner.metrics!();
  if (typeof inner.signStream === 'function') {
    // Streams are signed as streams (the manager would otherwise buffer them), and counted as signs.
    wrapper.signStream = async (key: KeyRef, chunks: AsyncIterable<Uint8Array>, options?: SignOptions): Promise<Uint8Array> => {
      const t = performance.now();
      try {
        const r = await inner.signStream!(key, chunks, options);
        const alg = algorithmOf(key);
        metrics.record('sign', alg, t);
        if (alg === 'unknown') resolveLater(key);
        return r;
      } catch (error) {
        metrics.record('sign', algorithmOf(key), t, error);
        throw error;
      }
    };
  }
  return wrapper;
}
