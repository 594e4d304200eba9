import { randomUUID } from 'node:crypto';
import type { Trx } from './registry.js';

export const TASK_KINDS = ['rotate', 'warn', 'deactivate', 'cleanup', 'destroy'] as const;
export type TaskKind = (typeof TASK_KINDS)[number];
export const TASK_STATUSES = ['pending', 'running', 'done', 'failed', 'cancelled'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

export interface ScheduledTask {
  id: string;
  kind: TaskKind;
  baseKeyId: string;
  keyId?: string;
  dedupeKey: string;
  dueAt: Date;
  status: TaskStatus;
  attempts: number;
  lastError?: string;
  claimedBy?: string;
  leaseUntil?: Date;
  createdAt: Date;
  updatedAt: Date;
  completedAt?: Date;
}

export interface NewTask {
  kind: TaskKind;
  baseKeyId: string;
  keyId?: string;
  dueAt: number;
  /** Scheduling the same dedupe key twice is a no-op. */
  dedupeKey: string;
}

/** Inserts a task unless one with the same dedupe key exists (idempotent scheduling). */
export async function insertTask(trx: Trx, task: NewTask, now: number): Promise<void> {
  await trx
    .insertInto('tasks')
    .values({
      id: randomUUID(),
      kind: task.kind,
      base_key_id: task.baseKeyId,
      key_id: task.keyId ?? null,
      dedupe_key: task.dedupeKey,
      due_at: task.dueAt,
      status: 'pending',
      attempts: 0,
      last_error: null,
      claimed_by: null,
      lease_until: null,
      created_at: now,
      updated_at: now,
      completed_at: null,
    })
    .onConflict((oc) => oc.column('dedupe_key').doNothing())
    .execute();
}

/** Cancels pending tasks of the given kinds for one version. */
export async function cancelTasks(trx: Trx, baseKeyId: string, kinds: TaskKind[], keyId: string, now: number): Promise<void> {
  await trx
    .updateTable('tasks')
    .set({ status: 'cancelled', updated_at: now, completed_at: now })
    .where('base_key_id', '=', baseKeyId)
    .where('key_id', '=', keyId)
    .where('kind', 'in', kinds)
    .where('status', '=', 'pending')
    .execute();
}
