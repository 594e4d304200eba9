/** Runs against: nothing (option parsing, the factory, CRC32C). */
import { BackendRegistry } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { describe, expect, it } from 'vitest';
import * as gcpPackage from '../src/index.js';
import { crc32c, parseGcpOptions } from '../src/index.js';

const base = { projectId: 'acme-prod', location: 'europe-west1', keyRing: 'olocus' };

describe('options', () => {
  it('fills the defaults: HSM protection, no key ring creation, bounded retries', () => {
    const options = parseGcpOptions(base);
    expect(options).toMatchObject({ protectionLevel: 'HSM', createKeyRing: false, insecure: false, maxConcurrency: 64, requestTimeoutMs: 10_000, retryBudgetMs: 30_000 });
  });

  it('reads destroyScheduledDuration as seconds or 30d / 48h / 86400s, within Cloud KMS limits', () => {
    expect(parseGcpOptions({ ...base, destroyScheduledDuration: '30d' }).destroyScheduledDuration).toBe(30 * 86400);
    expect(parseGcpOptions({ ...base, destroyScheduledDuration: '48h' }).destroyScheduledDuration).toBe(48 * 3600);
    expect(parseGcpOptions({ ...base, destroyScheduledDuration: 86400 }).destroyScheduledDuration).toBe(86400);
    expect(() => parseGcpOptions({ ...base, destroyScheduledDuration: '1h' })).toThrow(/destroyScheduledDuration: must be from 24 hours to 120 days/);
  });

  it('names the bad field, never takes credentials, and refuses P-521 and non-loopback plaintext', () => {
    expect(() => parseGcpOptions({ location: 'x', keyRing: 'r' })).toThrow(/projectId: is required/);
    expect(() => parseGcpOptions({ ...base, keyRing: 'a/b' })).toThrow(/keyRing: must be a key ring id/);
    expect(() => parseGcpOptions({ ...base, credentials: { private_key: 'x' } })).toThrow(/InvalidConfiguration|Unrecognized key/);
    expect(() => parseGcpOptions({ ...base, algorithms: ['ECDSA_P521'] })).toThrow(/Cloud KMS has no P-521/);
    expect(() => parseGcpOptions({ ...base, apiEndpoint: 'kms.example.com', port: 443, insecure: true })).toThrow(/insecure: is allowed only with a loopback apiEndpoint/);
    expect(() => parseGcpOptions({ ...base, apiEndpoint: '127.0.0.1', insecure: true })).toThrow(/port: is required with insecure/);
  });

  it('is loaded by core\'s registry for type gcp-kms', async () => {
    const imported: string[] = [];
    const registry = new BackendRegistry({ importer: async (s) => (imported.push(s), gcpPackage) });
    const backend = await registry.create({ type: 'gcp-kms', options: base });
    expect(imported).toEqual(['@olocus/hsm-backend-gcp']);
    expect(backend.type).toBe('gcp-kms');
    expect(backend.instanceId).toBe('gcp-kms:projects/acme-prod/locations/europe-west1/keyRings/olocus');
    await expectHsmError(backend.listKeys(), 'NotInitialized');
    await backend.close();
  });
});

describe('CRC32C', () => {
  it('is CRC-32C (Castagnoli): the check value of "123456789" is 0xe3069283', () => {
    expect(crc32c('123456789')).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    const bytes = Buffer.from('xx123456789yy');
    expect(crc32c(bytes.subarray(2, 11))).toBe(0xe3069283);
  });
});
