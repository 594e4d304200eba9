/**
 * A supervisor that calls `HsmManager.initialize()` again after LoginFailed builds a new backend
 * each time; the same wrong PIN must reach the token once, not once per attempt, or a restart
 * loop locks the token. C_Login calls are counted with OpenSC's pkcs11-spy.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BackendRegistry, HsmManager } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { pkcs11BackendFactory } from '../src/index.js';
import { refusedPinScopes } from '../src/failed-pins.js';
import { SOFTHSM_LIB, SPY_LIB, createToken } from '@olocus/hsm-test-support';

const token = createToken('failed-pin');
const work = mkdtempSync(join(tmpdir(), 'olocus-failed-pin-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const spyLog = join(work, 'spy.log');
process.env.PKCS11SPY = SOFTHSM_LIB;
process.env.PKCS11SPY_OUTPUT = spyLog;

function logins(): number {
  if (!existsSync(spyLog)) return 0;
  return readFileSync(spyLog, 'utf8')
    .split('\n')
    .filter((line) => /^\d+: C_Login$/.test(line.trim())).length;
}

describe('a PIN the token refused', () => {
  it('is not sent again by later initialize() calls until it changes (one C_Login, not four)', async () => {
    const env: Record<string, string | undefined> = { TEST_PIN: `wrong-${randomBytes(6).toString('hex')}` };
    const registry = new BackendRegistry({ env });
    registry.register(pkcs11BackendFactory as Parameters<BackendRegistry['register']>[0]);
    const config = { backend: { type: 'pkcs11', options: { libraryPath: SPY_LIB, tokenLabel: token.label, pin: { env: 'TEST_PIN' }, signThreads: 0 } } };
    const before = logins();

    const supervisor = new HsmManager(config, { registry });
    const first = await expectHsmError(supervisor.initialize(), 'LoginFailed');
    expect(first.message).toContain('incorrect');
    for (let attempt = 0; attempt < 3; attempt++) {
      const again = await expectHsmError(supervisor.initialize(), 'LoginFailed');
      expect(again.message).toContain('not attempted');
      expect(again.retryable).toBe(false);
      expect(again.message).not.toContain(env['TEST_PIN']!);
    }
    // a second manager (a restarted worker in the same process) is held back the same way
    await expectHsmError(new HsmManager(config, { registry }).initialize(), 'LoginFailed');
    expect(logins() - before).toBe(1);
    expect(refusedPinScopes()).toBeGreaterThanOrEqual(1);

    // the operator fixes the PIN source: the new PIN is tried, and works
    env['TEST_PIN'] = token.pin;
    await supervisor.initialize();
    expect(logins() - before).toBe(2);
    const key = await supervisor.generateKey({ id: 'after-fix', algorithm: 'ECDSA_P256' });
    const data = randomBytes(16);
    expect(await supervisor.verify(key, data, await supervisor.sign(key, data))).toBe(true);
    await supervisor.close();
  });
});
