import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HsmError } from '@olocus/hsm-core';
import type { HealthMonitor, HealthReport } from './health.js';
import type { HsmMetrics } from './metrics.js';
import { renderStatusPage } from './status-page.js';

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
  const maxAge = () => options.maxReportAgeMs ?? (monitor.isRunning ? 2 * monitor.intervalMs : 0);
  const report = async (): Promise<HealthReport> => {
    const last = monitor.lastReport;
    if (last && Date.now() - last.timestamp.getTime() <= maxAge()) return last;
    return monitor.performHealthCheck();
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
      case '/status': {
        const [r, keyCounts] = await Promise.all([report(), counts()]);
        metrics.recordHealth(r);
        send(200, 'text/html; charset=utf-8', renderStatusPage({ report: r, snapshot: metrics.snapshot(), title: options.title ?? 'Olocus HSM status', keyCounts }));
        return;
      }
      default:
        send(404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz, /readyz, /status\n');
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
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
