import { HsmError, type HsmErrorCode } from '@olocus/hsm-core';
import type { KeyState } from './states.js';

/**
 * Finer reasons than core's codes carry. Each maps onto a core code (IllegalStateTransition,
 * Conflict, PolicyViolation, ...) and is kept in `details.rotationCode` so callers can tell
 * e.g. a rotation already in flight from a stale expectedVersion.
 */
export type RotationErrorReason =
  | 'IllegalStateTransition'
  | 'RotationInProgress'
  | 'VersionConflict'
  | 'EmergencyRotationDisabled'
  | 'MissingActorOrReason'
  | 'DestructionNotDue'
  | 'StorageUnavailable';

const CORE_CODE: Record<RotationErrorReason, HsmErrorCode> = {
  IllegalStateTransition: 'IllegalStateTransition',
  RotationInProgress: 'Conflict',
  VersionConflict: 'Conflict',
  EmergencyRotationDisabled: 'PolicyViolation',
  MissingActorOrReason: 'InvalidArgument',
  DestructionNotDue: 'PolicyViolation',
  StorageUnavailable: 'DeviceUnavailable',
};

const RETRYABLE: ReadonlySet<RotationErrorReason> = new Set(['RotationInProgress', 'StorageUnavailable']);

export function rotationError(
  reason: RotationErrorReason,
  message: string,
  details: Record<string, string | number | boolean | undefined> = {},
  cause?: unknown,
): HsmError {
  return new HsmError(CORE_CODE[reason], message, {
    retryable: RETRYABLE.has(reason),
    details: { rotationCode: reason, ...details },
    ...(cause === undefined ? {} : { cause }),
  });
}

/** The reason kept in `details.rotationCode`, if any. */
export function rotationErrorReason(error: unknown): RotationErrorReason | undefined {
  if (!(error instanceof HsmError)) return undefined;
  return error.details['rotationCode'] as RotationErrorReason | undefined;
}

export function illegalTransition(keyId: string, from: KeyState | null, to: KeyState, why?: string): HsmError {
  const fromName = from ?? '(new)';
  return rotationError(
    'IllegalStateTransition',
    `illegal state transition for key ${keyId}: ${fromName} -> ${to}${why ? ` (${why})` : ''}`,
    { keyId, from: fromName, to },
  );
}

/** Who made a change and why (LC-RECORD: every state change records time, actor and reason). */
export interface ChangeContext {
  actor: string;
  reason: string;
}

export function assertChangeContext(ctx: unknown, operation: string): asserts ctx is ChangeContext {
  const c = (ctx ?? {}) as Partial<ChangeContext>;
  for (const field of ['actor', 'reason'] as const) {
    const value = c[field];
    if (typeof value !== 'string' || value.trim() === '') {
      throw rotationError('MissingActorOrReason', `${operation}: ${field} is required (LC-RECORD: every state change records time, actor and reason)`, {
        field,
      });
    }
    if (value.length > 1000) {
      throw rotationError('MissingActorOrReason', `${operation}: ${field} is longer than 1000 characters`, { field });
    }
  }
}
