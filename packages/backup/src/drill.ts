import { randomBytes } from 'node:crypto';
import { importKeys, isHsmError, verifyLocally, type HsmBackend } from '@olocus/hsm-core';
import { fingerprintOf, fromB64, keyPartName } from './format.js';
import { IMPORT_BATCH, exportedKeyOf, keptByProvider } from './restore.js';
import { verifyBundle, type VerifyBundleOptions } from './verify.js';

export interface DrillRow {
  key: string;
  id: string;
  version?: number;
  state?: string;
  result: 'ok' | 'failed' | 'kept-by-provider' | 'ineligible';
  reason: string;
}

export interface DrillResult {
  ok: boolean;
  rows: DrillRow[];
  bundle: { sha256: string; createdAt: string; signer: string };
}

export interface DrillOptions extends VerifyBundleOptions {
  /**
   * An empty scratch backend, already initialised, that can import the bundle's keys (a software
   * store in a temporary directory opened with the same passphrase, or a scratch PKCS#11 token
   * that holds the same backup KEK). The caller owns it (and closes and removes it).
   */
  scratch: HsmBackend;
  onProgress?: (progress: { done: number; total: number; key: string }) => void;
}

/**
 * Proves a bundle restorable: verifies it, imports every key into the scratch backend, signs a
 * fresh random message with each restored key and verifies that signature with the ORIGINAL public
 * key from the bundle (not with the restored key's own), and compares fingerprints. `ok` is false
 * when any key fails; keys the provider keeps and keys listed as ineligible are reported, not
 * counted as failures (the bundle says openly that it does not hold them).
 */
export async function drillBundle(file: string, options: DrillOptions): Promise<DrillResult> {
  const verified = await verifyBundle(file, options);
  const { scratch } = options;
  const states = new Map<string, string>();
  for (const r of verified.registry) for (const v of r.versions) states.set(String(v['key_id']), String(v['state']));
  const rows: DrillRow[] = [];
  const total = verified.keys.length;
  let done = 0;
  // imported a chunk at a time (one token look-up a chunk, see importKeys), then each key proved
  for (let start = 0; start < total; start += IMPORT_BATCH) {
    const chunk = verified.keys.slice(start, start + IMPORT_BATCH);
    const importFailed = new Map<number, string>();
    const toImport = chunk.flatMap((k, i) => (keptByProvider(k) ? [] : [i]));
    if (!scratch.backup) {
      for (const i of toImport) importFailed.set(i, `the scratch backend (${scratch.type}) cannot import keys`);
    } else {
      // a key that fails is reported and the rest of the chunk is still imported
      for (let from = 0; from < toImport.length; ) {
        const { imported, failed } = await importKeys(scratch.backup, toImport.slice(from).map((i) => exportedKeyOf(chunk[i]!)));
        from += imported.length;
        if (!failed) break;
        importFailed.set(toImport[from]!, `${failed.error.code}: ${failed.error.message}`);
        from++;
      }
    }
    for (const [i, k] of chunk.entries()) {
      const key = keyPartName(k);
      const base = { key, id: k.id, ...(k.version !== undefined ? { version: k.version } : {}), ...(states.has(k.id) ? { state: states.get(k.id)! } : {}) };
      done++;
      if (keptByProvider(k)) {
        rows.push({ ...base, result: 'kept-by-provider', reason: `${k.method}: the provider keeps the key; nothing to restore` });
        continue;
      }
      if (importFailed.has(i)) {
        rows.push({ ...base, result: 'failed', reason: importFailed.get(i)! });
        options.onProgress?.({ done, total, key });
        continue;
      }
      try {
        const original = fromB64(k.publicKeySpki);
        const restored = (await scratch.getPublicKey(k.id)).spki;
        const message = randomBytes(32);
        const signature = await scratch.sign(k.id, message, { purpose: 'backup-drill' });
        if (!verifyLocally(k.algorithm, original, message, signature)) {
          rows.push({ ...base, result: 'failed', reason: 'the restored key signs, but the signature does not verify with the original public key' });
        } else if (fingerprintOf(restored) !== k.fingerprint) {
          rows.push({ ...base, result: 'failed', reason: `restored fingerprint ${fingerprintOf(restored)} is not the original ${k.fingerprint}` });
        } else {
          rows.push({ ...base, result: 'ok', reason: `signed; verified with the original public key ${k.fingerprint}` });
        }
      } catch (error) {
        const code = isHsmError(error) ? `${error.code}: ` : '';
        rows.push({ ...base, result: 'failed', reason: `${code}${(error as Error).message}` });
      }
      options.onProgress?.({ done, total, key });
    }
  }
  for (const i of verified.manifest.ineligible) rows.push({ key: `key ${i.id}`, id: i.id, result: 'ineligible', reason: i.reason });
  return {
    ok: rows.every((r) => r.result !== 'failed'),
    rows,
    bundle: { sha256: verified.sha256, createdAt: verified.manifest.createdAt, signer: verified.manifest.signer.fingerprint },
  };
}
