import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HsmError } from '@olocus/hsm-core';
import { canTransition, KEY_STATES, KeyRegistry, TRANSITIONS, type KeyState } from '../src/index.js';
import { cleanupStorage, FakeClock, freshStorage, rawSql, STORAGE_KINDS, type RawSql } from './helpers.js';
import { seedVersion } from './seed.js';

/** Transcribed from COMPLIANCE-RULES.md part B, "States" — independently of src/states.ts. */
const ALLOWED: [KeyState, KeyState][] = [
  ['PreActivation', 'Active'],
  ['Active', 'Superseded'],
  ['Active', 'Suspended'],
  ['Active', 'Revoked'],
  ['Active', 'Compromised'],
  ['Suspended', 'Active'],
  ['Suspended', 'Superseded'],
  ['Suspended', 'Revoked'],
  ['Superseded', 'Archived'],
  ['Superseded', 'Revoked'],
  ['Superseded', 'PendingDestruction'],
  ['Archived', 'PendingDestruction'],
  ['Revoked', 'PendingDestruction'],
  ['Compromised', 'PendingDestruction'],
  ['PendingDestruction', 'Destroyed'],
  ['PendingDestruction', 'Archived'],
  ['PendingDestruction', 'Superseded'],
];
const allowed = new Set(ALLOWED.map(([a, b]) => `${a}->${b}`));
const ALL_PAIRS = KEY_STATES.flatMap((from) => KEY_STATES.map((to) => [from, to] as [KeyState, KeyState]));

describe('transition table', () => {
  it.each(ALL_PAIRS)('%s -> %s', (from, to) => {
    expect(canTransition(from, to)).toBe(allowed.has(`${from}->${to}`));
  });

  it('creation goes to PreActivation or Active only', () => {
    for (const s of KEY_STATES) expect(canTransition(null, s)).toBe(s === 'PreActivation' || s === 'Active');
  });

  it('never: Active -> Destroyed, Superseded -> Active, anything out of Destroyed, Revoked/Compromised back to usable', () => {
    expect(canTransition('Active', 'Destroyed')).toBe(false);
    expect(canTransition('Superseded', 'Active')).toBe(false);
    for (const s of KEY_STATES) expect(canTransition('Destroyed', s)).toBe(false);
    for (const from of ['Revoked', 'Compromised'] as const) {
      for (const usable of ['Active', 'Suspended', 'Superseded', 'Archived', 'PreActivation'] as const) expect(canTransition(from, usable)).toBe(false);
    }
    expect(TRANSITIONS.Destroyed).toEqual([]);
  });
});

describe.each(STORAGE_KINDS)('transitions through the registry (%s)', (kind) => {
  let registry: KeyRegistry;
  let raw: RawSql;
  const clock = new FakeClock();

  beforeAll(async () => {
    const storage = await freshStorage(kind, 'states');
    registry = await KeyRegistry.open(storage, { now: clock.now });
    raw = await rawSql(storage);
  });
  afterAll(async () => {
    await raw?.close();
    await registry?.close();
    await cleanupStorage();
  });

  it.each(ALL_PAIRS)('%s -> %s', async (from, to) => {
    const base = `st-${from}-${to}`.toLowerCase();
    const keyId = await seedVersion(raw, base, 1, from, clock.ms - 1000, { destroyAfter: clock.ms - 1 });
    const ctx = { actor: 'tester', reason: `table ${from}->${to}` };
    const extras = to === 'PendingDestruction' ? { destroyAfter: clock.ms + 30 * 86_400_000 } : {};
    if (allowed.has(`${from}->${to}`)) {
      const v = await registry.transition(keyId, to, ctx, extras);
      expect(v.state).toBe(to);
      const history = await registry.getHistory(keyId);
      expect(history.at(-1)).toMatchObject({ from, to, actor: 'tester', reason: ctx.reason });
      expect(history.at(-1)?.at.getTime()).toBe(clock.ms);
    } else {
      const error = await registry.transition(keyId, to, ctx, extras).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(HsmError);
      expect((error as HsmError).code).toBe('IllegalStateTransition');
      expect((error as HsmError).details['rotationCode']).toBe('IllegalStateTransition');
      expect((error as HsmError).message).toContain(from);
      expect((error as HsmError).message).toContain(to);
      expect((await registry.getKeyVersion(keyId)).state).toBe(from);
    }
  });

  it('refuses a change without actor or reason (LC-RECORD)', async () => {
    const keyId = await seedVersion(raw, 'st-record', 1, 'Active', clock.ms);
    for (const ctx of [{ actor: '', reason: 'x' }, { actor: 'a', reason: '  ' }, { reason: 'x' }, { actor: 'a' }, undefined]) {
      await expect(registry.transition(keyId, 'Suspended', ctx as never)).rejects.toMatchObject({ code: 'InvalidArgument', details: { rotationCode: 'MissingActorOrReason' } });
    }
    expect((await registry.getKeyVersion(keyId)).state).toBe('Active');
  });

  it('PendingDestruction -> Destroyed only after the waiting period', async () => {
    const keyId = await seedVersion(raw, 'st-wait', 1, 'PendingDestruction', clock.ms, { destroyAfter: clock.ms + 1000 });
    await expect(registry.transition(keyId, 'Destroyed', { actor: 'a', reason: 'too early' })).rejects.toMatchObject({ details: { rotationCode: 'DestructionNotDue' } });
    clock.advance(1000);
    expect((await registry.transition(keyId, 'Destroyed', { actor: 'a', reason: 'due' })).state).toBe('Destroyed');
  });

  it('Suspended -> Active is refused after the cryptoperiod ended', async () => {
    const keyId = await seedVersion(raw, 'st-cp', 1, 'Suspended', clock.ms);
    await raw.exec('update key_versions set expires_at = ? where key_id = ?', [clock.ms, keyId]);
    await expect(registry.transition(keyId, 'Active', { actor: 'a', reason: 'resume' })).rejects.toThrow(/Suspended -> Active.*cryptoperiod/);
  });

  it('Suspended -> Active is refused while another version is Active (LC-PRIMARY)', async () => {
    const v1 = await seedVersion(raw, 'st-primary', 1, 'Suspended', clock.ms);
    await seedVersion(raw, 'st-primary', 2, 'Active', clock.ms);
    await expect(registry.transition(v1, 'Active', { actor: 'a', reason: 'resume' })).rejects.toThrow(/Suspended -> Active.*st-primary\.v2 is already Active/);
  });
});
