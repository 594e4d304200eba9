import { HsmError, isHsmError, type HsmBackend, type HsmKeyHandle, type KeyAlgorithm } from '@olocus/hsm-core';
import type { AuditLog } from '@olocus/hsm-compliance';
import { parseVersionKeyId, type KeyRegistry } from '@olocus/hsm-rotation';
import { writeFileAtomic } from './atomic.js';
import {
  AUDIT_PART_NAME,
  BUNDLE_FORMAT,
  DEFAULT_BACKUP_SIGNER_KEY_ID,
  b64,
  canonicalJson,
  fingerprintOf,
  keyPartName,
  registryPartName,
  sha256Hex,
  type AuditPart,
  type BundleFile,
  type BundleManifest,
  type BundleSigner,
  type KeyPart,
  type ManifestPart,
  type RegistryPart,
  type Row,
} from './format.js';
import { readRegistryRows } from './registry.js';

export interface BackupProgress {
  phase: 'export' | 'registry' | 'audit' | 'write';
  done: number;
  total: number;
  key?: string;
}

export interface CreateBundleOptions {
  /** The backend whose keys are exported and whose key signs the manifest (not an audit wrapper: it must carry `backup`). */
  backend: HsmBackend;
  /** The rotation registry: its logical keys, versions, states and history go into the bundle. */
  registry?: KeyRegistry;
  /** The audit log: its head and a signed checkpoint at that head go into the bundle. */
  audit?: AuditLog;
  /** Backend key ids or logical key ids; `'all'` (default): every logical key and every backend key. */
  keys?: readonly string[] | 'all';
  /** Keys never backed up under `'all'` (the library's own internal keys). */
  exclude?: readonly string[];
  signerKeyId?: string;
  signerAlgorithm?: KeyAlgorithm;
  actor?: string;
  now?: () => Date;
  onProgress?: (progress: BackupProgress) => void;
  /**
   * Called before a key is exported (dual control): rejects to refuse the backup. The whole
   * backup stops: a bundle silently missing a key that needed approval would read as complete.
   */
  authorize?: (key: { id: string; baseKeyId?: string; version?: number }) => Promise<void>;
  signal?: AbortSignal;
}

export interface CreatedKey {
  part: string;
  id: string;
  method: string;
  fingerprint: string;
}

export interface CreateBundleResult {
  file: string;
  bytes: number;
  /** SHA-256 (hex) of the whole file. */
  sha256: string;
  signer: BundleSigner;
  keys: CreatedKey[];
  ineligible: Array<{ id: string; reason: string }>;
  logicalKeys: string[];
  audit?: { seq: number; hash: string };
  notes: string[];
}

interface Target {
  id: string;
  baseKeyId?: string;
  version?: number;
}

/** Ensures the bundle signer exists in the backend (created on first use) and describes it. */
export async function ensureSigner(backend: HsmBackend, keyId = DEFAULT_BACKUP_SIGNER_KEY_ID, algorithm: KeyAlgorithm = 'ECDSA_P256'): Promise<BundleSigner> {
  let handle: HsmKeyHandle;
  try {
    handle = await backend.getKey(keyId);
  } catch (error) {
    if (!isHsmError(error, 'KeyNotFound')) throw error;
    try {
      handle = await backend.generateKeyPair({ id: keyId, algorithm, usages: ['sign', 'verify'], labels: { purpose: 'backup-signer' } });
    } catch (e) {
      // Another process created it between our look-up and our generate.
      if (!isHsmError(e, 'KeyAlreadyExists')) throw e;
      handle = await backend.getKey(keyId);
    }
  }
  const spki = (await backend.getPublicKey(keyId)).spki;
  return { keyId, algorithm: handle.algorithm, publicKeySpki: b64(spki), fingerprint: fingerprintOf(spki) };
}

async function allBackendKeyIds(backend: HsmBackend): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await backend.listKeys({ limit: 1000, cursor });
    ids.push(...page.keys.map((k) => k.id));
    cursor = page.nextCursor;
  } while (cursor);
  return ids;
}

async function allLogicalKeys(registry: KeyRegistry): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await registry.listLogicalKeys({ limit: 1000, ...(cursor ? { cursor } : {}) });
    ids.push(...page.keys.map((k) => k.baseKeyId));
    cursor = page.nextCursor;
  } while (cursor);
  return ids;
}

/**
 * Writes a signed backup bundle to `file` (atomically). Keys that cannot be exported are listed in
 * the manifest and the result (`ineligible`) with the backend's reason, never silently skipped.
 */
export async function createBundle(file: string, options: CreateBundleOptions): Promise<CreateBundleResult> {
  const { backend, registry, audit } = options;
  const now = options.now ?? (() => new Date());
  const progress = options.onProgress ?? (() => {});
  const signerKeyId = options.signerKeyId ?? DEFAULT_BACKUP_SIGNER_KEY_ID;
  const exclude = new Set([signerKeyId, ...(options.exclude ?? [])]);
  const notes: string[] = [];

  // Which logical keys and which plain backend keys.
  const logical = new Set<string>();
  const plain = new Set<string>();
  if (options.keys === undefined || options.keys === 'all') {
    if (registry) for (const id of await allLogicalKeys(registry)) logical.add(id);
    for (const id of await allBackendKeyIds(backend)) if (!exclude.has(id)) plain.add(id);
  } else {
    for (const id of options.keys) {
      if (registry && (await registry.hasLogicalKey(id))) logical.add(id);
      else {
        const parsed = parseVersionKeyId(id);
        if (registry && parsed && (await registry.hasLogicalKey(parsed.baseKeyId))) logical.add(parsed.baseKeyId);
        else plain.add(id);
      }
    }
  }

  const registryParts: RegistryPart[] = [];
  const targets: Target[] = [];
  if (registry) {
    for (const baseKeyId of [...logical].sort()) {
      const part = await readRegistryRows(registry, baseKeyId);
      registryParts.push(part);
      for (const v of part.versions) {
        const keyId = String(v['key_id']);
        plain.delete(keyId);
        if (v['state'] === 'Destroyed') continue;
        targets.push({ id: keyId, baseKeyId, version: Number(v['version']) });
      }
    }
    progress({ phase: 'registry', done: registryParts.length, total: registryParts.length });
  }
  for (const id of [...plain].sort()) {
    // A key named like a version whose logical key is not in the registry is still a plain key here.
    targets.push({ id });
  }

  const ineligible: Array<{ id: string; reason: string }> = [];
  const keyParts: KeyPart[] = [];
  const capability = backend.backup;
  let index = 0;
  for (const t of targets) {
    options.signal?.throwIfAborted();
    index++;
    if (!capability) {
      ineligible.push({ id: t.id, reason: `backend ${backend.type} has no backup capability` });
      continue;
    }
    if (options.authorize) await options.authorize(t);
    try {
      const exported = await capability.exportKey(t.id, options.signal ? { signal: options.signal } : undefined);
      const part: KeyPart = {
        id: t.id,
        ...(t.baseKeyId !== undefined ? { baseKeyId: t.baseKeyId } : {}),
        ...(t.version !== undefined ? { version: t.version } : {}),
        method: exported.method,
        algorithm: exported.algorithm,
        usages: [...exported.usages],
        publicKeySpki: b64(exported.publicKeySpki),
        fingerprint: fingerprintOf(exported.publicKeySpki),
        ...(exported.blob ? { blob: b64(exported.blob) } : {}),
        parameters: { ...exported.parameters },
      };
      keyParts.push(part);
    } catch (error) {
      if (isHsmError(error, 'KeyUsageNotAllowed') || isHsmError(error, 'KeyNotFound') || isHsmError(error, 'InvalidArgument') || isHsmError(error, 'UnsupportedAlgorithm')) {
        ineligible.push({ id: t.id, reason: error.message });
      } else throw error;
    }
    progress({ phase: 'export', done: index, total: targets.length, key: t.id });
  }

  let auditPart: AuditPart | undefined;
  if (audit) {
    await audit.flush();
    auditPart = await auditHead(audit);
    if (!auditPart) notes.push('the audit log signs no checkpoints: the bundle holds no audit head');
    progress({ phase: 'audit', done: 1, total: 1 });
  }

  const signer = await ensureSigner(backend, signerKeyId, options.signerAlgorithm);
  const parts: Record<string, string> = {};
  const listed: ManifestPart[] = [];
  const add = (name: string, kind: ManifestPart['kind'], body: unknown): void => {
    if (parts[name] !== undefined) throw new HsmError('Internal', `backup bundle: two parts named ${name}`);
    const text = canonicalJson(body);
    parts[name] = text;
    listed.push({ name, kind, sha256: sha256Hex(text) });
  };
  for (const k of keyParts) add(keyPartName(k), 'key', k);
  for (const r of registryParts) add(registryPartName(r.baseKeyId), 'registry', r);
  if (auditPart) add(AUDIT_PART_NAME, 'audit', auditPart);

  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT,
    createdAt: now().toISOString(),
    createdBy: options.actor ?? 'unknown',
    source: { backend: backend.type, instanceId: backend.instanceId, method: capability?.method ?? 'none' },
    signer,
    parts: listed,
    ineligible,
  };
  const manifestText = canonicalJson(manifest);
  const signature = await backend.sign(signerKeyId, Buffer.from(manifestText), { purpose: 'backup-manifest' });
  const bundle: BundleFile = { format: BUNDLE_FORMAT, manifest: manifestText, signature: b64(signature), parts };
  const text = JSON.stringify(bundle, null, 1) + '\n';
  progress({ phase: 'write', done: 0, total: 1 });
  await writeFileAtomic(file, text);
  progress({ phase: 'write', done: 1, total: 1 });
  return {
    file,
    bytes: Buffer.byteLength(text),
    sha256: sha256Hex(text),
    signer,
    keys: keyParts.map((k) => ({ part: keyPartName(k), id: k.id, method: k.method, fingerprint: k.fingerprint })),
    ineligible,
    logicalKeys: registryParts.map((r) => r.baseKeyId),
    ...(auditPart ? { audit: auditPart.head } : {}),
    notes,
  };
}

/**
 * The audit head and a signed checkpoint at exactly that head. Records appended by other
 * processes between the two reads move the head: a few tries, then the bundle refuses rather
 * than hold a head its checkpoint does not cover.
 */
async function auditHead(audit: AuditLog): Promise<AuditPart | undefined> {
  const signer = audit.checkpointSigner;
  if (!signer) return undefined;
  for (let attempt = 0; attempt < 5; attempt++) {
    const cp = await audit.checkpoint();
    const head = await audit.head();
    if (!cp || !cp.signature) return undefined;
    if (cp.size !== head.seq) continue;
    const spki = await signer.withKey?.(cp.keyId, cp.algorithm as KeyAlgorithm).publicKey() ?? (await signer.publicKey());
    return {
      logName: audit.logName,
      head,
      checkpoint: { logName: cp.logName, size: cp.size, headHash: cp.headHash, keyId: cp.keyId, algorithm: cp.algorithm, signature: cp.signature, time: cp.time },
      checkpointPublicKeySpki: b64(spki),
      checkpointFingerprint: fingerprintOf(spki),
    };
  }
  throw new HsmError('Conflict', 'backup: the audit log kept growing while its head was read; try again when it is quieter', { retryable: true });
}

export type { Row };
