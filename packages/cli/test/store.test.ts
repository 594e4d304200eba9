import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cleanEnv, cli, errorLine, freshDir, lines, listFiles, tempDir, testEnv } from './helpers.js';

/**
 * The key store's lifecycle through the CLI: only `init` creates a store, with a passphrase the
 * operator gives (never written next to the keys); the store's files are private; the audit log
 * has one record per operation; and a short PIN in the environment does not touch data output.
 */

let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => ({ dir, cleanup } = await tempDir('olocus-cli-store-')));
afterAll(async () => cleanup?.());

const fresh = (name: string) => freshDir(dir, name);

interface Rec {
  seq: number;
  type: string;
  outcome: string;
  keyId?: string;
  details?: Record<string, unknown>;
}

async function records(cwd: string): Promise<Rec[]> {
  const r = await cli(['audit', 'tail', '--lines', '100000', '--json'], { cwd });
  expect(r.code, r.stderr).toBe(0);
  return lines(r.stdout).map((l) => JSON.parse(l) as Rec);
}

/** Records made after `after`, without the log's own bookkeeping (start, stop, reads of the log). */
async function operationRecords(cwd: string, after: number): Promise<Rec[]> {
  return (await records(cwd)).filter((r) => r.seq > after && !['audit.start', 'audit.stop', 'audit.access'].includes(r.type));
}

async function lastSeq(cwd: string): Promise<number> {
  return Math.max(0, ...(await records(cwd)).map((r) => r.seq));
}

describe('no command creates a store implicitly', () => {
  it('a command on a missing store fails, says to run init, and creates nothing', async () => {
    const cwd = await fresh('missing');
    await writeFile(join(cwd, 'msg'), 'x');
    for (const args of [['keys', 'list'], ['sign', '--key', 'k', '--in', 'msg', '--out', 'sig'], ['keys', 'create', '--id', 'k', '--algorithm', 'Ed25519'], ['info']]) {
      const line = errorLine(await cli(args, { cwd, env: testEnv() }), 'ConfigNotFound');
      expect(line).toContain('olocus-hsm init');
    }
    expect(await readdir(cwd)).toEqual(['msg']);
  });

  it('init without a passphrase source (no terminal) refuses and says how to give one', async () => {
    const cwd = await fresh('no-source');
    const line = errorLine(await cli(['init'], { cwd, env: cleanEnv() }), 'InvalidArgument');
    expect(line).toContain('OLOCUS_HSM_PASSPHRASE');
    expect(line).toContain('--passphrase-file');
    expect(line).toContain('terminal');
    expect(await readdir(cwd)).toEqual([]);
  });

  it('init refuses a passphrase shorter than 12 characters, from the environment or a file', async () => {
    const cwd = await fresh('short');
    const line = errorLine(await cli(['init'], { cwd, env: cleanEnv({ OLOCUS_HSM_PASSPHRASE: 'x' }) }), 'InvalidArgument');
    expect(line).toContain('at least 12');
    expect(line).toContain('OLOCUS_HSM_PASSPHRASE');
    await writeFile(join(cwd, 'pp'), 'elevenchars\n');
    const fromFile = errorLine(await cli(['--passphrase-file', 'pp', 'init'], { cwd, env: cleanEnv() }), 'InvalidArgument');
    expect(fromFile).toContain('at least 12');
    expect(fromFile).not.toContain('elevenchars');
    expect(await readdir(cwd)).toEqual(['pp']);
  });

  it('an empty variable is reported as empty, not as unset', async () => {
    const cwd = await fresh('empty');
    expect(errorLine(await cli(['init'], { cwd, env: cleanEnv({ OLOCUS_HSM_PASSPHRASE: '' }) }), 'InvalidArgument')).toMatch(/OLOCUS_HSM_PASSPHRASE is set but empty/);
    expect((await cli(['init'], { cwd, env: testEnv() })).code).toBe(0);
    const line = errorLine(await cli(['keys', 'list'], { cwd, env: cleanEnv({ OLOCUS_HSM_PASSPHRASE: '' }) }), 'InvalidConfiguration');
    expect(line).toMatch(/OLOCUS_HSM_PASSPHRASE is set but empty/);
    expect(line).not.toMatch(/is not set/);
  });

  it('init on a terminal asks twice (no echo); the typed passphrase seals the store and is written nowhere', async () => {
    const cwd = await fresh('tty');
    const typed = 'typed-at-the-terminal-31';
    const r = await runOnTerminal(['init'], cwd, [typed, typed]);
    expect(r.code, r.output).toBe(0);
    expect(r.output).toMatch(/passphrase for the new key store/);
    expect(r.output).toMatch(/the same passphrase again/);
    expect(r.output).not.toContain(typed);
    const config = JSON.parse(await readFile(join(cwd, '.olocus', 'config.json'), 'utf8')) as { backend: { options: { passphrase: unknown } } };
    expect(config.backend.options.passphrase).toEqual({ env: 'OLOCUS_HSM_PASSPHRASE' });
    for (const file of await listFiles(join(cwd, '.olocus'))) expect((await readFile(file)).includes(Buffer.from(typed)), file).toBe(false);
    expect((await cli(['keys', 'list'], { cwd, env: cleanEnv({ OLOCUS_HSM_PASSPHRASE: typed }) })).code).toBe(0);
    // on a terminal, a later command asks for the variable the config names when it is not set
    const later = await runOnTerminal(['keys', 'list'], cwd, [typed]);
    expect(later.code, later.output).toBe(0);
    expect(later.output).toMatch(/OLOCUS_HSM_PASSPHRASE is not set\): /);
    expect(later.output).not.toContain(typed);
    expect(errorLine(await cli(['keys', 'list'], { cwd, env: cleanEnv({ OLOCUS_HSM_PASSPHRASE: `${typed}-not` }) }), 'WrongPassphrase')).not.toContain(typed);

    const other = await fresh('tty-mismatch');
    const mismatch = await runOnTerminal(['init'], other, [typed, `${typed}x`]);
    expect(mismatch.code).toBe(2);
    expect(mismatch.output).toMatch(/the two passphrases differ/);
    expect(existsSync(join(other, '.olocus', 'config.json'))).toBe(false);
  });

  it('store files are 0600 and folders 0700; no passphrase file anywhere', async () => {
    const cwd = await fresh('modes');
    await writeFile(join(cwd, 'msg'), 'mode check');
    for (const args of [['init'], ['keys', 'create', '--id', 'm', '--algorithm', 'ECDSA_P256'], ['sign', '--key', 'm', '--in', 'msg', '--out', 'sig']]) {
      const r = await cli(args, { cwd });
      expect(r.code, r.stderr).toBe(0);
    }
    const store = join(cwd, '.olocus');
    for (const name of ['config.json', 'audit.db', 'rotation.db']) expect(statSync(join(store, name)).mode & 0o777, name).toBe(0o600);
    for (const file of await listFiles(store)) expect(statSync(file).mode & 0o077, file).toBe(0);
    expect(statSync(store).mode & 0o777).toBe(0o700);
    expect(statSync(join(store, 'keys')).mode & 0o777).toBe(0o700);
    expect((await listFiles(store)).some((f) => /passphrase/.test(f))).toBe(false);
    // a store file left readable by an older version is narrowed on the next use
    const { chmod } = await import('node:fs/promises');
    await chmod(join(store, 'audit.db'), 0o644);
    expect((await cli(['keys', 'list'], { cwd })).code).toBe(0);
    expect(statSync(join(store, 'audit.db')).mode & 0o777).toBe(0o600);
  });

  it('a removed key directory is not silently recreated', async () => {
    const cwd = await fresh('no-keys');
    expect((await cli(['init'], { cwd })).code).toBe(0);
    await rm(join(cwd, '.olocus', 'keys'), { recursive: true });
    const line = errorLine(await cli(['keys', 'list'], { cwd }), 'StoreNotFound');
    expect(line).toContain(join(cwd, '.olocus', 'keys'));
    expect(line).toContain('olocus-hsm init');
    expect(existsSync(join(cwd, '.olocus', 'keys'))).toBe(false);
  });

  it('demo --dir needs a passphrase like init; the throwaway demo needs none', async () => {
    const cwd = await fresh('demo');
    const r = await cli(['demo', '--dir', 'kept'], { cwd, env: cleanEnv() });
    expect(r.code).toBe(2);
    expect(lines(r.stderr).at(-1)).toMatch(/^olocus-hsm: InvalidArgument: demo --dir needs a passphrase .*OLOCUS_HSM_PASSPHRASE/);
    expect(existsSync(join(cwd, 'kept', '.olocus', 'config.json'))).toBe(false);
  });

  it('a damaged audit.db or rotation.db is named, with what to do', async () => {
    const cwd = await fresh('corrupt');
    expect((await cli(['init'], { cwd })).code).toBe(0);
    expect((await cli(['keys', 'create', '--id', 'c', '--algorithm', 'Ed25519'], { cwd })).code).toBe(0);
    const store = join(cwd, '.olocus');
    await rename(join(store, 'rotation.db'), join(store, 'rotation.db.good'));
    await writeFile(join(store, 'rotation.db'), 'this is not a database, it is a sentence that is long enough to be read as a header');
    const rot = errorLine(await cli(['keys', 'rotate', '--id', 'c'], { cwd }), 'StorageCorrupted');
    expect(rot).toContain(join(store, 'rotation.db'));
    expect(rot).toMatch(/backup/);
    await rename(join(store, 'rotation.db.good'), join(store, 'rotation.db'));
    await rename(join(store, 'audit.db'), join(store, 'audit.db.good'));
    await writeFile(join(store, 'audit.db'), 'this is not a database, it is a sentence that is long enough to be read as a header');
    const audit = errorLine(await cli(['keys', 'list'], { cwd }), 'StorageCorrupted');
    expect(audit).toContain(join(store, 'audit.db'));
    expect(audit).toMatch(/backup/);
  });
});

describe('one audit record per operation', () => {
  let cwd: string;
  beforeAll(async () => {
    cwd = await fresh('one-record');
    await writeFile(join(cwd, 'msg'), 'one record each');
    for (const args of [['init'], ['keys', 'create', '--id', 'plain', '--algorithm', 'ECDSA_P256', '--no-rotation'], ['keys', 'create', '--id', 'logical', '--algorithm', 'Ed25519']]) {
      const r = await cli(args, { cwd });
      expect(r.code, r.stderr).toBe(0);
    }
  });

  it('sign and verify with a plain key write one record each', async () => {
    let before = await lastSeq(cwd);
    const signed = await cli(['sign', '--key', 'plain', '--in', 'msg', '--out', 'plain.sig'], { cwd });
    expect(signed.code, signed.stdout + signed.stderr).toBe(0);
    expect((await operationRecords(cwd, before)).map((r) => [r.type, r.keyId, r.outcome])).toEqual([['key.sign', 'plain', 'success']]);
    before = await lastSeq(cwd);
    const verified = await cli(['verify', '--key', 'plain', '--in', 'msg', '--signature', 'plain.sig'], { cwd });
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect((await operationRecords(cwd, before)).map((r) => [r.type, r.keyId, r.outcome])).toEqual([['key.verify', 'plain', 'success']]);
    before = await lastSeq(cwd);
    const logical = await cli(['sign', '--key', 'logical', '--in', 'msg', '--out', 'logical.sig'], { cwd });
    expect(logical.code, logical.stdout + logical.stderr).toBe(0);
    expect((await operationRecords(cwd, before)).map((r) => [r.type, r.keyId])).toEqual([['key.sign', 'logical.v1']]);
  });

  it("keys create's existence probe is not recorded as a failed key access", async () => {
    const before = await lastSeq(cwd);
    expect((await cli(['keys', 'create', '--id', 'another', '--algorithm', 'ECDSA_P256'], { cwd })).code).toBe(0);
    const made = await operationRecords(cwd, before);
    expect(made.filter((r) => r.type === 'key.access')).toEqual([]);
    expect(made.filter((r) => r.type === 'key.generate').map((r) => r.keyId)).toEqual(['another.v1']);
    expect((await records(cwd)).filter((r) => r.outcome === 'failure')).toEqual([]);
  });

  it('the health canary signature is marked as such', async () => {
    const before = await lastSeq(cwd);
    const r = await cli(['health', '--json'], { cwd });
    expect([0, 1], r.stderr).toContain(r.code);
    const signs = (await operationRecords(cwd, before)).filter((x) => x.type === 'key.sign');
    expect(signs).toHaveLength(1);
    expect(signs[0]).toMatchObject({ keyId: 'olocus-health-canary', details: { purpose: 'health-canary' } });
    // the probe for the canary key before it existed is no failed key access either
    expect((await records(cwd)).filter((x) => x.outcome === 'failure')).toEqual([]);
  });
});

describe('a short PIN does not touch data output', () => {
  it('signature and JSON that contain a remembered 4-character secret come out intact', async () => {
    const cwd = await fresh('pin');
    await writeFile(join(cwd, 'msg'), 'deterministic Ed25519 message');
    expect((await cli(['init'], { cwd })).code).toBe(0);
    expect((await cli(['keys', 'create', '--id', 'release-2468', '--algorithm', 'Ed25519', '--no-rotation'], { cwd })).code).toBe(0);
    const sign = (env: Record<string, string>) => cli(['sign', '--key', 'release-2468', '--in', 'msg', '--out', '-', '--json'], { cwd, env: testEnv(env) });
    const plain = await sign({});
    expect(plain.code, plain.stderr).toBe(0);
    const signature = (JSON.parse(plain.stdout) as { signature: string }).signature;
    // Ed25519 is deterministic: the same signature again, now with a 4-character "PIN" taken from it
    const pin = /[A-Za-z0-9]{4}/.exec(signature)![0];
    for (const secret of ['2468', pin]) {
      const r = await sign({ OLOCUS_HSM_PIN: secret });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).not.toContain('REDACTED');
      const out = JSON.parse(r.stdout) as { key: string; signature: string };
      expect(out).toMatchObject({ key: 'release-2468', signature });
    }
    await writeFile(join(cwd, 'msg.sig'), Buffer.from(signature, 'base64'));
    const shown = await cli(['keys', 'show', '--id', 'release-2468'], { cwd, env: testEnv({ OLOCUS_HSM_PIN: '2468' }) });
    expect(shown.stdout).toMatch(/^id\s+release-2468$/m);
    const verified = await cli(['verify', '--key', 'release-2468', '--in', 'msg', '--signature', 'msg.sig'], { cwd, env: testEnv({ OLOCUS_HSM_PIN: '2468' }) });
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toContain('release-2468');
  });

  it('error text is still scrubbed of a secret standing on its own, and stays valid JSON', async () => {
    const { redact, rememberSecret, summarize } = await import('../src/errors.js');
    const { CliError } = await import('../src/errors.js');
    rememberSecret('7315');
    expect(redact('the PIN 7315 was refused')).toBe('the PIN [REDACTED] was refused');
    expect(redact('digest ab7315cd, seq 173155')).toBe('digest ab7315cd, seq 173155');
    const doc = redact(JSON.stringify({ error: { message: 'PIN 7315', details: { n: 7315 } } }));
    expect(JSON.parse(doc)).toEqual({ error: { message: 'PIN [REDACTED]', details: { n: 7315 } } });
    expect(summarize(new CliError('LoginFailed', 'pin "7315" refused')).message).toBe('pin "[REDACTED]" refused');
  });
});

describe('init flags', () => {
  it('PKCS#11 flags without --backend mean PKCS#11; with --backend software they are refused by name', async () => {
    const cwd = await fresh('flags');
    const implied = await cli(['init', '--module', join(cwd, 'no-such-module.so'), '--token-label', 't'], { cwd, env: cleanEnv({ OLOCUS_HSM_PIN: '123456' }) });
    expect(implied.code).toBe(2);
    // it tried the PKCS#11 module (and said it was writing a PKCS#11 config), not a software store
    expect(implied.stderr).toMatch(/PKCS#11 config/);
    expect(implied.stderr).toContain('no-such-module.so');
    expect(existsSync(join(cwd, '.olocus', 'keys'))).toBe(false);
    expect(existsSync(join(cwd, '.olocus', 'config.json'))).toBe(false);
    const refused = errorLine(await cli(['init', '--backend', 'software', '--module', '/x.so', '--token-label', 't'], { cwd, env: testEnv() }), 'InvalidArgument');
    expect(refused).toContain('--module, --token-label');
    expect(refused).toContain('--backend pkcs11');
  });

  it('init --help shows the secret-file flags; --passphrase-file works after init too', async () => {
    const help = await cli(['init', '--help'], { cwd: dir });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--pin-file <path>');
    expect(help.stdout).toContain('--passphrase-file <path>');
    const cwd = await fresh('file-after');
    await writeFile(join(cwd, 'pp'), 'a passphrase from a file\n');
    const r = await cli(['init', '--passphrase-file', 'pp', '--json'], { cwd, env: cleanEnv() });
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { backend: { options: { passphrase: unknown } } }).backend.options.passphrase).toEqual({ file: join(cwd, 'pp') });
    expect((await cli(['--passphrase-file', 'pp', 'keys', 'list'], { cwd, env: cleanEnv() })).code).toBe(0);
  });

  it('emergency rotation is refused by default, and the message says which config field allows it', async () => {
    const cwd = await fresh('emergency');
    expect((await cli(['init'], { cwd })).code).toBe(0);
    expect((await cli(['keys', 'create', '--id', 'e', '--algorithm', 'Ed25519'], { cwd })).code).toBe(0);
    const line = errorLine(await cli(['keys', 'rotate', '--id', 'e', '--emergency', '--reason', 'suspected leak'], { cwd }), 'PolicyViolation');
    expect(line).toContain('"allowEmergencyRotation": true');
    expect(line).toContain(join(cwd, '.olocus', 'config.json'));
  });
});

describe('internal keys', () => {
  it('isInternalKeyId names the checkpoint and canary keys (and a configured checkpoint id)', async () => {
    const { isInternalKeyId } = await import('../src/internal-keys.js');
    expect(isInternalKeyId('olocus-audit-checkpoint')).toBe(true);
    expect(isInternalKeyId('olocus-health-canary')).toBe(true);
    expect(isInternalKeyId('release')).toBe(false);
    expect(isInternalKeyId('my-checkpoint', ['my-checkpoint'])).toBe(true);
  });
});

/**
 * Runs the CLI on a pseudo-terminal (`script` from util-linux) and types each answer only after
 * its prompt appeared, as a person would (typing ahead would be echoed by the terminal before the
 * CLI turns echo off, which is not what this test is about).
 */
function runOnTerminal(args: string[], cwd: string, answers: string[]): Promise<{ code: number; output: string }> {
  const command = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd, env: cleanEnv({ TERM: 'dumb' }), stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let answered = 0;
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    const onData = (d: Buffer): void => {
      output += d.toString('utf8');
      const prompts = (output.match(/passphrase[^\n]*: /g) ?? []).length;
      while (answered < prompts && answered < answers.length) child.stdin.write(`${answers[answered++]}\r`);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, output });
    });
  });
}
