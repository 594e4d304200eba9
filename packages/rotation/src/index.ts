export { KEY_STATES, TRANSITIONS, INITIAL_STATES, SIGNING_STATES, VERIFYING_STATES, canTransition, isKeyState, type KeyState } from './states.js';
export { rotationError, rotationErrorReason, assertChangeContext, type ChangeContext, type RotationErrorReason } from './errors.js';
export {
  parseDuration,
  parsePolicy,
  rotationPolicySchema,
  schedulerPolicySchema,
  storageConfigSchema,
  MIN_DESTRUCTION_DELAY_MS,
  type RotationPolicy,
  type RotationPolicyInput,
  type StorageConfig,
  type StorageConfigInput,
} from './config.js';
export * from './types.js';
export {
  KeyRegistry,
  versionKeyId,
  parseVersionKeyId,
  assertValidBaseKeyId,
  type KeyRegistryOptions,
  type StateChangeListener,
  type TransitionExtras,
} from './registry.js';
export {
  RotationManager,
  ROTATION_STEPS,
  defaultNodeId,
  ownerIsDead,
  type RotationStep,
  type RotationKind,
  type RotationHooks,
  type RotationManagerOptions,
  type CreateKeyOptions,
  type RotateOptions,
  type RotationResult,
  type ReconcileOptions,
  type ReconcileReport,
} from './manager.js';
export { RotationScheduler, type RotationSchedulerOptions, type SchedulerPolicy, type TaskOutcome, type TaskRunReport, type ListTasksOptions } from './scheduler.js';
export { TASK_KINDS, TASK_STATUSES, type ScheduledTask, type TaskKind, type TaskStatus } from './tasks.js';
export { RotationEvents, type RotationEvent, type RotationEventType, type RotationEventOf } from './events.js';
export { openStore, isUniqueViolation, type Store } from './storage/database.js';
export type { Database } from './storage/schema.js';
export { openRotation, type OpenRotationOptions, type RotationContext } from './open.js';
