import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, errorLine, lines, tempDir, testEnv } from './helpers.js';

/**
 * Key rotation through the CLI: logical keys made by `keys create`, `keys rotate` (normal and
 * emergency), `keys history`, `keys revoke|suspend|resume`, signing by logical key (Active
 * version) and verifying by signature time, `rotation run` and `rotation status`; on the
 * default SQLite registry and on PostgreSQL (connection string from an environment variable).
 */

const PG_URL = process.env['OLOCUS_TEST_PG_URL'] ?? 'postgres://olocus_test@127.0.0.1:5432/olocus_test';
const ME = userInfo().username;

interface Version {
  keyId: string;
  version: number;
  state: string;
}
interface Change {
  at: string;
  version: number;
  from: string | null;
  to: string;
  actor: string;
  reason: string;
}
interface History {
  key: string;
  versions: Version[];
  history: Change[];
}
interface Signed {
  key: string;
  keyId: string;
  version: number;
  signedAt: string;
  signature: string;
}

/** A CLI bound to one directory and environment. */
function bind(cwd: () => string, env: () => Record<string, string>) {
  const run = (args: string[]) => cli(args, { cwd: cwd(), env: env() });
  const json = async <T = Record<string, unknown>>(args: string[], expected = 0): Promise<T> => {
    const r = await run([...args, '--json']);
    expect(r.code, r.stderr).toBe(expected);
    return JSON.parse(r.stdout) as T;
  };
  return { run, json };
}

describe('rotation on the default SQLite registry', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const env = testEnv();
  const { run, json } = bind(
    () => dir,
    () => env,
  );
  let v1: Signed;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('olocus-cli-rot-'));
    const init = await run(['init']);
    expect(init.code, init.stderr).toBe(0);
    await writeFile(join(dir, 'msg'), 'rotate me');
  });
  afterAll(async () => cleanup?.());

  it('keys create registers a logical key: version 1 Active, by the OS user', async () => {
    const created = await json<{ key: { id: string; keyId: string; version: number; state: string; algorithm: string } }>(['keys', 'create', '--id', 'rk', '--algorithm', 'ECDSA_P256']);
    expect(created.key).toMatchObject({ id: 'rk', keyId: 'rk.v1', version: 1, state: 'Active', algorithm: 'ECDSA_P256' });
    v1 = await json<Signed>(['sign', '--key', 'rk', '--in', 'msg', '--out', 'v1.sig']);
    expect(v1).toMatchObject({ key: 'rk', keyId: 'rk.v1', version: 1 });
    expect(Number.isNaN(Date.parse(v1.signedAt))).toBe(false);
    const h = await json<History>(['keys', 'history', '--id', 'rk']);
    expect(h.history.length).toBeGreaterThan(0);
    for (const c of h.history) expect(c.actor).toBe(ME);
  });

  it('keys rotate: history shows 2 versions and the change with actor and reason', async () => {
    const rotated = await json<{ previous: Version; current: Version; actor: string; reason: string }>(['keys', 'rotate', '--id', 'rk', '--reason', 'quarterly rotation', '--actor', 'alice']);
    expect(rotated.previous).toMatchObject({ version: 1, state: 'Superseded' });
    expect(rotated.current).toMatchObject({ keyId: 'rk.v2', version: 2, state: 'Active' });
    expect(rotated).toMatchObject({ actor: 'alice', reason: 'quarterly rotation' });

    const h = await json<History>(['keys', 'history', '--id', 'rk']);
    expect(h.versions.map((v) => [v.version, v.state])).toEqual([
      [1, 'Superseded'],
      [2, 'Active'],
    ]);
    expect(h.history).toContainEqual(expect.objectContaining({ version: 1, from: 'Active', to: 'Superseded', actor: 'alice', reason: 'quarterly rotation' }));
    expect(h.history).toContainEqual(expect.objectContaining({ version: 2, from: 'PreActivation', to: 'Active', actor: 'alice' }));
    for (const c of h.history) expect(Number.isNaN(Date.parse(c.at))).toBe(false);

    const human = await run(['keys', 'history', '--id', 'rk']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^v1\s+Superseded\s+rk\.v1\s/m);
    expect(human.stdout).toMatch(/^v2\s+Active\s+rk\.v2\s/m);
    expect(human.stdout).toMatch(/\sv1\s+Active\s+Superseded\s+alice\s+quarterly rotation$/m);
  });

  it('sign --key BASE uses the new version and says so', async () => {
    const signed = await json<Signed>(['sign', '--key', 'rk', '--in', 'msg', '--out', 'v2.sig']);
    expect(signed).toMatchObject({ key: 'rk', keyId: 'rk.v2', version: 2 });
    const human = await run(['sign', '--key', 'rk', '--in', 'msg', '--out', 'v2b.sig']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stderr).toContain('with rk version 2 (rk.v2');
    const ok = await json<{ valid: boolean; version: number }>(['verify', '--key', 'rk', '--in', 'msg', '--signature', 'v2.sig']);
    expect(ok).toMatchObject({ valid: true, version: 2 });
  });

  it('a signature made with v1 before the rotation verifies with --signed-at before the rotation', async () => {
    const byTime = await json<{ valid: boolean; key: string; keyId: string; version: number }>(['verify', '--key', 'rk', '--in', 'msg', '--signature', 'v1.sig', '--signed-at', v1.signedAt]);
    expect(byTime).toMatchObject({ valid: true, key: 'rk', keyId: 'rk.v1', version: 1 });
    // Without --signed-at every version never revoked or compromised is tried: v1 matches and is named.
    const now = await json<{ valid: boolean; keyId: string; version: number }>(['verify', '--key', 'rk', '--in', 'msg', '--signature', 'v1.sig']);
    expect(now).toMatchObject({ valid: true, keyId: 'rk.v1', version: 1 });
    const bad = errorLine(await run(['verify', '--key', 'rk', '--in', 'msg', '--signature', 'v1.sig', '--signed-at', 'yesterday']), 'InvalidArgument');
    expect(bad).toContain('--signed-at');
  });

  it('emergency rotation needs --reason (naming the flag) and the policy to allow it', async () => {
    const noReason = errorLine(await run(['keys', 'rotate', '--id', 'rk', '--emergency']), 'InvalidArgument');
    expect(noReason).toContain('--reason');
    const disabled = errorLine(await run(['keys', 'rotate', '--id', 'rk', '--emergency', '--reason', 'leaked']), 'PolicyViolation');
    expect(disabled).toContain('allowEmergencyRotation');
    expect(disabled).toContain(join(dir, '.olocus', 'config.json'));

    const path = join(dir, '.olocus', 'config.json');
    const config = JSON.parse(await readFile(path, 'utf8')) as { rotation: { policy: Record<string, unknown> } };
    config.rotation.policy.allowEmergencyRotation = true;
    await writeFile(path, JSON.stringify(config, null, 2));
    await json(['keys', 'create', '--id', 'em', '--algorithm', 'Ed25519']);
    const em = await json<{ kind: string; previous: Version; current: Version; reason: string }>(['keys', 'rotate', '--id', 'em', '--emergency', '--reason', 'key file leaked']);
    expect(em).toMatchObject({ kind: 'emergency', reason: 'key file leaked', previous: { version: 1, state: 'Compromised' }, current: { version: 2, state: 'Active' } });
    const h = await json<History>(['keys', 'history', '--id', 'em']);
    expect(h.history).toContainEqual(expect.objectContaining({ version: 1, from: 'Active', to: 'Compromised', actor: ME, reason: 'key file leaked' }));
  });

  it('keys revoke --version: the revoked version verifies nothing any more', async () => {
    const revoked = await json<{ from: string; version: Version }>(['keys', 'revoke', '--id', 'rk', '--version', '1', '--reason', 'retired early']);
    expect(revoked).toMatchObject({ from: 'Superseded', version: { version: 1, state: 'Revoked' } });
    const r = await json<{ valid: boolean; reason: string }>(['verify', '--key', 'rk', '--in', 'msg', '--signature', 'v1.sig', '--signed-at', v1.signedAt], 1);
    expect(r.valid).toBe(false);
    const h = await json<History>(['keys', 'history', '--id', 'rk']);
    expect(h.history).toContainEqual(expect.objectContaining({ version: 1, from: 'Superseded', to: 'Revoked', actor: ME, reason: 'retired early' }));
    const missing = errorLine(await run(['keys', 'revoke', '--id', 'rk', '--version', '9', '--reason', 'x']), 'KeyNotFound');
    expect(missing).toContain('--version');
  });

  it('keys suspend / resume: no signing while suspended', async () => {
    const s = await json<{ from: string; version: Version }>(['keys', 'suspend', '--id', 'rk', '--reason', 'maintenance']);
    expect(s).toMatchObject({ from: 'Active', version: { version: 2, state: 'Suspended' } });
    errorLine(await run(['sign', '--key', 'rk', '--in', 'msg', '--out', 'x.sig']), 'KeyNotFound');
    const r = await json<{ from: string; version: Version }>(['keys', 'resume', '--id', 'rk', '--reason', 'maintenance over', '--actor', 'bob']);
    expect(r).toMatchObject({ from: 'Suspended', version: { version: 2, state: 'Active' } });
    expect(await json<Signed>(['sign', '--key', 'rk', '--in', 'msg', '--out', '-'])).toMatchObject({ version: 2 });
    const h = await json<History>(['keys', 'history', '--id', 'rk']);
    expect(h.history).toContainEqual(expect.objectContaining({ version: 2, from: 'Suspended', to: 'Active', actor: 'bob', reason: 'maintenance over' }));
    const noReason = errorLine(await run(['keys', 'suspend', '--id', 'rk']), 'UsageError');
    expect(noReason).toContain('--reason');
  });

  it('rotation status --json: keys with their Active version, tasks, pending destructions, orphans', async () => {
    const st = await json<{
      storage: { kind: string; path: string };
      keys: { key: string; activeVersion: number | null; activeKeyId: string | null }[];
      nextTasks: { kind: string; key: string; dueAt: string }[];
      pendingDestructions: unknown[];
      orphans: unknown[];
    }>(['rotation', 'status']);
    expect(st.storage).toEqual({ kind: 'sqlite', path: join(dir, '.olocus', 'rotation.db') });
    expect(st.keys).toContainEqual(expect.objectContaining({ key: 'rk', activeVersion: 2, activeKeyId: 'rk.v2' }));
    expect(st.keys).toContainEqual(expect.objectContaining({ key: 'em', activeVersion: 2 }));
    expect(Array.isArray(st.nextTasks)).toBe(true);
    expect(st.nextTasks.some((t) => t.kind === 'deactivate' && t.key === 'rk')).toBe(true);
    expect(st.pendingDestructions).toEqual([]);
    expect(st.orphans).toEqual([]);
    const human = await run(['rotation', 'status']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^rk\s+ECDSA_P256\s+v2\s/m);
  });

  it('rotation run: runs what is due (the clean-up after the emergency rotation), then with nothing due says so', async () => {
    const first = await json<{ ran: { kind: string; baseKeyId: string; status: string }[] }>(['rotation', 'run']);
    expect(first.ran).toContainEqual(expect.objectContaining({ kind: 'cleanup', baseKeyId: 'em', status: 'done' }));
    const human = await run(['rotation', 'run']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toContain('no task was due');
    expect(await json<{ ran: unknown[] }>(['rotation', 'run'])).toMatchObject({ ran: [] });
  });

  it('keys list shows a logical key once; keys destroy refuses a logical key', async () => {
    const list = await json<{ keys: { id: string; keyId?: string; version?: number }[] }>(['keys', 'list']);
    expect(list.keys.filter((k) => k.id === 'rk')).toEqual([expect.objectContaining({ id: 'rk', keyId: 'rk.v2', version: 2 })]);
    expect(list.keys.map((k) => k.id)).not.toContain('rk.v1');
    const shown = await json<{ key: { id: string; keyId: string; version: number } }>(['keys', 'show', '--id', 'rk']);
    expect(shown.key).toMatchObject({ id: 'rk', keyId: 'rk.v2', version: 2 });
    const refused = errorLine(await run(['keys', 'destroy', '--id', 'rk']), 'PolicyViolation');
    expect(refused).toContain('keys revoke');
  });

  it('an unknown key is an error naming it; a plain backend key is not a logical key', async () => {
    for (const args of [
      ['keys', 'rotate', '--id', 'ghost-key'],
      ['keys', 'history', '--id', 'ghost-key'],
      ['keys', 'revoke', '--id', 'ghost-key', '--reason', 'x'],
      ['keys', 'suspend', '--id', 'ghost-key', '--reason', 'x'],
      ['keys', 'resume', '--id', 'ghost-key', '--reason', 'x'],
    ]) {
      expect(errorLine(await run(args), 'KeyNotFound')).toContain('"ghost-key"');
    }
    await json(['keys', 'create', '--id', 'plain', '--algorithm', 'Ed25519', '--no-rotation']);
    expect(errorLine(await run(['keys', 'rotate', '--id', 'plain']), 'KeyNotFound')).toContain('backend key, not a logical key');
    // A plain backend key still signs and verifies as before.
    expect((await run(['sign', '--key', 'plain', '--in', 'msg', '--out', 'plain.sig'])).code).toBe(0);
    expect(await json(['verify', '--key', 'plain', '--in', 'msg', '--signature', 'plain.sig'])).toMatchObject({ valid: true, key: 'plain' });
  });

  it('a bad rotation config field is named, with the config file', async () => {
    const write = async (name: string, rotation: unknown) => {
      const path = join(dir, name);
      await writeFile(path, JSON.stringify({ backend: { type: 'software', options: { directory: '.olocus/keys', passphrase: { file: '.olocus/passphrase' } } }, rotation }));
      return path;
    };
    const a = errorLine(await run(['--config', await write('r1.json', { storage: { kind: 'sqlite', path: 5 } }), 'rotation', 'status']), 'InvalidConfiguration');
    expect(a).toContain('rotation.storage.path');
    expect(a).toContain(join(dir, 'r1.json'));
    const b = errorLine(await run(['--config', await write('r2.json', { policy: { retentionVersions: 0 } }), 'rotation', 'status']), 'InvalidConfiguration');
    expect(b).toContain('rotation.policy.retentionVersions');
    const inline = 'postgres://someone:inline-secret-pw@127.0.0.1:5432/x';
    const c = await run(['--config', await write('r3.json', { storage: { kind: 'postgres', connectionString: inline } }), 'rotation', 'status']);
    expect(errorLine(c, 'InvalidConfiguration')).toContain('rotation.storage.connectionString');
    expect(c.stderr + c.stdout).not.toContain('inline-secret-pw');
    const d = errorLine(await run(['--config', await write('r4.json', { storage: { kind: 'mysql' } }), 'rotation', 'status']), 'InvalidConfiguration');
    expect(d).toContain('"sqlite" or "postgres"');
  });
});

describe('rotation on PostgreSQL (connection string from an environment variable)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const schema = `cli_rot_${randomBytes(5).toString('hex')}`;
  const env = testEnv({ OLOCUS_HSM_PG_URL: PG_URL });
  const { run } = bind(
    () => dir,
    () => env,
  );

  beforeAll(async () => {
    const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
    try {
      await client.connect();
      await client.query('select 1');
    } catch (error) {
      throw new Error(`PostgreSQL is not reachable at ${PG_URL} (${(error as Error).message}). Start it with: bash scripts/start-postgres.sh (from the repository root), or set OLOCUS_TEST_PG_URL.`);
    } finally {
      await client.end().catch(() => undefined);
    }
    ({ dir, cleanup } = await tempDir('olocus-cli-rot-pg-'));
    const init = await run(['init']);
    expect(init.code, init.stderr).toBe(0);
    const path = join(dir, '.olocus', 'config.json');
    const config = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    config['rotation'] = { storage: { kind: 'postgres', connectionString: { env: 'OLOCUS_HSM_PG_URL' }, schema, maxConnections: 2 } };
    await writeFile(path, JSON.stringify(config, null, 2));
    await writeFile(join(dir, 'msg'), 'rotate me on postgres');
  });

  afterAll(async () => {
    const client = new pg.Client({ connectionString: PG_URL });
    try {
      await client.connect();
      await client.query(`drop schema if exists ${schema} cascade`);
    } finally {
      await client.end().catch(() => undefined);
    }
    await cleanup?.();
  });

  it('create, sign, rotate, history, sign with v2, verify v1 by time; the connection string is never printed', async () => {
    const outputs: string[] = [];
    const logged = async <T>(args: string[], expected = 0): Promise<T> => {
      const r = await run([...args, '--json']);
      outputs.push(r.stdout, r.stderr);
      expect(r.code, r.stderr).toBe(expected);
      return JSON.parse(r.stdout) as T;
    };
    expect(await logged(['keys', 'create', '--id', 'pgk', '--algorithm', 'ECDSA_P256'])).toMatchObject({ key: { id: 'pgk', keyId: 'pgk.v1', version: 1 } });
    const v1 = await logged<Signed>(['sign', '--key', 'pgk', '--in', 'msg', '--out', 'v1.sig']);
    expect(v1.version).toBe(1);
    const rotated = await logged<{ current: Version }>(['keys', 'rotate', '--id', 'pgk', '--reason', 'pg rotation', '--actor', 'carol']);
    expect(rotated.current).toMatchObject({ version: 2, state: 'Active' });
    const h = await logged<History>(['keys', 'history', '--id', 'pgk']);
    expect(h.versions.map((v) => [v.version, v.state])).toEqual([
      [1, 'Superseded'],
      [2, 'Active'],
    ]);
    expect(h.history).toContainEqual(expect.objectContaining({ version: 1, from: 'Active', to: 'Superseded', actor: 'carol', reason: 'pg rotation' }));
    expect(await logged<Signed>(['sign', '--key', 'pgk', '--in', 'msg', '--out', 'v2.sig'])).toMatchObject({ keyId: 'pgk.v2', version: 2 });
    expect(await logged(['verify', '--key', 'pgk', '--in', 'msg', '--signature', 'v1.sig', '--signed-at', v1.signedAt])).toMatchObject({ valid: true, version: 1 });
    const st = await logged<{ storage: unknown; keys: { key: string; activeVersion: number }[] }>(['rotation', 'status']);
    expect(st.storage).toEqual({ kind: 'postgres', connectionString: { env: 'OLOCUS_HSM_PG_URL' }, schema });
    expect(st.keys).toContainEqual(expect.objectContaining({ key: 'pgk', activeVersion: 2 }));
    const human = await run(['rotation', 'status']);
    outputs.push(human.stdout, human.stderr);
    expect(human.code, human.stderr).toBe(0);
    for (const o of outputs) expect(o).not.toContain(PG_URL);
  });

  it('a missing variable names it; a password in the connection string is never printed', async () => {
    const missing = errorLine(await cli(['rotation', 'status'], { cwd: dir, env: testEnv() }), 'InvalidConfiguration');
    expect(missing).toContain('OLOCUS_HSM_PG_URL');
    // Port 1: nothing listens there; the error must not show the password.
    const password = 'pw-' + randomBytes(6).toString('hex');
    const r = await cli(['rotation', 'status'], { cwd: dir, env: testEnv({ OLOCUS_HSM_PG_URL: `postgres://olocus_test:${password}@127.0.0.1:1/olocus_test` }) });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stdout + r.stderr).not.toContain(password);
  });
});
