/**
 * Other processes logging in to the same SoftHSM token while this one starts.
 *
 * SoftHSM rewrites token.object at every C_Login, truncating it before it takes the file lock; a
 * process that runs C_Initialize at that moment reads an empty file and sees no token at all. The
 * CLI meets this whenever several one-shot commands start together (CI caught `verify` answering
 * "no token labelled ...; tokens found: (none)"). The backend must re-read the token directory
 * rather than report a missing token.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { Pkcs11Backend } from '../src/index.js';
import { SOFTHSM_LIB, createToken, softHsmEnv } from '@olocus/hsm-test-support';

const token = createToken('busy-login');
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

/** A shell loop of pkcs11-tool runs, until stopped; counts the runs that did not find the token. */
function loop(login: boolean): { stop: () => Promise<{ runs: number; missed: number }> } {
  const args = ['--module', SOFTHSM_LIB, '--token-label', token.label, '-O', ...(login ? ['--login', '--pin', 'env:OLOCUS_TEST_PIN'] : [])].map((a) => `'${a}'`).join(' ');
  const script = `runs=0; missed=0; trap 'echo "$runs $missed"; exit 0' TERM; while :; do runs=$((runs+1)); pkcs11-tool ${args} >/dev/null 2>/tmp/.olocus-busy-$$ || { grep -q 'No slot with token' /tmp/.olocus-busy-$$ && missed=$((missed+1)); }; done`;
  const child = spawn('bash', ['-c', script], { env: { ...process.env, SOFTHSM2_CONF: softHsmEnv().conf, OLOCUS_TEST_PIN: token.pin }, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return {
    stop: () =>
      new Promise((resolve) => {
        child.on('exit', () => {
          const [runs, missed] = out.trim().split(' ').map(Number);
          resolve({ runs: runs ?? 0, missed: missed ?? 0 });
        });
        child.kill('SIGTERM');
      }),
  };
}

describe('start-up while other processes log in to the token', () => {
  it('every open finds the token and signs (start-up begins again when the token went missing), and the hazard was real', async () => {
    const setup = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, signThreads: 0 }, { pin: token.pin });
    await setup.initialize();
    await setup.generateKeyPair({ id: 'busy-key', algorithm: 'ECDSA_P256' });
    await setup.close();
    const loggers = [loop(true), loop(true), loop(true)];
    const observer = loop(false);
    await new Promise((r) => setTimeout(r, 300));
    let retries = 0;
    const failures: string[] = [];
    const opens = 25;
    let seen = { runs: 0, missed: 0 };
    try {
      for (let i = 0; i < opens; i++) {
        const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, signThreads: 0 }, { pin: token.pin });
        try {
          await backend.initialize();
          retries += backend.metrics().startRetries;
          const data = Buffer.from(`message ${i}`);
          expect(await backend.verify('busy-key', data, await backend.sign('busy-key', data))).toBe(true);
        } catch (error) {
          failures.push(`open ${i}: ${(error as Error).message}`);
        } finally {
          await backend.close();
        }
      }
    } finally {
      seen = await observer.stop();
      await Promise.all(loggers.map((l) => l.stop()));
    }
    console.log(`[figures] ${opens} opens beside 3 pkcs11-tool login loops: ${retries} start-ups begun again; an observer without retry missed the token in ${seen.missed} of ${seen.runs} runs`);
    expect(failures).toEqual([]);
    // without this, the test would prove nothing: the observer (no retry) must have met the missing token
    expect(seen.missed, 'the concurrent logins never hid the token from the observer: the hazard was not reproduced').toBeGreaterThan(0);
  }, 120_000);
});
