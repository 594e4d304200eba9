import { withManager } from '../manager.js';
import { EXIT_NEGATIVE } from '../errors.js';
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

export async function health(ctx: CliContext): Promise<void> {
  await withManager(ctx, async (manager) => {
    const status = await manager.healthCheck();
    if (!status.healthy) ctx.exitCode = EXIT_NEGATIVE;
    if (ctx.json) return ctx.printJson({ health: status });
    const line = `${status.healthy ? 'healthy' : 'UNHEALTHY'}: ${status.message} (${status.latencyMs.toFixed(1)} ms)`;
    if (status.healthy) ctx.print(line);
    else ctx.note(`olocus-hsm: Unhealthy: ${status.message}`);
  });
}
