/**
 * 1,000 concurrent signs on a pool of 4 sessions: all complete, all verify, and the backend holds
 * exactly the sessions it held before (SoftHSM reports ulSessionCount as unavailable, so sessions
 * are counted by the backend at C_OpenSession / C_CloseSession and checked against the pool).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { exportPublicKey, type KeyAlgorithm } from '@olocus/hsm-core';
import { independentVerify } from '@olocus/hsm-core/testing';
import { Pkcs11Backend } from '../src/index.js';
import { isUnavailable } from '../src/constants.js';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';

const token = createToken('load');

describe('load', () => {
  for (const [algorithm, signThreads] of [
    ['ECDSA_P256', undefined],
    ['Ed25519', undefined],
    ['RSA_2048', undefined],
    ['ECDSA_P256', 0],
    ['Ed25519', 3],
  ] as Array<[KeyAlgorithm, number | undefined]>) {
    it(`${algorithm}, signThreads ${signThreads ?? 'default'}: 1000 concurrent signs on 4 sessions complete, verify, and leave the session count unchanged`, async () => {
      const backend = new Pkcs11Backend(
        { libraryPath: SOFTHSM_LIB, tokenLabel: token.label, signThreads, dispatch: 'threads', sessionPool: { minSessions: 4, maxSessions: 4, acquireTimeout: 60_000 } },
        { pin: token.pin },
      );
      await backend.initialize();
      try {
        // the threads check at start that they see the main thread's sessions (bounded wait)
        const deadline = Date.now() + 10_000;
        while (backend.metrics().signThreads === 'starting' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        expect(backend.metrics().signThreads).toBe(signThreads === 0 ? 'off' : 'ready');
        const key = await backend.generateKeyPair({ id: `load-${algorithm}-${signThreads ?? 'default'}`, algorithm });
        const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
        const before = backend.metrics();
        const tokenBefore = (await backend.info()).details;

        const messages = Array.from({ length: 1000 }, () => randomBytes(64));
        const signatures = await Promise.all(messages.map((m) => backend.sign(key.id, m)));

        for (const [i, m] of messages.entries()) expect(independentVerify(algorithm, pem, m, signatures[i]!)).toBe(true);
        const after = backend.metrics();
        expect(after.sessionsOpen).toBe(before.sessionsOpen);
        expect(after.sessionsOpen).toBe(5); // 4 pooled + the anchor
        expect(after.pool!.size).toBe(4);
        expect(after.pool!.inUse).toBe(0);
        expect(after.pool!.waiting).toBe(0);
        expect(after.pool!.created).toBe(before.pool!.created); // no session was opened for the load
        expect(after.signs - before.signs).toBe(1000);
        // with threads, every sign ran on one (a free request slot per pooled session); without, none did
        expect(after.threadSigns - before.threadSigns).toBe(signThreads === 0 ? 0 : 1000);
        // where the token reports its session count, it agrees
        const count = (await backend.info()).details;
        if (typeof tokenBefore?.sessionCount === 'number' && !isUnavailable(tokenBefore.sessionCount)) expect(count?.sessionCount).toBe(tokenBefore.sessionCount);
      } finally {
        await backend.close();
      }
      expect(backend.metrics().sessionsOpen).toBe(0);
    });
  }
});
