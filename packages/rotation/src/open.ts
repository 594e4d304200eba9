import { type BackendRegistry, HsmManager, parseWithSchema, type BackendConfig, type HsmBackend } from '@olocus/hsm-core';
import { z } from 'zod';
import { parsePolicy, storageConfigSchema, type RotationPolicyInput, type StorageConfigInput } from './config.js';
import { RotationEvents, type RotationEvent } from './events.js';
import type { StateChange } from './types.js';
import { defaultNodeId, RotationManager, type ReconcileReport, type RotationHooks } from './manager.js';
import { KeyRegistry } from './registry.js';
import { RotationScheduler } from './scheduler.js';
import { openStore } from './storage/database.js';

export interface OpenRotationOptions {
  /** `{ kind: 'sqlite', path }` (embedded default) or `{ kind: 'postgres', connectionString, schema? }` (several nodes). */
  storage: StorageConfigInput;
  /**
   * The backend keys live in: a backend config (`{ type, options }`, built through core's
   * BackendRegistry into an HsmManager whose resolver is this registry — returned as `hsm`), or
   * an already initialized backend instance (then `hsm` is undefined).
   */
  backend: HsmBackend | BackendConfig;
  /** Used when `backend` is a config. */
  backendRegistry?: BackendRegistry;
  policy?: RotationPolicyInput;
  /** Injectable clock (tests advance it instead of sleeping). */
  now?: () => Date;
  /** Monotonic clock for the lookup cache TTL. */
  monotonicNow?: () => number;
  nodeId?: string;
  /** Run reconcile() on open (default true; 'force' takes over unfinished rotations regardless of lease). */
  reconcile?: boolean | 'force';
  /** Start the scheduler's polling loop (default false; `rotation run` calls scheduler.runDueTasks() once). */
  startScheduler?: boolean;
  /** Receives every RotationEvent (also available through `events`). */
  onEvent?: (event: RotationEvent) => void;
  hooks?: RotationHooks;
  /**
   * Sees every state change inside its transaction, before it commits (see
   * `KeyRegistryOptions.beforeCommit`): set it here, not later, so that what `reconcile()`
   * completes on open is recorded too.
   */
  beforeCommit?: (changes: readonly StateChange[]) => Promise<void>;
}

export interface RotationContext {
  registry: KeyRegistry;
  manager: RotationManager;
  scheduler: RotationScheduler;
  events: RotationEvents;
  backend: HsmBackend;
  /** Present when `backend` was a config: signs and verifies by logical key through `registry`. */
  hsm?: HsmManager;
  /** What reconcile() found on open (undefined when disabled). */
  reconcileReport?: ReconcileReport;
  /** Stops the scheduler, flushes usage counts, closes the storage and (if opened here) the HSM manager. */
  close(): Promise<void>;
}

const optionsSchema = z
  .object({
    storage: storageConfigSchema,
    backend: z.unknown().refine((v) => typeof v === 'object' && v !== null, { message: 'is required (a backend instance or { type, options })' }),
    backendRegistry: z.unknown().optional(),
    policy: z.unknown().optional(),
    now: z.function().optional(),
    monotonicNow: z.function().optional(),
    nodeId: z.string().min(1).max(200).optional(),
    reconcile: z.union([z.boolean(), z.literal('force')]).default(true),
    startScheduler: z.boolean().default(false),
    onEvent: z.function().optional(),
    hooks: z.unknown().optional(),
    beforeCommit: z.function().optional(),
  })
  .strict();

function isBackendInstance(value: unknown): value is HsmBackend {
  return typeof value === 'object' && value !== null && typeof (value as HsmBackend).generateKeyPair === 'function';
}

/** Opens the registry (migrating it), the rotation manager and the scheduler from one config object (what the CLI needs). */
export async function openRotation(options: OpenRotationOptions): Promise<RotationContext> {
  const parsed = parseWithSchema(optionsSchema, options, 'rotation');
  const policy = parsePolicy(options.policy ?? {}, 'rotation.policy');
  const store = await openStore(parsed.storage);
  const cleanup: (() => Promise<void>)[] = [() => store.close()];
  try {
    await store.migrate();
    const registry = new KeyRegistry(store, {
      ...(options.now ? { now: options.now } : {}),
      ...(options.monotonicNow ? { monotonicNow: options.monotonicNow } : {}),
      cacheTtlMs: policy.cacheTtl,
      usageFlushIntervalMs: policy.usageFlushInterval,
      ownsStore: true,
      ...(options.beforeCommit ? { beforeCommit: options.beforeCommit } : {}),
    });
    cleanup.unshift(() => registry.close());
    let hsm: HsmManager | undefined;
    let backend: HsmBackend;
    if (isBackendInstance(options.backend)) {
      backend = options.backend;
    } else {
      hsm = new HsmManager({ backend: options.backend }, { resolver: registry, ...(options.backendRegistry ? { registry: options.backendRegistry } : {}) });
      await hsm.initialize();
      const opened = hsm;
      cleanup.push(() => opened.close());
      backend = hsm.backend;
    }
    const events = new RotationEvents();
    if (options.onEvent) events.on('event', options.onEvent);
    const manager = new RotationManager({
      registry,
      backend,
      policy,
      nodeId: options.nodeId ?? defaultNodeId(),
      events,
      ...(options.hooks ? { hooks: options.hooks } : {}),
    });
    const scheduler = new RotationScheduler({ manager });
    let reconcileReport: ReconcileReport | undefined;
    if (parsed.reconcile !== false) reconcileReport = await manager.reconcile({ force: parsed.reconcile === 'force' });
    if (parsed.startScheduler) scheduler.start();
    let closed = false;
    return {
      registry,
      manager,
      scheduler,
      events,
      backend,
      ...(hsm ? { hsm } : {}),
      ...(reconcileReport ? { reconcileReport } : {}),
      async close() {
        if (closed) return;
        closed = true;
        await scheduler.stop();
        manager.close();
        for (const fn of cleanup) await fn().catch(() => undefined);
      },
    };
  } catch (error) {
    for (const fn of cleanup) await fn().catch(() => undefined);
    throw error;
  }
}
