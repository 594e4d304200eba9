import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { BackendRegistry, HsmError, parseWithSchema } from '@olocus/hsm-core';
import { openRotation, type RotationContext, type RotationPolicyInput, type StorageConfigInput } from '@olocus/hsm-rotation';
import { CedarAuthorizer, readPolicyDirectory } from './cedar.js';
import { EnterpriseKeyManager, type AuditSink, type EnterpriseState } from './manager.js';
import type { GroupGenerator } from './pool-backend.js';
import { HsmPool } from './pool.js';
import { PostgresTokenBuckets, type PgPoolLike, type RateLimiter } from './rate-limit-pg.js';
import { PolicyStore, type PolicyStoreStorage } from './policy-store.js';

/** A path from the config, relative to the config file's directory unless absolute. */
const resolveIn = (baseDir: string, path: string): string => (isAbsolute(path) ? path : resolve(baseDir, path));

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The `enterprise` section of the config file the CLI uses. */
export const enterpriseConfigSchema = z
  .object({
    pool: z
      .object({
        members: z
          .array(
            z
              .object({
                name: z.string().regex(NAME, "must be 1-64 letters, digits, '.', '_' or '-'"),
                backend: z.object({ type: z.string().min(1), package: z.string().min(1).optional(), options: z.unknown().optional() }).strict(),
                weight: z.number().positive().max(1000).default(1),
                zone: z.string().min(1).optional(),
                tags: z.record(z.string()).default({}),
              })
              .strict(),
          )
          .min(1, 'must list at least one member'),
        healthIntervalMs: z.number().int().min(50).max(600_000).default(1000),
        failureThreshold: z.number().int().min(1).max(100).default(3),
      })
      .strict(),
    policies: z
      .object({
        /** Directory of global `*.cedar` files. */
        global: z.string().min(1).optional(),
        /** Directory with one sub-directory of `*.cedar` files per application id. */
        applications: z.string().min(1).optional(),
        /** Also load the policies kept in the registry's database (`PolicyStore`, `olocus-hsm policy put`). */
        registry: z.boolean().default(false),
      })
      .strict()
      .default({}),
    /**
     * Where token buckets live: `shared` (default) keeps them in the registry's PostgreSQL when the
     * registry is PostgreSQL, so every node draws from one bucket; `local` keeps them per process.
     */
    rateLimits: z.object({ store: z.enum(['shared', 'local']).default('shared') }).strict().default({}),
    /** JSON file holding applications and open approval requests (default: beside the config). */
    state: z.string().min(1).optional(),
    /**
     * Where `olocus-hsm app create` writes the backup a key policy with `backupRequired` asks for
     * (relative to the config file); without it the command says that the backup is still to make.
     */
    backup: z.object({ directory: z.string().min(1) }).strict().optional(),
  })
  .strict();

export type EnterpriseConfigInput = z.input<typeof enterpriseConfigSchema>;
export type EnterpriseConfig = z.output<typeof enterpriseConfigSchema>;

export interface OpenEnterpriseOptions {
  /** The raw `enterprise` section. */
  config: unknown;
  /** Relative paths in the section are resolved against it (the config file's directory). */
  baseDir: string;
  /** The rotation registry's storage. */
  storage: StorageConfigInput;
  rotationPolicy?: RotationPolicyInput;
  audit: AuditSink;
  registry?: BackendRegistry;
  groupGenerator?: GroupGenerator;
  /** Start the pool's health loop (a one-shot CLI command does not need it). */
  healthChecks?: boolean;
}

export interface EnterpriseContext {
  config: EnterpriseConfig;
  manager: EnterpriseKeyManager;
  pool: HsmPool;
  rotation: RotationContext;
  authorizer: CedarAuthorizer;
  statePath: string;
  /** `backup.directory` resolved against the config's directory, when configured. */
  backupDirectory?: string;
  /** Writes applications and approval requests to the state file (atomically, mode 0600). */
  saveState(): Promise<void>;
  close(): Promise<void>;
}

/** Loads global and per-application policies from the configured directories. */
export function loadPolicies(authorizer: CedarAuthorizer, policies: EnterpriseConfig['policies'], baseDir: string): void {
  const at = (p: string) => resolveIn(baseDir, p);
  if (policies.global) authorizer.loadGlobal(readPolicyDirectory(at(policies.global)));
  if (policies.applications) {
    const root = at(policies.applications);
    if (!existsSync(root)) throw new HsmError('InvalidConfiguration', `enterprise.policies.applications: directory ${root} does not exist`, { details: { field: 'enterprise.policies.applications' } });
    for (const name of readdirSync(root).sort()) {
      if (statSync(join(root, name)).isDirectory()) authorizer.loadApplication(name, readPolicyDirectory(join(root, name)));
    }
  }
}

/** Where the registry's database is, for the policy store (the rotation storage config, as given). */
export function policyStoreStorage(storage: StorageConfigInput): PolicyStoreStorage {
  const s = storage as { kind: string; path?: string; connectionString?: string; schema?: string };
  if (s.kind === 'sqlite' && s.path) return { kind: 'sqlite', path: s.path };
  if (s.kind === 'postgres' && s.connectionString) return { kind: 'postgres', connectionString: s.connectionString, ...(s.schema ? { schema: s.schema } : {}) };
  throw new HsmError('InvalidConfiguration', 'enterprise.policies.registry: the registry storage is neither a SQLite path nor a PostgreSQL connection string', { details: { field: 'enterprise.policies.registry' } });
}

/** Builds the pool from config, opens the registry on it, loads policies and the state file. */
export async function openEnterprise(options: OpenEnterpriseOptions): Promise<EnterpriseContext> {
  const config = parseWithSchema(enterpriseConfigSchema, options.config, 'enterprise');
  const registry = options.registry ?? new BackendRegistry();
  const backends = await Promise.all(config.pool.members.map((m) => registry.create(m.backend)));
  const pool = new HsmPool({
    members: config.pool.members.map((m, i) => ({ name: m.name, backend: backends[i]!, weight: m.weight, tags: m.tags, ...(m.zone ? { zone: m.zone } : {}) })),
    healthIntervalMs: config.pool.healthIntervalMs,
    failureThreshold: config.pool.failureThreshold,
    startHealthChecks: options.healthChecks ?? false,
  });
  const authorizer = new CedarAuthorizer();
  loadPolicies(authorizer, config.policies, options.baseDir);
  if (config.policies.registry) {
    const store = await PolicyStore.open(policyStoreStorage(options.storage));
    try {
      await store.loadInto(authorizer);
    } finally {
      await store.close();
    }
  }
  let manager: EnterpriseKeyManager | undefined;
  const backend = EnterpriseKeyManager.poolBackend(pool, () => manager, options.groupGenerator);
  await backend.initialize();
  let rotation: RotationContext;
  try {
    rotation = await openRotation({ storage: options.storage, backend, ...(options.rotationPolicy ? { policy: options.rotationPolicy } : {}) });
  } catch (error) {
    await pool.close();
    throw error;
  }
  let rateLimiter: RateLimiter | undefined;
  let pgPool: { end(): Promise<void> } | undefined;
  const storage = options.storage as { kind: string; connectionString?: string };
  if (config.rateLimits.store === 'shared' && storage.kind === 'postgres' && storage.connectionString) {
    try {
      const pg = (await import('pg')) as unknown as { default: { Pool: new (o: object) => PgPoolLike & { end(): Promise<void> } } };
      const p = new pg.default.Pool({ connectionString: storage.connectionString, max: 4 });
      pgPool = p;
      rateLimiter = await PostgresTokenBuckets.open(p);
    } catch (error) {
      await pgPool?.end().catch(() => undefined);
      await rotation.close();
      await pool.close();
      throw new HsmError('InitializationFailed', `shared rate limits need the registry's PostgreSQL and the pg package (${(error as Error).message}); install pg or set enterprise.rateLimits.store to "local"`, {
        cause: error,
        details: { field: 'enterprise.rateLimits.store' },
      });
    }
  }
  manager = new EnterpriseKeyManager({ pool, rotation, authorizer, audit: options.audit, ...(rateLimiter ? { rateLimiter } : {}) });
  const at = (p: string) => resolveIn(options.baseDir, p);
  const statePath = config.state ? at(config.state) : join(options.baseDir, 'enterprise-state.json');
  if (existsSync(statePath)) {
    let state: EnterpriseState;
    try {
      state = JSON.parse(await readFile(statePath, 'utf8')) as EnterpriseState;
    } catch (cause) {
      await rotation.close();
      await pool.close();
      throw new HsmError('StorageCorrupted', `the enterprise state file ${statePath} is not valid JSON; restore it from a backup`, { cause, details: { file: statePath } });
    }
    manager.importState(state);
  }
  const m = manager;
  return {
    config,
    manager: m,
    pool,
    rotation,
    authorizer,
    statePath,
    ...(config.backup ? { backupDirectory: at(config.backup.directory) } : {}),
    async saveState() {
      const tmp = `${statePath}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify(m.exportState(), null, 2) + '\n', { mode: 0o600 });
      await rename(tmp, statePath);
    },
    async close() {
      await rotation.close();
      await pool.close();
      await pgPool?.end();
    },
  };
}
