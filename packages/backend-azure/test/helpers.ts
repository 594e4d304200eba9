import { AzureKeyVaultBackend, type AzureBackendOptionsInput } from '../src/index.js';
import { useManagedIdentityOf, type FakeKeyVault } from './fake-key-vault.js';

/** A backend on the test vault, authenticated by DefaultAzureCredential's managed-identity path. */
export function backendFor(fake: FakeKeyVault, options: Partial<AzureBackendOptionsInput> = {}, vaultUrl = fake.vaultUrl): AzureKeyVaultBackend {
  useManagedIdentityOf(fake);
  return new AzureKeyVaultBackend({
    vaultUrl,
    disableChallengeResourceVerification: true,
    requestTimeoutMs: 20_000,
    retryDelayMs: 100,
    ...options,
  });
}
