/**
 * The pool against network HSM stand-ins: three SoftHSM tokens, each behind its own `p11-kit
 * server` socket, holding one replicated key. Two signers first, for the weighted share; then 16
 * concurrent signers while one member's server is killed mid-run and restarted.
 */
import { randomBytes, verify as nodeVerify } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { exportPublicKey } from '@olocus/hsm-core';
import { Pkcs11Backend } from '@olocus/hsm-backend-pkcs11';
import { P11KIT_CLIENT_LIB, P11KitServer, SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';
import { HsmPool, Pkcs11Replicator } from '../src/index.js';

const tokens = ['net-a', 'net-b', 'net-c'].map((label) => createToken(label));
const work = mkdtempSync(join(tmpdir(), 'olocus-pool-'));
const servers = tokens.map((t, i) => new P11KitServer(join(work, `hsm${i}.sock`), t.label));
afterAll(() => {
  for (const s of servers) s.kill();
  rmSync(work, { recursive: true, force: true });
});

const HEALTH_MS = 400;
const WEIGHTS = [2, 1, 1];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function openPool(): Promise<{ pool: HsmPool; backends: Pkcs11Backend[] }> {
  const backends: Pkcs11Backend[] = [];
  for (const [i, token] of tokens.entries()) {
    await servers[i]!.start();
    // p11-kit-client.so binds to P11_KIT_SERVER_ADDRESS when it is loaded, and a module path is
    // loaded once per process: each member gets its own copy of the client, loaded while the
    // variable names its server
    const client = join(work, `p11-kit-client-${i}.so`);
    copyFileSync(P11KIT_CLIENT_LIB!, client);
    process.env.P11_KIT_SERVER_ADDRESS = servers[i]!.address;
    const backend = new Pkcs11Backend(
      { libraryPath: client, tokenLabel: token.label, remote: false, sessionPool: { minSessions: 2, maxSessions: 12, acquireTimeout: 5_000 } },
      { pin: token.pin },
    );
    await backend.initialize();
    backends.push(backend);
  }
  const pool = new HsmPool({
    members: backends.map((backend, i) => ({ name: `hsm${i}`, backend, weight: WEIGHTS[i]!, zone: `z${i}` })),
    healthIntervalMs: HEALTH_MS,
  });
  await pool.initialize();
  return { pool, backends };
}

describe('HsmPool over three p11-kit servers', () => {
  it('loses no signature when a member dies, sends it nothing while dead, uses it again after it returns, and shares load by weight', async () => {
    // the SO ceremony first: no backend of this process is logged in on these tokens yet
    const replicator = new Pkcs11Replicator(SOFTHSM_LIB!);
    await replicator.provisionGroupKek(tokens.map((t) => ({ tokenLabel: t.label, soPin: t.soPin, pin: t.pin })));
    await replicator.generateReplicated(tokens.map((t) => ({ tokenLabel: t.label, pin: t.pin })), 'pool-p256', 'ECDSA_P256');
    const { pool, backends } = await openPool();
    let stop = false;
    let signers: Array<Promise<void>> = [];
    try {
      expect((await pool.discover('pool-p256')).members).toEqual(['hsm0', 'hsm1', 'hsm2']);
      const pem = exportPublicKey(await backends[0]!.getPublicKey('pool-p256'), 'pem');
      const dispatched = () => pool.status().map((m) => m.dispatched);

      const signed: Array<{ data: Buffer; signature: Uint8Array }> = [];
      const failures: unknown[] = [];
      let retried = 0;
      const signer = async () => {
        while (!stop) {
          const data = randomBytes(32);
          try {
            const r = await pool.sign('pool-p256', data);
            expect(r.retriedFrom.length).toBeLessThanOrEqual(1);
            if (r.retriedFrom.length) retried++;
            signed.push({ data, signature: r.signature });
          } catch (error) {
            failures.push(error);
            // a broken run ends here rather than filling the heap with errors (CI saw a worker
            // die of heap exhaustion, hiding the assertion that had failed first)
            if (failures.length >= 100) stop = true;
          }
        }
      };
      const until = async (cond: () => boolean, what: string, ms = 60_000) => {
        const deadline = Date.now() + ms; // a bound for a hung test, not a performance assertion
        while (!cond()) {
          if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
          await sleep(10);
        }
      };
      // phase 1: all healthy, shares by weight. Weights hold while the members keep up; a member
      // whose queue is longer than the others' gets less (by design: load before share), and with
      // 16 signers on a loaded two-core CI machine the three server processes do not get equal CPU
      // (CI saw 42/29/29 %). With two signers at most one other call is in flight at each pick, so
      // no member is ever held back for load, and the share must come out by weight: each pick goes
      // to the member furthest behind its share, which keeps every member's calls per unit of weight
      // within one of the others', so a window of calls is off by at most two per unit of weight.
      signers = Array.from({ length: 2 }, signer);
      await until(() => signed.length >= 20, 'warm-up');
      const before = dispatched();
      await until(() => signed.length >= 420, 'the weighted phase');
      const phase = dispatched().map((d, i) => d - before[i]!);
      const total = phase.reduce((a, b) => a + b, 0);
      const weightSum = WEIGHTS.reduce((a, b) => a + b, 0);
      for (const [i, count] of phase.entries()) {
        const expected = (total * WEIGHTS[i]!) / weightSum;
        expect(Math.abs(count - expected), `member hsm${i}: ${count} of ${total} calls against weight ${WEIGHTS[i]}/${weightSum}`).toBeLessThanOrEqual(2 * WEIGHTS[i]!);
      }

      // 16 concurrent signers from here on
      signers.push(...Array.from({ length: 14 }, signer));
      const signedAtFull = signed.length;
      await until(() => signed.length >= signedAtFull + 300, 'warm-up with 16 signers');
      expect(dispatched().every((d, i) => d > before[i]! + phase[i]!), 'every member takes work with 16 signers').toBe(true);

      // phase 2: hsm1's server dies
      servers[1]!.kill();
      const killedAt = Date.now();
      await sleep(HEALTH_MS);
      const deadCount = dispatched()[1]!;
      const signedAtDead = signed.length;
      await until(() => signed.length >= signedAtDead + 400, 'signing without hsm1');
      expect(Date.now() - killedAt).toBeGreaterThan(HEALTH_MS);
      expect(dispatched()[1], 'hsm1 took new work more than one health interval after it died').toBe(deadCount);
      expect(pool.status()[1]!.reason).toBeDefined();

      // phase 3: it comes back and takes work again within a few seconds
      await servers[1]!.start();
      const backAt = Date.now();
      await until(() => dispatched()[1]! > deadCount + 20, 'hsm1 to take work again', 30_000);
      const recoveryMs = Date.now() - backAt;
      expect(recoveryMs).toBeLessThan(15_000);

      stop = true;
      await Promise.all(signers);
      expect(failures.map((e) => String((e as Error).message))).toEqual([]);
      for (const { data, signature } of signed) expect(nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
      // every call that failed on a member was retried once elsewhere, and succeeded there
      expect(pool.status().reduce((n, m) => n + m.failed, 0)).toBe(retried);
      console.log(`signed ${signed.length}, retried ${retried}, weighted phase (2 signers) ${phase.join('/')}, hsm1 back in ${recoveryMs} ms`);
    } finally {
      // the signers stop before the pool closes, also when an assertion failed mid-run
      stop = true;
      await Promise.all(signers);
      await pool.close();
    }
  });
});
