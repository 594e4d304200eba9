import { spawn } from 'node:child_process';
import { createHash, generateKeyPairSync, sign as nodeSign } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cli, lines, run, tempDir, testEnv, type RunResult } from './helpers.js';

/**
 * `backup create|verify|restore|drill` through the binary on the software backend (its
 * `sealed-file` export): keys made and rotated, one version revoked, backed up, the whole
 * installation deleted, a new one initialised with the same passphrase, restored; states kept,
 * restored keys sign and OpenSSL verifies with the public keys exported before the backup; each
 * part of the bundle tampered with; a forged signer; kill -9 during create and during restore.
 */

let dir: string;
let cleanup: () => Promise<void>;
const env = testEnv();
const at = (cwd: string) => ({
  run: (args: string[]) => cli(args, { cwd, env }),
  json: async <T = Record<string, unknown>>(args: string[], expected = 0): Promise<T> => {
    const r = await cli([...args, '--json'], { cwd, env });
    expect(r.code, r.stdout + r.stderr).toBe(expected);
    return JSON.parse(r.stdout) as T;
  },
});

interface Created {
  file: string;
  sha256: string;
  signer: { fingerprint: string };
  keys: Array<{ part: string; id: string }>;
  ineligible: Array<{ id: string; reason: string }>;
}

let src: ReturnType<typeof at>;
let bundle: string;
let signer: string;
const pems = new Map<string, string>();

function oneLineError(r: RunResult, code: string): string {
  expect(r.code, r.stdout + r.stderr).toBe(2);
  const errLines = lines(r.stderr);
  expect(errLines, r.stderr).toHaveLength(1);
  expect(errLines[0]).toMatch(new RegExp(`^olocus-hsm: ${code}: `));
  expect(r.stderr).not.toMatch(/\n\s+at /); // never a stack trace
  return errLines[0]!;
}

beforeAll(async () => {
  const probe = await run('openssl', ['version'], { cwd: '/' }).catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message }));
  if (probe.code !== 0) throw new Error(`openssl is needed for this test (apt-get install openssl): ${probe.stderr}`);
  ({ dir, cleanup } = await tempDir('olocus-cli-backup-'));
  await run('mkdir', ['-p', join(dir, 'src'), join(dir, 'new'), join(dir, 'out')], { cwd: dir });
  src = at(join(dir, 'src'));
  for (const args of [
    ['init'],
    ['keys', 'create', '--id', 'app', '--algorithm', 'ECDSA_P256'],
    ['keys', 'rotate', '--id', 'app'],
    ['keys', 'create', '--id', 'edk', '--algorithm', 'Ed25519'],
    ['keys', 'rotate', '--id', 'edk'],
    ['keys', 'revoke', '--id', 'edk', '--reason', 'left the team'],
    ['keys', 'create', '--id', 'plain', '--algorithm', 'ECDSA_P384', '--no-rotation'],
  ]) {
    const r = await src.run(args);
    expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  }
  for (const id of ['app.v1', 'app.v2', 'edk.v1', 'edk.v2', 'plain']) {
    const r = await src.run(['keys', 'export-public', '--id', id, '--format', 'pem']);
    expect(r.code, r.stderr).toBe(0);
    pems.set(id, r.stdout);
  }
  bundle = join(dir, 'out', 'backup.olb');
  const created = await src.json<Created>(['backup', 'create', '--out', bundle, '--all']);
  signer = created.signer.fingerprint;
  expect(created.keys.map((k) => k.part).sort()).toEqual(['key app v1', 'key app v2', 'key edk v1', 'key edk v2', 'key plain']);
});

afterAll(async () => {
  await cleanup?.();
});

describe('backup create and verify', () => {
  it('create prints the bundle and its signer; verify checks it; progress and errors go to stderr; usage errors name the flags', async () => {
    const human = await src.run(['backup', 'verify', bundle]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^valid: /);
    expect(human.stdout).toContain(signer);
    const v = await src.json<{ ok: boolean; keys: unknown[]; audit: { seq: number } }>(['backup', 'verify', bundle]);
    expect(v.ok).toBe(true);
    expect(v.keys).toHaveLength(5);
    expect(v.audit.seq).toBeGreaterThan(0);
    expect(oneLineError(await src.run(['backup', 'create', '--out', join(dir, 'x.olb')]), 'UsageError')).toContain('--keys');
    expect(oneLineError(await src.run(['backup', 'create', '--out', join(dir, 'x.olb'), '--all', '--keys', 'app']), 'UsageError')).toContain('not both');
    expect(oneLineError(await src.run(['backup', 'verify', bundle, '--signer', 'nope']), 'InvalidArgument')).toContain('--signer');
    expect(oneLineError(await src.run(['backup', 'verify', join(dir, 'missing.olb')]), 'FileNotFound')).toContain('missing.olb');
    // a file cut short (what a non-atomic writer killed half way would leave) is invalid, naming the file
    const cut = join(dir, 'out', 'cut.olb');
    await writeFile(cut, (await readFile(bundle)).subarray(0, 2000));
    const c = await src.json<{ ok: boolean; part: string }>(['backup', 'verify', cut], 1);
    expect(c).toMatchObject({ ok: false, part: 'file' });
    // the passphrase never appears in the bundle
    expect(await readFile(bundle, 'utf8')).not.toContain(env['OLOCUS_HSM_PASSPHRASE']!);
  });

  it('create and verify are audit records', async () => {
    expect((await src.run(['backup', 'verify', bundle])).code).toBe(0);
    const actions = await auditActions(src);
    expect(actions).toContain('admin.action backup.create');
    expect(actions).toContain('admin.action backup.verify');
  });
});

/** `type action` of every audit record of an installation. */
async function auditActions(inst: ReturnType<typeof at>): Promise<string[]> {
  const r = await inst.run(['audit', 'export', '--out', '-']);
  expect(r.code, r.stderr).toBe(0);
  return lines(r.stdout)
    .map((l) => JSON.parse(l) as { type: string; details?: { action?: string } })
    .map((x) => `${x.type} ${x.details?.action ?? ''}`.trim());
}

/** The bundle with one character changed inside a part (the file stays valid JSON), as a flipped byte would. */
async function tampered(part: string, find: RegExp): Promise<string> {
  const b = JSON.parse(await readFile(bundle, 'utf8')) as { manifest: string; parts: Record<string, string> };
  const text = part === 'manifest' ? b.manifest : b.parts[part]!;
  const m = find.exec(text);
  if (!m) throw new Error(`nothing to tamper with in ${part}`);
  const i = m.index + m[0].length - 1;
  const flipped = text.slice(0, i) + (text[i] === 'A' ? 'B' : 'A') + text.slice(i + 1);
  if (part === 'manifest') b.manifest = flipped;
  else b.parts[part] = flipped;
  const out = join(dir, 'out', `tampered-${part.replace(/\W+/g, '-')}.olb`);
  await writeFile(out, JSON.stringify(b));
  return out;
}

describe('tamper', () => {
  it.each([
    ['manifest', /"createdBy":"[a-z]/],
    ['key app v2', /"blob":"[A-Za-z0-9+/]{30}/],
    ['registry app', /"state":"[A-Z]/],
    ['audit head', /"hash":"[0-9a-f]{8}/],
  ])('a byte changed in %s: verify exits 1 and restore refuses, both naming it', async (part, find) => {
    const file = await tampered(part, find);
    const v = await src.json<{ ok: boolean; part: string }>(['backup', 'verify', file], 1);
    expect(v).toMatchObject({ ok: false, part });
    const human = await src.run(['backup', 'verify', file]);
    expect(human.code).toBe(1);
    expect(human.stdout).toContain(`INVALID: backup bundle: ${part}: `);
    const r = await src.run(['backup', 'restore', file, '--into', join(dir, 'src', '.olocus', 'config.json'), '--dry-run']);
    expect(oneLineError(r, 'IntegrityError')).toContain(`backup bundle: ${part}: `);
  });

  it('a bundle re-signed by another key is refused: the signer is not the installation\'s', async () => {
    const other = at(join(dir, 'other'));
    await run('mkdir', ['-p', join(dir, 'other')], { cwd: dir });
    expect((await other.run(['init'])).code).toBe(0);
    expect((await other.run(['keys', 'create', '--id', 'app', '--algorithm', 'ECDSA_P256'])).code).toBe(0);
    const forged = join(dir, 'out', 'forged.olb');
    expect((await other.run(['backup', 'create', '--out', forged, '--all'])).code).toBe(0);
    const v = await src.json<{ ok: boolean; part: string; message: string }>(['backup', 'verify', forged], 1);
    expect(v.part).toBe('manifest');
    expect(v.message).toContain("not this installation's backup signer");
  });
});

describe('restore', () => {
  let fresh: ReturnType<typeof at>;
  let into: string;

  it('after the whole installation is deleted: a new one restores every key and state; restored keys sign, OpenSSL verifies with the pre-backup public keys', async () => {
    await rm(join(dir, 'src', '.olocus'), { recursive: true, force: true });
    fresh = at(join(dir, 'new'));
    expect((await fresh.run(['init'])).code).toBe(0);
    into = join(dir, 'new', '.olocus', 'config.json');
    // without the source's pinned signer: the operator gives the fingerprint create printed
    expect(oneLineError(await fresh.run(['backup', 'restore', bundle, '--into', into]), 'InvalidArgument')).toContain('--signer');
    const dry = await fresh.json<{ dryRun: boolean; keys: Array<{ action: string }> }>(['backup', 'restore', bundle, '--into', into, '--signer', signer, '--dry-run']);
    expect(dry.keys.every((k) => k.action === 'would-import')).toBe(true);
    const done = await fresh.json<{ keys: Array<{ id: string; action: string; state?: string }> }>(['backup', 'restore', bundle, '--into', into, '--signer', signer]);
    expect(Object.fromEntries(done.keys.map((k) => [k.id, `${k.action} ${k.state ?? '-'}`]))).toEqual({
      'app.v1': 'imported Superseded',
      'app.v2': 'imported Active',
      'edk.v1': 'imported Superseded',
      'edk.v2': 'imported Revoked',
      plain: 'imported -',
    });
    const history = await fresh.json<{ versions: Array<{ version: number; state: string }> }>(['keys', 'history', '--id', 'edk']);
    expect(history.versions.map((v) => `v${v.version} ${v.state}`)).toEqual(['v1 Superseded', 'v2 Revoked']);
    // a revoked logical key does not sign
    await writeFile(join(dir, 'new', 'msg'), 'after the restore\n');
    expect((await fresh.run(['sign', '--key', 'edk', '--in', 'msg', '--out', 'x.sig'])).code).toBe(2);
    for (const [key, version, digest] of [
      ['app', 'app.v2', 'sha256'],
      ['plain', 'plain', 'sha384'],
    ] as const) {
      const s = await fresh.run(['sign', '--key', key, '--in', 'msg', '--out', `${key}.sig`]);
      expect(s.code, s.stderr).toBe(0);
      await writeFile(join(dir, 'new', `${version}.pem`), pems.get(version)!);
      const o = await run('openssl', ['dgst', `-${digest}`, '-verify', `${version}.pem`, '-signature', `${key}.sig`, 'msg'], { cwd: join(dir, 'new'), env });
      expect(o.stdout, o.stderr).toContain('Verified OK');
    }
    const again = await fresh.json<{ keys: Array<{ action: string }> }>(['backup', 'restore', bundle, '--into', into, '--signer', signer]);
    expect(new Set(again.keys.map((k) => k.action))).toEqual(new Set(['already-present']));
  });

  it('drill: every key restored in a scratch store signs and verifies with its original public key (table, exit 0)', async () => {
    const d = await fresh.run(['backup', 'drill', bundle, '--signer', signer]);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toMatch(/^KEY\s+VERSION\s+RESULT\s+REASON/);
    expect(d.stdout).toContain('drill passed: 5 key(s)');
    const j = await fresh.json<{ ok: boolean; rows: Array<{ result: string }> }>(['backup', 'drill', bundle, '--signer', signer]);
    expect(j.rows.map((r) => r.result)).toEqual(Array(5).fill('ok'));
    const actions = await auditActions(fresh);
    expect(actions).toContain('admin.action backup.restore');
    expect(actions.filter((a) => a === 'key.import')).toHaveLength(5);
    expect(actions).toContain('admin.action backup.drill');
  });

  it('a key swapped in the bundle and the manifest re-signed by a forger: verify refuses the signer; a drill that trusts it fails that key (exit 1)', async () => {
    const b = JSON.parse(await readFile(bundle, 'utf8')) as { manifest: string; signature: string; parts: Record<string, string> };
    const v2 = JSON.parse(b.parts['key app v2']!) as { blob: string };
    v2.blob = (JSON.parse(b.parts['key plain']!) as { blob: string }).blob;
    b.parts['key app v2'] = JSON.stringify(v2);
    const manifest = JSON.parse(b.manifest) as { signer: Record<string, string>; parts: Array<{ name: string; sha256: string }> };
    for (const p of manifest.parts) p.sha256 = createHash('sha256').update(b.parts[p.name]!).digest('hex');
    const forger = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = forger.publicKey.export({ format: 'der', type: 'spki' });
    const forged = `sha256:${createHash('sha256').update(spki).digest('hex')}`;
    manifest.signer = { keyId: 'olocus.backup-signer', algorithm: 'ECDSA_P256', publicKeySpki: spki.toString('base64'), fingerprint: forged };
    b.manifest = JSON.stringify(manifest);
    b.signature = nodeSign('sha256', Buffer.from(b.manifest), { key: forger.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64');
    const file = join(dir, 'out', 'swapped.olb');
    await writeFile(file, JSON.stringify(b));
    const v = await fresh.json<{ ok: boolean; part: string }>(['backup', 'verify', file], 1);
    expect(v).toMatchObject({ ok: false, part: 'manifest' });
    const d = await fresh.run(['backup', 'drill', file, '--signer', forged]);
    expect(d.code, d.stderr).toBe(1);
    expect(d.stdout).toMatch(/app\s+v2\s+failed/);
    expect(d.stdout).toContain('drill FAILED: 1 key(s)');
  });

  it('a restore that would make a second Active version is refused, nothing changed', async () => {
    const other = at(join(dir, 'second'));
    await run('mkdir', ['-p', join(dir, 'second')], { cwd: dir });
    expect((await other.run(['init'])).code).toBe(0);
    expect((await other.run(['keys', 'create', '--id', 'app', '--algorithm', 'ECDSA_P256'])).code).toBe(0);
    const r = await other.run(['backup', 'restore', bundle, '--into', join(dir, 'second', '.olocus', 'config.json'), '--signer', signer]);
    expect(oneLineError(r, 'Conflict')).toContain('second Active version');
    const list = await other.json<{ keys: Array<{ id: string }> }>(['keys', 'list']);
    expect(JSON.stringify(list)).not.toContain('edk');
  });
});

describe('backup schedule', () => {
  it('the restored installation backs up again on schedule: written when due, skipped when fresh, exit 1 and a backup.stale alert on stderr when too old', async () => {
    const inst = at(join(dir, 'new'));
    await run('mkdir', ['-p', join(dir, 'scheduled')], { cwd: dir });
    const first = await inst.json<{ created?: { file: string; keys: unknown[] }; freshness: { ok: boolean } }>(['backup', 'schedule', '--dir', join(dir, 'scheduled')]);
    expect(first.created?.keys).toHaveLength(5);
    expect(first.freshness.ok).toBe(true);
    const second = await inst.json<{ created?: unknown; skipped?: string }>(['backup', 'schedule', '--dir', join(dir, 'scheduled')]);
    expect(second.created).toBeUndefined();
    expect(second.skipped).toContain('younger than the interval');
    const stale = await inst.run(['backup', 'schedule', '--dir', join(dir, 'scheduled'), '--max-age', '1ms']);
    expect(stale.code, stale.stderr).toBe(1);
    expect(stale.stdout).toMatch(/^STALE: /m);
    expect(stale.stderr).toContain('"rule":"backup.stale"');
    expect(oneLineError(await inst.run(['backup', 'schedule', '--dir', join(dir, 'scheduled'), '--every', 'soon']), 'InvalidArgument')).toContain('--every');
  });
});

function spawnBin(args: string[], cwd: string) {
  return spawn(process.execPath, [BIN, ...args], { cwd, env, stdio: 'ignore' });
}

describe('kill -9', () => {
  it('during create: never a file at the final path that does not verify', async () => {
    const cwd = join(dir, 'new');
    const out = join(dir, 'out', 'killed.olb');
    let killedBefore = 0;
    for (let i = 0; i < 8; i++) {
      await rm(out, { force: true });
      const child = spawnBin(['backup', 'create', '--out', out, '--all'], cwd);
      // listened for from the start: a create that finishes before the kill has closed already
      // (a late listener never heard it, and the test hung until its timeout in CI)
      const closed = new Promise((r) => child.on('close', r));
      await new Promise((r) => setTimeout(r, 150 + i * 60));
      child.kill('SIGKILL');
      await closed;
      if (!existsSync(out)) {
        killedBefore++;
        continue;
      }
      const v = await cli(['backup', 'verify', out, '--json'], { cwd, env });
      expect(v.code, v.stdout).toBe(0);
    }
    // at least one kill landed before the rename (else this test proves nothing)
    expect(killedBefore).toBeGreaterThan(0);
    // leftovers are only temporary files, never named like the bundle
    expect(readdirSync(join(dir, 'out')).filter((f) => f.startsWith('killed.olb') && f !== 'killed.olb')).toEqual([]);
  });

  it('during restore: a second restore completes (or the first had finished)', async () => {
    for (let i = 0; i < 3; i++) {
      const name = `k${i}`;
      await run('mkdir', ['-p', join(dir, name)], { cwd: dir });
      const target = at(join(dir, name));
      expect((await target.run(['init'])).code).toBe(0);
      const into = join(dir, name, '.olocus', 'config.json');
      const child = spawnBin(['backup', 'restore', bundle, '--into', into, '--signer', signer], join(dir, name));
      const closed = new Promise((r) => child.on('close', r));
      await new Promise((r) => setTimeout(r, 400 + i * 250));
      child.kill('SIGKILL');
      await closed;
      const second = await target.json<{ keys: Array<{ id: string; action: string }> }>(['backup', 'restore', bundle, '--into', into, '--signer', signer]);
      expect(second.keys).toHaveLength(5);
      const history = await target.json<{ versions: Array<{ version: number; state: string }> }>(['keys', 'history', '--id', 'app']);
      expect(history.versions.map((v) => `v${v.version} ${v.state}`)).toEqual(['v1 Superseded', 'v2 Active']);
      const d = await target.run(['backup', 'drill', bundle, '--signer', signer]);
      expect(d.code, d.stdout + d.stderr).toBe(0);
    }
  });
});
