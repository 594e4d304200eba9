import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsKmsBackend, parseAwsKmsOptions } from '../src/index.js';
import { ACCOUNT_ID, REGION, startLocalKms, useTestCredentials, type Emulator } from './emulators.js';
import { HttpFaultProxy } from './proxy.js';

/**
 * Runs against: local-kms behind a project proxy that holds each request (600 or 500 ms) and counts how
 * many are in flight at once. Shows that maxConcurrency is the only bound on requests in flight
 * (the SDK's default agent would cap at 50 sockets) and that it is respected. What it cannot
 * prove: throughput on real AWS (see BENCHMARKS.md for the loopback figures).
 */
useTestCredentials();
let kms: Emulator;
let proxy: HttpFaultProxy;
beforeAll(async () => {
  kms = await startLocalKms();
  proxy = await new HttpFaultProxy(kms.port).start();
}, 120_000);
afterAll(async () => {
  await proxy?.stop();
  await kms?.stop();
});

const backendWith = (maxConcurrency: number) =>
  new AwsKmsBackend(parseAwsKmsOptions({ region: REGION, endpoint: proxy.endpoint, accountId: ACCOUNT_ID, maxConcurrency, algorithms: ['ECDSA_P256'], deletionWindowDays: 7, requestTimeoutMs: 20_000, retry: { totalTimeMs: 30_000 } }));

describe('aws-kms request concurrency', () => {
  it('keeps at most maxConcurrency requests in flight and queues the rest (visible in metrics)', async () => {
    const backend = backendWith(4);
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'bounded', algorithm: 'ECDSA_P256' });
      await backend.sign(key, randomBytes(8)); // resolve and cache before measuring
      proxy.delayMs = 600;
      proxy.maxInFlight = 0;
      const all = Promise.all(Array.from({ length: 20 }, () => backend.sign(key, randomBytes(32))));
      await new Promise((r) => setTimeout(r, 100));
      const metrics = backend.metrics().pool!;
      expect(metrics.max).toBe(4);
      expect(metrics.inUse).toBe(4);
      expect(metrics.waiting).toBe(16);
      await all;
      expect(proxy.maxInFlight).toBe(4);
      expect(backend.metrics().pool!.inUse).toBe(0);
    } finally {
      proxy.delayMs = 0;
      await backend.close();
    }
  });

  it('puts 64 signatures on the wire at once with maxConcurrency 64 (no serialization, no 50-socket cap)', async () => {
    const backend = backendWith(64);
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'wide', algorithm: 'ECDSA_P256' });
      await backend.sign(key, randomBytes(8));
      proxy.delayMs = 500;
      proxy.maxInFlight = 0;
      await Promise.all(Array.from({ length: 64 }, () => backend.sign(key, randomBytes(32))));
      expect(proxy.maxInFlight).toBe(64);
    } finally {
      proxy.delayMs = 0;
      await backend.close();
    }
  });
});
