/**
 * Contract v2 on a real token: instance identity, handles resolved by `ref` alone (a forged
 * handle cannot borrow a name), and signStream (incremental hashing) for every algorithm.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_ALGORITHMS, exportPublicKey, type BackendMetrics, type HsmKeyHandle, type KeyAlgorithm } from '@olocus/hsm-core';
import { expectHsmError, independentVerify } from '@olocus/hsm-core/testing';
import { Pkcs11Backend } from '../src/index.js';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';

const token = createToken('contract');
let backend: Pkcs11Backend;
const make = () => new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label }, { pin: token.pin });

beforeAll(async () => {
  backend = make();
  await backend.initialize();
});
afterAll(() => backend?.close());

async function* chunked(data: Uint8Array, size: number): AsyncIterable<Uint8Array> {
  for (let i = 0; i < data.length; i += size) {
    await Promise.resolve();
    yield data.subarray(i, i + size);
  }
}

describe('instance identity', () => {
  it('is the token serial and module path after initialize(), the configured label before, and is on every handle', async () => {
    const fresh = make();
    expect(fresh.instanceId).toBe(`pkcs11:token=${token.label}?module-path=${SOFTHSM_LIB}`);
    const info = await backend.info();
    expect(backend.instanceId).toBe(`pkcs11:serial=${info.serialNumber}?module-path=${SOFTHSM_LIB}`);
    const key = await backend.generateKeyPair({ id: 'identity', algorithm: 'ECDSA_P256', labels: { team: 'a' } });
    expect(key.instance).toBe(backend.instanceId);
    expect(key.state).toBe('enabled');
    expect(key.labels).toEqual({ team: 'a' });
    expect((await backend.listKeys({ prefix: 'identity' })).keys[0]!.instance).toBe(backend.instanceId);
    await fresh.close();
  });
});

describe('handles are resolved by ref alone', () => {
  it("a forged handle {id: 'alice', ref: bob's ref, alice's metadata} signs with bob's key and 'alice' still resolves to alice", async () => {
    const alice = await backend.generateKeyPair({ id: 'alice', algorithm: 'ECDSA_P256' });
    const bob = await backend.generateKeyPair({ id: 'bob', algorithm: 'ECDSA_P256' });
    const alicePem = exportPublicKey(await backend.getPublicKey('alice'), 'pem');
    const bobPem = exportPublicKey(await backend.getPublicKey('bob'), 'pem');
    // the old resolver believed metadata.ckaId: this handle would have signed as alice
    const forged: HsmKeyHandle = { ...bob, id: 'alice', metadata: { ...alice.metadata } };
    const data = randomBytes(32);
    const signature = await backend.sign(forged, data);
    expect(independentVerify('ECDSA_P256', bobPem, data, signature)).toBe(true);
    expect(independentVerify('ECDSA_P256', alicePem, data, signature)).toBe(false);
    expect(await backend.verify(forged, data, signature)).toBe(true);
    // and nothing was cached under alice's name
    expect((await backend.getKey('alice')).ref).toBe(alice.ref);
    expect(independentVerify('ECDSA_P256', alicePem, data, await backend.sign('alice', data))).toBe(true);
    expect(await backend.verify('alice', data, signature)).toBe(false);
    // a handle without a pkcs11: ref names nothing
    await expectHsmError(backend.sign({ ...alice, ref: 'alice' }, data), 'InvalidArgument');
  });

  it("another instance on the same token accepts the first instance's handles (same instanceId)", async () => {
    const key = await backend.generateKeyPair({ id: 'shared', algorithm: 'Ed25519' });
    const second = make();
    await second.initialize();
    try {
      expect(second.instanceId).toBe(backend.instanceId);
      const data = randomBytes(8);
      expect(await backend.verify(key, data, await second.sign(key, data))).toBe(true);
    } finally {
      await second.close();
    }
  });
});

describe('signStream', () => {
  const message = randomBytes(200_000);
  for (const algorithm of KEY_ALGORITHMS.filter((a) => !a.endsWith('4096') && !a.endsWith('3072')) as KeyAlgorithm[]) {
    it(`${algorithm}: a chunked message signs like the whole message`, async () => {
      const key = await backend.generateKeyPair({ id: `stream-${algorithm}`, algorithm });
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      const signature = await backend.signStream(key, chunked(message, 7_001));
      expect(independentVerify(algorithm, pem, message, signature)).toBe(true);
      expect(await backend.verify(key, message, signature)).toBe(true);
    });
  }

  it('refuses chunks that are not bytes, an aborted signal, and keys it may not use, before signing', async () => {
    const key = await backend.generateKeyPair({ id: 'stream-checks', algorithm: 'ECDSA_P256', usages: ['verify'] });
    await expectHsmError(backend.signStream(key, chunked(message, 1000)), 'KeyUsageNotAllowed');
    const signer = await backend.generateKeyPair({ id: 'stream-signer', algorithm: 'RSA_2048' });
    async function* bad(): AsyncIterable<Uint8Array> {
      yield new Uint8Array(4);
      yield 'text' as unknown as Uint8Array;
    }
    await expectHsmError(backend.signStream(signer, bad()), 'InvalidArgument');
    const controller = new AbortController();
    async function* aborting(): AsyncIterable<Uint8Array> {
      yield new Uint8Array(10);
      controller.abort(new Error('caller gave up'));
      yield new Uint8Array(10);
    }
    const error = await expectHsmError(backend.signStream(signer, aborting(), { signal: controller.signal }), 'Timeout');
    expect(error.retryable).toBe(true);
    await expectHsmError(backend.signStream({ ...signer, instance: 'pkcs11:serial=other' }, chunked(message, 1000)), 'InvalidArgument');
  });
});

describe('metrics', () => {
  it('are the declared BackendMetrics (pool, circuit, recoveries, login failures)', () => {
    const m: BackendMetrics = backend.metrics();
    expect(m.pool?.max).toBeGreaterThan(0);
    expect(m.circuitOpen).toBe(false);
    expect(m.loginFailures).toBe(0);
    expect(typeof m.recoveries).toBe('number');
  });
});
