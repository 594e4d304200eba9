import { afterAll, describe, expect, it } from 'vitest';
import { openRotation, ROTATION_STEPS, type StorageConfigInput } from '../src/index.js';
import { cleanupStorage, freshStorage, PASSPHRASE, rawSql, runChild, softwareBackend, softwareBackendConfig, softwareRegistry, softwareStore, STORAGE_KINDS, type StorageKind } from './helpers.js';

afterAll(cleanupStorage);

const data = Buffer.from('signed before the crash');

async function openCtx(storage: StorageConfigInput, keysDir: string, reconcile: boolean) {
  return openRotation({ storage, backend: softwareBackendConfig(keysDir), backendRegistry: softwareRegistry(), reconcile });
}

async function activeCount(storage: StorageConfigInput, base: string): Promise<number> {
  const raw = await rawSql(storage);
  try {
    const rows = (await raw.exec(`select count(*) as n from key_versions where base_key_id = ? and state = 'Active'`, [base])) as { n: number | string }[];
    return Number(rows[0]?.n);
  } finally {
    await raw.close();
  }
}

async function prepare(kind: StorageKind, label: string) {
  const storage = await freshStorage(kind, label);
  const keysDir = await softwareStore();
  const ctx = await openCtx(storage, keysDir, false);
  await ctx.manager.createKey('k', 'Ed25519', { actor: 'alice' });
  const signedAt = new Date();
  const { signature } = await ctx.hsm!.signWithLogicalKey('k', data);
  await ctx.close();
  return { storage, keysDir, signature, signedAt };
}

describe.each(STORAGE_KINDS)('a rotating process killed at each step (%s)', (kind) => {
  it.each(ROTATION_STEPS)('SIGKILL right after "%s": reconcile leaves exactly one Active version and signing works', async (step) => {
    const { storage, keysDir, signature, signedAt } = await prepare(kind, `crash_${step}`);
    const child = runChild(
      { storage, keysDir, passphrase: PASSPHRASE, action: 'rotate', baseKeyId: 'k', nodeId: 'doomed-node', policy: { rotationLease: '1ms' } },
      { OLOCUS_ROTATION_TEST_HOOKS: '1', OLOCUS_ROTATION_CRASH_AT: step },
    );
    const result = await child.done;
    expect(result.signal, result.stderr).toBe('SIGKILL');
    expect(result.result).toBeUndefined();

    // Right after the crash, before any repair: never two Active, never a signing outage.
    expect(await activeCount(storage, 'k')).toBe(1);
    const before = await openCtx(storage, keysDir, false);
    const expectedActive = step === 'activated' ? 2 : 1;
    expect((await before.hsm!.signWithLogicalKey('k', data)).version.version).toBe(expectedActive);
    await before.close();

    // Restart: reconcile on open.
    const ctx = await openCtx(storage, keysDir, true);
    try {
      const report = ctx.reconcileReport!;
      expect(report.failed).toEqual([]);
      expect(report.orphans).toEqual([]);
      if (step === 'activated') expect(report.resumed).toEqual([]);
      else {
        // killed after "generated" but before the journal recorded it: the journal still says
        // "intent" and the key found in the backend is adopted rather than generated again
        const fromStep = step === 'generated' ? 'intent' : step;
        expect(report.resumed).toEqual([{ baseKeyId: 'k', version: 2, kind: 'manual', fromStep, adopted: step !== 'intent' }]);
      }
      expect(await activeCount(storage, 'k')).toBe(1);
      const versions = await ctx.registry.getKeyVersions('k');
      expect(versions.map((v) => [v.version, v.state])).toEqual([
        [1, 'Superseded'],
        [2, 'Active'],
      ]);
      // the history records the original actor for the completed rotation
      expect((await ctx.registry.getHistory('k.v2')).at(-1)).toMatchObject({ to: 'Active', actor: 'child:doomed-node' });
      const signed = await ctx.hsm!.signWithLogicalKey('k', data);
      expect(signed.version.version).toBe(2);
      expect(await ctx.hsm!.verifyWithLogicalKey('k', data, signed.signature, new Date())).toBe(true);
      expect(await ctx.hsm!.verifyWithLogicalKey('k', data, signature, signedAt)).toBe(true);
      // exactly one backend key per version: nothing generated twice
      const keys = (await ctx.backend.listKeys({ prefix: 'k.v' })).keys.map((h) => h.id).sort();
      expect(keys).toEqual(['k.v1', 'k.v2']);
      // a rotate asked for right after the recovery reports the rotation reconcile just completed
      // (never a second new version for one request), and the next one rotates again
      const asked = await ctx.manager.rotateKey('k', { actor: 'alice', reason: 'after recovery' });
      expect(asked.current.version).toBe(step === 'activated' ? 3 : 2);
      if (step !== 'activated') expect(asked.recovered).toBeDefined();
      expect((await ctx.manager.rotateKey('k', { actor: 'alice', reason: 'after recovery' })).current.version).toBe(step === 'activated' ? 4 : 3);
    } finally {
      await ctx.close();
    }
  });

  it.each(['intent', 'generated', 'registered'] as const)('a process killed while creating a key (after "%s") leaves a key that reconcile completes', async (step) => {
    const storage = await freshStorage(kind, `create_${step}`);
    const keysDir = await softwareStore();
    const init = await openCtx(storage, keysDir, false); // creates the key store and the schema
    await init.close();
    const child = runChild(
      { storage, keysDir, passphrase: PASSPHRASE, action: 'create', baseKeyId: 'fresh', nodeId: 'doomed', policy: { rotationLease: '1ms' } },
      { OLOCUS_ROTATION_TEST_HOOKS: '1', OLOCUS_ROTATION_CRASH_AT: step },
    );
    expect((await child.done).signal).toBe('SIGKILL');
    const ctx = await openCtx(storage, keysDir, true);
    try {
      expect(ctx.reconcileReport!.resumed).toMatchObject([{ baseKeyId: 'fresh', version: 1, kind: 'create' }]);
      expect((await ctx.registry.getKeyVersions('fresh')).map((v) => [v.version, v.state])).toEqual([[1, 'Active']]);
      const signed = await ctx.hsm!.signWithLogicalKey('fresh', data);
      expect(await ctx.hsm!.verifyWithLogicalKey('fresh', data, signed.signature, new Date())).toBe(true);
    } finally {
      await ctx.close();
    }
  });

  it('a backend key named <base>.v<N> with no recorded intent is reported, not adopted', async () => {
    const { storage, keysDir } = await prepare(kind, 'orphan');
    const backend = softwareBackend(keysDir);
    await backend.initialize();
    await backend.generateKeyPair({ id: 'k.v7', algorithm: 'Ed25519' });
    await backend.generateKeyPair({ id: 'unrelated.v1', algorithm: 'Ed25519' });
    await backend.close();
    const ctx = await openCtx(storage, keysDir, true);
    try {
      expect(ctx.reconcileReport!.orphans.map((o) => [o.keyId, o.baseKeyId, o.version])).toEqual([['k.v7', 'k', 7]]);
      expect((await ctx.registry.getKeyVersions('k')).map((v) => v.version)).toEqual([1]);
      expect((await ctx.registry.getActiveKey('k')).version).toBe(1);
    } finally {
      await ctx.close();
    }
  });

  it("an unfinished rotation still within its owner's lease is left alone (another node is working on it)", async () => {
    const { storage, keysDir } = await prepare(kind, 'lease');
    const child = runChild(
      { storage, keysDir, passphrase: PASSPHRASE, action: 'rotate', baseKeyId: 'k', nodeId: 'slow-node', policy: { rotationLease: '1h' } },
      { OLOCUS_ROTATION_TEST_HOOKS: '1', OLOCUS_ROTATION_CRASH_AT: 'registered' },
    );
    expect((await child.done).signal).toBe('SIGKILL');
    const ctx = await openCtx(storage, keysDir, true);
    try {
      expect(ctx.reconcileReport).toMatchObject({ resumed: [], inProgressElsewhere: [{ baseKeyId: 'k', version: 2, owner: 'slow-node' }] });
      await expect(ctx.manager.rotateKey('k', { actor: 'a', reason: 'b' })).rejects.toMatchObject({ details: { rotationCode: 'RotationInProgress' } });
      const forced = await ctx.manager.reconcile({ force: true });
      expect(forced.resumed).toMatchObject([{ version: 2, fromStep: 'registered' }]);
      expect((await ctx.registry.getActiveKey('k')).version).toBe(2);
    } finally {
      await ctx.close();
    }
  });

  it('a lease held by a dead process on this host is taken over at once: the next rotate completes the interrupted one, not a second', async () => {
    const { storage, keysDir } = await prepare(kind, 'deadpid');
    const { hostname } = await import('node:os');
    // a real node id (host:pid:uuid) for a process that is then killed, with an hour's lease
    const child = runChild(
      { storage, keysDir, passphrase: PASSPHRASE, action: 'rotate', baseKeyId: 'k', policy: { rotationLease: '1h' } },
      { OLOCUS_ROTATION_TEST_HOOKS: '1', OLOCUS_ROTATION_CRASH_AT: 'generated' },
    );
    expect((await child.done).signal).toBe('SIGKILL');
    const ctx = await openCtx(storage, keysDir, false);
    const recoveredEvents: unknown[] = [];
    ctx.events.on('rotationRecovered', (e) => recoveredEvents.push(e));
    try {
      const started = Date.now();
      const result = await ctx.manager.rotateKey('k', { actor: 'operator', reason: 'rotate again after the crash' });
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(result.current.version).toBe(2);
      // killed right after generating, before the journal recorded it: resumed from 'intent', key adopted
      expect(result.recovered).toMatchObject({ fromStep: 'intent' });
      expect(result.adopted).toBe(true);
      expect(result.recovered!.owner.startsWith(`${hostname()}:`)).toBe(true);
      expect(recoveredEvents).toMatchObject([{ baseKeyId: 'k', version: 2, fromStep: 'intent' }]);
      expect(await activeCount(storage, 'k')).toBe(1);
      // the next rotate is an ordinary one
      expect((await ctx.manager.rotateKey('k', { actor: 'operator', reason: 'next' })).current.version).toBe(3);
    } finally {
      await ctx.close();
    }
  });

  it('reconcile on start-up completes a dead process\'s rotation, and the rotate asked for then reports it instead of rotating twice', async () => {
    const { storage, keysDir } = await prepare(kind, 'deadpid2');
    const child = runChild(
      { storage, keysDir, passphrase: PASSPHRASE, action: 'rotate', baseKeyId: 'k', policy: { rotationLease: '1h' } },
      { OLOCUS_ROTATION_TEST_HOOKS: '1', OLOCUS_ROTATION_CRASH_AT: 'registered' },
    );
    expect((await child.done).signal).toBe('SIGKILL');
    const ctx = await openCtx(storage, keysDir, true);
    try {
      expect(ctx.reconcileReport!.resumed).toMatchObject([{ baseKeyId: 'k', version: 2, fromStep: 'registered' }]);
      const result = await ctx.manager.rotateKey('k', { actor: 'operator', reason: 'rotate after crash' });
      expect(result.current.version).toBe(2);
      expect(result.recovered).toBeDefined();
      const { versions } = await ctx.registry.listKeyVersions({ baseKeyId: 'k' });
      expect(versions.map((v) => v.version)).toEqual([1, 2]);
    } finally {
      await ctx.close();
    }
  });

  it('an operator recovers a rotation held by a living lease with recoverRotation (audited as rotationRecovered)', async () => {
    const { storage, keysDir } = await prepare(kind, 'recover');
    const child = runChild(
      { storage, keysDir, passphrase: PASSPHRASE, action: 'rotate', baseKeyId: 'k', nodeId: 'remote-node', policy: { rotationLease: '1h' } },
      { OLOCUS_ROTATION_TEST_HOOKS: '1', OLOCUS_ROTATION_CRASH_AT: 'intent' },
    );
    expect((await child.done).signal).toBe('SIGKILL');
    const ctx = await openCtx(storage, keysDir, true);
    const events: { actor: string }[] = [];
    ctx.events.on('rotationRecovered', (e) => events.push(e));
    try {
      await expect(ctx.manager.rotateKey('k', { actor: 'a', reason: 'b' })).rejects.toThrow(/rotation recover --key k/);
      const result = await ctx.manager.recoverRotation('k', { actor: 'oncall@example.com', reason: 'node remote-node was decommissioned' });
      expect(result.current.version).toBe(2);
      expect(events).toMatchObject([{ actor: 'oncall@example.com', previousOwner: 'remote-node' }]);
      await expect(ctx.manager.recoverRotation('k', { actor: 'x', reason: 'y' })).rejects.toMatchObject({ code: 'KeyNotFound' });
    } finally {
      await ctx.close();
    }
  });

  it('a running scheduler daemon finishes a dead node\'s rotation on its next tick, without being asked', async () => {
    const { storage, keysDir } = await prepare(kind, 'daemon');
    const child = runChild(
      { storage, keysDir, passphrase: PASSPHRASE, action: 'rotate', baseKeyId: 'k', nodeId: 'gone-node', policy: { rotationLease: '1s' } },
      { OLOCUS_ROTATION_TEST_HOOKS: '1', OLOCUS_ROTATION_CRASH_AT: 'registered' },
    );
    expect((await child.done).signal).toBe('SIGKILL');
    const ctx = await openRotation({
      storage,
      backend: softwareBackendConfig(keysDir),
      backendRegistry: softwareRegistry(),
      reconcile: false,
      policy: { scheduler: { pollInterval: '200ms' } },
    });
    const recovered: unknown[] = [];
    ctx.events.on('rotationRecovered', (e) => recovered.push(e));
    try {
      ctx.scheduler.start();
      const deadline = Date.now() + 20_000;
      while (recovered.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(recovered).toMatchObject([{ baseKeyId: 'k', version: 2, previousOwner: 'gone-node' }]);
      expect((await ctx.registry.getActiveKey('k')).version).toBe(2);
    } finally {
      await ctx.scheduler.stop();
      await ctx.close();
    }
  });

  it.each(ROTATION_STEPS)('SIGKILL after "%s" with an audit hook: every history row, reconciled ones too, has its audit record', async (step) => {
    const { storage, keysDir } = await prepare(kind, `audit_${step}`);
    const { mkdtemp, readFile, appendFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const auditFile = join(await mkdtemp(join(tmpdir(), 'olocus-audit-hook-')), 'audit.jsonl');
    const child = runChild(
      { storage, keysDir, passphrase: PASSPHRASE, action: 'rotate', baseKeyId: 'k', nodeId: 'doomed-node', policy: { rotationLease: '1ms' }, auditFile },
      { OLOCUS_ROTATION_TEST_HOOKS: '1', OLOCUS_ROTATION_CRASH_AT: step },
    );
    expect((await child.done).signal).toBe('SIGKILL');
    const ctx = await openRotation({
      storage,
      backend: softwareBackendConfig(keysDir),
      backendRegistry: softwareRegistry(),
      reconcile: true,
      beforeCommit: async (changes) => {
        for (const c of changes) await appendFile(auditFile, `${JSON.stringify({ keyId: c.keyId, from: c.from, to: c.to, at: c.at.getTime() })}\n`);
      },
    });
    try {
      const recorded = new Set((await readFile(auditFile, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean));
      // the key was created before the hook existed: only changes from the rotation on are checked
      const history = (await ctx.registry.getHistory('k')).filter((c) => c.keyId !== 'k.v1' || c.to === 'Superseded');
      expect(history.length).toBeGreaterThan(0);
      for (const c of history) {
        expect(recorded, `no audit record for ${c.keyId} ${c.from} -> ${c.to}`).toContain(JSON.stringify({ keyId: c.keyId, from: c.from, to: c.to, at: c.at.getTime() }));
      }
    } finally {
      await ctx.close();
    }
  });

  it('a failing audit hook rolls the change back (fail closed)', async () => {
    const { storage, keysDir } = await prepare(kind, 'audit_fail');
    const ctx = await openRotation({
      storage,
      backend: softwareBackendConfig(keysDir),
      backendRegistry: softwareRegistry(),
      reconcile: false,
      beforeCommit: async () => {
        throw new Error('audit log unavailable');
      },
    });
    try {
      await expect(ctx.manager.suspendKey('k.v1', { actor: 'a', reason: 'b' })).rejects.toThrow('audit log unavailable');
      expect((await ctx.registry.getActiveKey('k')).version).toBe(1);
      expect((await ctx.registry.getHistory('k')).map((c) => c.to)).not.toContain('Suspended');
    } finally {
      await ctx.close();
    }
  });
});
