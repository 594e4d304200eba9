import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { HsmError, type HsmBackend, type KeySpec } from '@olocus/hsm-core';
import { openRotation, type RotationContext, type RotationEvent, type RotationPolicyInput, type StorageConfigInput } from '../src/index.js';
import { cleanupStorage, DAY, FakeClock, freshStorage, HOUR, softwareBackend, softwareBackendConfig, softwareRegistry, softwareStore, STORAGE_KINDS } from './helpers.js';

afterAll(cleanupStorage);

/** A backend whose next `failures` key generations fail (a device outage). */
function flaky(backend: HsmBackend): HsmBackend & { failures: number } {
  const wrapper = {
    failures: 0,
    type: backend.type,
    get instanceId() {
      return backend.instanceId;
    },
    initialize: () => backend.initialize(),
    close: () => backend.close(),
    info: () => backend.info(),
    capabilities: () => backend.capabilities(),
    fipsStatus: () => backend.fipsStatus(),
    getKey: (k) => backend.getKey(k),
    getPublicKey: (k) => backend.getPublicKey(k),
    sign: (k, d, o) => backend.sign(k, d, o),
    verify: (k, d, s, o) => backend.verify(k, d, s, o),
    listKeys: (o) => backend.listKeys(o),
    destroyKey: (k) => backend.destroyKey(k),
    healthCheck: () => backend.healthCheck(),
    async generateKeyPair(spec: KeySpec) {
      if (wrapper.failures > 0) {
        wrapper.failures--;
        throw new HsmError('DeviceUnavailable', 'simulated HSM outage');
      }
      return backend.generateKeyPair(spec);
    },
  } satisfies HsmBackend & { failures: number };
  return wrapper;
}

describe.each(STORAGE_KINDS)('durable scheduler (%s)', (kind) => {
  const contexts: RotationContext[] = [];
  afterEach(async () => {
    for (const c of contexts.splice(0)) await c.close();
  });

  async function open(storage: StorageConfigInput, keysDir: string, clock: FakeClock, policy: RotationPolicyInput = {}, events: RotationEvent[] = []) {
    const ctx = await openRotation({
      storage,
      backend: softwareBackendConfig(keysDir),
      backendRegistry: softwareRegistry(),
      policy,
      now: clock.now,
      onEvent: (e) => events.push(e),
    });
    contexts.push(ctx);
    return ctx;
  }

  it('warns ahead of a scheduled rotation, rotates when due, and schedules the next one', async () => {
    const clock = new FakeClock();
    const t0 = clock.ms;
    const events: RotationEvent[] = [];
    const { manager, scheduler, registry } = await open(await freshStorage(kind, 'sched'), await softwareStore(), clock, { rotationInterval: '30d', advanceWarning: '7d' }, events);
    await manager.createKey('s', 'Ed25519', { actor: 'alice' });
    expect((await scheduler.runDueTasks()).ran).toEqual([]);
    const pending = await scheduler.listTasks({ baseKeyId: 's', status: 'pending' });
    expect(pending.map((t) => [t.kind, t.dueAt.getTime()])).toEqual([
      ['warn', t0 + 23 * DAY],
      ['rotate', t0 + 30 * DAY],
    ]);

    clock.advance(23 * DAY - 1);
    expect((await scheduler.runDueTasks()).ran).toEqual([]);
    clock.advance(1);
    expect((await scheduler.runDueTasks()).ran.map((r) => r.kind)).toEqual(['warn']);
    expect(events.find((e) => e.type === 'rotationWarning')).toMatchObject({ baseKeyId: 's', version: 1, rotationDueAt: new Date(t0 + 30 * DAY) });
    expect((await registry.getActiveKey('s')).version).toBe(1);

    clock.advance(7 * DAY);
    const ran = await scheduler.runDueTasks();
    expect(ran.ran.map((r) => [r.kind, r.status])).toEqual([['rotate', 'done']]);
    expect((await registry.getActiveKey('s')).version).toBe(2);
    expect(events.find((e) => e.type === 'rotated')).toMatchObject({ kind: 'scheduled', actor: 'system:scheduler' });
    const next = await scheduler.listTasks({ baseKeyId: 's', status: 'pending', kind: 'rotate' });
    expect(next.map((t) => [t.keyId, t.dueAt.getTime()])).toEqual([['s.v2', t0 + 60 * DAY]]);
  });

  it('tasks that fell due while no process ran run on the next start, once', async () => {
    const clock = new FakeClock();
    const storage = await freshStorage(kind, 'down');
    const keysDir = await softwareStore();
    const first = await open(storage, keysDir, clock, { rotationInterval: '1h', advanceWarning: 0 });
    await first.manager.createKey('d', 'Ed25519', { actor: 'alice' });
    await first.close();

    clock.advance(5 * HOUR); // five intervals pass with nothing running
    const second = await open(storage, keysDir, clock, { rotationInterval: '1h', advanceWarning: 0 });
    const report = await second.scheduler.runDueTasks();
    expect(report.ran.map((r) => [r.kind, r.status])).toEqual([['rotate', 'done']]);
    expect((await second.registry.getKeyVersions('d')).map((v) => v.state)).toEqual(['Superseded', 'Active']);
    expect((await second.scheduler.runDueTasks()).ran).toEqual([]);
    const next = await second.scheduler.listTasks({ baseKeyId: 'd', kind: 'rotate', status: 'pending' });
    expect(next[0]?.dueAt.getTime()).toBe(clock.ms + HOUR);
  });

  it('a manual rotation cancels the old version\'s scheduled rotation', async () => {
    const clock = new FakeClock();
    const { manager, scheduler } = await open(await freshStorage(kind, 'cancel'), await softwareStore(), clock, { rotationInterval: '1h' });
    await manager.createKey('m', 'Ed25519', { actor: 'alice' });
    clock.advance(HOUR / 2);
    await manager.rotateKey('m', { actor: 'alice', reason: 'manual' });
    const tasks = await scheduler.listTasks({ baseKeyId: 'm' });
    expect(tasks.filter((t) => t.keyId === 'm.v1' && (t.kind === 'rotate' || t.kind === 'warn')).map((t) => t.status)).toEqual(['cancelled', 'cancelled']);
    clock.advance(HOUR / 2);
    expect((await scheduler.runDueTasks()).ran.filter((r) => r.kind === 'rotate')).toEqual([]);
  });

  it('a failing task is retried with backoff and its error recorded; it fails for good after maxAttempts', async () => {
    const clock = new FakeClock();
    const keysDir = await softwareStore();
    const sw = softwareBackend(keysDir);
    await sw.initialize();
    const backend = flaky(sw);
    const events: RotationEvent[] = [];
    const ctx = await openRotation({
      storage: await freshStorage(kind, 'retry'),
      backend,
      policy: { rotationInterval: '1h', advanceWarning: 0, scheduler: { retryBase: '1m', retryMax: '10m', maxAttempts: 3 } },
      now: clock.now,
      onEvent: (e) => events.push(e),
    });
    contexts.push({ ...ctx, close: async () => (await ctx.close(), await sw.close()) });
    await ctx.manager.createKey('f', 'Ed25519', { actor: 'alice' });
    clock.advance(HOUR);
    backend.failures = 2;
    expect((await ctx.scheduler.runDueTasks()).ran.map((r) => r.status)).toEqual(['retry']);
    let [task] = await ctx.scheduler.listTasks({ baseKeyId: 'f', kind: 'rotate', status: 'pending' });
    expect(task).toMatchObject({ attempts: 1, dueAt: new Date(clock.ms + 60_000) });
    expect(task?.lastError).toContain('simulated HSM outage');
    expect(events.find((e) => e.type === 'taskFailed')).toMatchObject({ attempts: 1, final: false });

    clock.advance(59_999);
    expect((await ctx.scheduler.runDueTasks()).ran).toEqual([]);
    clock.advance(1);
    expect((await ctx.scheduler.runDueTasks()).ran.map((r) => r.status)).toEqual(['retry']);
    [task] = await ctx.scheduler.listTasks({ baseKeyId: 'f', kind: 'rotate', status: 'pending' });
    expect(task).toMatchObject({ attempts: 2, dueAt: new Date(clock.ms + 120_000) });

    clock.advance(120_000);
    expect((await ctx.scheduler.runDueTasks()).ran.map((r) => r.status)).toEqual(['done']);
    // failed generations gave their version numbers back: the new version is v2
    expect((await ctx.registry.getKeyVersions('f')).map((v) => [v.version, v.state])).toEqual([
      [1, 'Superseded'],
      [2, 'Active'],
    ]);

    // now fail every time: after maxAttempts the task is failed for good
    clock.advance(HOUR);
    backend.failures = 100;
    for (let i = 0; i < 3; i++) {
      await ctx.scheduler.runDueTasks();
      clock.advance(10 * 60_000);
    }
    const failed = await ctx.scheduler.listTasks({ baseKeyId: 'f', kind: 'rotate', status: 'failed' });
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ attempts: 3, keyId: 'f.v2' });
    expect(events.filter((e) => e.type === 'taskFailed' && e.final)).toHaveLength(1);
    expect((await ctx.registry.getActiveKey('f')).version).toBe(2);
  });

  it('start() polls until stop()', async () => {
    const clock = new FakeClock();
    const events: RotationEvent[] = [];
    const ctx = await open(await freshStorage(kind, 'poll'), await softwareStore(), clock, { rotationInterval: '1h', advanceWarning: 0, scheduler: { pollInterval: 20 } }, events);
    await ctx.manager.createKey('p', 'Ed25519', { actor: 'alice' });
    clock.advance(HOUR);
    const rotated = new Promise<RotationEvent>((resolve) => ctx.events.once('rotated', resolve));
    ctx.scheduler.start();
    expect(ctx.scheduler.isRunning).toBe(true);
    await expect(rotated).resolves.toMatchObject({ baseKeyId: 'p', toVersion: 2 });
    await ctx.scheduler.stop();
    expect(ctx.scheduler.isRunning).toBe(false);
  });
});
