import { describe, expect, it } from 'vitest';
import { HsmError, ResourcePool, type PoolFactory } from '../src/index.js';

interface Res {
  id: number;
  healthy: boolean;
}

function factory(opts: { failCreate?: () => boolean } = {}) {
  let next = 0;
  const alive = new Set<number>();
  const f: PoolFactory<Res> & { alive: Set<number> } = {
    alive,
    async create() {
      if (opts.failCreate?.()) throw new Error('device down');
      const r = { id: ++next, healthy: true };
      alive.add(r.id);
      return r;
    },
    async destroy(r) {
      alive.delete(r.id);
    },
    async validate(r) {
      return r.healthy;
    },
  };
  return f;
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('ResourcePool', () => {
  it('warms to min, never exceeds max, and serves waiters first in, first out', async () => {
    const f = factory();
    const pool = new ResourcePool(f, { min: 1, max: 2, acquireTimeoutMs: 1000 });
    await pool.start();
    expect(pool.metrics().size).toBe(1);
    const a = await pool.acquire();
    const b = await pool.acquire();
    expect(f.alive.size).toBe(2);
    const order: number[] = [];
    const w1 = pool.acquire().then((l) => (order.push(1), l));
    const w2 = pool.acquire().then((l) => (order.push(2), l));
    await tick();
    expect(pool.metrics().waiting).toBe(2);
    expect(f.alive.size).toBe(2);
    a.release();
    const l1 = await w1;
    b.release();
    const l2 = await w2;
    expect(order).toEqual([1, 2]);
    l1.release();
    l2.release();
    expect(pool.metrics()).toMatchObject({ inUse: 0, waiting: 0, acquired: 4, released: 4, created: 2 });
    await pool.close();
    expect(f.alive.size).toBe(0);
  });

  it('fails a waiter with SessionPoolExhausted after acquireTimeout, naming the limits', async () => {
    const pool = new ResourcePool(factory(), { max: 1, acquireTimeoutMs: 50 });
    const held = await pool.acquire();
    const error = await pool.acquire().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HsmError);
    expect((error as HsmError).code).toBe('SessionPoolExhausted');
    expect((error as HsmError).retryable).toBe(true);
    expect((error as HsmError).message).toMatch(/1 in use, max 1/);
    expect(pool.metrics().timeouts).toBe(1);
    held.release();
    const again = await pool.acquire();
    again.release();
    await pool.close();
  });

  it('evicts a resource the caller classifies as broken and replaces it on demand', async () => {
    const f = factory();
    const pool = new ResourcePool(f, { max: 1 });
    const first = await pool.use(async (r) => r.id);
    await expect(
      pool.use(
        async () => {
          throw new Error('session handle invalid');
        },
        () => true,
      ),
    ).rejects.toThrow('session handle invalid');
    await tick();
    const second = await pool.use(async (r) => r.id);
    expect(second).not.toBe(first);
    expect(pool.metrics().evicted).toBe(1);
    // a caller error keeps the resource
    await expect(pool.use(async () => Promise.reject(new Error('bad input')), () => false)).rejects.toThrow('bad input');
    expect(await pool.use(async (r) => r.id)).toBe(second);
    await pool.close();
  });

  it('recycles resources past maxUses and validates on borrow', async () => {
    const f = factory();
    const pool = new ResourcePool(f, { max: 1, maxUses: 2, validateOnBorrow: true });
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await pool.use(async (r) => r.id));
    expect(ids).toEqual([1, 1, 2, 2]);
    expect(pool.metrics().recycled).toBe(2);
    // an unhealthy idle resource is replaced at borrow time
    const lease = await pool.acquire();
    lease.resource.healthy = false;
    lease.release();
    const fresh = await pool.use(async (r) => r);
    expect(fresh.healthy).toBe(true);
    await pool.close();
  });

  it('recycles resources past maxAge using the injected clock', async () => {
    let now = 0;
    const pool = new ResourcePool(factory(), { max: 1, maxAgeMs: 1000, now: () => now });
    const a = await pool.use(async (r) => r.id);
    now = 999;
    expect(await pool.use(async (r) => r.id)).toBe(a);
    now = 1000;
    await pool.use(async (r) => r.id); // returned past its age: destroyed
    await tick();
    expect(await pool.use(async (r) => r.id)).not.toBe(a);
    await pool.close();
  });

  it('reports a creation failure to the waiting caller, then recovers', async () => {
    let down = true;
    const pool = new ResourcePool(factory({ failCreate: () => down }), { max: 2, acquireTimeoutMs: 200 });
    await expect(pool.acquire()).rejects.toThrow('device down');
    expect(pool.metrics().createFailures).toBe(1);
    down = false;
    const lease = await pool.acquire();
    lease.release();
    await pool.close();
  });

  it('drain() destroys idle resources and leased ones when they come back', async () => {
    const f = factory();
    const pool = new ResourcePool(f, { min: 2, max: 3 });
    await pool.start();
    const leased = await pool.acquire();
    await pool.drain();
    expect(f.alive.has(leased.resource.id)).toBe(true);
    leased.release();
    await tick();
    expect(f.alive.has(leased.resource.id)).toBe(false);
    await pool.close();
  });

  it('lowers its ceiling with setMax and rejects waiters on close', async () => {
    const pool = new ResourcePool(factory(), { max: 4, acquireTimeoutMs: 1000 });
    pool.setMax(1);
    const held = await pool.acquire();
    const waiting = pool.acquire();
    await tick();
    expect(pool.metrics().size).toBe(1);
    const closing = pool.close();
    await expect(waiting).rejects.toMatchObject({ code: 'Closed' });
    held.release();
    await closing;
    await expect(pool.acquire()).rejects.toMatchObject({ code: 'Closed' });
  });

  it('validates its options, naming the field', () => {
    expect(() => new ResourcePool(factory(), { min: 3, max: 2 })).toThrow(/min \(3\) must not exceed max \(2\)/);
    expect(() => new ResourcePool(factory(), { max: 0 })).toThrow(/max must be at least 1/);
    expect(() => new ResourcePool(factory(), { acquireTimeoutMs: -1 })).toThrow(/acquireTimeoutMs/);
  });

  it('aborts a wait through an AbortSignal', async () => {
    const pool = new ResourcePool(factory(), { max: 1, acquireTimeoutMs: 5000 });
    const held = await pool.acquire();
    const controller = new AbortController();
    const waiting = pool.acquire(controller.signal);
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'Timeout' });
    expect(pool.metrics().waiting).toBe(0);
    held.release();
    await pool.close();
  });

  it('serves 1000 concurrent users on 4 resources without leaking', async () => {
    const f = factory();
    const pool = new ResourcePool(f, { max: 4, acquireTimeoutMs: 10_000 });
    let concurrent = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 1000 }, () =>
        pool.use(async () => {
          concurrent++;
          peak = Math.max(peak, concurrent);
          await tick();
          concurrent--;
        }),
      ),
    );
    expect(peak).toBe(4);
    expect(pool.metrics()).toMatchObject({ inUse: 0, waiting: 0, created: 4, acquired: 1000 });
    await pool.close();
    expect(f.alive.size).toBe(0);
  });
});

describe('ResourcePool recovery helpers', () => {
  it('warm() refills to min after a drain, and rejectWaiters() fails queued callers at once', async () => {
    const f = factory();
    const pool = new ResourcePool(f, { min: 2, max: 2, acquireTimeoutMs: 5000 });
    await pool.start();
    await pool.drain();
    expect(pool.metrics().idle).toBe(0);
    await pool.warm();
    expect(pool.metrics().idle).toBe(2);
    const a = await pool.acquire();
    const b = await pool.acquire();
    const queued = [pool.acquire(), pool.acquire()];
    await tick();
    pool.rejectWaiters(new HsmError('CircuitOpen', 'device down'));
    for (const q of queued) await expect(q).rejects.toMatchObject({ code: 'CircuitOpen' });
    expect(pool.metrics().waiting).toBe(0);
    a.release();
    b.release();
    await pool.close();
  });

  it('keeps trying to create for the remaining waiters after one creation fails', async () => {
    let failures = 1;
    const pool = new ResourcePool(factory({ failCreate: () => failures-- > 0 }), { max: 1, acquireTimeoutMs: 2000 });
    const results = await Promise.allSettled([pool.acquire(), pool.acquire()]);
    expect(results[0]!.status).toBe('rejected');
    expect(results[1]!.status).toBe('fulfilled');
    (results[1] as PromiseFulfilledResult<{ release(): void }>).value.release();
    await pool.close();
  });
});
