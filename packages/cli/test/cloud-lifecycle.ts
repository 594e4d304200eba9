import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { cli, cleanEnv, tempDir, type RunResult } from './helpers.js';
import { CLOUD_ENV_CLEARED, cloudEnv } from './cloud-emulators.js';

/**
 * The lifecycle every cloud backend passes through the binary: `init --backend <cloud>` → keys
 * create → keys show (the provider's reference) → sign → verify → keys rotate → verify
 * --signed-at of the old signature (and a tampered message fails) → sign with v2 → audit verify.
 */

/** The CLI child's environment for the cloud runs (see cloudEnv). */
export function cloudCliEnv(extra: Record<string, string> = {}): Record<string, string> {
  const base = cleanEnv(cloudEnv());
  for (const k of CLOUD_ENV_CLEARED) delete base[k];
  return { ...base, ...extra };
}

export const show = (r: RunResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

/**
 * `setup` is the init flags, or a backend section written as the config instead of running init
 * (for a test double init's flags cannot reach, e.g. the Azure fake's challenge resource).
 */
export async function lifecycle(setup: string[] | { backend: Record<string, unknown> }, refPattern: RegExp, extraEnv: Record<string, string> = {}): Promise<void> {
  const { dir, cleanup } = await tempDir('olocus-cli-cloud-');
  try {
    const run = (args: string[]) => cli(args, { cwd: dir, env: cloudCliEnv(extraEnv) });
    if (Array.isArray(setup)) {
      const init = await run(['init', ...setup, '--json']);
      expect(init.code, show(init)).toBe(0);
    } else {
      await mkdir(join(dir, '.olocus'), { mode: 0o700 });
      const rotation = { storage: { kind: 'sqlite', path: 'rotation.db' }, policy: { allowEmergencyRotation: false } };
      await writeFile(join(dir, '.olocus', 'config.json'), JSON.stringify({ backend: setup.backend, rotation }), { mode: 0o600 });
    }
    const config = JSON.parse(await readFile(join(dir, '.olocus', 'config.json'), 'utf8')) as { backend: { type: string; options: Record<string, unknown> } };
    // No credential of any kind in the config: the provider's default chain finds them.
    expect(JSON.stringify(config)).not.toMatch(/AKID|test-secret|password|credential/i);

    const created = await run(['keys', 'create', '--id', 'release', '--algorithm', 'ECDSA_P256', '--json']);
    expect(created.code, show(created)).toBe(0);
    const shown = await run(['keys', 'show', '--id', 'release', '--json']);
    expect(shown.code, show(shown)).toBe(0);
    expect((JSON.parse(shown.stdout) as { key: { ref: string } }).key.ref).toMatch(refPattern);
    const human = await run(['keys', 'show', '--id', 'release']);
    expect(human.stdout).toMatch(new RegExp(`^ref\\s+${refPattern.source.replace(/^\^/, '')}`, 'm'));

    await writeFile(join(dir, 'build.tar'), randomBytes(100_000));
    const signed = await run(['sign', '--key', 'release', '--in', 'build.tar', '--out', 'build.tar.sig', '--json']);
    expect(signed.code, show(signed)).toBe(0);
    const { signedAt, keyId } = JSON.parse(signed.stdout) as { signedAt: string; keyId: string };
    expect(keyId).toBe('release.v1');

    const verified = await run(['verify', '--key', 'release', '--in', 'build.tar', '--signature', 'build.tar.sig']);
    expect(verified.code, show(verified)).toBe(0);

    const rotated = await run(['keys', 'rotate', '--id', 'release', '--reason', 'quarterly']);
    expect(rotated.code, show(rotated)).toBe(0);
    const after = await run(['keys', 'show', '--id', 'release', '--json']);
    expect((JSON.parse(after.stdout) as { key: { keyId: string } }).key.keyId).toBe('release.v2');

    // The old signature still verifies, dated: only the version Active at signedAt is tried.
    const old = await run(['verify', '--key', 'release', '--in', 'build.tar', '--signature', 'build.tar.sig', '--signed-at', signedAt]);
    expect(old.code, show(old)).toBe(0);
    expect(old.stdout).toMatch(/version 1/);
    // ... and a tampered message does not.
    await writeFile(join(dir, 'other.tar'), randomBytes(100));
    const bad = await run(['verify', '--key', 'release', '--in', 'other.tar', '--signature', 'build.tar.sig', '--signed-at', signedAt]);
    expect(bad.code, show(bad)).toBe(1);

    const signed2 = await run(['sign', '--key', 'release', '--in', 'build.tar', '--out', 'v2.sig', '--json']);
    expect(signed2.code, show(signed2)).toBe(0);
    expect((JSON.parse(signed2.stdout) as { keyId: string }).keyId).toBe('release.v2');

    const audit = await run(['audit', 'verify', '--json']);
    expect(audit.code, show(audit)).toBe(0);
    const report = JSON.parse(audit.stdout) as { audit: { ok: boolean; records: number } };
    expect(report.audit.ok).toBe(true);
    expect(report.audit.records).toBeGreaterThan(5);
  } finally {
    await cleanup();
  }
}

