import { createHash } from 'node:crypto';
import { HsmError } from '@olocus/hsm-core';
import { describe, expect, it } from 'vitest';
import type { AuditRecord, AuditVerifyResult } from '../src/audit/types.js';
import { ComplianceManager, KEY_OPERATION_TYPES, recommendations, renderHtml, renderMarkdown, SCORE_WEIGHTS } from '../src/report/index.js';
import { createRuleContext, evaluateRule, resolveComplianceConfig, RULES, severityRank, sortFindings, staticInventory, type Finding, type Rule } from '../src/rules/index.js';
import { activeKey, DAY, hsmModule, softwareModule } from './fixtures-compliance/builders.js';
import { GOLDEN_FROM, GOLDEN_NOW, GOLDEN_TO, goldenKeys, goldenManager, goldenRecords } from './fixtures-compliance/golden-fixture.js';
import { chain, defaultSettings, MemoryAuditReader } from './fixtures-compliance/memory-audit.js';

describe('ComplianceManager report', () => {
  it('metrics are the period\'s records counted per type, outcome and UTC day', async () => {
    const { manager, framework } = goldenManager();
    const report = await manager.generateComplianceReport({ framework, from: GOLDEN_FROM, to: GOLDEN_TO });
    const records = goldenRecords().filter((r) => r.time >= GOLDEN_FROM.toISOString() && r.time < GOLDEN_TO.toISOString());
    const count = (pred: (r: AuditRecord) => boolean, day?: string) => records.filter((r) => (!day || r.time.startsWith(day)) && pred(r)).length;
    const ok = (type: string) => (r: AuditRecord) => r.type === type && r.outcome === 'success';
    expect(report.metrics.records).toBe(records.length);
    expect(report.metrics.perDay.map((d) => d.date)).toEqual(['2026-03-01', '2026-03-02', '2026-03-03', '2026-03-04', '2026-03-05', '2026-03-06', '2026-03-07']);
    for (const d of [...report.metrics.perDay, { ...report.metrics.totals, date: undefined }]) {
      const day = d.date;
      expect(d.signs).toBe(count(ok('key.sign'), day));
      expect(d.verifies).toBe(count(ok('key.verify'), day));
      expect(d.keyGenerations).toBe(count(ok('key.generate'), day));
      expect(d.keyAccesses).toBe(count((r) => r.type === 'key.access', day));
      // a key.access answered KeyNotFound is an existence probe's answer (keys create), not a failure
      const miss = (r: AuditRecord) => r.type === 'key.access' && r.outcome === 'failure' && r.errorCode === 'KeyNotFound';
      expect(d.failures).toBe(count((r) => r.outcome === 'failure' && !miss(r), day));
      expect(d.lookupMisses).toBe(count(miss, day));
      expect(d.operations).toBe(count((r) => KEY_OPERATION_TYPES.has(r.type), day));
      expect(d.securityViolations).toBe(count((r) => r.type === 'auth.failure' || r.type === 'security.event', day));
    }
    expect(report.metrics.totals.signs).toBeGreaterThan(40);
    expect(report.metrics.totals.lookupMisses).toBe(1);
  });

  it('scores follow their written formulas', async () => {
    const { manager, framework } = goldenManager();
    const report = await manager.generateComplianceReport({ framework, from: GOLDEN_FROM, to: GOLDEN_TO });
    const ops = goldenRecords().filter((r) => KEY_OPERATION_TYPES.has(r.type));
    // served = succeeded, or failed by the caller's mistake (the fixture has two KeyNotFound — a sign and a lookup — and one DeviceUnavailable)
    const successful = ops.filter((r) => r.outcome === 'success' || r.errorCode === 'KeyNotFound').length;
    expect(ops.some((r) => r.errorCode === 'DeviceUnavailable')).toBe(true);
    expect(report.scores.availability.value).toBe(Math.round((1000 * successful) / ops.length) / 10);
    expect(report.scores.availability.inputs).toEqual({ operations: ops.length, successful });

    const worst = (category: Rule['category'], exclude: string[]) => {
      const byRule = new Map<string, number>();
      for (const v of report.violations) {
        const rule = RULES.find((r) => r.id === v.ruleId)!;
        if (rule.category !== category || exclude.includes(v.ruleId)) continue;
        byRule.set(v.ruleId, Math.max(byRule.get(v.ruleId) ?? 0, SCORE_WEIGHTS[v.severity]));
      }
      return [...byRule.values()].reduce((a, b) => a + b, 0);
    };
    expect(report.scores.integrity.value).toBe(Math.max(0, 100 - worst('integrity', ['PCI-10.3', 'NIST-AU-9'])));
    const live = goldenKeys().flatMap((k) => k.versions).filter((v) => v.state !== 'Destroyed');
    const hw = live.filter((v) => v.backend === 'pkcs11').length;
    expect(report.scores.confidentiality.value).toBe(Math.round(10 * Math.max(0, (100 * hw) / live.length - worst('confidentiality', ['PCI-3.6.1.2']))) / 10);
    for (const s of Object.values(report.scores)) expect(s.formula).toMatch(/=/);
  });

  it('integrity is 0 when the chain fails and loses 30 for unsigned checkpoints', async () => {
    const make = (verification: Partial<AuditVerifyResult>, checkpointsSigned: boolean) =>
      new ComplianceManager({ audit: new MemoryAuditReader(goldenRecords(), defaultSettings({ checkpointsSigned }), verification), inventory: staticInventory([]), modules: [], clock: () => GOLDEN_NOW });
    const period = { framework: 'fips-140-3' as const, from: GOLDEN_FROM, to: GOLDEN_TO };
    const clean = await make({}, true).generateComplianceReport(period);
    const unsigned = await make({}, false).generateComplianceReport(period);
    const broken = await make({ ok: false, problem: 'edited', firstBadSeq: 9, message: 'record 9 was edited' }, true).generateComplianceReport(period);
    expect(unsigned.scores.integrity.value).toBe(clean.scores.integrity.value - 30);
    expect(broken.scores.integrity.value).toBe(0);
    expect(broken.auditIntegrity).toMatchObject({ ok: false, problem: 'edited', firstBadSeq: 9 });
    expect(renderHtml(broken)).toContain('FAILED');
    expect(renderMarkdown(broken)).toContain('FAILED (edited at seq 9)');
  });

  it('a clean deployment is compliant; status, summary counts and severity buckets agree', async () => {
    const records = chain([
      { type: 'audit.start', time: '2026-05-01T00:00:00Z', actor: 'olocus-hsm' },
      ...Array.from({ length: 5 }, (_, i) => ({ type: 'key.sign' as const, time: `2026-05-0${i + 2}T10:00:00Z`, actor: 'svc', keyId: 'clean.v1', algorithm: 'ECDSA_P256', backend: 'pkcs11' })),
    ]);
    const manager = new ComplianceManager({ audit: new MemoryAuditReader(records), inventory: staticInventory([activeKey('clean', 'ECDSA_P256', 'pkcs11', '2026-01-01T00:00:00Z')]), modules: async () => [hsmModule()], clock: () => new Date('2026-05-10T00:00:00Z') });
    const report = await manager.generateComplianceReport({ framework: 'pci-dss', from: new Date('2026-05-01T00:00:00Z'), to: new Date('2026-05-10T00:00:00Z') });
    expect(report.violations).toEqual([]);
    expect(report.summary.status).toBe('compliant');
    expect(report.scores).toMatchObject({ availability: { value: 100 }, integrity: { value: 100 }, confidentiality: { value: 100 } });

    const { manager: golden, framework } = goldenManager();
    const g = await golden.generateComplianceReport({ framework, from: GOLDEN_FROM, to: GOLDEN_TO });
    expect(g.summary.status).toBe('non-compliant');
    expect(g.summary.violations).toBe(g.violations.length);
    expect(Object.values(g.summary.violationsBySeverity).reduce((a, b) => a + b, 0)).toBe(g.violations.length);
    // Violations most severe first.
    const ranks = g.violations.map((v) => severityRank(v.severity));
    expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
  });

  it('recommendations are deduplicated and sorted by severity', () => {
    const f = (ruleId: string, severity: Finding['severity'], remediation: string): Finding => ({ ruleId, status: 'violation', severity, message: 'm', remediation });
    const recs = recommendations([f('LC-CP-SIG', 'HIGH', 'Rotate k.'), f('PCI-3.7.4', 'MED', 'Rotate k.'), f('ALG-PAD', 'INFO', 'Use PSS.'), f('LC-PROTECT', 'CRIT', 'Stop.'), { ...f('ALG-SHA1', 'CRIT', ''), status: 'pass' }], RULES);
    expect(recs).toEqual([
      { severity: 'CRIT', text: 'Stop.', ruleIds: ['LC-PROTECT'], findings: 1 },
      { severity: 'HIGH', text: 'Rotate k.', ruleIds: ['LC-CP-SIG', 'PCI-3.7.4'], findings: 2 },
      { severity: 'INFO', text: 'Use PSS.', ruleIds: ['ALG-PAD'], findings: 1 },
    ]);
  });

  it('reads the audit log only as period-scoped streams, and counts nothing outside the period', async () => {
    const outside = chain([
      { type: 'key.sign', time: '2026-02-28T23:59:59.999Z', keyId: 'payments.v1', actor: 'svc' },
      ...goldenRecords().map(({ seq: _s, prevHash: _p, hash: _h, ...r }) => r),
      { type: 'key.sign', time: GOLDEN_TO.toISOString(), keyId: 'payments.v2', actor: 'svc' },
    ]);
    const reader = new MemoryAuditReader(outside);
    const manager = new ComplianceManager({ audit: reader, inventory: staticInventory(goldenKeys()), modules: [hsmModule('pkcs11', { eddsaValidated: false }), softwareModule()], clock: () => GOLDEN_NOW });
    const report = await manager.generateComplianceReport({ framework: 'pci-dss', from: GOLDEN_FROM, to: GOLDEN_TO });
    expect(report.metrics.records).toBe(goldenRecords().length);
    expect(reader.queries.every((q) => q.from?.getTime() === GOLDEN_FROM.getTime() && q.to?.getTime() === GOLDEN_TO.getTime())).toBe(true);
    // One shared pass for every rule and the metrics, plus PCI-10.2's first-record probes (one record per event class at most).
    expect(reader.queries.filter((q) => !q.types)).toHaveLength(1);
    expect(reader.yielded).toBeLessThanOrEqual(report.metrics.records + 7);
  });

  it('each rule evaluated on its own finds what it finds in the shared pass', async () => {
    for (const framework of ['pci-dss', 'common-criteria', 'fisma', 'soc2', 'fips-140-3'] as const) {
      const { manager } = goldenManager();
      const ev = await manager.evaluate({ framework, from: GOLDEN_FROM, to: GOLDEN_TO });
      for (const rule of ev.rules) {
        const alone = await evaluateRule(rule, ev.context);
        expect(sortFindings(alone), `${framework} ${rule.id}`).toEqual(ev.findings.filter((f) => f.ruleId === rule.id));
      }
    }
  });

  it('the FIPS level option: a level-3 module fails level 4 and passes level 3', async () => {
    const manager = new ComplianceManager({ audit: new MemoryAuditReader([]), inventory: staticInventory([]), modules: [hsmModule('pkcs11', { level: 3 })], clock: () => GOLDEN_NOW });
    const l4 = await manager.generateComplianceReport({ framework: 'fips-140-3', from: GOLDEN_FROM, to: GOLDEN_TO, level: 4 });
    expect(l4.metadata.level).toBe(4);
    expect(l4.violations.map((v) => v.ruleId)).toEqual(['MOD-LEVEL']);
    const l3 = await manager.generateComplianceReport({ framework: 'fips-140-3', from: GOLDEN_FROM, to: GOLDEN_TO, level: 3 });
    expect(l3.violations).toEqual([]);
    expect(l3.passes.map((p) => p.ruleId)).toContain('MOD-LEVEL');
  });

  it('bad evaluation options are InvalidArgument errors naming the field', async () => {
    const { manager } = goldenManager();
    await expect(manager.evaluate({ framework: 'iso-27001' as never, from: GOLDEN_FROM, to: GOLDEN_TO })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'framework' } });
    await expect(manager.evaluate({ framework: 'pci-dss', from: GOLDEN_TO, to: GOLDEN_FROM })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'from' } });
    await expect(manager.evaluate({ framework: 'pci-dss', from: new Date('nope'), to: GOLDEN_TO })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'from' } });
    await expect(manager.evaluate({ framework: 'pci-dss', from: GOLDEN_FROM, to: GOLDEN_TO, level: 3 })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'level' } });
    await expect(manager.evaluate({ framework: 'fips-140-3', from: GOLDEN_FROM, to: GOLDEN_TO, level: 5 as never })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'level' } });
    await expect(manager.evaluate({ framework: 'pci-dss', from: new Date(0), to: GOLDEN_TO })).rejects.toMatchObject({ code: 'InvalidArgument', details: { field: 'to' } });
    expect(() => new ComplianceManager({ audit: {} as never, inventory: staticInventory([]), modules: [] })).toThrow(/AuditReader/);
  });

  it('with the audit public key: the log is verified against it and its fingerprint is reported', async () => {
    const spki = new Uint8Array([1, 2, 3, 4]);
    const seen: unknown[] = [];
    const reader = new MemoryAuditReader(goldenRecords());
    const verify = reader.verify.bind(reader);
    reader.verify = (async (options?: unknown) => {
      seen.push(options);
      return verify();
    }) as typeof reader.verify;
    const manager = new ComplianceManager({ audit: reader, inventory: staticInventory([]), modules: [], clock: () => GOLDEN_NOW, auditPublicKey: async () => spki });
    const report = await manager.generateComplianceReport({ framework: 'fisma', from: GOLDEN_FROM, to: GOLDEN_TO });
    expect(seen).toEqual([{ publicKey: spki }]);
    expect(report.auditIntegrity.checkpointPublicKeySha256).toBe(createHash('sha256').update(spki).digest('hex'));
  });

  it('Common Criteria reports carry the per-key table', async () => {
    const { manager } = goldenManager();
    const report = await manager.generateComplianceReport({ framework: 'common-criteria', from: GOLDEN_FROM, to: GOLDEN_TO });
    const rows = report.commonCriteria!.keys;
    expect(rows.map((r) => r.keyId)).toEqual(goldenKeys().flatMap((k) => k.versions.map((v) => v.keyId)));
    const tokens1 = rows.find((r) => r.keyId === 'tokens.v1')!;
    expect(tokens1).toMatchObject({ algorithm: 'Ed25519', sizeBits: 255, backend: 'pkcs11' });
    expect(tokens1.standard).toMatch(/FIPS 186-5/);
    expect(tokens1.destructionMethod).toMatch(/C_DestroyObject/);
    expect(tokens1.lifecycle.map((l) => l.to)).toEqual(['Active', 'Compromised']);
    expect(tokens1.auditedEvents.map((e) => e.type)).toEqual(['key.state']);
    expect(rows.find((r) => r.keyId === 'payments.v2')!.auditedEvents.map((e) => e.type)).toEqual(['key.generate', 'key.rotate']);
    expect(rows.find((r) => r.keyId === 'legacy.v1')).toMatchObject({ sizeBits: 2048, destructionMethod: expect.stringMatching(/unlinked/) });
    expect(renderMarkdown(report)).toContain('## Common Criteria key table');
    expect(renderHtml(report)).toContain('id="common-criteria"');
    const pci = await manager.generateComplianceReport({ framework: 'pci-dss', from: GOLDEN_FROM, to: GOLDEN_TO });
    expect(pci.commonCriteria).toBeUndefined();
  });

  it('a rule that throws becomes an HsmError naming the rule', async () => {
    const broken: Rule = { id: 'TEST-BROKEN', title: 'broken', frameworks: ['soc2'], severity: 'LOW', source: 'test', category: 'governance', evaluate: async () => Promise.reject(new TypeError('boom')) };
    const ctx = createRuleContext({ now: GOLDEN_NOW, period: { from: GOLDEN_FROM, to: GOLDEN_TO }, framework: 'soc2', config: resolveComplianceConfig(), keys: [], modules: [], audit: new MemoryAuditReader([]) });
    await expect(evaluateRule(broken, ctx)).rejects.toMatchObject({ name: 'HsmError', code: 'Internal', details: { ruleId: 'TEST-BROKEN' } });
  });

  it('a failure while reading the log is an HsmError; an HsmError from the store passes through', async () => {
    const failing = (error: unknown) => {
      const reader = new MemoryAuditReader(goldenRecords());
      const iterate = reader.iterate.bind(reader);
      reader.iterate = async function* (query) {
        let n = 0;
        for await (const r of iterate(query)) {
          if (++n === 10) throw error;
          yield r;
        }
      };
      return new ComplianceManager({ audit: reader, inventory: staticInventory(goldenKeys()), modules: [], clock: () => GOLDEN_NOW });
    };
    const period = { framework: 'pci-dss' as const, from: GOLDEN_FROM, to: GOLDEN_TO };
    await expect(failing(new SyntaxError('Unexpected token')).generateComplianceReport(period)).rejects.toMatchObject({ name: 'HsmError', code: 'Internal', message: expect.stringMatching(/reading the audit log.*Unexpected token/) });
    const stored = new HsmError('StorageCorrupted', 'record 12 cannot be read');
    await expect(failing(stored).generateComplianceReport(period)).rejects.toBe(stored);
  });

  it('every framework produces a report over the fixture', async () => {
    for (const framework of ['fips-140-2', 'fips-140-3', 'common-criteria', 'pci-dss', 'soc2', 'fisma'] as const) {
      const { manager } = goldenManager();
      const report = await manager.generateComplianceReport({ framework, from: GOLDEN_FROM, to: new Date(GOLDEN_FROM.getTime() + 7 * DAY) });
      expect(report.metadata.rules.length, framework).toBe(report.summary.rulesEvaluated);
      const covered = new Set([...report.violations, ...report.warnings, ...report.notices, ...report.passes, ...report.notApplicable].map((f) => f.ruleId));
      expect([...covered].sort(), framework).toEqual(report.metadata.rules.map((r) => r.id).sort());
    }
  });
});
