import { hostname } from 'node:os';
import { z } from 'zod';
import { parseWithSchema, type KeyAlgorithm } from '@olocus/hsm-core';

/** Signs checkpoints: a key the log does not itself audit (the raw backend, not the audited one). */
export interface CheckpointSigner {
  keyId: string;
  algorithm: KeyAlgorithm;
  /** Library-format signature over `data`. */
  sign(data: Uint8Array): Promise<Uint8Array>;
  /** SPKI DER. */
  publicKey(): Promise<Uint8Array>;
  /** Backend type, shown in settings (optional). */
  backend?: string;
}

export type AuditStorageOptions = { kind: 'sqlite'; path: string; busyTimeoutMs?: number; writerThread?: boolean; walMaxBytes?: number } | { kind: 'postgres'; connectionString: string; schema?: string; maxConnections?: number };

export interface AuditLogOptions {
  storage: AuditStorageOptions;
  logName?: string;
  origin?: string;
  failClosed?: boolean;
  retention?: { days?: number; hotDays?: number };
  checkpoint?: { everyRecords?: number; intervalMs?: number; signer?: CheckpointSigner };
  groupCommit?: { maxBatch?: number; maxDelayMs?: number };
  clock?: () => Date;
  onFailure?: (error: unknown) => void;
  alertsConfigured?: boolean;
}

const signerSchema = z.custom<CheckpointSigner>(
  (v) => typeof v === 'object' && v !== null && typeof (v as CheckpointSigner).keyId === 'string' && typeof (v as CheckpointSigner).sign === 'function' && typeof (v as CheckpointSigner).publicKey === 'function' && typeof (v as CheckpointSigner).algorithm === 'string',
  { message: 'must be a CheckpointSigner { keyId, algorithm, sign(data), publicKey() }' },
);

const storageSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('sqlite'),
      path: z.string().min(1, 'must not be empty'),
      busyTimeoutMs: z.number().int().min(0).max(600_000).default(10_000),
      /**
       * Commit in a worker thread, so fsync never holds the event loop. Default false: commits run
       * inline (short: WAL checkpoints are done by a helper thread), which measured faster for
       * signing under load on a 2-CPU machine (see README).
       */
      writerThread: z.boolean().default(false),
      /**
       * Bound on the WAL file (`<path>-wal`). Passive checkpoints cannot keep up with a steady
       * stream of commits, so above this size a helper thread runs a TRUNCATE checkpoint (writers
       * wait for it, asynchronously) and the WAL starts again from zero. Default 64 MiB.
       */
      walMaxBytes: z.number().int().min(1024 * 1024).max(16 * 1024 * 1024 * 1024).default(64 * 1024 * 1024),
    })
    .strict(),
  z
    .object({
      kind: z.literal('postgres'),
      connectionString: z.string().min(1, 'must not be empty'),
      schema: z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier').optional(),
      maxConnections: z.number().int().min(1).max(100).default(4),
    })
    .strict(),
]);

const optionsSchema = z
  .object({
    storage: storageSchema,
    logName: z.string().min(1).max(200).regex(/^[^\n]+$/, 'must be one line').default('olocus-audit'),
    origin: z.string().min(1).max(200).optional(),
    failClosed: z.boolean().default(true),
    retention: z
      .object({ days: z.number().int().min(1, 'must be at least 1').default(365), hotDays: z.number().int().min(0).default(90) })
      .strict()
      .default({})
      .refine((r) => r.hotDays <= r.days, { message: 'must not exceed retention.days', path: ['hotDays'] }),
    checkpoint: z
      .object({ everyRecords: z.number().int().min(1).default(1000), intervalMs: z.number().int().min(0).default(60_000), signer: signerSchema.optional() })
      .strict()
      .default({}),
    groupCommit: z.object({ maxBatch: z.number().int().min(1).max(2000).default(500), maxDelayMs: z.number().min(0).max(1000).default(0) }).strict().default({}),
    // z.custom, not z.function(): zod 3 would wrap the functions in a validating proxy run on every call
    clock: z.custom<() => Date>((v) => typeof v === 'function', { message: 'must be a function returning a Date' }).optional(),
    onFailure: z.custom<(error: unknown) => void>((v) => typeof v === 'function', { message: 'must be a function' }).optional(),
    alertsConfigured: z.boolean().optional(),
  })
  .strict();

export interface ResolvedAuditLogOptions {
  storage: { kind: 'sqlite'; path: string; busyTimeoutMs: number; writerThread: boolean; walMaxBytes: number } | { kind: 'postgres'; connectionString: string; schema?: string; maxConnections: number };
  logName: string;
  origin: string;
  failClosed: boolean;
  retention: { days: number; hotDays: number };
  checkpoint: { everyRecords: number; intervalMs: number; signer?: CheckpointSigner };
  groupCommit: { maxBatch: number; maxDelayMs: number };
  clock: () => Date;
  onFailure?: (error: unknown) => void;
  alertsConfigured: boolean;
}

/** Validates options; an HsmError('InvalidConfiguration') names the bad field (never a connection string's value). */
export function resolveOptions(raw: unknown): ResolvedAuditLogOptions {
  const o = parseWithSchema(optionsSchema, raw, 'audit');
  return {
    storage: o.storage as ResolvedAuditLogOptions['storage'],
    logName: o.logName,
    origin: o.origin ?? `${hostname()}:${process.pid}`,
    failClosed: o.failClosed,
    retention: o.retention,
    checkpoint: { everyRecords: o.checkpoint.everyRecords, intervalMs: o.checkpoint.intervalMs, ...(o.checkpoint.signer ? { signer: o.checkpoint.signer } : {}) },
    groupCommit: o.groupCommit,
    clock: o.clock ?? (() => new Date()),
    ...(o.onFailure ? { onFailure: o.onFailure } : {}),
    alertsConfigured: o.alertsConfigured ?? o.onFailure !== undefined,
  };
}
