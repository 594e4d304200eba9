import type { HealthReport } from '@olocus/hsm-monitoring';
import { openManager, withManager } from '../manager.js';
import { EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, summarize } from '../errors.js';
import type { CliContext } from '../context.js';

export async function info(ctx: CliContext): Promise<void> {
  await withManager(ctx, async (manager) => {
    const [backend, capabilities, fips] = await Promise.all([manager.info(), manager.capabilities(), manager.fipsStatus()]);
    if (ctx.json) return ctx.printJson({ info: backend, capabilities, fips });
    const rows: [string, string][] = [
      ['backend', backend.backend],
      ['description', backend.description],
    ];
    for (const k of ['manufacturer', 'model', 'serialNumber', 'firmwareVersion', 'libraryVersion'] as const) {
      if (backend[k]) rows.push([k, backend[k]!]);
    }
    for (const [k, v] of Object.entries(backend.details ?? {})) rows.push([k, String(v)]);
    rows.push(
      ['algorithms', capabilities.algorithms.join(', ')],
      ['persistent keys', String(capabilities.persistentKeys)],
      ['hardware backed', String(capabilities.hardwareBacked)],
      ['remote verify', String(capabilities.remoteVerify)],
    );
    if (capabilities.maxConcurrency !== undefined) rows.push(['max concurrency', String(capabilities.maxConcurrency)]);
    rows.push(['FIPS', fips.standard === 'none' ? 'none' : `${fips.standard} level ${fips.level}${fips.approvedMode ? ', approved mode' : ', not in approved mode'}`]);
    if (fips.certificate) rows.push(['FIPS certificate', `${fips.certificate}${fips.certificateStatus ? ` (${fips.certificateStatus})` : ''}`]);
    rows.push(['FIPS notes', fips.notes]);
    const width = Math.max(...rows.map((r) => r[0].length));
    for (const [k, v] of rows) ctx.print(`${k.padEnd(width)}  ${v}`);
  });
}

/**
 * `olocus-hsm health`: the monitoring checks (connectivity, performance with the canary key,
 * capacity, security, fips) once. Exit 0 Healthy, 1 Degraded, 2 Critical. A backend that cannot
 * be opened (module missing, device unreachable, login refused) is Critical, not an error;
 * a config that cannot be read is still an error (exit 2).
 */
export async function health(ctx: CliContext): Promise<void> {
  const { loadConfig } = await import('../config.js');
  const loaded = await loadConfig(ctx);
  const { HealthMonitor } = await import('@olocus/hsm-monitoring');
  const started = performance.now();
  const timestamp = new Date();
  let report: HealthReport;
  let manager: Awaited<ReturnType<typeof openManager>> | undefined;
  try {
    manager = await openManager(ctx, loaded);
  } catch (error) {
    if (!isBackendFailure(error)) throw error;
    const summary = summarize(error);
    const durationMs = performance.now() - started;
    report = {
      status: 'Critical',
      timestamp,
      durationMs,
      checks: [{ name: 'connectivity', status: 'Critical', message: `backend could not be opened: ${summary.code}: ${(summary.message.split('\n')[0] ?? '')}`, durationMs }],
    };
  }
  if (manager) {
    try {
      report = await new HealthMonitor({ backend: manager.backend }).performHealthCheck();
    } finally {
      await manager.close();
    }
  }
  const r = report!;
  ctx.exitCode = r.status === 'Healthy' ? EXIT_OK : r.status === 'Degraded' ? EXIT_NEGATIVE : EXIT_ERROR;
  if (ctx.json) {
    return ctx.printJson({
      health: {
        status: r.status,
        healthy: r.status === 'Healthy',
        timestamp: r.timestamp.toISOString(),
        durationMs: round(r.durationMs),
        checks: r.checks.map((c) => ({ name: c.name, status: c.status, message: c.message, ...(c.warning ? { warning: c.warning } : {}), ...(c.metric !== undefined ? { metric: c.metric, unit: c.unit } : {}), durationMs: round(c.durationMs) })),
      },
    });
  }
  // A warning (a module that is not FIPS validated) leaves the status Healthy but is not hidden behind it.
  const warned = r.checks.filter((c) => c.warning);
  ctx.print(`${r.status}${warned.length > 0 ? ` with ${warned.length === 1 ? 'a warning' : `${warned.length} warnings`} (${warned.map((c) => c.name).join(', ')})` : ''} (${r.durationMs.toFixed(1)} ms)`);
  const width = Math.max(...r.checks.map((c) => c.name.length));
  const statusWidth = Math.max(...r.checks.map((c) => c.status.length));
  for (const c of r.checks) {
    ctx.print(`  ${c.name.padEnd(width)}  ${c.status.padEnd(statusWidth)}  ${c.message} (${c.durationMs.toFixed(1)} ms)`);
    if (c.warning) ctx.print(`  ${''.padEnd(width)}  ${'warning'.padEnd(statusWidth)}  ${c.warning}`);
  }
  for (const c of warned) ctx.note(`olocus-hsm: health warning (${c.name}): ${c.warning}`);
  if (r.status !== 'Healthy') ctx.note(`olocus-hsm: health is ${r.status}: ${r.checks.filter((c) => c.status !== 'Healthy').map((c) => c.name).join(', ')}`);
}

/** Opening failed in the backend (not in the config file): that is a Critical health answer. */
function isBackendFailure(error: unknown): boolean {
  const e = error as { name?: string; code?: string };
  if (e?.name === 'CliError') return false;
  return e?.name === 'HsmError' && e.code !== 'InvalidConfiguration' && e.code !== 'UnknownBackend';
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
