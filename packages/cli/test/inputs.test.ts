import { spawn } from 'node:child_process';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cleanEnv, cli, lines, tempDir, type RunResult } from './helpers.js';

/**
 * Inputs that must not hurt (issue 11): unbounded inputs, output paths that are directories or
 * `-`, a closed stdout, control characters in user values, half-done key creations, and
 * messages that name the user's flag or file, what is wrong and what to do.
 */

const env = cleanEnv({ OLOCUS_HSM_PASSPHRASE: 'inputs-test-passphrase-8c2f41' });
let dir: string;
let cleanup: () => Promise<void>;

async function ok(args: string[]): Promise<RunResult> {
  const r = await cli(args, { cwd: dir, env });
  expect(r.code, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
}

/** One line on stderr, `olocus-hsm: CODE: ...`, no stack trace; returns the line. */
async function fails(args: string[], code: string, exit = 2): Promise<string> {
  const r = await cli(args, { cwd: dir, env });
  expect(r.code, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(exit);
  const errLines = lines(r.stderr);
  expect(errLines, r.stderr).toHaveLength(1);
  expect(errLines[0]).toMatch(new RegExp(`^olocus-hsm: ${code}: `));
  expect(r.stderr).not.toMatch(/\n\s+at /);
  return errLines[0]!;
}

async function temporaries(folder: string): Promise<string[]> {
  return (await readdir(folder)).filter((f) => f.endsWith('.tmp'));
}

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('olocus-cli-inputs-'));
  await ok(['init']);
  await ok(['keys', 'create', '--id', 'ec', '--algorithm', 'ECDSA_P256']);
  await ok(['keys', 'create', '--id', 'ed', '--algorithm', 'Ed25519', '--no-rotation']);
  await writeFile(join(dir, 'msg'), 'hello');
  await ok(['sign', '--key', 'ec', '--in', 'msg', '--out', 'msg.sig']);
}, 120_000);
afterAll(async () => cleanup?.());

/** Peak resident memory and bytes read of a child, sampled from /proc until `until` says stop. */
async function watch(pid: number, until: (s: { rss: number; read: number; ms: number }) => boolean, maxMs: number): Promise<{ peakRss: number; read: number }> {
  const started = Date.now();
  let peakRss = 0;
  let read = 0;
  for (;;) {
    await new Promise((r) => setTimeout(r, 200));
    let status: string;
    let io: string;
    try {
      [status, io] = await Promise.all([readFile(`/proc/${pid}/status`, 'utf8'), readFile(`/proc/${pid}/io`, 'utf8')]);
    } catch {
      break; // exited
    }
    const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
    read = Number(/rchar:\s+(\d+)/.exec(io)?.[1] ?? 0);
    peakRss = Math.max(peakRss, rss);
    if (until({ rss, read, ms: Date.now() - started }) || Date.now() - started > maxMs) break;
  }
  return { peakRss, read };
}

describe('inputs without a size limit', () => {
  it('sign --in /dev/zero with ECDSA streams: memory stays bounded while it reads far more than it holds', async () => {
    const child = spawn(process.execPath, [BIN, 'sign', '--key', 'ec', '--in', '/dev/zero', '--out', 'zero.sig'], { cwd: dir, env, stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const MiB = 1024 * 1024;
    const { peakRss, read } = await watch(child.pid!, (s) => s.read >= 768 * MiB, 60_000);
    child.kill('SIGKILL');
    await exited;
    // Reading everything into memory (the old behaviour) makes RSS grow with the bytes read.
    expect(read, 'the signer should have read at least 256 MiB of /dev/zero').toBeGreaterThan(256 * MiB);
    expect(peakRss).toBeLessThan(400 * MiB);
    expect(peakRss * 2).toBeLessThan(read);
    expect(await temporaries(dir)).toEqual([]);
  }, 90_000);

  it('sign --in /dev/zero with Ed25519 ends with an error naming the flag, the file and the limit', async () => {
    const line = await fails(['sign', '--key', 'ed', '--in', '/dev/zero', '--out', 'zero-ed.sig'], 'InvalidArgument');
    expect(line).toContain('--in /dev/zero');
    expect(line).toContain('64 MiB');
    expect(line).toContain('Ed25519');
    expect(await temporaries(dir)).toEqual([]);
  }, 90_000);

  it('verify --signature /dev/zero stops at 64 KiB naming the flag and the limit', async () => {
    const started = Date.now();
    const line = await fails(['verify', '--key', 'ec', '--in', 'msg', '--signature', '/dev/zero'], 'InvalidArgument');
    expect(line).toContain('--signature');
    expect(line).toContain('64 KiB');
    expect(Date.now() - started).toBeLessThan(30_000);
  }, 60_000);
});

describe('one output helper for every command', () => {
  it('--out DIR is refused naming the flag and that it is a directory, with nothing written and no *.tmp', async () => {
    const out = join(dir, 'outdir');
    await mkdir(out);
    for (const args of [
      ['audit', 'export', '--out', out],
      ['compliance', 'report', '--framework', 'soc2', '--format', 'json', '--out', out],
      ['sign', '--key', 'ec', '--in', 'msg', '--out', out],
      ['keys', 'export-public', '--id', 'ec', '--format', 'pem', '--out', out],
      ['audit', 'export', '--out', `${join(dir, 'missing-folder')}/x.jsonl`],
    ]) {
      const r = await cli(args, { cwd: dir, env });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain('--out');
      if (!args.at(-1)!.includes('missing-folder')) expect(r.stderr).toContain('is a directory');
      else expect(r.stderr).toContain('does not exist');
      expect(await readdir(out)).toEqual([]);
      expect(await temporaries(dir)).toEqual([]);
    }
  }, 120_000);

  it('- is standard output everywhere: audit export --out -, compliance report --out -', async () => {
    const exported = await ok(['audit', 'export', '--out', '-']);
    const first = JSON.parse(lines(exported.stdout)[0]!) as { kind: string };
    expect(first.kind).toBe('header');
    const report = await ok(['compliance', 'report', '--framework', 'soc2', '--format', 'json', '--out', '-']);
    expect((JSON.parse(report.stdout) as { framework?: unknown }) ).toBeTruthy();
    expect((await readdir(dir)).includes('-')).toBe(false);
  }, 60_000);

  it('files that carry audit data are written whole and private (0600)', async () => {
    await ok(['audit', 'export', '--out', 'log.jsonl']);
    await ok(['compliance', 'report', '--framework', 'soc2', '--format', 'md', '--out', 'report.md']);
    for (const f of ['log.jsonl', 'report.md', 'report.md.sig.json']) expect(((await stat(join(dir, f))).mode & 0o777).toString(8), f).toBe('600');
    expect(await temporaries(dir)).toEqual([]);
  }, 60_000);
});

/** Runs the CLI with its stdout already closed by the reader, as `| head -1` does once it has its line. */
function withClosedStdout(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr });
    });
  });
}

describe('a closed stdout ends the command quietly', () => {
  it('audit tail, audit tail -f, keys history, rotation status: exit 0, no EPIPE stack trace', async () => {
    for (const args of [['audit', 'tail', '-n', '200'], ['audit', 'tail', '-f'], ['keys', 'history', '--id', 'ec'], ['rotation', 'status'], ['audit', 'tail', '--json']]) {
      const r = await withClosedStdout(args);
      expect(r.signal, `${args.join(' ')} did not end by itself`).toBeNull();
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stderr).not.toMatch(/EPIPE|\n\s+at /);
    }
  }, 120_000);
});

describe('user values are escaped on a terminal, exact in JSON', () => {
  const reason = 'ok\u001b[31mRED\nFORGED line';

  it('keys suspend / keys history / audit tail print no ESC and no forged line; --json keeps the value', async () => {
    const suspended = await ok(['keys', 'suspend', '--id', 'ec', '--reason', reason]);
    const history = await ok(['keys', 'history', '--id', 'ec']);
    const tail = await ok(['audit', 'tail', '-n', '50']);
    for (const out of [suspended.stdout + suspended.stderr, history.stdout, tail.stdout]) {
      expect(out).not.toContain('\u001b');
      expect(lines(out).some((l) => l.startsWith('FORGED'))).toBe(false);
    }
    expect(suspended.stdout).toContain('ok\\e[31mRED\\nFORGED line');
    const asJson = await ok(['keys', 'history', '--id', 'ec', '--json']);
    const h = JSON.parse(asJson.stdout) as { history: { reason: string }[] };
    expect(h.history.map((c) => c.reason)).toContain(reason);
    await ok(['keys', 'resume', '--id', 'ec', '--reason', 'back']);
  }, 60_000);

  it('an --actor with control characters is refused naming the flag', async () => {
    const line = await fails(['keys', 'suspend', '--id', 'ec', '--reason', 'x', '--actor', 'eve\u001b[2J'], 'InvalidArgument');
    expect(line).toContain('--actor');
    expect(line).not.toContain('\u001b');
  }, 30_000);
});

describe('key creation leaves nothing half-made', () => {
  it('keys create --id x while a plain key x.v1 exists is refused and leaves no logical key x', async () => {
    await ok(['keys', 'create', '--id', 'half.v1', '--algorithm', 'Ed25519', '--no-rotation']);
    const line = await fails(['keys', 'create', '--id', 'half', '--algorithm', 'Ed25519'], 'KeyAlreadyExists');
    expect(line).toContain('half.v1');
    const listed = JSON.parse((await ok(['keys', 'list', '--json'])).stdout) as { keys: { id: string; keyId?: string }[] };
    expect(listed.keys.filter((k) => k.id === 'half')).toEqual([]);
    await fails(['keys', 'history', '--id', 'half'], 'KeyNotFound');
    // Once the blocking key is gone the same creation works: nothing was left behind.
    await ok(['keys', 'destroy', '--id', 'half.v1']);
    await ok(['keys', 'create', '--id', 'half', '--algorithm', 'Ed25519']);
  }, 60_000);

  it('keys create --id y.v2 --no-rotation is refused while logical key y exists; y still rotates', async () => {
    const line = await fails(['keys', 'create', '--id', 'ec.v2', '--algorithm', 'ECDSA_P256', '--no-rotation'], 'KeyAlreadyExists');
    expect(line).toContain('--id ec.v2');
    expect(line).toContain('"ec"');
    await ok(['keys', 'rotate', '--id', 'ec', '--reason', 'after refused look-alike']);
  }, 60_000);
});

describe('internal keys', () => {
  it('keys destroy --id olocus-audit-checkpoint is refused (PolicyViolation) and the key stays', async () => {
    const line = await fails(['keys', 'destroy', '--id', 'olocus-audit-checkpoint'], 'PolicyViolation');
    expect(line).toContain('olocus-audit-checkpoint');
    await ok(['keys', 'show', '--id', 'olocus-audit-checkpoint']);
  }, 30_000);
});

describe('messages name the flag or file, what is wrong and what to do', () => {
  it('a 118-character logical id: --id and the real limit, no internal name', async () => {
    const id = 'a'.repeat(118);
    const line = await fails(['keys', 'create', '--id', id, '--algorithm', 'Ed25519'], 'InvalidArgument');
    expect(line).toContain('--id');
    expect(line).toContain('117');
    expect(line).toContain('--no-rotation');
    expect(line).not.toContain('baseKeyId');
  }, 30_000);

  it('--rotation-interval forever names the flag and shows valid durations, not an internal field', async () => {
    const line = await fails(['keys', 'create', '--id', 'never', '--algorithm', 'Ed25519', '--rotation-interval', 'forever'], 'InvalidArgument');
    expect(line).toContain('--rotation-interval "forever"');
    expect(line).toContain('90d');
    expect(line).not.toMatch(/\brotationInterval\b/);
    await fails(['keys', 'history', '--id', 'never'], 'KeyNotFound');
  }, 30_000);

  it('a 10,000-character id is shortened in the message', async () => {
    const id = 'b'.repeat(10_000);
    for (const args of [['keys', 'create', '--id', id, '--algorithm', 'Ed25519'], ['keys', 'show', '--id', id]]) {
      const r = await cli(args, { cwd: dir, env });
      expect(r.code).toBe(2);
      expect(r.stderr.length).toBeLessThan(600);
      expect(r.stderr).toContain('…(10000 chars)');
    }
  }, 30_000);

  it('a corrupt key file is shown as unreadable with its file, not as missing', async () => {
    await ok(['keys', 'create', '--id', 'broken', '--algorithm', 'Ed25519']);
    const file = join(dir, '.olocus', 'keys', 'broken.v1.key.json');
    await writeFile(file, '{"truncated": ');
    const r = await ok(['keys', 'list']);
    const row = lines(r.stdout).find((l) => l.startsWith('broken '))!;
    expect(row).toContain('unreadable');
    expect(row).toContain('broken.v1.key.json');
    expect(r.stdout).not.toContain('missing in backend');
    const j = JSON.parse((await ok(['keys', 'list', '--json'])).stdout) as { keys: { id: string; unreadable?: { file?: string } }[] };
    expect(j.keys.find((k) => k.id === 'broken')?.unreadable?.file).toContain('broken.v1.key.json');
  }, 60_000);

  it('the RSA-PSS sign note says PSS', async () => {
    await ok(['keys', 'create', '--id', 'pss', '--algorithm', 'RSA_PSS_2048', '--no-rotation']);
    const r = await ok(['sign', '--key', 'pss', '--in', 'msg', '--out', 'pss.sig']);
    expect(r.stderr).toContain('RSA_PSS_2048, PSS');
    expect(r.stderr).not.toContain('pkcs1');
  }, 60_000);

  it('audit verify on a tampered log says what was checked before the problem and what to do', async () => {
    const db = new Database(join(dir, '.olocus', 'audit.db'));
    const first = db.prepare('SELECT seq FROM audit_records ORDER BY seq LIMIT 1').get() as { seq: number };
    db.prepare('UPDATE audit_records SET actor = ? WHERE seq = ?').run('mallory', first.seq);
    db.close();
    const r = await cli(['audit', 'verify'], { cwd: dir, env });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('TAMPERED');
    expect(r.stderr).not.toMatch(/\(0 records/);
    expect(r.stderr).toContain('no record verified before it');
    expect(r.stderr).toContain('audit export');
  }, 60_000);
});
