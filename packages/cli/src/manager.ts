import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { BackendRegistry, HsmError, HsmManager, type BackendContext, type HsmBackend, type HsmKeyHandle, type KeyRef, type SignOptions } from '@olocus/hsm-core';
import { CliError, rememberSecret } from './errors.js';
import type { CliContext } from './context.js';
import { inFile, loadConfig, managerConfig, type ConfigFile } from './config.js';
import { ACCEPT_NEW_STORE_ENV, acceptsNewStore, auditLogIdentity, hasCheckpointKey, isMissingOrEmpty, lostStoreError, versionShapedKeys } from './store-evidence.js';
import type { RotationSection } from './rotation-config.js';
import type { AuditSection } from './audit-config.js';
import { openCliAudit, type CliAudit } from './audit.js';
import { actorOf } from './actor.js';
import { canPrompt, promptSecret, readCliSecret } from './secrets.js';
import { ensurePrivateSqliteFile, isCorruptSqlite } from './files.js';
import { HEALTH_CANARY_KEY_ID, isInternalKeyId } from './internal-keys.js';

/**
 * Secrets reach a backend only through this registry: an empty variable is reported as empty,
 * an unset one is asked for on a terminal, and every value is remembered so that error text can
 * be scrubbed of it. Backend packages load with a plain `import()`: the CLI depends on the
 * backends it ships.
 */
class CliRegistry extends BackendRegistry {
  constructor(private readonly ctx: CliContext) {
    // a backend package is looked for beside the CLI first, then in the application's folder
    // (a third-party backend installed there and named by `backend.package` in the config)
    super({
      importer: async (specifier) => {
        try {
          return await import(specifier);
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw error;
          let resolved: string;
          try {
            resolved = createRequire(join(ctx.cwd, 'noop.js')).resolve(specifier);
          } catch {
            throw error;
          }
          return import(pathToFileURL(resolved).href);
        }
      },
      env: ctx.env,
    });
  }

  override context(): BackendContext {
    const base = super.context();
    const ctx = this.ctx;
    return {
      ...base,
      readSecret: async (source, field) => {
        let value: string;
        try {
          value = await readCliSecret(source, field, ctx.env);
        } catch (error) {
          if (!('env' in source) || ctx.env[source.env] !== undefined || !canPrompt(ctx.stdin, ctx.stderr)) throw error;
          value = await promptSecret(ctx.stdin, ctx.stderr, `${field} (${source.env} is not set): `);
          if (value === '') throw error;
        }
        rememberSecret(value);
        return value;
      },
    };
  }
}

/**
 * What commands see as `manager.backend` when the config audits: key operations are audited,
 * but a key lookup is part of the operation that follows it (the sign, the verify, the
 * existence check of `keys create`) and goes to the unaudited backend, so one operation is one
 * record. The health canary's signatures are tagged `purpose: 'health-canary'`.
 */
function operationView(audited: HsmBackend, unaudited: HsmBackend): HsmBackend {
  return new Proxy(audited, {
    get(target, prop, receiver) {
      if (prop === 'getKey') return (key: KeyRef) => unaudited.getKey(key);
      if (prop === 'sign') {
        return (key: KeyRef, data: Uint8Array, options?: SignOptions) => {
          const id = typeof key === 'string' ? key : key.id;
          return target.sign(key, data, id === HEALTH_CANARY_KEY_ID && !options?.purpose ? { ...options, purpose: 'health-canary' } : options);
        };
      }
      const value = Reflect.get(target, prop, receiver) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/**
 * The CLI's manager: when the config audits, every key operation goes through the audit log
 * (results only after their records are durable), and closing the manager closes the log.
 */
export class CliManager extends HsmManager {
  audit: CliAudit | undefined;
  #view: { audited: HsmBackend; view: HsmBackend } | undefined;

  override get backend(): HsmBackend {
    const audited = super.backend;
    const unaudited = this.audit?.backend;
    if (!unaudited || unaudited === audited) return audited;
    if (this.#view?.audited !== audited) this.#view = { audited, view: operationView(audited, unaudited) };
    return this.#view.view;
  }

  /** A lookup, not an operation: not recorded (the operation that uses the handle is). */
  override async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    return this.backend.getKey(key);
  }

  override async close(): Promise<void> {
    // The log first: its final checkpoint is signed by the backend, which must still be open.
    const audit = this.audit;
    this.audit = undefined;
    try {
      await audit?.close();
    } finally {
      await super.close();
    }
  }
}

/** The audit log a command's manager writes to, if the config audits. */
export function auditOf(manager: HsmManager): CliAudit | undefined {
  return manager instanceof CliManager ? manager.audit : undefined;
}

/** True when `id` names a key the CLI made for itself (the configured checkpoint key included): `keys destroy` refuses these. */
export function isInternalKeyOf(manager: HsmManager, id: string): boolean {
  const checkpoint = auditOf(manager)?.section.checkpoint.keyId;
  return isInternalKeyId(id, checkpoint ? [checkpoint] : []);
}

export interface OpenOptions {
  /**
   * `init` only: the software backend may create its key directory. Every other command opens an
   * existing store, and a missing one is an error that says to run `init`.
   */
  create?: boolean;
}

/** A software key store that was never made (or was removed) is not created by accident. */
async function requireExistingStore(config: ConfigFile, path: string): Promise<void> {
  if (config.backend.type !== 'software') return;
  const directory = config.backend.options?.['directory'];
  if (typeof directory !== 'string') return;
  try {
    await stat(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return;
    throw new CliError(
      'StoreNotFound',
      `${path}: the key store directory ${directory} does not exist; only "olocus-hsm init" creates a key store (restore the directory from a backup, or run init to start a new, empty one)`,
    );
  }
}

/** A damaged SQLite store names its file and what to do, instead of an anonymous internal error. */
export function corruptStoreError(error: unknown, file: string, what: 'audit' | 'rotation'): unknown {
  if (!isCorruptSqlite(error)) return error;
  const advice =
    what === 'audit'
      ? 'it is the tamper-evident audit log: restore it from a backup (audit verify then checks it against the checkpoint key), and keep the damaged file for investigation'
      : 'it is the key registry (logical keys, versions, states, history), which cannot be rebuilt from the backend: restore it from a backup, and keep the damaged file for investigation';
  return new HsmError('StorageCorrupted', `${file} is damaged or is not a SQLite database (${(error as Error).message}); ${advice}`, { cause: error, details: { file } });
}

/** Builds and initialises the manager for a loaded config. Errors name the config file. */
export async function openManager(ctx: CliContext, loaded: { path: string; config: ConfigFile; audit?: AuditSection; rotation?: RotationSection }, options: OpenOptions = {}): Promise<CliManager> {
  if (!options.create) await requireExistingStore(loaded.config, loaded.path);
  const registry = new CliRegistry(ctx);
  let audit: CliAudit | undefined;
  let acceptedNewLog: string | undefined;
  if (loaded.audit?.enabled) {
    const storage = loaded.audit.storage;
    if (storage.kind === 'sqlite' && !options.create && (await isMissingOrEmpty(storage.path))) {
      acceptedNewLog = await checkNewAuditLog(ctx, loaded, registry, storage.path, loaded.audit.checkpoint.keyId, loaded.audit.logName);
    }
    if (storage.kind === 'sqlite') await ensurePrivateSqliteFile(storage.path);
    try {
      audit = await openCliAudit(ctx, loaded.audit, loaded.path, actorOf(ctx, ctx.globals.actor));
    } catch (error) {
      throw storage.kind === 'sqlite' ? corruptStoreError(error, storage.path, 'audit') : error;
    }
  }
  let manager: CliManager;
  try {
    // Core's config is strict: it gets `backend` (and `publicKeyCacheSize`), never the CLI's `rotation` or `audit` sections.
    manager = new CliManager(managerConfig(loaded.config), { registry, ...(audit ? { auditor: audit.auditor } : {}) });
    manager.audit = audit;
  } catch (error) {
    await audit?.close();
    throw inFile(error, loaded.path);
  }
  try {
    await manager.initialize();
  } catch (error) {
    // A wrong PIN or passphrase is an invalid access attempt (PCI-10.2): recorded by code and
    // message, which never hold the secret.
    await audit?.recordFailure({ backend: loaded.config.backend.type, operation: 'open' }, error).catch(() => undefined);
    await audit?.close().catch(() => undefined);
    throw inFile(error, loaded.path);
  }
  const rotation = loaded.rotation?.storage;
  if (!options.create && rotation?.kind === 'sqlite' && (await isMissingOrEmpty(rotation.path))) {
    // Every command, not only those that open the registry: without it a version would sign as a plain key.
    try {
      const evidence = await versionShapedKeys(audit?.backend ?? manager.backend);
      if (evidence.length > 0) {
        if (!acceptsNewStore(ctx, 'rotation')) {
          throw lostStoreError('rotation', rotation.path, `the backend holds keys named like versions of logical keys (${evidence.join(', ')}${evidence.length >= 5 ? ', ...' : ''})`, !existsSync(rotation.path));
        }
        // accepted: the new registry is made now (so the override is needed once) and the acceptance audited
        ctx.note(`olocus-hsm: warning: starting a new key registry in ${rotation.path} although the backend holds versions of logical keys (${evidence.join(', ')}) (${ACCEPT_NEW_STORE_ENV}=rotation): they are plain keys from now on; recorded in the audit log`);
        await ensurePrivateSqliteFile(rotation.path);
        const { KeyRegistry } = await import('@olocus/hsm-rotation');
        await (await KeyRegistry.open({ kind: 'sqlite', path: rotation.path })).close();
        await audit?.append({
          type: 'admin.action',
          outcome: 'success',
          reason: `${ACCEPT_NEW_STORE_ENV}=rotation`,
          details: { action: 'accepted a new key registry', file: rotation.path, evidence: `version-shaped keys in the backend: ${evidence.join(', ')}` },
        });
      }
    } catch (error) {
      await manager.close().catch(() => undefined);
      throw error;
    }
  }
  if (acceptedNewLog && audit) {
    await audit.append({
      type: 'admin.action',
      outcome: 'success',
      reason: `${ACCEPT_NEW_STORE_ENV}=audit`,
      details: { action: 'accepted a new audit log', file: acceptedNewLog, evidence: `checkpoint key ${loaded.audit!.checkpoint.keyId} exists in the backend` },
    });
  }
  return manager;
}

/**
 * An audit.db that is missing or empty is a new log only if the backend holds no checkpoint key
 * (the key is made with the log's first checkpoint). Asked through a bare manager, before the
 * log file is created, so a refusal leaves nothing behind. Returns the file when the operator
 * accepted a new log despite the evidence.
 */
async function checkNewAuditLog(ctx: CliContext, loaded: { path: string; config: ConfigFile }, registry: CliRegistry, file: string, keyId: string, logName: string): Promise<string | undefined> {
  let probe: HsmManager;
  try {
    probe = new HsmManager(managerConfig(loaded.config), { registry });
  } catch (error) {
    throw inFile(error, loaded.path);
  }
  let evidence: boolean;
  try {
    await probe.initialize();
    evidence = await hasCheckpointKey(probe.backend, keyId, auditLogIdentity(logName, file));
  } catch (error) {
    throw inFile(error, loaded.path);
  } finally {
    await probe.close().catch(() => undefined);
  }
  if (!evidence) return undefined;
  if (!acceptsNewStore(ctx, 'audit')) throw lostStoreError('audit', file, `the backend holds the audit checkpoint key ${keyId} (made with a log's first checkpoint)`, !existsSync(file));
  ctx.note(`olocus-hsm: warning: starting a new audit log in ${file} although the checkpoint key ${keyId} shows an earlier one existed (${ACCEPT_NEW_STORE_ENV}=audit); recorded in the new log`);
  return file;
}

export { inFile };

/** Loads the config and opens the manager; runs `fn`; always closes. */
export async function withManager<T>(ctx: CliContext, fn: (manager: HsmManager) => Promise<T>): Promise<T> {
  const loaded = await loadConfig(ctx);
  const manager = await openManager(ctx, loaded);
  try {
    return await fn(manager);
  } finally {
    await manager.close();
  }
}
