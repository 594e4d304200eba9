import { createPublicKey, randomBytes, verify as nodeVerify, constants } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_ALGORITHMS, algorithmInfo, nodeHashName, pssSaltLength, type KeyAlgorithm } from '../algorithms.js';
import { exportPublicKey } from '../encoding.js';
import { isHsmError, type HsmError, type HsmErrorCode } from '../errors.js';
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
  /**
   * False for providers that cannot keep an expiry on a key (the expiry test then expects
   * generateKeyPair to refuse `expiresAt` with InvalidArgument or UnsupportedAlgorithm). Default true.
   */
  supportsExpiry?: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Asserts that `promise` rejects with an HsmError of `code` (or of one of `code`). Errors are
 * recognised by shape and code, not `instanceof`, so a backend built against another copy of
 * core passes too.
 */
export async function expectHsmError(promise: Promise<unknown>, code: HsmErrorCode | readonly HsmErrorCode[]): Promise<HsmError> {
  const codes: readonly HsmErrorCode[] = typeof code === 'string' ? [code] : code;
  let caught: unknown;
  let settled = false;
  try {
    await promise;
    settled = true;
  } catch (error) {
    caught = error;
  }
  expect(settled, `expected HsmError ${codes.join(' or ')}, but the call succeeded`).toBe(false);
  expect(isHsmError(caught), `expected HsmError ${codes.join(' or ')}, got ${String(caught)}`).toBe(true);
  expect(codes, `got ${(caught as HsmError).code}: ${(caught as HsmError).message}`).toContain((caught as HsmError).code);
  expect(typeof (caught as HsmError).retryable).toBe('boolean');
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
      // 'unknown' (level 0) is the honest answer of a module whose validation cannot be established
      expect(['none', 'unknown', 'FIPS 140-2', 'FIPS 140-3']).toContain(fips.standard);
      expect(fips.standard === 'none' || fips.standard === 'unknown' ? fips.level === 0 : fips.level >= 1).toBe(true);
      expect(fips.notes.length).toBeGreaterThan(0);
      expect(['measured', 'attested', 'provider-claim', 'none']).toContain(fips.evidence);
      // a level nobody measured or attested is no level
      if (fips.standard === 'FIPS 140-2' || fips.standard === 'FIPS 140-3') expect(fips.evidence).not.toBe('none');
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
          expect(key.instance).toBe(backend.instanceId);
          expect(key.state ?? 'enabled').toBe('enabled');
          if (key.createdAt !== undefined) expect(Math.abs(key.createdAt.getTime() - Date.now())).toBeLessThan(10 * 60_000);
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

          // empty and large messages, up to the backend's declared limit and refused above it
          const limit = caps.maxMessageBytes?.[algorithm];
          for (const message of [new Uint8Array(0), randomBytes(Math.min(256 * 1024, limit ?? Infinity))]) {
            const sig = await backend.sign(key, message);
            expect(independentVerify(algorithm, pem, message, sig)).toBe(true);
          }
          if (limit !== undefined) await expectHsmError(backend.sign(key, randomBytes(limit + 1)), 'InvalidArgument');

          if (backend.signStream && info.family !== 'EdDSA') {
            const parts = [randomBytes(100_000), randomBytes(1), new Uint8Array(0), randomBytes(70_000)];
            const streamed = await backend.signStream(key, (async function* () {
              yield* parts;
            })());
            expect(independentVerify(algorithm, pem, Buffer.concat(parts), streamed)).toBe(true);
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

    it('signs no more after destroyKey: sign, verify, public key and a second destroy all refuse', async () => {
      const algorithm = caps.algorithms[0]!;
      const key = await generate(algorithm, 'destroyed');
      await backend.destroyKey(key);
      created.delete(key.id);
      // Providers that delete later (deletion windows, soft delete) may say KeyDisabled.
      const gone: HsmErrorCode[] = ['KeyNotFound', 'KeyDisabled'];
      await expectHsmError(backend.sign(key, randomBytes(8)), gone);
      await expectHsmError(backend.sign(key.id, randomBytes(8)), gone);
      await expectHsmError(backend.verify(key.id, randomBytes(8), randomBytes(algorithmInfo(algorithm).signatureBytes)), gone);
      await expectHsmError(backend.getPublicKey(key.id), gone);
      await expectHsmError(backend.destroyKey(key.id), gone);
      try {
        const after = await backend.getKey(key.id);
        expect(['pending-deletion', 'destroyed', 'disabled']).toContain(after.state);
      } catch (error) {
        expect(isHsmError(error, 'KeyNotFound'), String(error)).toBe(true);
      }
      const page = await backend.listKeys({ prefix: key.id });
      for (const listed of page.keys.filter((k) => k.id === key.id)) expect(listed.state ?? 'enabled').not.toBe('enabled');
    }, timeout);

    it('names its instance on every handle and refuses a handle from another instance', async () => {
      expect(typeof backend.instanceId).toBe('string');
      expect(backend.instanceId.length).toBeGreaterThan(0);
      const algorithm = caps.algorithms[0]!;
      const key = await generate(algorithm, 'instance');
      expect(key.instance).toBe(backend.instanceId);
      expect((await backend.getKey(key.id)).instance).toBe(backend.instanceId);
      const foreign: HsmKeyHandle = { ...key, instance: `${backend.instanceId}-elsewhere` };
      const data = randomBytes(16);
      await expectHsmError(backend.sign(foreign, data), 'InvalidArgument');
      await expectHsmError(backend.verify(foreign, data, await backend.sign(key, data)), 'InvalidArgument');
      await expectHsmError(backend.getPublicKey(foreign), 'InvalidArgument');
      await expectHsmError(backend.getKey(foreign), 'InvalidArgument');
      await expectHsmError(backend.destroyKey(foreign), 'InvalidArgument');
      expect((await backend.getKey(key.id)).ref).toBe(key.ref);
    }, timeout);

    it('resolves a handle by its stable ref alone: forged fields lend nothing', async () => {
      const algorithm = caps.algorithms[0]!;
      const alice = await generate(algorithm, 'alice');
      const bob = await generate(algorithm, 'bob');
      const alicePem = exportPublicKey(await backend.getPublicKey(alice), 'pem');
      const bobPem = exportPublicKey(await backend.getPublicKey(bob), 'pem');
      // a handle that says "alice" but carries bob's ref and made-up metadata
      const forged: HsmKeyHandle = { ...bob, id: alice.id, metadata: { ...alice.metadata } };
      const data = randomBytes(32);
      const signature = await backend.sign(forged, data);
      expect(independentVerify(algorithm, bobPem, data, signature)).toBe(true);
      expect(independentVerify(algorithm, alicePem, data, signature)).toBe(false);
      expect(Buffer.from((await backend.getPublicKey(forged)).spki).equals(Buffer.from((await backend.getPublicKey(bob)).spki))).toBe(true);
      // the name "alice" still resolves to alice's key
      expect((await backend.getKey(alice.id)).ref).toBe(alice.ref);
      expect(independentVerify(algorithm, alicePem, data, await backend.sign(alice.id, data))).toBe(true);
      // a handle whose algorithm field lies is signed with the key's real algorithm
      const other = caps.algorithms.find((a) => a !== algorithm);
      if (other) {
        const lying: HsmKeyHandle = { ...alice, algorithm: other };
        const sig = await backend.sign(lying, data);
        expect(sig.length).toBe(algorithmInfo(algorithm).signatureBytes);
        expect(independentVerify(algorithm, alicePem, data, sig)).toBe(true);
      }
    }, timeout);

    it('finds a key by its stable ref as well as by its id', async () => {
      const algorithm = caps.algorithms[0]!;
      const key = await generate(algorithm, 'byref');
      const byRef = await backend.getKey(key.ref);
      expect(byRef.id).toBe(key.id);
      expect(byRef.ref).toBe(key.ref);
      const data = randomBytes(24);
      const pem = exportPublicKey(await backend.getPublicKey(key.ref), 'pem');
      expect(independentVerify(algorithm, pem, data, await backend.sign(key.ref, data))).toBe(true);
    }, timeout);

    it('refuses to sign with a verify-only key (KeyUsageNotAllowed) but verifies with it', async () => {
      const algorithm = caps.algorithms[0]!;
      const id = `${prefix}-${algorithm}-verifyonly`;
      let handle: HsmKeyHandle;
      try {
        handle = await backend.generateKeyPair({ id, algorithm, usages: ['verify'] });
      } catch (error) {
        // a provider that cannot make verify-only keys must say so, not make a signing key
        expect(isHsmError(error, 'InvalidArgument') || isHsmError(error, 'UnsupportedAlgorithm'), String(error)).toBe(true);
        return;
      }
      created.add(id);
      expect(handle.usages).toEqual(['verify']);
      await expectHsmError(backend.sign(handle, randomBytes(8)), 'KeyUsageNotAllowed');
      await expectHsmError(backend.sign(id, randomBytes(8)), 'KeyUsageNotAllowed');
      expect(await backend.verify(handle, randomBytes(8), new Uint8Array(algorithmInfo(algorithm).signatureBytes))).toBe(false);
    }, timeout);

    it('refuses an expiry in the past, and refuses to sign once a key has expired (KeyExpired)', async () => {
      const algorithm = caps.algorithms[0]!;
      await expectHsmError(backend.generateKeyPair({ id: `${prefix}-${algorithm}-expired-already`, algorithm, expiresAt: new Date(Date.now() - 1000) }), 'InvalidArgument');
      const id = `${prefix}-${algorithm}-expiring`;
      const expiresAt = new Date(Date.now() + 2500);
      if (options.supportsExpiry === false) {
        await expectHsmError(backend.generateKeyPair({ id, algorithm, expiresAt }), ['InvalidArgument', 'UnsupportedAlgorithm']);
        return;
      }
      const key = await backend.generateKeyPair({ id, algorithm, expiresAt });
      created.add(id);
      expect(key.expiresAt?.getTime()).toBe(expiresAt.getTime());
      const data = randomBytes(8);
      const signature = await backend.sign(key, data);
      await sleep(Math.max(0, expiresAt.getTime() - Date.now()) + 300);
      await expectHsmError(backend.sign(key, data), 'KeyExpired');
      await expectHsmError(backend.sign(id, data), 'KeyExpired');
      // an expired key still verifies what it signed while valid
      expect(await backend.verify(key, data, signature)).toBe(true);
    }, timeout);

    it('refuses calls before initialize() with NotInitialized', async () => {
      const fresh = await options.createBackend();
      try {
        await expectHsmError(fresh.sign(`${prefix}-any`, randomBytes(8)), 'NotInitialized');
        await expectHsmError(fresh.getKey(`${prefix}-any`), 'NotInitialized');
        await expectHsmError(fresh.listKeys(), 'NotInitialized');
      } finally {
        await fresh.close();
      }
    }, timeout);

    it('refuses an aborted operation with a retryable Timeout, before it starts', async () => {
      const algorithm = caps.algorithms[0]!;
      const key = await generate(algorithm, 'abort');
      const controller = new AbortController();
      controller.abort(new Error('caller gave up'));
      const error = await expectHsmError(backend.sign(key, randomBytes(8), { signal: controller.signal }), 'Timeout');
      expect(error.retryable).toBe(true);
      // the backend is not harmed: the next call works
      expect((await backend.sign(key, randomBytes(8))).length).toBe(algorithmInfo(algorithm).signatureBytes);
    }, timeout);

    it('validates labels and list options the same way as every backend (core rules)', async () => {
      const algorithm = caps.algorithms[0]!;
      await expectHsmError(backend.generateKeyPair({ id: `${prefix}-${algorithm}-badlabel`, algorithm, labels: { 'bad key': 'x' } }), 'InvalidArgument');
      await expectHsmError(backend.generateKeyPair({ id: `${prefix}-${algorithm}-ctl`, algorithm, labels: { team: 'a\u001b[31mb' } }), 'InvalidArgument');
      await expectHsmError(backend.generateKeyPair({ id: `${prefix}-${algorithm}-nousage`, algorithm, usages: [] }), 'InvalidArgument');
      await expectHsmError(backend.generateKeyPair({ id: `${prefix}-${algorithm}-badbackup`, algorithm, backup: 'yes' as never }), 'InvalidArgument');
      await expectHsmError(backend.listKeys({ limit: 0 }), 'InvalidArgument');
      await expectHsmError(backend.listKeys({ limit: 1001 }), 'InvalidArgument');
    }, timeout);

    it('keeps keys across a real close() and a new instance when it claims persistence', async () => {
      const algorithm = caps.algorithms[0]!;
      const first = await options.createBackend();
      await first.initialize();
      const id = `${prefix}-${algorithm}-reopen`;
      const key = await first.generateKeyPair({ id, algorithm });
      const before = await first.getPublicKey(key);
      await first.close();
      const second = await options.createBackend();
      await second.initialize();
      try {
        if (!caps.persistentKeys) {
          await expectHsmError(second.getKey(id), 'KeyNotFound');
          return;
        }
        created.add(id);
        expect(second.instanceId).toBe(first.instanceId);
        const again = await second.getKey(id);
        expect(again.ref).toBe(key.ref);
        // a handle from the closed instance is still good on its successor: same instance id
        const data = randomBytes(32);
        const signature = await second.sign(key, data);
        expect(independentVerify(algorithm, exportPublicKey(before, 'pem'), data, signature)).toBe(true);
      } finally {
        await second.close();
      }
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
      for (const [i, m] of messages.entries()) expect(independentVerify(algorithm, pem, m, signatures[i]!)).toBe(true);
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
