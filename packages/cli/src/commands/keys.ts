import { createHash } from 'node:crypto';
import { assertValidKeyId, exportPublicKey, isHsmError, isKeyAlgorithm, KEY_ALGORITHMS, type HsmKeyHandle, type HsmManager, type KeyAlgorithm } from '@olocus/hsm-core';
import type { KeyVersion, RotationContext } from '@olocus/hsm-rotation';
import { CliError } from '../errors.js';
import { toBase64, writeOutput } from '../io.js';
import { actorOf, classifyKey, withManagerAndRegistry, withRotation } from '../rotation.js';
import type { CliContext } from '../context.js';

export function parseAlgorithm(value: string, flag = '--algorithm'): KeyAlgorithm {
  if (isKeyAlgorithm(value)) return value;
  throw new CliError('InvalidArgument', `${flag}: unknown algorithm "${value}"; use one of: ${KEY_ALGORITHMS.join(', ')}`);
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

async function refuseExistingBackendKey(manager: HsmManager, id: string): Promise<void> {
  try {
    await manager.getKey(id);
  } catch (error) {
    if (isHsmError(error, 'KeyNotFound')) return;
    throw error;
  }
  throw new CliError('KeyAlreadyExists', `a backend key "${id}" already exists (not registered for rotation); choose another --id`);
}

/**
 * Creates a logical key: version 1 is generated in the backend as `<id>.v1`, registered and made
 * Active, so it can be rotated; `--id` names it everywhere (sign, verify, show, export-public).
 * `--no-rotation` creates a plain backend key `<id>` as before.
 */
export async function create(ctx: CliContext, opts: CreateOptions): Promise<void> {
  const algorithm = parseAlgorithm(opts.algorithm);
  assertValidKeyId(opts.id, '--id');
  if (opts.rotation === false) {
    for (const flag of ['actor', 'reason', 'rotationInterval'] as const) {
      if (opts[flag] !== undefined) throw new CliError('InvalidArgument', `--${flag === 'rotationInterval' ? 'rotation-interval' : flag} applies to logical keys; it cannot be used with --no-rotation`);
    }
    await withManagerAndRegistry(ctx, async (manager, rot) => {
      if (rot && (await rot.registry.hasLogicalKey(opts.id))) throw new CliError('KeyAlreadyExists', `"${opts.id}" is already a logical key; choose another --id`);
      const handle = await manager.generateKey({ id: opts.id, algorithm });
      if (ctx.json) return ctx.printJson({ key: handleJson(handle) });
      ctx.print(`created ${handle.id} (${handle.algorithm}) ref ${handle.ref} (backend key, not registered for rotation)`);
    });
    return;
  }
  const actor = actorOf(ctx, opts.actor);
  await withRotation(ctx, async ({ manager, rot }) => {
    await refuseExistingBackendKey(manager, opts.id);
    const v = await rot.manager.createKey(opts.id, algorithm, {
      actor,
      ...(opts.reason !== undefined ? { reason: opts.reason } : {}),
      ...(opts.rotationInterval !== undefined ? { rotationInterval: opts.rotationInterval } : {}),
    });
    const handle = await manager.getKey(v.keyId);
    if (ctx.json) return ctx.printJson({ key: logicalJson(handle, v) });
    ctx.print(`created ${v.baseKeyId} (${v.algorithm}) version ${v.version} Active: backend key ${v.keyId} ref ${handle.ref}`);
  });
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
      const json = handle
        ? logicalJson(handle, v)
        : { id: v.baseKeyId, keyId: v.keyId, version: v.version, state: v.state, ref: v.keyRef, algorithm: v.algorithm, createdAt: v.createdAt, missingInBackend: true };
      rows.push({ id: v.baseKeyId, json, cells: [v.baseKeyId, v.algorithm, (handle?.createdAt ? new Date(handle.createdAt) : v.createdAt).toISOString(), `v${v.version} ${v.state}${handle ? '' : ' (missing in backend)'}`, handle?.ref ?? v.keyRef] });
    }
    for (const k of backendKeys) {
      if (registered.has(k.id)) continue;
      rows.push({ id: k.id, json: handleJson(k), cells: [k.id, k.algorithm, new Date(k.createdAt).toISOString(), '-', k.ref] });
    }
    const shown = rows.filter((r) => !opts.prefix || r.id.startsWith(opts.prefix)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (ctx.json) return ctx.printJson({ keys: shown.map((r) => r.json) });
    if (shown.length === 0) return ctx.print('no keys');
    ctx.print(table(['ID', 'ALGORITHM', 'CREATED', 'VERSION', 'REF'], shown.map((r) => r.cells)));
  });
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
      ['created', new Date(handle.createdAt).toISOString()],
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
    await manager.destroyKey(opts.id);
    if (ctx.json) return ctx.printJson({ destroyed: opts.id });
    ctx.print(`destroyed ${opts.id}`);
  });
}

/** A plain text table, columns padded to their widest cell. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}
