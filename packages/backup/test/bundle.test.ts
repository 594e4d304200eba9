import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HsmError, encodeSignature, exportPublicKey, type HsmBackend } from '@olocus/hsm-core';
import { checkpointSignerFromBackend, openAuditLog, type AuditLog } from '@olocus/hsm-compliance';
import { openRotation, type RotationContext } from '@olocus/hsm-rotation';
import { BUNDLE_FORMAT, bundleErrorPart, createBundle, drillBundle, restoreBundle, verifyBundle, type BundleFile, type BundleManifest } from '../src/index.js';
import { canonicalJson, fingerprintOf, sha256Hex } from '../src/format.js';
import { SealedStandInBackend } from './sealed-backend.js';

/**
 * The bundle end to end on a stand-in backend with a sealed-file export (see sealed-backend.ts):
 * a real SQLite key registry, a real audit log with signed checkpoints, OpenSSL as the checker.
 */

const SECRET = 'stand-in store secret';
const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'olocus-backup-'));
  dirs.push(d);
  return d;
}

function requireOpenssl(): void {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    throw new Error('openssl is needed as the independent checker: apt-get install -y openssl');
  }
}

interface Installation {
  backend: SealedStandInBackend;
  rot: RotationContext;
  audit: AuditLog;
  dir: string;
  close(): Promise<void>;
}

async function install(name: string, backend = new SealedStandInBackend(name, SECRET)): Promise<Installation> {
  const dir = tempDir();
  const rot = await openRotation({ storage: { kind: 'sqlite', path: join(dir, 'rotation.db') }, backend, startScheduler: false, reconcile: false });
  const audit = await openAuditLog({
    storage: { kind: 'sqlite', path: join(dir, 'audit.db') },
    logName: name,
    checkpoint: { signer: checkpointSignerFromBackend(backend, 'olocus-audit-checkpoint'), everyRecords: 1000, intervalMs: 0 },
  });
  return {
    backend,
    rot,
    audit,
    dir,
    close: async () => {
      await audit.close();
      await rot.close();
    },
  };
}

const ctx = { actor: 'alice', reason: 'test' };
let src: Installation;
let bundle: string;
let signer: string;
const publicPem = new Map<string, string>();

beforeAll(async () => {
  requireOpenssl();
  src = await install('source');
  const m = src.rot.manager;
  await m.createKey('ACME.sign', 'ECDSA_P256', { actor: 'alice' });
  await m.rotateKey('ACME.sign', ctx); // v1 Superseded, v2 Active
  await m.createKey('ACME.ed', 'Ed25519', { actor: 'alice' });
  await m.rotateKey('ACME.ed', ctx);
  await m.revokeKey('ACME.ed.v2', ctx); // v2 Revoked, v1 Superseded: no Active
  await m.createKey('ACME.rsa', 'RSA_2048', { actor: 'alice' });
  await src.backend.generateKeyPair({ id: 'plain-p384', algorithm: 'ECDSA_P384', backup: true });
  await src.backend.generateKeyPair({ id: 'locked', algorithm: 'ECDSA_P256', backup: false });
  await src.audit.append({ type: 'admin.action', actor: 'alice', outcome: 'success', details: { action: 'setup' } });
  for (const id of ['ACME.sign.v1', 'ACME.sign.v2', 'ACME.ed.v1', 'ACME.ed.v2', 'ACME.rsa.v1', 'plain-p384']) {
    publicPem.set(id, exportPublicKey(await src.backend.getPublicKey(id), 'pem') as string);
  }
  bundle = join(tempDir(), 'backup.olb');
  const created = await createBundle(bundle, { backend: src.backend, registry: src.rot.registry, audit: src.audit, actor: 'alice', exclude: ['olocus-audit-checkpoint'] });
  signer = created.signer.fingerprint;
});

afterAll(async () => {
  await src?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function readBundle(file = bundle): BundleFile {
  return JSON.parse(readFileSync(file, 'utf8')) as BundleFile;
}

/** Changes one character inside a part's stored text (the file stays valid JSON), as a flipped byte would. */
function tamper(part: 'manifest' | string, find: RegExp): string {
  const b = readBundle();
  const text = part === 'manifest' ? b.manifest : b.parts[part]!;
  const m = find.exec(text);
  if (!m) throw new Error(`nothing to tamper with in ${part}`);
  const at = m.index + m[0].length - 1;
  const c = text[at]!;
  const flipped = text.slice(0, at) + (c === 'A' ? 'B' : c === '1' ? '2' : 'A') + text.slice(at + 1);
  if (part === 'manifest') b.manifest = flipped;
  else b.parts[part] = flipped;
  const out = join(tempDir(), 'tampered.olb');
  writeFileSync(out, JSON.stringify(b));
  return out;
}

async function partOfError(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (error) {
    return bundleErrorPart(error) ?? `(no part) ${(error as Error).message}`;
  }
  return undefined;
}

describe('create and verify', () => {
  it('writes one signed file listing every part, and names the keys it could not back up', async () => {
    const b = readBundle();
    expect(b.format).toBe(BUNDLE_FORMAT);
    const manifest = JSON.parse(b.manifest) as BundleManifest;
    expect(manifest.parts.map((p) => p.name).sort()).toEqual(
      ['audit head', 'key ACME.ed v1', 'key ACME.ed v2', 'key ACME.rsa v1', 'key ACME.sign v1', 'key ACME.sign v2', 'key plain-p384', 'registry ACME.ed', 'registry ACME.rsa', 'registry ACME.sign'].sort(),
    );
    expect(manifest.ineligible).toEqual([{ id: 'locked', reason: expect.stringContaining('created without backup') }]);
    for (const p of manifest.parts) expect(sha256Hex(b.parts[p.name]!)).toBe(p.sha256);
    // no private key in clear: no PKCS#8 header anywhere, the blobs are sealed
    expect(readFileSync(bundle, 'utf8')).not.toMatch(/BEGIN PRIVATE KEY|MIG[HE]AgEAMB/);
    const verified = await verifyBundle(bundle, { trustedSigners: [signer] });
    expect(verified.trusted).toBe(true);
    expect(verified.audit?.head.seq).toBe(await src.audit.head().then((h) => h.seq));
    expect(verified.keys.find((k) => k.id === 'ACME.sign.v2')?.fingerprint).toBe(fingerprintOf((await src.backend.getPublicKey('ACME.sign.v2')).spki));
  });

  it('an authorize hook (dual control) that refuses one key stops the whole backup: no file is written', async () => {
    const out = join(tempDir(), 'refused.olb');
    const asked: string[] = [];
    const error = await createBundle(out, {
      backend: src.backend,
      registry: src.rot.registry,
      keys: ['ACME.sign', 'ACME.rsa'],
      authorize: async (key) => {
        asked.push(key.id);
        if (key.id === 'ACME.sign.v2') throw new HsmError('PermissionDenied', 'backup of ACME.sign needs 2 distinct approvers; it has 0');
      },
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'PermissionDenied' });
    expect(asked).toEqual(['ACME.rsa.v1', 'ACME.sign.v1', 'ACME.sign.v2']);
    expect(existsSync(out)).toBe(false);
  });

  it('refuses a bundle whose signer is not the installation\'s', async () => {
    expect(await partOfError(verifyBundle(bundle, { trustedSigners: ['sha256:' + '0'.repeat(64)] }))).toBe('manifest');
    expect(await partOfError(verifyBundle(bundle, { trustedSigners: [] }))).toBe('manifest');
  });

  it.each([
    ['manifest', 'manifest', /"createdBy":"a/],
    ['a wrapped key', 'key ACME.sign v2', /"blob":"[A-Za-z0-9+/]{20}/],
    ['a registry row', 'registry ACME.sign', /"state":"A/],
    ['the audit head', 'audit head', /"hash":"[0-9a-f]{10}/],
  ])('a byte changed in %s: verify and restore refuse, naming the part', async (_what, part, find) => {
    const file = tamper(part, find);
    expect(await partOfError(verifyBundle(file, { trustedSigners: [signer] }))).toBe(part);
    const target = await install(`tamper-${part.replace(/\W/g, '')}`);
    try {
      expect(await partOfError(restoreBundle(file, { trustedSigners: [signer], backend: target.backend, registry: target.rot.registry }))).toBe(part);
      expect((await target.rot.registry.listLogicalKeys()).keys).toEqual([]);
      expect((await target.backend.listKeys()).keys.filter((k) => k.id.startsWith('ACME'))).toEqual([]);
    } finally {
      await target.close();
    }
  });

  it('refuses an internally inconsistent bundle even when correctly signed (a second Active version)', async () => {
    const forger = new SealedStandInBackend('forger', SECRET);
    const b = readBundle();
    const reg = JSON.parse(b.parts['registry ACME.sign']!);
    for (const v of reg.versions) v.state = 'Active';
    b.parts['registry ACME.sign'] = canonicalJson(reg);
    const file = await resign(b, forger);
    const fp = JSON.parse(readBundle(file).manifest).signer.fingerprint as string;
    const part = await partOfError(verifyBundle(file, { trustedSigners: [fp] }));
    expect(part).toMatch(/^registry row ACME\.sign v2$/);
  });
});

/** Re-signs a bundle's manifest (part hashes recomputed) with a key of `forger`: what an attacker can do. */
async function resign(b: BundleFile, forger: HsmBackend): Promise<string> {
  const { ensureSigner } = await import('../src/index.js');
  const manifest = JSON.parse(b.manifest) as BundleManifest;
  manifest.signer = await ensureSigner(forger);
  for (const p of manifest.parts) p.sha256 = sha256Hex(b.parts[p.name]!);
  b.manifest = canonicalJson(manifest);
  b.signature = Buffer.from(await forger.sign(manifest.signer.keyId, Buffer.from(b.manifest))).toString('base64');
  const out = join(tempDir(), 'forged.olb');
  writeFileSync(out, JSON.stringify(b));
  return out;
}

describe('restore', () => {
  it('brings back every key and state into a fresh store and registry; restored keys sign and OpenSSL verifies with the public keys exported before the backup', async () => {
    const target = await install('restored', new SealedStandInBackend('restored', SECRET));
    try {
      const dry = await restoreBundle(bundle, { trustedSigners: [signer], backend: target.backend, registry: target.rot.registry, dryRun: true });
      expect(dry.keys.every((k) => k.action === 'would-import')).toBe(true);
      expect((await target.rot.registry.listLogicalKeys()).keys).toEqual([]);

      const result = await restoreBundle(bundle, { trustedSigners: [signer], backend: target.backend, registry: target.rot.registry });
      expect(result.keys.map((k) => k.action)).toEqual(Array(6).fill('imported'));
      const reg = target.rot.registry;
      const states = async (id: string) => (await reg.getKeyVersions(id)).map((v) => `v${v.version} ${v.state}`);
      expect(await states('ACME.sign')).toEqual(['v1 Superseded', 'v2 Active']);
      expect(await states('ACME.ed')).toEqual(['v1 Superseded', 'v2 Revoked']);
      expect(await states('ACME.rsa')).toEqual(['v1 Active']);
      expect((await reg.getHistory('ACME.ed')).map((h) => h.to)).toEqual((await src.rot.registry.getHistory('ACME.ed')).map((h) => h.to));

      const dir = tempDir();
      for (const [id, pem] of publicPem) {
        const key = await target.backend.getKey(id);
        const message = Buffer.from(`restored ${id}`);
        const raw = await target.backend.sign(id, message);
        const pemFile = join(dir, `${id}.pem`);
        const msgFile = join(dir, `${id}.msg`);
        const sigFile = join(dir, `${id}.sig`);
        writeFileSync(pemFile, pem);
        writeFileSync(msgFile, message);
        writeFileSync(sigFile, encodeSignature(key.algorithm, raw, 'der'));
        const args = key.algorithm === 'Ed25519' ? ['-rawin'] : ['-digest', key.algorithm === 'ECDSA_P384' ? 'sha384' : 'sha256', '-rawin'];
        const out = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', pemFile, ...args, '-in', msgFile, '-sigfile', sigFile], { encoding: 'utf8' });
        expect(out, id).toMatch(/Signature Verified Successfully/);
      }
      // the registry signs with the Active version only
      const resolved = await reg.resolveForSigning('ACME.sign');
      expect(resolved.version).toBe(2);
      await expect(reg.resolveForSigning('ACME.ed')).rejects.toMatchObject({ code: 'KeyNotFound' });

      // a second restore finds everything done
      const again = await restoreBundle(bundle, { trustedSigners: [signer], backend: target.backend, registry: target.rot.registry });
      expect(new Set(again.keys.map((k) => k.action))).toEqual(new Set(['already-present']));
      expect(new Set(again.registry.map((r) => r.action))).toEqual(new Set(['already-restored']));
    } finally {
      await target.close();
    }
  });

  it('refuses a restore that would make a second Active version, changing nothing', async () => {
    const target = await install('second-active');
    try {
      await target.rot.manager.createKey('ACME.sign', 'ECDSA_P256', { actor: 'bob' });
      const error = await restoreBundle(bundle, { trustedSigners: [signer], backend: target.backend, registry: target.rot.registry }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'Conflict', details: { reason: 'SecondActive', part: 'registry ACME.sign' } });
      expect((await target.rot.registry.listLogicalKeys()).keys.map((k) => k.baseKeyId)).toEqual(['ACME.sign']);
      await expect(target.backend.getKey('ACME.rsa.v1')).rejects.toMatchObject({ code: 'KeyNotFound' });
    } finally {
      await target.close();
    }
  });

  it('refuses a key id taken by a different key in the target', async () => {
    const target = await install('taken');
    try {
      await target.backend.generateKeyPair({ id: 'plain-p384', algorithm: 'ECDSA_P384' });
      const error = await restoreBundle(bundle, { trustedSigners: [signer], backend: target.backend, registry: target.rot.registry }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'KeyAlreadyExists', details: { part: 'key plain-p384' } });
      expect((await target.rot.registry.listLogicalKeys()).keys).toEqual([]);
    } finally {
      await target.close();
    }
  });
});

describe('drill', () => {
  it('restores into a scratch store, signs with every key and verifies with the original public keys', async () => {
    const scratch = new SealedStandInBackend('scratch', SECRET);
    const result = await drillBundle(bundle, { trustedSigners: [signer], scratch });
    expect(result.ok).toBe(true);
    expect(result.rows.filter((r) => r.result === 'ok').map((r) => r.key).sort()).toEqual(
      ['key ACME.ed v1', 'key ACME.ed v2', 'key ACME.rsa v1', 'key ACME.sign v1', 'key ACME.sign v2', 'key plain-p384'].sort(),
    );
    expect(result.rows.find((r) => r.id === 'locked')).toMatchObject({ result: 'ineligible' });
  });

  it('a key swapped in the bundle: verify refuses the forged signer; a drill that trusts it reports that key failed', async () => {
    const b = readBundle();
    // the sealed key of ACME.sign v2 replaced by ACME.rsa v1's, manifest re-signed by a forger
    const v2 = JSON.parse(b.parts['key ACME.sign v2']!);
    v2.blob = JSON.parse(b.parts['key ACME.rsa v1']!).blob;
    b.parts['key ACME.sign v2'] = canonicalJson(v2);
    const forger = new SealedStandInBackend('forger2', SECRET);
    const file = await resign(b, forger);
    expect(await partOfError(verifyBundle(file, { trustedSigners: [signer] }))).toBe('manifest');
    expect(await partOfError(drillBundle(file, { trustedSigners: [signer], scratch: new SealedStandInBackend('s2', SECRET) }))).toBe('manifest');
    const forgedSigner = JSON.parse(readBundle(file).manifest).signer.fingerprint as string;
    const result = await drillBundle(file, { trustedSigners: [forgedSigner], scratch: new SealedStandInBackend('s3', SECRET) });
    expect(result.ok).toBe(false);
    expect(result.rows.filter((r) => r.result === 'failed').map((r) => r.key)).toEqual(['key ACME.sign v2']);
  });
});
