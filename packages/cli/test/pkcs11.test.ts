import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SOFTHSM_LIB, createToken, runTool, softHsmEnv } from '@olocus/hsm-test-support';
import { cleanEnv, cli, lines, run, tempDir } from './helpers.js';

/**
 * The CLI against a fresh SoftHSM token made for this file (its own SOFTHSM2_CONF, token
 * initialised through PKCS#11 by `@olocus/hsm-backend-pkcs11/testing`). PINs never appear on a
 * command line: the CLI reads them from files or the environment, pkcs11-tool from
 * `--pin env:VAR`.
 */

const MODULE = SOFTHSM_LIB;
const token = createToken('olocus-cli'); // fails with how to install SoftHSM when it is missing
const LABEL = token.label;
const PIN = token.pin;
const SO_PIN = token.soPin;
const PIN_VAR = 'OLOCUS_TEST_TOOL_PIN';

let dir: string;
let cleanup: () => Promise<void>;
let env: Record<string, string>;

beforeAll(async () => {
  if (!existsSync('/usr/bin/pkcs11-tool')) throw new Error('/usr/bin/pkcs11-tool is needed for the PKCS#11 CLI test (apt-get install opensc)');
  ({ dir, cleanup } = await tempDir('olocus-cli-p11-'));
  env = cleanEnv({ SOFTHSM2_CONF: softHsmEnv().conf });
  await writeFile(join(dir, 'pin.txt'), PIN + '\n', { mode: 0o600 });
  await writeFile(join(dir, 'wrong-pin.txt'), 'not-the-pin\n', { mode: 0o600 });
  // A key made outside the library, addressed by its RFC 7512 URI.
  const gen = runTool('pkcs11-tool', ['--module', MODULE, '--token-label', LABEL, '--login', '--pin', `env:${PIN_VAR}`, '--keypairgen', '--key-type', 'EC:prime256v1', '--id', '0a0b', '--label', 'ext-key'], {
    [PIN_VAR]: PIN,
    SOFTHSM2_CONF: env['SOFTHSM2_CONF']!,
  });
  expect(gen.status, gen.stderr).toBe(0);
  expect(`${gen.stdout}${gen.stderr}`).not.toContain(PIN);
  await writeFile(join(dir, 'msg'), 'signed inside SoftHSM');
  await writeFile(join(dir, 'tampered'), 'signed inside SoftHSM?');
});

afterAll(async () => cleanup?.());

function noSecrets(...outputs: string[]): void {
  for (const o of outputs) {
    expect(o).not.toContain(PIN);
    expect(o).not.toContain(SO_PIN);
  }
}

describe('PKCS#11 (SoftHSM) through the CLI', () => {
  it('init --backend pkcs11 writes the config and checks the token', async () => {
    const r = await cli(['--pin-file', 'pin.txt', 'init', '--backend', 'pkcs11', '--module', MODULE, '--token-label', LABEL, '--vendor', 'softhsm', '--json'], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(0);
    noSecrets(r.stdout, r.stderr);
    const config = JSON.parse(await readFile(join(dir, '.olocus', 'config.json'), 'utf8')) as unknown;
    expect(config).toEqual({
      backend: { type: 'pkcs11', options: { libraryPath: MODULE, tokenLabel: LABEL, vendor: 'softhsm', pin: { file: join(dir, 'pin.txt') } } },
      rotation: { storage: { kind: 'sqlite', path: 'rotation.db' }, policy: { allowEmergencyRotation: false } },
      audit: { storage: { kind: 'sqlite', path: 'audit.db' }, failClosed: true, retention: { days: 365, hotDays: 90 }, checkpoint: { everyRecords: 1000, intervalSeconds: 60, keyId: 'olocus-audit-checkpoint' } },
    });
  });

  it('init without --pin-file references OLOCUS_HSM_PIN; --slot needs a number', async () => {
    const r = await cli(['init', '--dir', 'by-env', '--backend', 'pkcs11', '--module', MODULE, '--token-label', LABEL, '--json'], { cwd: dir, env: { ...env, OLOCUS_HSM_PIN: PIN } });
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { backend: { options: { pin: unknown } } }).backend.options.pin).toEqual({ env: 'OLOCUS_HSM_PIN' });
    const list = await cli(['--config', 'by-env/config.json', 'keys', 'list', '--json'], { cwd: dir, env: { ...env, OLOCUS_HSM_PIN: PIN } });
    expect(list.code, list.stderr).toBe(0);
    noSecrets(r.stdout, r.stderr, list.stdout, list.stderr);

    const bad = await cli(['init', '--dir', 'bad', '--backend', 'pkcs11', '--module', MODULE, '--slot', 'zero'], { cwd: dir, env });
    expect(bad.code).toBe(2);
    expect(lines(bad.stderr)).toHaveLength(1);
    expect(bad.stderr).toContain('--slot');
  });

  it('keys create, sign, verify (openssl agrees), tamper', async () => {
    const created = await cli(['keys', 'create', '--id', 'p11-p256', '--algorithm', 'ECDSA_P256', '--json'], { cwd: dir, env });
    expect(created.code, created.stderr).toBe(0);
    expect((JSON.parse(created.stdout) as { key: { ref: string } }).key.ref).toMatch(/^pkcs11:/);
    const signed = await cli(['sign', '--key', 'p11-p256', '--in', 'msg', '--out', 'sig.der'], { cwd: dir, env });
    expect(signed.code, signed.stderr).toBe(0);
    const pub = await cli(['keys', 'export-public', '--id', 'p11-p256', '--format', 'pem', '--out', 'pub.pem'], { cwd: dir, env });
    expect(pub.code, pub.stderr).toBe(0);
    const ossl = await run('openssl', ['dgst', '-sha256', '-verify', 'pub.pem', '-signature', 'sig.der', 'msg'], { cwd: dir });
    expect(ossl.stdout).toContain('Verified OK');
    expect((await cli(['verify', '--key', 'p11-p256', '--in', 'msg', '--signature', 'sig.der'], { cwd: dir, env })).code).toBe(0);
    expect((await cli(['verify', '--key', 'p11-p256', '--in', 'tampered', '--signature', 'sig.der'], { cwd: dir, env })).code).toBe(1);

    // A plain backend key (--no-rotation): `keys destroy` below destroys it at once.
    const rsa = await cli(['keys', 'create', '--id', 'p11-rsa', '--algorithm', 'RSA_2048', '--no-rotation'], { cwd: dir, env });
    expect(rsa.code, rsa.stderr).toBe(0);
    expect((await cli(['sign', '--key', 'p11-rsa', '--in', 'msg', '--out', 'rsa.sig'], { cwd: dir, env })).code).toBe(0);
    expect((await cli(['keys', 'export-public', '--id', 'p11-rsa', '--format', 'pem', '--out', 'rsa.pem'], { cwd: dir, env })).code).toBe(0);
    const osslRsa = await run('openssl', ['dgst', '-sha256', '-verify', 'rsa.pem', '-signature', 'rsa.sig', 'msg'], { cwd: dir });
    expect(osslRsa.stdout).toContain('Verified OK');
  });

  it('signs with a key made by pkcs11-tool, named by its pkcs11: URI', async () => {
    const uri = 'pkcs11:id=%0a%0b;type=private';
    const signed = await cli(['sign', '--key', uri, '--in', 'msg', '--out', 'ext.sig'], { cwd: dir, env });
    expect(signed.code, signed.stderr).toBe(0);
    // The public key read by pkcs11-tool (no login needed), checked by openssl.
    const read = await run('pkcs11-tool', ['--module', MODULE, '--token-label', LABEL, '--read-object', '--type', 'pubkey', '--id', '0a0b', '--output-file', 'ext.der'], { cwd: dir, env });
    expect(read.code, read.stderr).toBe(0);
    const pem = await run('openssl', ['pkey', '-pubin', '-inform', 'DER', '-in', 'ext.der', '-out', 'ext.pem'], { cwd: dir });
    expect(pem.code, pem.stderr).toBe(0);
    const ossl = await run('openssl', ['dgst', '-sha256', '-verify', 'ext.pem', '-signature', 'ext.sig', 'msg'], { cwd: dir });
    expect(ossl.stdout).toContain('Verified OK');
    const ours = await cli(['verify', '--key', uri, '--in', 'msg', '--signature', 'ext.sig', '--json'], { cwd: dir, env });
    expect(ours.code, ours.stderr).toBe(0);
    expect(JSON.parse(ours.stdout)).toMatchObject({ valid: true });
  });

  it('keys list, info and health', async () => {
    const list = await cli(['keys', 'list', '--json'], { cwd: dir, env });
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { keys: { id: string }[] }).keys.map((k) => k.id)).toEqual(expect.arrayContaining(['p11-p256', 'p11-rsa']));
    const info = await cli(['info', '--json'], { cwd: dir, env });
    expect(info.code, info.stderr).toBe(0);
    expect((JSON.parse(info.stdout) as { info: { backend: string } }).info.backend).toBe('pkcs11');
    const health = await cli(['health'], { cwd: dir, env });
    expect(health.code, health.stderr).toBe(0);
    noSecrets(list.stdout, info.stdout, health.stdout, health.stderr);
  });

  it('a wrong PIN is one line, exit 2, and no PIN in the output', async () => {
    const r = await cli(['--pin-file', 'wrong-pin.txt', 'keys', 'list'], { cwd: dir, env });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^olocus-hsm: LoginFailed: /);
    expect(r.stderr).not.toContain('not-the-pin');
    noSecrets(r.stdout, r.stderr);
  });

  it('keys destroy', async () => {
    expect((await cli(['keys', 'destroy', '--id', 'p11-rsa'], { cwd: dir, env })).code).toBe(0);
    expect((await cli(['keys', 'show', '--id', 'p11-rsa'], { cwd: dir, env })).code).toBe(2);
  });
});
