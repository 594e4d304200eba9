import { existsSync } from 'node:fs';
import type { HsmBackend } from '@olocus/hsm-core';
import type { AuditLog } from '@olocus/hsm-compliance';
import type { ActivitySource, KeyInventoryItem, KeyInventoryProvider } from '@olocus/hsm-monitoring';
import type { AuditSection } from '../audit-config.js';
import type { CliContext } from '../context.js';
import { CliError, redact } from '../errors.js';
import { auditOf, openManager } from '../manager.js';

export interface MonitorOptions {
  listen: string;
  interval?: string;
  warnDays?: string;
}

const DURATION = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `host:port`, `[v6]:port` or `:port`; the port 1–65535. The error names the value. */
export function parseListenOption(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new CliError('InvalidArgument', `--listen: expected host:port with a port from 1 to 65535, got "${value}"`);
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** `--interval`: a duration such as 30s, 5m, 500ms (at least 100 ms). */
export function parseInterval(value: string): number {
  const m = DURATION.exec(value);
  const ms = m ? Math.round(Number(m[1]) * UNIT_MS[m[2]!]!) : NaN;
  if (!Number.isFinite(ms) || ms < 100) throw new CliError('InvalidArgument', `--interval: expected a duration of at least 100ms such as 30s, 5m, 500ms, got "${value}"`);
  return ms;
}

function parseWarnDays(value: string | undefined): number {
  if (value === undefined) return 30;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new CliError('InvalidArgument', `--warn-days: expected a number of days >= 0, got "${value}"`);
  return n;
}

/** Audit record types the status page reads: key operations and login failures. */
const ACTIVITY_TYPES = ['key.sign', 'key.verify', 'key.generate', 'key.access', 'key.destroy', 'auth.failure'] as const;

/**
 * The audit log as monitoring's activity source. Every CLI process appends to this one log, so
 * the status page counts the whole installation's operations, failures and login failures, not
 * only the monitor's own. The first read covers the window, later reads only what is new.
 */
export function auditActivitySource(log: Pick<AuditLog, 'iterate' | 'logName'>, section: AuditSection): ActivitySource {
  const where = section.storage.kind === 'sqlite' ? `sqlite ${section.storage.path}` : 'postgres';
  return {
    description: `audit log ${log.logName} (${where})`,
    read: ({ from, afterSeq }) => scrubbed(log.iterate({ ...(afterSeq === undefined ? { from } : { afterSeq }), types: [...ACTIVITY_TYPES] })),
  };
}

/** The page shows why a read failed: never with a secret the CLI has seen (a connection string's password). */
async function* scrubbed<T>(records: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* records;
  } catch (error) {
    throw new Error(redact(error instanceof Error ? error.message : String(error)));
  }
}

/**
 * The key inventory: every registry version (state, next rotation, cryptoperiod end), then the
 * backend's keys the registry does not know (plain keys, the health canary, the audit checkpoint key).
 */
export function keyInventory(registryItems: KeyInventoryProvider | undefined, backend: HsmBackend): KeyInventoryProvider {
  return async () => {
    try {
      return await listInventory(registryItems, backend);
    } catch (error) {
      throw new Error(redact(error instanceof Error ? error.message : String(error)));
    }
  };
}

async function listInventory(registryItems: KeyInventoryProvider | undefined, backend: HsmBackend): Promise<KeyInventoryItem[]> {
  const items = registryItems ? await registryItems() : [];
  const known = new Set(items.map((k) => k.keyId));
  let cursor: string | undefined;
  do {
    const page = await backend.listKeys({ limit: 1000, ...(cursor ? { cursor } : {}) });
    for (const h of page.keys) {
      if (known.has(h.id)) continue;
      const item: KeyInventoryItem = { keyId: h.id, state: h.state ?? 'enabled', algorithm: h.algorithm, backend: backend.type, source: 'backend' };
      if (h.expiresAt) item.expiresAt = h.expiresAt;
      items.push(item);
    }
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

/**
 * `olocus-hsm monitor`: health checks on an interval, Prometheus metrics, alerts on stderr and
 * the /metrics /healthz /readyz /status /status.json endpoints, until SIGINT or SIGTERM. With an
 * audit log the status page is the installation's (every process's operations and login
 * failures); with a key registry it lists each key's state, next rotation and cryptoperiod end,
 * and cryptoperiods ending / rotations due raise alerts.
 */
export async function monitor(ctx: CliContext, options: MonitorOptions): Promise<void> {
  // Arguments first: a bad value never opens the backend.
  const listen = parseListenOption(options.listen);
  const intervalMs = parseInterval(options.interval ?? '30s');
  const warnDays = parseWarnDays(options.warnDays);

  const { loadConfig } = await import('../config.js');
  const loaded = await loadConfig(ctx);
  const m = await import('@olocus/hsm-monitoring');
  const manager = await openManager(ctx, loaded);
  const cleanup: Array<() => Promise<void>> = [() => manager.close()];
  const closeAll = async () => {
    for (const c of cleanup.splice(0).reverse()) await c().catch((error: unknown) => ctx.note(`olocus-hsm: monitor: while closing: ${(error as Error)?.message ?? String(error)}`));
  };
  try {
    // Alerts are JSON lines on stderr (stdout carries only the "listening" line).
    const log = (line: string) => ctx.note(line);
    const audit = auditOf(manager);
    const activity = audit ? auditActivitySource(audit.log, audit.section) : undefined;
    const mon = m.createMonitoring({
      backend: manager.backend,
      health: { intervalMs },
      ...(activity ? { activity } : {}),
      alerts: { sinks: [m.logSink({ warn: log, info: log })], onSinkError: (error) => ctx.note(`olocus-hsm: alert sink failed: ${(error as Error)?.message ?? String(error)}`) },
    });
    const alerts = mon.alerts!;
    cleanup.push(async () => {
      await mon.stop();
      await alerts.flush();
    });

    // The key registry, when the config's registry exists (a missing SQLite file is not created).
    const storage = loaded.rotation.storage;
    const registryPresent = storage.kind === 'postgres' || (storage.path !== ':memory:' && existsSync(storage.path));
    let keyCounts: (() => Promise<Record<string, number>>) | undefined;
    let registryItems: KeyInventoryProvider | undefined;
    if (registryPresent) {
      const { openRotationFor } = await import('../rotation.js');
      const rot = await openRotationFor(ctx, loaded, manager, { reconcile: false });
      cleanup.push(() => rot.close());
      keyCounts = m.registryKeyCounts(rot.registry);
      registryItems = m.registryInventory(rot.registry);
      const unsubscribe = m.alertsFromRotation(rot.events, alerts);
      const watch = new m.CryptoperiodWatch({
        alerts,
        keys: m.registryKeyList(rot.registry),
        warnDays,
        intervalMs,
        onError: (error) => ctx.note(`olocus-hsm: cryptoperiod check failed: ${(error as Error)?.message ?? String(error)}`),
      });
      cleanup.push(async () => {
        await watch.stop();
        unsubscribe();
      });
      watch.start();
    }

    let server: Awaited<ReturnType<typeof m.startMonitorServer>>;
    try {
      server = await m.startMonitorServer({
        monitor: mon.monitor,
        metrics: mon.metrics,
        listen,
        activity: mon.activity,
        alerts,
        inventory: keyInventory(registryItems, manager.backend),
        warnDays,
        ...(keyCounts ? { keyCounts } : {}),
      });
    } catch (error) {
      const e = error as NodeJS.ErrnoException;
      if (e?.code === 'EADDRINUSE') throw new CliError('IoError', `--listen: ${options.listen} is already in use`, { cause: error });
      if (e?.code === 'EADDRNOTAVAIL' || e?.code === 'ENOTFOUND' || e?.code === 'EACCES') throw new CliError('IoError', `--listen: cannot listen on ${options.listen} (${e.code})`, { cause: error });
      throw error;
    }
    cleanup.push(() => server.close());
    mon.monitor.start();

    const line = ctx.json
      ? JSON.stringify({ listening: server.url, endpoints: ['/metrics', '/healthz', '/readyz', '/status', '/status.json'], intervalMs, registry: registryPresent, activity: mon.activity.description })
      : `monitoring ${manager.backend.type} on ${server.url} (/metrics /healthz /readyz /status /status.json), checks every ${intervalMs / 1000} s${registryPresent ? ', key registry watched' : ''}; activity from ${mon.activity.description}`;
    ctx.stdout.write(redact(line) + '\n');

    const signal = await new Promise<NodeJS.Signals>((resolve) => {
      const on = (s: NodeJS.Signals) => {
        process.off('SIGINT', on);
        process.off('SIGTERM', on);
        resolve(s);
      };
      process.on('SIGINT', on);
      process.on('SIGTERM', on);
    });
    ctx.note(`olocus-hsm: monitor: ${signal}: stopping`);
  } finally {
    await closeAll();
  }
}
