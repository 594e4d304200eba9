import type { AuditRecord, AuditVerifyResult } from '@olocus/hsm-compliance';
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

/**
 * The checkpoint key's public key, from the backend: never from beside the log it vouches for.
 * After a rotation the key in charge is the one the log's signer now names, not the config's.
 */
async function checkpointKey(manager: CliManager, audit: CliAudit): Promise<Uint8Array> {
  return (await manager.getPublicKey(audit.log.checkpointSigner?.keyId ?? audit.section.checkpoint.keyId)).spki;
}

const WITNESS_PROBLEMS: Record<string, string> = { rollback: 'ROLLBACK', wipe: 'WIPE', fork: 'FORK' };

/** One line per witness consulted (what it answered), and the checkpoint keys after a rotation. */
function witnessLines(result: AuditVerifyResult): string[] {
  const keys = (result.checkpointKeys ?? []).map((k) => `  checkpoint key ${terminalSafe(k.keyId)} (${k.fingerprint}) from record ${k.fromSeq}`);
  return keys.concat((result.witnesses ?? []).map((w) => {
    const what = w.status === 'consulted' ? `checkpoint of ${w.size} records at ${w.time}` : w.status === 'write-only' ? 'write-only (receives checkpoints, cannot be asked)' : `${w.status}${w.message ? `: ${w.message}` : ''}`;
    return `  witness ${terminalSafe(w.witness)}: ${terminalSafe(what)}`;
  }));
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
      ctx.print(`ok: ${result.message} (${cps}, ${ms} ms, ${rate} records/s)`);
      for (const line of witnessLines(result)) ctx.print(line);
      return;
    }
    const named = result.problem ? WITNESS_PROBLEMS[result.problem] : undefined;
    if (named) {
      // The message already starts with ROLLBACK / WIPE / FORK and says what the witness saw.
      ctx.note(`olocus-hsm: ${result.message}. The log cannot be trusted: restore it from a backup or an export that holds the witnessed checkpoint, and find out who could write to ${terminalSafe(audit.log.storage === 'sqlite' ? 'the log file' : 'the log database')}`);
      for (const line of witnessLines(result)) ctx.note(line);
      return;
    }
    // The counts of a failed walk are what was checked before the problem, not the size of the log.
    const before = result.records === 0 ? 'no record verified before it' : `${result.records} record${result.records === 1 ? '' : 's'} verified before it`;
    const from = result.firstBadSeq !== undefined ? `from record ${result.firstBadSeq} on` : 'from there on';
    ctx.note(
      `olocus-hsm: TAMPERED: ${result.message} (${before}; ${cps}; ${ms} ms). The log cannot be trusted ${from}: keep a copy (olocus-hsm audit export --out FILE) and compare it with a backup or an earlier export`,
    );
    for (const line of witnessLines(result)) ctx.note(line);
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

/** A key id for the next checkpoint key: the configured id and the UTC time (never `<id>.v<N>`, which names rotation versions). */
export function nextCheckpointKeyId(base: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${base.slice(0, 110)}-${stamp}`;
}

/**
 * `audit rotate-checkpoint-key [--new-key-id ID] [--reason TEXT]`: makes a new ECDSA P-256 key in
 * the backend and hands checkpoint signing to it, recorded in the chain (a config.change record
 * naming both keys by fingerprint, covered by a checkpoint of the old key). The old key is kept:
 * old checkpoints verify with it. Register in main.ts under `audit` (see the compliance report).
 */
export async function rotateCheckpointKey(ctx: CliContext, opts: { newKeyId?: string; reason?: string }): Promise<void> {
  const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
  if (opts.newKeyId !== undefined && (!ID.test(opts.newKeyId) || /\.v\d+$/.test(opts.newKeyId))) {
    throw new CliError('InvalidArgument', `--new-key-id: "${echo(opts.newKeyId)}" is not a key id (letters, digits, . _ : -, at most 128, not ending in .v<N>, which names rotation versions)`);
  }
  if (opts.reason !== undefined && (opts.reason.trim() === '' || opts.reason.length > 1000)) throw new CliError('InvalidArgument', '--reason: give a non-empty reason of at most 1000 characters');
  await withManager(ctx, async (m) => {
    const audit = requireAudit(m as CliManager);
    const backend = audit.backend;
    const current = audit.log.checkpointSigner;
    if (!backend || !current) throw new CliError('InvalidConfiguration', 'the audit log has no checkpoint key to rotate (the backend did not open for it); check the config\'s backend section');
    const { checkpointSignerFromBackend } = await import('@olocus/hsm-compliance/audit');
    const { isHsmError } = await import('@olocus/hsm-core');
    const newKeyId = opts.newKeyId ?? nextCheckpointKeyId(audit.section.checkpoint.keyId);
    const old = await backend.getKey(current.keyId);
    try {
      // the same labels as the key it replaces (the log it belongs to), so evidence checks find it
      await backend.generateKeyPair({ id: newKeyId, algorithm: 'ECDSA_P256', labels: { ...(old.labels ?? {}), purpose: 'olocus audit checkpoints and reports' } });
    } catch (error) {
      if (isHsmError(error, 'KeyAlreadyExists')) throw new CliError('InvalidArgument', `--new-key-id: a key ${echo(newKeyId)} already exists in the backend; a checkpoint key must be new: choose another id`);
      throw error;
    }
    const rotation = await audit.log.rotateCheckpointKey(checkpointSignerFromBackend(backend, newKeyId, { create: false }), { actor: audit.actor, ...(opts.reason ? { reason: opts.reason } : {}) });
    await audit.log.checkpoint();
    if (ctx.json) return ctx.printJson({ checkpointKeyRotation: rotation });
    ctx.print(`rotated the audit checkpoint key: ${terminalSafe(rotation.oldKeyId)} (${rotation.oldFingerprint}) -> ${terminalSafe(rotation.newKeyId)} (${rotation.newFingerprint})`);
    ctx.print(`recorded as record ${rotation.seq}, covered by the old key's checkpoint at size ${rotation.checkpoint.size}; new checkpoints are signed by ${terminalSafe(rotation.newKeyId)}`);
    ctx.print(`keep ${terminalSafe(rotation.oldKeyId)}: checkpoints made before the rotation verify with it`);
  });
}
