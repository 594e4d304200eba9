import { describe, expect, it } from 'vitest';
import { isHsmError } from '@olocus/hsm-core';
import { azureBackendConfig, azureInitFlags } from '../src/init-azure.js';

function refused(flags: Record<string, unknown>, flag: string): void {
  try {
    azureBackendConfig(flags);
  } catch (error) {
    expect(isHsmError(error, 'InvalidArgument'), String(error)).toBe(true);
    expect((error as Error).message).toContain(flag);
    return;
  }
  throw new Error(`expected ${flag} to be refused`);
}

describe('init --backend azure-keyvault', () => {
  it('builds the backend section from the flags', () => {
    expect(azureBackendConfig({ vaultUrl: 'https://My-Vault.vault.azure.net/', hsm: true })).toEqual({
      type: 'azure-keyvault',
      options: { vaultUrl: 'https://my-vault.vault.azure.net', hsm: true },
    });
    expect(
      azureBackendConfig({ vaultUrl: 'https://pool.managedhsm.azure.net', serviceVersion: '7.5', maxConcurrency: '16', requestTimeoutMs: '5000', purgeOnDestroy: true }),
    ).toEqual({ type: 'azure-keyvault', options: { vaultUrl: 'https://pool.managedhsm.azure.net', serviceVersion: '7.5', maxConcurrency: 16, requestTimeoutMs: 5000, purgeOnDestroy: true } });
  });

  it('names where a service principal secret comes from, never the secret', () => {
    const config = azureBackendConfig({ vaultUrl: 'https://v.vault.azure.net', tenantId: 't', clientId: 'c', clientSecretEnv: 'AZ_SECRET' });
    expect(config.options.credential).toEqual({ tenantId: 't', clientId: 'c', clientSecret: { env: 'AZ_SECRET' } });
    refused({ vaultUrl: 'https://v.vault.azure.net', tenantId: 't', clientId: 'c' }, '--client-secret-env');
    refused({ vaultUrl: 'https://v.vault.azure.net', tenantId: 't', clientSecretFile: '/s' }, '--client-id');
    refused({ vaultUrl: 'https://v.vault.azure.net', tenantId: 't', clientId: 'c', clientSecretEnv: 'not a name' }, '--client-secret-env');
  });

  it('refuses bad flags naming them', () => {
    refused({}, '--vault-url');
    refused({ vaultUrl: 'http://v.vault.azure.net' }, '--vault-url');
    refused({ vaultUrl: 'https://v.vault.azure.net/keys/x' }, '--vault-url');
    refused({ vaultUrl: 'https://v.vault.azure.net', serviceVersion: '6.0' }, '--service-version');
    refused({ vaultUrl: 'https://v.vault.azure.net', maxConcurrency: 0 }, '--max-concurrency');
    refused({ vaultUrl: 'https://v.vault.azure.net', requestTimeoutMs: 'soon' }, '--request-timeout-ms');
  });

  it('declares every flag it reads', () => {
    const declared = azureInitFlags.map((f) => f.flags.split(' ')[0]);
    expect(declared).toEqual(['--vault-url', '--hsm', '--service-version', '--max-concurrency', '--request-timeout-ms', '--purge-on-destroy', '--tenant-id', '--client-id', '--client-secret-env', '--client-secret-file']);
  });
});
