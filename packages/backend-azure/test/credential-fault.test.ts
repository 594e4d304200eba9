import { readSecret } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { azureBackendFactory } from '../src/index.js';
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


  it('a service principal whose authority cannot be reached: AuthenticationFailed naming ClientSecretCredential, the secret nowhere', async () => {
    const secret = 'sp-secret-0123456789abcdef';
    process.env.OLOCUS_TEST_AZ_SECRET = secret;
    // a closed loopback port stands for the authority: nothing leaves the machine
    const backend = await azureBackendFactory.create(
      azureBackendFactory.parseOptions({
        vaultUrl: fake.vaultUrl,
        disableChallengeResourceVerification: true,
        requestTimeoutMs: 10_000,
        credential: { tenantId: '00000000-0000-0000-0000-000000000001', clientId: '00000000-0000-0000-0000-000000000002', clientSecret: { env: 'OLOCUS_TEST_AZ_SECRET' }, authorityHost: 'https://127.0.0.1:9' },
      }),
      { env: process.env, readSecret: (source, field) => readSecret(source, field, process.env) },
    );
    await backend.initialize();
    const start = performance.now();
    const error = await expectHsmError(backend.getKey('anything'), 'AuthenticationFailed');
    expect(elapsedSince(start)).toBeLessThan(10_000 + 2000);
    expect(error.message).toMatch(/ClientSecretCredential/);
    expect(error.message).not.toContain(secret);
    expect(JSON.stringify(error.toJSON())).not.toContain(secret);
    await backend.close();
  });
});
