import type { AuditRecord } from '@olocus/hsm-compliance';
import { CliError, EXIT_NEGATIVE } from '../errors.js';
import { checkOutputPath, echo, onStdoutClosed, stdoutClosed, terminalSafe, writeStreaming, writeTo } from '../io.js';
import { auditOf, withManager, type CliManager } from '../manager.js';
import type { CliAudit } from '../audit.js';
import type { CliContext } from '../context.js';

/** `audit verify`, `audit export`, `audit tail`: every one is itself recorded (PCI-10.2 audit-log access). */

export function requireAudit(manager: CliManager | { audit?: CliAudit }): CliAudit {
  const audit = auditOf(manager as CliManager);
  if (!audit) throw new CliError('InvalidConfiguration', 'auditing is off in this config ("audit": {"enabled": false}), so there is no audit log to read; remove that setting (or set it to true) to keep one from now on');
  return audit;
}

/** An ISO date or date-time given on the command line; `field` names the option. */
export function parseDateOption(value: string | undefined, field: string): Date | undefined {
  if (value === undefined) return undefined;
  const date = new Date(/^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(date.getTime())) throw new CliError('InvalidArgument', `${field}: "${echo(value)}" is not a date (use ISO 8601, e.g. 2026-11-01 or 2026-11-01T12:00:00Z)`);
  return date;
}

/** The checkpoint key's public key, from the backend: never from beside the log it vouches for. */
async function checkpointKey(manager: CliManager, audit: CliAudit): Promise<Uint8Array> {
  return (await manager.getPublicKey(audit.section.checkpoint.keyId)).spki;
}

export async function verify(ctx: CliContext): Promise<void> {
  await withManager(ctx, async (m) => {
    const manager = m as CliManager;
    const audit = requireAudit(manager);
    await audit.append({ type: 'audit.access', outcome: 'success', details: { action: 'verify' } });
    const result = await audit.log.verify({ publicKey: await checkpointKey(manager, audit) });
    if (!result.ok) {
      ctx.exitCode = EXIT_NEGATIVE;
      await audit.append({ type: 'security.event', outcome: 'failure', reason: result.message, details: { event: 'auditTamperDetected', firstBadSeq: result.firstBadSeq ?? null, problem: result.problem ?? null } }).catch(() => undefined);
    }
    if (ctx.json) return ctx.printJson({ audit: result });
    const ms = result.durationMs.toFixed(0);
    const cps = `${result.checkpoints} checkpoint${result.checkpoints === 1 ? '' : 's'}`;
    if (result.ok) {
      const rate = result.durationMs > 0 ? Math.round(result.records / (result.durationMs / 1000)) : result.records;
      return ctx.print(`ok: ${result.message} (${cps}, ${ms} ms, ${rate} records/s)`);
    }
    // The counts of a failed walk are what was checked before the problem, not the size of the log.
    const before = result.records === 0 ? 'no record verified before it' : `${result.records} record${result.records === 1 ? '' : 's'} verified before it`;
    const from = result.firstBadSeq !== undefined ? `from record ${result.firstBadSeq} on` : 'from there on';
    ctx.note(
      `olocus-hsm: TAMPERED: ${result.message} (${before}; ${cps}; ${ms} ms). The log cannot be trusted ${from}: keep a copy (olocus-hsm audit export --out FILE) and compare it with a backup or an earlier export`,
    );
  });
}

export async function exportLog(ctx: CliContext, opts: { out?: string; from?: string; to?: string }): Promise<void> {
  if (!opts.out) throw new CliError('InvalidArgument', '--out FILE is required (the export is JSON Lines: records and checkpoints; - for standard output)');
  const from = parseDateOption(opts.from, '--from');
  const to = parseDateOption(opts.to, '--to');
  if (from && to && from > to) throw new CliError('InvalidArgument', `--from ${echo(opts.from!)} is after --to ${echo(opts.to!)}`);
  // Checked before the log is opened: a directory or a missing folder is refused with nothing written or recorded.
  await checkOutputPath(ctx, '--out', opts.out);
  const out = opts.out;
  await withManager(ctx, async (m) => {
    const audit = requireAudit(m as CliManager);
    await audit.append({ type: 'audit.access', outcome: 'success', details: { action: 'export', from: from?.toISOString() ?? null, to: to?.toISOString() ?? null } });
    await audit.flush();
    // The export carries audit data: the file is private (0600), written whole or not at all.
    const { path, result: summary } = await writeStreaming(ctx, '--out', out, (stream) => audit.log.export(stream, { ...(from ? { from } : {}), ...(to ? { to } : {}) }), { mode: 0o600 });
    if (path === '-') {
      ctx.note(`olocus-hsm: exported ${summary.records} records, ${summary.checkpoints} checkpoints to standard output`);
      return;
    }
    if (ctx.json) return ctx.printJson({ export: { path, ...summary } });
    ctx.print(`wrote ${path}: ${summary.records} records, ${summary.checkpoints} checkpoints`);
  });
}

/** One record as a terminal line: every field that came from a user or a file is escaped. */
function recordLine(r: AuditRecord): string {
  const key = r.keyId ? ` key=${terminalSafe(r.keyId)}` : '';
  const alg = r.algorithm ? ` ${terminalSafe(r.algorithm)}` : '';
  const latency = r.latencyMs !== undefined ? ` ${r.latencyMs.toFixed(1)}ms` : '';
  const error = r.errorCode ? ` error=${terminalSafe(r.errorCode)}` : '';
  const reason = r.reason ? ` reason="${terminalSafe(r.reason).replace(/"/g, '\\"')}"` : '';
  return `${String(r.seq).padStart(7)} ${r.time} ${terminalSafe(r.type).padEnd(14)} ${r.outcome === 'success' ? 'ok  ' : 'FAIL'} actor=${terminalSafe(r.actor)}${key}${alg}${latency}${error}${reason}`;
}

export async function tail(ctx: CliContext, opts: { lines?: string; follow?: boolean }): Promise<void> {
  const limit = opts.lines === undefined ? 20 : Number(opts.lines);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new CliError('InvalidArgument', `--lines: "${echo(opts.lines ?? '')}" must be a whole number from 1 to 100000`);
  await withManager(ctx, async (m) => {
    const audit = requireAudit(m as CliManager);
    await audit.append({ type: 'audit.access', outcome: 'success', details: { action: 'tail', follow: opts.follow === true } });
    const controller = new AbortController();
    const stop = (): void => controller.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // `audit tail -f | head -1`: the reader left, so following is over.
    const unsubscribe = onStdoutClosed(stop);
    try {
      for await (const record of audit.log.tail({ limit, follow: opts.follow === true, signal: controller.signal })) {
        if (stdoutClosed()) break;
        if (ctx.json) await writeTo(ctx.stdout, JSON.stringify(record) + '\n');
        else ctx.print(recordLine(record));
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    } finally {
      unsubscribe();
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
  });
}
