import { createPublicKey, randomBytes, verify as nodeVerify, constants } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_ALGORITHMS, algorithmInfo, nodeHashName, pssSaltLength, type KeyAlgorithm } from '../algorithms.js';
import { exportPublicKey } from '../encoding.js';
import { HsmError, type HsmErrorCode } from '../errors.js';
import type { Capabilities, HsmBackend, HsmKeyHandle } from '../types.js';

export interface ConformanceOptions {
  /** Shown in the suite's name. */
  name: string;
  /**
   * Returns a new, uninitialised backend. Called more than once: every call must reach the
   * same key store, so the persistence test can close one instance and open another.
   */
  createBackend: () => HsmBackend | Promise<HsmBackend>;
  /**
   * The algorithms the backend must claim. When given, `capabilities().algorithms` must equal
   * this set, so a backend cannot pass by claiming nothing.
   */
  expectedAlgorithms?: readonly KeyAlgorithm[];
  /** Concurrent signs in the concurrency test. Default 100. */
  concurrency?: number;
  /** Per-test timeout. Default 120 s (RSA-4096 generation on a software token is slow). */
  timeoutMs?: number;
  /** Prefix for the key ids the suite creates. Default `conf-<random>`. */
  keyPrefix?: string;
}

/** Asserts that `promise` rejects with an HsmError of `code`. */
export async function expectHsmError(promise: Promise<unknown>, code: HsmErrorCode): Promise<HsmError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  expect(caught, `expected HsmError ${code}, but the call succeeded`).toBeDefined();
  expect(caught, `expected HsmError ${code}, got ${String(caught)}`).toBeInstanceOf(HsmError);
  expect((caught as HsmError).code).toBe(code);
  return caught as HsmError;
}

/** Verifies a library-format signature with node:crypto only, from the exported PEM. */
export function independentVerify(algorithm: KeyAlgorithm, pem: string, data: Uint8Array, signature: Uint8Array): boolean {
  const info = algorithmInfo(algorithm);
  const key = createPublicKey(pem);
  if (info.family === 'EdDSA') return nodeVerify(null, data, key, signature);
  const hash = nodeHashName(info.hash!);
  if (info.family === 'ECDSA') return nodeVerify(hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature);
  if (info.padding === 'PSS') {
    return nodeVerify(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pssSaltLength(info.hash!) }, signature);
  }
  return nodeVerify(hash, data, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
}

/**
 * The shared conformance suite: what "a backend works" means. Call it at the top level of a
 * vitest file. It creates keys under `keyPrefix` and destroys them at the end.
 */
export function runConformanceSuite(options: ConformanceOptions): void {
  const prefix = options.keyPrefix ?? `conf-${randomBytes(4).toString('hex')}`;
  const timeout = options.timeoutMs ?? 120_000;
  const concurrency = options.concurrency ?? 100;

  describe(`HSM backend conformance: ${options.name}`, () => {
    let backend: HsmBackend;
    let caps: Capabilities;
    const created = new Set<string>();
    const claimed = (algorithm: KeyAlgorithm) => caps.algorithms.includes(algorithm);
    const generate = async (algorithm: KeyAlgorithm, suffix: string): Promise<HsmKeyHandle> => {
      const id = `${prefix}-${algorithm}-${suffix}`;
      const handle = await backend.generateKeyPair({ id, algorithm });
      created.add(id);
      return handle;
    };

    beforeAll(async () => {
      backend = await options.createBackend();
      await backend.initialize();
      caps = await backend.capabilities();
    }, timeout);

    afterAll(async () => {
      if (!backend) return;
      for (const id of created) await backend.destroyKey(id).catch(() => undefined);
      await backend.close();
    }, timeout);

    it('reports info, capabilities and FIPS status', async () => {
      const info = await backend.info();
      expect(info.backend).toBe(backend.type);
      expect(info.description.length).toBeGreaterThan(0);
      expect(Array.isArray(caps.algorithms)).toBe(true);
      for (const algorithm of caps.algorithms) expect(KEY_ALGORITHMS).toContain(algorithm);
      const fips = await backend.fipsStatus();
      expect(['none', 'FIPS 140-2', 'FIPS 140-3']).toContain(fips.standard);
      expect(fips.standard === 'none' ? fips.level === 0 : fips.level >= 1).toBe(true);
      expect(fips.notes.length).toBeGreaterThan(0);
      const health = await backend.healthCheck();
      expect(health.healthy).toBe(true);
      expect(health.latencyMs).toBeGreaterThanOrEqual(0);
    });

    if (options.expectedAlgorithms) {
      const expected = [...options.expectedAlgorithms].sort();
      it(`claims exactly ${expected.join(', ')}`, () => {
        expect([...caps.algorithms].sort()).toEqual(expected);
      });
    }

    for (const algorithm of KEY_ALGORITHMS) {
      it(
        `${algorithm}: signs and verifies when claimed, or refuses with UnsupportedAlgorithm`,
        async () => {
          if (!claimed(algorithm)) {
            await expectHsmError(backend.generateKeyPair({ id: `${prefix}-${algorithm}-unclaimed`, algorithm }), 'UnsupportedAlgorithm');
            return;
          }
          const info = algorithmInfo(algorithm);
          const key = await generate(algorithm, 'a');
          expect(key.algorithm).toBe(algorithm);
          expect(key.backend).toBe(backend.type);
          expect(key.ref.length).toBeGreaterThan(0);
          const other = await generate(algorithm, 'b');
          const data = randomBytes(1000);

          const signature = await backend.sign(key, data);
          expect(signature.length).toBe(info.signatureBytes);
          expect(await backend.verify(key, data, signature)).toBe(true);
          // by id as well as by handle
          expect(await backend.verify(key.id, data, await backend.sign(key.id, data))).toBe(true);

          const publicKey = await backend.getPublicKey(key);
          expect(publicKey.algorithm).toBe(algorithm);
          const pem = exportPublicKey(publicKey, 'pem');
          expect(independentVerify(algorithm, pem, data, signature)).toBe(true);

          const tamperedData = Buffer.from(data);
          tamperedData[17] = tamperedData[17]! ^ 0x01;
          expect(await backend.verify(key, tamperedData, signature)).toBe(false);
          expect(independentVerify(algorithm, pem, tamperedData, signature)).toBe(false);

          const tamperedSignature = Buffer.from(signature);
          tamperedSignature[tamperedSignature.length - 5] = tamperedSignature[tamperedSignature.length - 5]! ^ 0x40;
          expect(await backend.verify(key, data, tamperedSignature)).toBe(false);
          expect(await backend.verify(key, data, signature.subarray(0, signature.length - 1))).toBe(false);
          expect(await backend.verify(key, data, new Uint8Array(0))).toBe(false);

          expect(await backend.verify(other, data, signature)).toBe(false);
          const otherPem = exportPublicKey(await backend.getPublicKey(other), 'pem');
          expect(independentVerify(algorithm, otherPem, data, signature)).toBe(false);

          // empty and large messages
          for (const message of [new Uint8Array(0), randomBytes(256 * 1024)]) {
            const sig = await backend.sign(key, message);
            expect(independentVerify(algorithm, pem, message, sig)).toBe(true);
          }
        },
        timeout,
      );
    }

    it('fails with KeyNotFound for an unknown key', async () => {
      const missing = `${prefix}-does-not-exist`;
      await expectHsmError(backend.getKey(missing), 'KeyNotFound');
      await expectHsmError(backend.getPublicKey(missing), 'KeyNotFound');
      await expectHsmError(backend.sign(missing, randomBytes(8)), 'KeyNotFound');
      await expectHsmError(backend.verify(missing, randomBytes(8), randomBytes(64)), 'KeyNotFound');
      await expectHsmError(backend.destroyKey(missing), 'KeyNotFound');
    });

    it('fails with KeyNotFound for a destroyed key, and lists it no more', async () => {
      const algorithm = caps.algorithms[0]!;
      const key = await generate(algorithm, 'destroyed');
      await backend.destroyKey(key);
      created.delete(key.id);
      await expectHsmError(backend.sign(key, randomBytes(8)), 'KeyNotFound');
      await expectHsmError(backend.sign(key.id, randomBytes(8)), 'KeyNotFound');
      await expectHsmError(backend.getPublicKey(key.id), 'KeyNotFound');
      const page = await backend.listKeys({ prefix: key.id });
      expect(page.keys.map((k) => k.id)).not.toContain(key.id);
    }, timeout);

    it('refuses a duplicate key id with KeyAlreadyExists and keeps the first key', async () => {
      const algorithm = caps.algorithms[0]!;
      const key = await generate(algorithm, 'dup');
      const before = await backend.getPublicKey(key);
      await expectHsmError(backend.generateKeyPair({ id: key.id, algorithm }), 'KeyAlreadyExists');
      const after = await backend.getPublicKey(key.id);
      expect(Buffer.from(after.spki).equals(Buffer.from(before.spki))).toBe(true);
    }, timeout);

    it('refuses invalid key ids and unknown algorithms with InvalidArgument / UnsupportedAlgorithm', async () => {
      for (const id of ['', 'has space', '../escape', 'x'.repeat(129), '-leading-dash']) {
        await expectHsmError(backend.generateKeyPair({ id, algorithm: caps.algorithms[0]! }), 'InvalidArgument');
      }
      await expectHsmError(backend.generateKeyPair({ id: `${prefix}-bad-alg`, algorithm: 'DSA_1024' as KeyAlgorithm }), 'UnsupportedAlgorithm');
    });

    it('lists keys by prefix, page by page', async () => {
      const algorithm = caps.algorithms.includes('ECDSA_P256') ? 'ECDSA_P256' : caps.algorithms[0]!;
      const ids = [];
      for (let i = 0; i < 3; i++) ids.push((await generate(algorithm, `list-${i}`)).id);
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await backend.listKeys({ prefix: `${prefix}-${algorithm}-list-`, limit: 2, ...(cursor ? { cursor } : {}) });
        expect(page.keys.length).toBeLessThanOrEqual(2);
        seen.push(...page.keys.map((k) => k.id));
        cursor = page.nextCursor;
        pages++;
      } while (cursor && pages < 10);
      expect(seen.sort()).toEqual(ids.sort());
      expect(pages).toBeGreaterThanOrEqual(2);
    }, timeout);

    it(`completes ${concurrency} concurrent signs that all verify`, async () => {
      const algorithm = caps.algorithms.includes('ECDSA_P256') ? 'ECDSA_P256' : caps.algorithms[0]!;
      const key = await generate(algorithm, 'concurrent');
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      const messages = Array.from({ length: concurrency }, (_, i) => Buffer.from(`message ${i}`));
      const signatures = await Promise.all(messages.map((m) => backend.sign(key, m)));
      messages.forEach((m, i) => expect(independentVerify(algorithm, pem, m, signatures[i]!)).toBe(true));
    }, timeout);

    it('keeps keys across close and re-initialize when it claims persistence', async () => {
      const algorithm = caps.algorithms[0]!;
      const key = await generate(algorithm, 'persist');
      const before = await backend.getPublicKey(key);
      const second = await options.createBackend();
      await second.initialize();
      try {
        if (!caps.persistentKeys) {
          await expectHsmError(second.getKey(key.id), 'KeyNotFound');
          return;
        }
        const again = await second.getKey(key.id);
        expect(again.algorithm).toBe(algorithm);
        expect(again.ref).toBe(key.ref);
        const after = await second.getPublicKey(key.id);
        expect(Buffer.from(after.spki).equals(Buffer.from(before.spki))).toBe(true);
        const data = randomBytes(32);
        const sig = await second.sign(key.id, data);
        expect(independentVerify(algorithm, exportPublicKey(before, 'pem'), data, sig)).toBe(true);
      } finally {
        await second.close();
      }
    }, timeout);

    it('fails clearly with Closed after close(), and close() is idempotent', async () => {
      const instance = await options.createBackend();
      await instance.initialize();
      await instance.close();
      await instance.close();
      const algorithm = caps.algorithms[0]!;
      await expectHsmError(instance.sign(`${prefix}-any`, randomBytes(8)), 'Closed');
      await expectHsmError(instance.generateKeyPair({ id: `${prefix}-after-close`, algorithm }), 'Closed');
      await expectHsmError(instance.listKeys(), 'Closed');
    }, timeout);
  });
}
