import { randomBytes } from 'node:crypto';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportPublicKey } from '@olocus/hsm-core';
import { expectHsmError, independentVerify } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeKeyVault, type FakeKeyVault } from './fake-key-vault.js';
import { backendFor } from './helpers.js';
import { startTcpProxy, startThrottlingProxy } from './proxies.js';

// Faults against the project's wire-level Key Vault over HTTPS (Lowkey Vault is not served here).
let fake: FakeKeyVault;
beforeAll(async () => {
  fake = await startFakeKeyVault();
});
afterAll(async () => fake?.close());

const elapsedSince = (start: number) => performance.now() - start;

describe('faults give typed errors within the configured time', () => {
  it('a stopped vault (connection refused): DeviceUnavailable, retryable, within requestTimeoutMs; works again once it is back', async () => {
    const backend = backendFor(fake, { requestTimeoutMs: 4000, maxRetries: 2, retryDelayMs: 100 });
    await backend.initialize();
    const key = await backend.generateKeyPair({ id: 'fault.stopped', algorithm: 'ECDSA_P256' });
    await fake.stop();
    try {
      const start = performance.now();
      const error = await expectHsmError(backend.sign(key, randomBytes(8)), 'DeviceUnavailable');
      expect(error.retryable).toBe(true);
      expect(elapsedSince(start)).toBeLessThan(4000 + 2000);
      expect(error.message).toMatch(/ECONNREFUSED|cannot reach/);
    } finally {
      await fake.start();
    }
    expect((await backend.sign(key, randomBytes(8))).length).toBe(64);
    await backend.close();
  });

  it('a hung vault (a proxy that stops forwarding): DeviceUnavailable naming requestTimeoutMs, within it', async () => {
    const proxy = await startTcpProxy(fake.port);
    try {
      const backend = backendFor(fake, { requestTimeoutMs: 1500, maxRetries: 1, retryDelayMs: 50 }, `https://127.0.0.1:${proxy.port}`);
      await backend.initialize();
      const key = await backend.generateKeyPair({ id: 'fault.hung', algorithm: 'ECDSA_P256' });
      expect(key.ref.startsWith(`https://127.0.0.1:${proxy.port}/keys/`)).toBe(true);
      expect((await backend.sign(key, randomBytes(8))).length).toBe(64);
      proxy.hang();
      const start = performance.now();
      const error = await expectHsmError(backend.sign(key, randomBytes(8)), 'DeviceUnavailable');
      const took = elapsedSince(start);
      expect(took).toBeGreaterThanOrEqual(1400);
      expect(took).toBeLessThan(1500 + 2000);
      expect(error.retryable).toBe(true);
      expect(error.message).toMatch(/requestTimeoutMs \(1500 ms\)/);
      await backend.close();
    } finally {
      await proxy.close();
    }
  });

  it('429 with Retry-After: calls wait as told and succeed; a wait past requestTimeoutMs ends in time', async () => {
    const proxy = await startThrottlingProxy(fake.port);
    try {
      const backend = backendFor(fake, { requestTimeoutMs: 8000, maxRetries: 3, retryDelayMs: 50 }, `https://127.0.0.1:${proxy.port}`);
      await backend.initialize();
      const key = await backend.generateKeyPair({ id: 'fault.throttled', algorithm: 'ECDSA_P256' });
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      const signsBefore = fake.counts.get('POST sign') ?? 0;
      proxy.throttle(/\/sign\?/, 2, 1);
      const data = randomBytes(32);
      const start = performance.now();
      const signature = await backend.sign(key, data);
      const took = elapsedSince(start);
      expect(independentVerify('ECDSA_P256', pem, data, signature)).toBe(true);
      expect(proxy.throttled.length).toBe(2);
      // two Retry-After: 1 waits were honoured
      expect(took).toBeGreaterThanOrEqual(1900);
      expect(proxy.throttled[1]! - proxy.throttled[0]!).toBeGreaterThanOrEqual(950);
      expect((fake.counts.get('POST sign') ?? 0) - signsBefore).toBe(1);

      const bounded = backendFor(fake, { requestTimeoutMs: 2500, maxRetries: 3, retryDelayMs: 50 }, `https://127.0.0.1:${proxy.port}`);
      await bounded.initialize();
      await bounded.getKey(key.ref);
      proxy.throttle(/\/sign\?/, 10, 30);
      const start2 = performance.now();
      const error = await expectHsmError(bounded.sign(key.ref, data), 'DeviceUnavailable');
      expect(error.retryable).toBe(true);
      expect(elapsedSince(start2)).toBeLessThan(2500 + 2000);
      await bounded.close();
      await backend.close();
    } finally {
      await proxy.close();
    }
  });

  it('a token the vault refuses (HTTP 401 after a fresh token): AuthenticationFailed, not retried forever', async () => {
    const backend = backendFor(fake, { requestTimeoutMs: 10_000 });
    await backend.initialize();
    fake.rejectTokens = true;
    try {
      const start = performance.now();
      const error = await expectHsmError(backend.getKey('anything'), 'AuthenticationFailed');
      expect(elapsedSince(start)).toBeLessThan(10_000);
      expect(error.message).toMatch(/401/);
      expect(error.message).not.toMatch(/Bearer [A-Za-z0-9]/);
    } finally {
      fake.rejectTokens = false;
      await backend.close();
    }
  });

  it('TLS is verified: a vault whose certificate is not trusted is refused', async () => {
    // a second certificate that nobody added to NODE_EXTRA_CA_CERTS
    const dir = mkdtempSync(join(tmpdir(), 'olocus-untrusted-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=untrusted', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'pipe' });
    const server = createServer({ key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) }, (_req, res) => {
      res.writeHead(500);
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const backend = backendFor(fake, { requestTimeoutMs: 5000, maxRetries: 0 }, `https://127.0.0.1:${(server.address() as AddressInfo).port}`);
      await backend.initialize();
      const error = await expectHsmError(backend.getKey('anything'), 'DeviceUnavailable');
      expect(error.message).toMatch(/certificate|self.signed|SELF_SIGNED/i);
      await backend.close();
    } finally {
      server.closeAllConnections();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
