/**
 * The sign threads on their own, on a real SoftHSM token: a thread takes requests only once its own
 * probe of the main thread's session succeeded, and a thread that replaces one that died probes
 * with the session the main thread has now (the anchor changes when sessions are closed behind the
 * backend's back), not with the first one.
 */
import { createHash, createPublicKey, verify as nodeVerify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';
import { CKA_EC_PARAMS, CKA_EC_POINT, CKA_SIGN, CKA_TOKEN, CKA_VERIFY, CKF_RW_SESSION, CKF_SERIAL_SESSION, CKM_ECDSA, CKM_EC_KEY_PAIR_GEN, CKU_USER } from '../src/constants.js';
import { acquireModule, releaseModule } from '../src/module.js';
import { SignThreads } from '../src/sign-threads.js';

const token = createToken('threads-probe');
const P256 = Buffer.from('06082a8648ce3d030107', 'hex');

async function until(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return condition();
}

describe('sign threads', () => {
  it('a replacement thread probes with the current anchor session and takes no request before its probe succeeded', async () => {
    const mod = acquireModule(SOFTHSM_LIB);
    const p11 = mod.p11;
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === token.label)!;
    const work = p11.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    p11.C_Login(work, CKU_USER, token.pin);
    let anchor = p11.C_OpenSession(slot, CKF_SERIAL_SESSION);
    const threads = new SignThreads(SOFTHSM_LIB, 1, 4, () => Uint8Array.from(anchor));
    try {
      // session objects of `work`: usable from any thread of this process while `work` is open
      const pair = p11.C_GenerateKeyPair(work, { mechanism: CKM_EC_KEY_PAIR_GEN }, [
        { type: CKA_TOKEN, value: false },
        { type: CKA_EC_PARAMS, value: P256 },
        { type: CKA_VERIFY, value: true },
      ], [
        { type: CKA_TOKEN, value: false },
        { type: CKA_SIGN, value: true },
      ]);
      const point = p11.C_GetAttributeValue(work, pair.publicKey, [{ type: CKA_EC_POINT }])[0]!.value;
      const spki = Buffer.concat([Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex'), point.subarray(point.length - 65)]);
      const publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
      const signOnThread = async (text: string) => {
        expect(threads.accepts(work.length, 64)).toBe(true);
        const message = Buffer.from(text);
        const { signature } = await threads.sign(work, pair.privateKey, { mechanism: CKM_ECDSA }, createHash('sha256').update(message).digest(), 64);
        expect(nodeVerify('sha256', message, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)).toBe(true);
      };

      threads.start();
      expect(await until(() => threads.state === 'ready' && threads.accepts(work.length, 64), 10_000)).toBe(true);
      await signOnThread('first');

      // the main thread's anchor is replaced (closed behind its back and opened again)
      p11.C_CloseSession(anchor);
      anchor = p11.C_OpenSession(slot, CKF_SERIAL_SESSION);
      // the thread dies; its replacement starts loading
      const dying = (threads as unknown as { threads: Array<{ worker: { terminate(): Promise<number> } }> }).threads[0]!;
      await dying.worker.terminate();
      await new Promise((r) => setImmediate(r));
      // still loading: no request may go to it
      expect(threads.accepts(work.length, 64)).toBe(false);
      // it probes with the anchor the main thread has now, so it becomes ready (with the closed one
      // it would fail its probe and exit, again and again, until the threads were given up)
      expect(await until(() => threads.accepts(work.length, 64), 10_000)).toBe(true);
      await signOnThread('after the replacement');
    } finally {
      await threads.close();
      p11.C_CloseSession(anchor);
      p11.C_CloseSession(work);
      await releaseModule(mod);
    }
  });
});
