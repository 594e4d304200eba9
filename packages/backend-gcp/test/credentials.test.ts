/**
 * Runs against: nothing. Without an emulator flag the backend uses Application Default
 * Credentials; with none available (no GOOGLE_APPLICATION_CREDENTIALS, an empty gcloud config,
 * the metadata server switched off) it must fail with AuthenticationFailed naming where ADC
 * looked, before any request leaves the process.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { GcpKmsBackend } from '../src/index.js';
import { isolateFromGoogle } from './helpers/emulator.js';

isolateFromGoogle();
const home = mkdtempSync(join(tmpdir(), 'olocus-gcp-home-'));
process.env.HOME = home;
process.env.CLOUDSDK_CONFIG = join(home, 'gcloud');

// a loopback listener that records any connection: none may arrive
let connections = 0;
const listener = createServer((socket) => {
  connections++;
  socket.destroy();
});
let port = 0;
beforeAll(async () => {
  port = await new Promise<number>((resolve) => listener.listen(0, '127.0.0.1', () => resolve((listener.address() as { port: number }).port)));
});
afterAll(() => new Promise<void>((resolve) => listener.close(() => resolve())));

it('missing credentials: AuthenticationFailed naming where ADC looked, no secret, no request sent', async () => {
  const backend = new GcpKmsBackend({ projectId: 'olocus-test', location: 'us-east1', keyRing: 'ring', apiEndpoint: '127.0.0.1', port, requestTimeoutMs: 5000, retryBudgetMs: 1000 });
  const started = Date.now();
  const error = await expectHsmError(backend.initialize(), 'AuthenticationFailed');
  expect(Date.now() - started).toBeLessThan(15_000);
  expect(error.message).toContain('Application Default Credentials');
  expect(error.message).toContain('GOOGLE_APPLICATION_CREDENTIALS (unset)');
  expect(error.message).toContain(join(home, 'gcloud'));
  expect(error.message).toContain('METADATA_SERVER_DETECTION=none');
  expect(error.retryable).toBe(false);
  expect(connections).toBe(0);
  await backend.close();
});

it('bad credentials (an unreadable credentials file): AuthenticationFailed that does not quote the file', async () => {
  const file = join(home, 'broken-credentials.json');
  writeFileSync(file, '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nSECRETSECRET');
  process.env.GOOGLE_APPLICATION_CREDENTIALS = file;
  try {
    const backend = new GcpKmsBackend({ projectId: 'olocus-test', location: 'us-east1', keyRing: 'ring', apiEndpoint: '127.0.0.1', port });
    const error = await expectHsmError(backend.initialize(), 'AuthenticationFailed');
    expect(error.message).toContain(`GOOGLE_APPLICATION_CREDENTIALS (${file})`);
    expect(error.message).toContain('unusable');
    expect(error.message).not.toContain('SECRET');
    expect(JSON.stringify(error.toJSON())).not.toContain('SECRET');
    expect(connections).toBe(0);
    await backend.close();
  } finally {
    delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
  }
});

it('refuses plaintext (insecure) to anything but a loopback endpoint', () => {
  expect(() => new GcpKmsBackend({ projectId: 'olocus-test', location: 'us-east1', keyRing: 'ring', apiEndpoint: 'cloudkms.googleapis.com', port: 443, insecure: true })).toThrow(
    /insecure.*loopback/,
  );
});
