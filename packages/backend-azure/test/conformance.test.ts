import { afterAll, beforeAll } from 'vitest';
import { runConformanceSuite } from '@olocus/hsm-core/testing';
import { SUPPORTED_ALGORITHMS } from '../src/index.js';
import { startFakeKeyVault, type FakeKeyVault } from './fake-key-vault.js';
import { backendFor } from './helpers.js';

// Runs against the project's wire-level Key Vault (test/fake-key-vault.ts) over HTTPS, through
// DefaultAzureCredential's managed-identity path: Lowkey Vault's jar is not served here (README).
let fake: FakeKeyVault;
beforeAll(async () => {
  fake = await startFakeKeyVault();
});
afterAll(async () => fake?.close());

for (const hsm of [false, true]) {
  runConformanceSuite({
    name: `azure-keyvault (hsm: ${hsm}) on the test Key Vault`,
    createBackend: () => backendFor(fake, { hsm }),
    expectedAlgorithms: SUPPORTED_ALGORITHMS,
    keyPrefix: `conf-${hsm ? 'hsm' : 'sw'}`,
    concurrency: 100,
  });
}
