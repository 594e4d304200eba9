import { z } from 'zod';
import { parseWithSchema } from '@olocus/hsm-core';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export const DAY_MS = UNITS['d']!;

/** Parses `"90d"`, `"12h"`, `"30m"`, `"15s"`, `"500ms"` or a number of milliseconds. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(value);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNITS[m[2]!]!);
}

/** A duration: milliseconds, or a string such as "30d", "12h", "15m", "10s", "250ms". */
export const durationSchema = z
  .union([z.number(), z.string()], { invalid_type_error: 'must be a duration (milliseconds or a string such as "30d", "12h", "15m")' })
  .transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined || ms < 0) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be a duration (milliseconds or a string such as "30d", "12h", "15m")' });
      return z.NEVER;
    }
    return ms;
  });

const minDuration = (min: number, label: string) =>
  durationSchema.refine((v) => v >= min, { message: `must be at least ${label}` });

/** LC-PENDING: the destruction waiting period is at least 7 days. */
export const MIN_DESTRUCTION_DELAY_MS = 7 * DAY_MS;

export const schedulerPolicySchema = z
  .object({
    /** How often `start()` looks for due tasks. */
    pollInterval: minDuration(10, '10ms').default(10_000),
    /** Tasks claimed per poll. */
    batchSize: z.number().int().min(1).max(1000).default(50),
    /** A claimed task not finished within this time may be claimed again (its node died). */
    lease: minDuration(1000, '1s').default(300_000),
    /** Attempts before a task is marked failed for good. */
    maxAttempts: z.number().int().min(1).max(1000).default(10),
    /** First retry delay; doubles per attempt up to `retryMax`. */
    retryBase: minDuration(0, '0ms').default(5_000),
    retryMax: minDuration(0, '0ms').default(3_600_000),
  })
  .strict();

export const rotationPolicySchema = z
  .object({
    /** Default rotation interval for new logical keys; unset = rotate only on demand. Per-key override in createKey. */
    rotationInterval: minDuration(1000, '1s').optional(),
    /** How long a superseded version stays in the verification set before it may be archived. */
    overlapPeriod: durationSchema.default('24h'),
    /** A `rotationWarning` event is emitted this long before a scheduled rotation. */
    advanceWarning: durationSchema.default('7d'),
    /** Versions kept in a verifying state (Active + newest Superseded); older ones are archived. */
    retentionVersions: z
      .number({ invalid_type_error: 'must be a whole number of versions' })
      .int('must be a whole number of versions')
      .min(1, 'must be at least 1 (the Active version)')
      .max(10_000)
      .default(3),
    /** How long an Archived (or Revoked/Compromised) version is kept before destruction is scheduled. */
    archiveRetention: durationSchema.default('365d'),
    /** Waiting period in PendingDestruction before the key is destroyed in the backend (LC-PENDING: >= 7 days). */
    destructionDelay: minDuration(MIN_DESTRUCTION_DELAY_MS, '7d (LC-PENDING)').default('30d'),
    /** Cryptoperiod of a version (protect-stop = activation + cryptoperiod); unset = none. */
    cryptoperiod: minDuration(1000, '1s').optional(),
    /** Whether emergencyRotateKey is allowed at all. */
    allowEmergencyRotation: z.boolean({ invalid_type_error: 'must be true or false' }).default(false),
    /** What an emergency rotation marks the old version as. */
    emergencyState: z.enum(['Compromised', 'Revoked']).default('Compromised'),
    /** Cache lifetime of getActiveKey results: bounds staleness when several nodes share one database. 0 disables. */
    cacheTtl: durationSchema.default(1000),
    /** Usage counts are batched in memory and written this often (and on close). */
    usageFlushInterval: minDuration(10, '10ms').default(5000),
    /** A rotation whose owner has not finished within this time is taken over by reconcile(). */
    rotationLease: minDuration(1, '1ms').default(300_000),
    scheduler: schedulerPolicySchema.default({}),
  })
  .strict();

export type RotationPolicyInput = z.input<typeof rotationPolicySchema>;
export type RotationPolicy = z.output<typeof rotationPolicySchema>;

export function parsePolicy(raw: unknown, where = 'policy'): RotationPolicy {
  return parseWithSchema(rotationPolicySchema, raw ?? {}, where);
}

export const sqliteStorageSchema = z
  .object({
    kind: z.literal('sqlite'),
    /** Database file (":memory:" only for throwaway use: nothing survives a restart). */
    path: z.string({ required_error: 'is required' }).min(1, 'must not be empty'),
    /** SQLITE busy timeout: how long a writer waits for another process's write lock. */
    busyTimeout: z.number().int().min(0).max(600_000).default(5000),
    /** PRAGMA synchronous under WAL: FULL survives power loss, NORMAL only process crashes. */
    synchronous: z.enum(['FULL', 'NORMAL']).default('FULL'),
  })
  .strict();

export const postgresStorageSchema = z
  .object({
    kind: z.literal('postgres'),
    connectionString: z.string({ required_error: 'is required' }).min(1, 'must not be empty'),
    /** Schema for the tables (created when missing); default: the connection's search_path. */
    schema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier')
      .optional(),
    /** Pool size. */
    maxConnections: z.number().int().min(1).max(1000).default(10),
  })
  .strict();

export const storageConfigSchema = z.discriminatedUnion('kind', [sqliteStorageSchema, postgresStorageSchema], {
  errorMap: (issue, ctx) =>
    issue.code === z.ZodIssueCode.invalid_union_discriminator ? { message: 'kind must be "sqlite" or "postgres"' } : { message: ctx.defaultError },
});

export type StorageConfigInput = z.input<typeof storageConfigSchema>;
export type StorageConfig = z.output<typeof storageConfigSchema>;
