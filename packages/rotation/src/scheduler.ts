import type { Selectable } from 'kysely';
import { HsmError } from '@olocus/hsm-core';
import { schedulerPolicySchema, type RotationPolicy } from './config.js';
import type { RotationManager } from './manager.js';
import { parseVersionKeyId } from './registry.js';
import type { TaskTable } from './storage/schema.js';
import type { ScheduledTask, TaskKind, TaskStatus } from './tasks.js';

export type SchedulerPolicy = RotationPolicy['scheduler'];

export interface RotationSchedulerOptions {
  manager: RotationManager;
  /** Default: the manager's `policy.scheduler`. */
  policy?: Partial<SchedulerPolicy>;
  /** Default: the manager's node id. */
  nodeId?: string;
}

export interface TaskOutcome {
  id: string;
  kind: TaskKind;
  baseKeyId: string;
  keyId?: string;
  status: 'done' | 'retry' | 'failed';
  error?: string;
}

export interface TaskRunReport {
  /** Tasks this node claimed and ran, in order. */
  ran: TaskOutcome[];
}

export interface ListTasksOptions {
  status?: TaskStatus | TaskStatus[];
  baseKeyId?: string;
  kind?: TaskKind;
  limit?: number;
}

type TaskRow = Selectable<TaskTable>;

function toTask(r: TaskRow): ScheduledTask {
  const t: ScheduledTask = {
    id: r.id,
    kind: r.kind as TaskKind,
    baseKeyId: r.base_key_id,
    dedupeKey: r.dedupe_key,
    dueAt: new Date(Number(r.due_at)),
    status: r.status as TaskStatus,
    attempts: Number(r.attempts),
    createdAt: new Date(Number(r.created_at)),
    updatedAt: new Date(Number(r.updated_at)),
  };
  if (r.key_id !== null) t.keyId = r.key_id;
  if (r.last_error !== null) t.lastError = r.last_error;
  if (r.claimed_by !== null) t.claimedBy = r.claimed_by;
  if (r.lease_until !== null) t.leaseUntil = new Date(Number(r.lease_until));
  if (r.completed_at !== null) t.completedAt = new Date(Number(r.completed_at));
  return t;
}

/**
 * The durable scheduler. Tasks (rotate, warn, deactivate, cleanup, destroy) are rows in the
 * `tasks` table written in the same transaction as the change that calls for them, so they
 * survive restarts; whatever fell due while no process ran is run by the next runDueTasks().
 *
 * Claiming is atomic: PostgreSQL `SELECT ... FOR UPDATE SKIP LOCKED` inside a transaction (two
 * nodes never claim the same row), SQLite `BEGIN IMMEDIATE` (one writer at a time). A claimed
 * task carries a lease (claimed_by, lease_until); if its node dies, the task is claimed again
 * after the lease — handlers are idempotent, so a re-run changes nothing twice. A failed task is
 * retried with exponential backoff and its error kept in `last_error`.
 */
export class RotationScheduler {
  readonly manager: RotationManager;
  readonly policy: SchedulerPolicy;
  readonly nodeId: string;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private current: Promise<TaskRunReport> | undefined;
  private reconciling: Promise<void> | undefined;

  constructor(options: RotationSchedulerOptions) {
    this.manager = options.manager;
    this.policy = options.policy ? schedulerPolicySchema.parse({ ...options.manager.policy.scheduler, ...options.policy }) : options.manager.policy.scheduler;
    this.nodeId = options.nodeId ?? options.manager.nodeId;
  }

  private get store() {
    return this.manager.registry.store;
  }

  private nowMs(): number {
    return this.manager.registry.now().getTime();
  }

  /** Runs every task due now (including ones due while no process was running), once. */
  async runDueTasks(): Promise<TaskRunReport> {
    while (this.current) await this.current.catch(() => undefined);
    this.current = this.runOnce();
    try {
      return await this.current;
    } finally {
      this.current = undefined;
    }
  }

  private async runOnce(): Promise<TaskRunReport> {
    const report: TaskRunReport = { ran: [] };
    const seen = new Set<string>();
    for (let round = 0; round < 1000; round++) {
      const claimed = (await this.claim()).filter((t) => !seen.has(t.id));
      if (claimed.length === 0) break;
      for (const task of claimed) {
        seen.add(task.id);
        report.ran.push(await this.execute(task));
      }
    }
    return report;
  }

  private async claim(): Promise<TaskRow[]> {
    const now = this.nowMs();
    return this.store.tx(async (trx) => {
      let q = trx
        .selectFrom('tasks')
        .selectAll()
        .where((eb) =>
          eb.or([eb.and([eb('status', '=', 'pending'), eb('due_at', '<=', now)]), eb.and([eb('status', '=', 'running'), eb('lease_until', '<', now)])]),
        )
        .orderBy('due_at')
        .orderBy('id')
        .limit(this.policy.batchSize);
      if (this.store.dialect === 'postgres') q = q.forUpdate().skipLocked();
      const rows = await q.execute();
      if (rows.length === 0) return rows;
      await trx
        .updateTable('tasks')
        .set((eb) => ({
          status: 'running',
          claimed_by: this.nodeId,
          lease_until: now + this.policy.lease,
          attempts: eb('attempts', '+', 1),
          updated_at: now,
        }))
        .where(
          'id',
          'in',
          rows.map((r) => r.id),
        )
        .execute();
      return rows.map((r) => ({ ...r, attempts: Number(r.attempts) + 1 }));
    });
  }

  private async execute(task: TaskRow): Promise<TaskOutcome> {
    const base: Omit<TaskOutcome, 'status'> = { id: task.id, kind: task.kind as TaskKind, baseKeyId: task.base_key_id, ...(task.key_id ? { keyId: task.key_id } : {}) };
    try {
      await this.handle(task);
      await this.store.db
        .updateTable('tasks')
        .set({ status: 'done', completed_at: this.nowMs(), updated_at: this.nowMs(), lease_until: null, last_error: null })
        .where('id', '=', task.id)
        .where('claimed_by', '=', this.nodeId)
        .execute();
      return { ...base, status: 'done' };
    } catch (error) {
      const message = error instanceof HsmError ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : String(error);
      const attempts = Number(task.attempts);
      const final = attempts >= this.policy.maxAttempts;
      const now = this.nowMs();
      const delay = Math.min(this.policy.retryBase * 2 ** Math.max(0, attempts - 1), this.policy.retryMax);
      await this.store.db
        .updateTable('tasks')
        .set({
          status: final ? 'failed' : 'pending',
          due_at: final ? Number(task.due_at) : now + delay,
          last_error: message.slice(0, 2000),
          claimed_by: null,
          lease_until: null,
          updated_at: now,
          ...(final ? { completed_at: now } : {}),
        })
        .where('id', '=', task.id)
        .where('claimed_by', '=', this.nodeId)
        .execute()
        .catch(() => undefined);
      this.manager.events.emit({ type: 'taskFailed', taskId: task.id, kind: task.kind, baseKeyId: task.base_key_id, attempts, final, error: message, at: new Date(now) });
      return { ...base, status: final ? 'failed' : 'retry', error: message };
    }
  }

  private async handle(task: TaskRow): Promise<void> {
    const keyId = task.key_id ?? '';
    switch (task.kind as TaskKind) {
      case 'rotate': {
        const parsed = parseVersionKeyId(keyId);
        if (!parsed) throw new HsmError('Internal', `rotate task ${task.id} has no version key id`);
        await this.manager.rotateScheduled(task.base_key_id, parsed.version);
        return;
      }
      case 'warn': {
        const rotate = await this.store.db.selectFrom('tasks').select('due_at').where('dedupe_key', '=', `rotate:${keyId}`).executeTakeFirst();
        await this.manager.warnRotation(keyId, rotate ? new Date(Number(rotate.due_at)) : undefined);
        return;
      }
      case 'deactivate':
        await this.manager.overlapEnded(keyId);
        return;
      case 'cleanup':
        await this.manager.applyRetention(task.base_key_id);
        return;
      case 'destroy':
        await this.manager.destroyIfDue(keyId);
        return;
      default:
        throw new HsmError('Internal', `unknown task kind ${JSON.stringify(task.kind)}`);
    }
  }

  /**
   * Polls every `pollInterval` (first run at once). Idempotent. Each tick first finishes the
   * rotations of nodes that died (expired lease, or a dead process on this host), so a surviving
   * daemon never leaves a key half-rotated, then runs the due tasks.
   */
  start(): void {
    if (this.running) return;
    this.running = true;
    const tick = async () => {
      if (!this.running) return;
      this.reconciling = this.manager.reconcile({ scanBackend: false }).then(
        () => undefined,
        () => undefined, // the next tick tries again
      );
      await this.reconciling;
      this.reconciling = undefined;
      if (!this.running) return;
      try {
        await this.runDueTasks();
      } catch {
        /* storage hiccup: the next poll tries again */
      }
      if (this.running) this.timer = setTimeout(() => void tick(), this.policy.pollInterval);
    };
    void tick();
  }

  /** Stops polling and waits for the run in progress. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.reconciling;
    while (this.current) await this.current.catch(() => undefined);
  }

  get isRunning(): boolean {
    return this.running;
  }

  async listTasks(options: ListTasksOptions = {}): Promise<ScheduledTask[]> {
    let q = this.store.db.selectFrom('tasks').selectAll();
    if (options.status !== undefined) q = q.where('status', 'in', Array.isArray(options.status) ? options.status : [options.status]);
    if (options.baseKeyId !== undefined) q = q.where('base_key_id', '=', options.baseKeyId);
    if (options.kind !== undefined) q = q.where('kind', '=', options.kind);
    const rows = await q.orderBy('due_at').orderBy('id').limit(options.limit ?? 1000).execute();
    return rows.map(toTask);
  }
}
