/**
 * CKR_USER_PIN_NOT_INITIALIZED at start-up. No PIN is tried, so asking again spends nothing; and
 * SoftHSM answers it for a moment while another process's C_Login rewrites the token file (CI:
 * one of 25 start-ups beside three pkcs11-tool login loops). Start-up asks a few times, then
 * reports it by name; it never marks the PIN as refused.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { Pkcs11Backend } from '../src/index.js';
import { SOFTHSM_LIB, softHsmEnv } from '@olocus/hsm-test-support';

const run = promisify(execFile);
const label = 'no-user-pin';
const soPin = randomBytes(8).toString('hex');
const pin = randomBytes(8).toString('hex');
// the PINs go to pkcs11-tool through its environment, never its command line
const toolEnv = () => ({ ...process.env, SOFTHSM2_CONF: softHsmEnv().conf, OLOCUS_TEST_SO_PIN: soPin, OLOCUS_TEST_PIN: pin });
const pkcs11Tool = (...args: string[]) => run('pkcs11-tool', ['--module', SOFTHSM_LIB!, ...args], { env: toolEnv() });
const backend = () => new Pkcs11Backend({ libraryPath: SOFTHSM_LIB!, tokenLabel: label, signThreads: 0 }, { pin });

describe('a token whose user PIN is not initialised', () => {
  it('is reported by name after a few start-up attempts, and a start-up during which the PIN is set succeeds', async () => {
    // the token as its security officer left it: initialised, no user PIN yet (this file's own token directory: one free slot)
    await pkcs11Tool('--init-token', '--label', label, '--so-pin', 'env:OLOCUS_TEST_SO_PIN');

    const first = backend();
    const error = await expectHsmError(first.initialize(), 'LoginFailed');
    expect(error.details.rv).toBe('CKR_USER_PIN_NOT_INITIALIZED');
    expect(error.message).toContain(`token '${label}'`);
    expect(error.message).toContain('user PIN is not initialised');
    expect(error.message).not.toContain(pin);
    // asked again (delays 20, 60, 150, 300, 600 ms) before giving up, not once
    expect(first.metrics().startRetries).toBe(5);
    await first.close();

    // the PIN is set while a start-up is retrying: the next attempt logs in
    const second = backend();
    const starting = second.initialize();
    const deadline = Date.now() + 10_000; // a bound for a hung test, not a performance assertion
    while (second.metrics().startRetries === 0) {
      if (Date.now() > deadline) throw new Error('start-up never retried');
      await new Promise((r) => setTimeout(r, 2));
    }
    await pkcs11Tool('--token-label', label, '--login', '--login-type', 'so', '--so-pin', 'env:OLOCUS_TEST_SO_PIN', '--init-pin', '--new-pin', 'env:OLOCUS_TEST_PIN');
    await starting;
    try {
      expect(second.metrics().startRetries).toBeGreaterThanOrEqual(1);
      await second.generateKeyPair({ id: 'after-init-pin', algorithm: 'ECDSA_P256' });
      const data = randomBytes(32);
      expect(await second.verify('after-init-pin', data, await second.sign('after-init-pin', data))).toBe(true);
    } finally {
      await second.close();
    }
  });
});
