import { describe, expect, it } from 'vitest';
import { FAU_GEN, FCS_CKM_1, FCS_CKM_4, FCS_COP_1 } from '../src/rules/cc-rules.js';
import { NIST_AU_10, NIST_AU_11, NIST_AU_5, NIST_AU_9, NIST_SC_12, NIST_SC_13, SOC2_CC6_1 } from '../src/rules/nist-rules.js';
import { activeKey, hsmModule, keyWith, onlyPass, runRule, softwareModule, violations } from './fixtures-compliance/builders.js';
import { chain } from './fixtures-compliance/memory-audit.js';

const NOW = '2026-06-01T00:00:00Z';
const documented = { keyManagementRules: { generation: 'KMP-1 §2', storage: 'KMP-1 §3', access: 'KMP-1 §4', destruction: 'KMP-1 §5' }, backup: { exists: true, kekAlgorithm: 'AES-256' } };

describe('SOC2-CC6.1', () => {
  it('missing evidence per phase is MED (generation unrecorded, storage undescribed, use unverifiable)', async () => {
    const unrecorded = keyWith('u', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z']] }]);
    unrecorded.history = unrecorded.history.filter((h) => h.from !== null);
    const keys = [unrecorded, activeKey('x', 'ECDSA_P256', 'cloud')];
    const f = violations(await runRule(SOC2_CC6_1, { now: NOW, keys, verification: { ok: false, message: 'record 3 was edited' } }));
    expect(f.map((x) => x.evidence?.['phase'])).toEqual(['generation', 'storage', 'use']);
    expect(f.every((x) => x.severity === 'MED')).toBe(true);
  });
  it('evidence for every phase passes', async () => {
    const f = await runRule(SOC2_CC6_1, { now: NOW, keys: [activeKey('k', 'ECDSA_P256')] });
    expect(onlyPass(f)).toBe(true);
    expect(f[0]!.message).toMatch(/generation recorded.*storage described.*use logged.*destruction after a 30-day/);
  });
});

describe('NIST-SC-12', () => {
  it('undocumented key-management rules and no backup are HIGH', async () => {
    const f = violations(await runRule(NIST_SC_12, { now: NOW, config: { policy: { keyManagementRules: { generation: 'KMP-1 §2' }, backup: { exists: false } } } }));
    expect(f.map((x) => x.evidence?.['area'] ?? 'backup')).toEqual(['storage', 'access', 'destruction', 'backup']);
  });
  it('documented rules and backups pass', async () => {
    expect(onlyPass(await runRule(NIST_SC_12, { now: NOW, config: { policy: documented } }))).toBe(true);
  });
});

describe('NIST-SC-13', () => {
  it('keys in a module that is not FIPS-validated are HIGH', async () => {
    const f = violations(await runRule(NIST_SC_13, { now: NOW, keys: [activeKey('s', 'ECDSA_P256', 'software')], modules: [softwareModule()] }));
    expect(f.map((x) => [x.keyId, x.severity])).toEqual([['software', 'HIGH']]);
  });
  it('validated modules pass; not applicable when the policy does not require one', async () => {
    expect(onlyPass(await runRule(NIST_SC_13, { now: NOW, keys: [activeKey('h', 'ECDSA_P256')], modules: [hsmModule()] }))).toBe(true);
    expect((await runRule(NIST_SC_13, { now: NOW, modules: [softwareModule()], config: { policy: { requireValidatedModule: false } } })).map((x) => x.status)).toEqual(['not-applicable']);
  });
});

describe('NIST-AU-9', () => {
  it('a broken chain, unsigned checkpoints and no tamper alert are HIGH', async () => {
    const f = violations(await runRule(NIST_AU_9, { now: NOW, verification: { ok: false, problem: 'deleted', message: 'record 4 was deleted' }, settings: { checkpointsSigned: false, alertsConfigured: false } }));
    expect(f).toHaveLength(3);
  });
  it('passes when the chain verifies, checkpoints are signed and alerts configured', async () => {
    expect(onlyPass(await runRule(NIST_AU_9, { now: NOW }))).toBe(true);
  });
});

describe('NIST-AU-10', () => {
  it('actions by "unknown" or an empty actor are MED', async () => {
    const records = chain([
      { type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'k', actor: 'unknown' },
      { type: 'key.sign', time: '2026-05-20T00:00:01Z', keyId: 'k', actor: 'unknown' },
      { type: 'config.change', time: '2026-05-20T00:00:02Z', actor: '' },
    ]);
    const f = violations(await runRule(NIST_AU_10, { now: NOW, records }));
    expect(f.map((x) => [x.evidence?.['actor'], x.evidence?.['records'], x.severity])).toEqual([
      ['unknown', 2, 'MED'],
      ['(empty)', 1, 'MED'],
    ]);
  });
  it('named actors pass', async () => {
    expect(onlyPass(await runRule(NIST_AU_10, { now: NOW, records: chain([{ type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'k', actor: 'svc-payments' }]) }))).toBe(true);
  });
});

describe('NIST-AU-11', () => {
  it('retention under the configured period is HIGH', async () => {
    expect(violations(await runRule(NIST_AU_11, { now: NOW, settings: { retentionDays: 200 } })).map((x) => x.severity)).toEqual(['HIGH']);
  });
  it('passes at 365 days', async () => {
    expect(onlyPass(await runRule(NIST_AU_11, { now: NOW }))).toBe(true);
  });
});

describe('NIST-AU-5', () => {
  it('neither fail-closed nor an alert is HIGH; one of them missing is a warning', async () => {
    expect(violations(await runRule(NIST_AU_5, { now: NOW, settings: { failClosed: false, alertsConfigured: false } })).map((x) => x.severity)).toEqual(['HIGH']);
    expect((await runRule(NIST_AU_5, { now: NOW, settings: { alertsConfigured: false } })).map((x) => x.status)).toEqual(['warning']);
  });
  it('fail-closed with alerts passes', async () => {
    expect(onlyPass(await runRule(NIST_AU_5, { now: NOW }))).toBe(true);
  });
});

describe('FCS_CKM.1', () => {
  it('a key whose algorithm names no recognised size and standard is a violation', async () => {
    const f = violations(await runRule(FCS_CKM_1, { now: NOW, keys: [activeKey('odd', 'VENDOR_SECRET_ALG')], records: chain([{ type: 'key.generate', time: '2026-05-20T00:00:00Z', keyId: 'g' }]) }));
    expect(f.map((x) => x.keyId)).toEqual(['odd.v1', 'g']);
  });
  it('library algorithms pass', async () => {
    expect(onlyPass(await runRule(FCS_CKM_1, { now: NOW, keys: [activeKey('k', 'RSA_PSS_3072')], records: chain([{ type: 'key.generate', time: '2026-05-20T00:00:00Z', keyId: 'k.v1', algorithm: 'RSA_PSS_3072' }]) }))).toBe(true);
  });
});

describe('FCS_CKM.4', () => {
  it('a backend without a named destruction method is a violation', async () => {
    expect(violations(await runRule(FCS_CKM_4, { now: NOW, keys: [activeKey('k', 'ECDSA_P256', 'aws-kms')] })).map((x) => x.keyId)).toEqual(['aws-kms']);
  });
  it('named methods (defaults for software and pkcs11, config for others) pass', async () => {
    const keys = [activeKey('a', 'ECDSA_P256', 'pkcs11'), activeKey('b', 'ECDSA_P256', 'software'), activeKey('c', 'ECDSA_P256', 'aws-kms')];
    expect(onlyPass(await runRule(FCS_CKM_4, { now: NOW, keys, config: { policy: { destruction: { methods: { 'aws-kms': 'ScheduleKeyDeletion (7–30 days)' } } } } }))).toBe(true);
  });
});

describe('FCS_COP.1', () => {
  it('signatures recorded without an algorithm are a violation', async () => {
    const f = violations(await runRule(FCS_COP_1, { now: NOW, records: chain([{ type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'k' }]) }));
    expect(f.map((x) => x.keyId)).toEqual(['k']);
  });
  it('named algorithms pass', async () => {
    expect(onlyPass(await runRule(FCS_COP_1, { now: NOW, records: chain([{ type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'k', algorithm: 'ECDSA_P256' }]) }))).toBe(true);
  });
});

describe('FAU_GEN', () => {
  it('secret values in details (HIGH) and management records without a key (MED) are violations', async () => {
    const records = chain([
      { type: 'config.change', time: '2026-05-20T00:00:00Z', details: { pinCode: '1234' } },
      { type: 'key.rotate', time: '2026-05-20T00:00:01Z' },
      { type: 'config.change', time: '2026-05-20T00:00:02Z', details: { masterKey: 'c2VjcmV0LWJ5dGVz' } },
    ]);
    const f = violations(await runRule(FAU_GEN, { now: NOW, records }));
    expect(f.map((x) => x.severity)).toEqual(['HIGH', 'MED']);
    expect(f[0]!.message).not.toContain('1234');
    expect(f[0]!.message).toContain('2 config.change records');
    expect(f[0]!.message).not.toContain('c2VjcmV0LWJ5dGVz');
  });
  it('key attributes without secrets pass (digests are not secrets)', async () => {
    const records = chain([
      { type: 'key.generate', time: '2026-05-20T00:00:00Z', keyId: 'k.v1', algorithm: 'ECDSA_P256' },
      { type: 'key.generate', time: '2026-05-20T00:00:01Z', keyId: 'k.v2', algorithm: 'ECDSA_P256', outcome: 'failure', errorCode: 'KeyGenerationFailed' },
      { type: 'auth.credential-change', time: '2026-05-20T00:00:02Z', details: { tokenKey: 'sha256:00ff' } },
    ]);
    const f = await runRule(FAU_GEN, { now: NOW, records });
    expect(onlyPass(f)).toBe(true);
    expect(f[0]!.message).toMatch(/1 successes, 1 failures/);
  });
});
