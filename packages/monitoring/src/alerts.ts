import type { ActivityAggregator } from './activity.js';
import type { HealthMonitor, HealthReport } from './health.js';
import type { HsmMetrics, MetricsSnapshot } from './metrics.js';

export type AlertSeverity = 'warning' | 'critical';
export type AlertState = 'firing' | 'resolved';

export interface Alert {
  /** De-duplication key: one notification per key until it resolves. */
  key: string;
  /** The rule that raised it: `health`, `circuit`, `error-rate`, `latency`, or your own. */
  rule: string;
  severity: AlertSeverity;
  state: AlertState;
  summary: string;
  details: Record<string, string | number | boolean>;
  firedAt: string;
  resolvedAt?: string;
}

export interface AlertSink {
  readonly name: string;
  send(alert: Alert): Promise<void>;
}

export interface AlertRules {
  /** Alert when the overall health is not Healthy. Default true. */
  health: boolean;
  /** Alert while the backend's circuit breaker is open. Default true. */
  circuit: boolean;
  /** Failure ratio over an evaluation window that fires `error-rate`. Default 0.05. */
  errorRate: number;
  /** Calls needed in the window before the error rate counts. Default 20. */
  errorRateMinCalls: number;
  /** Mean latency (ms) of an operation over the window that fires `latency:<operation>`. Default 500. */
  latencyMs: number;
  /** Operations the latency rule watches. Default ['sign', 'verify']. */
  latencyOperations: string[];
  /** Calls of an operation needed in the window before its mean latency counts. Default 5. */
  latencyMinCalls: number;
}

export interface AlertManagerOptions {
  sinks: AlertSink[];
  rules?: Partial<AlertRules>;
  /** Clock (ms since epoch). Default Date.now. */
  now?: () => number;
  /** Where sink failures are reported. Default: console.error. */
  onSinkError?: (error: unknown, sink: AlertSink, alert: Alert) => void;
}

/**
 * Raises and resolves alerts, de-duplicated by key: a key fires once and stays quiet until it
 * resolves, which sends one `resolved` notification. Sinks run concurrently; a failing sink
 * never blocks the others or the caller (`flush()` waits for deliveries in flight).
 */
export class AlertManager {
  readonly rules: AlertRules;
  private readonly sinks: AlertSink[];
  private readonly now: () => number;
  private readonly onSinkError: NonNullable<AlertManagerOptions['onSinkError']>;
  private readonly firing = new Map<string, Alert>();
  /** Resolved alerts, newest last, for the status page. */
  private readonly resolvedLog: Alert[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private previous: MetricsSnapshot | undefined;

  constructor(options: AlertManagerOptions) {
    this.sinks = [...options.sinks];
    this.now = options.now ?? Date.now;
    this.onSinkError = options.onSinkError ?? ((error, sink, alert) => console.error(`alert sink ${sink.name} failed for ${alert.key}:`, error));
    this.rules = {
      health: true,
      circuit: true,
      errorRate: 0.05,
      errorRateMinCalls: 20,
      latencyMs: 500,
      latencyOperations: ['sign', 'verify'],
      latencyMinCalls: 5,
      ...options.rules,
    };
  }

  /** Alerts currently firing. */
  active(): Alert[] {
    return [...this.firing.values()];
  }

  /** The last `limit` (default 20, at most 100 kept) resolved alerts, newest first. */
  resolvedRecently(limit = 20): Alert[] {
    return this.resolvedLog.slice(-limit).reverse();
  }

  /** Raises `key` unless it is already firing. Returns true when a notification was sent. */
  fire(key: string, alert: Omit<Alert, 'key' | 'state' | 'firedAt' | 'resolvedAt'>): boolean {
    if (this.firing.has(key)) return false;
    const a: Alert = { ...alert, key, state: 'firing', firedAt: new Date(this.now()).toISOString() };
    this.firing.set(key, a);
    this.deliver(a);
    return true;
  }

  /** Resolves `key` if it is firing. Returns true when a resolve notification was sent. */
  resolve(key: string, summary?: string): boolean {
    const a = this.firing.get(key);
    if (!a) return false;
    this.firing.delete(key);
    const resolved: Alert = { ...a, state: 'resolved', summary: summary ?? `resolved: ${a.summary}`, resolvedAt: new Date(this.now()).toISOString() };
    this.resolvedLog.push(resolved);
    if (this.resolvedLog.length > 100) this.resolvedLog.shift();
    this.deliver(resolved);
    return true;
  }

  /** Health rule: `health` fires when the overall status is not Healthy, resolves when it is. */
  observeHealth(report: HealthReport): void {
    if (!this.rules.health) return;
    if (report.status === 'Healthy') {
      this.resolve('health', 'health is back to Healthy');
      return;
    }
    const failing = report.checks.filter((c) => c.status !== 'Healthy');
    const details: Record<string, string> = {};
    for (const c of failing) details[c.name] = `${c.status}: ${c.message}`;
    this.fire('health', {
      rule: 'health',
      severity: report.status === 'Critical' ? 'critical' : 'warning',
      summary: `HSM health is ${report.status} (${failing.map((c) => c.name).join(', ')})`,
      details,
    });
  }

  /**
   * Metric rules, evaluated on the difference from the previous snapshot: circuit open,
   * error rate and mean latency per watched operation.
   */
  observeMetrics(snapshot: MetricsSnapshot): void {
    const prev = this.previous;
    this.previous = snapshot;
    if (this.rules.circuit && snapshot.circuitOpen !== undefined) {
      if (snapshot.circuitOpen) this.fire('circuit', { rule: 'circuit', severity: 'critical', summary: 'the HSM circuit breaker is open (device unavailable)', details: { circuitOpens: snapshot.circuitOpens ?? 0 } });
      else this.resolve('circuit', 'the HSM circuit breaker closed');
    }
    if (!prev) return;
    const calls = snapshot.totals.success + snapshot.totals.failure - (prev.totals.success + prev.totals.failure);
    const failures = snapshot.totals.failure - prev.totals.failure;
    if (calls >= this.rules.errorRateMinCalls) {
      const rate = failures / calls;
      if (rate >= this.rules.errorRate) {
        this.fire('error-rate', { rule: 'error-rate', severity: 'warning', summary: `error rate ${(rate * 100).toFixed(1)}% over the last ${calls} calls`, details: { rate, calls, failures } });
      } else this.resolve('error-rate');
    }
    for (const op of this.rules.latencyOperations) {
      const now = aggregate(snapshot, op);
      const before = aggregate(prev, op);
      const n = now.count - before.count;
      if (n < this.rules.latencyMinCalls) continue;
      const mean = (now.sumMs - before.sumMs) / n;
      const key = `latency:${op}`;
      if (mean > this.rules.latencyMs) {
        this.fire(key, { rule: 'latency', severity: 'warning', summary: `${op} mean latency ${mean.toFixed(1)} ms over ${n} calls (threshold ${this.rules.latencyMs} ms)`, details: { operation: op, meanMs: mean, calls: n } });
      } else this.resolve(key);
    }
  }

  /**
   * Evaluates every rule after each report of `monitor` (metrics rules with `metrics`, when
   * given). Returns a function that stops watching.
   */
  watch(sources: { monitor: HealthMonitor; metrics?: HsmMetrics; activity?: ActivityAggregator }): () => void {
    return sources.monitor.onReport((report) => {
      this.observeHealth(report);
      const own = sources.metrics?.snapshot();
      const activity = sources.activity?.connected ? sources.activity : undefined;
      if (!activity) {
        if (own) this.observeMetrics(own);
        return;
      }
      // The error-rate and latency rules judge the installation (every process in the audit
      // log); the circuit rule stays with this process's backend.
      const operations = activity.counters();
      const totals = { success: 0, failure: 0 };
      for (const o of operations) {
        totals.success += o.success;
        totals.failure += o.failure;
      }
      const base: MetricsSnapshot = own ?? { uptimeSeconds: 0, totals, operations, errorsByCode: {}, errors: [], keyGenerations: 0, recentLatencies: [] };
      this.observeMetrics({ ...base, totals, operations });
    });
  }

  /** Waits for notifications in flight (including webhook retries). */
  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private deliver(alert: Alert): void {
    for (const sink of this.sinks) {
      const p: Promise<void> = sink
        .send(alert)
        .catch((error: unknown) => this.onSinkError(error, sink, alert))
        .finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    }
  }
}

function aggregate(snapshot: MetricsSnapshot, operation: string): { count: number; sumMs: number } {
  let count = 0;
  let sumMs = 0;
  for (const o of snapshot.operations) {
    if (o.operation !== operation) continue;
    if (o.timedCount !== undefined) {
      count += o.timedCount;
      sumMs += o.timedSumMs ?? 0;
      continue;
    }
    const n = o.success + o.failure;
    count += n;
    sumMs += o.meanMs * n;
  }
  return { count, sumMs };
}

/** Writes each notification as one JSON line: `warn` for firing, `info` for resolved. */
export function logSink(logger: Pick<Console, 'warn' | 'info'> = console): AlertSink {
  return {
    name: 'log',
    async send(alert) {
      const line = JSON.stringify({ msg: 'olocus-hsm alert', ...alert });
      if (alert.state === 'firing') logger.warn(line);
      else logger.info(line);
    },
  };
}

/** Calls `fn` with each notification. */
export function callbackSink(fn: (alert: Alert) => void | Promise<void>, name = 'callback'): AlertSink {
  return {
    name,
    async send(alert) {
      await fn(alert);
    },
  };
}

export interface WebhookSinkOptions {
  url: string | URL;
  /** Extra request headers (e.g. an Authorization header read from a secret). */
  headers?: Record<string, string>;
  /** Attempts after the first. Default 3. */
  retries?: number;
  /** First backoff, doubled for each retry. Default 250 ms. */
  backoffMs?: number;
  /** Backoff ceiling. Default 5000 ms. */
  maxBackoffMs?: number;
  /** Per-attempt timeout. Default 5000 ms. */
  timeoutMs?: number;
  /** Replace the JSON body (e.g. to match Slack's or Alertmanager's format). */
  format?: (alert: Alert) => unknown;
  /** Injectable for tests. Default globalThis.fetch. */
  fetch?: typeof fetch;
}

/**
 * POSTs each notification as JSON. Network errors, timeouts, 408, 429 and 5xx are retried with
 * exponential backoff; other 4xx fail at once (a retry would not help).
 */
export function webhookSink(options: WebhookSinkOptions): AlertSink {
  const retries = options.retries ?? 3;
  const backoff = options.backoffMs ?? 250;
  const maxBackoff = options.maxBackoffMs ?? 5_000;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const doFetch = options.fetch ?? globalThis.fetch;
  const url = String(options.url);
  return {
    name: 'webhook',
    async send(alert) {
      const body = JSON.stringify(options.format ? options.format(alert) : alert);
      let lastError: unknown;
      for (let attempt = 0; attempt <= retries; attempt++) {
        if (attempt > 0) await sleep(Math.min(maxBackoff, backoff * 2 ** (attempt - 1)));
        try {
          const response = await doFetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...options.headers },
            body,
            signal: AbortSignal.timeout(timeoutMs),
          });
          await response.arrayBuffer().catch(() => undefined);
          if (response.ok) return;
          lastError = new Error(`webhook answered HTTP ${response.status}`);
          if (!(response.status === 408 || response.status === 429 || response.status >= 500)) break;
        } catch (error) {
          lastError = error;
        }
      }
      throw lastError;
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
