import { describe, expect, it } from 'vitest';
import { eventToRecords } from '../src/audit/index.js';
import { LC_CP_SIG, LC_PROTECT } from '../src/rules/lifecycle-rules.js';
import { keyWith, onlyPass, runRule, violations } from './fixtures-compliance/builders.js';
import { chain } from './fixtures-compliance/memory-audit.js';

/**
 * Issue 18 item 9: a signature made through a logical key is dated by the moment the registry
 * confirmed its version Active (OperationEvent.signedAt), and the rules judge it by that — not by
 * the record's append time, which a concurrent rotation can overtake.
 */
const NOW = '2026-06-01T00:00:00Z';
// v1 Active until 2026-05-10T00:00:00.000Z, then Superseded by v2
const rotated = () =>
  keyWith('payments', 'ECDSA_P256', 'pkcs11', [
    { n: 1, path: [['PreActivation', '2026-01-01T00:00:00Z'], ['Active', '2026-01-01T00:00:01Z'], ['Superseded', '2026-05-10T00:00:00Z']] },
    { n: 2, path: [['PreActivation', '2026-05-10T00:00:00Z'], ['Active', '2026-05-10T00:00:00Z']] },
  ]);

describe('signedAt in key.sign records', () => {
  it('the auditor records OperationEvent.signedAt of a logical-key sign as details.signedAt', () => {
    const signedAt = new Date('2026-05-09T23:59:59.900Z');
    const [r] = eventToRecords({ operation: 'sign', backend: 'software', keyId: 'payments.v1', outcome: 'success', latencyMs: 1, logicalKey: { baseKeyId: 'payments', version: 1 }, signedAt }, 'svc');
    expect(r!.details?.['signedAt']).toBe('2026-05-09T23:59:59.900Z');
    const [plain] = eventToRecords({ operation: 'sign', backend: 'software', keyId: 'k', outcome: 'success', latencyMs: 1 }, 'svc');
    expect(plain!.details?.['signedAt']).toBeUndefined();
  });

  it('a version deactivated between signedAt and the record time raises no LC-PROTECT finding', async () => {
    const records = chain([
      // confirmed Active 100 ms before the rotation, appended 50 ms after it
      { type: 'key.sign', time: '2026-05-10T00:00:00.050Z', keyId: 'payments.v1', baseKeyId: 'payments', keyVersion: 1, details: { operation: 'sign', signedAt: '2026-05-09T23:59:59.900Z' } },
    ]);
    const f = await runRule(LC_PROTECT, { now: NOW, keys: [rotated()], records });
    expect(violations(f)).toEqual([]);
    expect(onlyPass(f)).toBe(true);
  });

  it('without signedAt (or with one later than the record) the same record is still judged by its time: CRIT', async () => {
    const records = chain([
      { type: 'key.sign', time: '2026-05-10T00:00:00.050Z', keyId: 'payments.v1', details: { operation: 'sign' } },
      { type: 'key.sign', time: '2026-05-10T00:00:00.060Z', keyId: 'payments.v1', details: { operation: 'sign', signedAt: '2026-05-11T00:00:00Z' } },
    ]);
    const f = violations(await runRule(LC_PROTECT, { now: NOW, keys: [rotated()], records }));
    expect(f.map((x) => [x.keyId, x.severity, x.evidence?.['signatures']])).toEqual([['payments.v1', 'CRIT', 2]]);
  });

  it('LC-CP-SIG judges a signature at the end of the cryptoperiod by signedAt too', async () => {
    const key = keyWith('short', 'ECDSA_P256', 'pkcs11', [{ n: 1, path: [['Active', '2026-01-01T00:00:00Z']] }]);
    const config = { policy: { cryptoperiod: { signingDays: 140 } } };
    const end = Date.parse('2026-01-01T00:00:00Z') + 140 * 86_400_000;
    const records = chain([
      { type: 'key.sign', time: new Date(end + 40).toISOString(), keyId: 'short.v1', details: { operation: 'sign', signedAt: new Date(end - 10).toISOString() } },
    ]);
    const f = await runRule(LC_CP_SIG, { now: NOW, keys: [key], records, config });
    expect(violations(f).filter((x) => /after its cryptoperiod/.test(x.message))).toEqual([]);
    const late = chain([{ type: 'key.sign', time: new Date(end + 40).toISOString(), keyId: 'short.v1', details: { operation: 'sign' } }]);
    expect(violations(await runRule(LC_CP_SIG, { now: NOW, keys: [key], records: late, config })).some((x) => /after its cryptoperiod/.test(x.message))).toBe(true);
  });
});
