import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HsmError } from '@olocus/hsm-core';
import { describe, expect, it } from 'vitest';
import { ComplianceManager, TOOL_VERSION } from '../src/report/index.js';
import { cutoff, FRAMEWORK_RULES, FRAMEWORKS, policyFactsFromRotation, resolveComplianceConfig, RULES, rulesFor, staticInventory } from '../src/rules/index.js';
import { activeKey, hsmModule } from './fixtures-compliance/builders.js';
import { MemoryAuditReader } from './fixtures-compliance/memory-audit.js';

function configError(raw: unknown): HsmError {
  try {
    resolveComplianceConfig(raw);
  } catch (error) {
    if (error instanceof HsmError) return error;
    throw error;
  }
  throw new Error(`config ${JSON.stringify(raw)} was accepted`);
}

describe('ComplianceConfig', () => {
  it('defaults are the values of COMPLIANCE-RULES.md', () => {
    const c = resolveComplianceConfig();
    expect(c.dates).toEqual({ alg112AllowedUntil: '2030-12-31', pqDeprecated112After: '2030-12-31', pqDisallowedAfter: '2035-12-31', fips1402HistoricalAfter: '2026-09-21', eddsaApprovedFrom: '2023-02-03' });
    expect(c.retention).toEqual({ totalDays: 365, hotDays: 90 });
    expect(c.destruction.minimumWaitDays).toBe(7);
    expect(c.policy.destruction).toMatchObject({ waitingDays: 30, cancellable: true });
    expect(c.policy.cryptoperiod).toEqual({ signingDays: 730, byAlgorithm: {}, warnDays: 30 });
    expect(c.policy.dualControl).toEqual({ destroy: 2, emergencyRotation: 2, restore: 2 });
    expect(c.policy.emergencySuccessorHours).toBe(24);
    expect(c.algorithms).toEqual({ rsaMinBits: 2048, approvedCurves: ['P-224', 'P-256', 'P-384', 'P-521'] });
    expect(Object.keys(c.policy.destruction.methods).sort()).toEqual(['pkcs11', 'software']);
  });

  it('a date setting covers its whole UTC day', () => {
    expect(cutoff('2030-12-31').toISOString()).toBe('2030-12-31T23:59:59.999Z');
    expect(cutoff('2030-12-31T12:00:00+02:00').toISOString()).toBe('2030-12-31T10:00:00.000Z');
  });

  it.each([
    [{ dates: { alg112AllowedUntil: '2030-02-31' } }, 'compliance.dates.alg112AllowedUntil'],
    [{ dates: { fips1402HistoricalAfter: 20260921 } }, 'compliance.dates.fips1402HistoricalAfter'],
    [{ retention: { totalDays: 300, hotDays: 400 } }, 'compliance.retention.hotDays'],
    [{ policy: { dualControl: { destroy: 0 } } }, 'compliance.policy.dualControl.destroy'],
    [{ policy: { cryptoperiod: { signingDays: 1.5 } } }, 'compliance.policy.cryptoperiod.signingDays'],
    [{ audit: { loggedEventTypes: ['key.sign', 'key.nope'] } }, 'compliance.audit.loggedEventTypes[1]'],
    [{ fips: { requiredLevel: 5 } }, 'compliance.fips.requiredLevel'],
    [{ algorithms: { rsaMinBits: 512 } }, 'compliance.algorithms.rsaMinBits'],
    [{ destruction: { minimumWaitDays: 0 } }, 'compliance.destruction.minimumWaitDays'],
  ])('a bad value is an InvalidConfiguration naming the field: %j', (raw, field) => {
    const error = configError(raw);
    expect(error.code).toBe('InvalidConfiguration');
    expect(error.details['field']).toBe(field);
    expect(error.message).toContain(field);
  });

  it('an unknown field is named', () => {
    const error = configError({ policy: { dualControll: { destroy: 2 } } });
    expect(error.message).toContain('dualControll');
  });

  it('the manager validates its config the same way', () => {
    const make = () => new ComplianceManager({ audit: new MemoryAuditReader([]), inventory: staticInventory([]), modules: [], config: { dates: { pqDisallowedAfter: 'soon' } } });
    expect(make).toThrow(HsmError);
    expect(make).toThrow(/compliance\.dates\.pqDisallowedAfter/);
  });

  it('overriding a date changes the outcome', async () => {
    const run = async (config: object, framework: 'pci-dss' | 'fips-140-3', now: string) => {
      const m = new ComplianceManager({ audit: new MemoryAuditReader([]), inventory: staticInventory([activeKey('rsa', 'RSA_3072', 'pkcs11', '2030-01-01T00:00:00Z')].concat([activeKey('r2', 'RSA_2048', 'pkcs11', '2030-01-01T00:00:00Z')])), modules: [hsmModule('pkcs11', { standard: 'FIPS 140-2' })], config, clock: () => new Date(now) });
      return m.evaluate({ framework, from: new Date('2030-05-01T00:00:00Z'), to: new Date('2030-06-01T00:00:00Z') });
    };
    const alg112 = (ev: Awaited<ReturnType<typeof run>>) => ev.findings.filter((f) => f.ruleId === 'ALG-112').map((f) => [f.status, f.severity]);
    expect(alg112(await run({}, 'pci-dss', '2030-06-01T00:00:00Z'))).toEqual([['info', 'INFO']]);
    expect(alg112(await run({ dates: { alg112AllowedUntil: '2029-12-31' } }, 'pci-dss', '2030-06-01T00:00:00Z'))).toEqual([['violation', 'HIGH']]);
    const mod = (ev: Awaited<ReturnType<typeof run>>) => ev.findings.filter((f) => f.ruleId === 'MOD-140-2').map((f) => f.severity);
    expect(mod(await run({}, 'fips-140-3', '2026-06-01T00:00:00Z'))).toEqual(['MED']);
    expect(mod(await run({ dates: { fips1402HistoricalAfter: '2026-01-31' } }, 'fips-140-3', '2026-06-01T00:00:00Z'))).toEqual(['HIGH']);
  });

  it('policy facts from a rotation policy', () => {
    expect(policyFactsFromRotation({ destructionDelay: 14 * 86_400_000, cryptoperiod: 365 * 86_400_000 })).toEqual({ destruction: { waitingDays: 14, cancellable: true }, cryptoperiod: { signingDays: 365 } });
  });
});

describe('rule catalogue and framework mapping', () => {
  const DOCUMENTED = [
    'ALG-RSA-MIN', 'ALG-112', 'ALG-PQ', 'ALG-CURVE', 'ALG-EDDSA', 'ALG-SHA1', 'ALG-PAD', 'ALG-KEK', 'MOD-140-2', 'MOD-STATUS',
    'LC-PROTECT', 'LC-PROCESS', 'LC-CP-SIG', 'LC-DESTROY-ACTIVE', 'LC-PENDING', 'LC-EMERG', 'LC-PRIMARY', 'LC-RECORD',
    'PCI-3.6.1.2', 'PCI-3.7.4', 'PCI-3.7.5', 'PCI-3.7.6', 'PCI-3.7.7', 'PCI-10.2', 'PCI-10.2.2', 'PCI-10.3', 'PCI-10.5.1',
    'SOC2-CC6.1', 'NIST-SC-12', 'NIST-SC-13', 'NIST-AU-9', 'NIST-AU-10', 'NIST-AU-11', 'NIST-AU-5',
    'FCS_CKM.1', 'FCS_CKM.4', 'FCS_COP.1', 'FAU_GEN',
  ];

  it('every rule id of COMPLIANCE-RULES.md A–E is implemented (plus MOD-LEVEL for the FIPS level option), each once', () => {
    const ids = RULES.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual([...DOCUMENTED, 'MOD-LEVEL'].sort());
    for (const r of RULES) {
      expect(r.title.length, r.id).toBeGreaterThan(10);
      expect(r.source.length, r.id).toBeGreaterThan(5);
      expect(r.frameworks.length, r.id).toBeGreaterThan(0);
    }
  });

  it('each framework runs its own rules', () => {
    for (const f of FRAMEWORKS) expect(FRAMEWORK_RULES[f]).toEqual(rulesFor(f).map((r) => r.id));
    expect(FRAMEWORK_RULES['pci-dss'].filter((id) => id.startsWith('PCI-'))).toHaveLength(9);
    expect(FRAMEWORK_RULES['common-criteria']).toEqual(expect.arrayContaining(['FCS_CKM.1', 'FCS_CKM.4', 'FCS_COP.1', 'FAU_GEN']));
    expect(FRAMEWORK_RULES['fisma'].filter((id) => id.startsWith('NIST-'))).toHaveLength(6);
    expect(FRAMEWORK_RULES['soc2']).toContain('SOC2-CC6.1');
    expect(FRAMEWORK_RULES['fips-140-3']).toEqual(expect.arrayContaining(['MOD-LEVEL', 'MOD-140-2', 'ALG-PQ']));
    expect(FRAMEWORK_RULES['fips-140-3']).not.toContain('PCI-3.6.1.2');
    // Every rule is run by some framework.
    expect(new Set(Object.values(FRAMEWORK_RULES).flat())).toEqual(new Set(RULES.map((r) => r.id)));
  });

  it('the tool version written into reports is the package version', () => {
    const pkg = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'package.json'), 'utf8')) as { version: string };
    expect(TOOL_VERSION).toBe(pkg.version);
  });
});
