/**
 * Runs against: gcp-kms-emulator (Go), started per file on free loopback ports; for Ed25519 and
 * RSA-PSS, the project's gRPC fake. OpenSSL checks signatures; the emulator is stopped and hung
 * (through a local TCP proxy) to show the typed errors and their time bounds.
 */
import { randomBytes } from 'node:crypto';
import { KeyManagementServiceClient } from '@google-cloud/kms';
import { credentials } from '@grpc/grpc-js';
import { exportPublicKey, type KeyAlgorithm } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GcpKmsBackend } from '../src/index.js';
import { KmsFake } from './fake/kms-fake.js';
import { loopbackBackend, uniqueRing } from './helpers/backend.js';
import { isolateFromGoogle, startEmulator, type RunningEmulator } from './helpers/emulator.js';
import { opensslVerify } from './helpers/openssl.js';
import { TcpProxy } from './helpers/proxy.js';
import { ThrottlingProxy } from './fake/throttling-proxy.js';

isolateFromGoogle();
let emulator: RunningEmulator;
let backend: GcpKmsBackend;
const keyRing = uniqueRing();
const keyRingName = `projects/olocus-test/locations/us-east1/keyRings/${keyRing}`;

beforeAll(async () => {
  emulator = await startEmulator();
  backend = loopbackBackend(emulator.port, { keyRing });
  await backend.initialize();
});
afterAll(async () => {
  await backend?.close();
  await emulator?.stop();
});

describe('OpenSSL verifies what the backend signs, from the exported public key', () => {
  for (const algorithm of ['ECDSA_P256', 'ECDSA_P384', 'RSA_2048'] as KeyAlgorithm[]) {
    it(`${algorithm} on gcp-kms-emulator`, async () => {
      const key = await backend.generateKeyPair({ id: `ossl-${algorithm}`, algorithm });
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      const data = randomBytes(2048);
      const signature = await backend.sign(key, data);
      expect(opensslVerify(algorithm, pem, data, signature)).toBe(true);
      const tampered = Buffer.from(data);
      tampered[0]! ^= 1;
      expect(opensslVerify(algorithm, pem, tampered, signature)).toBe(false);
    });
  }

  it('Ed25519 and RSA-PSS on the gRPC fake', async () => {
    const fake = new KmsFake();
    await fake.start();
    const onFake = loopbackBackend(fake.port);
    try {
      await onFake.initialize();
      for (const algorithm of ['Ed25519', 'RSA_PSS_2048'] as KeyAlgorithm[]) {
        const key = await onFake.generateKeyPair({ id: `ossl-${algorithm}`, algorithm });
        const pem = exportPublicKey(await onFake.getPublicKey(key), 'pem');
        const data = randomBytes(700);
        const signature = await onFake.sign(key, data);
        expect(opensslVerify(algorithm, pem, data, signature), algorithm).toBe(true);
        expect(opensslVerify(algorithm, pem, randomBytes(700), signature), algorithm).toBe(false);
      }
    } finally {
      await onFake.close();
      await fake.stop();
    }
  });
});

describe('keys made outside the library', () => {
  it('a key made directly with @google-cloud/kms (no Olocus labels) signs by CryptoKeyVersion name', async () => {
    const client = new KeyManagementServiceClient({ apiEndpoint: '127.0.0.1', port: emulator.port, sslCreds: credentials.createInsecure() });
    const [cryptoKey] = await client.createCryptoKey({
      parent: keyRingName,
      cryptoKeyId: 'made-by-gcloud',
      cryptoKey: { purpose: 'ASYMMETRIC_SIGN', versionTemplate: { algorithm: 'EC_SIGN_P256_SHA256', protectionLevel: 'HSM' } },
    });
    await client.close();
    const versionName = `${cryptoKey.name}/cryptoKeyVersions/1`;
    const handle = await backend.getKey(versionName);
    expect(handle.ref).toBe(versionName);
    expect(handle.algorithm).toBe('ECDSA_P256');
    expect(handle.usages).toEqual(['sign', 'verify']);
    expect(handle.labels).toBeUndefined();
    const data = randomBytes(100);
    const signature = await backend.sign(versionName, data);
    const pem = exportPublicKey(await backend.getPublicKey(versionName), 'pem');
    expect(opensslVerify('ECDSA_P256', pem, data, signature)).toBe(true);
    expect(await backend.verify(versionName, data, signature)).toBe(true);
    // by CryptoKey name too, and listed
    expect((await backend.getKey(String(cryptoKey.name))).ref).toBe(versionName);
    const listed = await backend.listKeys({ limit: 1000 });
    expect(listed.keys.map((k) => k.ref)).toContain(versionName);
  });
});

describe('scheduled destruction', () => {
  it('destroyKey schedules destruction: the key signs no more and shows pending-deletion', async () => {
    const key = await backend.generateKeyPair({ id: 'to-destroy', algorithm: 'ECDSA_P256' });
    await backend.destroyKey(key.id);
    const shown = await backend.getKey(key.id);
    expect(shown.state).toBe('pending-deletion');
    expect(shown.metadata.versionState).toBe('DESTROY_SCHEDULED');
    await expectHsmError(backend.sign(key.ref, randomBytes(8)), 'KeyDisabled');
    // a fresh instance (no cache) learns the state from Cloud KMS
    const fresh = loopbackBackend(emulator.port, { keyRing });
    await fresh.initialize();
    try {
      expect((await fresh.getKey(key.ref)).state).toBe('pending-deletion');
      await expectHsmError(fresh.sign(key.id, randomBytes(8)), 'KeyDisabled');
    } finally {
      await fresh.close();
    }
  });
});

describe('faults', () => {
  it('a hung emulator (proxy that stops forwarding): Timeout within requestTimeoutMs + retryBudgetMs', async () => {
    const proxy = new TcpProxy(emulator.port);
    await proxy.start();
    const viaProxy = loopbackBackend(proxy.port, { keyRing, requestTimeoutMs: 800, retryBudgetMs: 1500 });
    try {
      await viaProxy.initialize();
      const key = await viaProxy.generateKeyPair({ id: 'hung', algorithm: 'ECDSA_P256' });
      await viaProxy.sign(key, randomBytes(8));
      proxy.mode = 'hang';
      const started = Date.now();
      const error = await expectHsmError(viaProxy.sign(key, randomBytes(8)), 'Timeout');
      const elapsed = Date.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(700);
      expect(elapsed).toBeLessThan(800 + 1500 + 5000);
      expect(error.retryable).toBe(true);
      expect(error.details.grpcCode).toBe('DEADLINE_EXCEEDED');
    } finally {
      await viaProxy.close();
      await proxy.stop();
    }
  });

  it('RESOURCE_EXHAUSTED for a while (a gRPC proxy in front of the emulator injects it): calls retry, then succeed within the bound', async () => {
    const proxy = new ThrottlingProxy(emulator.port);
    await proxy.start();
    const throttled = loopbackBackend(proxy.port, { keyRing, retryBudgetMs: 8000 });
    try {
      await throttled.initialize();
      const key = await throttled.generateKeyPair({ id: 'throttled', algorithm: 'ECDSA_P256' });
      const pem = exportPublicKey(await throttled.getPublicKey(key), 'pem');
      proxy.throttleUntil = Date.now() + 1200;
      const started = Date.now();
      const messages = Array.from({ length: 6 }, () => randomBytes(40));
      const signatures = await Promise.all(messages.map((m) => throttled.sign(key, m)));
      const elapsed = Date.now() - started;
      expect(proxy.throttled).toBeGreaterThanOrEqual(6);
      expect(elapsed).toBeGreaterThanOrEqual(1000);
      expect(elapsed).toBeLessThan(8000 + 10_000);
      for (const [i, m] of messages.entries()) expect(opensslVerify('ECDSA_P256', pem, m, signatures[i]!)).toBe(true);
      // throttling that outlasts the budget: a retryable DeviceUnavailable naming the cause
      const hasty = loopbackBackend(proxy.port, { keyRing, retryBudgetMs: 800 });
      await hasty.initialize();
      await hasty.getKey(key.ref);
      proxy.throttleUntil = Date.now() + 60_000;
      const error = await expectHsmError(hasty.sign(key.ref, randomBytes(8)), 'DeviceUnavailable');
      expect(error.retryable).toBe(true);
      expect(error.details.grpcCode).toBe('RESOURCE_EXHAUSTED');
      await hasty.close();
    } finally {
      proxy.throttleUntil = 0;
      await throttled.close();
      await proxy.stop();
    }
  });

  it('a stopped emulator (connection refused): retryable DeviceUnavailable within the bound', async () => {
    const own = await startEmulator();
    const doomed = loopbackBackend(own.port, { keyRing: 'ring-doomed', requestTimeoutMs: 1000, retryBudgetMs: 1500 });
    try {
      await doomed.initialize();
      const key = await doomed.generateKeyPair({ id: 'doomed', algorithm: 'ECDSA_P256' });
      await own.stop();
      const started = Date.now();
      const error = await expectHsmError(doomed.sign(key, randomBytes(8)), ['DeviceUnavailable', 'Timeout']);
      expect(Date.now() - started).toBeLessThan(1000 + 1500 + 5000);
      expect(error.retryable).toBe(true);
      expect(['UNAVAILABLE', 'DEADLINE_EXCEEDED']).toContain(error.details.grpcCode);
      const health = await doomed.healthCheck();
      expect(health.healthy).toBe(false);
    } finally {
      await doomed.close();
      await own.stop();
    }
  });
});

describe('backup (reference-only) on gcp-kms-emulator: the private key stays in Cloud KMS', () => {
  it('exportKey records the CryptoKeyVersion and public key, no blob, and what the key relies on; importKey refuses', async () => {
    const key = await backend.generateKeyPair({ id: 'backup-ref', algorithm: 'ECDSA_P256', backup: true });
    expect(backend.backup.method).toBe('reference-only');
    const out = await backend.backup.exportKey(key);
    expect(out).toMatchObject({ method: 'reference-only', id: 'backup-ref', algorithm: 'ECDSA_P256', usages: ['sign', 'verify'] });
    expect(out.blob).toBeUndefined();
    expect(Buffer.from(out.publicKeySpki).equals(Buffer.from((await backend.getPublicKey(key)).spki))).toBe(true);
    expect(out.parameters).toMatchObject({ provider: 'gcp-kms', keyRing: keyRingName, cryptoKeyVersion: key.ref, gcpAlgorithm: 'EC_SIGN_P256_SHA256' });
    expect(out.parameters.cryptoKey).toBe(key.ref.replace(/\/cryptoKeyVersions\/\d+$/, ''));
    expect(out.parameters.durability).toContain("relies on the provider's durability");
    const refused = await expectHsmError(backend.backup.importKey(out), 'InvalidArgument');
    expect(refused.message).toContain('Google Cloud KMS keeps the private key');
    expect(refused.message).toContain(key.ref);
  });
});
