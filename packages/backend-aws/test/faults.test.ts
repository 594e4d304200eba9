import { randomBytes } from 'node:crypto';
import { DisableKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { isHsmError, type HsmError } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsKmsBackend, parseAwsKmsOptions, type AwsKmsOptionsInput } from '../src/index.js';
import { ACCOUNT_ID, REGION, startLocalKms, useTestCredentials, type Emulator } from './emulators.js';
import { HttpFaultProxy, TcpProxy } from './proxy.js';

/**
 * Runs against: local-kms behind project-owned proxies (a TCP proxy that can stop forwarding, an
 * HTTP proxy that answers some requests itself with AWS JSON errors). What it cannot prove: the
 * exact throttling and credential-rejection responses of real AWS (the proxy writes them from the
 * AWS JSON 1.1 error shape), and IAM decisions.
 */
useTestCredentials();
const SECRET = process.env.AWS_SECRET_ACCESS_KEY!;

let kms: Emulator;
beforeAll(async () => {
  kms = await startLocalKms();
}, 120_000);
afterAll(async () => {
  await kms?.stop();
});

function backendAt(endpoint: string, extra: Partial<AwsKmsOptionsInput> = {}): AwsKmsBackend {
  return new AwsKmsBackend(parseAwsKmsOptions({ region: REGION, endpoint, accountId: ACCOUNT_ID, algorithms: ['ECDSA_P256'], deletionWindowDays: 7, ...extra }));
}

function noSecret(error: HsmError): void {
  const text = `${error.message} ${JSON.stringify(error.toJSON())}`;
  expect(text).not.toContain(SECRET);
  expect(text).not.toContain(process.env.AWS_ACCESS_KEY_ID ?? 'unset');
}

async function timed<T>(promise: Promise<T>): Promise<{ error: HsmError; ms: number }> {
  const started = Date.now();
  try {
    await promise;
  } catch (error) {
    if (!isHsmError(error)) throw error;
    return { error, ms: Date.now() - started };
  }
  throw new Error('expected the call to fail');
}

describe('aws-kms faults', () => {
  it('a stopped emulator (connection refused) gives a retryable DeviceUnavailable within retry.totalTimeMs', async () => {
    const own = await startLocalKms();
    const backend = backendAt(own.endpoint, { retry: { totalTimeMs: 1500 }, requestTimeoutMs: 1000 });
    await backend.initialize();
    const key = await backend.generateKeyPair({ id: 'stopped-key', algorithm: 'ECDSA_P256' });
    await own.stop();
    const { error, ms } = await timed(backend.sign(key, randomBytes(32)));
    expect(error.code).toBe('DeviceUnavailable');
    expect(error.retryable).toBe(true);
    expect(error.details.reason).toBe('unreachable');
    expect(ms).toBeLessThan(1500 + 2000);
    noSecret(error);
    expect((await backend.healthCheck()).healthy).toBe(false);
    await backend.close();
  });

  it('a hung emulator (TCP proxy that stops forwarding) gives DeviceUnavailable (timeout) within the configured time', async () => {
    const proxy = await new TcpProxy(kms.port).start();
    const backend = backendAt(proxy.endpoint, { retry: { totalTimeMs: 1500 }, requestTimeoutMs: 500 });
    try {
      await backend.initialize();
      const key = await backend.generateKeyPair({ id: 'hung-key', algorithm: 'ECDSA_P256' });
      expect((await backend.sign(key, randomBytes(16))).length).toBe(64);
      proxy.hung = true;
      const { error, ms } = await timed(backend.sign(key, randomBytes(16)));
      expect(error.code).toBe('DeviceUnavailable');
      expect(error.retryable).toBe(true);
      expect(error.details.reason).toBe('timeout');
      expect(ms).toBeLessThan(1500 + 2000);
      noSecret(error);
      // forwarding again: the backend recovers without a restart
      proxy.hung = false;
      expect((await backend.sign(key, randomBytes(16))).length).toBe(64);
    } finally {
      await backend.close();
      await proxy.stop();
    }
  });

  it('a slow CreateKey gets keyCreationTimeoutMs, not requestTimeoutMs; a Sign as slow is cut at requestTimeoutMs', async () => {
    const proxy = await new HttpFaultProxy(kms.port).start();
    const backend = backendAt(proxy.endpoint, { requestTimeoutMs: 300, keyCreationTimeoutMs: 5000, retry: { totalTimeMs: 1000 } });
    try {
      await backend.initialize();
      // the HTTP handler's own request timeout must follow the attempt's longer limit
      proxy.delayFor = (target) => (target.endsWith('.CreateKey') ? 900 : 0);
      const key = await backend.generateKeyPair({ id: 'slow-create', algorithm: 'ECDSA_P256' });
      expect((await backend.sign(key, randomBytes(16))).length).toBe(64);
      proxy.delayFor = (target) => (target.endsWith('.Sign') ? 900 : 0);
      const { error, ms } = await timed(backend.sign(key, randomBytes(16)));
      expect(error.code).toBe('DeviceUnavailable');
      expect(error.details.reason).toBe('timeout');
      expect(ms).toBeLessThan(1000 + 1500);
    } finally {
      await backend.close();
      await proxy.stop();
    }
  });

  it('close() during a hung call ends it at once with Closed', async () => {
    const proxy = await new TcpProxy(kms.port).start();
    const backend = backendAt(proxy.endpoint, { retry: { totalTimeMs: 30_000 }, requestTimeoutMs: 20_000 });
    try {
      await backend.initialize();
      const key = await backend.generateKeyPair({ id: 'closed-while-hung', algorithm: 'ECDSA_P256' });
      proxy.hung = true;
      const pending = timed(backend.sign(key, randomBytes(16)));
      await new Promise((r) => setTimeout(r, 200));
      await backend.close();
      const { error, ms } = await pending;
      expect(error.code).toBe('Closed');
      expect(ms).toBeLessThan(5000);
    } finally {
      await backend.close();
      await proxy.stop();
    }
  });

  it('throttling is retried with backoff until it passes, and a throttle that never ends stops at the bound', async () => {
    const proxy = await new HttpFaultProxy(kms.port).start();
    const backend = backendAt(proxy.endpoint, { retry: { totalTimeMs: 2000, baseDelayMs: 20, maxDelayMs: 200 } });
    try {
      await backend.initialize();
      const key = await backend.generateKeyPair({ id: 'throttled-key', algorithm: 'ECDSA_P256' });
      let throttled = 0;
      proxy.inject = (target) => (target.endsWith('.Sign') && throttled++ < 4 ? { status: 400, type: 'ThrottlingException', message: 'Rate exceeded' } : undefined);
      const before = proxy.seen.filter((t) => t.endsWith('.Sign')).length;
      expect((await backend.sign(key, randomBytes(16))).length).toBe(64);
      expect(proxy.seen.filter((t) => t.endsWith('.Sign')).length - before).toBe(5);

      proxy.inject = (target) => (target.endsWith('.Sign') ? { status: 400, type: 'ThrottlingException', message: 'Rate exceeded' } : undefined);
      const { error, ms } = await timed(backend.sign(key, randomBytes(16)));
      expect(error.code).toBe('DeviceUnavailable');
      expect(error.details.reason).toBe('throttled');
      expect(error.retryable).toBe(true);
      expect(Number(error.details.attempts)).toBeGreaterThan(1);
      expect(ms).toBeLessThan(2000 + 1000);
      // LimitExceededException is treated the same way
      proxy.inject = (target) => (target.endsWith('.Sign') ? { status: 400, type: 'LimitExceededException', message: 'limit' } : undefined);
      expect((await timed(backend.sign(key, randomBytes(16)))).error.details.reason).toBe('throttled');
    } finally {
      await backend.close();
      await proxy.stop();
    }
  });

  it('rejected credentials give AuthenticationFailed (not retried), AccessDenied gives PermissionDenied', async () => {
    const proxy = await new HttpFaultProxy(kms.port).start();
    const backend = backendAt(proxy.endpoint);
    try {
      await backend.initialize();
      const key = await backend.generateKeyPair({ id: 'auth-key', algorithm: 'ECDSA_P256' });
      proxy.inject = () => ({ status: 400, type: 'UnrecognizedClientException', message: 'The security token included in the request is invalid.' });
      const before = proxy.seen.length;
      const rejected = await expectHsmError(backend.sign(key, randomBytes(8)), 'AuthenticationFailed');
      expect(proxy.seen.length - before).toBe(1);
      expect(rejected.message).toMatch(/AWS_ACCESS_KEY_ID/);
      noSecret(rejected);
      proxy.inject = () => ({ status: 400, type: 'AccessDeniedException', message: 'User is not authorized to perform kms:Sign' });
      const denied = await expectHsmError(backend.sign(key, randomBytes(8)), 'PermissionDenied');
      expect(denied.message).toMatch(/kms:Sign/);
    } finally {
      await backend.close();
      await proxy.stop();
    }
  });

  it('missing credentials give AuthenticationFailed naming where the SDK looked, without reaching instance metadata', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    const backend = backendAt(kms.endpoint, { retry: { totalTimeMs: 3000 } });
    try {
      const { error, ms } = await timed(backend.initialize());
      expect(error.code).toBe('AuthenticationFailed');
      expect(error.details.reason).toBe('credentials-not-found');
      expect(error.message).toMatch(/AWS_ACCESS_KEY_ID/);
      expect(error.message).toMatch(/web identity/);
      expect(error.message).toMatch(/AWS_EC2_METADATA_DISABLED/);
      expect(ms).toBeLessThan(5000);
      noSecret(error);
    } finally {
      process.env.AWS_ACCESS_KEY_ID = saved.id;
      process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
      await backend.close();
    }
  });

  it('a key disabled or scheduled for deletion elsewhere is refused by AWS with KeyDisabled, even from a warm cache', async () => {
    const owner = backendAt(kms.endpoint);
    const other = backendAt(kms.endpoint);
    await owner.initialize();
    await other.initialize();
    try {
      const disabled = await owner.generateKeyPair({ id: 'disabled-elsewhere', algorithm: 'ECDSA_P256' });
      const dying = await owner.generateKeyPair({ id: 'deleted-elsewhere', algorithm: 'ECDSA_P256' });
      // warm the other instance's cache, so that only the service can refuse
      await other.sign(disabled.id, randomBytes(8));
      await other.sign(dying.id, randomBytes(8));
      const sdk = new KMSClient({ region: REGION, endpoint: kms.endpoint });
      await sdk.send(new DisableKeyCommand({ KeyId: disabled.ref }));
      sdk.destroy();
      await owner.destroyKey(dying);
      const off = await expectHsmError(other.sign(disabled.id, randomBytes(8)), 'KeyDisabled');
      expect(off.details.awsError).toBe('DisabledException');
      const pending = await expectHsmError(other.sign(dying.id, randomBytes(8)), 'KeyDisabled');
      expect(pending.details.awsError).toBe('KMSInvalidStateException');
      expect(pending.details.state).toBe('pending-deletion');
      expect(pending.message).toMatch(/pending deletion/);
      // once the cache is dropped the state is read: disabled, and the destroyed id is gone
      expect((await other.getKey(disabled.ref)).state).toBe('disabled');
      await expectHsmError(other.sign(dying.id, randomBytes(8)), 'KeyNotFound');
      await expectHsmError(other.sign(dying.ref, randomBytes(8)), 'KeyDisabled');
      await expectHsmError(other.sign(`arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/00000000-0000-0000-0000-000000000000`, randomBytes(8)), 'KeyNotFound');
    } finally {
      await owner.close();
      await other.close();
    }
  });
});
