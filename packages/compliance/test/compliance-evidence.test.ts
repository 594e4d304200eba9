import { describe, expect, it } from 'vitest';
import type { OperationEvent } from '@olocus/hsm-core';
import { eventToRecords } from '../src/audit/auditor.js';
import { ComplianceManager, formatDuration, formatNumber, renderHtml, renderMarkdown } from '../src/report/index.js';
import { LC_EMERG, MOD_LEVEL, MOD_STATUS, NIST_SC_13, PCI_3_7_5, staticInventory } from '../src/rules/index.js';
import { hsmModule, keyWith, onlyPass, runRule, softwareModule, violations } from './fixtures-compliance/builders.js';
import { chain, MemoryAuditReader } from './fixtures-compliance/memory-audit.js';

const NOW = '2026-06-01T00:00:00Z';

describe('FIPS evidence basis (issue 10 item 6, report side)', () => {
  it("an 'unknown' standard is a HIGH MOD-STATUS and MOD-LEVEL violation carrying the backend's findings", async () => {
    const module = hsmModule('pkcs11', {
      standard: 'unknown',
      level: 0,
      approvedMode: false,
      evidence: 'none',
      findings: ['profile says luna but the token reports SoftHSM (manufacturer "SoftHSM project")'],
    } as never);
    const status = violations(await runRule(MOD_STATUS, { now: NOW, modules: [module] }));
    expect(status.map((f) => [f.severity, f.keyId])).toEqual([['HIGH', 'pkcs11']]);
    expect(status[0]!.message).toContain('could not be established');
    expect(status[0]!.message).toContain('profile says luna but the token reports SoftHSM');
    expect(status[0]!.evidence).toMatchObject({ standard: 'unknown', evidence: 'none' });
    const level = violations(await runRule(MOD_LEVEL, { now: NOW, modules: [module], framework: 'fips-140-3', level: 3 }));
    expect(level.map((f) => f.severity)).toEqual(['HIGH']);
    expect(level[0]!.message).toContain('could not be established');
    const sc13 = violations(await runRule(NIST_SC_13, { now: NOW, modules: [module], config: { policy: { requireValidatedModule: true } } }));
    expect(sc13[0]!.message).toContain('could not be established');
  });

  it('a finding on a module with a known standard is a MOD-STATUS violation of its own', async () => {
    const module = hsmModule('pkcs11', { evidence: 'measured', findings: ['firmware 2.0.0 is not the validated 3.2.1'] } as never);
    const f = violations(await runRule(MOD_STATUS, { now: NOW, modules: [module] }));
    expect(f.map((x) => [x.severity, x.message])).toEqual([['MED', 'backend pkcs11: firmware 2.0.0 is not the validated 3.2.1']]);
  });

  it('attested approved mode passes as attested, never as measured; a claim with no evidence basis is a warning', async () => {
    const attested = hsmModule('pkcs11', { evidence: 'attested' } as never);
    const pass = await runRule(MOD_STATUS, { now: NOW, modules: [attested] });
    expect(onlyPass(pass)).toBe(true);
    expect(pass[0]!.message).toContain('pkcs11: attested');
    expect(pass[0]!.message).not.toContain('measured');
    // facts from a backend that states no evidence (built before core v2): never taken as measured
    const bare = hsmModule('pkcs11');
    delete (bare.fips as { evidence?: string }).evidence;
    const warned = await runRule(MOD_STATUS, { now: NOW, modules: [bare] });
    expect(warned.filter((x) => x.status === 'warning').map((x) => x.message)).toEqual(['backend pkcs11 claims FIPS 140-3 but states no evidence for it (neither measured, attested nor a provider claim)']);
  });

  it('reports show the evidence basis of module facts in JSON, Markdown and HTML', async () => {
    const manager = new ComplianceManager({
      audit: new MemoryAuditReader(chain([])),
      inventory: staticInventory([]),
      modules: [hsmModule('pkcs11', { evidence: 'attested' } as never), hsmModule('cloud', { evidence: 'provider-claim' } as never), softwareModule()],
      clock: () => new Date(NOW),
    });
    const report = await manager.generateComplianceReport({ framework: 'pci-dss', from: new Date('2026-05-01T00:00:00Z'), to: new Date(NOW) });
    expect(report.modules.map((m) => [m.backend, m.fips.evidence])).toEqual([
      ['pkcs11', 'attested'],
      ['cloud', 'provider-claim'],
      ['software', 'none'],
    ]);
    const md = renderMarkdown(report);
    expect(md).toContain('| yes (attested) | #4321 (active) | attested (the operator\'s statement in the config, not measured) |');
    expect(md).toContain("provider claim (the cloud provider's documentation, not measured)");
    expect(md).not.toMatch(/\| measured/);
    const html = renderHtml(report);
    expect(html).toContain('<td data-evidence="attested">');
    expect(html).toContain('<td>yes (attested)</td>');
  });
});

describe('revoked is not compromised (issue 11, reports)', () => {
  const revokedPlain = () =>
    keyWith('release', 'Ed25519', 'software', [{ n: 1, path: [['Active', '2026-05-01T00:00:00Z'], ['Revoked', '2026-05-20T00:00:00Z']], historyOverride: { 1: { reason: 'no longer needed' } } }]);

  it('a plain `keys revoke` is reported as revoked: no LC-EMERG or PCI-3.7.5 compromise finding', async () => {
    const emerg = await runRule(LC_EMERG, { now: NOW, keys: [revokedPlain()] });
    expect(onlyPass(emerg)).toBe(true);
    expect(emerg[0]!.message).toContain('1 version revoked without a recorded compromise (release.v1)');
    expect(emerg[0]!.message).not.toContain('was compromised');
    const pci = await runRule(PCI_3_7_5, { now: NOW, keys: [revokedPlain()] });
    expect(violations(pci).filter((f) => f.message.includes('compromised')).map((f) => f.message)).toEqual([]);
  });

  it('Revoked by an emergency rotation (same-instant successor) or with a compromise reason still counts as compromised', async () => {
    const emergency = keyWith('tokens', 'Ed25519', 'pkcs11', [
      { n: 1, path: [['Active', '2026-05-01T00:00:00Z'], ['Revoked', '2026-05-20T00:00:00Z']], historyOverride: { 1: { reason: 'rotate now' } } },
      { n: 2, path: [['Active', '2026-05-20T00:00:00Z']] },
    ]);
    const pass = await runRule(LC_EMERG, { now: NOW, keys: [emergency] });
    expect(pass[0]!.message).toContain('1 compromised version, each replaced');
    const byReason = keyWith('api', 'Ed25519', 'pkcs11', [{ n: 1, path: [['Active', '2026-05-01T00:00:00Z'], ['Revoked', '2026-05-20T00:00:00Z']], historyOverride: { 1: { reason: 'key exposed in a log file' } } }]);
    const v = violations(await runRule(LC_EMERG, { now: NOW, keys: [byReason] }));
    expect(v.map((f) => f.message)).toEqual([expect.stringContaining('api.v1 was compromised at 2026-05-20T00:00:00.000Z')]);
    const compromised = keyWith('c', 'Ed25519', 'pkcs11', [{ n: 1, path: [['Active', '2026-05-01T00:00:00Z'], ['Compromised', '2026-05-20T00:00:00Z']] }]);
    expect(violations(await runRule(PCI_3_7_5, { now: NOW, keys: [compromised] })).map((f) => f.message)).toEqual([expect.stringContaining('c.v1 was revoked as compromised')]);
  });
});

describe('numbers for people (issue 11, reports)', () => {
  it('formats durations and counts', () => {
    expect(formatDuration(2.3763809999999808)).toBe('2.38 ms');
    expect(formatDuration(0.123456)).toBe('0.12 ms');
    expect(formatDuration(12.449)).toBe('12.4 ms');
    expect(formatDuration(380.4)).toBe('380 ms');
    expect(formatDuration(3041.7)).toBe('3.04 s');
    expect(formatDuration(150_000)).toBe('2.5 min');
    expect(formatNumber(1_000_003)).toBe('1,000,003');
    expect(formatNumber(98.35)).toBe('98.35');
    expect(formatNumber(0.1 + 0.2)).toBe('0.3');
  });

  it('no report format prints a float with a dozen digits, and the JSON keeps the verification time rounded', async () => {
    const manager = new ComplianceManager({
      audit: new MemoryAuditReader(chain([]), undefined, { durationMs: 2.3763809999999808 }),
      inventory: staticInventory([]),
      modules: [softwareModule()],
      clock: () => new Date(NOW),
    });
    const report = await manager.generateComplianceReport({ framework: 'pci-dss', from: new Date('2026-05-01T00:00:00Z'), to: new Date(NOW) });
    expect(report.auditIntegrity.durationMs).toBe(2.38);
    for (const text of [renderMarkdown(report), renderHtml(report), JSON.stringify(report)]) {
      expect(text).not.toMatch(/\d\.\d{5,}/);
    }
    expect(renderHtml(report)).toContain('<th>Verification time</th><td>2.38 ms</td>');
    expect(renderMarkdown(report)).toContain('| Verification time | 2.38 ms |');
  });
});

describe('operation purpose in audit records', () => {
  const base: OperationEvent = { operation: 'sign', backend: 'software', keyId: 'k', outcome: 'success', latencyMs: 1, data: new Uint8Array([1, 2, 3]) };

  it("SignOptions.purpose ('health-canary') is recorded in details.purpose; plain operations carry none", () => {
    const [canary] = eventToRecords({ ...base, purpose: 'health-canary' } as OperationEvent, 'monitor');
    expect(canary!.details).toEqual({ operation: 'sign', purpose: 'health-canary' });
    const [plain] = eventToRecords(base, 'svc');
    expect(plain!.details).toEqual({ operation: 'sign' });
  });

  it('a streamed operation records the digest core computed while reading', () => {
    const digest = `sha256:${'ab'.repeat(32)}`;
    const { data: _data, ...streamed } = base;
    const [r] = eventToRecords({ ...streamed, dataDigest: digest, purpose: 'audit-checkpoint' } as OperationEvent, 'svc');
    expect(r!.dataDigest).toBe(digest);
    expect(r!.details).toEqual({ operation: 'sign', purpose: 'audit-checkpoint' });
  });
});
