import { existsSync, statSync } from 'node:fs';
import { ACCEPT_NEW_STORE_ENV, acceptsNewStore, isMissingOrEmpty, lostStoreError, versionShapedKeys } from './store-evidence.js';
import { isHsmError, type HsmManager } from '@olocus/hsm-core';
import { openRotation, parseVersionKeyId, type KeyVersion, type RotationContext, type RotationEvent, type StateChange, type StorageConfigInput } from '@olocus/hsm-rotation';
import { CliError, rememberConnectionString } from './errors.js';
import { inFile, loadConfig, type LoadedConfig } from './config.js';
import { auditOf, corruptStoreError, openManager } from './manager.js';
import { readCliSecret } from './secrets.js';
import { ensurePrivateSqliteFile } from './files.js';
import type { CliContext } from './context.js';

export { actorOf } from './actor.js';

/**
 * The key registry and rotation manager of a loaded config, opened over the CLI's own
 * HsmManager (so the backend is built once, through the CLI's registry that remembers secrets,
 * and core's strict config only ever sees `backend` / `publicKeyCacheSize`). The manager gets
 * the registry as its resolver: `signWithLogicalKey` / `verifyWithLogicalKey` work on it.
 */

async function storageInput(ctx: CliContext, loaded: LoadedConfig): Promise<StorageConfigInput> {
  const storage = loaded.rotation.storage;
  if (storage.kind === 'sqlite') return storage;
  let connectionString: string;
  try {
    connectionString = await readCliSecret(storage.connectionString, 'rotation.storage.connectionString', ctx.env);
  } catch (error) {
    throw inFile(error, loaded.path);
  }
  rememberConnectionString(connectionString);
  return { ...storage, connectionString };
}

/** Opens the registry for an opened manager. `reconcile` repairs interrupted rotations and lists orphans (commands that change or report state). */
export async function openRotationFor(ctx: CliContext, loaded: LoadedConfig, manager: HsmManager, options: { reconcile: boolean }): Promise<RotationContext> {
  const storage = await storageInput(ctx, loaded);
  let acceptedNew: string | undefined;
  if (storage.kind === 'sqlite' && (await isMissingOrEmpty(storage.path))) acceptedNew = await checkNewRegistry(ctx, manager, storage.path);
  if (storage.kind === 'sqlite') await ensurePrivateSqliteFile(storage.path);
  let rot: RotationContext;
  const audit = auditOf(manager);
  try {
    rot = await openRotation({
      storage,
      backend: manager.backend,
      ...(loaded.rotation.policy ? { policy: loaded.rotation.policy } : {}),
      reconcile: options.reconcile,
      // Given to openRotation, not attached afterwards: what reconcile() completes while opening
      // is audited too. State changes are recorded inside their transaction (a crash cannot
      // separate a change from its record); recoveries and task failures as they happen.
      ...(audit ? { beforeCommit: (changes: readonly StateChange[]) => audit.recordChanges(changes), onEvent: (event: RotationEvent) => audit.recordRotationEvent(event) } : {}),
    });
  } catch (error) {
    throw storage.kind === 'sqlite' ? corruptStoreError(error, storage.path, 'rotation') : inFile(error, loaded.path);
  }
  manager.useResolver(rot.registry);
  if (acceptedNew && audit) {
    await audit.append({ type: 'admin.action', outcome: 'success', reason: `${ACCEPT_NEW_STORE_ENV}=rotation`, details: { action: 'accepted a new key registry', file: acceptedNew } });
  }
  return rot;
}

/**
 * A rotation.db that is missing or empty is new only if the backend holds no key named like a
 * version (`<id>.v<N>`): those were made by a registry, and without it they would be plain keys
 * that sign again whatever their state was. Returns the file when the operator accepted a new
 * registry despite the evidence.
 */
async function checkNewRegistry(ctx: CliContext, manager: HsmManager, file: string): Promise<string | undefined> {
  const evidence = await versionShapedKeys(auditOf(manager)?.backend ?? manager.backend);
  if (evidence.length === 0) return undefined;
  if (!acceptsNewStore(ctx, 'rotation')) {
    throw lostStoreError('rotation', file, `the backend holds keys named like versions of logical keys (${evidence.join(', ')}${evidence.length >= 5 ? ', ...' : ''})`, !existsSync(file));
  }
  ctx.note(`olocus-hsm: warning: starting a new key registry in ${file} although the backend holds versions of logical keys (${evidence.join(', ')}) (${ACCEPT_NEW_STORE_ENV}=rotation): they are plain keys from now on; recorded in the audit log`);
  return file;
}

export interface RotationScope {
  loaded: LoadedConfig;
  manager: HsmManager;
  rot: RotationContext;
}

/** Loads the config, opens the manager and the registry; runs `fn`; always closes both. */
export async function withRotation<T>(ctx: CliContext, fn: (scope: RotationScope) => Promise<T>, options: { reconcile?: boolean } = {}, preloaded?: LoadedConfig): Promise<T> {
  const loaded = preloaded ?? (await loadConfig(ctx));
  const manager = await openManager(ctx, loaded);
  try {
    const rot = await openRotationFor(ctx, loaded, manager, { reconcile: options.reconcile ?? true });
    try {
      return await fn({ loaded, manager, rot });
    } finally {
      await rot.close();
    }
  } finally {
    await manager.close();
  }
}

/**
 * For commands that take a key that may be a logical key or a backend key (sign, verify, show,
 * export-public, destroy, list): the registry is opened only when it can hold keys — a SQLite
 * registry file that does not exist yet holds none, and is not created by these commands.
 */
export async function withManagerAndRegistry<T>(ctx: CliContext, fn: (manager: HsmManager, rot: RotationContext | undefined) => Promise<T>): Promise<T> {
  const loaded = await loadConfig(ctx);
  const manager = await openManager(ctx, loaded);
  try {
    const storage = loaded.rotation.storage;
    const present = storage.kind === 'postgres' || (storage.path !== ':memory:' && existsSync(storage.path) && statSync(storage.path).size > 0);
    // (openManager refused a missing registry whose keys are in the backend)
    if (!present) return await fn(manager, undefined);
    const rot = await openRotationFor(ctx, loaded, manager, { reconcile: false });
    try {
      return await fn(manager, rot);
    } finally {
      await rot.close();
    }
  } finally {
    await manager.close();
  }
}

/** What a key name given on the command line is. */
export type KeyTarget =
  | { kind: 'logical'; baseKeyId: string }
  /** A backend key id `<base>.v<N>` that is a registered version of a logical key. */
  | { kind: 'version'; version: KeyVersion }
  /** Anything else: a backend key id or reference (pkcs11: URI, ARN...), passed to the backend unchanged. */
  | { kind: 'backend' };

export async function classifyKey(rot: RotationContext | undefined, id: string): Promise<KeyTarget> {
  if (!rot) return { kind: 'backend' };
  if (await rot.registry.hasLogicalKey(id)) return { kind: 'logical', baseKeyId: id };
  if (parseVersionKeyId(id)) {
    try {
      return { kind: 'version', version: await rot.registry.getKeyVersion(id) };
    } catch (error) {
      if (!isHsmError(error, 'KeyNotFound')) throw error;
    }
  }
  return { kind: 'backend' };
}

/**
 * A logical key named by a rotation command. Unknown keys are KeyNotFound naming the key; a
 * backend key that exists but is not registered says so.
 */
export async function requireLogicalKey(scope: RotationScope, id: string, flag = '--id'): Promise<void> {
  if (await scope.rot.registry.hasLogicalKey(id)) return;
  const version = parseVersionKeyId(id);
  if (version && (await scope.rot.registry.hasLogicalKey(version.baseKeyId))) {
    throw new CliError('InvalidArgument', `${flag}: "${id}" is version ${version.version} of logical key "${version.baseKeyId}"; name the logical key (${flag} ${version.baseKeyId})`);
  }
  let backendKey = false;
  try {
    await scope.manager.getKey(id);
    backendKey = true;
  } catch {
    // not a backend key either
  }
  if (backendKey) {
    throw new CliError('KeyNotFound', `"${id}" is a backend key, not a logical key: only keys created by "keys create" (without --no-rotation) have versions and can be rotated`);
  }
  throw new CliError('KeyNotFound', `unknown logical key "${id}" (create it with: olocus-hsm keys create --id ${id} --algorithm ALG)`);
}

/** A KeyVersion as printed by --json. */
export function versionJson(v: KeyVersion): Record<string, unknown> {
  return {
    keyId: v.keyId,
    version: v.version,
    state: v.state,
    algorithm: v.algorithm,
    ref: v.keyRef,
    createdAt: v.createdAt,
    activatedAt: v.activatedAt,
    deactivatedAt: v.deactivatedAt,
    expiresAt: v.expiresAt,
    stateChangedAt: v.stateChangedAt,
    overlapUntil: v.overlapUntil,
    destroyAfter: v.destroyAfter,
    revokedAt: v.revokedAt,
    usageCount: v.usageCount,
    lastUsedAt: v.lastUsedAt,
  };
}

/** ISO time or '-'. */
export function iso(d: Date | undefined): string {
  return d ? d.toISOString() : '-';
}
