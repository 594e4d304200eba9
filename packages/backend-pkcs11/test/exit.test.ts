/**
 * No exit path crashes (issue 18, item 10): one-shot processes that open the backend, verify or
 * sign once (or a few times at once, which starts the sign threads) and exit — with and without close(), naturally or through process.exit() — six at a
 * time, as a CLI run from scripts would. Before the fix about 3 % of such runs died with SIGSEGV in
 * pkcs11.node (a sign thread still loading the addon while the process exited).
 *
 * The children run the package as built (dist), from a directory inside this package.
 */
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';
import { Pkcs11Backend } from '../src/index.js';

const packageDir = resolve(import.meta.dirname, '..');
// the children run the package as built (turbo builds before it tests), as an application would
const distEntry = join(packageDir, 'dist', 'index.js');
// one token per lane, each in its own token directory: SoftHSM 2.6.1 rewrites token.object at every
// C_Login and reads every token of its directory at C_Initialize, and a process reading a file
// another process is writing does not see the token ("no token labelled ...") or fails with
// CKR_GENERAL_ERROR — a multi-process race of SoftHSM's file store, not what this test is about
const LANES = 6;
const tokens = Array.from({ length: LANES }, (_, i) => createToken(`exit-${i}`));
const build = mkdtempSync(join(packageDir, '.exit-build-'));
afterAll(() => rmSync(build, { recursive: true, force: true }));

const CHILD = `
import { readFileSync } from 'node:fs';
const [mode, close, exit] = process.argv.slice(2);
const { Pkcs11Backend } = await import(${JSON.stringify(pathToFileURL(distEntry).href)});
// burst: dispatch 'threads' starts the sign threads with the backend, the case that crashed
const backend = new Pkcs11Backend({ libraryPath: process.env.LIB, tokenLabel: process.env.TOKEN, dispatch: mode === 'burst' ? 'threads' : 'auto' }, { pin: process.env.TEST_PIN });
await backend.initialize();
const data = Buffer.from('one-shot message');
if (mode === 'verify') {
  const ok = await backend.verify(process.env.KEY, data, readFileSync(process.env.SIG));
  if (!ok) { console.error('not verified'); process.exit(3); }
  console.log('Verified OK');
} else if (mode === 'sign') {
  const signature = await backend.sign(process.env.KEY, data);
  console.log('signed', signature.length);
} else {
  // the process then exits while the threads may still be starting
  const signatures = await Promise.all([1, 2, 3, 4].map(() => backend.sign(process.env.KEY, data)));
  console.log('signed', signatures[0].length, backend.metrics().signThreads);
}
if (close === 'close') await backend.close();
if (exit === 'exit') process.exit(0);
`;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  args: string[];
}

function runChild(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [join(build, 'child.mjs'), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout, stderr, args });
    });
  });
}

describe('one-shot processes exit cleanly', () => {
  const envs: NodeJS.ProcessEnv[] = [];

  beforeAll(async () => {
    if (!existsSync(distEntry)) throw new Error(`${distEntry} not found: build the package first (pnpm --filter @olocus/hsm-backend-pkcs11 build)`);
    writeFileSync(join(build, 'child.mjs'), CHILD);
    for (const [i, token] of tokens.entries()) {
      const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label }, { pin: token.pin });
      await backend.initialize();
      const key = await backend.generateKeyPair({ id: 'exit-p256', algorithm: 'ECDSA_P256' });
      const sigFile = join(build, `sig-${i}.bin`);
      writeFileSync(sigFile, await backend.sign(key, Buffer.from('one-shot message')));
      await backend.close();
      // the lane's own token directory: a copy of this token alone (made after the key, before any child runs)
      const laneDir = join(build, `lane-${i}`);
      mkdirSync(join(laneDir, 'tokens'), { recursive: true });
      cpSync(token.path, join(laneDir, 'tokens', basename(token.path)), { recursive: true });
      const conf = join(laneDir, 'softhsm2.conf');
      writeFileSync(conf, `directories.tokendir = ${join(laneDir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
      // the PIN goes to the children through the environment, never argv
      envs.push({ ...process.env, SOFTHSM2_CONF: conf, LIB: SOFTHSM_LIB, TOKEN: token.label, TEST_PIN: token.pin, KEY: 'exit-p256', SIG: sigFile });
    }
  });

  it('200 one-shot verify/sign processes, 6 at a time, with and without close(), all exit 0', async () => {
    const total = 200;
    const runs: Run[] = [];
    let next = 0;
    const started = Date.now();
    const lane = async (env: NodeJS.ProcessEnv) => {
      for (;;) {
        const i = next++;
        if (i >= total) return;
        const args = [['verify', 'sign', 'burst'][i % 3]!, Math.floor(i / 3) % 2 === 0 ? 'close' : 'no-close', Math.floor(i / 6) % 2 === 0 ? 'natural' : 'exit'];
        runs.push(await runChild(args, env));
      }
    };
    await Promise.all(envs.map(lane));
    const bad = runs.filter((r) => r.code !== 0 || r.signal !== null || !/Verified OK|signed 64/.test(r.stdout));
    const summary = bad.slice(0, 5).map((r) => `${r.args.join(' ')}: code ${r.code} signal ${r.signal} ${r.stderr.replace(/^.*\n.*\n.*\n/, "").slice(0, 600)}`);
    expect(bad.length, `${bad.length} of ${total} runs failed in ${Date.now() - started} ms:\n${summary.join('\n')}`).toBe(0);
    expect(runs).toHaveLength(total);
    // the burst runs did start sign threads (so the exit-while-starting path was exercised)
    expect(runs.filter((r) => r.args[0] === 'burst' && /signed 64 (starting|ready)/.test(r.stdout)).length).toBeGreaterThan(0);
  });
});
