import { createHash } from 'node:crypto';
import { HsmError, type KeyAlgorithm, type KeyBackupMethod, type KeyUsage } from '@olocus/hsm-core';

/** The bundle format this package writes and the only one it reads. */
export const BUNDLE_FORMAT = 'olocus-backup/1';

/** The backend key that signs bundle manifests, created on first use. */
export const DEFAULT_BACKUP_SIGNER_KEY_ID = 'olocus.backup-signer';

/**
 * The outer file. Every part (and the manifest) is kept as the exact JSON text that was hashed
 * (signed), not as a nested object: a reader hashes the bytes it was given, never a re-serialised
 * copy, so a changed byte inside a part is always found and named.
 */
export interface BundleFile {
  format: typeof BUNDLE_FORMAT;
  /** Canonical JSON text of `BundleManifest`. */
  manifest: string;
  /** Base64 of the signer's signature over the UTF-8 bytes of `manifest` (the library's raw format). */
  signature: string;
  /** Part name → canonical JSON text of its body. */
  parts: Record<string, string>;
}

export type PartKind = 'key' | 'registry' | 'audit';

export interface ManifestPart {
  name: string;
  kind: PartKind;
  /** SHA-256 (hex) of the UTF-8 bytes of the part's text. */
  sha256: string;
}

export interface BundleSigner {
  keyId: string;
  algorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo DER, base64. */
  publicKeySpki: string;
  /** `sha256:<hex>` of the SPKI. */
  fingerprint: string;
}

export interface BundleManifest {
  format: typeof BUNDLE_FORMAT;
  createdAt: string;
  createdBy: string;
  source: { backend: string; instanceId: string; method: KeyBackupMethod | 'none' };
  signer: BundleSigner;
  parts: ManifestPart[];
  /** Keys that were asked for but could not be exported, with the backend's reason. */
  ineligible: Array<{ id: string; reason: string }>;
}

/** One exported key version. */
export interface KeyPart {
  /** The key id in the backend. */
  id: string;
  baseKeyId?: string;
  version?: number;
  method: KeyBackupMethod;
  algorithm: KeyAlgorithm;
  usages: KeyUsage[];
  publicKeySpki: string;
  fingerprint: string;
  /** Base64 of the wrapped key / sealed file / provider blob; absent for reference-only and provider-backup. */
  blob?: string;
  parameters: Record<string, string>;
}

/** A registry row exactly as the rotation store holds it. */
export type Row = Record<string, string | number | boolean | null>;

/** One logical key of the rotation registry. */
export interface RegistryPart {
  baseKeyId: string;
  logicalKey: Row;
  versions: Row[];
  history: Row[];
}

export interface AuditPart {
  logName: string;
  head: { seq: number; hash: string };
  checkpoint: { logName: string; size: number; headHash: string; keyId: string; algorithm: string; signature: string; time: string };
  /** SPKI (base64) of the key that signed the checkpoint. */
  checkpointPublicKeySpki: string;
  checkpointFingerprint: string;
}

export function keyPartName(part: { id: string; baseKeyId?: string; version?: number }): string {
  return part.baseKeyId !== undefined && part.version !== undefined ? `key ${part.baseKeyId} v${part.version}` : `key ${part.id}`;
}

export function registryPartName(baseKeyId: string): string {
  return `registry ${baseKeyId}`;
}

export const AUDIT_PART_NAME = 'audit head';

/** JSON with object keys sorted at every level: one text per value, so its hash is stable. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** `sha256:<hex>` of a SubjectPublicKeyInfo: the same form as the audit log's key fingerprints. */
export function fingerprintOf(spki: Uint8Array): string {
  return 'sha256:' + sha256Hex(spki);
}

export function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export function fromB64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'base64'));
}

/**
 * A bundle that does not verify. `part` names where: `manifest`, `key ACME.sign v2`,
 * `registry row ACME.sign v2`, `audit head`, `file`.
 */
export function bundleError(part: string, message: string, cause?: unknown): HsmError {
  return new HsmError('IntegrityError', `backup bundle: ${part}: ${message}`, { details: { part }, ...(cause !== undefined ? { cause } : {}) });
}

/** The part an error from this package names, when it names one. */
export function bundleErrorPart(error: unknown): string | undefined {
  const part = (error as { details?: Record<string, unknown> } | undefined)?.details?.['part'];
  return typeof part === 'string' ? part : undefined;
}
