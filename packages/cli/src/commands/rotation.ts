import type { KeyVersion, RotationResult, ScheduledTask, StateChange } from '@olocus/hsm-rotation';
import { CliError } from '../errors.js';
import { describeStorage } from '../rotation-config.js';
import { actorOf, iso, requireLogicalKey, versionJson, withRotation, type RotationScope } from '../rotation.js';
import { table } from './keys.js';
import { terminalSafe } from '../io.js';
import type { CliContext } from '../context.js';

/** `keys rotate`, `keys history`, `keys revoke|suspend|resume`, `rotation run`, `rotation status`. */

interface ChangeOptions {
  id: string;
  reason?: string;
  actor?: string;
}

function requireReason(opts: { reason?: string }, what: string): string {
  if (opts.reason === undefined || opts.reason.trim() === '') {
    throw new CliError('InvalidArgument', `--reason is required for ${what} (every state change records who and why)`);
  }
  return opts.reason;
}

/** Milliseconds as the policy writes them: 90d, 24h, 15m, 10s, 250ms. */
function duration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

function changeJson(c: StateChange): Record<string, unknown> {
  return { at: c.at, keyId: c.keyId, version: c.version, from: c.from, to: c.to, actor: c.actor, reason: c.reason };
}

export async function rotate(ctx: CliContext, opts: ChangeOptions & { emergency?: boolean }): Promise<void> {
  const emergency = opts.emergency === true;
  const reason = emergency ? requireReason(opts, 'an emergency rotation (keys rotate --emergency --reason TEXT)') : (opts.reason ?? 'manual rotation');
  if (reason.trim() === '') throw new CliError('InvalidArgument', '--reason must not be empty');
  const actor = actorOf(ctx, opts.actor);
  await withRotation(ctx, async (scope) => {
    await requireLogicalKey(scope, opts.id);
    let result: RotationResult;
    try {
      result = emergency ? await scope.rot.manager.emergencyRotateKey(opts.id, { actor, reason }) : await scope.rot.manager.rotateKey(opts.id, { actor, reason });
    } catch (error) {
      const e = error as { name?: string; details?: Record<string, unknown>; message?: string };
      if (e?.name === 'HsmError' && e.details?.['rotationCode'] === 'EmergencyRotationDisabled') {
        throw new CliError('PolicyViolation', `${e.message}; to allow it set "rotation": {"policy": {"allowEmergencyRotation": true}} in ${scope.loaded.path}`, { cause: error });
      }
      throw error;
    }
    printRotation(ctx, opts.id, result, { actor, reason, emergency });
  });
}

/**
 * A rotation's outcome. One that completed an interrupted rotation (its process died) says so:
 * that rotation's new version is the result, and no second one was started.
 */
function printRotation(ctx: CliContext, id: string, result: RotationResult, opts: { actor: string; reason: string; emergency?: boolean; recoverCommand?: boolean }): void {
  const { previous, current, recovered } = result;
  if (ctx.json) {
    ctx.printJson({
      key: id,
      kind: result.kind,
      actor: opts.actor,
      reason: opts.reason,
      previous: previous ? versionJson(previous) : undefined,
      current: versionJson(current),
      recovered: recovered ? { fromStep: recovered.fromStep, startedAt: recovered.startedAt, previousOwner: recovered.owner } : undefined,
    });
    return;
  }
  const from = previous ? `v${previous.version} (now ${previous.state})` : '(none)';
  if (recovered) {
    ctx.print(
      `completed the interrupted ${result.kind} rotation of ${id} (started ${iso(recovered.startedAt)} by ${recovered.owner}, stopped after step "${recovered.fromStep}"): ${from} -> v${current.version} ${current.state} (backend key ${current.keyId})`,
    );
    if (!opts.recoverCommand) ctx.print(`no further rotation was started: run keys rotate --id ${id} again to rotate to v${current.version + 1}`);
  } else {
    ctx.print(`${opts.emergency ? 'emergency-rotated' : 'rotated'} ${id}: ${from} -> v${current.version} ${current.state} (backend key ${current.keyId}); actor ${opts.actor}, reason: ${opts.reason}`);
  }
  if (previous?.state === 'Superseded') {
    ctx.print(`v${previous.version} signs no more; signatures it made before ${iso(previous.deactivatedAt)} still verify`);
  }
}

/** `rotation recover --key K --reason R`: completes the interrupted rotation of K now, whoever started it (an operator who knows that node is gone). */
export async function recover(ctx: CliContext, opts: { key: string; reason?: string; actor?: string }): Promise<void> {
  const reason = requireReason(opts, 'rotation recover');
  const actor = actorOf(ctx, opts.actor);
  // no reconcile on open: this command is the explicit, audited recovery
  await withRotation(
    ctx,
    async (scope) => {
      await requireLogicalKey(scope, opts.key, '--key');
      const result = await scope.rot.manager.recoverRotation(opts.key, { actor, reason });
      printRotation(ctx, opts.key, result, { actor, reason, recoverCommand: true });
    },
    { reconcile: false },
  );
}

export async function history(ctx: CliContext, opts: { id: string }): Promise<void> {
  await withRotation(
    ctx,
    async (scope) => {
      await requireLogicalKey(scope, opts.id);
      const [logical, versions, changes] = await Promise.all([
        scope.rot.registry.getLogicalKey(opts.id),
        scope.rot.registry.getKeyVersions(opts.id),
        scope.rot.registry.getHistory(opts.id),
      ]);
      if (ctx.json) {
        return ctx.printJson({
          key: opts.id,
          algorithm: logical.algorithm,
          createdAt: logical.createdAt,
          createdBy: logical.createdBy,
          rotationIntervalMs: logical.rotationIntervalMs,
          versions: versions.map(versionJson),
          history: changes.map(changeJson),
        });
      }
      // createdBy comes from the registry, whoever wrote it: one value, one line
      ctx.print(`${terminalSafe(opts.id)} (${logical.algorithm}), created ${iso(logical.createdAt)} by ${terminalSafe(logical.createdBy)}${logical.rotationIntervalMs ? `, rotates every ${duration(logical.rotationIntervalMs)}` : ''}`);
      ctx.print();
      ctx.print(
        table(
          ['VERSION', 'STATE', 'KEY ID', 'ACTIVATED', 'DEACTIVATED', 'USES'],
          versions.map((v) => [`v${v.version}`, v.state, v.keyId, iso(v.activatedAt), iso(v.deactivatedAt), String(v.usageCount)]),
        ),
      );
      ctx.print();
      ctx.print(
        table(
          ['TIME', 'VERSION', 'FROM', 'TO', 'ACTOR', 'REASON'],
          changes.map((c) => [c.at.toISOString(), `v${c.version}`, c.from ?? '-', c.to, c.actor, c.reason]),
        ),
      );
    },
    { reconcile: false },
  );
}

/** The version a change applies to: --version N, else the current one (Active, else the newest Suspended). */
async function targetVersion(scope: RotationScope, id: string, version: string | undefined, states: string[], what: string): Promise<KeyVersion> {
  const versions = await scope.rot.registry.getKeyVersions(id);
  if (version !== undefined) {
    const n = Number(version);
    if (!/^[1-9]\d{0,8}$/.test(version)) throw new CliError('InvalidArgument', `--version: "${version}" is not a version number (1, 2, ...)`);
    const v = versions.find((x) => x.version === n);
    if (!v) throw new CliError('KeyNotFound', `--version: logical key "${id}" has no version ${n} (versions: ${versions.map((x) => x.version).join(', ') || 'none'})`);
    return v;
  }
  const candidates = versions.filter((v) => states.includes(v.state));
  const v = candidates.find((x) => x.state === 'Active') ?? candidates[candidates.length - 1];
  if (!v) {
    const latest = versions[versions.length - 1];
    throw new CliError('IllegalStateTransition', `logical key "${id}" has no ${states.join(' or ')} version to ${what}${latest ? ` (latest is v${latest.version}, ${latest.state})` : ''}`);
  }
  return v;
}

async function change(ctx: CliContext, opts: ChangeOptions & { version?: string }, kind: 'revoke' | 'suspend' | 'resume'): Promise<void> {
  const reason = requireReason(opts, `keys ${kind}`);
  const actor = actorOf(ctx, opts.actor);
  await withRotation(ctx, async (scope) => {
    await requireLogicalKey(scope, opts.id);
    const m = scope.rot.manager;
    let before: KeyVersion;
    let after: KeyVersion;
    if (kind === 'revoke') {
      before = await targetVersion(scope, opts.id, opts.version, ['Active', 'Suspended'], 'revoke');
      after = await m.revokeKey(before.keyId, { actor, reason });
    } else if (kind === 'suspend') {
      before = await targetVersion(scope, opts.id, undefined, ['Active'], 'suspend');
      after = await m.suspendKey(before.keyId, { actor, reason });
    } else {
      before = await targetVersion(scope, opts.id, undefined, ['Suspended'], 'resume');
      after = await m.resumeKey(before.keyId, { actor, reason });
    }
    if (ctx.json) return ctx.printJson({ key: opts.id, action: kind, actor, reason, from: before.state, version: versionJson(after) });
    ctx.print(`${opts.id} v${after.version} (${after.keyId}): ${before.state} -> ${after.state}; actor ${actor}, reason: ${reason}`);
    if (kind === 'revoke' || kind === 'suspend') {
      const active = (await scope.rot.registry.getKeyVersions(opts.id)).some((v) => v.state === 'Active');
      if (!active) ctx.note(`note: ${opts.id} has no Active version now: signing with it fails until ${kind === 'suspend' ? 'keys resume or ' : ''}keys rotate --id ${opts.id}`);
    }
  });
}

export function revoke(ctx: CliContext, opts: ChangeOptions & { version?: string; keyVersion?: string }): Promise<void> {
  const version = opts.keyVersion ?? opts.version;
  return change(ctx, { ...opts, ...(version !== undefined ? { version } : {}) }, 'revoke');
}
export function suspend(ctx: CliContext, opts: ChangeOptions): Promise<void> {
  return change(ctx, opts, 'suspend');
}
export function resume(ctx: CliContext, opts: ChangeOptions): Promise<void> {
  return change(ctx, opts, 'resume');
}

function taskJson(t: ScheduledTask): Record<string, unknown> {
  return { id: t.id, kind: t.kind, key: t.baseKeyId, keyId: t.keyId, dueAt: t.dueAt, status: t.status, attempts: t.attempts, lastError: t.lastError };
}

/** `rotation run`: runs every due scheduler task once (after reconcile) and prints what ran; `--daemon` keeps the scheduler running. */
export async function run(ctx: CliContext, opts: { daemon?: boolean; interval?: string } = {}): Promise<void> {
  if (opts.daemon) return daemon(ctx, opts);
  if (opts.interval !== undefined) throw new CliError('InvalidArgument', '--interval applies to rotation run --daemon (the polling interval of the running scheduler)');
  await withRotation(ctx, async ({ rot }) => {
    const report = await rot.scheduler.runDueTasks();
    const reconcile = rot.reconcileReport;
    const failed = report.ran.filter((t) => t.status !== 'done');
    if (ctx.json) return ctx.printJson({ ran: report.ran, reconcile });
    for (const r of reconcile?.resumed ?? []) ctx.print(`completed interrupted ${r.kind} rotation of ${r.baseKeyId} to v${r.version} (from step ${r.fromStep})`);
    if (report.ran.length === 0) ctx.print('no task was due');
    else {
      ctx.print(
        table(
          ['TASK', 'KEY', 'VERSION KEY', 'RESULT', 'ERROR'],
          report.ran.map((t) => [t.kind, t.baseKeyId, t.keyId ?? '-', t.status, t.error ?? '']),
        ),
      );
      ctx.print(`${report.ran.length} task${report.ran.length === 1 ? '' : 's'} ran, ${failed.length} failed or will be retried`);
    }
  });
}


/**
 * `rotation run --daemon [--interval D]`: the scheduler as a service. Every tick first finishes
 * the rotations of processes that died (their lease expired, or on this host their pid is gone),
 * then runs due tasks. SIGINT/SIGTERM stop it cleanly: the tick in progress finishes, the audit
 * log is closed with its final checkpoint, exit 0.
 */
async function daemon(ctx: CliContext, opts: { interval?: string }): Promise<void> {
  const { parseDuration } = await import('@olocus/hsm-rotation');
  const { loadConfig } = await import('../config.js');
  const loaded = await loadConfig(ctx);
  let pollInterval: number | undefined;
  if (opts.interval !== undefined) {
    pollInterval = parseDuration(opts.interval);
    if (pollInterval === undefined || pollInterval < 100 || pollInterval > 86_400_000) {
      throw new CliError('InvalidArgument', `--interval: "${opts.interval}" is not a duration from 100ms to 24h (e.g. 10s, 1m)`);
    }
  }
  // Signals from now on are ours: a SIGTERM while opening still ends in a clean close.
  let stopSignal: NodeJS.Signals | undefined;
  let wake: (() => void) | undefined;
  const onSignal = (s: NodeJS.Signals): void => {
    stopSignal ??= s;
    wake?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const policy = (loaded.rotation.policy ?? {}) as Record<string, unknown>;
    const scheduler = (policy['scheduler'] ?? {}) as Record<string, unknown>;
    const withInterval = pollInterval === undefined ? loaded : { ...loaded, rotation: { ...loaded.rotation, policy: { ...policy, scheduler: { ...scheduler, pollInterval } } } };
    await withRotation(ctx, async ({ rot }) => {
      const report = rot.reconcileReport;
      for (const r of report?.resumed ?? []) line(ctx, { event: 'recovered', key: r.baseKeyId, version: r.version, fromStep: r.fromStep }, `completed interrupted ${r.kind} rotation of ${r.baseKeyId} to v${r.version} (from step ${r.fromStep})`);
      rot.events.on('event', (e) => {
        if (e.type === 'rotationRecovered') line(ctx, { event: 'recovered', key: e.baseKeyId, version: e.version, fromStep: e.fromStep, previousOwner: e.previousOwner, at: e.at }, `completed interrupted rotation of ${e.baseKeyId} to v${e.version} (from step ${e.fromStep}, started by ${e.previousOwner})`);
        else if (e.type === 'rotated') line(ctx, { event: 'rotated', key: e.baseKeyId, kind: e.kind, fromVersion: e.fromVersion, toVersion: e.toVersion, at: e.at }, `${e.kind} rotation of ${e.baseKeyId}: v${e.fromVersion} -> v${e.toVersion}`);
        else if (e.type === 'taskFailed') line(ctx, { event: 'taskFailed', key: e.baseKeyId, task: e.kind, attempts: e.attempts, final: e.final, error: e.error, at: e.at }, `task ${e.kind} of ${e.baseKeyId} failed (attempt ${e.attempts}${e.final ? ', final' : ''}): ${e.error}`);
      });
      const every = rot.manager.policy.scheduler.pollInterval;
      rot.scheduler.start();
      line(ctx, { event: 'started', pid: process.pid, node: rot.manager.nodeId, intervalMs: every }, `rotation scheduler running (pid ${process.pid}, every ${duration(every)}); SIGINT or SIGTERM stops it`);
      if (!stopSignal) await new Promise<void>((resolve) => (wake = resolve));
      line(ctx, { event: 'stopping', signal: stopSignal }, `${stopSignal}: stopping the scheduler (the run in progress finishes)`);
      await rot.scheduler.stop();
    }, {}, withInterval);
    line(ctx, { event: 'stopped' }, 'stopped; audit log closed');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** A daemon's line: one JSON object per line with --json (a stream, not one document), else text. */
function line(ctx: CliContext, json: Record<string, unknown>, text: string): void {
  if (ctx.json) ctx.stdout.write(`${JSON.stringify(json)}\n`);
  else ctx.print(text);
}

/** `rotation status`: keys and their Active version, next tasks, pending destructions, orphans. */
export async function status(ctx: CliContext, opts: { limit?: string }): Promise<void> {
  const limit = opts.limit === undefined ? 20 : Number(opts.limit);
  if (opts.limit !== undefined && (!/^\d+$/.test(opts.limit) || limit < 1 || limit > 1000)) {
    throw new CliError('InvalidArgument', `--limit: "${opts.limit}" is not a number from 1 to 1000`);
  }
  await withRotation(ctx, async ({ loaded, rot }) => {
    const keys: { key: string; algorithm: string; active?: KeyVersion; versions: number; states: Record<string, number> }[] = [];
    let cursor: string | undefined;
    do {
      const page = await rot.registry.listLogicalKeys({ limit: 1000, ...(cursor ? { cursor } : {}) });
      for (const lk of page.keys) {
        const versions = await rot.registry.getKeyVersions(lk.baseKeyId);
        const states: Record<string, number> = {};
        for (const v of versions) states[v.state] = (states[v.state] ?? 0) + 1;
        const active = versions.find((v) => v.state === 'Active');
        keys.push({ key: lk.baseKeyId, algorithm: lk.algorithm, ...(active ? { active } : {}), versions: versions.length, states });
      }
      cursor = page.nextCursor;
    } while (cursor);
    const tasks = await rot.scheduler.listTasks({ status: ['pending', 'running'], limit });
    const pending: KeyVersion[] = [];
    let vc: string | undefined;
    do {
      const page = await rot.registry.listKeyVersions({ state: 'PendingDestruction', limit: 1000, ...(vc ? { cursor: vc } : {}) });
      pending.push(...page.versions);
      vc = page.nextCursor;
    } while (vc);
    const report = rot.reconcileReport ?? { resumed: [], failed: [], orphans: [], inProgressElsewhere: [] };
    const storage = describeStorage(loaded.rotation.storage);
    const policy = rot.manager.policy;
    if (ctx.json) {
      return ctx.printJson({
        storage,
        policy: {
          rotationInterval: policy.rotationInterval,
          overlapPeriod: policy.overlapPeriod,
          retentionVersions: policy.retentionVersions,
          archiveRetention: policy.archiveRetention,
          destructionDelay: policy.destructionDelay,
          cryptoperiod: policy.cryptoperiod,
          allowEmergencyRotation: policy.allowEmergencyRotation,
        },
        keys: keys.map((k) => ({
          key: k.key,
          algorithm: k.algorithm,
          activeVersion: k.active?.version ?? null,
          activeKeyId: k.active?.keyId ?? null,
          activatedAt: k.active?.activatedAt,
          expiresAt: k.active?.expiresAt,
          versions: k.versions,
          states: k.states,
        })),
        nextTasks: tasks.map(taskJson),
        pendingDestructions: pending.map((v) => ({ key: v.baseKeyId, keyId: v.keyId, version: v.version, destroyAfter: v.destroyAfter })),
        orphans: report.orphans,
        reconcile: { resumed: report.resumed, failed: report.failed, inProgressElsewhere: report.inProgressElsewhere },
      });
    }
    const where = storage['kind'] === 'sqlite' ? `SQLite ${String(storage['path'])}` : `PostgreSQL (connection string from ${JSON.stringify(storage['connectionString'])})`;
    ctx.print(`registry: ${where}; emergency rotation ${policy.allowEmergencyRotation ? 'allowed' : 'disabled'}; overlap ${duration(policy.overlapPeriod)}; keep ${policy.retentionVersions} versions; destruction delay ${duration(policy.destructionDelay)}`);
    ctx.print();
    if (keys.length === 0) ctx.print('no logical keys');
    else
      ctx.print(
        table(
          ['KEY', 'ALGORITHM', 'ACTIVE', 'ACTIVATED', 'VERSIONS'],
          keys.map((k) => [k.key, k.algorithm, k.active ? `v${k.active.version}` : 'none', iso(k.active?.activatedAt), Object.entries(k.states).map(([s, n]) => `${n} ${s}`).join(', ')]),
        ),
      );
    ctx.print();
    if (tasks.length === 0) ctx.print('next tasks: none scheduled');
    else {
      ctx.print('next tasks:');
      ctx.print(table(['DUE', 'TASK', 'KEY', 'VERSION KEY', 'STATUS'], tasks.map((t) => [t.dueAt.toISOString(), t.kind, t.baseKeyId, t.keyId ?? '-', t.status + (t.lastError ? ` (${t.lastError})` : '')])));
    }
    ctx.print();
    if (pending.length === 0) ctx.print('pending destructions: none');
    else {
      ctx.print('pending destructions:');
      ctx.print(table(['KEY ID', 'DESTROY AFTER'], pending.map((v) => [v.keyId, iso(v.destroyAfter)])));
    }
    ctx.print();
    if (report.orphans.length === 0) ctx.print('orphans: none');
    else {
      ctx.print('orphans (backend keys named like a version, with no registry row and no recorded rotation: not adopted):');
      ctx.print(table(['KEY ID', 'REF'], report.orphans.map((o) => [o.keyId, o.ref])));
    }
    for (const r of report.resumed) ctx.print(`completed an interrupted ${r.kind} rotation of ${r.baseKeyId} to v${r.version} (from step ${r.fromStep})`);
    for (const f of report.failed) ctx.note(`warning: an interrupted rotation of ${f.baseKeyId} to v${f.version} could not be completed: ${f.error}`);
    for (const e of report.inProgressElsewhere) ctx.print(`rotation of ${e.baseKeyId} to v${e.version} in progress on ${e.owner}`);
  });
}
