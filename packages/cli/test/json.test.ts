import { existsSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, cli, tempDir, TEST_PASSPHRASE, testEnv } from './helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup?.());

async function json<T = Record<string, unknown>>(args: string[], expectedCode = 0): Promise<T> {
  const r = await cli([...args, '--json'], { cwd: dir });
  expect(r.code, r.stderr).toBe(expectedCode);
  return JSON.parse(r.stdout) as T;
}

describe('--json on every command', () => {
  it('init (passphrase from OLOCUS_HSM_PASSPHRASE, referenced, never written; config 0600)', async () => {
    const r = await cli(['init', '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { config: string; backend: { type: string; options: Record<string, unknown> } };
    expect(out.config).toBe(join(dir, '.olocus', 'config.json'));
    expect(out.backend).toEqual({ type: 'software', options: { directory: 'keys', passphrase: { env: 'OLOCUS_HSM_PASSPHRASE' } } });
    // init also writes the rotation and audit sections (key registry next to the config, emergency rotation off).
    expect(JSON.parse(await readFile(out.config, 'utf8'))).toEqual({ backend: out.backend, rotation: { storage: { kind: 'sqlite', path: 'rotation.db' }, policy: { allowEmergencyRotation: false } }, audit: { storage: { kind: 'sqlite', path: 'audit.db' }, failClosed: true, retention: { days: 365, hotDays: 90 }, checkpoint: { everyRecords: 1000, intervalSeconds: 60, keyId: 'olocus-audit-checkpoint' } } });
    expect(statSync(out.config).mode & 0o777).toBe(0o600);
    expect(existsSync(join(dir, '.olocus', 'passphrase'))).toBe(false);
    expect(r.stderr).not.toContain(TEST_PASSPHRASE);
  });

  it('keys create / list / show / export-public / destroy', async () => {
    const created = await json<{ key: { id: string; algorithm: string; ref: string; createdAt: string } }>(['keys', 'create', '--id', 'j1', '--algorithm', 'ECDSA_P256']);
    expect(created.key).toMatchObject({ id: 'j1', algorithm: 'ECDSA_P256' });
    expect(Number.isNaN(Date.parse(created.key.createdAt))).toBe(false);
    // A plain backend key (not a logical key): `keys destroy` below destroys it at once.
    await json(['keys', 'create', '--id', 'other-1', '--algorithm', 'Ed25519', '--no-rotation']);

    const all = await json<{ keys: { id: string }[] }>(['keys', 'list']);
    // The audit log's checkpoint key (created on first use) lives in the backend beside the application's keys.
    expect(all.keys.map((k) => k.id).sort()).toEqual(['j1', 'olocus-audit-checkpoint', 'other-1']);
    const some = await json<{ keys: { id: string }[] }>(['keys', 'list', '--prefix', 'oth']);
    expect(some.keys.map((k) => k.id)).toEqual(['other-1']);

    const shown = await json<{ key: { id: string; publicKeyFingerprint: string } }>(['keys', 'show', '--id', 'j1']);
    expect(shown.key.id).toBe('j1');
    expect(shown.key.publicKeyFingerprint).toMatch(/^SHA256:/);

    const pem = await json<{ publicKey: string }>(['keys', 'export-public', '--id', 'j1', '--format', 'pem']);
    expect(pem.publicKey).toContain('BEGIN PUBLIC KEY');
    const der = await json<{ publicKey: string }>(['keys', 'export-public', '--id', 'j1', '--format', 'der']);
    expect(Buffer.from(der.publicKey, 'base64')[0]).toBe(0x30);
    const jwk = await json<{ publicKey: { kty: string; alg: string } }>(['keys', 'export-public', '--id', 'j1', '--format', 'jwk']);
    expect(jwk.publicKey).toMatchObject({ kty: 'EC', alg: 'ES256' });
    const toFile = await json<{ out: string }>(['keys', 'export-public', '--id', 'j1', '--format', 'pem', '--out', 'j1.pem']);
    expect(toFile.out).toBe(join(dir, 'j1.pem'));
    expect(await readFile(toFile.out, 'utf8')).toBe(pem.publicKey);

    expect(await json(['keys', 'destroy', '--id', 'other-1'])).toEqual({ destroyed: 'other-1' });
    expect((await json<{ keys: { id: string }[] }>(['keys', 'list'])).keys.map((k) => k.id).sort()).toEqual(['j1', 'olocus-audit-checkpoint']);
  });

  it('sign and verify', async () => {
    await writeFile(join(dir, 'm'), 'json message');
    const signed = await json<{ signature: string; signatureFormat: string; algorithm: string; out?: string }>(['sign', '--key', 'j1', '--in', 'm', '--out', '-']);
    expect(signed).toMatchObject({ algorithm: 'ECDSA_P256', signatureFormat: 'der' });
    expect(signed.out).toBeUndefined();
    await writeFile(join(dir, 'm.sig'), Buffer.from(signed.signature, 'base64'));
    const toFile = await json<{ out: string }>(['sign', '--key', 'j1', '--in', 'm', '--out', 'm2.sig']);
    expect(existsSync(toFile.out)).toBe(true);
    expect(await json(['verify', '--key', 'j1', '--in', 'm', '--signature', 'm.sig'])).toMatchObject({ valid: true, key: 'j1' });
    await writeFile(join(dir, 'm-bad'), 'json message?');
    expect(await json(['verify', '--key', 'j1', '--in', 'm-bad', '--signature', 'm.sig'], 1)).toMatchObject({ valid: false });
  });

  it('info and health', async () => {
    const info = await json<{ info: { backend: string }; capabilities: { algorithms: string[] }; fips: { standard: string } }>(['info']);
    expect(info.info.backend).toBe('software');
    expect(info.capabilities.algorithms).toContain('Ed25519');
    expect(info.fips.standard).toBe('none');
    const health = await json<{ health: { status: string; healthy: boolean; checks: { name: string }[] } }>(['health']);
    expect(health.health).toMatchObject({ status: 'Healthy', healthy: true });
    expect(health.health.checks.map((c) => c.name)).toEqual(['connectivity', 'performance', 'capacity', 'security', 'fips']);
  });

  it('bench (short run, key destroyed afterwards)', async () => {
    const r = await cli(['bench', '--algorithm', 'Ed25519', '--concurrency', '1,4', '--duration', '0.5', '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { algorithm: string; key: string; levels: { concurrency: number; operations: number; signsPerSecond: number; latencyMs: { p50: number; p99: number }; eventLoopDelayP99Ms: number; errors: number }[] };
    expect(out.algorithm).toBe('Ed25519');
    expect(out.key).toBe('olocus-bench-Ed25519');
    expect(out.levels.map((l) => l.concurrency)).toEqual([1, 4]);
    for (const l of out.levels) {
      expect(l.operations).toBeGreaterThan(0);
      expect(l.errors).toBe(0);
      expect(l.latencyMs.p99).toBeGreaterThanOrEqual(l.latencyMs.p50);
      expect(typeof l.eventLoopDelayP99Ms).toBe('number');
    }
    // Not a TTY: progress lines on stderr.
    expect(r.stderr).toContain('c=4');
    const keys = await json<{ keys: { id: string }[] }>(['keys', 'list']);
    expect(keys.keys.map((k) => k.id)).not.toContain('olocus-bench-Ed25519');
  });

  it('bench --keep-key reuses and keeps the key', async () => {
    const args = ['bench', '--algorithm', 'ECDSA_P256', '--concurrency', '2', '--duration', '0.3', '--keep-key'];
    const first = await json<{ keyReused: boolean }>(args);
    expect(first.keyReused).toBe(false);
    const second = await json<{ keyReused: boolean; keyKept: boolean }>(args);
    expect(second).toMatchObject({ keyReused: true, keyKept: true });
    await json(['keys', 'destroy', '--id', 'olocus-bench-ECDSA_P256']);
  });
});

describe('config location', () => {
  it('a command with no config creates nothing and says to run init', async () => {
    const { dir: fresh, cleanup: done } = await tempDir();
    try {
      const r = await cli(['keys', 'list', '--json'], { cwd: fresh, env: cleanEnv() });
      expect(r.code).toBe(2);
      expect((JSON.parse(r.stdout) as { error: { code: string; message: string } }).error).toMatchObject({ code: 'ConfigNotFound', message: expect.stringContaining('olocus-hsm init') });
      expect(existsSync(join(fresh, '.olocus'))).toBe(false);
    } finally {
      await done();
    }
  });

  it('OLOCUS_HSM_CONFIG points at the config; relative paths resolve against its folder', async () => {
    const { dir: other, cleanup: done } = await tempDir();
    try {
      const env = testEnv({ OLOCUS_HSM_CONFIG: join(dir, '.olocus', 'config.json') });
      const r = await cli(['keys', 'list', '--json'], { cwd: other, env });
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { keys: { id: string }[] }).keys.map((k) => k.id)).toContain('j1');
      expect(existsSync(join(other, '.olocus'))).toBe(false);
    } finally {
      await done();
    }
  });

  it('init with OLOCUS_HSM_PASSPHRASE or --passphrase-file references it instead of writing a passphrase', async () => {
    const byEnv = await cli(['init', '--dir', 'by-env', '--json'], { cwd: dir, env: cleanEnv({ OLOCUS_HSM_PASSPHRASE: 'env-passphrase-123' }) });
    expect(byEnv.code, byEnv.stderr).toBe(0);
    expect((JSON.parse(byEnv.stdout) as { backend: { options: { passphrase: unknown } } }).backend.options.passphrase).toEqual({ env: 'OLOCUS_HSM_PASSPHRASE' });
    expect(existsSync(join(dir, 'by-env', 'passphrase'))).toBe(false);

    await writeFile(join(dir, 'pp.txt'), 'file-passphrase-456\n');
    const byFile = await cli(['--passphrase-file', 'pp.txt', 'init', '--dir', 'by-file', '--json'], { cwd: dir, env: cleanEnv() });
    expect(byFile.code, byFile.stderr).toBe(0);
    expect((JSON.parse(byFile.stdout) as { backend: { options: { passphrase: unknown } } }).backend.options.passphrase).toEqual({ file: join(dir, 'pp.txt') });
    const list = await cli(['--config', 'by-file/config.json', 'keys', 'list', '--json'], { cwd: dir, env: cleanEnv() });
    expect(list.code, list.stderr).toBe(0);
  });

  it('init --force overwrites the config; the keys stay readable under the same passphrase', async () => {
    const r = await cli(['init', '--force', '--json'], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect((await json<{ keys: { id: string }[] }>(['keys', 'list'])).keys.map((k) => k.id)).toContain('j1');
  });
});

describe('basics', () => {
  it('--version prints the package version; --help lists the commands', async () => {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    const v = await cli(['--version'], { cwd: dir });
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toBe(pkg.version);
    const h = await cli(['--help'], { cwd: dir });
    expect(h.code).toBe(0);
    for (const c of ['init', 'keys', 'sign', 'verify', 'demo', 'info', 'health', 'bench']) expect(h.stdout).toContain(c);
  });
});
