import { createHash } from 'node:crypto';
import { exportPublicKey, isHsmError, isKeyAlgorithm, KEY_ALGORITHMS, type HsmKeyHandle, type HsmManager, type KeyAlgorithm } from '@olocus/hsm-core';
import { parseVersionKeyId, type KeyVersion, type RotationContext } from '@olocus/hsm-rotation';
import { CliError } from '../errors.js';
import { checkOutputPath, echo, terminalSafe, toBase64, writeOutput } from '../io.js';
import { isInternalKeyId } from '../internal-keys.js';
import { auditOf } from '../manager.js';
import { actorOf, classifyKey, withManagerAndRegistry, withRotation } from '../rotation.js';
import type { CliContext } from '../context.js';

export function parseAlgorithm(value: string, flag = '--algorithm'): KeyAlgorithm {
  if (isKeyAlgorithm(value)) return value;
  throw new CliError('InvalidArgument', `${flag}: unknown algorithm "${echo(value)}"; use one of: ${KEY_ALGORITHMS.join(', ')}`);
}

/** Backend key ids: what every backend accepts as a file name, label or cloud key name. */
const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
export const MAX_KEY_ID = 128;
/** A logical key's versions are `<id>.v<N>` inside the 128 characters, so its own id is shorter. */
export const MAX_LOGICAL_KEY_ID = 117;

/**
 * `keys create --id`: the rules in the user's terms (the flag, the limit that applies to what
 * they are creating, what to do), with a long value shortened in the message.
 */
export function checkNewKeyId(id: string, logical: boolean, flag = '--id'): void {
  if (id === '') throw new CliError('InvalidArgument', `${flag}: an empty id; use 1-${logical ? MAX_LOGICAL_KEY_ID : MAX_KEY_ID} letters, digits, '.', '_', '-' or ':'`);
  if (!KEY_ID.test(id)) {
    throw new CliError('InvalidArgument', `${flag} "${echo(id)}" is not a valid key id: use letters, digits, '.', '_', '-' or ':', starting with a letter or digit`);
  }
  const max = logical ? MAX_LOGICAL_KEY_ID : MAX_KEY_ID;
  if (id.length > max) {
    throw new CliError(
      'InvalidArgument',
      logical
        ? `${flag} "${echo(id)}" is ${id.length} characters; a logical key id is at most ${MAX_LOGICAL_KEY_ID} (its versions are named <id>.v<N> within ${MAX_KEY_ID}): choose a shorter id (or --no-rotation for a plain key of up to ${MAX_KEY_ID})`
        : `${flag} "${echo(id)}" is ${id.length} characters; a key id is at most ${MAX_KEY_ID}: choose a shorter id`,
    );
  }
}

/** A handle as printed by --json. */
export function handleJson(handle: HsmKeyHandle): Record<string, unknown> {
  return {
    id: handle.id,
    ref: handle.ref,
    algorithm: handle.algorithm,
    usages: handle.usages,
    createdAt: handle.createdAt,
    expiresAt: handle.expiresAt,
    backend: handle.backend,
    metadata: handle.metadata,
  };
}

function spkiFingerprint(spki: Uint8Array): string {
  return 'SHA256:' + createHash('sha256').update(spki).digest('base64').replace(/=+$/, '');
}

export interface CreateOptions {
  id: string;
  algorithm: string;
  /** false with --no-rotation: a plain backend key, not registered in the key registry. */
  rotation?: boolean;
  actor?: string;
  reason?: string;
  rotationInterval?: string;
  /** --backup: every version is generated backup-eligible (KeySpec.backup). */
  backup?: boolean;
}

/** A logical key's version as printed by `keys create/show/list --json`: `id` is the name to use (the logical key). */
function logicalJson(handle: HsmKeyHandle, v: KeyVersion): Record<string, unknown> {
  return { ...handleJson(handle), id: v.baseKeyId, keyId: v.keyId, version: v.version, state: v.state };
}

/** The version `keys show` / `export-public` mean by a logical key: the Active one, else the newest. */
export async function currentVersion(rot: RotationContext, baseKeyId: string): Promise<KeyVersion> {
  const versions = await rot.registry.getKeyVersions(baseKeyId);
  const active = versions.find((v) => v.state === 'Active');
  const latest = versions[versions.length - 1];
  if (active) return active;
  if (!latest) throw new CliError('KeyNotFound', `logical key "${baseKeyId}" has no version yet (an interrupted creation: run olocus-hsm rotation status)`);
  return latest;
}

async function backendKeyExists(manager: HsmManager, id: string): Promise<boolean> {
  try {
    await manager.getKey(id);
    return true;
  } catch (error) {
    if (isHsmError(error, 'KeyNotFound')) return false;
    throw error;
  }
}

/** Backend keys named like versions of `base` (`base.v1`, `base.v7`): a logical key `base` would collide with them. */
async function versionShapedKeys(manager: HsmManager, base: string): Promise<string[]> {
  const found: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await manager.listKeys({ prefix: `${base}.v`, limit: 1000, ...(cursor ? { cursor } : {}) });
    for (const k of page.keys) if (parseVersionKeyId(k.id)?.baseKeyId === base) found.push(k.id);
    cursor = page.nextCursor;
  } while (cursor);
  return found;
}

/** An id shaped like `<base>.v<N>` while `base` is a logical key would be mistaken for one of its versions. */
async function refuseVersionShapedId(rot: RotationContext | undefined, id: string): Promise<void> {
  const parsed = parseVersionKeyId(id);
  if (rot && parsed && (await rot.registry.hasLogicalKey(parsed.baseKeyId))) {
    throw new CliError(
      'KeyAlreadyExists',
      `--id ${echo(id)} is shaped like version ${parsed.version} of logical key "${parsed.baseKeyId}" (versions are named <key>.v<N> and made by keys rotate); choose an id that does not end in .v<N>`,
    );
  }
}

/**
 * Creates a logical key: version 1 is generated in the backend as `<id>.v1`, registered and made
 * Active, so it can be rotated; `--id` names it everywhere (sign, verify, show, export-public).
 * `--no-rotation` creates a plain backend key `<id>` as before.
 *
 * Everything that can make the creation fail half-way is checked first (a backend key `<id>` or
 * `<id>.v<N>` already there, an id shaped like another key's version), so a refused creation
 * leaves nothing behind: no logical key without a version that no command could repair.
 */
export async function create(ctx: CliContext, opts: CreateOptions): Promise<void> {
  const algorithm = parseAlgorithm(opts.algorithm);
  const logical = opts.rotation !== false;
  checkNewKeyId(opts.id, logical);
  if (!logical) {
    for (const flag of ['actor', 'reason', 'rotationInterval'] as const) {
      if (opts[flag] !== undefined) throw new CliError('InvalidArgument', `--${flag === 'rotationInterval' ? 'rotation-interval' : flag} applies to logical keys; it cannot be used with --no-rotation`);
    }
    await withManagerAndRegistry(ctx, async (manager, rot) => {
      if (rot && (await rot.registry.hasLogicalKey(opts.id))) throw new CliError('KeyAlreadyExists', `--id ${opts.id} is already a logical key; choose another --id`);
      await refuseVersionShapedId(rot, opts.id);
      const handle = await manager.generateKey({ id: opts.id, algorithm, ...(opts.backup ? { backup: true } : {}) });
      if (ctx.json) return ctx.printJson({ key: handleJson(handle) });
      ctx.print(`created ${handle.id} (${handle.algorithm}) ref ${handle.ref} (backend key, not registered for rotation)`);
    });
    return;
  }
  const actor = actorOf(ctx, opts.actor);
  await withRotation(ctx, async ({ manager, rot }) => {
    if (await rot.registry.hasLogicalKey(opts.id)) throw new CliError('KeyAlreadyExists', `--id ${opts.id}: logical key "${opts.id}" already exists (keys history --id ${opts.id} shows it); choose another --id`);
    await refuseVersionShapedId(rot, opts.id);
    if (await backendKeyExists(manager, opts.id)) {
      throw new CliError('KeyAlreadyExists', `--id ${opts.id}: a backend key "${opts.id}" already exists (not registered for rotation); choose another --id`);
    }
    const taken = await versionShapedKeys(manager, opts.id);
    if (taken.length > 0) {
      throw new CliError(
        'KeyAlreadyExists',
        `--id ${opts.id}: the backend already holds ${taken.slice(0, 3).join(', ')}${taken.length > 3 ? ` and ${taken.length - 3} more` : ''}, named like versions of "${opts.id}" but not registered; choose another --id (or destroy ${taken.length === 1 ? 'that key' : 'those keys'} if unused)`,
      );
    }
    let v: KeyVersion;
    try {
      v = await rot.manager.createKey(opts.id, algorithm, {
        actor,
        ...(opts.reason !== undefined ? { reason: opts.reason } : {}),
        ...(opts.rotationInterval !== undefined ? { rotationInterval: opts.rotationInterval } : {}),
        ...(opts.backup ? { backup: true } : {}),
      });
    } catch (error) {
      await reportIncompleteCreation(ctx, rot, opts.id);
      const e = error as { name?: string; details?: Record<string, unknown> };
      if (e?.name === 'HsmError' && e.details?.['field'] === 'rotationInterval') {
        throw new CliError('InvalidArgument', `--rotation-interval "${echo(opts.rotationInterval ?? '')}" is not a duration of at least 1s: use e.g. 90d, 12h, 30m or 10s`, { cause: error });
      }
      throw error;
    }
    const handle = await manager.getKey(v.keyId);
    if (ctx.json) return ctx.printJson({ key: logicalJson(handle, v) });
    ctx.print(`created ${v.baseKeyId} (${v.algorithm}) version ${v.version} Active: backend key ${v.keyId} ref ${handle.ref}`);
  });
}

/**
 * After a failed creation the rotation manager removes the logical key when nothing was made
 * in the backend. If a row is left (a key appeared under the version's id meanwhile), say so
 * on stderr: the error alone would not tell the user that a repair is needed.
 */
async function reportIncompleteCreation(ctx: CliContext, rot: RotationContext, id: string): Promise<void> {
  try {
    if (!(await rot.registry.hasLogicalKey(id))) return;
    const versions = await rot.registry.getKeyVersions(id);
    if (versions.length === 0) ctx.note(`olocus-hsm: note: logical key "${id}" was left without a version; olocus-hsm rotation status shows it`);
  } catch {
    // the registry itself failed: the original error says more
  }
}

/**
 * Every key by the name commands take: a logical key once (its current version: id, keyId,
 * version, state), and each backend key that is not a registered version.
 */
export async function list(ctx: CliContext, opts: { prefix?: string }): Promise<void> {
  await withManagerAndRegistry(ctx, async (manager, rot) => {
    const backendKeys: HsmKeyHandle[] = [];
    let cursor: string | undefined;
    do {
      const page = await manager.listKeys({ prefix: opts.prefix, limit: 1000, cursor });
      backendKeys.push(...page.keys);
      cursor = page.nextCursor;
    } while (cursor);
    const byId = new Map(backendKeys.map((k) => [k.id, k]));
    const registered = new Set<string>();
    const logical: { handle: HsmKeyHandle | undefined; version: KeyVersion }[] = [];
    if (rot) {
      let keyCursor: string | undefined;
      do {
        const page = await rot.registry.listLogicalKeys({ limit: 1000, ...(opts.prefix ? { prefix: opts.prefix } : {}), ...(keyCursor ? { cursor: keyCursor } : {}) });
        for (const lk of page.keys) {
          const versions = await rot.registry.getKeyVersions(lk.baseKeyId);
          for (const v of versions) registered.add(v.keyId);
          const current = versions.find((v) => v.state === 'Active') ?? versions[versions.length - 1];
          if (current) logical.push({ handle: byId.get(current.keyId), version: current });
        }
        keyCursor = page.nextCursor;
      } while (keyCursor);
    }
    type Row = { id: string; json: Record<string, unknown>; cells: string[] };
    const rows: Row[] = [];
    for (const { handle, version: v } of logical) {
      // A version the listing did not return is either gone or unreadable: ask for it to tell which.
      const problem = handle ? undefined : await unreadable(manager, v.keyId);
      const json = handle
        ? logicalJson(handle, v)
        : { id: v.baseKeyId, keyId: v.keyId, version: v.version, state: v.state, ref: v.keyRef, algorithm: v.algorithm, createdAt: v.createdAt, ...(problem ? { unreadable: problem } : { missingInBackend: true }) };
      const status = handle ? '' : problem ? ` (unreadable: ${problem.file ?? problem.code})` : ' (missing in backend: restore the key, or revoke this version)';
      rows.push({ id: v.baseKeyId, json, cells: [v.baseKeyId, v.algorithm, (handle?.createdAt ? new Date(handle.createdAt) : v.createdAt).toISOString(), `v${v.version} ${v.state}${status}`, handle?.ref ?? v.keyRef] });
    }
    for (const k of backendKeys) {
      if (registered.has(k.id)) continue;
      rows.push({ id: k.id, json: handleJson(k), cells: [k.id, k.algorithm, k.createdAt ? new Date(k.createdAt).toISOString() : '-', '-', k.ref] });
    }
    const corrupt = await corruptKeyFiles(manager);
    if (corrupt.length > 0) {
      ctx.note(`olocus-hsm: warning: ${corrupt.length} key file${corrupt.length === 1 ? '' : 's'} could not be read (corrupted or not a key file): ${corrupt.join(', ')}; restore ${corrupt.length === 1 ? 'it' : 'them'} from a backup (olocus-hsm health shows the store's state)`);
    }
    const shown = rows.filter((r) => !opts.prefix || r.id.startsWith(opts.prefix)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (ctx.json) return ctx.printJson({ keys: shown.map((r) => r.json) });
    if (shown.length === 0) return ctx.print('no keys');
    ctx.print(table(['ID', 'ALGORITHM', 'CREATED', 'VERSION', 'REF'], shown.map((r) => r.cells)));
  });
}

/** Why a key the registry knows cannot be read: a corrupted file (named), or nothing (it is missing). */
async function unreadable(manager: HsmManager, keyId: string): Promise<{ code: string; message: string; file?: string } | undefined> {
  try {
    await manager.getKey(keyId);
    return undefined;
  } catch (error) {
    if (isHsmError(error, 'KeyNotFound') || !isHsmError(error)) return undefined;
    const details = error.details as { file?: unknown; directory?: unknown } | undefined;
    const file = typeof details?.file === 'string' ? (typeof details.directory === 'string' ? `${details.directory}/${details.file}` : details.file) : undefined;
    return { code: error.code, message: error.message, ...(file ? { file } : {}) };
  }
}

/** Key files the backend found unreadable while listing (software backend: reported by its health check). */
async function corruptKeyFiles(manager: HsmManager): Promise<string[]> {
  if (manager.backend.type !== 'software') return [];
  try {
    const health = await manager.healthCheck();
    const files = health.details?.['corruptKeyFiles'];
    return typeof files === 'string' && files !== '' ? files.split(', ') : [];
  } catch {
    return [];
  }
}

/** The backend key a name means for show/export-public: a logical key's current version, else the name itself. */
async function resolveForReading(rot: RotationContext | undefined, id: string): Promise<{ key: string; version?: KeyVersion }> {
  const target = await classifyKey(rot, id);
  if (target.kind === 'logical') {
    const v = await currentVersion(rot!, target.baseKeyId);
    return { key: v.keyId, version: v };
  }
  if (target.kind === 'version') return { key: target.version.keyId, version: target.version };
  return { key: id };
}

export async function show(ctx: CliContext, opts: { id: string }): Promise<void> {
  await withManagerAndRegistry(ctx, async (manager, rot) => {
    const { key, version } = await resolveForReading(rot, opts.id);
    const handle = await manager.getKey(key);
    const pub = await manager.getPublicKey(handle);
    const fingerprint = spkiFingerprint(pub.spki);
    if (ctx.json) return ctx.printJson({ key: { ...(version ? logicalJson(handle, version) : handleJson(handle)), publicKeyFingerprint: fingerprint } });
    const rows: [string, string][] = [
      ['id', version ? version.baseKeyId : handle.id],
      ...(version
        ? ([
            ['version', `${version.version} (${version.state})`],
            ['key id', handle.id],
          ] as [string, string][])
        : []),
      ['ref', handle.ref],
      ['algorithm', handle.algorithm],
      ['usages', handle.usages.join(', ')],
      ['created', handle.createdAt ? new Date(handle.createdAt).toISOString() : 'unknown'],
      ...(handle.expiresAt ? ([['expires', new Date(handle.expiresAt).toISOString()]] as [string, string][]) : []),
      ['backend', handle.backend],
      ['public key', fingerprint],
      ...Object.entries(handle.metadata).map(([k, v]) => [k, v] as [string, string]),
    ];
    const width = Math.max(...rows.map((r) => r[0].length));
    for (const [k, v] of rows) ctx.print(`${k.padEnd(width)}  ${v}`);
  });
}

export async function exportPublic(ctx: CliContext, opts: { id: string; format: 'pem' | 'der' | 'jwk'; out?: string }): Promise<void> {
  if (opts.out !== undefined) await checkOutputPath(ctx, '--out', opts.out);
  await withManagerAndRegistry(ctx, async (manager, rot) => {
    const { key, version } = await resolveForReading(rot, opts.id);
    const info = await manager.getPublicKey(key);
    let data: Uint8Array | string;
    let jsonValue: unknown;
    if (opts.format === 'der') {
      data = exportPublicKey(info, 'der');
      jsonValue = toBase64(data);
    } else if (opts.format === 'pem') {
      data = exportPublicKey(info, 'pem');
      jsonValue = data;
    } else {
      jsonValue = exportPublicKey(info, 'jwk');
      data = JSON.stringify(jsonValue, null, 2) + '\n';
    }
    const which = version ? { keyId: version.keyId, version: version.version } : {};
    if (opts.out !== undefined && opts.out !== '-') {
      const path = await writeOutput(ctx, '--out', opts.out, data);
      if (ctx.json) return ctx.printJson({ id: opts.id, ...which, algorithm: info.algorithm, format: opts.format, out: path });
      return ctx.print(`wrote ${opts.format} public key of ${opts.id}${version ? ` (version ${version.version}, ${version.keyId})` : ''} to ${path}`);
    }
    if (ctx.json) return ctx.printJson({ id: opts.id, ...which, algorithm: info.algorithm, format: opts.format, publicKey: jsonValue });
    await writeOutput(ctx, '--out', '-', data);
  });
}

/** Destroys a backend key. Versions of logical keys are destroyed by the retention policy (LC-DESTROY-ACTIVE, LC-PENDING), never here. */
export async function destroy(ctx: CliContext, opts: { id: string }): Promise<void> {
  await withManagerAndRegistry(ctx, async (manager, rot) => {
    const target = await classifyKey(rot, opts.id);
    if (target.kind !== 'backend') {
      const base = target.kind === 'logical' ? target.baseKeyId : target.version.baseKeyId;
      throw new CliError(
        'PolicyViolation',
        `"${opts.id}" is ${target.kind === 'logical' ? 'a logical key' : `version ${target.version.version} of logical key "${base}"`}: its versions are not destroyed at once; revoke it (olocus-hsm keys revoke --id ${base} --reason TEXT) and the retention policy schedules destruction (olocus-hsm rotation run)`,
      );
    }
    const audit = auditOf(manager);
    const checkpointKey = audit?.section.checkpoint.keyId;
    // every key that ever signed this log's checkpoints (rotated ones too): older checkpoints verify with them
    const checkpointKeys = [...(checkpointKey ? [checkpointKey] : []), ...((await audit?.log.checkpointKeys().catch(() => [])) ?? []).map((k) => k.keyId)];
    const handle = await manager.getKey(opts.id).catch(() => undefined);
    for (const id of [opts.id, handle?.id].filter((x): x is string => x !== undefined)) {
      if (isInternalKeyId(id, checkpointKeys)) {
        throw new CliError(
          'PolicyViolation',
          `--id ${id} is an internal key (${checkpointKeys.includes(id) || id === 'olocus-audit-checkpoint' ? 'it signs the audit log\'s checkpoints and compliance reports: without it the log can no longer be verified' : 'the health canary'}); it is not destroyed by keys destroy`,
        );
      }
    }
    await manager.destroyKey(opts.id);
    if (ctx.json) return ctx.printJson({ destroyed: opts.id });
    ctx.print(`destroyed ${opts.id}`);
  });
}

/** A plain text table, columns padded to their widest cell. */
export function table(headers: string[], rawRows: string[][]): string {
  // Cells hold user values (ids, actors, reasons): a newline or ESC in one must not forge a row.
  const rows = rawRows.map((r) => r.map((c) => terminalSafe(c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}
