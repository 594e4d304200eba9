import { randomBytes, verify as nodeVerify } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { HsmError, exportPublicKey, isHsmError } from '@olocus/hsm-core';
import { MemoryKeyStore } from '@olocus/hsm-core/testing';
import { HsmPool } from '../src/index.js';
import { FlakyBackend, replicateMemoryKey } from './helpers.js';

const pools: HsmPool[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

async function groupOf(weights: number[], options: { healthIntervalMs?: number; startHealthChecks?: boolean } = {}) {
  const backends = weights.map(() => new FlakyBackend(new MemoryKeyStore()));
  const pool = new HsmPool({
    members: backends.map((backend, i) => ({ name: `m${i}`, backend, weight: weights[i]!, zone: i % 2 ? 'b' : 'a' })),
    healthIntervalMs: options.healthIntervalMs ?? 50,
    startHealthChecks: options.startHealthChecks ?? true,
  });
  pools.push(pool);
  await pool.initialize();
  const handle = await backends[0]!.generateKeyPair({ id: 'k', algorithm: 'ECDSA_P256' });
  replicateMemoryKey('k', backends[0]!.keyStore, backends.slice(1).map((b) => b.keyStore));
  pool.place('k', backends.map((_, i) => `m${i}`));
  const pem = exportPublicKey(await backends[0]!.getPublicKey(handle), 'pem');
  return { pool, backends, pem };
}

const verifies = (pem: string, data: Uint8Array, signature: Uint8Array) => nodeVerify('sha256', data, { key: pem, dsaEncoding: 'ieee-p1363' }, signature);

describe('HsmPool routing', () => {
  it('refuses two members that are the same backend instance, and bad names and weights', async () => {
    const store = new MemoryKeyStore();
    const pool = new HsmPool({ members: [{ name: 'a', backend: new FlakyBackend(store) }, { name: 'b', backend: new FlakyBackend(store) }] });
    await expect(pool.initialize()).rejects.toMatchObject({ code: 'InvalidConfiguration', message: expect.stringContaining('same backend instance') });
    expect(() => new HsmPool({ members: [{ name: 'a b', backend: new FlakyBackend() }] })).toThrow(/pool.members\[0\].name/);
    expect(() => new HsmPool({ members: [{ name: 'a', backend: new FlakyBackend(), weight: 0 }] })).toThrow(/pool.members\[0\].weight/);
    expect(() => new HsmPool({ members: [] })).toThrow(/at least one/);
  });

  it('shares sequential work by weight', async () => {
    const { pool, backends, pem } = await groupOf([1, 2, 1], { startHealthChecks: false });
    for (let i = 0; i < 400; i++) {
      const data = randomBytes(16);
      const { signature } = await pool.sign('k', data);
      expect(verifies(pem, data, signature)).toBe(true);
    }
    const calls = backends.map((b) => b.signCalls);
    expect(calls).toEqual([100, 200, 100]);
  });

  it('sends concurrent work to the member with the least outstanding work per weight', async () => {
    const { pool, backends } = await groupOf([1, 3], { startHealthChecks: false });
    for (const b of backends) b.delayMs = 5;
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let i = 0; i < 20; i++) await pool.sign('k', randomBytes(8));
    }));
    const [a, b] = backends.map((x) => x.signCalls) as [number, number];
    expect(a + b).toBe(320);
    expect(b / (a + b)).toBeGreaterThan(0.65);
    expect(b / (a + b)).toBeLessThan(0.85);
  });

  it('retries a retryable failure once on another member, never the same one', async () => {
    const { pool, backends } = await groupOf([1, 1], { startHealthChecks: false });
    backends[0]!.failNext = { count: 1, error: () => new HsmError('SessionFailed', 'session lost', { retryable: true }) };
    backends[1]!.failNext = { count: 0, error: () => undefined };
    const first = await pool.sign('k', randomBytes(8));
    expect(first.member).toBe('m1');
    expect(first.retriedFrom).toEqual(['m0']);
    expect(backends.map((b) => b.signCalls)).toEqual([1, 1]);

    // both fail: one retry only, then KeyUnavailable naming the failure
    backends[0]!.failNext = { count: 1, error: () => new HsmError('Timeout', 'slow', { retryable: true }) };
    backends[1]!.failNext = { count: 1, error: () => new HsmError('Timeout', 'slow', { retryable: true }) };
    const error = await pool.sign('k', randomBytes(8)).catch((e: unknown) => e);
    expect(isHsmError(error, 'Timeout')).toBe(true);
    expect(backends.map((b) => b.signCalls)).toEqual([2, 2]);
  });

  it('does not retry a caller error', async () => {
    const { pool, backends } = await groupOf([1, 1], { startHealthChecks: false });
    backends[0]!.failNext = { count: 1, error: () => new HsmError('KeyUsageNotAllowed', 'no', {}) };
    backends[1]!.failNext = { count: 1, error: () => new HsmError('KeyUsageNotAllowed', 'no', {}) };
    await expect(pool.sign('k', randomBytes(8))).rejects.toMatchObject({ code: 'KeyUsageNotAllowed' });
    expect(backends[0]!.signCalls + backends[1]!.signCalls).toBe(1);
  });

  it('a dead member gets no new work until a health check passes, then it is used again', async () => {
    const { pool, backends, pem } = await groupOf([1, 1, 1], { healthIntervalMs: 40 });
    backends[1]!.down = true;
    const failures: unknown[] = [];
    const results: Array<{ retriedFrom: string[]; member: string }> = [];
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 25; i++) {
        const data = randomBytes(8);
        try {
          const r = await pool.sign('k', data);
          expect(verifies(pem, data, r.signature)).toBe(true);
          results.push(r);
        } catch (error) {
          failures.push(error);
        }
      }
    }));
    expect(failures).toEqual([]);
    // the calls already on their way when it died were retried elsewhere, then it got nothing
    const callsWhileDown = backends[1]!.signCalls;
    expect(callsWhileDown).toBeLessThanOrEqual(8);
    expect(results.filter((r) => r.retriedFrom.length > 0).length).toBe(callsWhileDown);
    expect(results.every((r) => r.member !== 'm1')).toBe(true);
    expect(pool.status()[1]).toMatchObject({ circuit: 'open', healthy: false });

    backends[1]!.down = false;
    await new Promise((r) => setTimeout(r, 150));
    expect(pool.status()[1]).toMatchObject({ circuit: 'closed', healthy: true, recoveries: 1 });
    for (let i = 0; i < 30; i++) await pool.sign('k', randomBytes(8));
    expect(backends[1]!.signCalls - callsWhileDown).toBeGreaterThanOrEqual(9);
  });

  it('a key on a single member fails over nowhere and names the member and why', async () => {
    const a = new FlakyBackend();
    const b = new FlakyBackend();
    const pool = new HsmPool({ members: [{ name: 'alpha', backend: a }, { name: 'beta', backend: b }], startHealthChecks: false });
    pools.push(pool);
    await pool.initialize();
    await pool.generateOn('alpha', { id: 'solo', algorithm: 'Ed25519' });
    expect(pool.placementOf('solo')).toEqual({ keyId: 'solo', members: ['alpha'] });
    a.down = true;
    const error = await pool.sign('solo', randomBytes(8)).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'KeyUnavailable', retryable: true });
    expect((error as Error).message).toMatch(/lives only on member alpha.*DeviceUnavailable.*no other member/);
    expect(b.signCalls).toBe(0);
    // now its circuit is open: refused before any call, still naming the member and why
    const again = await pool.sign('solo', randomBytes(8)).catch((e: unknown) => e);
    expect((again as Error).message).toMatch(/only on member alpha.*alpha \(circuit open: DeviceUnavailable/);
    expect(a.signCalls).toBe(1);
  });

  it('counts repeated retryable failures and opens the circuit at the threshold', async () => {
    const { pool, backends } = await groupOf([1, 1], { startHealthChecks: false });
    backends[0]!.failNext = { count: 3, error: () => new HsmError('SessionFailed', 'flaky', { retryable: true }) };
    for (let i = 0; i < 6; i++) await pool.sign('k', randomBytes(8));
    expect(pool.status()[0]).toMatchObject({ circuit: 'open', failed: 3 });
    const before = backends[0]!.signCalls;
    for (let i = 0; i < 5; i++) await pool.sign('k', randomBytes(8));
    expect(backends[0]!.signCalls).toBe(before);
    await pool.checkHealth();
    expect(pool.status()[0]).toMatchObject({ circuit: 'closed', recoveries: 1 });
  });

  it('discovers which members hold a key', async () => {
    const { pool } = await groupOf([1, 1, 1], { startHealthChecks: false });
    expect(await pool.discover('k')).toEqual({ keyId: 'k', members: ['m0', 'm1', 'm2'] });
    await expect(pool.discover('nope')).rejects.toMatchObject({ code: 'KeyNotFound' });
  });

  it('reports drift: a key deleted on one member behind its back, an extra key, a replica that is not the same key', async () => {
    const { pool, backends } = await groupOf([1, 1, 1], { startHealthChecks: false });
    expect(await pool.drift(undefined, { extraPrefix: '' })).toMatchObject({ missing: [], extra: [], mismatched: [], unreachable: [] });
    backends[2]!.keyStore.keys.delete('k');
    await backends[1]!.generateKeyPair({ id: 'stray', algorithm: 'Ed25519' });
    // m0 gets a different key under the same id
    backends[0]!.keyStore.keys.delete('k');
    await backends[0]!.generateKeyPair({ id: 'k', algorithm: 'ECDSA_P256' });
    const report = await pool.drift(undefined, { extraPrefix: '' });
    expect(report.missing).toEqual([{ keyId: 'k', member: 'm2' }]);
    expect(report.extra).toEqual([{ keyId: 'stray', member: 'm1' }]);
    expect(report.mismatched).toEqual([{ keyId: 'k', member: 'm1', reference: 'm0' }]);
  });
});
