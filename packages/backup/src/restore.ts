import { HsmError, importKeys, isHsmError, type ExportedKey, type HsmBackend, type HsmKeyHandle } from '@olocus/hsm-core';
import type { KeyRegistry } from '@olocus/hsm-rotation';
import { bundleError, fingerprintOf, fromB64, keyPartName, registryPartName, type KeyPart, type RegistryPart } from './format.js';
import { existingRows, insertRegistryRows, updateVersionRef } from './registry.js';
import { verifyBundle, type VerifiedBundle, type VerifyBundleOptions } from './verify.js';

/** Keys imported per batch (restore and drill): progress is reported and cancellation checked at least this often. */
export const IMPORT_BATCH = 100;

/** What restore did (or, in a dry run, would do) with one key of the bundle. */
export type RestoreAction = 'imported' | 'would-import' | 'already-present' | 'kept-by-provider';

export interface RestoreKeyRow {
  part: string;
  id: string;
  baseKeyId?: string;
  version?: number;
  /** The version's registry state (kept as it was backed up). */
  state?: string;
  method: string;
  action: RestoreAction;
  fingerprint: string;
  note?: string;
}

export interface RestoreRegistryRow {
  baseKeyId: string;
  action: 'restored' | 'would-restore' | 'already-restored';
  versions: Array<{ version: number; state: string }>;
}

export interface RestoreResult {
  dryRun: boolean;
  keys: RestoreKeyRow[];
  registry: RestoreRegistryRow[];
  ineligible: Array<{ id: string; reason: string }>;
  bundle: { sha256: string; createdAt: string; signer: string; signerKeyId: string; audit?: { seq: number; hash: string } };
}

export interface RestoreProgress {
  phase: 'registry' | 'import';
  done: number;
  total: number;
  key?: string;
}

export interface RestoreBundleOptions extends VerifyBundleOptions {
  /** The backend the keys are imported into (not an audit wrapper: it must carry `backup`). */
  backend: HsmBackend;
  /** The registry the logical keys, versions, states and history are written to. Required when the bundle holds registry parts. */
  registry?: KeyRegistry;
  dryRun?: boolean;
  onProgress?: (progress: RestoreProgress) => void;
  signal?: AbortSignal;
}

const PROVIDER_KEPT = new Set(['reference-only', 'provider-backup']);

/** A key the provider keeps (a reference or the provider's own backup): nothing to import. */
export function keptByProvider(k: KeyPart): boolean {
  return PROVIDER_KEPT.has(k.method);
}

export function exportedKeyOf(k: KeyPart): ExportedKey {
  return {
    method: k.method,
    id: k.id,
    algorithm: k.algorithm,
    usages: [...k.usages],
    publicKeySpki: fromB64(k.publicKeySpki),
    ...(k.blob !== undefined ? { blob: fromB64(k.blob) } : {}),
    parameters: { ...k.parameters },
  };
}

function sameVersions(a: RegistryPart, b: RegistryPart): boolean {
  const shape = (r: RegistryPart): string =>
    JSON.stringify(r.versions.map((v) => [Number(v['version']), String(v['key_id']), String(v['state']), String(v['algorithm'])]).sort((x, y) => Number(x[0]) - Number(y[0])));
  return shape(a) === shape(b);
}

/**
 * Restores a verified bundle. The whole plan is checked before anything changes: a bundle that
 * does not verify, a logical key that exists in the target with other versions (in particular
 * one that would end with two Active versions), or a key id taken by a different key, refuse the
 * restore with nothing written.
 *
 * Order, for restartability: each logical key's registry rows first (one transaction), then
 * the keys. A restore killed half way leaves registry rows whose keys are missing (signing fails
 * with KeyNotFound, never with the wrong key or a revoked one acting as a plain key); the next
 * restore finds those rows identical, the keys already imported with the same public key, and
 * imports the rest.
 */
export async function restoreBundle(file: string, options: RestoreBundleOptions): Promise<RestoreResult> {
  const verified = await verifyBundle(file, options);
  return restoreVerified(verified, options);
}

export async function restoreVerified(verified: VerifiedBundle, options: RestoreBundleOptions): Promise<RestoreResult> {
  const { backend, registry } = options;
  const dryRun = options.dryRun === true;
  const progress = options.onProgress ?? (() => {});
  if (verified.registry.length > 0 && !registry) {
    throw new HsmError('InvalidArgument', 'backup restore: the bundle holds key registry rows (versions and their states); restore needs the target registry, or keys would come back as plain keys without their states');
  }

  // Plan: registry.
  const registryRows: RestoreRegistryRow[] = [];
  const toInsert: RegistryPart[] = [];
  for (const part of verified.registry) {
    const versions = part.versions.map((v) => ({ version: Number(v['version']), state: String(v['state']) }));
    const existing = registry ? await existingRows(registry, part.baseKeyId) : undefined;
    if (existing) {
      if (sameVersions(existing, part)) {
        registryRows.push({ baseKeyId: part.baseKeyId, action: 'already-restored', versions });
        continue;
      }
      const activeThere = existing.versions.find((v) => v['state'] === 'Active');
      const activeHere = part.versions.find((v) => v['state'] === 'Active');
      if (activeThere && activeHere) {
        throw new HsmError(
          'Conflict',
          `backup restore: ${registryPartName(part.baseKeyId)}: the target registry already has v${String(activeThere['version'])} Active; restoring the bundle's v${String(activeHere['version'])} Active would make a second Active version — refused, nothing was changed`,
          { details: { part: registryPartName(part.baseKeyId), reason: 'SecondActive' } },
        );
      }
      throw new HsmError('Conflict', `backup restore: ${registryPartName(part.baseKeyId)}: the target registry holds this logical key with other versions; refused, nothing was changed`, {
        details: { part: registryPartName(part.baseKeyId), reason: 'RegistryDiffers' },
      });
    }
    registryRows.push({ baseKeyId: part.baseKeyId, action: dryRun ? 'would-restore' : 'restored', versions });
    toInsert.push(part);
  }

  // Plan: keys.
  const stateOf = new Map<string, string>();
  for (const r of verified.registry) for (const v of r.versions) stateOf.set(String(v['key_id']), String(v['state']));
  const rows: RestoreKeyRow[] = [];
  const toImport: KeyPart[] = [];
  // One listing instead of a look-up per key: on a token a look-up is a C_FindObjects over every
  // object, so per-key look-ups made a restore quadratic in the number of keys.
  const inTarget = verified.keys.length > 0 ? await listAll(backend) : new Map<string, HsmKeyHandle>();
  const refs = new Map<string, { ref: string; backend: string }>();
  for (const k of verified.keys) {
    const part = keyPartName(k);
    const base: Omit<RestoreKeyRow, 'action'> = {
      part,
      id: k.id,
      ...(k.baseKeyId !== undefined ? { baseKeyId: k.baseKeyId } : {}),
      ...(k.version !== undefined ? { version: k.version } : {}),
      ...(stateOf.has(k.id) ? { state: stateOf.get(k.id)! } : {}),
      method: k.method,
      fingerprint: k.fingerprint,
    };
    if (keptByProvider(k)) {
      rows.push({ ...base, action: 'kept-by-provider', note: `kept by the provider (${k.method}): not imported; the registry keeps its reference` });
      continue;
    }
    const present = inTarget.get(k.id);
    if (present) {
      const spki = (await backend.getPublicKey(k.id)).spki;
      if (fingerprintOf(spki) !== k.fingerprint) {
        throw new HsmError('KeyAlreadyExists', `backup restore: ${part}: the target backend already holds a different key ${k.id} (${fingerprintOf(spki)}, the bundle's is ${k.fingerprint}); refused, nothing was changed`, {
          details: { part },
        });
      }
      refs.set(k.id, { ref: present.ref, backend: present.backend });
      rows.push({ ...base, action: 'already-present' });
      continue;
    }
    if (!backend.backup) throw new HsmError('InvalidArgument', `backup restore: ${part}: the target backend (${backend.type}) cannot import keys (no backup capability)`, { details: { part } });
    rows.push({ ...base, action: dryRun ? 'would-import' : 'imported' });
    toImport.push(k);
  }

  const result: RestoreResult = {
    dryRun,
    keys: rows,
    registry: registryRows,
    ineligible: verified.manifest.ineligible,
    bundle: {
      sha256: verified.sha256,
      createdAt: verified.manifest.createdAt,
      signer: verified.manifest.signer.fingerprint,
      signerKeyId: verified.manifest.signer.keyId,
      ...(verified.audit ? { audit: verified.audit.head } : {}),
    },
  };
  if (dryRun) return result;

  let done = 0;
  for (const part of toInsert) {
    options.signal?.throwIfAborted();
    await insertRegistryRows(registry!, part, refs);
    progress({ phase: 'registry', done: ++done, total: toInsert.length, key: part.baseKeyId });
  }
  done = 0;
  const inRegistry = new Set(verified.registry.flatMap((r) => r.versions.map((v) => String(v['key_id']))));
  // a chunk at a time: one token look-up per chunk (importKeys), progress after each
  for (let start = 0; start < toImport.length; start += IMPORT_BATCH) {
    options.signal?.throwIfAborted();
    const chunk = toImport.slice(start, start + IMPORT_BATCH);
    const { imported, failed } = await importKeys(backend.backup!, chunk.map(exportedKeyOf), options.signal ? { signal: options.signal } : {});
    for (const [i, handle] of imported.entries()) {
      const k = chunk[i]!;
      if (inRegistry.has(k.id)) await updateVersionRef(registry!, k.id, { ref: handle.ref, backend: handle.backend });
      progress({ phase: 'import', done: ++done, total: toImport.length, key: keyPartName(k) });
    }
    if (failed) {
      const k = chunk[failed.index]!;
      if (isHsmError(failed.error, 'IntegrityError')) throw bundleError(keyPartName(k), `the imported key is not the bundle's key (${failed.error.message})`, failed.error);
      throw failed.error;
    }
  }
  // Rows restored earlier while their key was already present point at the present key.
  for (const [keyId, ref] of refs) if (inRegistry.has(keyId)) await updateVersionRef(registry!, keyId, ref);
  if (registry) for (const r of verified.registry) registry.invalidate(r.baseKeyId);
  return result;
}

async function listAll(backend: HsmBackend): Promise<Map<string, HsmKeyHandle>> {
  const out = new Map<string, HsmKeyHandle>();
  let cursor: string | undefined;
  do {
    const page = await backend.listKeys({ limit: 1000, cursor });
    for (const k of page.keys) out.set(k.id, k);
    cursor = page.nextCursor;
  } while (cursor);
  return out;
}
