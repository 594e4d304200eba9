/**
 * Adaptive dispatch (issue 12): short operations inline in bounded batches, long ones on sign
 * threads, classified by measurement; each path can be forced.
 */
import { randomBytes, verify as nodeVerify } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { exportPublicKey, type KeyAlgorithm } from '@olocus/hsm-core';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';
import { Pkcs11Backend } from '../src/index.js';

const token = createToken('dispatch');
const backendWith = (options: Record<string, unknown>) =>
  new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, signThreads: 2, sessionPool: { minSessions: 4, maxSessions: 4 }, ...options }, { pin: token.pin });

const dsa = (algorithm: KeyAlgorithm) => (algorithm.startsWith('ECDSA') ? ('ieee-p1363' as const) : undefined);
const hash = (algorithm: KeyAlgorithm) => (algorithm === 'ECDSA_P384' ? 'sha384' : algorithm === 'ECDSA_P521' ? 'sha512' : algorithm === 'Ed25519' ? null : 'sha256');

async function signAndVerify(backend: Pkcs11Backend, id: string, algorithm: KeyAlgorithm, count: number, concurrent: boolean) {
  const pem = exportPublicKey(await backend.getPublicKey(id), 'pem');
  const one = async () => {
    const data = randomBytes(100);
    const signature = await backend.sign(id, data);
    expect(nodeVerify(hash(algorithm), data, { key: pem, dsaEncoding: dsa(algorithm) }, signature)).toBe(true);
  };
  if (concurrent) await Promise.all(Array.from({ length: count }, one));
  else for (let i = 0; i < count; i++) await one();
}

/** Waits until the sign threads are ready (bounded for a hung test, not a performance assertion). */
async function threadsReady(backend: Pkcs11Backend) {
  const deadline = Date.now() + 10_000;
  while (backend.metrics().signThreads !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  expect(backend.metrics().signThreads).toBe('ready');
}

/** The dispatch figures (average, samples, path) of the operation of key `id`. */
const opOf = (backend: Pkcs11Backend, id: string) => Object.entries(backend.metrics().dispatch.ops).find(([k]) => k.startsWith(`${id}:`))![1];

/** Where the signatures made by `work` were made. */
async function pathsOf(backend: Pkcs11Backend, work: () => Promise<unknown>) {
  const before = backend.metrics();
  await work();
  const after = backend.metrics();
  return { inline: after.inlineSigns - before.inlineSigns, threads: after.threadSigns - before.threadSigns };
}

describe('adaptive dispatch', () => {
  it('auto: P-256 (tens of µs) is signed inline and never starts the threads; RSA-4096 (over the whole per-turn budget) goes to the threads, P-384 where its measurement against the threshold puts it', async () => {
    const backend = backendWith({ dispatch: 'auto' });
    await backend.initialize();
    try {
      await backend.generateKeyPair({ id: 'd-p256', algorithm: 'ECDSA_P256' });
      await backend.generateKeyPair({ id: 'd-rsa', algorithm: 'RSA_4096' });
      await backend.generateKeyPair({ id: 'd-p384', algorithm: 'ECDSA_P384' });

      await signAndVerify(backend, 'd-p256', 'ECDSA_P256', 200, false);
      let m = backend.metrics();
      expect(m.inlineSigns).toBe(200);
      expect(m.threadSigns).toBe(0);
      expect(m.signThreads).toBe('idle'); // one caller at a time: no thread was ever needed
      const p256 = opOf(backend, 'd-p256');
      expect(p256.path).toBe('inline');
      expect(p256.opUs).toBeLessThan(m.dispatch.thresholdUs);

      // RSA-4096 (several ms on SoftHSM): measured inline during warm-up (two samples, since they
      // exceed the per-turn budget), then it is long: the threads start and take it
      await signAndVerify(backend, 'd-rsa', 'RSA_4096', 8, false);
      await threadsReady(backend);
      const mixed = await pathsOf(backend, async () => {
        await signAndVerify(backend, 'd-rsa', 'RSA_4096', 40, true);
        await signAndVerify(backend, 'd-p384', 'ECDSA_P384', 40, true);
      });
      m = backend.metrics();
      const rsa = opOf(backend, 'd-rsa');
      const p384 = opOf(backend, 'd-p384');
      // Each goes where its own measurement puts it against the threshold (the per-turn budget)
      // and the callers (40 at once: past any parallelFrom): RSA-4096 is over the budget on any
      // machine, P-384 (~0.3-0.6 ms on SoftHSM) may go either way. The rule, not the machine, is
      // tested; the threads path is forced in another test.
      for (const op of [rsa, p384]) {
        if (op.opUs > 1.5 * m.dispatch.thresholdUs) expect(op.path).toBe('threads');
        if (op.opUs < 0.67 * m.dispatch.thresholdUs) expect(op.path).toBe('inline');
      }
      // the 80 signatures went where their paths say (a key measured long signs at most five inline first)
      const threaded = [rsa, p384].filter((op) => op.path === 'threads').length;
      expect(mixed.threads).toBeGreaterThanOrEqual(threaded * 35);
      expect(mixed.inline + mixed.threads).toBe(80);
      // the hop is measured once threads have run; an operation is short when it fits in a turn
      expect(m.dispatch.hopUs).toBeGreaterThan(0);
      expect(m.dispatch.thresholdUs).toBe(m.dispatch.budgetUs);
      expect(rsa.opUs).toBeGreaterThan(p256.opUs);

      // P-256 under concurrency stays inline, overflowing to the (now ready) threads past the per-turn budget
      const burst = await pathsOf(backend, () => signAndVerify(backend, 'd-p256', 'ECDSA_P256', 400, true));
      expect(burst.inline + burst.threads).toBe(400);
      expect(burst.inline).toBeGreaterThan(0);
      expect(backend.metrics().pool?.inUse).toBe(0);
    } finally {
      await backend.close();
    }
  });

  it('auto: a few callers sign P-256 inline; from four callers per sign thread on, the threads take it (both cores sign)', async () => {
    const backend = new Pkcs11Backend(
      { libraryPath: SOFTHSM_LIB, tokenLabel: token.label, signThreads: 2, dispatch: 'auto', sessionPool: { minSessions: 16, maxSessions: 16 } },
      { pin: token.pin },
    );
    await backend.initialize();
    try {
      await backend.generateKeyPair({ id: 'c-p256', algorithm: 'ECDSA_P256' });
      const pem = exportPublicKey(await backend.getPublicKey('c-p256'), 'pem');
      const callers = (n: number, each: number) =>
        pathsOf(backend, () =>
          Promise.all(
            Array.from({ length: n }, async () => {
              for (let i = 0; i < each; i++) {
                const data = randomBytes(64);
                const signature = await backend.sign('c-p256', data);
                expect(nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
              }
            }),
          ),
        );
      // one caller: inline, and the threads never start
      expect(await callers(1, 50)).toEqual({ inline: 50, threads: 0 });
      expect(backend.metrics().signThreads).toBe('idle');
      // 16 callers (8 per thread) start the threads (inline while they load pkcs11js)...
      await callers(16, 5);
      await threadsReady(backend);
      // ...which then take nearly all of it
      const many = await callers(16, 60);
      expect(many.inline + many.threads).toBe(960);
      expect(many.threads / 960, `16 callers: ${JSON.stringify(many)}`).toBeGreaterThan(0.8);
      // 3 callers (under 4 per thread), threads ready: inline, but for what overflows a full
      // turn's budget (measured 20-25 % here: the callers keep submitting within the turn)
      const few = await callers(3, 100);
      expect(few.inline + few.threads).toBe(300);
      expect(few.inline / 300, `3 callers: ${JSON.stringify(few)}`).toBeGreaterThan(0.5);
      expect(backend.metrics().pool?.inUse).toBe(0);
    } finally {
      await backend.close();
    }
  });

  it('auto: an operation of half a turn or more is signed inline by a lone caller and goes to the threads from as many callers as threads', async () => {
    // RSA-2048 on SoftHSM takes 0.45-0.75 ms here, near the default 1 ms budget, and the machine
    // moves it: the budget is set from its measured time so that it sits at ~0.7 of a turn (short,
    // and over half) on any machine
    const probe = backendWith({ dispatch: 'inline' });
    await probe.initialize();
    let opUs: number;
    try {
      await probe.generateKeyPair({ id: 'h-rsa', algorithm: 'RSA_2048' });
      await signAndVerify(probe, 'h-rsa', 'RSA_2048', 20, false);
      opUs = opOf(probe, 'h-rsa').opUs;
    } finally {
      await probe.close();
    }
    const backend = backendWith({ dispatch: 'auto', inlineBudgetMs: (opUs * 1.4) / 1000 });
    await backend.initialize();
    try {
      const callers = (n: number, each: number) =>
        pathsOf(backend, () => Promise.all(Array.from({ length: n }, () => signAndVerify(backend, 'h-rsa', 'RSA_2048', each, false))));
      // a lone caller: inline, the threads never start (before, an operation over half the budget
      // went to the threads even for one caller: a hop added to every signature)
      expect(await callers(1, 30)).toEqual({ inline: 30, threads: 0 });
      expect(backend.metrics().signThreads).toBe('idle');
      const op = opOf(backend, 'h-rsa');
      expect(op.path).toBe('inline');
      // two callers (one per thread) start the threads...
      await callers(2, 10);
      await threadsReady(backend);
      // ...which then take nearly all of it (measured 78-80 of 80; a signature is inline only when
      // both results arrived in one harvest and a caller came back alone); with the rule for short
      // operations (4 callers per thread) two callers signed inline but for overflow: 34 of 80
      const two = await callers(2, 40);
      expect(two.inline + two.threads).toBe(80);
      expect(two.threads / 80, `2 callers: ${JSON.stringify(two)}`).toBeGreaterThan(0.8);
      expect(backend.metrics().pool?.inUse).toBe(0);
    } finally {
      await backend.close();
    }
  });

  it("dispatch 'inline': every signature inline, in batches bounded per event-loop turn (the loop keeps turning)", async () => {
    const backend = backendWith({ dispatch: 'inline', inlineBudgetMs: 1 });
    await backend.initialize();
    const delay = monitorEventLoopDelay({ resolution: 1 });
    try {
      await backend.generateKeyPair({ id: 'i-p256', algorithm: 'ECDSA_P256' });
      await backend.generateKeyPair({ id: 'i-rsa', algorithm: 'RSA_2048' });
      delay.enable();
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      await Promise.all(Array.from({ length: 2000 }, () => backend.sign('i-p256', randomBytes(32))));
      clearInterval(timer);
      delay.disable();
      const m = backend.metrics();
      expect(m.inlineSigns).toBe(2000);
      await signAndVerify(backend, 'i-p256', 'ECDSA_P256', 20, true);
      expect(m.threadSigns).toBe(0);
      expect(m.signThreads).toBe('idle');
      // 2000 × tens of µs is well over one turn's budget: the work was spread over many turns
      expect(m.dispatch.yields).toBeGreaterThan(10);
      // a 1 ms interval kept firing during the run (without the budget all 2000 ran in one turn: 0–1 ticks)
      expect(ticks).toBeGreaterThan(10);
      // loose bound: this machine's 2 cores are shared, so descheduling shows up here too; a run
      // without the budget blocks the loop for the whole run (2000 × ~120 µs ≥ 240 ms)
      expect(delay.percentile(99) / 1e6).toBeLessThan(150);
      await signAndVerify(backend, 'i-rsa', 'RSA_2048', 20, true);
      expect(backend.metrics().inlineSigns).toBe(2040);
    } finally {
      await backend.close();
    }
  });

  it("dispatch 'threads': every signature on a sign thread, none inline", async () => {
    const backend = backendWith({ dispatch: 'threads' });
    await backend.initialize();
    try {
      await threadsReady(backend);
      await backend.generateKeyPair({ id: 't-p256', algorithm: 'ECDSA_P256' });
      await signAndVerify(backend, 't-p256', 'ECDSA_P256', 300, true);
      const m = backend.metrics();
      expect(m.threadSigns).toBe(300);
      expect(m.inlineSigns).toBe(0);
    } finally {
      await backend.close();
    }
  });
});
