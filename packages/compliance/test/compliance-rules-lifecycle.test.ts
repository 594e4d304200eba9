import { describe, expect, it } from 'vitest';
import { LC_CP_SIG, LC_DESTROY_ACTIVE, LC_EMERG, LC_PENDING, LC_PRIMARY, LC_PROCESS, LC_PROTECT, LC_RECORD } from '../src/rules/lifecycle-rules.js';
import { activeKey, keyWith, onlyPass, runRule, violations } from './fixtures-compliance/builders.js';
import { chain } from './fixtures-compliance/memory-audit.js';

const NOW = '2026-06-01T00:00:00Z';

/** payments.v1 Active from 2026-01-01, Superseded at 2026-05-10; payments.v2 Active from then. */
const rotated = () =>
  keyWith('payments', 'ECDSA_P256', 'pkcs11', [
    { n: 1, path: [['PreActivation', '2026-01-01T00:00:00Z'], ['Active', '2026-01-01T00:00:01Z'], ['Superseded', '2026-05-10T00:00:00Z']] },
    { n: 2, path: [['PreActivation', '2026-05-10T00:00:00Z'], ['Active', '2026-05-10T00:00:00Z']] },
  ]);

describe('LC-PROTECT', () => {
  it('a signature by a version after it was superseded is CRIT; one after its protect-stop date too', async () => {
    const keys = [rotated(), activeKey('exp', 'ECDSA_P256', 'pkcs11', '2026-01-01T00:00:00Z', { expiresAt: new Date('2026-05-01T00:00:00Z') })];
    const records = chain([
      { type: 'key.sign', time: '2026-05-05T00:00:00Z', keyId: 'payments.v1' },
      { type: 'key.sign', time: '2026-05-11T00:00:00Z', keyId: 'payments.v1' },
      { type: 'key.sign', time: '2026-05-12T00:00:00Z', keyId: 'payments.v1' },
      { type: 'key.sign', time: '2026-05-15T00:00:00Z', keyId: 'exp.v1' },
    ]);
    const f = violations(await runRule(LC_PROTECT, { now: NOW, keys, records }));
    expect(f.map((x) => [x.keyId, x.severity, x.evidence?.['signatures'], x.time])).toEqual([
      ['payments.v1', 'CRIT', 2, '2026-05-11T00:00:00Z'],
      ['exp.v1', 'CRIT', 1, '2026-05-15T00:00:00Z'],
    ]);
    expect(f[0]!.message).toMatch(/Superseded/);
  });
  it('signatures by the Active version pass (failed attempts are not signatures)', async () => {
    const records = chain([
      { type: 'key.sign', time: '2026-05-05T00:00:00Z', keyId: 'payments.v1' },
      { type: 'key.sign', time: '2026-05-11T00:00:00Z', keyId: 'payments.v2' },
      { type: 'key.sign', time: '2026-05-12T00:00:00Z', keyId: 'payments.v1', outcome: 'failure', errorCode: 'KeyUsageNotAllowed' },
    ]);
    expect(onlyPass(await runRule(LC_PROTECT, { now: NOW, keys: [rotated()], records }))).toBe(true);
  });
});

describe('LC-PROCESS', () => {
  it('verifying with a PreActivation version is CRIT; with a Compromised one without override HIGH', async () => {
    const keys = [
      keyWith('pre', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['PreActivation', '2026-01-01T00:00:00Z']] }]),
      keyWith('bad', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Compromised', '2026-05-01T00:00:00Z']] }]),
    ];
    const records = chain([
      { type: 'key.verify', time: '2026-05-02T00:00:00Z', keyId: 'pre.v1' },
      { type: 'key.verify', time: '2026-05-03T00:00:00Z', keyId: 'bad.v1' },
      { type: 'key.verify', time: '2026-05-04T00:00:00Z', keyId: 'bad.v1', details: { override: true, overrideBy: 'carol' } },
    ]);
    const f = await runRule(LC_PROCESS, { now: NOW, keys, records });
    expect(violations(f).map((x) => [x.keyId, x.severity])).toEqual([
      ['pre.v1', 'CRIT'],
      ['bad.v1', 'HIGH'],
    ]);
    expect(f.some((x) => x.status === 'info' && x.message.includes('audited override'))).toBe(true);
  });
  it('verifying with a Superseded version is allowed and logged', async () => {
    const records = chain([{ type: 'key.verify', time: '2026-05-20T00:00:00Z', keyId: 'payments.v1' }]);
    const f = await runRule(LC_PROCESS, { now: NOW, keys: [rotated()], records });
    expect(violations(f)).toEqual([]);
    expect(f.map((x) => x.status).sort()).toEqual(['info', 'pass']);
  });
});

describe('LC-CP-SIG', () => {
  it('an Active signing key past its 2-year cryptoperiod is HIGH; within 30 days of the end a warning', async () => {
    const keys = [activeKey('old', 'ECDSA_P256', 'pkcs11', '2024-05-01T00:00:00Z'), activeKey('soon', 'ECDSA_P256', 'pkcs11', '2024-06-20T00:00:00Z')];
    const f = await runRule(LC_CP_SIG, { now: NOW, keys });
    expect(f.map((x) => [x.keyId, x.status, x.severity])).toEqual([
      ['old.v1', 'violation', 'HIGH'],
      ['soon.v1', 'warning', 'LOW'],
    ]);
  });
  it('flags signatures made after a version\'s cryptoperiod ended', async () => {
    const keys = [keyWith('k', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2024-01-01T00:00:00Z'], ['Superseded', '2026-05-20T00:00:00Z']] }])];
    const records = chain([{ type: 'key.sign', time: '2026-05-10T00:00:00Z', keyId: 'k.v1' }]);
    const f = violations(await runRule(LC_CP_SIG, { now: NOW, keys, records }));
    expect(f.map((x) => x.keyId)).toEqual(['k.v1']);
  });
  it('passes for a young key, and the cryptoperiod is configurable', async () => {
    const keys = [activeKey('young', 'ECDSA_P256', 'pkcs11', '2026-01-01T00:00:00Z')];
    expect(onlyPass(await runRule(LC_CP_SIG, { now: NOW, keys }))).toBe(true);
    expect(violations(await runRule(LC_CP_SIG, { now: NOW, keys, config: { policy: { cryptoperiod: { signingDays: 90 } } } }))).toHaveLength(1);
  });
});

describe('LC-DESTROY-ACTIVE', () => {
  it('a destroy carried out on an Active key is CRIT; a refused one is only noted', async () => {
    const keys = [activeKey('a', 'ECDSA_P256'), activeKey('b', 'ECDSA_P256')];
    const records = chain([
      { type: 'key.destroy', time: '2026-05-20T00:00:00Z', keyId: 'a.v1', actor: 'mallory' },
      { type: 'key.destroy', time: '2026-05-21T00:00:00Z', keyId: 'b.v1', outcome: 'failure', errorCode: 'IllegalStateTransition' },
    ]);
    const f = await runRule(LC_DESTROY_ACTIVE, { now: NOW, keys, records });
    expect(violations(f).map((x) => [x.keyId, x.severity])).toEqual([['a.v1', 'CRIT']]);
    expect(f.some((x) => x.status === 'info' && /refused/.test(x.message))).toBe(true);
  });
  it('a registry history with Active → Destroyed in the period is CRIT', async () => {
    const keys = [keyWith('h', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Destroyed', '2026-05-15T00:00:00Z']] }])];
    expect(violations(await runRule(LC_DESTROY_ACTIVE, { now: NOW, keys })).map((x) => x.keyId)).toEqual(['h.v1']);
  });
  it('destroying a superseded key passes', async () => {
    const records = chain([{ type: 'key.destroy', time: '2026-05-20T00:00:00Z', keyId: 'payments.v1', actor: 'system:retention' }]);
    expect(onlyPass(await runRule(LC_DESTROY_ACTIVE, { now: NOW, keys: [rotated()], records }))).toBe(true);
  });
});

describe('LC-PENDING', () => {
  it('a policy waiting period under 7 days, no cancel, and a key destroyed early are MED violations', async () => {
    const keys = [
      keyWith('x', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Superseded', '2026-04-01T00:00:00Z'], ['PendingDestruction', '2026-05-01T00:00:00Z'], ['Destroyed', '2026-05-03T00:00:00Z']] }]),
    ];
    const f = violations(await runRule(LC_PENDING, { now: NOW, keys, config: { policy: { destruction: { waitingDays: 3, cancellable: false } } } }));
    expect(f.map((x) => [x.severity, x.keyId])).toEqual([
      ['MED', undefined],
      ['MED', undefined],
      ['MED', 'x.v1'],
    ]);
    expect(f[0]!.message).toMatch(/3 days, under the minimum of 7/);
    expect(f[1]!.message).toMatch(/cannot be cancelled/);
    const withDefaultPolicy = violations(await runRule(LC_PENDING, { now: NOW, keys }));
    expect(withDefaultPolicy.map((x) => x.keyId)).toEqual(['x.v1']);
    expect(withDefaultPolicy[0]!.message).toMatch(/before the policy's 30 days/);
  });
  it('a 30-day, cancellable wait respected by every destruction passes', async () => {
    const keys = [
      keyWith('x', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Superseded', '2026-03-01T00:00:00Z'], ['PendingDestruction', '2026-04-01T00:00:00Z'], ['Destroyed', '2026-05-01T00:00:00Z']] }]),
      keyWith('y', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Superseded', '2026-03-01T00:00:00Z'], ['PendingDestruction', '2026-05-20T00:00:00Z']], extra: { destroyAfter: new Date('2026-06-19T00:00:00Z') } }]),
    ];
    expect(onlyPass(await runRule(LC_PENDING, { now: NOW, keys }))).toBe(true);
  });
});

describe('LC-EMERG', () => {
  const compromised = (successorAt?: string) =>
    keyWith('tok', 'Ed25519', 'pkcs11', [
      { n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Compromised', '2026-05-10T00:00:00Z']] },
      ...(successorAt ? [{ n: 2, path: [['Active', successorAt]] as [import('../src/rules/index.js').KeyLifecycleState, string][] }] : []),
    ]);
  it('no successor after 24 h is HIGH; a successor after 30 h is late (HIGH); within 24 h it is a warning only', async () => {
    expect(violations(await runRule(LC_EMERG, { now: NOW, keys: [compromised()] })).map((x) => x.severity)).toEqual(['HIGH']);
    expect(violations(await runRule(LC_EMERG, { now: NOW, keys: [compromised('2026-05-11T06:00:00Z')] }))[0]!.message).toMatch(/only at/);
    expect((await runRule(LC_EMERG, { now: '2026-05-10T12:00:00Z', keys: [compromised()] })).map((x) => x.status)).toEqual(['warning']);
  });
  it('a successor within 24 h passes; the limit is configurable', async () => {
    expect(onlyPass(await runRule(LC_EMERG, { now: NOW, keys: [compromised('2026-05-10T00:30:00Z')] }))).toBe(true);
    expect(violations(await runRule(LC_EMERG, { now: NOW, keys: [compromised('2026-05-10T00:30:00Z')], config: { policy: { emergencySuccessorHours: 0.25 } } }))).toHaveLength(1);
  });
});

describe('LC-PRIMARY', () => {
  it('two Active versions now, or overlapping Active windows in the period, are HIGH', async () => {
    const two = keyWith('dup', 'ECDSA_P256', 'pkcs11', [
      { n: 1, path: [['Active', '2026-01-01T00:00:00Z']] },
      { n: 2, path: [['Active', '2026-05-01T00:00:00Z']] },
    ]);
    const overlapped = keyWith('ovl', 'ECDSA_P256', 'pkcs11', [
      { n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Superseded', '2026-05-12T00:00:00Z']] },
      { n: 2, path: [['Active', '2026-05-10T00:00:00Z']] },
    ]);
    const f = violations(await runRule(LC_PRIMARY, { now: NOW, keys: [two, overlapped] }));
    expect(f.map((x) => [x.keyId, x.severity])).toEqual([
      ['dup', 'HIGH'],
      ['ovl', 'HIGH'],
    ]);
    expect(f[1]!.time).toBe('2026-05-10T00:00:00.000Z');
  });
  it('a clean rotation passes', async () => {
    expect(onlyPass(await runRule(LC_PRIMARY, { now: NOW, keys: [rotated()] }))).toBe(true);
  });
});

describe('LC-RECORD', () => {
  it('history entries without actor or reason, and a state changed without a record, are HIGH', async () => {
    const noActor = keyWith('na', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Suspended', '2026-05-01T00:00:00Z']], historyOverride: { 1: { actor: '', reason: '' } } }]);
    const drift = keyWith('dr', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z']], extra: { state: 'Suspended' } }]);
    const records = chain([{ type: 'key.state', time: '2026-05-20T00:00:00Z', keyId: 'na.v1', actor: 'unknown', details: { from: 'Suspended', to: 'Active' } }]);
    const f = violations(await runRule(LC_RECORD, { now: NOW, keys: [noActor, drift], records }));
    expect(f.map((x) => x.keyId)).toEqual(['na.v1', 'dr.v1', 'na.v1']);
    expect(f[0]!.evidence).toMatchObject({ missingActor: 1, missingReason: 1, missingTime: 0 });
    expect(f.every((x) => x.severity === 'HIGH')).toBe(true);
  });
  it('complete records pass', async () => {
    const records = chain([{ type: 'key.state', time: '2026-05-20T00:00:00Z', keyId: 'payments.v1', reason: 'rotation', details: { from: 'Active', to: 'Superseded' } }]);
    expect(onlyPass(await runRule(LC_RECORD, { now: NOW, keys: [rotated()], records }))).toBe(true);
  });
});
