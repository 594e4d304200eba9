import { afterAll, describe, expect, it } from 'vitest';
import { openRotation } from '../src/index.js';
import { cleanupStorage, FakeClock, freshStorage, HOUR, PASSPHRASE, runChild, softwareBackendConfig, softwareRegistry, softwareStore, STORAGE_KINDS } from './helpers.js';

afterAll(cleanupStorage);

describe.each(STORAGE_KINDS)('several processes on one registry (%s)', (kind) => {
  it('two processes rotating one key at once produce exactly one new version', async () => {
    const storage = await freshStorage(kind, 'race');
    const keysDir = await softwareStore();
    const ctx = await openRotation({ storage, backend: softwareBackendConfig(keysDir), backendRegistry: softwareRegistry() });
    await ctx.manager.createKey('race', 'Ed25519', { actor: 'alice' });
    await ctx.close();

    const children = ['node-a', 'node-b'].map((nodeId) =>
      runChild({ storage, keysDir, passphrase: PASSPHRASE, action: 'rotate', baseKeyId: 'race', expectedVersion: 1, nodeId, barrier: true }),
    );
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.go();
    const results = await Promise.all(children.map((c) => c.done));
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const outcomes = results.map((r) => r.result!);
    expect(outcomes.filter((o) => o['ok'] === true)).toEqual([{ ok: true, version: 2 }]);
    const loser = outcomes.find((o) => o['ok'] === false)!;
    expect(['RotationInProgress', 'VersionConflict']).toContain(loser['rotationCode']);

    const after = await openRotation({ storage, backend: softwareBackendConfig(keysDir), backendRegistry: softwareRegistry() });
    try {
      expect((await after.registry.getKeyVersions('race')).map((v) => [v.version, v.state])).toEqual([
        [1, 'Superseded'],
        [2, 'Active'],
      ]);
      expect((await after.backend.listKeys({ prefix: 'race.v' })).keys.map((k) => k.id).sort()).toEqual(['race.v1', 'race.v2']);
      expect(after.reconcileReport?.orphans).toEqual([]);
    } finally {
      await after.close();
    }
  });

  it('two schedulers in two processes run each due task exactly once', async () => {
    const storage = await freshStorage(kind, 'sched2');
    const keysDir = await softwareStore();
    const clock = new FakeClock();
    const ctx = await openRotation({ storage, backend: softwareBackendConfig(keysDir), backendRegistry: softwareRegistry(), now: clock.now, policy: { rotationInterval: '1h' } });
    const KEYS = 12;
    for (let i = 0; i < KEYS; i++) await ctx.manager.createKey(`job${String(i).padStart(2, '0')}`, 'Ed25519', { actor: 'alice' });
    const due = await ctx.scheduler.listTasks({ status: 'pending' });
    expect(due).toHaveLength(2 * KEYS); // one warn + one rotate per key
    await ctx.close();

    const nowMs = clock.ms + 2 * HOUR; // everything fell due while nothing ran
    const children = ['sched-a', 'sched-b'].map((nodeId) =>
      runChild({ storage, keysDir, passphrase: PASSPHRASE, action: 'runTasks', nodeId, nowMs, barrier: true, policy: { rotationInterval: '1h', scheduler: { batchSize: 2 } } }),
    );
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.go();
    const results = await Promise.all(children.map((c) => c.done));
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const ran = results.map((r) => (r.result!['ran'] as { id: string; status: string }[]).filter((t) => due.some((d) => d.id === t.id)));
    const ids = ran.flat().map((t) => t.id);
    expect(new Set(ids).size).toBe(ids.length); // no task ran twice
    expect(ids.sort()).toEqual(due.map((d) => d.id).sort()); // every due task ran
    expect(ran.flat().every((t) => t.status === 'done')).toBe(true);

    const after = await openRotation({ storage, backend: softwareBackendConfig(keysDir), backendRegistry: softwareRegistry(), now: () => new Date(nowMs), reconcile: false });
    try {
      const tasks = await after.scheduler.listTasks({});
      for (const d of due) expect(tasks.find((t) => t.id === d.id)).toMatchObject({ status: 'done', attempts: 1 });
      for (let i = 0; i < KEYS; i++) {
        expect((await after.registry.getKeyVersions(`job${String(i).padStart(2, '0')}`)).map((v) => v.state)).toEqual(['Superseded', 'Active']);
      }
    } finally {
      await after.close();
    }
  });
});
