import { readFile } from 'node:fs/promises';
import { HsmError, isKeyAlgorithm, publicKeyObject, verifyLocally, type KeyAlgorithm } from '@olocus/hsm-core';
import { checkpointBody } from '@olocus/hsm-compliance';
import { KEY_STATES } from '@olocus/hsm-rotation';
import {
  AUDIT_PART_NAME,
  BUNDLE_FORMAT,
  bundleError,
  fingerprintOf,
  fromB64,
  keyPartName,
  registryPartName,
  sha256Hex,
  type AuditPart,
  type BundleFile,
  type BundleManifest,
  type KeyPart,
  type RegistryPart,
} from './format.js';

export interface VerifyBundleOptions {
  /**
   * The installation's backup signers, as `sha256:<hex>` SPKI fingerprints. A bundle signed by any
   * other key is refused even when its signature is valid: anyone can sign a manifest with a key of
   * their own. `'any'` checks the signature and the content but trusts whoever signed (inspection
   * only; `trusted` is then false in the result).
   */
  trustedSigners: readonly string[] | 'any';
}

export interface VerifiedBundle {
  manifest: BundleManifest;
  keys: KeyPart[];
  registry: RegistryPart[];
  audit?: AuditPart;
  /** SHA-256 (hex) of the file. */
  sha256: string;
  bytes: number;
  /** The signer is one of `trustedSigners`. */
  trusted: boolean;
}

const BLOB_METHODS = new Set(['wrapped', 'sealed-file', 'provider-blob']);
const METHODS = new Set(['wrapped', 'sealed-file', 'provider-blob', 'provider-backup', 'reference-only']);

function parseJson<T>(text: string, part: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw bundleError(part, `not valid JSON (${(error as Error).message})`, error);
  }
}

/** Reads and verifies a bundle file. Throws IntegrityError naming the part that fails. */
export async function verifyBundle(file: string, options: VerifyBundleOptions): Promise<VerifiedBundle> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // not a bundle that fails verification: there is no bundle to judge
    throw new HsmError(code === 'ENOENT' ? 'InvalidArgument' : 'DeviceUnavailable', `backup bundle: cannot read ${file} (${code ?? (error as Error).message})`, { cause: error, details: { field: 'file' } });
  }
  return verifyBundleText(text, options);
}

export function verifyBundleText(text: string, options: VerifyBundleOptions): VerifiedBundle {
  if (options?.trustedSigners !== 'any' && !Array.isArray(options?.trustedSigners)) {
    throw new HsmError('InvalidArgument', "verifyBundle: options.trustedSigners must be the list of trusted signer fingerprints, or 'any'", { details: { field: 'trustedSigners' } });
  }
  const outer = parseJson<BundleFile>(text, 'file');
  if (!outer || typeof outer !== 'object' || outer.format !== BUNDLE_FORMAT) {
    throw bundleError('file', `not an ${BUNDLE_FORMAT} bundle (format ${JSON.stringify((outer as { format?: unknown } | null)?.format ?? null)})`);
  }
  if (typeof outer.manifest !== 'string' || typeof outer.signature !== 'string' || !outer.parts || typeof outer.parts !== 'object') {
    throw bundleError('file', 'manifest, signature or parts missing (an incomplete file)');
  }
  const manifest = parseJson<BundleManifest>(outer.manifest, 'manifest');
  if (manifest.format !== BUNDLE_FORMAT) throw bundleError('manifest', `format ${JSON.stringify(manifest.format)} is not ${BUNDLE_FORMAT}`);
  const signer = manifest.signer;
  if (!signer || typeof signer.publicKeySpki !== 'string' || !isKeyAlgorithm(signer.algorithm)) throw bundleError('manifest', 'the signer is missing or malformed');
  const signerSpki = fromB64(signer.publicKeySpki);
  if (fingerprintOf(signerSpki) !== signer.fingerprint) throw bundleError('manifest', `the signer's fingerprint ${signer.fingerprint} is not that of its public key`);
  let signatureOk = false;
  try {
    signatureOk = verifyLocally(signer.algorithm, signerSpki, Buffer.from(outer.manifest), fromB64(outer.signature));
  } catch {
    signatureOk = false;
  }
  if (!signatureOk) throw bundleError('manifest', `the signature does not verify with the signer's key (${signer.keyId}, ${signer.fingerprint})`);
  const trusted = options.trustedSigners !== 'any' && options.trustedSigners.includes(signer.fingerprint);
  if (options.trustedSigners !== 'any' && !trusted) {
    throw bundleError('manifest', `signed by ${signer.keyId} (${signer.fingerprint}), which is not this installation's backup signer (${options.trustedSigners.join(', ') || 'none known'})`);
  }

  // Every listed part present with its hash; no unlisted part.
  const seen = new Set<string>();
  for (const p of manifest.parts) {
    if (seen.has(p.name)) throw bundleError('manifest', `part ${p.name} is listed twice`);
    seen.add(p.name);
    const body = outer.parts[p.name];
    if (typeof body !== 'string') throw bundleError(p.name, 'listed in the manifest but missing from the file');
    if (sha256Hex(body) !== p.sha256) throw bundleError(p.name, 'its SHA-256 is not the one the manifest lists (the part was changed)');
  }
  for (const name of Object.keys(outer.parts)) if (!seen.has(name)) throw bundleError(name, 'present in the file but not listed in the signed manifest');

  const keys: KeyPart[] = [];
  const registry: RegistryPart[] = [];
  let audit: AuditPart | undefined;
  for (const p of manifest.parts) {
    const body = outer.parts[p.name]!;
    if (p.kind === 'key') keys.push(checkKey(p.name, parseJson<KeyPart>(body, p.name)));
    else if (p.kind === 'registry') registry.push(parseJson<RegistryPart>(body, p.name));
    else if (p.kind === 'audit') {
      if (p.name !== AUDIT_PART_NAME) throw bundleError(p.name, 'an audit part must be named "audit head"');
      audit = checkAudit(parseJson<AuditPart>(body, p.name));
    } else throw bundleError(p.name, `unknown part kind ${JSON.stringify(p.kind)}`);
  }
  const keyByName = new Map(keys.map((k) => [keyPartName(k), k]));
  const ineligible = new Set((manifest.ineligible ?? []).map((i) => i.id));
  const bases = new Set<string>();
  for (const r of registry) {
    checkRegistry(r, keyByName, ineligible);
    bases.add(r.baseKeyId);
  }
  for (const k of keys) {
    if (k.baseKeyId !== undefined && !bases.has(k.baseKeyId)) throw bundleError(keyPartName(k), `a version of logical key ${k.baseKeyId}, whose registry part is not in the bundle`);
  }
  return { manifest, keys, registry, ...(audit ? { audit } : {}), sha256: sha256Hex(text), bytes: Buffer.byteLength(text), trusted };
}

function checkKey(name: string, k: KeyPart): KeyPart {
  if (!k || typeof k.id !== 'string' || typeof k.publicKeySpki !== 'string') throw bundleError(name, 'id or public key missing');
  if (keyPartName(k) !== name) throw bundleError(name, `holds key ${keyPartName(k)}, not the one its name says`);
  if (!METHODS.has(k.method)) throw bundleError(name, `unknown backup method ${JSON.stringify(k.method)}`);
  if (!isKeyAlgorithm(k.algorithm)) throw bundleError(name, `unknown algorithm ${JSON.stringify(k.algorithm)}`);
  const spki = fromB64(k.publicKeySpki);
  if (fingerprintOf(spki) !== k.fingerprint) throw bundleError(name, `fingerprint ${k.fingerprint} is not that of the public key it holds`);
  try {
    publicKeyObject(spki);
  } catch (error) {
    throw bundleError(name, 'the public key is not a valid SubjectPublicKeyInfo', error);
  }
  if (BLOB_METHODS.has(k.method) && (typeof k.blob !== 'string' || k.blob.length === 0)) throw bundleError(name, `method ${k.method} but no key blob`);
  if (!k.parameters || typeof k.parameters !== 'object') throw bundleError(name, 'parameters missing');
  return k;
}

function rowName(baseKeyId: string, version: unknown): string {
  return `registry row ${baseKeyId} v${String(version)}`;
}

function checkRegistry(r: RegistryPart, keys: Map<string, KeyPart>, ineligible: Set<string>): void {
  const name = registryPartName(r.baseKeyId);
  if (!r.logicalKey || r.logicalKey['base_key_id'] !== r.baseKeyId) throw bundleError(`registry row ${r.baseKeyId}`, 'the logical key row is missing or names another key');
  if (!Array.isArray(r.versions) || !Array.isArray(r.history)) throw bundleError(name, 'versions or history missing');
  let active: number | undefined;
  const versions = new Set<number>();
  for (const v of r.versions) {
    const where = rowName(r.baseKeyId, v['version']);
    const n = Number(v['version']);
    if (!Number.isInteger(n) || n < 1) throw bundleError(where, 'version is not a positive integer');
    if (versions.has(n)) throw bundleError(where, 'the version appears twice');
    versions.add(n);
    if (v['base_key_id'] !== r.baseKeyId) throw bundleError(where, `belongs to ${String(v['base_key_id'])}`);
    if (!(KEY_STATES as readonly string[]).includes(String(v['state']))) throw bundleError(where, `unknown state ${JSON.stringify(v['state'])}`);
    if (v['state'] === 'Active') {
      if (active !== undefined) throw bundleError(where, `a second Active version (v${active} is Active too)`);
      active = n;
    }
    if (n > Number(r.logicalKey['last_version'])) throw bundleError(where, `newer than the logical key's last version ${String(r.logicalKey['last_version'])}`);
    if (v['state'] === 'Destroyed') continue;
    const key = keys.get(`key ${r.baseKeyId} v${n}`);
    const keyId = String(v['key_id']);
    if (!key) {
      if (ineligible.has(keyId)) continue;
      throw bundleError(where, `its key (${keyId}) is not in the bundle and not listed as ineligible`);
    }
    if (key.id !== keyId) throw bundleError(where, `names key ${keyId} but the bundle's key part holds ${key.id}`);
    if (key.algorithm !== v['algorithm']) throw bundleError(where, `algorithm ${String(v['algorithm'])} but its key is ${key.algorithm}`);
  }
  for (const h of r.history) {
    if (!versions.has(Number(h['version']))) throw bundleError(`registry row ${r.baseKeyId} history`, `a state change of v${String(h['version'])}, which is not in the registry part`);
  }
}

function checkAudit(a: AuditPart): AuditPart {
  const where = AUDIT_PART_NAME;
  if (!a || !a.head || !a.checkpoint) throw bundleError(where, 'head or checkpoint missing');
  const cp = a.checkpoint;
  if (cp.logName !== a.logName) throw bundleError(where, `the checkpoint is of log ${cp.logName}, not ${a.logName}`);
  if (cp.size !== a.head.seq || cp.headHash !== a.head.hash) {
    throw bundleError(where, `the head (record ${a.head.seq}, ${a.head.hash}) is not the checkpoint's chain position (size ${cp.size}, ${cp.headHash})`);
  }
  const spki = fromB64(a.checkpointPublicKeySpki);
  if (fingerprintOf(spki) !== a.checkpointFingerprint) throw bundleError(where, 'the checkpoint key fingerprint is not that of its public key');
  let ok = false;
  try {
    ok = isKeyAlgorithm(cp.algorithm) && verifyLocally(cp.algorithm as KeyAlgorithm, spki, Buffer.from(checkpointBody(cp.logName, cp.size, cp.headHash)), fromB64(cp.signature));
  } catch {
    ok = false;
  }
  if (!ok) throw bundleError(where, `the checkpoint signature does not verify with ${cp.keyId} (${a.checkpointFingerprint})`);
  return a;
}
