import { rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SOFTHSM_LIB, createToken, softHsmEnv } from '@olocus/hsm-test-support';
import { cleanEnv, cli, lines, run, tempDir, type RunResult } from './helpers.js';

/**
 * The whole PKCS#11 backup path as an operator runs it, through the binary on SoftHSM: the
 * security officer's KEK ceremony (`backup kek create` on a backup token, `backup kek enroll` onto
 * the production token, export only), `keys create --backup`, `backup create`, the production
 * token lost (its directory deleted), a fresh token enrolled with its user PIN, `backup restore`
 * into an installation on it; a signature made before the loss verifies there, and OpenSSL
 * verifies a new one with the public key exported before the backup. PINs only in the
 * environment or files, never in argv and never in any output.
 */

const production = createToken('bk-prod');
const backupToken = createToken('bk-vault');
let dir: string;
let cleanup: () => Promise<void>;
let env: Record<string, string>;
const secrets: string[] = [production.pin, production.soPin, backupToken.pin, backupToken.soPin];

function ok(r: RunResult, what: string): RunResult {
  expect(r.code, `${what}: ${r.stdout}${r.stderr}`).toBe(0);
  for (const secret of secrets) expect(`${r.stdout}${r.stderr}`).not.toContain(secret);
  return r;
}

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('olocus-cli-backup-p11-'));
  await run('mkdir', ['-p', join(dir, 'prod'), join(dir, 'fresh')], { cwd: dir });
  await writeFile(join(dir, 'prod-pin'), `${production.pin}\n`, { mode: 0o600 });
  await writeFile(join(dir, 'msg'), 'signed on the production token before it was lost');
  env = cleanEnv({ SOFTHSM2_CONF: softHsmEnv().conf, VAULT_SO: backupToken.soPin, PROD_SO: production.soPin });
});

afterAll(async () => cleanup?.());

describe('PKCS#11 backup through the CLI', () => {
  it('KEK ceremony, backup-eligible keys, backup, token lost, fresh token enrolled, restore; old and new signatures verify', async () => {
    const inProd = (args: string[]) => cli(args, { cwd: join(dir, 'prod'), env });
    const kek = JSON.parse(ok(await cli(['backup', 'kek', 'create', '--module', SOFTHSM_LIB, '--token', backupToken.label, '--so-pin-env', 'VAULT_SO', '--json'], { cwd: dir, env }), 'kek create').stdout) as { kek: { checkValue: string; label: string } };
    expect(kek.kek.label).toBe('olocus-backup-kek');
    // the production token exports only: nothing on it may unwrap
    const refused = await cli(['backup', 'kek', 'enroll', '--module', SOFTHSM_LIB, '--from', backupToken.label, '--to', production.label, '--from-so-pin-env', 'VAULT_SO', '--to-so-pin-env', 'PROD_SO'], { cwd: dir, env });
    expect(refused.code).toBe(2);
    expect(lines(refused.stderr)).toHaveLength(1);
    expect(refused.stderr).toContain('--to-pin-env');
    const enrolled = JSON.parse(
      ok(await cli(['backup', 'kek', 'enroll', '--module', SOFTHSM_LIB, '--from', backupToken.label, '--to', production.label, '--from-so-pin-env', 'VAULT_SO', '--to-so-pin-env', 'PROD_SO', '--export-only', '--json'], { cwd: dir, env }), 'enroll prod').stdout,
    ) as { enrolled: { checkValue: string; unwrapWith: string } };
    expect(enrolled.enrolled).toMatchObject({ checkValue: kek.kek.checkValue, unwrapWith: 'none' });

    ok(await inProd(['--pin-file', join(dir, 'prod-pin'), 'init', '--backend', 'pkcs11', '--module', SOFTHSM_LIB, '--token-label', production.label]), 'init prod');
    ok(await inProd(['keys', 'create', '--id', 'payroll', '--algorithm', 'ECDSA_P256', '--backup']), 'keys create --backup');
    ok(await inProd(['keys', 'create', '--id', 'scratch', '--algorithm', 'ECDSA_P256']), 'keys create');
    const signed = JSON.parse(ok(await inProd(['sign', '--key', 'payroll', '--in', join(dir, 'msg'), '--out', join(dir, 'before.sig'), '--json']), 'sign').stdout) as { signedAt: string };
    const pem = ok(await inProd(['keys', 'export-public', '--id', 'payroll', '--format', 'pem']), 'export-public').stdout;
    await writeFile(join(dir, 'payroll.pem'), pem);

    const bundle = join(dir, 'prod.olb');
    const created = JSON.parse(ok(await inProd(['backup', 'create', '--out', bundle, '--all', '--json']), 'backup create').stdout) as {
      signer: { fingerprint: string };
      keys: Array<{ part: string }>;
      ineligible: Array<{ id: string; reason: string }>;
    };
    expect(created.keys.map((k) => k.part)).toContain('key payroll v1');
    // the key made without --backup is listed with the reason, never skipped in silence
    expect(created.ineligible.find((k) => k.id === 'scratch.v1')?.reason).toMatch(/non-extractable/);

    // the production token is lost
    rmSync(production.path, { recursive: true, force: true });
    const fresh = createToken('bk-fresh');
    secrets.push(fresh.pin, fresh.soPin);
    await writeFile(join(dir, 'fresh-pin'), `${fresh.pin}\n`, { mode: 0o600 });
    const enrolledFresh = JSON.parse(
      ok(
        await cli(['backup', 'kek', 'enroll', '--module', SOFTHSM_LIB, '--from', backupToken.label, '--to', fresh.label, '--from-so-pin-env', 'VAULT_SO', '--to-so-pin-env', 'FRESH_SO', '--to-pin-file', join(dir, 'fresh-pin'), '--json'], {
          cwd: dir,
          env: { ...env, FRESH_SO: fresh.soPin },
        }),
        'enroll fresh',
      ).stdout,
    ) as { enrolled: { checkValue: string; unwrapWith: string } };
    expect(enrolledFresh.enrolled).toMatchObject({ checkValue: kek.kek.checkValue, unwrapWith: 'private-half' });

    const inFresh = (args: string[]) => cli(args, { cwd: join(dir, 'fresh'), env });
    ok(await inFresh(['--pin-file', join(dir, 'fresh-pin'), 'init', '--backend', 'pkcs11', '--module', SOFTHSM_LIB, '--token-label', fresh.label]), 'init fresh');
    ok(await inFresh(['backup', 'restore', bundle, '--into', join(dir, 'fresh', '.olocus', 'config.json'), '--signer', created.signer.fingerprint]), 'restore');
    // a signature made on the lost token verifies on the fresh one, by its recorded time
    ok(await inFresh(['verify', '--key', 'payroll', '--in', join(dir, 'msg'), '--signature', join(dir, 'before.sig'), '--signed-at', signed.signedAt]), 'verify old signature');
    // the restored key signs; OpenSSL checks it with the public key exported before the backup
    ok(await inFresh(['sign', '--key', 'payroll', '--in', join(dir, 'msg'), '--out', join(dir, 'after.sig')]), 'sign after restore');
    const openssl = await run('openssl', ['dgst', '-sha256', '-verify', join(dir, 'payroll.pem'), '-signature', join(dir, 'after.sig'), join(dir, 'msg')], { cwd: dir });
    expect(openssl.stdout + openssl.stderr).toContain('Verified OK');
  }, 180_000);
});
