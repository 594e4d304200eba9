import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HsmError } from '@olocus/hsm-core';
import { ActivityAggregator, feedFromMetrics } from './activity.js';
import type { AlertManager } from './alerts.js';
import type { HealthMonitor, HealthReport } from './health.js';
import type { KeyInventoryItem, KeyInventoryProvider } from './lifecycle.js';
import type { HsmMetrics } from './metrics.js';
import { renderStatusPage, STATUS_PAGE_CSP } from './status-page.js';
import { buildStatusView, type StatusView } from './status-view.js';

export interface MonitorServerOptions {
  monitor: HealthMonitor;
  metrics: HsmMetrics;
  /** `host:port` (port 0 picks a free one). Default `127.0.0.1:9464`. */
  listen?: string | { host: string; port: number };
  /**
   * A report older than this is refreshed before `/readyz` and `/status` answer.
   * Default: twice the monitor's interval when it runs in the background, else 0 (always refresh).
   */
  maxReportAgeMs?: number;
  /** Page title. */
  title?: string;
  /**
   * Key versions by state (e.g. `registryKeyCounts(registry)`): read on each `/status` and
   * `/metrics` request, shown on the page and exported as the `keys{state}` gauge.
   */
  keyCounts?: () => Promise<Record<string, number>>;
  /**
   * Installation-wide activity for `/status` (e.g. an aggregator over the audit log, as
   * `createMonitoring({ activity })` makes). Default: this process's own operations.
   */
  activity?: ActivityAggregator;
  /** Every key with its state, next rotation and cryptoperiod end (e.g. `registryInventory(registry)`). */
  inventory?: KeyInventoryProvider;
  /** Firing and recently resolved alerts are listed on `/status`. */
  alerts?: AlertManager;
  /** `<meta http-equiv="refresh">` period of `/status`, seconds. Default 10. */
  refreshSeconds?: number;
  /** Keys whose rotation or cryptoperiod end is this close are highlighted. Default 30. */
  warnDays?: number;
}

export interface MonitorServer {
  readonly server: Server;
  /** `http://host:port`. */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Parses `host:port`, `[v6]:port` or `:port`. */
export function parseListen(listen: string | { host: string; port: number }): { host: string; port: number } {
  if (typeof listen !== 'string') return listen;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new HsmError('InvalidConfiguration', `listen: expected host:port, got '${listen}'`, { details: { field: 'listen' } });
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/**
 * Serves `/metrics` (Prometheus text), `/healthz` (liveness, always 200), `/readyz` (503 when
 * Critical, JSON) and `/status` (self-contained HTML) with node:http.
 */
export async function startMonitorServer(options: MonitorServerOptions): Promise<MonitorServer> {
  const { monitor, metrics } = options;
  const { host, port } = parseListen(options.listen ?? '127.0.0.1:9464');
  let activity = options.activity;
  let unfeed: (() => void) | undefined;
  if (!activity) {
    activity = new ActivityAggregator();
    unfeed = feedFromMetrics(activity, metrics);
  }
  const aggregator = activity;
  const refreshSeconds = options.refreshSeconds ?? 10;
  const maxAge = () => options.maxReportAgeMs ?? (monitor.isRunning ? 2 * monitor.intervalMs : 0);
  const report = async (): Promise<HealthReport> => {
    const last = monitor.lastReport;
    if (last && Date.now() - last.timestamp.getTime() <= maxAge()) return last;
    return monitor.performHealthCheck();
  };

  const inventory = async (): Promise<{ items?: KeyInventoryItem[]; counts?: Record<string, number>; error?: string } | undefined> => {
    if (!options.inventory && !options.keyCounts) return undefined;
    const out: { items?: KeyInventoryItem[]; counts?: Record<string, number>; error?: string } = {};
    const problems: string[] = [];
    await Promise.all([
      options.inventory?.().then(
        (items) => {
          out.items = items;
        },
        (error: unknown) => problems.push(messageOf(error)),
      ),
      options.keyCounts?.().then(
        (counts) => {
          out.counts = counts;
        },
        (error: unknown) => problems.push(messageOf(error)),
      ),
    ]);
    if (!out.counts && out.items && !options.keyCounts) {
      out.counts = {};
      for (const k of out.items) out.counts[k.state] = (out.counts[k.state] ?? 0) + 1;
    }
    if (out.counts) metrics.recordKeyCounts(out.counts);
    if (problems.length > 0) out.error = problems.join('; ');
    return out;
  };

  const statusView = async (): Promise<StatusView> => {
    // The activity first: the health check's security check reads login failures from it.
    await aggregator.refresh();
    const [r, keys] = await Promise.all([report(), inventory()]);
    metrics.recordHealth(r);
    return buildStatusView({
      title: options.title ?? 'Olocus HSM status',
      refreshSeconds,
      report: r,
      snapshot: metrics.snapshot(),
      activity: aggregator.view(),
      alerts: options.alerts ? { firing: options.alerts.active(), resolved: options.alerts.resolvedRecently() } : undefined,
      keys,
      warnMs: (options.warnDays ?? 30) * 86_400_000,
    });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const counts = async () => {
      if (!options.keyCounts) return undefined;
      try {
        const c = await options.keyCounts();
        metrics.recordKeyCounts(c);
        return c;
      } catch {
        // the registry is unavailable: the page and the scrape go on without key counts
        return undefined;
      }
    };
    switch (path) {
      case '/metrics':
        if (aggregator.connected) {
          await aggregator.refresh();
          metrics.recordActivity(aggregator.counters(), aggregator.loginFailuresTotal);
        }
        await counts();
        send(200, metrics.contentType, await metrics.prometheus());
        return;
      case '/healthz':
        send(200, 'application/json; charset=utf-8', JSON.stringify({ status: 'alive', uptimeSeconds: metrics.snapshot().uptimeSeconds }));
        return;
      case '/readyz': {
        const r = await report();
        metrics.recordHealth(r);
        const body = {
          ready: r.status !== 'Critical',
          status: r.status,
          timestamp: r.timestamp.toISOString(),
          checks: r.checks.map((c) => ({ name: c.name, status: c.status, message: c.message, metric: c.metric, unit: c.unit, durationMs: round(c.durationMs) })),
        };
        send(r.status === 'Critical' ? 503 : 200, 'application/json; charset=utf-8', JSON.stringify(body));
        return;
      }
      case '/':
      case '/status':
      case '/status.json': {
        const view = await statusView();
        const wantsJson = path === '/status.json' || /\bapplication\/json\b/.test(req.headers.accept ?? '');
        if (wantsJson) {
          send(200, 'application/json; charset=utf-8', JSON.stringify(view));
          return;
        }
        res.setHeader('content-security-policy', STATUS_PAGE_CSP);
        res.setHeader('x-content-type-options', 'nosniff');
        res.setHeader('referrer-policy', 'no-referrer');
        send(200, 'text/html; charset=utf-8', renderStatusPage(view));
        return;
      }
      default:
        send(404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz, /readyz, /status, /status.json\n');
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`internal error: ${error instanceof Error ? error.message : String(error)}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    server,
    port: address.port,
    url: `http://${shownHost}:${address.port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        unfeed?.();
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
