import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, cli, lines, tempDir, type RunResult } from './helpers.js';

/**
 * Bad input: each case prints exactly one line on stderr (`olocus-hsm: <code>: <message>`),
 * exits non-zero, and the passphrase never appears in stdout or stderr.
 */

const PASSPHRASE = 'correct-horse-battery-staple-4711';
const WRONG = 'wrong-horse-battery-staple-0815';
const env = cleanEnv({ OLOCUS_HSM_PASSPHRASE: PASSPHRASE });

let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
  const init = await cli(['init'], { cwd: dir, env });
  expect(init.code, init.stderr).toBe(0);
  for (const [id, alg] of [
    ['p256', 'ECDSA_P256'],
    ['ed', 'Ed25519'],
    ['victim', 'Ed25519'],
  ]) {
    const r = await cli(['keys', 'create', '--id', id!, '--algorithm', alg!], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(0);
  }
  await writeFile(join(dir, 'msg'), 'hello');
  const s = await cli(['sign', '--key', 'p256', '--in', 'msg', '--out', 'sig.der'], { cwd: dir, env });
  expect(s.code, s.stderr).toBe(0);
});

afterAll(async () => cleanup?.());

/** The common promise of every bad-input case. */
function expectOneLineError(r: RunResult, code: string, exit = 2): string {
  expect(r.code).toBe(exit);
  const errLines = lines(r.stderr);
  expect(errLines, r.stderr).toHaveLength(1);
  expect(errLines[0]).toMatch(new RegExp(`^olocus-hsm: ${code}: `));
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  for (const secret of [PASSPHRASE, WRONG]) {
    expect(r.stdout).not.toContain(secret);
    expect(r.stderr).not.toContain(secret);
  }
  return errLines[0]!;
}

async function writeConfig(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

describe('config errors', () => {
  it('malformed JSON names the file', async () => {
    const path = await writeConfig('broken.json', '{ "backend": { "type": "software", ');
    const line = expectOneLineError(await cli(['--config', path, 'keys', 'list'], { cwd: dir, env }), 'InvalidConfiguration');
    expect(line).toContain(path);
    expect(line).toContain('not valid JSON');
  });

  it('an unknown top-level field is named', async () => {
    const path = await writeConfig('extra.json', JSON.stringify({ backend: { type: 'software', options: { directory: '.olocus/keys' } }, colour: 'blue' }));
    const line = expectOneLineError(await cli(['--config', path, 'keys', 'list'], { cwd: dir, env }), 'InvalidConfiguration');
    expect(line).toContain('colour');
    expect(line).toContain(path);
  });

  it('a wrong backend option is named', async () => {
    const path = await writeConfig('badopt.json', JSON.stringify({ backend: { type: 'software', options: { directory: 42 } } }));
    const line = expectOneLineError(await cli(['--config', path, 'keys', 'list'], { cwd: dir, env }), 'InvalidConfiguration');
    expect(line).toContain('directory');
  });

  it('a missing backend field is named', async () => {
    const path = await writeConfig('nobackend.json', JSON.stringify({ backnd: { type: 'software' } }));
    const line = expectOneLineError(await cli(['--config', path, 'info'], { cwd: dir, env }), 'InvalidConfiguration');
    expect(line).toContain('"backend"');
  });

  it('an unknown backend type lists the known ones', async () => {
    const path = await writeConfig('unknown.json', JSON.stringify({ backend: { type: 'quantum-vault' } }));
    const line = expectOneLineError(await cli(['--config', path, 'keys', 'list'], { cwd: dir, env }), 'UnknownBackend');
    expect(line).toContain('quantum-vault');
    for (const known of ['software', 'pkcs11', 'aws-kms']) expect(line).toContain(known);
  });

  it('a backend whose package is not installed names the package to install', async () => {
    const path = await writeConfig('acme.json', JSON.stringify({ backend: { type: 'acme-kms', package: '@acme/olocus-backend-absent', options: { region: 'eu-west-1' } } }));
    const line = expectOneLineError(await cli(['--config', path, 'keys', 'list'], { cwd: dir, env }), 'BackendNotInstalled');
    expect(line).toContain('@acme/olocus-backend-absent');
  });

  it('an explicit config that does not exist is an error, not a new key store', async () => {
    const line = expectOneLineError(await cli(['--config', 'nope/config.json', 'keys', 'list'], { cwd: dir, env }), 'ConfigNotFound');
    expect(line).toContain(join(dir, 'nope', 'config.json'));
    expect(await readdir(dir)).not.toContain('nope');
  });

  it('init refuses to overwrite a config without --force', async () => {
    const line = expectOneLineError(await cli(['init'], { cwd: dir, env }), 'ConfigExists');
    expect(line).toContain('--force');
  });
});

describe('secrets', () => {
  it('a wrong passphrase from the environment is WrongPassphrase and never printed', async () => {
    const r = await cli(['keys', 'list'], { cwd: dir, env: cleanEnv({ OLOCUS_HSM_PASSPHRASE: WRONG }) });
    expectOneLineError(r, 'WrongPassphrase');
  });

  it('a wrong passphrase from --passphrase-file is WrongPassphrase and never printed', async () => {
    await writeFile(join(dir, 'wrong.txt'), WRONG + '\n');
    const r = await cli(['--passphrase-file', 'wrong.txt', 'sign', '--key', 'p256', '--in', 'msg', '--out', 'x.sig'], { cwd: dir, env });
    expectOneLineError(r, 'WrongPassphrase');
  });

  it('a missing passphrase names the variable', async () => {
    const line = expectOneLineError(await cli(['keys', 'list'], { cwd: dir, env: cleanEnv() }), 'InvalidConfiguration');
    expect(line).toContain('OLOCUS_HSM_PASSPHRASE');
  });

  it('there is no option that takes a secret on the command line', async () => {
    for (const flag of ['--passphrase', '--pin']) {
      const line = expectOneLineError(await cli([flag, PASSPHRASE, 'keys', 'list'], { cwd: dir, env }), 'UsageError');
      expect(line).toContain(flag);
    }
  });
});

describe('key store', () => {
  it('a corrupted key file is reported, not a crash', async () => {
    const keys = join(dir, '.olocus', 'keys');
    const file = (await readdir(keys)).find((f) => f.startsWith('victim'));
    expect(file).toBeDefined();
    const text = await readFile(join(keys, file!), 'utf8');
    const parsed = JSON.parse(text) as Record<string, unknown>;
    const flipped = JSON.stringify(parsed).replace(/"ciphertext":"(.)/, (_m, c: string) => `"ciphertext":"${c === 'A' ? 'B' : 'A'}`);
    await writeFile(join(keys, file!), flipped);
    const line = expectOneLineError(await cli(['sign', '--key', 'victim', '--in', 'msg', '--out', 'v.sig'], { cwd: dir, env }), 'StorageCorrupted');
    expect(line).toContain('victim');
    await writeFile(join(keys, file!), '{ not json');
    expectOneLineError(await cli(['sign', '--key', 'victim', '--in', 'msg', '--out', 'v.sig'], { cwd: dir, env }), 'StorageCorrupted');
  });
});

describe('arguments', () => {
  it('an unknown algorithm names the value and lists the allowed ones', async () => {
    const line = expectOneLineError(await cli(['keys', 'create', '--id', 'x', '--algorithm', 'DSA_1024'], { cwd: dir, env }), 'InvalidArgument');
    expect(line).toContain('DSA_1024');
    expect(line).toContain('--algorithm');
    for (const alg of ['Ed25519', 'ECDSA_P256', 'ECDSA_P521', 'RSA_PSS_4096']) expect(line).toContain(alg);
  });

  it('a wrong --format names the flag and the allowed values', async () => {
    const line = expectOneLineError(await cli(['keys', 'export-public', '--id', 'p256', '--format', 'ssh'], { cwd: dir, env }), 'UsageError');
    expect(line).toContain('--format');
    expect(line).toContain('ssh');
    for (const f of ['pem', 'der', 'jwk']) expect(line).toContain(f);
  });

  it('a wrong --signature-format and --encoding name the flag and the allowed values', async () => {
    const a = expectOneLineError(await cli(['sign', '--key', 'p256', '--in', 'msg', '--out', '-', '--signature-format', 'p1363'], { cwd: dir, env }), 'UsageError');
    expect(a).toMatch(/--signature-format.*der.*raw/);
    const b = expectOneLineError(await cli(['sign', '--key', 'p256', '--in', 'msg', '--out', '-', '--encoding', 'hex'], { cwd: dir, env }), 'UsageError');
    expect(b).toMatch(/--encoding.*binary.*base64/);
  });

  it('a missing --in file names the flag and the path', async () => {
    const line = expectOneLineError(await cli(['sign', '--key', 'p256', '--in', 'missing.txt', '--out', 'x.sig'], { cwd: dir, env }), 'FileNotFound');
    expect(line).toContain('--in');
    expect(line).toContain(join(dir, 'missing.txt'));
  });

  it('an unknown key is KeyNotFound', async () => {
    expectOneLineError(await cli(['sign', '--key', 'ghost', '--in', 'msg', '--out', 'x.sig'], { cwd: dir, env }), 'KeyNotFound');
  });

  it('an invalid key id is rejected before the backend is touched', async () => {
    const line = expectOneLineError(await cli(['keys', 'create', '--id', '../etc/passwd', '--algorithm', 'Ed25519'], { cwd: dir, env }), 'InvalidArgument');
    expect(line).toContain('--id');
  });

  it('a missing required option is a usage error naming it', async () => {
    const line = expectOneLineError(await cli(['sign', '--key', 'p256', '--in', 'msg'], { cwd: dir, env }), 'UsageError');
    expect(line).toContain('--out');
  });
});

describe('signatures', () => {
  it('--encoding base64 with garbage is an error (exit 2)', async () => {
    await writeFile(join(dir, 'garbage.b64'), '!!!this is not base64###\n');
    const line = expectOneLineError(await cli(['verify', '--key', 'p256', '--in', 'msg', '--signature', 'garbage.b64', '--encoding', 'base64'], { cwd: dir, env }), 'InvalidSignatureEncoding');
    expect(line).toContain('base64');
  });

  it('a malformed DER signature is invalid (exit 1) with the reason, in both output modes', async () => {
    const der = await readFile(join(dir, 'sig.der'));
    const broken = Buffer.from(der);
    broken[1] = broken[1]! + 1; // SEQUENCE length no longer matches
    await writeFile(join(dir, 'broken.der'), broken);
    const human = await cli(['verify', '--key', 'p256', '--in', 'msg', '--signature', 'broken.der'], { cwd: dir, env });
    const line = expectOneLineError(human, 'SignatureInvalid', 1);
    expect(line).toContain('DER');
    const json = await cli(['verify', '--key', 'p256', '--in', 'msg', '--signature', 'broken.der', '--json'], { cwd: dir, env });
    expect(json.code).toBe(1);
    const out = JSON.parse(json.stdout) as { valid: boolean; reason: string };
    expect(out.valid).toBe(false);
    expect(out.reason).toMatch(/DER ECDSA signature is malformed/);
  });

  it('a signature of the wrong length is invalid with the reason', async () => {
    await writeFile(join(dir, 'short.sig'), Buffer.alloc(10, 1));
    const json = await cli(['verify', '--key', 'ed', '--in', 'msg', '--signature', 'short.sig', '--json'], { cwd: dir, env });
    expect(json.code).toBe(1);
    expect((JSON.parse(json.stdout) as { reason: string }).reason).toContain('64 bytes');
  });

  it('errors in --json mode are one JSON object on stdout', async () => {
    const r = await cli(['--json', 'keys', 'show', '--id', 'ghost'], { cwd: dir, env });
    expect(r.code).toBe(2);
    const out = JSON.parse(r.stdout) as { error: { code: string; message: string } };
    expect(out.error.code).toBe('KeyNotFound');
    expect(out.error.message).toContain('ghost');
    const usage = await cli(['keys', 'export-public', '--id', 'p256', '--format', 'ssh', '--json'], { cwd: dir, env });
    expect((JSON.parse(usage.stdout) as { error: { code: string } }).error.code).toBe('UsageError');
  });

  it('OLOCUS_HSM_DEBUG=1 adds the stack trace', async () => {
    const r = await cli(['keys', 'show', '--id', 'ghost'], { cwd: dir, env: { ...env, OLOCUS_HSM_DEBUG: '1' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/\n\s+at /);
    expect(r.stderr).not.toContain(PASSPHRASE);
  });
});
