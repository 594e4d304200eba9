import { describe, expect, it } from 'vitest';
import { gcpBackendConfig, gcpInitFlags } from '../src/init-gcp.js';

describe('init --backend gcp-kms', () => {
  it('builds the gcp-kms section from the flags, with no secret in it', () => {
    expect(gcpBackendConfig({ backend: 'gcp-kms', project: 'acme-prod', location: 'europe-west1', keyRing: 'olocus', protectionLevel: 'software', createKeyRing: true, destroyScheduledDuration: '7d', maxConcurrency: '32', requestTimeoutMs: '5000' })).toEqual({
      type: 'gcp-kms',
      options: { projectId: 'acme-prod', location: 'europe-west1', keyRing: 'olocus', protectionLevel: 'SOFTWARE', createKeyRing: true, destroyScheduledDuration: '7d', maxConcurrency: 32, requestTimeoutMs: 5000 },
    });
    expect(gcpBackendConfig({ project: 'acme-prod', location: 'global', keyRing: 'r' })).toEqual({ type: 'gcp-kms', options: { projectId: 'acme-prod', location: 'global', keyRing: 'r' } });
  });

  it('points at a loopback emulator in plaintext only when asked with --emulator', () => {
    expect(gcpBackendConfig({ project: 'olocus-test', location: 'us-east1', keyRing: 'r', emulator: '127.0.0.1:9090' }).options).toEqual({
      projectId: 'olocus-test',
      location: 'us-east1',
      keyRing: 'r',
      apiEndpoint: '127.0.0.1',
      port: 9090,
      insecure: true,
    });
    expect(() => gcpBackendConfig({ project: 'olocus-test', location: 'us-east1', keyRing: 'r', emulator: 'kms.example.com:443' })).toThrow(/--emulator must be a loopback host:port/);
  });

  it('names the flag that is missing or wrong', () => {
    expect(() => gcpBackendConfig({ location: 'us-east1', keyRing: 'r' })).toThrow(/--project is required/);
    expect(() => gcpBackendConfig({ project: 'acme-prod', keyRing: 'r' })).toThrow(/--location is required/);
    expect(() => gcpBackendConfig({ project: 'acme-prod', location: 'us-east1' })).toThrow(/--key-ring is required/);
    expect(() => gcpBackendConfig({ project: 'Acme Prod', location: 'us-east1', keyRing: 'r' })).toThrow(/--project must be a Google Cloud project id/);
    expect(() => gcpBackendConfig({ project: 'acme-prod', location: 'us-east1', keyRing: 'r/x' })).toThrow(/--key-ring must be a key ring id/);
    expect(() => gcpBackendConfig({ project: 'acme-prod', location: 'us-east1', keyRing: 'r', protectionLevel: 'EXTERNAL' })).toThrow(/--protection-level must be HSM or SOFTWARE/);
    expect(() => gcpBackendConfig({ project: 'acme-prod', location: 'us-east1', keyRing: 'r', destroyScheduledDuration: '1h' })).toThrow(/--destroy-scheduled-duration must be from 24h to 120d/);
    expect(() => gcpBackendConfig({ project: 'acme-prod', location: 'us-east1', keyRing: 'r', apiEndpoint: 'https://x/' })).toThrow(/--api-endpoint must be a host name/);
    expect(() => gcpBackendConfig({ backend: 'aws-kms', project: 'acme-prod', location: 'us-east1', keyRing: 'r' })).toThrow(/--backend must be gcp-kms/);
  });

  it('declares every flag it reads, none of them for a secret', () => {
    const declared = gcpInitFlags.map((f) => f.flags.split(' ')[0]);
    expect(declared).toEqual(['--project', '--location', '--key-ring', '--protection-level', '--create-key-ring', '--destroy-scheduled-duration', '--api-endpoint', '--emulator', '--max-concurrency', '--request-timeout-ms']);
    for (const flag of gcpInitFlags) expect(flag.flags).not.toMatch(/key-file|credential|secret|token|password/i);
  });
});
