import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, cli, tempDir } from './helpers.js';

const ALGORITHMS = ['Ed25519', 'ECDSA_P256', 'ECDSA_P384', 'ECDSA_P521', 'RSA_2048', 'RSA_3072', 'RSA_4096', 'RSA_PSS_2048', 'RSA_PSS_3072', 'RSA_PSS_4096'];

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup?.());

describe('demo', () => {
  it('runs end to end in a fresh directory with no OLOCUS_* variable and prints a verified signature', async () => {
    const env = cleanEnv();
    expect(Object.keys(env).some((k) => k.startsWith('OLOCUS_'))).toBe(false);
    const result = await cli(['demo'], { cwd: dir, env });
    expect(result.code, result.stderr).toBe(0);
    for (const alg of ALGORITHMS) expect(result.stdout).toMatch(new RegExp(`^${alg}\\s+demo-\\S+\\s.*\\syes\\s+yes\\s`, 'm'));
    expect(result.stdout).toContain('demo passed');
    // The rotation steps, at the end.
    expect(result.stdout).toMatch(/^ok {3}rotate a logical key; the new version signs: demo-\S+-rotation: v1 -> v2 /m);
    expect(result.stdout).toMatch(/^ok {3}the old signature verifies by its signing time; the new version is Active; the history has the change: .*v1 Active -> Superseded, actor \S+, reason /m);
    expect(result.stderr).toContain('creating RSA_4096 key');
    // The temporary directory is the demo's own: nothing is left in the working directory.
    expect(await readdir(dir)).toEqual([]);
  });

  it('--json prints the whole result', async () => {
    const result = await cli(['demo', '--json'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout) as {
      ok: boolean;
      dir: string;
      kept: boolean;
      steps: { id: string; ok: boolean }[];
      keys: { algorithm: string; verified: boolean; tamperedRejected: boolean; signature: string; publicKeyPem: string }[];
      rotation: { key: string; actor: string; reason: string; newSignature: { keyId: string } };
    };
    expect(out.ok).toBe(true);
    expect(out.kept).toBe(false);
    expect(existsSync(out.dir)).toBe(false);
    expect(out.steps.map((s) => s.id)).toEqual(['init', 'open', 'create-keys', 'sign', 'verify', 'public-keys', 'tamper', 'rotate', 'rotation-checks', 'audit-check']);
    expect(out.steps.every((s) => s.ok)).toBe(true);
    expect(out.keys.map((k) => k.algorithm)).toEqual(ALGORITHMS);
    expect(out.rotation).toMatchObject({
      oldSignature: { version: 1, verifiedBySigningTime: true },
      newSignature: { version: 2, verified: true },
      activeVersion: 2,
      change: { version: 1, from: 'Active', to: 'Superseded', actor: out.rotation.actor, reason: out.rotation.reason },
    });
    expect(out.rotation.actor).not.toBe('');
    expect(out.rotation.newSignature.keyId).toBe(`${out.rotation.key}.v2`);
    for (const k of out.keys) {
      expect(k.verified).toBe(true);
      expect(k.tamperedRejected).toBe(true);
      expect(k.signature).toMatch(/^[A-Za-z0-9+/]+=*$/);
      expect(k.publicKeyPem).toContain('BEGIN PUBLIC KEY');
    }
  });

  it('--dir DIR --keep leaves the config and keys there', async () => {
    const result = await cli(['demo', '--dir', 'work', '--keep', '--json'], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout) as { dir: string; kept: boolean; keys: { id: string }[]; rotation: { key: string } };
    expect(out.dir).toBe(join(dir, 'work'));
    expect(out.kept).toBe(true);
    expect(existsSync(join(dir, 'work', '.olocus', 'config.json'))).toBe(true);
    const list = await cli(['--config', join(dir, 'work', '.olocus', 'config.json'), 'keys', 'list', '--json'], { cwd: dir });
    expect(list.code, list.stderr).toBe(0);
    const ids = (JSON.parse(list.stdout) as { keys: { id: string }[] }).keys.map((k) => k.id).sort();
    // The demo's keys, its rotated logical key (listed once, by its logical id) and the audit log's checkpoint key.
    expect(ids).toEqual([...out.keys.map((k) => k.id), out.rotation.key, 'olocus-audit-checkpoint'].sort());
  });
});
