import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, cli, errorLine, freshDir, listFiles, tempDir, TEST_PASSPHRASE, testEnv, type RunResult } from './helpers.js';

/**
 * `init --master-key-file PATH` / `--master-key-env NAME`: a software store protected by a random
 * 32-byte master key (HKDF, not scrypt) instead of a passphrase. Keys reach the CLI by file or
 * environment only, never on a command line; no error, output or store file carries the key.
 */

let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => ({ dir, cleanup } = await tempDir('olocus-cli-master-key-')));
afterAll(async () => cleanup?.());

/** The variable the env variant names (not OLOCUS_*: cleanEnv() keeps it when given). */
const KEY_VAR = 'HSM_TEST_MASTER_KEY';

const fresh = (name: string) => freshDir(dir, name);

/** A master key as `openssl rand -base64 32` makes one (or of another length, to be refused). */
function newKey(bytes = 32): string {
  return randomBytes(bytes).toString('base64');
}

async function writeKeyFile(path: string, key: string, mode = 0o600): Promise<void> {
  await writeFile(path, key + '\n', { mode });
}

/** The key (its base64 text and its 32 raw bytes) is in none of the outputs and no file of the store folder. */
async function keyNowhere(key: string, outputs: RunResult[], storeDir: string): Promise<void> {
  for (const r of outputs) {
    expect(r.stdout).not.toContain(key);
    expect(r.stderr).not.toContain(key);
  }
  const files = await listFiles(storeDir);
  expect(files).toContain(join(storeDir, 'config.json'));
  expect(files).toContain(join(storeDir, 'audit.db'));
  const raw = Buffer.from(key, 'base64');
  for (const file of files) {
    const bytes = await readFile(file);
    expect(bytes.includes(Buffer.from(key)), file).toBe(false);
    expect(bytes.includes(raw), file).toBe(false);
  }
}

interface Config {
  backend: { type: string; options: Record<string, unknown> };
}

async function readJson<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(path, 'utf8')) as T;
}

/** keys create --no-rotation, sign, verify: each must succeed. */
async function useStore(cwd: string, env: Record<string, string>, id: string): Promise<RunResult[]> {
  await writeFile(join(cwd, 'msg'), `signed under a master key (${id})`);
  const out: RunResult[] = [];
  for (const args of [
    ['keys', 'create', '--id', id, '--algorithm', 'ECDSA_P256', '--no-rotation'],
    ['sign', '--key', id, '--in', 'msg', '--out', `${id}.sig`],
    ['verify', '--key', id, '--in', 'msg', '--signature', `${id}.sig`],
  ]) {
    const r = await cli(args, { cwd, env });
    expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(0);
    out.push(r);
  }
  expect(out[2]!.stdout).toMatch(/Verified OK/);
  return out;
}

describe('init --master-key-file', () => {
  it('creates an HKDF store opened by the key alone: keys create, sign and verify with no passphrase anywhere; the key is written nowhere', async () => {
    const cwd = await fresh('file');
    const key = newKey();
    const keyFile = join(cwd, 'master.key');
    await writeKeyFile(keyFile, key);
    const env = cleanEnv(); // no OLOCUS_HSM_PASSPHRASE, no terminal: a passphrase could not be had
    expect(env['OLOCUS_HSM_PASSPHRASE']).toBeUndefined();

    const init = await cli(['init', '--master-key-file', 'master.key'], { cwd, env });
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain(`master key from --master-key-file ${keyFile}`);
    expect(init.stdout).not.toMatch(/passphrase/);
    const store = join(cwd, '.olocus');
    const config = await readJson<Config>(join(store, 'config.json'));
    expect(config.backend).toEqual({ type: 'software', options: { directory: 'keys', masterKey: { file: keyFile } } });
    const header = await readJson<{ version: number; kdf: { name: string } }>(join(store, 'keys', 'store.json'));
    expect(header.kdf.name).toBe('hkdf-sha256');
    expect(header.version).toBe(2);

    const used = await useStore(cwd, env, 'mk-file');
    await keyNowhere(key, [init, ...used], store);

    // another key in the file: the store does not open, and neither key is shown
    const other = newKey();
    await writeKeyFile(keyFile, other);
    const wrong = errorLine(await cli(['keys', 'list'], { cwd, env }), 'WrongPassphrase');
    expect(wrong).toContain('the master key does not open');
    expect(wrong).not.toContain(other);
    expect(wrong).not.toContain(key);
  });

  it('--json prints the masterKey source; a key file others can read works, with a warning to chmod 600 it', async () => {
    const cwd = await fresh('file-json');
    const key = newKey();
    await writeKeyFile(join(cwd, 'mk'), key, 0o644);
    const r = await cli(['init', '--master-key-file', 'mk', '--json'], { cwd, env: cleanEnv() });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { config: string; backend: Config['backend'] };
    expect(out.backend.options).toEqual({ directory: 'keys', masterKey: { file: join(cwd, 'mk') } });
    expect(r.stderr).toMatch(new RegExp(`warning: --master-key-file ${join(cwd, 'mk')} can be read by other users \\(mode 0644\\): chmod 600 it`));
    expect(r.stdout + r.stderr).not.toContain(key);
  });

  it('a 31-byte key: the backend error names the file and how to make a key, never the value, and init leaves the folder as it was', async () => {
    const cwd = await fresh('short-key');
    const short = newKey(31);
    const keyFile = join(cwd, 'k31');
    await writeKeyFile(keyFile, short);

    // the config folder did not exist: it is removed again
    const line = errorLine(await cli(['init', '--master-key-file', 'k31'], { cwd, env: cleanEnv() }), 'InvalidConfiguration');
    expect(line).toContain('backend.options.masterKey');
    expect(line).toContain(keyFile);
    expect(line).toContain('openssl rand -base64 32');
    expect(line).not.toContain(short);
    expect(await readdir(cwd)).toEqual(['k31']);

    // the config folder existed (empty): it stays, empty (no config.json, no keys/)
    await mkdir(join(cwd, 'store'));
    const json = await cli(['init', '--dir', 'store', '--master-key-file', 'k31', '--json'], { cwd, env: cleanEnv() });
    expect(json.code).toBe(2);
    const doc = JSON.parse(json.stdout) as { error: { code: string; message: string } };
    expect(doc.error.code).toBe('InvalidConfiguration');
    expect(doc.error.message).toContain(keyFile);
    expect(json.stdout + json.stderr).not.toContain(short);
    expect(await readdir(join(cwd, 'store'))).toEqual([]);
    expect((await readdir(cwd)).sort()).toEqual(['k31', 'store']);
  });

  it('a missing or empty key file is refused by flag and path before anything is created', async () => {
    const cwd = await fresh('missing-file');
    const missing = errorLine(await cli(['init', '--master-key-file', 'nope'], { cwd, env: cleanEnv() }), 'InvalidArgument');
    expect(missing).toContain('--master-key-file');
    expect(missing).toContain(join(cwd, 'nope'));
    await writeFile(join(cwd, 'empty'), '', { mode: 0o600 });
    const empty = errorLine(await cli(['init', '--master-key-file', 'empty'], { cwd, env: cleanEnv() }), 'InvalidArgument');
    expect(empty).toContain('--master-key-file');
    expect(empty).toMatch(/empty/);
    expect(await readdir(cwd)).toEqual(['empty']);
  });
});

describe('init --master-key-env', () => {
  it('the config names the variable; later commands read it from there (and name it when it is missing); the key is written nowhere', async () => {
    const cwd = await fresh('env');
    const key = newKey();
    const env = cleanEnv({ [KEY_VAR]: key });
    const init = await cli(['init', '--master-key-env', KEY_VAR], { cwd, env });
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain(`master key from $${KEY_VAR}`);
    const store = join(cwd, '.olocus');
    const config = await readJson<Config>(join(store, 'config.json'));
    expect(config.backend).toEqual({ type: 'software', options: { directory: 'keys', masterKey: { env: KEY_VAR } } });
    expect((await readJson<{ kdf: { name: string } }>(join(store, 'keys', 'store.json'))).kdf.name).toBe('hkdf-sha256');

    const used = await useStore(cwd, env, 'mk-env');
    await keyNowhere(key, [init, ...used], store);

    // the variable unset later: the error names it (and the config field)
    const unset = errorLine(await cli(['keys', 'list'], { cwd, env: cleanEnv() }), 'InvalidConfiguration');
    expect(unset).toContain(KEY_VAR);
    expect(unset).toContain('backend.options.masterKey');
  });

  it('an unset or empty variable, or a value that is not a variable name, is refused by name and leaves nothing', async () => {
    const cwd = await fresh('env-refused');
    const unset = errorLine(await cli(['init', '--master-key-env', KEY_VAR], { cwd, env: cleanEnv() }), 'InvalidArgument');
    expect(unset).toContain(`--master-key-env ${KEY_VAR}`);
    expect(unset).toMatch(new RegExp(`${KEY_VAR} is not set`));
    const empty = errorLine(await cli(['init', '--master-key-env', KEY_VAR], { cwd, env: cleanEnv({ [KEY_VAR]: '' }) }), 'InvalidArgument');
    expect(empty).toMatch(new RegExp(`${KEY_VAR} is set but empty`));
    // a key-shaped value where the name goes (a fixed test string, not a secret) is refused without being repeated
    const keyShaped = 'bm90IGEga2V5OiBhIHRlc3Qgc3RyaW5nIG9ubHkuLi4=';
    const notAName = errorLine(await cli(['init', '--master-key-env', keyShaped], { cwd, env: cleanEnv() }), 'InvalidArgument');
    expect(notAName).toContain('--master-key-env takes the name of an environment variable');
    expect(notAName).not.toContain(keyShaped);
    expect(await readdir(cwd)).toEqual([]);
  });
});

describe('the master key flags refused', () => {
  it('with each other or with --passphrase-file (before or after init), naming both flags; nothing is created', async () => {
    const cwd = await fresh('conflicts');
    await writeKeyFile(join(cwd, 'mk'), newKey());
    await writeFile(join(cwd, 'pp'), `${TEST_PASSPHRASE}\n`, { mode: 0o600 });
    const env = cleanEnv({ [KEY_VAR]: newKey() });
    const both = errorLine(await cli(['init', '--master-key-file', 'mk', '--master-key-env', KEY_VAR], { cwd, env }), 'InvalidArgument');
    expect(both).toContain('--master-key-file');
    expect(both).toContain('--master-key-env');
    for (const args of [
      ['init', '--master-key-file', 'mk', '--passphrase-file', 'pp'],
      ['--passphrase-file', 'pp', 'init', '--master-key-env', KEY_VAR],
    ]) {
      const line = errorLine(await cli(args, { cwd, env }), 'InvalidArgument');
      expect(line).toContain(args.includes('--master-key-file') ? '--master-key-file' : '--master-key-env');
      expect(line).toContain('--passphrase-file');
    }
    expect((await readdir(cwd)).sort()).toEqual(['mk', 'pp']);
  });

  it('with pkcs11 (explicit or implied) or a cloud backend, naming the flag, before the token or the cloud is reached', async () => {
    const cwd = await fresh('other-backends');
    // a SoftHSM config that does not exist: had init loaded the module, it would fail on that instead
    const env = cleanEnv({ SOFTHSM2_CONF: join(cwd, 'no-softhsm2.conf'), [KEY_VAR]: newKey() });
    const cases: [string[], string][] = [
      [['init', '--backend', 'pkcs11', '--module', '/usr/lib/softhsm/libsofthsm2.so', '--token-label', 'x', '--master-key-file', 'f'], '--master-key-file'],
      [['init', '--module', '/usr/lib/softhsm/libsofthsm2.so', '--token-label', 'x', '--master-key-env', KEY_VAR], '--master-key-env'],
      [['init', '--backend', 'aws-kms', '--region', 'eu-west-1', '--master-key-file', 'f'], '--master-key-file'],
    ];
    for (const [args, flag] of cases) {
      const line = errorLine(await cli(args, { cwd, env }), 'InvalidArgument');
      expect(line).toContain(`${flag} applies to the software backend`);
      expect(line).toContain(`--backend ${args.includes('aws-kms') ? 'aws-kms' : 'pkcs11'}`);
    }
    expect(await readdir(cwd)).toEqual([]);
  });

  it('on an existing store protected the other way (init --force): refused with the flags to give; the old config stays', async () => {
    const cwd = await fresh('other-kind');
    const key = newKey();
    await writeKeyFile(join(cwd, 'mk'), key);
    expect((await cli(['init'], { cwd, env: testEnv() })).code).toBe(0);
    const before = await readFile(join(cwd, '.olocus', 'config.json'), 'utf8');
    const onPassphraseStore = errorLine(await cli(['init', '--force', '--master-key-file', 'mk'], { cwd, env: cleanEnv() }), 'InvalidConfiguration');
    expect(onPassphraseStore).toMatch(/protected by a passphrase/);
    expect(onPassphraseStore).toContain('OLOCUS_HSM_PASSPHRASE or --passphrase-file');
    expect(onPassphraseStore).not.toContain(key);
    expect(await readFile(join(cwd, '.olocus', 'config.json'), 'utf8')).toBe(before);

    const other = await fresh('other-kind-2');
    await writeKeyFile(join(other, 'mk'), key);
    expect((await cli(['init', '--master-key-file', 'mk'], { cwd: other, env: cleanEnv() })).code).toBe(0);
    const mkConfig = await readFile(join(other, '.olocus', 'config.json'), 'utf8');
    const onMasterKeyStore = errorLine(await cli(['init', '--force'], { cwd: other, env: testEnv() }), 'InvalidConfiguration');
    expect(onMasterKeyStore).toMatch(/protected by a master key/);
    expect(onMasterKeyStore).toContain('--master-key-file PATH or --master-key-env NAME');
    expect(await readFile(join(other, '.olocus', 'config.json'), 'utf8')).toBe(mkConfig);
  });
});

describe('--passphrase-file on a master-key store', () => {
  it('is refused: the store is opened by a master key (backend.options.masterKey), not a passphrase', async () => {
    const cwd = await fresh('override');
    await writeKeyFile(join(cwd, 'mk'), newKey());
    await writeFile(join(cwd, 'pp'), `${TEST_PASSPHRASE}\n`, { mode: 0o600 });
    expect((await cli(['init', '--master-key-file', 'mk'], { cwd, env: cleanEnv() })).code).toBe(0);
    expect((await cli(['keys', 'list'], { cwd, env: cleanEnv() })).code).toBe(0);
    const line = errorLine(await cli(['--passphrase-file', 'pp', 'keys', 'list'], { cwd, env: cleanEnv() }), 'InvalidArgument');
    expect(line).toContain('--passphrase-file');
    expect(line).toContain('opened by a master key (backend.options.masterKey), not a passphrase');
    expect(line).toContain(join(cwd, '.olocus', 'config.json'));
    expect(line).not.toContain(TEST_PASSPHRASE);
  });
});

describe('help', () => {
  it('init --help lists both flags', async () => {
    const help = await cli(['init', '--help'], { cwd: dir, env: cleanEnv() });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--master-key-file <path>');
    expect(help.stdout).toContain('--master-key-env <name>');
    expect(existsSync(join(dir, '.olocus'))).toBe(false);
  });
});
