import { describe, expect, it } from 'vitest';
import { HsmError, type FipsStatus, type Capabilities } from '@olocus/hsm-core';
import { MemoryBackend } from '@olocus/hsm-core/testing';
import { HsmPool, TokenBuckets, parseKeyPolicy, selectMembersForPolicy, validatePolicy } from '../src/index.js';

class Described extends MemoryBackend {
  constructor(private readonly fips: Partial<FipsStatus>, private readonly caps: Partial<Capabilities>) {
    super();
  }
  override async fipsStatus(): Promise<FipsStatus> {
    return { ...(await super.fipsStatus()), ...this.fips };
  }
  override async capabilities(): Promise<Capabilities> {
    return { ...(await super.capabilities()), ...this.caps };
  }
}

describe('KeyPolicy', () => {
  it('parses with defaults and refuses bad fields by name', () => {
    const p = parseKeyPolicy({ algorithm: 'ECDSA_P256' });
    expect(p).toMatchObject({ allowedAlgorithms: ['ECDSA_P256'], allowedOperations: ['sign', 'verify', 'export-public'], minFipsLevel: 0, replicas: 1 });
    expect(() => parseKeyPolicy({ algorithm: 'DES' })).toThrow(/policy.algorithm/);
    expect(() => parseKeyPolicy({ algorithm: 'Ed25519', allowedAlgorithms: ['ECDSA_P256'] })).toThrow(/policy.algorithm: Ed25519 is not in allowedAlgorithms/);
    expect(() => parseKeyPolicy({ algorithm: 'Ed25519', rotationInterval: 'soon' })).toThrow(/policy.rotationInterval/);
    expect(() => parseKeyPolicy({ algorithm: 'Ed25519', dualControl: { approvers: ['a', 'a'], required: 2 } })).toThrow(/policy.dualControl.required/);
    expect(() => parseKeyPolicy({ algorithm: 'Ed25519', backupRequired: true })).toThrow(/policy.allowedOperations/);
    expect(() => parseKeyPolicy({ algorithm: 'Ed25519', colour: 'red' })).toThrow(/colour|Unrecognized/);
  });

  it('validatePolicy names the rule that forbids a request', () => {
    const p = parseKeyPolicy({
      algorithm: 'ECDSA_P256',
      allowedOperations: ['sign'],
      maxMessageBytes: 100,
      timeWindows: [{ days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '08:00', end: '18:00' }, { days: ['sat'], start: '22:00', end: '02:00' }],
    });
    const wed = new Date('2026-12-02T09:00:00Z');
    expect(() => validatePolicy(p, { algorithm: 'ECDSA_P256', operation: 'sign', messageBytes: 100, at: wed })).not.toThrow();
    const rule = (f: () => void) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(HsmError);
        expect((e as HsmError).code).toBe('PolicyViolation');
        return (e as HsmError).details.rule;
      }
      return 'none';
    };
    expect(rule(() => validatePolicy(p, { algorithm: 'RSA_2048' }))).toBe('allowedAlgorithms');
    expect(rule(() => validatePolicy(p, { operation: 'verify' }))).toBe('allowedOperations');
    expect(rule(() => validatePolicy(p, { messageBytes: 101 }))).toBe('maxMessageBytes');
    expect(rule(() => validatePolicy(p, { at: new Date('2026-12-02T18:00:00Z') }))).toBe('timeWindows');
    expect(rule(() => validatePolicy(p, { at: new Date('2026-12-06T09:00:00Z') }))).toBe('timeWindows'); // Sunday
    expect(rule(() => validatePolicy(p, { at: new Date('2026-12-05T23:30:00Z') }))).toBe('none'); // Saturday night window
    expect(rule(() => validatePolicy(p, { at: new Date('2026-12-05T01:30:00Z') }))).toBe('timeWindows'); // Saturday 01:30: Friday has no night window
    expect(rule(() => validatePolicy(p, { at: new Date('2026-12-06T01:30:00Z') }))).toBe('none'); // Sunday 01:30: Saturday's night window
  });
});

describe('selectMembersForPolicy', () => {
  async function pool() {
    const p = new HsmPool({
      members: [
        { name: 'soft', backend: new Described({}, {}), zone: 'eu-1', tags: { region: 'eu' } },
        { name: 'luna', backend: new Described({ standard: 'FIPS 140-3', level: 3, evidence: 'measured' }, { hardwareBacked: true, algorithms: ['ECDSA_P256', 'RSA_2048'] }), zone: 'eu-1', weight: 2, tags: { region: 'eu' } },
        { name: 'kms', backend: new Described({ standard: 'FIPS 140-3', level: 3, evidence: 'provider-claim' }, { hardwareBacked: true }), zone: 'us-1', tags: { region: 'us' } },
        { name: 'hsm-us', backend: new Described({ standard: 'FIPS 140-2', level: 3, evidence: 'attested' }, { hardwareBacked: true }), zone: 'us-2', tags: { region: 'us' } },
      ],
      startHealthChecks: false,
    });
    await p.initialize();
    return p;
  }

  it('picks members that meet every rule, heaviest first', async () => {
    const p = await pool();
    expect((await selectMembersForPolicy(p, parseKeyPolicy({ algorithm: 'Ed25519' }))).members).toEqual(['hsm-us']);
    expect((await selectMembersForPolicy(p, parseKeyPolicy({ algorithm: 'ECDSA_P256', minFipsLevel: 3, replicas: 2 }))).members).toEqual(['luna', 'hsm-us']);
    expect((await selectMembersForPolicy(p, parseKeyPolicy({ algorithm: 'ECDSA_P256', minFipsLevel: 3, fipsEvidence: ['provider-claim'], regions: ['us'] }))).members).toEqual(['kms']);
    expect((await selectMembersForPolicy(p, parseKeyPolicy({ algorithm: 'ECDSA_P256', hardwareRequired: true, zones: ['eu-1'] }))).members).toEqual(['luna']);
    await p.close();
  });

  it('refuses with PolicyViolation naming the unmet rule of each member', async () => {
    const p = await pool();
    const error = await selectMembersForPolicy(p, parseKeyPolicy({ algorithm: 'Ed25519', minFipsLevel: 3, zones: ['eu-1'] })).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'PolicyViolation' });
    const message = (error as Error).message;
    expect(message).toMatch(/no pool member satisfies/);
    expect(message).toMatch(/soft fails minFipsLevel \(needs 3 by measured\/attested; member is level 0 by none\)/);
    expect(message).toMatch(/luna fails algorithm \(Ed25519 not among ECDSA_P256, RSA_2048\)/);
    expect(message).toMatch(/kms fails minFipsLevel .*provider-claim.*zones/);
    expect(message).toMatch(/hsm-us fails zones/);
    const tooFew = await selectMembersForPolicy(p, parseKeyPolicy({ algorithm: 'ECDSA_P256', hardwareRequired: true, replicas: 4 })).catch((e: unknown) => e);
    expect((tooFew as Error).message).toMatch(/only 3 pool member\(s\) satisfy the key policy \(needs 4\): soft fails hardwareRequired/);
    await p.close();
  });
});

describe('TokenBuckets', () => {
  it('lets N through in a window and refuses the rest, refills with time, and takes from all buckets or none', () => {
    let t = 0;
    const b = new TokenBuckets(() => t);
    const spec = { limit: 5, perMs: 1000 };
    const results = Array.from({ length: 8 }, () => b.take('k', spec));
    expect(results.filter(Boolean).length).toBe(5);
    t = 200; // one token back
    expect(b.take('k', spec)).toBe(true);
    expect(b.take('k', spec)).toBe(false);
    // per-caller bucket empty: the per-key bucket keeps its token
    const caller = { limit: 1, perMs: 1000 };
    t = 10_000;
    expect(b.takeAll([['key:x', spec], ['caller:c', caller]])).toBe(true);
    expect(b.takeAll([['key:x', spec], ['caller:c', caller]])).toBe(false);
    expect(Array.from({ length: 5 }, () => b.take('key:x', spec)).filter(Boolean).length).toBe(4);
  });
});
