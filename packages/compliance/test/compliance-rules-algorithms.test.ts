import { describe, expect, it } from 'vitest';
import { ALG_112, ALG_CURVE, ALG_EDDSA, ALG_KEK, ALG_PAD, ALG_PQ, ALG_RSA_MIN, ALG_SHA1, MOD_140_2, MOD_LEVEL, MOD_STATUS } from '../src/rules/algorithm-rules.js';
import { algorithmFacts } from '../src/rules/index.js';
import { activeKey, hsmModule, keyWith, onlyPass, runRule, softwareModule, violations } from './fixtures-compliance/builders.js';
import { chain } from './fixtures-compliance/memory-audit.js';

const NOW = '2026-06-01T00:00:00Z';

describe('algorithm facts', () => {
  it('reads core algorithms and foreign names', () => {
    expect(algorithmFacts('RSA_2048')).toMatchObject({ family: 'RSA', modulusBits: 2048, securityBits: 112, padding: 'PKCS1v15' });
    expect(algorithmFacts('ECDSA_P384')).toMatchObject({ family: 'ECDSA', curve: 'P-384', securityBits: 192 });
    expect(algorithmFacts('RSA-1024-SHA1')).toMatchObject({ family: 'RSA', modulusBits: 1024, hash: 'SHA-1', securityBits: 80 });
    expect(algorithmFacts('ECDSA_secp256k1')).toMatchObject({ family: 'ECDSA', curve: 'secp256k1' });
    expect(algorithmFacts('ES256K').curve).toBe('secp256k1');
    expect(algorithmFacts('ECDSA_P224')).toMatchObject({ curve: 'P-224', securityBits: 112 });
    expect(algorithmFacts('ECDSA_P521').securityBits).toBe(256);
    expect(algorithmFacts('ML-DSA-65')).toMatchObject({ family: 'ML-DSA', quantumVulnerable: false, securityBits: 192 });
    expect(algorithmFacts('AES-256')).toMatchObject({ family: 'AES', securityBits: 256 });
    expect(algorithmFacts('frobnicate').family).toBe('unknown');
  });
});

describe('ALG-RSA-MIN', () => {
  it('triggers (CRIT) for a signing RSA-1024 key and for RSA-1024 signatures in the audit log', async () => {
    const keys = [activeKey('old', 'RSA_1024')];
    const records = chain([{ type: 'key.sign', time: '2026-05-20T10:00:00Z', keyId: 'ext-1', algorithm: 'RSA-1024' }]);
    const f = violations(await runRule(ALG_RSA_MIN, { now: NOW, keys, records }));
    expect(f.map((x) => [x.keyId, x.severity])).toEqual([
      ['old.v1', 'CRIT'],
      ['ext-1', 'CRIT'],
    ]);
  });
  it('does not trigger for RSA-2048/3072, nor for a superseded RSA-1024 version that only verifies', async () => {
    const keys = [activeKey('ok', 'RSA_3072'), keyWith('legacy', 'RSA_1024', 'pkcs11', [{ n: 1, path: [['Active', '2025-01-01T00:00:00Z'], ['Superseded', '2025-06-01T00:00:00Z']] }])];
    expect(onlyPass(await runRule(ALG_RSA_MIN, { now: NOW, keys }))).toBe(true);
  });
  it('uses the configured minimum', async () => {
    const keys = [activeKey('k', 'RSA_2048')];
    expect(violations(await runRule(ALG_RSA_MIN, { now: NOW, keys, config: { algorithms: { rsaMinBits: 3072 } } }))).toHaveLength(1);
  });
});

describe('ALG-112', () => {
  const keys = [activeKey('rsa', 'RSA_2048'), activeKey('p256', 'ECDSA_P256')];
  it('is INFO on 2030-12-31T23:59:59Z', async () => {
    const f = await runRule(ALG_112, { now: '2030-12-31T23:59:59Z', keys });
    expect(f.map((x) => [x.status, x.severity, x.keyId])).toEqual([['info', 'INFO', 'rsa.v1']]);
  });
  it('is a HIGH violation on 2031-01-01T00:00:00Z', async () => {
    const f = await runRule(ALG_112, { now: '2031-01-01T00:00:00Z', keys });
    expect(f.map((x) => [x.status, x.severity, x.keyId])).toEqual([['violation', 'HIGH', 'rsa.v1']]);
    expect(ALG_112.severityAt!(new Date('2031-01-01T00:00:00Z'), (await import('../src/rules/index.js')).resolveComplianceConfig())).toBe('HIGH');
  });
  it('flags 112-bit signatures made after the date', async () => {
    const records = chain([{ type: 'key.sign', time: '2031-01-02T00:00:00Z', keyId: 'x', algorithm: 'ECDSA_P224' }]);
    const f = violations(await runRule(ALG_112, { now: '2031-01-03T00:00:00Z', records }));
    expect(f.map((x) => x.keyId)).toEqual(['x']);
  });
  it('does not trigger for 128-bit keys', async () => {
    expect(onlyPass(await runRule(ALG_112, { now: '2031-06-01T00:00:00Z', keys: [activeKey('p256', 'ECDSA_P256')] }))).toBe(true);
  });
});

describe('ALG-PQ', () => {
  const keys = [activeKey('p256', 'ECDSA_P256'), activeKey('rsa', 'RSA_2048')];
  it('is an INFO migration note before 2031', async () => {
    const f = await runRule(ALG_PQ, { now: NOW, keys });
    expect(f.every((x) => x.status === 'info' && x.severity === 'INFO')).toBe(true);
    expect(f[0]!.remediation).toMatch(/ML-DSA/);
  });
  it('makes 112-bit keys HIGH after 2030 and everything CRIT after 2035', async () => {
    const f2031 = await runRule(ALG_PQ, { now: '2031-02-01T00:00:00Z', keys });
    expect(Object.fromEntries(f2031.map((x) => [x.keyId, x.severity]))).toEqual({ 'p256.v1': 'INFO', 'rsa.v1': 'HIGH' });
    const f2036 = await runRule(ALG_PQ, { now: '2036-01-01T00:00:00Z', keys });
    expect(f2036.map((x) => x.severity)).toEqual(['CRIT', 'CRIT']);
  });
  it('does not trigger for ML-DSA keys', async () => {
    expect(onlyPass(await runRule(ALG_PQ, { now: '2036-01-01T00:00:00Z', keys: [activeKey('pq', 'ML-DSA-65')] }))).toBe(true);
  });
});

describe('ALG-CURVE', () => {
  it('triggers for secp256k1 in the inventory and an unknown curve string in the audit log', async () => {
    const keys = [activeKey('btc', 'ECDSA_secp256k1')];
    const records = chain([{ type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'other', algorithm: 'ECDSA_brainpoolP256r1' }]);
    const f = violations(await runRule(ALG_CURVE, { now: NOW, keys, records }));
    expect(f.map((x) => [x.keyId, x.severity])).toEqual([
      ['btc.v1', 'HIGH'],
      ['other', 'HIGH'],
    ]);
  });
  it('does not trigger for the NIST curves', async () => {
    const records = chain([{ type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'k', algorithm: 'ECDSA_P384' }]);
    expect(onlyPass(await runRule(ALG_CURVE, { now: NOW, keys: [activeKey('p', 'ECDSA_P256')], records }))).toBe(true);
  });
});

describe('ALG-EDDSA', () => {
  const keys = [activeKey('ed', 'Ed25519')];
  it('is INFO when the module certificate lists no EdDSA', async () => {
    const f = await runRule(ALG_EDDSA, { now: NOW, keys, modules: [hsmModule('pkcs11', { eddsaValidated: false })] });
    expect(f.map((x) => [x.status, x.severity])).toEqual([['info', 'INFO']]);
    expect(f[0]!.message).toMatch(/no EdDSA/);
  });
  it('passes when the certificate lists EdDSA', async () => {
    expect(onlyPass(await runRule(ALG_EDDSA, { now: NOW, keys, modules: [hsmModule('pkcs11', { eddsaValidated: true })] }))).toBe(true);
  });
});

describe('ALG-SHA1', () => {
  it('is CRIT for SHA-1 signature generation and LOW for verifying SHA-1 signatures', async () => {
    const records = chain([
      { type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'a', algorithm: 'sha1WithRSAEncryption' },
      { type: 'key.verify', time: '2026-05-20T01:00:00Z', keyId: 'b', algorithm: 'RSA_2048', details: { hash: 'SHA-1' } },
    ]);
    const f = violations(await runRule(ALG_SHA1, { now: NOW, records }));
    expect(f.map((x) => [x.keyId, x.severity])).toEqual([
      ['a', 'CRIT'],
      ['b', 'LOW'],
    ]);
  });
  it('does not trigger for SHA-256 (and a refused SHA-1 attempt is not a signature)', async () => {
    const records = chain([
      { type: 'key.sign', time: '2026-05-20T00:00:00Z', keyId: 'a', algorithm: 'ECDSA_P256' },
      { type: 'key.sign', time: '2026-05-20T00:00:01Z', keyId: 'a', algorithm: 'RSA-SHA1', outcome: 'failure', errorCode: 'UnsupportedAlgorithm' },
    ]);
    expect(onlyPass(await runRule(ALG_SHA1, { now: NOW, records }))).toBe(true);
  });
});

describe('ALG-PAD', () => {
  it('suggests PSS for PKCS#1 v1.5 keys (INFO)', async () => {
    const f = await runRule(ALG_PAD, { now: NOW, keys: [activeKey('r', 'RSA_3072')] });
    expect(f.map((x) => [x.status, x.keyId])).toEqual([['info', 'r.v1']]);
    expect(f[0]!.remediation).toMatch(/RSA_PSS_3072/);
  });
  it('does not trigger for PSS keys', async () => {
    expect(onlyPass(await runRule(ALG_PAD, { now: NOW, keys: [activeKey('r', 'RSA_PSS_3072')] }))).toBe(true);
  });
});

describe('ALG-KEK', () => {
  const keys = [activeKey('p384', 'ECDSA_P384'), activeKey('p256', 'ECDSA_P256')];
  it('triggers when the wrapping key is weaker than a backed-up key', async () => {
    const f = violations(await runRule(ALG_KEK, { now: NOW, keys, config: { policy: { backup: { exists: true, kekAlgorithm: 'AES-128' } } } }));
    expect(f.map((x) => [x.keyId, x.severity])).toEqual([['p384.v1', 'HIGH']]);
  });
  it('passes with AES-256, and is not applicable without backup facts', async () => {
    expect(onlyPass(await runRule(ALG_KEK, { now: NOW, keys, config: { policy: { backup: { exists: true, kekAlgorithm: 'AES-256' } } } }))).toBe(true);
    expect((await runRule(ALG_KEK, { now: NOW, keys })).map((x) => x.status)).toEqual(['not-applicable']);
  });
});

describe('MOD-140-2', () => {
  const modules = [hsmModule('pkcs11', { standard: 'FIPS 140-2', certificate: '3000' })];
  it('is MED on 2026-09-20 and HIGH on 2026-09-22', async () => {
    expect((await runRule(MOD_140_2, { now: '2026-09-20T12:00:00Z', modules })).map((x) => [x.status, x.severity])).toEqual([['violation', 'MED']]);
    expect((await runRule(MOD_140_2, { now: '2026-09-22T12:00:00Z', modules })).map((x) => [x.status, x.severity])).toEqual([['violation', 'HIGH']]);
  });
  it('does not trigger for a FIPS 140-3 module', async () => {
    expect(onlyPass(await runRule(MOD_140_2, { now: '2026-09-22T12:00:00Z', modules: [hsmModule()] }))).toBe(true);
  });
});

describe('MOD-STATUS', () => {
  it('triggers for a module outside approved mode and for a historical certificate', async () => {
    const f = violations(await runRule(MOD_STATUS, { now: NOW, modules: [hsmModule('a', { approvedMode: false }), hsmModule('b', { certificateStatus: 'historical' })] }));
    expect(f.map((x) => [x.keyId, x.severity])).toEqual([
      ['a', 'HIGH'],
      ['b', 'HIGH'],
    ]);
  });
  it('passes for an approved module with an active certificate', async () => {
    expect(onlyPass(await runRule(MOD_STATUS, { now: NOW, modules: [hsmModule()] }))).toBe(true);
  });
});

describe('MOD-LEVEL (the FIPS frameworks\' level option)', () => {
  it('a module below the required level, or not validated, is a violation', async () => {
    const f = violations(await runRule(MOD_LEVEL, { now: NOW, level: 3, modules: [hsmModule('l2', { level: 2 }), softwareModule()] }));
    expect(f.map((x) => x.keyId)).toEqual(['l2', 'software']);
  });
  it('passes at or above the level', async () => {
    expect(onlyPass(await runRule(MOD_LEVEL, { now: NOW, level: 3, modules: [hsmModule('l3', { level: 3 }), hsmModule('l4', { level: 4 })] }))).toBe(true);
  });
});
