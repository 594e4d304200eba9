import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BackendRegistry, HsmManager, isHsmError, type HsmKeyHandle, type KeyVersionResolver, type OperationEvent, type ResolvedKeyVersion } from '../src/index.js';
import { MemoryKeyStore, memoryBackendFactory } from '../src/testing/index.js';

async function managerOn(store = new MemoryKeyStore(), config: Record<string, unknown> = {}, extra: { now?: () => number; events?: OperationEvent[] } = {}) {
  const registry = new BackendRegistry().register(memoryBackendFactory(store));
  const manager = new HsmManager(
    { backend: { type: 'memory' }, ...config },
    { registry, ...(extra.now ? { now: extra.now } : {}), ...(extra.events ? { auditor: { record: async (e) => void extra.events!.push(e) } } : {}) },
  );
  await manager.initialize();
  return manager;
}

async function* chunksOf(...parts: Uint8Array[]): AsyncIterable<Uint8Array> {
  yield* parts;
}

async function rejectionCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (isHsmError(error)) return error.code;
    throw error;
  }
  throw new Error('expected a rejection');
}

describe('HsmManager public-key cache (contract v2)', () => {
  it('cannot be poisoned by a forged handle: verify("alice") keeps using alice\'s key', async () => {
    const manager = await managerOn();
    const alice = await manager.generateKey({ id: 'alice', algorithm: 'ECDSA_P256' });
    const mallory = await manager.generateKey({ id: 'mallory', algorithm: 'ECDSA_P256' });
    const data = Buffer.from('pay mallory');
    const mallorySig = await manager.sign(mallory, data);
    // the forged handle says "alice" but carries mallorySig ref
    const forged: HsmKeyHandle = { ...mallory, id: 'alice', metadata: alice.metadata };
    expect(await manager.verify(forged, data, mallorySig)).toBe(true); // it IS mallorySig key
    expect(await manager.verify('alice', data, mallorySig)).toBe(false);
    expect(await manager.verify(alice, data, mallorySig)).toBe(false);
    expect(await manager.verify('alice', data, await manager.sign('alice', data))).toBe(true);
    await manager.close();
  });

  it('refuses a handle from another backend instance', async () => {
    const manager = await managerOn();
    const key = await manager.generateKey({ id: 'k', algorithm: 'Ed25519' });
    const foreign = { ...key, instance: 'memory:somewhere-else' };
    expect(await rejectionCode(manager.verify(foreign, Buffer.from('x'), new Uint8Array(64)))).toBe('InvalidArgument');
    expect(await rejectionCode(manager.sign(foreign, Buffer.from('x')))).toBe('InvalidArgument');
    await manager.close();
  });

  it('stops verifying with a key destroyed through this process at once, and one destroyed elsewhere after the TTL', async () => {
    const store = new MemoryKeyStore();
    let now = 1_000_000;
    const manager = await managerOn(store, { publicKeyCacheTtlMs: 60_000 }, { now: () => now });
    const elsewhere = await managerOn(store);
    const data = Buffer.from('m');
    const a = await manager.generateKey({ id: 'a', algorithm: 'Ed25519' });
    const sigA = await manager.sign(a, data);
    expect(await manager.verify('a', data, sigA)).toBe(true);
    await manager.destroyKey('a');
    expect(await rejectionCode(manager.verify('a', data, sigA))).toBe('KeyNotFound');
    expect(await rejectionCode(manager.verify(a, data, sigA))).toBe('KeyNotFound');

    const b = await manager.generateKey({ id: 'b', algorithm: 'Ed25519' });
    const sigB = await manager.sign(b, data);
    expect(await manager.verify('b', data, sigB)).toBe(true);
    await elsewhere.destroyKey('b');
    now += 30_000;
    expect(await manager.verify('b', data, sigB)).toBe(true); // still within the TTL: cached
    now += 31_000;
    expect(await rejectionCode(manager.verify('b', data, sigB))).toBe('KeyNotFound');
    await manager.close();
    await elsewhere.close();
  });
});

describe('HsmManager streams', () => {
  it('signs and verifies a streamed message, hashing ECDSA/RSA incrementally, with one audit record each', async () => {
    const events: OperationEvent[] = [];
    const manager = await managerOn(new MemoryKeyStore(), {}, { events });
    const key = await manager.generateKey({ id: 'big', algorithm: 'ECDSA_P256' });
    events.length = 0;
    const parts = [randomBytes(300_000), randomBytes(5), randomBytes(200_000)];
    const signature = await manager.sign('big', chunksOf(...parts));
    expect(await manager.verify(key, Buffer.concat(parts), signature)).toBe(true);
    expect(await manager.verify('big', chunksOf(...parts), signature)).toBe(true);
    expect(await manager.verify('big', chunksOf(parts[0]!), signature)).toBe(false);
    expect(events.map((e) => e.operation)).toEqual(['sign', 'verify', 'verify', 'verify']);
    const { createHash } = await import('node:crypto');
    expect(events[0]!.dataDigest).toBe('sha256:' + createHash('sha256').update(Buffer.concat(parts)).digest('hex'));
    expect(events[0]!.data).toBeUndefined();
    await manager.close();
  });

  it('refuses a streamed Ed25519 message above the buffering limit, naming it', async () => {
    const manager = await managerOn(new MemoryKeyStore(), { maxBufferedMessageBytes: 1000 });
    await manager.generateKey({ id: 'ed', algorithm: 'Ed25519' });
    let error: unknown;
    try {
      await manager.sign('ed', chunksOf(randomBytes(600), randomBytes(600)));
    } catch (e) {
      error = e;
    }
    expect(isHsmError(error, 'InvalidArgument')).toBe(true);
    expect((error as Error).message).toContain('1000 bytes');
    const small = randomBytes(900);
    expect(await manager.verify('ed', chunksOf(small), await manager.sign('ed', chunksOf(small)))).toBe(true);
    await manager.close();
  });
});

describe('HsmManager logical keys without a signature time', () => {
  it('accepts a signature from any version never compromised or revoked, and says which matched', async () => {
    const manager = await managerOn();
    const v1 = await manager.generateKey({ id: 'k.v1', algorithm: 'ECDSA_P256' });
    const v2 = await manager.generateKey({ id: 'k.v2', algorithm: 'ECDSA_P256' });
    const v3 = await manager.generateKey({ id: 'k.v3', algorithm: 'ECDSA_P256' });
    const version = (h: HsmKeyHandle, n: number): ResolvedKeyVersion => ({ baseKeyId: 'k', version: n, key: h.id, algorithm: h.algorithm });
    const resolver: KeyVersionResolver = {
      resolveForSigning: async () => version(v2, 2),
      resolveForVerification: async () => version(v2, 2),
      // v3 was compromised: not a candidate
      versionsForVerification: async () => [version(v2, 2), version(v1, 1)],
    };
    manager.useResolver(resolver);
    const data = Buffer.from('contract');
    const byV1 = await manager.sign(v1, data);
    const result = await manager.verifyWithLogicalKeyDetailed('k', data, byV1);
    expect(result.valid).toBe(true);
    expect(result.version?.version).toBe(1);
    expect((await manager.verifyWithLogicalKeyDetailed('k', data, await manager.sign(v3, data))).valid).toBe(false);
    expect(await manager.verifyWithLogicalKey('k', data, (await manager.signWithLogicalKey('k', data)).signature)).toBe(true);
    await manager.close();
  });
});
