import { describe, expect, it } from 'vitest';
import { AUDIT_EVENT_TYPES } from '../src/audit/types.js';
import { PCI_10_2, PCI_10_2_2, PCI_10_3, PCI_10_5_1, PCI_3_6_1_2, PCI_3_7_4, PCI_3_7_5, PCI_3_7_6, PCI_3_7_7 } from '../src/rules/pci-rules.js';
import { activeKey, hsmModule, keyWith, onlyPass, runRule, softwareModule, violations } from './fixtures-compliance/builders.js';
import { chain } from './fixtures-compliance/memory-audit.js';

const NOW = '2026-06-01T00:00:00Z';
const modules = [hsmModule(), softwareModule()];

describe('PCI-3.6.1.2', () => {
  it('private keys on the software backend are CRIT, from the inventory and from the audit log', async () => {
    const keys = [activeKey('sw', 'ECDSA_P256', 'software'), activeKey('hw', 'ECDSA_P256', 'pkcs11')];
    const records = chain([
      { type: 'key.generate', time: '2026-05-20T00:00:00Z', keyId: 'standalone', backend: 'software', algorithm: 'Ed25519' },
      { type: 'key.generate', time: '2026-05-20T00:00:01Z', keyId: 'gone', backend: 'software', algorithm: 'Ed25519' },
      { type: 'key.destroy', time: '2026-05-21T00:00:00Z', keyId: 'gone', backend: 'software' },
    ]);
    const f = violations(await runRule(PCI_3_6_1_2, { now: NOW, keys, modules, records }));
    expect(f.map((x) => [x.keyId, x.severity])).toEqual([
      ['sw.v1', 'CRIT'],
      ['standalone', 'CRIT'],
    ]);
  });
  it('hardware-backed keys (and destroyed software keys) pass', async () => {
    const keys = [activeKey('hw', 'ECDSA_P256', 'pkcs11'), keyWith('old', 'ECDSA_P256', 'software', [{ n: 1, path: [['Active', '2025-01-01T00:00:00Z'], ['Superseded', '2025-02-01T00:00:00Z'], ['PendingDestruction', '2025-03-01T00:00:00Z'], ['Destroyed', '2025-04-01T00:00:00Z']] }])];
    expect(onlyPass(await runRule(PCI_3_6_1_2, { now: NOW, keys, modules }))).toBe(true);
  });
});

describe('PCI-3.7.4', () => {
  it('a key type without a defined cryptoperiod, and a key used beyond it, are HIGH', async () => {
    const keys = [activeKey('rsa', 'RSA_3072', 'pkcs11', '2026-01-01T00:00:00Z'), activeKey('old', 'ECDSA_P256', 'pkcs11', '2024-01-01T00:00:00Z')];
    const f = violations(await runRule(PCI_3_7_4, { now: NOW, keys, config: { policy: { cryptoperiod: { byAlgorithm: { RSA_3072: null } } } } }));
    expect(f.map((x) => [x.severity, x.keyId ?? x.evidence?.['algorithm']])).toEqual([
      ['HIGH', 'old.v1'],
      ['HIGH', 'RSA_3072'],
    ]);
  });
  it('defined cryptoperiods respected pass', async () => {
    expect(onlyPass(await runRule(PCI_3_7_4, { now: NOW, keys: [activeKey('k', 'ECDSA_P256', 'pkcs11', '2026-01-01T00:00:00Z')] }))).toBe(true);
  });
});

describe('PCI-3.7.5', () => {
  it('no replacement at the end of the cryptoperiod or after compromise is HIGH', async () => {
    const keys = [
      activeKey('old', 'ECDSA_P256', 'pkcs11', '2024-01-01T00:00:00Z'),
      keyWith('cmp', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Compromised', '2026-05-01T00:00:00Z']] }], { rotationIntervalMs: 1 }),
    ];
    const f = violations(await runRule(PCI_3_7_5, { now: NOW, keys }));
    expect(f.map((x) => x.keyId)).toEqual(['old.v1', 'cmp.v1']);
  });
  it('replaced keys with a rotation schedule pass', async () => {
    const keys = [
      keyWith('cmp', 'ECDSA_P256', 'pkcs11', [
        { n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Compromised', '2026-05-01T00:00:00Z']] },
        { n: 2, path: [['Active', '2026-05-01T00:10:00Z']] },
      ], { rotationIntervalMs: 90 * 86_400_000 }),
    ];
    expect(onlyPass(await runRule(PCI_3_7_5, { now: NOW, keys }))).toBe(true);
  });
});

describe('PCI-3.7.6', () => {
  it('manual destroy / emergency rotation / restore without two distinct approvers is HIGH', async () => {
    const records = chain([
      { type: 'key.state', time: '2026-05-20T00:00:00Z', keyId: 'a.v1', actor: 'bob', details: { from: 'Superseded', to: 'PendingDestruction', approvers: 'bob' } },
      { type: 'key.rotate', time: '2026-05-21T00:00:00Z', keyId: 'b.v2', actor: 'bob', details: { kind: 'emergency' } },
      { type: 'admin.action', time: '2026-05-22T00:00:00Z', actor: 'bob', details: { action: 'backup.restore', approvers: 'bob,bob' } },
      // automated destruction after the waiting period is not a manual operation
      { type: 'key.destroy', time: '2026-05-23T00:00:00Z', keyId: 'c.v1', actor: 'system:retention' },
      // nor is carrying out a scheduled destruction (the scheduling was the decision)
      { type: 'key.destroy', time: '2026-05-24T00:00:00Z', keyId: 'p.v1', actor: 'svc-ops' },
      // a direct destroy of a key that was not scheduled is
      { type: 'key.destroy', time: '2026-05-25T00:00:00Z', keyId: 'q.v1', actor: 'svc-ops', details: { approvers: 'svc-ops' } },
    ]);
    const keys = [
      keyWith('p', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Superseded', '2026-02-01T00:00:00Z'], ['PendingDestruction', '2026-04-01T00:00:00Z'], ['Destroyed', '2026-05-24T00:00:00Z']] }]),
      keyWith('q', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z'], ['Superseded', '2026-02-01T00:00:00Z']] }]),
    ];
    const f = violations(await runRule(PCI_3_7_6, { now: NOW, records, keys }));
    expect(f.map((x) => [x.evidence?.['operation'], x.keyId])).toEqual([
      ['destroy', 'a.v1'],
      ['emergencyRotation', 'b.v2'],
      ['restore', '(no key)'],
      ['destroy', 'q.v1'],
    ]);
    expect(violations(await runRule(PCI_3_7_6, { now: NOW, config: { policy: { dualControl: { destroy: 1 } } } }))[0]!.message).toMatch(/requires 1 approver for key destruction/);
  });
  it('two distinct approvers pass', async () => {
    const records = chain([
      { type: 'key.state', time: '2026-05-20T00:00:00Z', keyId: 'a.v1', actor: 'bob', details: { from: 'Superseded', to: 'PendingDestruction', approvers: 'bob,carol' } },
      { type: 'key.rotate', time: '2026-05-21T00:00:00Z', keyId: 'b.v2', actor: 'bob', details: { kind: 'emergency', approvers: 'alice, dave' } },
    ]);
    expect(onlyPass(await runRule(PCI_3_7_6, { now: NOW, records }))).toBe(true);
  });
});

describe('PCI-3.7.7', () => {
  it('an import without authorisation or fingerprint is HIGH', async () => {
    const records = chain([
      { type: 'key.import', time: '2026-05-20T00:00:00Z', keyId: 'imp.v1', actor: 'bob', details: { fingerprint: 'sha256:ab' } },
      { type: 'key.import', time: '2026-05-21T00:00:00Z', keyId: 'imp.v2', actor: 'bob', details: { authorizedBy: 'carol' } },
    ]);
    const f = violations(await runRule(PCI_3_7_7, { now: NOW, records }));
    expect(f.map((x) => x.keyId)).toEqual(['imp.v1', 'imp.v2']);
    expect(f[0]!.message).toMatch(/authorisation/);
    expect(f[1]!.message).toMatch(/fingerprint/);
  });
  it('an authorised, fingerprint-checked import passes', async () => {
    const records = chain([{ type: 'key.import', time: '2026-05-20T00:00:00Z', keyId: 'imp.v1', actor: 'bob', details: { fingerprint: 'sha256:ab', fingerprintVerified: true, authorizedBy: 'carol' } }]);
    expect(onlyPass(await runRule(PCI_3_7_7, { now: NOW, records }))).toBe(true);
  });
});

describe('PCI-10.2', () => {
  it('event classes missing from the logged types are HIGH violations', async () => {
    const loggedEventTypes = AUDIT_EVENT_TYPES.filter((t) => t !== 'audit.access' && t !== 'auth.failure');
    const f = violations(await runRule(PCI_10_2, { now: NOW, config: { audit: { loggedEventTypes } } }));
    expect(f.map((x) => x.evidence?.['class'])).toEqual(['10.2.1.3', '10.2.1.4']);
  });
  it('every class logged passes; classes without events in the period are noted', async () => {
    const records = chain([{ type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'k' }]);
    const f = await runRule(PCI_10_2, { now: NOW, records });
    expect(violations(f)).toEqual([]);
    expect(f.find((x) => x.status === 'pass')!.message).toMatch(/observed in the period: key access/);
    expect(f.filter((x) => x.status === 'info')).toHaveLength(6);
  });
});

describe('PCI-10.2.2', () => {
  it('records without an identified actor, origin or key are HIGH', async () => {
    const records = chain([
      { type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'k', actor: 'unknown' },
      { type: 'key.sign', time: '2026-05-20T00:00:01Z', origin: '' },
    ]);
    const f = violations(await runRule(PCI_10_2_2, { now: NOW, records }));
    expect(f.map((x) => x.evidence?.['field'])).toEqual(['actor', 'origin', 'affected key']);
  });
  it('complete records pass', async () => {
    const records = chain([{ type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'k' }, { type: 'audit.access', time: '2026-05-20T00:00:01Z' }]);
    expect(onlyPass(await runRule(PCI_10_2_2, { now: NOW, records }))).toBe(true);
  });
});

describe('PCI-10.3', () => {
  it('a chain that fails verification, and unsigned checkpoints, are HIGH', async () => {
    const f = violations(await runRule(PCI_10_3, { now: NOW, verification: { ok: false, problem: 'edited', firstBadSeq: 7, message: 'record 7 was edited' }, settings: { checkpointsSigned: false } }));
    expect(f.map((x) => x.severity)).toEqual(['HIGH', 'HIGH']);
    expect(f[0]!.message).toMatch(/record 7 was edited/);
  });
  it('a verified chain with signed checkpoints passes', async () => {
    expect(onlyPass(await runRule(PCI_10_3, { now: NOW }))).toBe(true);
  });
});

describe('PCI-10.5.1', () => {
  it('retention under 12 months or under 3 months at hand is HIGH, and so is an early prune', async () => {
    const records = chain([{ type: 'audit.prune', time: '2026-05-20T00:00:00Z', details: { before: '2026-01-01T00:00:00.000Z' } }]);
    const f = violations(await runRule(PCI_10_5_1, { now: NOW, settings: { retentionDays: 180, hotDays: 30 }, records }));
    expect(f.map((x) => x.message.split(' ').slice(0, 3).join(' '))).toEqual(['audit retention is', 'only 30 days', 'the audit log']);
  });
  it('365/90 days pass; the thresholds are configurable', async () => {
    expect(onlyPass(await runRule(PCI_10_5_1, { now: NOW }))).toBe(true);
    expect(violations(await runRule(PCI_10_5_1, { now: NOW, config: { retention: { totalDays: 730, hotDays: 90 } } }))).toHaveLength(1);
  });
});
