/**
 * Each backend instance proves its own PIN, even when the token is already logged in by another
 * instance in the same process (SoftHSM answers CKR_USER_ALREADY_LOGGED_IN before it looks at the PIN).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { Pkcs11Backend } from '../src/index.js';
import { CKF_RW_SESSION, CKF_SERIAL_SESSION, CKU_USER } from '../src/constants.js';
import { acquireModule, releaseModule } from '../src/module.js';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';

const token = createToken('login-proof');
const other = createToken('login-foreign');

const backendWith = (pin: string, label = token.label) => new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: label, signThreads: 0 }, { pin });

describe('a second instance on an already logged-in token', () => {
  it('with a wrong PIN gets LoginFailed (no PIN in the message), and the first instance keeps working', async () => {
    const first = backendWith(token.pin);
    await first.initialize();
    try {
      const key = await first.generateKeyPair({ id: 'proof-key', algorithm: 'ECDSA_P256' });
      const wrongPin = `wrong-${randomBytes(6).toString('hex')}`;
      const intruder = backendWith(wrongPin);
      const error = await expectHsmError(intruder.initialize(), 'LoginFailed');
      expect(error.retryable).toBe(false);
      expect(error.message).toContain('already logged in');
      expect(error.message).not.toContain(wrongPin);
      expect(JSON.stringify(error.toJSON())).not.toContain(wrongPin);
      expect(JSON.stringify(error.toJSON())).not.toContain(token.pin);
      // the refused instance cannot be used, and refusing it did not log the first one out
      await expectHsmError(intruder.sign('proof-key', randomBytes(8)), 'NotInitialized');
      await intruder.close();
      const data = randomBytes(32);
      expect(await first.verify(key, data, await first.sign(key, data))).toBe(true);

      // the right PIN is accepted while the login is open, and after the first instance leaves
      const second = backendWith(token.pin);
      await second.initialize();
      await first.close();
      expect(await second.verify('proof-key', data, await second.sign('proof-key', data))).toBe(true);
      await expectHsmError(backendWith(`also-wrong-${randomBytes(4).toString('hex')}`).initialize(), 'LoginFailed');
      await second.close();
    } finally {
      await first.close();
    }
  });

  it('after every instance has closed, a wrong PIN is checked by the token itself (CKR_PIN_INCORRECT)', async () => {
    const first = backendWith(token.pin);
    await first.initialize();
    await first.close();
    const error = await expectHsmError(backendWith('0000-not-the-pin').initialize(), 'LoginFailed');
    expect(error.details.rv).toBe('CKR_PIN_INCORRECT');
  });

  it('refuses even the right PIN when the login was opened outside the library (it cannot be checked)', async () => {
    const mod = acquireModule(SOFTHSM_LIB);
    const p11 = mod.p11;
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === other.label)!;
    const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    try {
      p11.C_Login(session, CKU_USER, other.pin);
      const error = await expectHsmError(backendWith(other.pin, other.label).initialize(), 'LoginFailed');
      expect(error.message).toContain('outside this library');
    } finally {
      p11.C_CloseSession(session);
      releaseModule(mod);
    }
    // with that login gone, the same PIN logs in normally
    const backend = backendWith(other.pin, other.label);
    await backend.initialize();
    await backend.close();
  });
});
