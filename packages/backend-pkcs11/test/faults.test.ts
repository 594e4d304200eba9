/**
 * Failure handling against real modules: a network HSM that dies and comes back (SoftHSM behind
 * `p11-kit server`), a wrong PIN counted with OpenSC's pkcs11-spy, pool exhaustion, a token deleted
 * under the library, lost logins and sessions, and slot/label configuration errors.
 */
import { randomBytes, verify as nodeVerify } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HsmError, exportPublicKey } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { Pkcs11Backend, slotNumberOf } from '../src/index.js';
import { CKF_TOKEN_INITIALIZED } from '../src/constants.js';
import { acquireModule, releaseModule } from '../src/module.js';
import { P11KitServer } from '@olocus/hsm-test-support';
import { P11KIT_CLIENT_LIB, SOFTHSM_LIB, SPY_LIB, createToken, softHsmEnv } from '@olocus/hsm-test-support';

const netToken = createToken('net-hsm');
const localToken = createToken('local');
const doomedToken = createToken('doomed');
const work = mkdtempSync(join(tmpdir(), 'olocus-faults-'));

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Waits (bounded) until the sign threads have checked whether they share the module's sessions. */
async function signThreadsSettled(backend: Pkcs11Backend): Promise<string> {
  const deadline = Date.now() + 10_000;
  while (backend.metrics().signThreads === 'starting' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return backend.metrics().signThreads;
}

/** The signing path these tests force (faults-inline.test.ts runs this file again with 'inline'). */
const DISPATCH = (process.env.OLOCUS_P11_TEST_DISPATCH ?? 'threads') as 'inline' | 'threads';

const direct = (extra: Record<string, unknown> = {}, token = localToken) =>
  new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, dispatch: DISPATCH, ...extra }, { pin: token.pin });

describe('network HSM restart (SoftHSM behind p11-kit server)', () => {
  it('recovers without a process restart: every returned signature verifies, every failure is retryable, signing resumes', async () => {
    const server = new P11KitServer(join(work, 'p11kit.sock'), netToken.label);
    await server.start();
    process.env.P11_KIT_SERVER_ADDRESS = server.address; // read by p11-kit-client.so at C_Initialize
    const backend = new Pkcs11Backend(
      { libraryPath: P11KIT_CLIENT_LIB, tokenLabel: netToken.label, sessionPool: { minSessions: 2, maxSessions: 4, acquireTimeout: 2_000 } },
      { pin: netToken.pin },
    );
    try {
      await backend.initialize();
      // EdDSA is not forwarded by p11-kit 0.24's RPC: the probe must not claim it
      expect((await backend.capabilities()).algorithms).not.toContain('Ed25519');
      // p11-kit-client.so is a remote module: everything runs on its module thread, no sign threads
      expect(backend.metrics().remote).toBe(true);
      expect(await signThreadsSettled(backend)).toBe('remote');
      const key = await backend.generateKeyPair({ id: 'net-p256', algorithm: 'ECDSA_P256' });
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');

      const signed: Array<{ data: Buffer; signature: Uint8Array }> = [];
      const failures: unknown[] = [];
      let stop = false;
      let restarted = false;
      let signedAfterRestart = 0;
      const worker = async () => {
        while (!stop) {
          const data = randomBytes(32);
          try {
            const signature = await backend.sign('net-p256', data);
            signed.push({ data, signature });
            if (restarted) signedAfterRestart++;
          } catch (error) {
            failures.push(error);
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      };
      const workers = Array.from({ length: 8 }, worker);

      while (signed.length < 200) await new Promise((r) => setTimeout(r, 10));
      server.kill();
      await new Promise((r) => setTimeout(r, 700));
      await server.start();
      restarted = true;
      const deadline = Date.now() + 60_000; // a bound for a hung test, not a performance assertion
      while (signedAfterRestart < 100 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      stop = true;
      await Promise.all(workers);

      expect(signedAfterRestart).toBeGreaterThanOrEqual(100);
      expect(backend.metrics().circuitOpens).toBeGreaterThanOrEqual(1);
      expect(backend.metrics().recoveries).toBeGreaterThanOrEqual(1);
      for (const { data, signature } of signed) expect(nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
      for (const failure of failures) {
        expect(failure).toBeInstanceOf(HsmError);
        expect((failure as HsmError).retryable, `${(failure as HsmError).code}: ${(failure as HsmError).message}`).toBe(true);
      }
      expect((await backend.healthCheck()).healthy).toBe(true);
      // a remote module is never signed inline nor on sign threads: only on its module thread
      expect(backend.metrics().threadSigns).toBe(0);
      expect(backend.metrics().inlineSigns).toBe(0);
    } finally {
      await backend.close();
      server.kill();
    }
  });
});

describe('sign threads', () => {
  it('survive a module reset (C_Finalize behind the backend): recovery, fresh session and key handles, signing resumes on the threads', async () => {
    const backend = direct({ signThreads: 2, dispatch: 'threads', sessionPool: { minSessions: 4, maxSessions: 4 } });
    await backend.initialize();
    try {
      expect(await signThreadsSettled(backend)).toBe('ready');
      const key = await backend.generateKeyPair({ id: 'reset-threads', algorithm: 'ECDSA_P256' });
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      const signed: Array<{ data: Buffer; signature: Uint8Array }> = [];
      const failures: unknown[] = [];
      let stop = false;
      const worker = async () => {
        while (!stop) {
          const data = randomBytes(32);
          try {
            signed.push({ data, signature: await backend.sign(key, data) });
          } catch (error) {
            failures.push(error);
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      };
      const load = async (count: number) => {
        stop = false;
        const target = signed.length + count;
        const workers = Array.from({ length: 8 }, worker);
        const deadline = Date.now() + 30_000; // a bound for a hung test, not a performance assertion
        while (signed.length < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        stop = true;
        await Promise.all(workers);
      };
      await load(200);
      expect(backend.metrics().threadSigns).toBeGreaterThan(0);
      const generation = backend.metrics().generation;
      const threadSignsBefore = backend.metrics().threadSigns;
      // the module is reset while no call is in flight (SoftHSM does not survive C_Finalize racing C_Sign)
      (backend as unknown as { connection: { mod: { p11: { C_Finalize(): void } } } }).connection.mod.p11.C_Finalize();
      const before = signed.length;
      await load(200);
      expect(signed.length - before).toBeGreaterThanOrEqual(200);
      const m = backend.metrics();
      expect(m.circuitOpens).toBeGreaterThanOrEqual(1);
      expect(m.recoveries).toBeGreaterThanOrEqual(1);
      expect(m.generation).toBeGreaterThan(generation);
      expect(m.signThreads).toBe('ready');
      expect(m.threadSigns - threadSignsBefore).toBeGreaterThanOrEqual(100); // the threads sign with the new sessions and handles
      for (const { data, signature } of signed) expect(nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
      for (const failure of failures) {
        expect(failure).toBeInstanceOf(HsmError);
        expect((failure as HsmError).retryable, `${(failure as HsmError).code}: ${(failure as HsmError).message}`).toBe(true);
      }
      expect((await backend.healthCheck()).healthy).toBe(true);
    } finally {
      await backend.close();
    }
  });

  it('sign empty, slot-sized and large (side-channel) Ed25519 messages and RSA-PSS on the threads', async () => {
    const backend = direct({ signThreads: 2, dispatch: 'threads', sessionPool: { minSessions: 2, maxSessions: 2 } });
    await backend.initialize();
    try {
      expect(await signThreadsSettled(backend)).toBe('ready');
      const ed = await backend.generateKeyPair({ id: 'thread-ed', algorithm: 'Ed25519' });
      const edPem = exportPublicKey(await backend.getPublicKey(ed), 'pem');
      const messages = [Buffer.alloc(0), randomBytes(1024), randomBytes(1025), randomBytes(65_536)];
      const signatures = await Promise.all(messages.map((m) => backend.sign(ed, m)));
      for (const [i, m] of messages.entries()) expect(nodeVerify(null, m, edPem, signatures[i]!)).toBe(true);
      const pss = await backend.generateKeyPair({ id: 'thread-pss', algorithm: 'RSA_PSS_2048' });
      const pssPem = exportPublicKey(await backend.getPublicKey(pss), 'pem');
      const data = randomBytes(100);
      const signature = await backend.sign(pss, data);
      expect(nodeVerify('sha256', data, { key: pssPem, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: 32 }, signature)).toBe(true);
      expect(backend.metrics().threadSigns).toBe(5);
    } finally {
      await backend.close();
    }
  });

  it('report a failing sign on a thread like a failing sign on the main thread (caller error, session replaced)', async () => {
    const backend = direct({ signThreads: 1, dispatch: 'threads', sessionPool: { minSessions: 1, maxSessions: 2 } });
    await backend.initialize();
    try {
      expect(await signThreadsSettled(backend)).toBe('ready');
      const key = await backend.generateKeyPair({ id: 'thread-errors', algorithm: 'ECDSA_P256', usages: ['verify', 'sign'] });
      // a stale key handle: the thread's C_SignInit fails with CKR_OBJECT_HANDLE_INVALID / CKR_KEY_HANDLE_INVALID,
      // the backend drops its cache entry, looks the key up again and signs
      const internals = backend as unknown as { keyStore: { entries: Map<string, { priv: Buffer }> } };
      for (const entry of internals.keyStore.entries.values()) entry.priv = Buffer.from(entry.priv).fill(0xee);
      const data = randomBytes(32);
      const signature = await backend.sign(key, data);
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      expect(nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
      expect(backend.metrics().threadSigns).toBeGreaterThanOrEqual(1);
    } finally {
      await backend.close();
    }
  });
});

describe('login', () => {
  it('tries a wrong PIN exactly once (counted by pkcs11-spy) and fails with LoginFailed without the PIN in the message', async () => {
    const spyLog = join(work, 'spy.log');
    process.env.PKCS11SPY = SOFTHSM_LIB;
    process.env.PKCS11SPY_OUTPUT = spyLog;
    const wrongPin = `wrong-${randomBytes(6).toString('hex')}`;
    const backend = new Pkcs11Backend({ libraryPath: SPY_LIB, tokenLabel: localToken.label, sessionPool: { retryAttempts: 3 } }, { pin: wrongPin });
    const error = await expectHsmError(backend.initialize(), 'LoginFailed');
    expect(error.retryable).toBe(false);
    expect(error.message).not.toContain(wrongPin);
    expect(JSON.stringify(error.toJSON())).not.toContain(wrongPin);
    await backend.close();
    expect(existsSync(spyLog)).toBe(true);
    const logins = readFileSync(spyLog, 'utf8')
      .split('\n')
      .filter((line) => /^\d+: C_Login$/.test(line.trim()));
    expect(logins).toHaveLength(1);
    await expectHsmError(backend.sign('any', randomBytes(4)), 'Closed');
  });

  it('re-logs in once, shared by concurrent callers, when the token reports the login lost', async () => {
    const backend = direct({ sessionPool: { minSessions: 2, maxSessions: 4 } });
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'relogin', algorithm: 'ECDSA_P256' });
      const internals = (backend as unknown as { connection: { mod: { p11: { C_Logout(h: Buffer): void } }; anchor: { handle: Buffer } } }).connection;
      internals.mod.p11.C_Logout(internals.anchor.handle);
      const signatures = await Promise.all(Array.from({ length: 20 }, () => backend.sign(key, Buffer.from('after logout'))));
      expect(signatures).toHaveLength(20);
      expect(backend.metrics().relogins).toBe(1);
    } finally {
      await backend.close();
    }
  });

  it('evicts dead sessions and recovers the login after every session was closed behind its back', async () => {
    const backend = direct({ sessionPool: { minSessions: 3, maxSessions: 4 } });
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'closed-all', algorithm: 'ECDSA_P256' });
      const internals = (backend as unknown as { connection: { mod: { p11: { C_CloseAllSessions(s: Buffer): void } }; token: { slot: Buffer } } }).connection;
      internals.mod.p11.C_CloseAllSessions(internals.token.slot);
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      const data = Buffer.from('after close-all');
      const signature = await backend.sign(key, data);
      expect(nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
      expect(backend.metrics().pool!.evicted).toBeGreaterThanOrEqual(1);
    } finally {
      await backend.close();
    }
  });
});

describe('session pool', () => {
  it('gives SessionPoolExhausted (retryable) to callers that wait longer than acquireTimeout', async () => {
    const backend = direct({ sessionPool: { minSessions: 1, maxSessions: 1, acquireTimeout: 20 } });
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'exhaust', algorithm: 'RSA_2048' });
      const results = await Promise.allSettled(Array.from({ length: 200 }, () => backend.sign(key, randomBytes(16))));
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as HsmError);
      expect(rejected.length).toBeGreaterThan(0);
      for (const error of rejected) {
        expect(error).toBeInstanceOf(HsmError);
        expect(error.code).toBe('SessionPoolExhausted');
        expect(error.retryable).toBe(true);
      }
      expect(results.some((r) => r.status === 'fulfilled')).toBe(true);
      expect(backend.metrics().pool!.timeouts).toBe(rejected.length);
    } finally {
      await backend.close();
    }
  });
});

describe('token deleted under the library', () => {
  it('reports clear HsmErrors and an unhealthy status instead of crashing', async () => {
    const backend = direct({}, doomedToken);
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'doomed-key', algorithm: 'ECDSA_P256' });
      await backend.sign(key, randomBytes(8));
      expect(existsSync(doomedToken.path)).toBe(true);
      rmSync(doomedToken.path, { recursive: true, force: true });

      for (const call of [() => backend.sign(key, randomBytes(8)), () => backend.generateKeyPair({ id: 'after-delete', algorithm: 'ECDSA_P256' }), () => backend.listKeys()]) {
        let caught: unknown;
        try {
          await call();
        } catch (error) {
          caught = error;
        }
        expect(caught, 'the call must fail').toBeInstanceOf(HsmError);
        expect(['KeyNotFound', 'DeviceUnavailable', 'CircuitOpen', 'KeyGenerationFailed', 'Internal']).toContain((caught as HsmError).code);
      }
      expect((await backend.healthCheck()).healthy).toBe(false);
    } finally {
      await backend.close();
    }
  });
});

describe('slot and token selection', () => {
  it('TokenLabelMismatch names the wanted label and the labels found', async () => {
    const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: 'no-such-token' }, { pin: '1234' });
    const error = await expectHsmError(backend.initialize(), 'TokenLabelMismatch');
    expect(error.message).toContain("'no-such-token'");
    expect(error.message).toContain(`'${localToken.label}'`);
    await backend.close();
  });

  it('TokenLabelMismatch names both labels when slotId and tokenLabel disagree', async () => {
    const slotId = await slotOf((label, initialized) => initialized && label === localToken.label);
    const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, slotId, tokenLabel: netToken.label }, { pin: localToken.pin });
    const error = await expectHsmError(backend.initialize(), 'TokenLabelMismatch');
    expect(error.message).toContain(`'${localToken.label}'`);
    expect(error.message).toContain(`'${netToken.label}'`);
    await backend.close();
  });

  it('SlotNotFound for a slot that does not exist and for a slot without an initialised token', async () => {
    const missing = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, slotId: 4_000_000_000 }, { pin: '1234' });
    await expectHsmError(missing.initialize(), 'SlotNotFound');
    const freeSlot = await slotOf((_label, initialized) => !initialized);
    const empty = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, slotId: freeSlot }, { pin: '1234' });
    await expectHsmError(empty.initialize(), 'SlotNotFound');
  });

  it('selects by slotId alone', async () => {
    const slotId = await slotOf((label, initialized) => initialized && label === localToken.label);
    const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, slotId }, { pin: localToken.pin });
    await backend.initialize();
    try {
      expect((await backend.info()).details?.tokenLabel).toBe(localToken.label);
    } finally {
      await backend.close();
    }
  });
});

async function slotOf(match: (label: string, initialized: boolean) => boolean): Promise<number> {
  softHsmEnv();
  const mod = acquireModule(SOFTHSM_LIB);
  try {
    const p11 = mod.p11;
    const slot = p11.C_GetSlotList(true).find((s) => {
      const info = p11.C_GetTokenInfo(s);
      return match(info.label.replace(/[\0 ]+$/, ''), (info.flags & CKF_TOKEN_INITIALIZED) !== 0);
    });
    if (!slot) throw new Error('no matching slot');
    return slotNumberOf(slot);
  } finally {
    releaseModule(mod);
  }
}
