import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { HsmError } from '@olocus/hsm-core';
import { openRotation, type RotationContext, type RotationEvent, type RotationPolicyInput } from '../src/index.js';
import { cleanupStorage, DAY, FakeClock, freshStorage, HOUR, softwareBackendConfig, softwareRegistry, softwareStore, STORAGE_KINDS } from './helpers.js';

afterAll(cleanupStorage);

const who = { actor: 'alice@example.com', reason: 'quarterly rotation' };
const data = Buffer.from('a document to sign');

describe.each(STORAGE_KINDS)('rotation manager (%s)', (kind) => {
  const contexts: RotationContext[] = [];
  afterEach(async () => {
    for (const c of contexts.splice(0)) await c.close();
  });

  async function setup(label: string, policy: RotationPolicyInput = {}) {
    const clock = new FakeClock();
    const keysDir = await softwareStore();
    const storage = await freshStorage(kind, label);
    const events: RotationEvent[] = [];
    const ctx = await openRotation({
      storage,
      backend: softwareBackendConfig(keysDir),
      backendRegistry: softwareRegistry(),
      policy,
      now: clock.now,
      onEvent: (e) => events.push(e),
    });
    contexts.push(ctx);
    return { ...ctx, hsm: ctx.hsm!, clock, events, storage, keysDir };
  }

  it('createKey makes version 1 Active, generated in the backend as <base>.v1', async () => {
    const { manager, registry, backend, hsm, events } = await setup('create');
    const v1 = await manager.createKey('invoices', 'ECDSA_P256', { actor: 'alice' });
    expect(v1).toMatchObject({ keyId: 'invoices.v1', version: 1, state: 'Active', algorithm: 'ECDSA_P256', backend: 'software', usages: ['sign', 'verify'] });
    expect((await backend.getKey('invoices.v1')).algorithm).toBe('ECDSA_P256');
    expect((await registry.getActiveKey('invoices')).keyId).toBe('invoices.v1');
    const history = await registry.getHistory('invoices');
    expect(history.map((h) => [h.from, h.to])).toEqual([
      [null, 'PreActivation'],
      ['PreActivation', 'Active'],
    ]);
    expect(history.every((h) => h.actor === 'alice' && h.reason.length > 0)).toBe(true);
    expect(events.some((e) => e.type === 'keyCreated' && e.baseKeyId === 'invoices')).toBe(true);
    const { signature, version } = await hsm.signWithLogicalKey('invoices', data);
    expect(version).toMatchObject({ baseKeyId: 'invoices', version: 1, key: 'invoices.v1' });
    expect(await hsm.verifyWithLogicalKey('invoices', data, signature, new Date())).toBe(true);
  });

  it('a signature made before a rotation verifies during the overlap and by signature time afterwards', async () => {
    const { manager, registry, scheduler, hsm, clock, events } = await setup('overlap', { overlapPeriod: '24h', retentionVersions: 1 });
    await manager.createKey('docs', 'Ed25519', { actor: 'alice' });
    const t0 = clock.now();
    const before = await hsm.signWithLogicalKey('docs', data);
    expect(before.version.version).toBe(1);

    clock.advance(HOUR);
    const rotatedAt = clock.ms;
    const result = await manager.rotateKey('docs', who);
    expect(result.previous).toMatchObject({ version: 1, state: 'Superseded', successorVersion: 2 });
    expect(result.previous?.deactivatedAt?.getTime()).toBe(rotatedAt);
    expect(result.previous?.overlapUntil?.getTime()).toBe(rotatedAt + DAY);
    expect(result.current).toMatchObject({ version: 2, state: 'Active', predecessorVersion: 1, keyId: 'docs.v2' });
    expect(events.find((e) => e.type === 'rotated')).toMatchObject({ fromVersion: 1, toVersion: 2, kind: 'manual', actor: who.actor, reason: who.reason });

    // during the overlap
    clock.advance(HOUR);
    expect(await hsm.verifyWithLogicalKey('docs', data, before.signature, t0)).toBe(true);
    expect((await registry.getVerificationCandidates('docs', new Date(rotatedAt + 1))).map((v) => v.version)).toEqual([2, 1]);
    const after = await hsm.signWithLogicalKey('docs', data);
    expect(after.version.version).toBe(2);
    expect(await hsm.verifyWithLogicalKey('docs', data, after.signature, clock.now())).toBe(true);
    // dated after the rotation but inside v1's overlap, v1 is still a candidate (a signer with a
    // fresh cache, or one whose read raced the rotation's commit, may have used it)
    expect(await hsm.verifyWithLogicalKeyDetailed('docs', data, before.signature, clock.now())).toMatchObject({ valid: true, version: { version: 1 } });

    // after the overlap: the deactivate task archives v1 (retentionVersions 1); it still verifies by time
    clock.advance(DAY);
    const report = await scheduler.runDueTasks();
    expect(report.ran.map((r) => [r.kind, r.status])).toContainEqual(['deactivate', 'done']);
    expect((await registry.getKeyVersion('docs.v1')).state).toBe('Archived');
    expect(events.some((e) => e.type === 'overlapEnded' && e.keyId === 'docs.v1')).toBe(true);
    expect(await hsm.verifyWithLogicalKey('docs', data, before.signature, t0)).toBe(true);
    // candidates depend on the signature time: inside the overlap window both, after it only v2
    expect((await registry.getVerificationCandidates('docs', new Date(rotatedAt + 1))).map((v) => v.version)).toEqual([2, 1]);
    expect((await registry.getVerificationCandidates('docs', new Date(rotatedAt + DAY))).map((v) => v.version)).toEqual([2]);

    // usage was counted (batched) for the versions used
    await registry.flushUsage();
    expect((await registry.getKeyVersion('docs.v1')).usageCount).toBe(1);
    expect((await registry.getKeyVersion('docs.v2')).usageCount).toBe(1);
  });

  it('a revoked or compromised version verifies nothing', async () => {
    const { manager, hsm, clock } = await setup('revoke');
    await manager.createKey('r', 'Ed25519', { actor: 'alice' });
    const t0 = clock.now();
    const s1 = await hsm.signWithLogicalKey('r', data);
    clock.advance(HOUR);
    await manager.rotateKey('r', who);
    const t1 = clock.now();
    const s2 = await hsm.signWithLogicalKey('r', data);
    expect(await hsm.verifyWithLogicalKey('r', data, s1.signature, t0)).toBe(true);
    await manager.revokeKey('r.v1', { actor: 'sec', reason: 'retired early' });
    await expect(hsm.verifyWithLogicalKey('r', data, s1.signature, t0)).rejects.toMatchObject({ code: 'KeyNotFound' });
    await manager.revokeKey('r.v2', { actor: 'sec', reason: 'leaked' }, { compromised: true });
    await expect(hsm.verifyWithLogicalKey('r', data, s2.signature, t1)).rejects.toMatchObject({ code: 'KeyNotFound' });
    await expect(hsm.signWithLogicalKey('r', data)).rejects.toMatchObject({ code: 'KeyNotFound' });
  });

  it('without a signature time, a signature verifies under any version never revoked or compromised, and says which', async () => {
    const { manager, hsm, clock } = await setup('untimed');
    await manager.createKey('u', 'ECDSA_P256', { actor: 'alice' });
    const s1 = await hsm.signWithLogicalKey('u', data);
    clock.advance(HOUR);
    await manager.rotateKey('u', who);
    const s2 = await hsm.signWithLogicalKey('u', data);
    clock.advance(HOUR);
    await manager.rotateKey('u', who);
    const first = await hsm.verifyWithLogicalKeyDetailed('u', data, s1.signature);
    expect(first).toMatchObject({ valid: true, version: { version: 1 } });
    expect((await hsm.verifyWithLogicalKeyDetailed('u', data, s2.signature)).version?.version).toBe(2);
    expect((await hsm.verifyWithLogicalKeyDetailed('u', Buffer.from('other'), s2.signature)).valid).toBe(false);
    await manager.revokeKey('u.v1', { actor: 'sec', reason: 'retired early' });
    expect((await hsm.verifyWithLogicalKeyDetailed('u', data, s1.signature)).valid).toBe(false);
    await manager.revokeKey('u.v2', { actor: 'sec', reason: 'retired early' });
    expect((await hsm.verifyWithLogicalKeyDetailed('u', data, s2.signature)).valid).toBe(false);
    // the Active version, compromised, verifies nothing either
    const s3 = await hsm.signWithLogicalKey('u', data);
    expect((await hsm.verifyWithLogicalKeyDetailed('u', data, s3.signature)).version?.version).toBe(3);
    await manager.revokeKey('u.v3', { actor: 'sec', reason: 'leaked' }, { compromised: true });
    await expect(hsm.verifyWithLogicalKeyDetailed('u', data, s3.signature)).rejects.toMatchObject({ code: 'KeyNotFound' });
  });

  it('a signature is dated by when the registry confirmed its version Active, so a rotation racing it still verifies by that date', async () => {
    const { manager, hsm, clock, registry } = await setup('race');
    await manager.createKey('race', 'ECDSA_P256', { actor: 'alice' });
    clock.advance(HOUR);
    const resolved = await registry.resolveForSigning('race');
    const confirmed = resolved.confirmedActiveAt!;
    expect(confirmed.getTime()).toBe(clock.now().getTime());
    // the rotation lands while the signature is being made
    clock.advance(1000);
    await manager.rotateKey('race', who);
    clock.advance(1000);
    const signature = await hsm.sign(resolved.key, data);
    expect(await hsm.verifyWithLogicalKey('race', data, signature, confirmed)).toBe(true);
    const signedNow = await hsm.signWithLogicalKey('race', data);
    expect(signedNow.version.version).toBe(2);
    expect(signedNow.signedAt.getTime()).toBeLessThanOrEqual(clock.now().getTime());
    expect(await hsm.verifyWithLogicalKey('race', data, signedNow.signature, signedNow.signedAt)).toBe(true);
  });

  it('a signature dated by a read made while a rotation was committing verifies by that date (overlap candidates)', async () => {
    const { manager, hsm, clock, registry } = await setup('commitwindow');
    await manager.createKey('cw', 'ECDSA_P256', { actor: 'alice' });
    clock.advance(HOUR);
    const signedWithV1 = await hsm.sign('cw.v1', data);
    const rotationAt = clock.now();
    await manager.rotateKey('cw', who);
    // the reader's snapshot saw v1 Active, but its clock read came after the rotation's timestamp
    const datedAfter = new Date(rotationAt.getTime() + 5);
    clock.advance(10);
    registry.invalidate('cw');
    expect((await registry.getKeyForVerification('cw', datedAfter)).version).toBe(2);
    const result = await hsm.verifyWithLogicalKeyDetailed('cw', data, signedWithV1, datedAfter);
    expect(result).toMatchObject({ valid: true, version: { version: 1 } });
    // outside the overlap it does not
    clock.advance(48 * HOUR);
    expect((await hsm.verifyWithLogicalKeyDetailed('cw', data, signedWithV1, new Date(clock.now().getTime()))).valid).toBe(false);
  });

  it('creating a key whose version id is taken by a foreign backend key leaves nothing behind', async () => {
    const { manager, hsm, registry } = await setup('taken');
    await hsm.generateKey({ id: 'taken.v1', algorithm: 'Ed25519' });
    await expect(manager.createKey('taken', 'Ed25519', { actor: 'alice' })).rejects.toMatchObject({ code: 'KeyAlreadyExists' });
    await expect(registry.getLogicalKey('taken')).rejects.toMatchObject({ code: 'KeyNotFound' });
    await hsm.destroyKey('taken.v1');
    expect((await manager.createKey('taken', 'Ed25519', { actor: 'alice' })).version).toBe(1);
  });

  it('emergency rotation is refused unless allowed', async () => {
    const { manager, registry } = await setup('emerg-off');
    await manager.createKey('e', 'Ed25519', { actor: 'alice' });
    const error = (await manager.emergencyRotateKey('e', { actor: 'sec', reason: 'suspected leak' }).catch((e: unknown) => e)) as HsmError;
    expect(error).toBeInstanceOf(HsmError);
    expect(error.details).toMatchObject({ rotationCode: 'EmergencyRotationDisabled', field: 'policy.allowEmergencyRotation' });
    expect(error.message).toContain('allowEmergencyRotation');
    expect((await registry.getActiveKey('e')).version).toBe(1);
  });

  it('emergency rotation marks the old version Compromised at once (no overlap) and emits a security event', async () => {
    const { manager, registry, scheduler, hsm, clock, events } = await setup('emerg-on', { allowEmergencyRotation: true });
    await manager.createKey('e', 'Ed25519', { actor: 'alice' });
    const t0 = clock.now();
    const s1 = await hsm.signWithLogicalKey('e', data);
    clock.advance(1000);
    const result = await manager.emergencyRotateKey('e', { actor: 'sec', reason: 'key material leaked' });
    expect(result.previous).toMatchObject({ state: 'Compromised', successorVersion: 2 });
    expect(result.previous?.overlapUntil).toBeUndefined();
    expect(result.current.state).toBe('Active');
    const sec = events.find((e) => e.type === 'securityEvent');
    expect(sec).toMatchObject({ event: 'emergencyRotation', baseKeyId: 'e', compromisedKeyId: 'e.v1', markedAs: 'Compromised', newVersion: 2, actor: 'sec' });
    await expect(hsm.verifyWithLogicalKey('e', data, s1.signature, t0)).rejects.toMatchObject({ code: 'KeyNotFound' });
    expect((await hsm.signWithLogicalKey('e', data)).version.version).toBe(2);
    expect((await scheduler.listTasks({ baseKeyId: 'e', status: 'pending' })).map((t) => t.kind)).toContain('cleanup');
    expect((await registry.getHistory('e.v1')).at(-1)).toMatchObject({ from: 'Active', to: 'Compromised', actor: 'sec', reason: 'key material leaked' });
  });

  it('retention: archive beyond retentionVersions, PendingDestruction, cancel, destroy in the backend', async () => {
    const { manager, registry, scheduler, backend, clock, events } = await setup('retention', {
      retentionVersions: 2,
      overlapPeriod: '1h',
      archiveRetention: '10d',
      destructionDelay: '7d',
    });
    await manager.createKey('ret', 'Ed25519', { actor: 'alice' });
    for (let i = 0; i < 3; i++) {
      clock.advance(60_000);
      await manager.rotateKey('ret', who);
    }
    clock.advance(2 * HOUR);
    await scheduler.runDueTasks();
    const states = async () => Object.fromEntries((await registry.getKeyVersions('ret')).map((v) => [v.version, v.state]));
    expect(await states()).toEqual({ 1: 'Archived', 2: 'Archived', 3: 'Superseded', 4: 'Active' });

    clock.advance(10 * DAY);
    await scheduler.runDueTasks();
    expect(await states()).toEqual({ 1: 'PendingDestruction', 2: 'PendingDestruction', 3: 'Superseded', 4: 'Active' });
    expect((await registry.getKeyVersion('ret.v1')).destroyAfter?.getTime()).toBe(clock.ms + 7 * DAY);

    const cancelled = await manager.cancelDestruction('ret.v2', { actor: 'bob', reason: 'legal hold' });
    expect(cancelled.state).toBe('Archived');
    clock.advance(7 * DAY);
    await scheduler.runDueTasks();
    expect((await states())[1]).toBe('Destroyed');
    expect((await states())[2]).not.toBe('Destroyed');
    await expect(backend.getKey('ret.v1')).rejects.toMatchObject({ code: 'KeyNotFound' });
    expect((await backend.getKey('ret.v2')).id).toBe('ret.v2');
    expect(events.some((e) => e.type === 'keyDestroyed' && e.keyId === 'ret.v1')).toBe(true);
    expect((await registry.getHistory('ret.v1')).map((h) => h.to)).toEqual(['PreActivation', 'Active', 'Superseded', 'Archived', 'PendingDestruction', 'Destroyed']);
  });

  it('a suspended key can be rotated; signing stops while suspended', async () => {
    const { manager, hsm } = await setup('suspend');
    await manager.createKey('s', 'Ed25519', { actor: 'alice' });
    await manager.suspendKey('s.v1', { actor: 'ops', reason: 'investigation' });
    await expect(hsm.signWithLogicalKey('s', data)).rejects.toMatchObject({ code: 'KeyNotFound' });
    const r = await manager.rotateKey('s', who);
    expect(r.previous?.state).toBe('Superseded');
    expect((await hsm.signWithLogicalKey('s', data)).version.version).toBe(2);
  });

  it('one rotation at a time per key; expectedVersion makes retries idempotent', async () => {
    const clock = new FakeClock();
    const storage = await freshStorage(kind, 'inprogress');
    let inner: unknown;
    let ctxRef: RotationContext | undefined;
    const ctx = await openRotation({
      storage,
      backend: softwareBackendConfig(await softwareStore()),
      backendRegistry: softwareRegistry(),
      now: clock.now,
      hooks: {
        afterStep: async (step, info) => {
          if (step === 'generated' && info.version === 2) inner = await ctxRef!.manager.rotateKey('p', who).catch((e: unknown) => e);
        },
      },
    });
    ctxRef = ctx;
    contexts.push(ctx);
    await ctx.manager.createKey('p', 'Ed25519', { actor: 'alice' });
    await ctx.manager.rotateKey('p', { ...who, expectedVersion: 1 });
    expect(inner).toMatchObject({ code: 'Conflict', retryable: true, details: { rotationCode: 'RotationInProgress' } });
    await expect(ctx.manager.rotateKey('p', { ...who, expectedVersion: 1 })).rejects.toMatchObject({ details: { rotationCode: 'VersionConflict' } });
    expect((await ctx.registry.getKeyVersions('p')).map((v) => v.state)).toEqual(['Superseded', 'Active']);
  });

  describe('bad input', () => {
    it('unknown key', async () => {
      const { manager } = await setup('bad-unknown');
      await expect(manager.rotateKey('missing', who)).rejects.toMatchObject({ code: 'KeyNotFound', message: expect.stringContaining('"missing"') });
    });

    it('rotating a destroyed key', async () => {
      const { manager, clock } = await setup('bad-destroyed');
      await manager.createKey('d', 'Ed25519', { actor: 'alice' });
      await manager.revokeKey('d.v1', { actor: 'sec', reason: 'decommission' });
      await manager.scheduleDestruction('d.v1', { actor: 'sec', reason: 'decommission' });
      await expect(manager.destroyIfDue('d.v1')).resolves.toBe(false);
      clock.advance(30 * DAY);
      await expect(manager.destroyIfDue('d.v1')).resolves.toBe(true);
      const error = (await manager.rotateKey('d', who).catch((e: unknown) => e)) as HsmError;
      expect(error).toMatchObject({ code: 'IllegalStateTransition', details: { rotationCode: 'IllegalStateTransition' } });
      expect(error.message).toMatch(/Destroyed/);
    });

    it('missing actor or reason', async () => {
      const { manager } = await setup('bad-actor');
      await manager.createKey('a', 'Ed25519', { actor: 'alice' });
      await expect(manager.rotateKey('a', { actor: 'alice' } as never)).rejects.toMatchObject({ details: { rotationCode: 'MissingActorOrReason', field: 'reason' } });
      await expect(manager.rotateKey('a', { reason: 'x' } as never)).rejects.toMatchObject({ details: { field: 'actor' } });
      await expect(manager.createKey('b', 'Ed25519', {} as never)).rejects.toMatchObject({ details: { field: 'actor' } });
      await expect(manager.suspendKey('a.v1', { actor: 'x', reason: '' })).rejects.toMatchObject({ details: { field: 'reason' } });
    });

    it('duplicate key, bad id, bad algorithm', async () => {
      const { manager } = await setup('bad-misc');
      await manager.createKey('dup', 'Ed25519', { actor: 'alice' });
      await expect(manager.createKey('dup', 'Ed25519', { actor: 'alice' })).rejects.toMatchObject({ code: 'KeyAlreadyExists' });
      await expect(manager.createKey('bad id!', 'Ed25519', { actor: 'alice' })).rejects.toMatchObject({ code: 'InvalidArgument' });
      await expect(manager.createKey('x', 'DSA' as never, { actor: 'alice' })).rejects.toMatchObject({ code: 'UnsupportedAlgorithm' });
    });

    it('retentionVersions 0 and a destruction delay under 7 days are configuration errors naming the field', async () => {
      const storage = await freshStorage(kind, 'bad-policy');
      const base = { storage, backend: softwareBackendConfig(await softwareStore()), backendRegistry: softwareRegistry() };
      const e1 = (await openRotation({ ...base, policy: { retentionVersions: 0 } }).catch((e: unknown) => e)) as HsmError;
      expect(e1).toMatchObject({ code: 'InvalidConfiguration', details: { field: 'rotation.policy.retentionVersions' } });
      expect(e1.message).toContain('retentionVersions');
      const e2 = (await openRotation({ ...base, policy: { destructionDelay: '6d' } }).catch((e: unknown) => e)) as HsmError;
      expect(e2).toMatchObject({ code: 'InvalidConfiguration', details: { field: 'rotation.policy.destructionDelay' } });
      const e3 = (await openRotation({ ...base, storage: { kind: 'mysql' } as never }).catch((e: unknown) => e)) as HsmError;
      expect(e3).toMatchObject({ code: 'InvalidConfiguration' });
      expect(e3.message).toContain('kind');
    });
  });
});
