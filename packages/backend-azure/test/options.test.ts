import { HsmError, isHsmError, type BackendContext } from '@olocus/hsm-core';
import { describe, expect, it } from 'vitest';
import { AzureKeyVaultBackend, azureBackendFactory, mapAzureError, parseAzureOptions } from '../src/index.js';

const noNetwork = { getToken: async () => ({ token: 'never-used', expiresOnTimestamp: Date.now() + 60_000 }) };

function configError(raw: unknown): HsmError {
  try {
    parseAzureOptions(raw);
  } catch (error) {
    expect(isHsmError(error, 'InvalidConfiguration'), String(error)).toBe(true);
    return error as HsmError;
  }
  throw new Error('expected InvalidConfiguration');
}

describe('options', () => {
  it('fills defaults and refuses bad fields by name', () => {
    expect(parseAzureOptions({ vaultUrl: 'https://v.vault.azure.net' })).toMatchObject({ hsm: false, maxConcurrency: 64, requestTimeoutMs: 30_000, purgeOnDestroy: false, credential: { type: 'default' } });
    expect(configError({}).message).toMatch(/vaultUrl/);
    expect(configError({ vaultUrl: 'http://v.vault.azure.net' }).message).toMatch(/vaultUrl: must be an https URL/);
    expect(configError({ vaultUrl: 'https://v.vault.azure.net', serviceVersion: '1.0' }).message).toMatch(/serviceVersion/);
    expect(configError({ vaultUrl: 'https://v.vault.azure.net', maxConcurrency: 0 }).message).toMatch(/maxConcurrency/);
    expect(configError({ vaultUrl: 'https://v.vault.azure.net', unknown: 1 }).message).toMatch(/unknown|Unrecognized/i);
  });

  it('accepts every section `olocus-hsm init --backend azure-keyvault` writes (packages/cli/src/init-azure.ts)', () => {
    const written = {
      vaultUrl: 'https://pool.managedhsm.azure.net',
      hsm: true,
      serviceVersion: '7.5',
      maxConcurrency: 16,
      requestTimeoutMs: 5000,
      purgeOnDestroy: true,
      credential: { tenantId: 't', clientId: 'c', clientSecret: { env: 'AZ_SECRET' } },
    };
    expect(parseAzureOptions(written)).toMatchObject(written);
    expect(parseAzureOptions({ ...written, credential: { tenantId: 't', clientId: 'c', clientSecret: { file: '/run/secrets/az' } } }).credential).toMatchObject({ clientSecret: { file: '/run/secrets/az' } });
  });

  it('never takes a secret inline, and does not echo one', () => {
    const error = configError({ vaultUrl: 'https://v.vault.azure.net', credential: { tenantId: 't', clientId: 'c', clientSecret: 'hunter2-secret-value' } });
    expect(error.message).toMatch(/credential/);
    expect(error.message).not.toContain('hunter2-secret-value');
  });
});

describe('instance facts without a network call', () => {
  it('a Managed HSM URL always means HSM keys and FIPS 140-3 level 3 on the provider\'s claim', async () => {
    const backend = new AzureKeyVaultBackend({ vaultUrl: 'https://Pool.managedhsm.azure.net/' }, { credential: noNetwork });
    expect(backend.instanceId).toBe('azure-keyvault:https://pool.managedhsm.azure.net');
    await backend.initialize();
    expect(await backend.fipsStatus()).toMatchObject({ standard: 'FIPS 140-3', level: 3, evidence: 'provider-claim' });
    expect((await backend.capabilities()).hardwareBacked).toBe(true);
    expect((await backend.info()).details).toMatchObject({ managedHsm: true, hsm: true });
    await backend.close();
  });

  it('a Standard vault claims nothing; Premium with hsm claims level 3', async () => {
    const standard = new AzureKeyVaultBackend({ vaultUrl: 'https://v.vault.azure.net' }, { credential: noNetwork });
    await standard.initialize();
    expect(await standard.fipsStatus()).toMatchObject({ standard: 'none', level: 0, evidence: 'none' });
    expect((await standard.capabilities()).hardwareBacked).toBe(false);
    const premium = new AzureKeyVaultBackend({ vaultUrl: 'https://v.vault.azure.net', hsm: true }, { credential: noNetwork });
    await premium.initialize();
    expect(await premium.fipsStatus()).toMatchObject({ standard: 'FIPS 140-3', level: 3, evidence: 'provider-claim' });
  });

  it('reads a service principal secret through the context, and a reader failure names the field', async () => {
    const asked: string[] = [];
    const context: BackendContext = {
      env: {},
      readSecret: async (source, field) => {
        asked.push(`${field}:${'env' in source ? source.env : source.file}`);
        throw new HsmError('InvalidConfiguration', `${field}: environment variable AZ_SECRET is not set`);
      },
    };
    const options = azureBackendFactory.parseOptions({ vaultUrl: 'https://v.vault.azure.net', credential: { tenantId: 't', clientId: 'c', clientSecret: { env: 'AZ_SECRET' } } });
    const backend = await azureBackendFactory.create(options, context);
    const error = await backend.initialize().then(() => undefined, (e: unknown) => e as HsmError);
    expect(error?.code).toBe('InvalidConfiguration');
    expect(asked).toEqual(['backend.options.credential.clientSecret:AZ_SECRET']);
  });
});

describe('error mapping', () => {
  const ctx = { action: 'sign with key k', keyId: 'k', credentialType: 'DefaultAzureCredential', timeoutMs: 1000, timedOut: false, secrets: ['s3cr3t-value'] };
  const rest = (statusCode: number, message: string, headers: Record<string, string> = {}) =>
    Object.assign(new Error(message), { name: 'RestError', statusCode, details: { error: { code: 'X', message } }, response: { headers: { get: (n: string) => headers[n] } } });

  it('maps the vault\'s answers to the documented codes', () => {
    expect(mapAzureError(rest(404, 'A key with (name/id) k was not found'), ctx).code).toBe('KeyNotFound');
    expect(mapAzureError(rest(403, 'The user does not have keys sign permission'), ctx).code).toBe('PermissionDenied');
    expect(mapAzureError(rest(403, 'Operation sign is not allowed on a disabled key.'), ctx).code).toBe('KeyDisabled');
    expect(mapAzureError(rest(403, 'Operation sign is not allowed on an expired key.'), ctx).code).toBe('KeyExpired');
    expect(mapAzureError(rest(404, 'Operation get is not allowed on a disabled entity.'), ctx).code).toBe('KeyDisabled');
    expect(mapAzureError(rest(409, 'Conflict'), ctx).code).toBe('KeyAlreadyExists');
    const throttled = mapAzureError(rest(429, 'Too many requests', { 'retry-after': '7' }), ctx);
    expect([throttled.code, throttled.retryable, throttled.details.retryAfter]).toEqual(['DeviceUnavailable', true, '7']);
    expect(mapAzureError(rest(503, 'busy'), ctx)).toMatchObject({ code: 'DeviceUnavailable', retryable: true });
    expect(mapAzureError(rest(401, 'bad token'), ctx)).toMatchObject({ code: 'AuthenticationFailed', retryable: false });
    expect(mapAzureError(Object.assign(new Error('connect ECONNREFUSED'), { name: 'RestError', code: 'ECONNREFUSED' }), ctx)).toMatchObject({ code: 'DeviceUnavailable', retryable: true });
    expect(mapAzureError(Object.assign(new Error('aborted'), { name: 'AbortError' }), { ...ctx, timedOut: true }).message).toMatch(/requestTimeoutMs \(1000 ms\)/);
    expect(mapAzureError(Object.assign(new Error('aborted'), { name: 'AbortError' }), ctx).code).toBe('Timeout');
  });

  it('keeps secrets and bearer tokens out of messages', () => {
    const leaky = Object.assign(new Error('failed with s3cr3t-value and Authorization: Bearer eyJhbGciOi.abc.def'), { name: 'AuthenticationError' });
    const mapped = mapAzureError(leaky, ctx);
    expect(mapped.code).toBe('AuthenticationFailed');
    expect(mapped.message).not.toContain('s3cr3t-value');
    expect(mapped.message).not.toContain('eyJhbGciOi');
    expect(mapped.message).toContain('DefaultAzureCredential');
  });
});
