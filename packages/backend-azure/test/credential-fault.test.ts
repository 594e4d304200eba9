import { expectHsmError } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeKeyVault, type FakeKeyVault } from './fake-key-vault.js';
import { backendFor } from './helpers.js';

// A file of its own: MSAL keeps managed-identity tokens in a process-wide cache, so this
// process must never have got a token. Runs against the project's wire-level Key Vault.
let fake: FakeKeyVault;
beforeAll(async () => {
  fake = await startFakeKeyVault();
});
afterAll(async () => fake?.close());

const elapsedSince = (start: number) => performance.now() - start;

describe('credential faults', () => {
  it('a credential that cannot get a token: AuthenticationFailed naming DefaultAzureCredential, no secret in the message', async () => {
    fake.refuseTokens = true;
    try {
      const backend = backendFor(fake, { requestTimeoutMs: 10_000 });
      await backend.initialize();
      const start = performance.now();
      const error = await expectHsmError(backend.getKey('anything'), 'AuthenticationFailed');
      expect(elapsedSince(start)).toBeLessThan(10_000 + 2000);
      expect(error.message).toMatch(/DefaultAzureCredential/);
      // what the managed-identity link answered is in the message
      expect(error.message).toMatch(/ManagedIdentityCredential/);
      expect(error.message).not.toContain(fake.identityHeader);
      expect(JSON.stringify(error.toJSON())).not.toContain(fake.identityHeader);
      await backend.close();
    } finally {
      fake.refuseTokens = false;
    }
  });

});
