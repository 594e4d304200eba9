import { hostname } from 'node:os';
import { z } from 'zod';
import { parseWithSchema, type KeyAlgorithm } from '@olocus/hsm-core';
import { createWitness, type AuditWitness, type WitnessConfig } from './witness.js';

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
  /**
   * The same kind of signer for another key of the same backend: how a log that finds its
   * checkpoint key rotated (by another process) switches to the key now in charge. Without it,
   * opening such a log with the old key's signer is refused.
   */
  withKey?(keyId: string, algorithm: KeyAlgorithm): CheckpointSigner;
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
  /**
   * Where every checkpoint is also sent (issue 18 item 6): `{ kind: 'file', path }` (another
   * volume), `{ kind: 'postgres', connectionString, table? }`, `{ kind: 'http', url, headers? }`,
   * `{ kind: 'syslog', transport: 'udp' | 'tcp', host?, port? }`, or an AuditWitness object.
   * `verify` checks the log against the newest checkpoint the readable ones hold; opening an
   * empty log that a witness has seen is refused.
   */
  witnesses?: Array<WitnessConfig | AuditWitness>;
  /**
   * The log must already exist and hold records (issue 18 item 11): a missing or empty store is
   * an error naming it instead of a new log. Set it when there is evidence a log was kept — the
   * backend holds the checkpoint key.
   */
  expectExisting?: boolean;
  /**
   * The operator accepts a new, empty log although there is evidence one existed (a restore was
   * impossible): neither expectExisting nor a witness refuses it, and `audit.start` records
   * `acceptedNewLog: true`. The witnesses keep the old log's checkpoints, so `verify` reports a
   * wipe until their entries of this log are archived.
   */
  acceptNewLog?: boolean;
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
    witnesses: z.array(z.unknown()).max(16, 'at most 16 witnesses').default([]),
    expectExisting: z.boolean().default(false),
    acceptNewLog: z.boolean().default(false),
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
  witnesses: AuditWitness[];
  expectExisting: boolean;
  acceptNewLog: boolean;
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
    witnesses: o.witnesses.map((w, i) => createWitness(w as WitnessConfig | AuditWitness, `audit.witnesses[${i}]`)),
    expectExisting: o.expectExisting && !o.acceptNewLog,
    acceptNewLog: o.acceptNewLog,
  };
}
