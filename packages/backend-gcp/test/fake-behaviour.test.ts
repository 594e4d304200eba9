/**
 * Runs against: the project's gRPC fake (test/fake/kms-fake.ts), which can misbehave on demand:
 * PENDING_GENERATION, every CRC32C/name failure of an answer, injected gRPC statuses and
 * throttling. gcp-kms-emulator can do none of these.
 */
import { createHash, randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { NAME_CODECS, exportPublicKey, isHsmError } from '@olocus/hsm-core';
import { expectHsmError, independentVerify } from '@olocus/hsm-core/testing';
import { crc32c as nodeRsCrc32c } from '@node-rs/crc32';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LABELS, type GcpKmsBackend } from '../src/index.js';
import { KmsFake } from './fake/kms-fake.js';
import { isolateFromGoogle } from './helpers/emulator.js';
import { loopbackBackend } from './helpers/backend.js';

isolateFromGoogle();
const fake = new KmsFake({ maxPageSize: 3 });
let backend: GcpKmsBackend;
let n = 0;
const id = (what: string) => `fb-${what}-${++n}`;

beforeAll(async () => {
  await fake.start();
  backend = loopbackBackend(fake.port, { keyCacheTtlMs: 60_000 });
  await backend.initialize();
});
afterAll(async () => {
  await backend?.close();
  await fake.stop();
});
beforeEach(() => {
  fake.pendingReads = 0;
  fake.throttleUntil = 0;
});

describe('HSM key generation is asynchronous', () => {
  it('waits for PENDING_GENERATION to end, so generateKeyPair returns a key that signs', async () => {
    fake.pendingReads = 4;
    const before = fake.count('ListCryptoKeyVersions');
    const key = await backend.generateKeyPair({ id: id('pending'), algorithm: 'RSA_PSS_2048' });
    expect(key.state ?? 'enabled').toBe('enabled');
    expect(fake.count('ListCryptoKeyVersions') - before).toBeGreaterThanOrEqual(4);
    const data = randomBytes(100);
    const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
    expect(independentVerify('RSA_PSS_2048', pem, data, await backend.sign(key, data))).toBe(true);
  });

  it('gives up after keyGenerationTimeoutMs with a retryable KeyGenerationFailed', async () => {
    fake.pendingReads = 1_000_000;
    const impatient = loopbackBackend(fake.port, { keyGenerationTimeoutMs: 1000 });
    await impatient.initialize();
    try {
      const started = Date.now();
      const error = await expectHsmError(impatient.generateKeyPair({ id: id('stuck'), algorithm: 'Ed25519' }), 'KeyGenerationFailed');
      expect(Date.now() - started).toBeLessThan(5000);
      expect(error.retryable).toBe(true);
      expect(error.message).toContain('PENDING_GENERATION');
    } finally {
      fake.pendingReads = 0;
      await impatient.close();
    }
  });
});

describe('CRC32C and name checks on AsymmetricSign', () => {
  let rsa: Awaited<ReturnType<GcpKmsBackend['generateKeyPair']>>;
  let ed: Awaited<ReturnType<GcpKmsBackend['generateKeyPair']>>;
  let rsaPem: string;
  beforeAll(async () => {
    rsa = await backend.generateKeyPair({ id: id('crc-rsa'), algorithm: 'RSA_2048' });
    ed = await backend.generateKeyPair({ id: id('crc-ed'), algorithm: 'Ed25519' });
    rsaPem = exportPublicKey(await backend.getPublicKey(rsa), 'pem');
    await backend.getPublicKey(ed);
  });

  it('sends the SHA-256 digest with its CRC32C (and Ed25519 the data with dataCrc32c)', async () => {
    const data = randomBytes(333);
    await backend.sign(rsa, data);
    const request = fake.requests.filter((r) => r.method === 'AsymmetricSign').at(-1)!.request;
    const digest = createHash('sha256').update(data).digest();
    expect(Buffer.from(request.digest.sha256).equals(digest)).toBe(true);
    expect(Number(request.digestCrc32c.value)).toBe(nodeRsCrc32c(digest));
    expect(request.name).toBe(rsa.ref);
    await backend.sign(ed, data);
    const edRequest = fake.requests.filter((r) => r.method === 'AsymmetricSign').at(-1)!.request;
    expect(Buffer.from(edRequest.data).equals(data)).toBe(true);
    expect(Number(edRequest.dataCrc32c.value)).toBe(nodeRsCrc32c(data));
    expect(edRequest.digest).toBeFalsy();
  });

  const faults = [
    ['corrupt-signature', 'a signature whose CRC32C does not match'],
    ['verified-false', 'a false verifiedDigestCrc32c'],
    ['wrong-name', 'a name other than the version asked for'],
    ['drop-signature-crc', 'no signatureCrc32c'],
  ] as const;
  for (const [fault, what] of faults) {
    it(`asks once more after ${what}, and returns only a good signature`, async () => {
      const data = randomBytes(64);
      const calls = fake.count('AsymmetricSign');
      const failures = backend.integrityFailureCount;
      fake.injectSignFaults(fault);
      const signature = await backend.sign(rsa, data);
      expect(independentVerify('RSA_2048', rsaPem, data, signature)).toBe(true);
      expect(fake.count('AsymmetricSign') - calls).toBe(2);
      expect(backend.integrityFailureCount - failures).toBe(1);
    });

    it(`fails with IntegrityError, returning no signature, after ${what} twice`, async () => {
      const calls = fake.count('AsymmetricSign');
      fake.injectSignFaults(fault, fault);
      const error = await expectHsmError(backend.sign(rsa, randomBytes(64)), 'IntegrityError');
      expect(fake.count('AsymmetricSign') - calls).toBe(2);
      expect(error.message).toContain(rsa.ref);
      // the next call is served normally
      expect((await backend.sign(rsa, randomBytes(8))).length).toBe(256);
    });
  }

  it('checks verifiedDataCrc32c for Ed25519 too', async () => {
    fake.injectSignFaults('verified-false', 'verified-false');
    const error = await expectHsmError(backend.sign(ed, randomBytes(10)), 'IntegrityError');
    expect(error.message).toContain('verifiedDataCrc32c');
  });

  it('checks pemCrc32c and name of GetPublicKey the same way', async () => {
    const key = await backend.generateKeyPair({ id: id('pem'), algorithm: 'Ed25519' });
    fake.injectPublicKeyFaults('corrupt-pem-crc', 'corrupt-pem-crc');
    const error = await expectHsmError(backend.getPublicKey(key), 'IntegrityError');
    expect(error.message).toContain('pemCrc32c');
    fake.injectPublicKeyFaults('wrong-name');
    const calls = fake.count('GetPublicKey');
    const info = await backend.getPublicKey(key);
    expect(info.algorithm).toBe('Ed25519');
    expect(fake.count('GetPublicKey') - calls).toBe(2);
  });
});

describe('error mapping', () => {
  let key: Awaited<ReturnType<GcpKmsBackend['generateKeyPair']>>;
  beforeAll(async () => {
    key = await backend.generateKeyPair({ id: id('errors'), algorithm: 'RSA_PSS_2048' });
  });

  const cases: Array<[string, number, string, boolean]> = [
    ['PERMISSION_DENIED', status.PERMISSION_DENIED, 'PermissionDenied', false],
    ['UNAUTHENTICATED', status.UNAUTHENTICATED, 'AuthenticationFailed', false],
    ['INVALID_ARGUMENT', status.INVALID_ARGUMENT, 'InvalidArgument', false],
    ['FAILED_PRECONDITION', status.FAILED_PRECONDITION, 'KeyDisabled', false],
    ['NOT_FOUND', status.NOT_FOUND, 'KeyNotFound', false],
    ['INTERNAL', status.INTERNAL, 'SigningFailed', false],
  ];
  for (const [name, code, expected] of cases) {
    it(`${name} on AsymmetricSign is ${expected}, not retried`, async () => {
      const calls = fake.count('AsymmetricSign');
      fake.injectStatus('AsymmetricSign', code);
      const error = await expectHsmError(backend.sign(key, randomBytes(16)), expected as never);
      expect(fake.count('AsymmetricSign') - calls).toBe(1);
      expect(error.details.grpcCode).toBe(name);
      if (expected === 'AuthenticationFailed') expect(error.message).toContain('Application Default Credentials');
    });
  }

  it('UNAVAILABLE is retried with backoff and then succeeds', async () => {
    const calls = fake.count('AsymmetricSign');
    fake.injectStatus('AsymmetricSign', status.UNAVAILABLE, 2);
    const signature = await backend.sign(key, randomBytes(16));
    expect(signature.length).toBe(256);
    expect(fake.count('AsymmetricSign') - calls).toBe(3);
  });

  it('a version destroyed behind the cached handle signs no more: FAILED_PRECONDITION → KeyDisabled', async () => {
    const victim = await backend.generateKeyPair({ id: id('destroyed-elsewhere'), algorithm: 'Ed25519' });
    await backend.sign(victim, randomBytes(8));
    const other = loopbackBackend(fake.port);
    await other.initialize();
    await other.destroyKey(victim.ref);
    await other.close();
    const error = await expectHsmError(backend.sign(victim, randomBytes(8)), 'KeyDisabled');
    expect(error.details.grpcCode).toBe('FAILED_PRECONDITION');
  });

  it('a missing key ring is a clear error naming it unless createKeyRing is set', async () => {
    const strict = loopbackBackend(fake.port, { keyRing: 'ring-missing', createKeyRing: false });
    const error = await expectHsmError(strict.initialize(), 'InitializationFailed');
    expect(error.message).toContain('projects/olocus-test/locations/us-east1/keyRings/ring-missing');
    expect(error.message).toContain('createKeyRing');
    await strict.close();
  });
});

describe('throttling (RESOURCE_EXHAUSTED)', () => {
  let key: Awaited<ReturnType<GcpKmsBackend['generateKeyPair']>>;
  beforeAll(async () => {
    key = await backend.generateKeyPair({ id: id('throttle'), algorithm: 'Ed25519' });
    await backend.getPublicKey(key);
  });

  it('retries while Cloud KMS throttles for a while, then succeeds within the bound', async () => {
    const patient = loopbackBackend(fake.port, { retryBudgetMs: 8000 });
    await patient.initialize();
    try {
      await patient.getKey(key.ref);
      const throttledBefore = fake.throttled;
      fake.throttleUntil = Date.now() + 1200;
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 8 }, () => patient.sign(key.ref, randomBytes(32))));
      const elapsed = Date.now() - started;
      expect(results.every((s) => s.length === 64)).toBe(true);
      expect(fake.throttled - throttledBefore).toBeGreaterThanOrEqual(8);
      expect(elapsed).toBeGreaterThanOrEqual(1000);
      expect(elapsed).toBeLessThan(8000 + 10_000);
      expect(patient.metrics().recoveries).toBeGreaterThan(0);
    } finally {
      await patient.close();
    }
  });

  it('gives a retryable DeviceUnavailable when throttling outlasts the retry budget', async () => {
    const hasty = loopbackBackend(fake.port, { retryBudgetMs: 1000 });
    await hasty.initialize();
    try {
      await hasty.getKey(key.ref);
      fake.throttleUntil = Date.now() + 60_000;
      const started = Date.now();
      const error = await expectHsmError(hasty.sign(key.ref, randomBytes(8)), 'DeviceUnavailable');
      expect(Date.now() - started).toBeLessThan(1000 + 10_000);
      expect(error.retryable).toBe(true);
      expect(error.details.grpcCode).toBe('RESOURCE_EXHAUSTED');
      expect(error.message).toContain('throttled');
    } finally {
      fake.throttleUntil = 0;
      await hasty.close();
    }
  });
});

describe('names and labels', () => {
  it("maps ids with core's NAME_CODECS.gcpCryptoKey, keeps id and algorithm in labels, and never maps two ids to one name", async () => {
    const ids = [`Names.A_b:c-${n}`, `Names.A_b_3c-${n}`, `names.a_b:c-${n}`];
    const names = new Set<string>();
    for (const keyId of ids) {
      const key = await backend.generateKeyPair({ id: keyId, algorithm: 'Ed25519', labels: { team: 'payments' } });
      const cryptoKeyId = NAME_CODECS.gcpCryptoKey.encode(keyId);
      expect(key.metadata.cryptoKey).toBe(`projects/olocus-test/locations/us-east1/keyRings/ring-test/cryptoKeys/${cryptoKeyId}`);
      expect(key.ref).toBe(`${key.metadata.cryptoKey}/cryptoKeyVersions/1`);
      expect(NAME_CODECS.gcpCryptoKey.decode(cryptoKeyId)).toBe(keyId);
      names.add(cryptoKeyId);
      const stored = fake.keys.get(key.metadata.cryptoKey!)!;
      expect(stored.labels[LABELS.algorithm]).toBe('ed25519');
      expect(stored.labels[LABELS.id]).toMatch(/^[a-z0-9_-]+$/);
      expect(stored.labels.team).toBe('payments');
      expect((await backend.getKey(keyId)).labels).toEqual({ team: 'payments' });
      expect((await backend.getKey(keyId)).id).toBe(keyId);
    }
    expect(names.size).toBe(ids.length);
    const listed = await backend.listKeys({ prefix: 'Names.', limit: 1000 });
    expect(listed.keys.map((k) => k.id).sort()).toEqual(ids.slice(0, 2).sort());
  });

  it('keeps labels Cloud KMS cannot hold as they are (upper case, spaces, dots) encoded, and gives them back', async () => {
    const labels = { 'Owner.Team': 'Payments Platform', purpose: 'olocus audit checkpoints', env: 'prod' };
    const key = await backend.generateKeyPair({ id: id('label'), algorithm: 'Ed25519', labels });
    expect(key.labels).toEqual(labels);
    const stored = fake.keys.get(key.metadata.cryptoKey!)!.labels;
    expect(stored.env).toBe('prod');
    expect(stored['olocus-labels-0']).toMatch(/^[0-9a-f]+$/);
    const fresh = loopbackBackend(fake.port);
    await fresh.initialize();
    expect((await fresh.getKey(key.id)).labels).toEqual(labels);
    await fresh.close();
  });

  it('refuses labels too large for a CryptoKey, naming the limit', async () => {
    const labels = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`Label.${i}`, 'X'.repeat(200)]));
    const error = await expectHsmError(backend.generateKeyPair({ id: id('label'), algorithm: 'Ed25519', labels }), 'InvalidArgument');
    expect(error.message).toContain('at most 64');
  });

  it('refuses P-521 saying Cloud KMS has none', async () => {
    const error = await expectHsmError(backend.generateKeyPair({ id: id('p521'), algorithm: 'ECDSA_P521' }), 'UnsupportedAlgorithm');
    expect(error.message).toContain('Cloud KMS has no P-521');
  });

  it('refuses names outside its key ring', async () => {
    await expectHsmError(backend.getKey('projects/other/locations/us-east1/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1'), 'InvalidArgument');
  });

  it('a CryptoKey with several versions resolves by name to its newest enabled version; destroyKey by id stops them all', async () => {
    const key = await backend.generateKeyPair({ id: id('versions'), algorithm: 'Ed25519' });
    const fresh = loopbackBackend(fake.port);
    await fresh.initialize();
    try {
      // a second version made outside the library (e.g. by gcloud)
      const { KeyManagementServiceClient } = await import('@google-cloud/kms');
      const { credentials } = await import('@grpc/grpc-js');
      const client = new KeyManagementServiceClient({ apiEndpoint: '127.0.0.1', port: fake.port, sslCreds: credentials.createInsecure() });
      await client.createCryptoKeyVersion({ parent: key.metadata.cryptoKey!, cryptoKeyVersion: {} });
      await client.close();
      const byName = await fresh.getKey(key.metadata.cryptoKey!);
      expect(byName.ref).toBe(`${key.metadata.cryptoKey}/cryptoKeyVersions/2`);
      expect(byName.id).toBe(key.id);
      await fresh.destroyKey(key.id);
      await expectHsmError(fresh.sign(key.id, randomBytes(8)), ['KeyDisabled', 'KeyNotFound']);
      expect((await fresh.getKey(key.ref)).state).toBe('pending-deletion');
    } finally {
      await fresh.close();
    }
  });
});

describe('closing', () => {
  it('a call racing close() ends with Closed, not a transport error', async () => {
    const racing = loopbackBackend(fake.port);
    await racing.initialize();
    const key = await racing.generateKeyPair({ id: id('close'), algorithm: 'Ed25519' });
    const pending = racing.sign(key, randomBytes(8)).then(
      () => 'signed',
      (error: unknown) => (isHsmError(error) ? error.code : String(error)),
    );
    await racing.close();
    expect(['signed', 'Closed']).toContain(await pending);
  });
});
