import { randomBytes } from 'node:crypto';
import { GcpKmsBackend, type GcpKmsBackendOptionsInput } from '../../src/index.js';

/** A backend on a loopback endpoint (emulator or fake), plaintext, no credentials. */
export function loopbackBackend(port: number, options: Partial<GcpKmsBackendOptionsInput> = {}): GcpKmsBackend {
  return new GcpKmsBackend({
    projectId: 'olocus-test',
    location: 'us-east1',
    keyRing: 'ring-test',
    createKeyRing: true,
    apiEndpoint: '127.0.0.1',
    port,
    insecure: true,
    requestTimeoutMs: 10_000,
    retryBudgetMs: 5_000,
    ...options,
  });
}

export const uniqueRing = (): string => `ring-${randomBytes(4).toString('hex')}`;
