import { createHash } from 'node:crypto';
import { HsmError } from '@olocus/hsm-core';
import type { AuditReader, AuditRecord, AuditVerifyResult } from '../audit/types.js';
import { algorithmFacts } from '../rules/algorithm-facts.js';
import { evaluateRules, rulesFor } from '../rules/catalog.js';
import { resolveComplianceConfig, type ComplianceConfigInput, type ResolvedComplianceConfig } from '../rules/config.js';
import { createRuleContext } from '../rules/context.js';
import { fipsEvidenceOf, fipsFindingsOf, type InventoryLogicalKey, type KeyInventory, type ModuleFacts } from '../rules/inputs.js';
import { FRAMEWORK_NAMES, FRAMEWORKS, isFramework, SEVERITIES, severityRank, type Finding, type Framework, type Rule, type RuleContext, type Severity } from '../rules/types.js';
import { round2 } from './format.js';
import { MetricsCollector } from './metrics.js';
import { availabilityScore, confidentialityScore, integrityScore } from './scores.js';
import type { AuditIntegrity, CcKeyRow, ComplianceReport, InventorySummary, ModuleReport, Recommendation, ReportFinding, ReportStatus } from './types.js';
import { TOOL_NAME, TOOL_VERSION } from './version.js';

export interface ComplianceManagerOptions {
  /** The audit log (read side). */
  audit: AuditReader;
  inventory: KeyInventory;
  /** Facts of each module, or a function that fetches them when a report is made. */
  modules: ModuleFacts[] | (() => Promise<ModuleFacts[]>);
  /** Dates, thresholds and policy facts (validated; defaults from COMPLIANCE-RULES.md). */
  config?: ComplianceConfigInput;
  /** The evaluation instant; injectable for tests and for re-running a report "as of" a date. */
  clock?: () => Date;
  /**
   * SPKI of the audit checkpoint key. When given, the audit log is verified against it
   * (`verify({ publicKey })`) and its fingerprint is written into the report.
   */
  auditPublicKey?: () => Promise<Uint8Array>;
}

export interface EvaluateOptions {
  framework: Framework;
  from: Date;
  to: Date;
  /** FIPS 140 security level required by fips-140-2 / fips-140-3 (default config.fips.requiredLevel). */
  level?: 1 | 2 | 3 | 4;
}

export interface ComplianceEvaluation {
  framework: Framework;
  level?: 1 | 2 | 3 | 4;
  period: { from: Date; to: Date };
  now: Date;
  rules: Rule[];
  /** Every finding (violations, warnings, notices, passes, not-applicable), most severe first. */
  findings: Finding[];
  verification: AuditVerifyResult;
  modules: ModuleFacts[];
  keys: InventoryLogicalKey[];
  context: RuleContext;
}

/** Longest period a report covers (bounds the per-day buckets). */
export const MAX_PERIOD_DAYS = 3660;

type VerifyWithKey = (options?: { publicKey?: Uint8Array }) => Promise<AuditVerifyResult>;

/**
 * Evaluates a framework's rules over a period and builds the report. The audit log is streamed
 * (each rule that reads records iterates the period with a type filter, and the report's
 * metrics take one more pass); the inventory and module facts are read once per evaluation.
 */
export class ComplianceManager {
  readonly config: ResolvedComplianceConfig;
  private readonly audit: AuditReader;
  private readonly inventory: KeyInventory;
  private readonly modules: ModuleFacts[] | (() => Promise<ModuleFacts[]>);
  private readonly clock: () => Date;
  private readonly auditPublicKey: (() => Promise<Uint8Array>) | undefined;

  constructor(options: ComplianceManagerOptions) {
    if (!options || typeof options !== 'object') throw new HsmError('InvalidArgument', 'ComplianceManager needs options { audit, inventory, modules }');
    const a = options.audit as Partial<AuditReader> | undefined;
    if (!a || typeof a.iterate !== 'function' || typeof a.verify !== 'function' || typeof a.oldestRecordTime !== 'function' || typeof a.settings !== 'object') {
      throw new HsmError('InvalidArgument', 'options.audit must be an AuditReader { settings, iterate(), verify(), oldestRecordTime() }', { details: { field: 'audit' } });
    }
    if (!options.inventory || typeof options.inventory.logicalKeys !== 'function') {
      throw new HsmError('InvalidArgument', 'options.inventory must be a KeyInventory { source, logicalKeys() } (inventoryFromRegistry(), staticInventory() or emptyInventory())', { details: { field: 'inventory' } });
    }
    if (!Array.isArray(options.modules) && typeof options.modules !== 'function') {
      throw new HsmError('InvalidArgument', 'options.modules must be an array of ModuleFacts or a function returning them', { details: { field: 'modules' } });
    }
    this.config = resolveComplianceConfig(options.config ?? {});
    this.audit = options.audit;
    this.inventory = options.inventory;
    this.modules = options.modules;
    this.clock = options.clock ?? (() => new Date());
    this.auditPublicKey = options.auditPublicKey;
  }

  private checkOptions(options: EvaluateOptions): void {
    if (!isFramework(options?.framework)) throw new HsmError('InvalidArgument', `framework must be one of ${FRAMEWORKS.join(', ')} (got ${JSON.stringify(options?.framework)})`, { details: { field: 'framework' } });
    for (const field of ['from', 'to'] as const) {
      const d = options[field];
      if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new HsmError('InvalidArgument', `${field} must be a valid Date`, { details: { field } });
    }
    if (options.from.getTime() >= options.to.getTime()) throw new HsmError('InvalidArgument', `from (${options.from.toISOString()}) must be before to (${options.to.toISOString()})`, { details: { field: 'from' } });
    if (options.to.getTime() - options.from.getTime() > MAX_PERIOD_DAYS * 86_400_000) throw new HsmError('InvalidArgument', `the period must not exceed ${MAX_PERIOD_DAYS} days`, { details: { field: 'to' } });
    if (options.level !== undefined) {
      if (![1, 2, 3, 4].includes(options.level)) throw new HsmError('InvalidArgument', `level must be 1, 2, 3 or 4 (got ${JSON.stringify(options.level)})`, { details: { field: 'level' } });
      if (!options.framework.startsWith('fips-')) throw new HsmError('InvalidArgument', 'level applies to the fips-140-2 and fips-140-3 frameworks only', { details: { field: 'level' } });
    }
  }

  private verifier(): () => Promise<AuditVerifyResult> {
    const key = this.auditPublicKey;
    if (!key) return () => this.audit.verify();
    return async () => (this.audit.verify as VerifyWithKey).call(this.audit, { publicKey: await key() });
  }

  /** Runs the framework's rules (one streaming pass over the period's audit records). */
  evaluate(options: EvaluateOptions): Promise<ComplianceEvaluation> {
    return this.run(options);
  }

  private async run(options: EvaluateOptions, visitors?: (period: { from: Date; to: Date }, ctx: RuleContext) => { visit(record: AuditRecord): void }[]): Promise<ComplianceEvaluation> {
    this.checkOptions(options);
    const now = this.clock();
    const [keys, modules] = await Promise.all([this.inventory.logicalKeys(), Array.isArray(this.modules) ? Promise.resolve(this.modules) : this.modules()]);
    const isFips = options.framework.startsWith('fips-');
    const level = isFips ? (options.level ?? this.config.fips.requiredLevel) : undefined;
    const context = createRuleContext({
      now,
      period: { from: options.from, to: options.to },
      framework: options.framework,
      ...(level !== undefined ? { requiredLevel: level } : {}),
      config: this.config,
      keys,
      modules,
      audit: this.audit,
      verify: this.verifier(),
    });
    const rules = rulesFor(options.framework);
    const findings = await evaluateRules(rules, context, visitors ? visitors({ from: options.from, to: options.to }, context) : []);
    const verification = await context.verification();
    return { framework: options.framework, ...(level !== undefined ? { level } : {}), period: { from: options.from, to: options.to }, now, rules, findings, verification, modules, keys, context };
  }

  /** Evaluates and builds the full report (metrics, scores, findings, recommendations, modules, audit integrity, inventory). */
  async generateComplianceReport(options: EvaluateOptions): Promise<ComplianceReport> {
    // The metrics ride on the rules' pass over the audit log: the period is read once.
    let collector: MetricsCollector | undefined;
    const ev = await this.run(options, (period, context) => {
      collector = new MetricsCollector(period, options.framework === 'common-criteria' ? new Set(context.versions.map((e) => e.version.keyId)) : undefined);
      const c = collector;
      return [{ visit: (r) => c.add(r) }];
    });
    if (!collector) throw new HsmError('Internal', 'the metrics collector did not run');
    const ctx = ev.context;
    const cc = ev.framework === 'common-criteria';

    const ruleById = new Map(ev.rules.map((r) => [r.id, r]));
    const toReport = (f: Finding): ReportFinding => {
      const rule = ruleById.get(f.ruleId);
      const out: ReportFinding = { ruleId: f.ruleId, title: rule?.title ?? f.ruleId, source: rule?.source ?? '', status: f.status, severity: f.severity, message: f.message, remediation: f.remediation };
      if (f.keyId !== undefined) out.keyId = f.keyId;
      if (f.time !== undefined) out.time = f.time;
      if (f.evidence !== undefined) out.evidence = { ...f.evidence };
      return out;
    };
    const of = (status: Finding['status']) => ev.findings.filter((f) => f.status === status).map(toReport);
    const violations = of('violation');
    const warnings = of('warning');
    const notices = of('info');

    const bySeverity = Object.fromEntries(SEVERITIES.map((s) => [s, 0])) as Record<Severity, number>;
    for (const v of violations) bySeverity[v.severity]++;
    const status: ReportStatus = violations.some((v) => v.severity === 'CRIT' || v.severity === 'HIGH') ? 'non-compliant' : violations.length > 0 || warnings.length > 0 ? 'needs-attention' : 'compliant';

    let privateKeys = 0;
    let hardware = 0;
    for (const e of ctx.versions) {
      if (e.version.state === 'Destroyed') continue;
      privateKeys++;
      if (ctx.moduleFor(e.version.backend)?.capabilities.hardwareBacked) hardware++;
    }

    const settings = this.audit.settings;
    const oldest = await this.audit.oldestRecordTime();
    let fingerprint: string | undefined;
    if (this.auditPublicKey) fingerprint = createHash('sha256').update(await this.auditPublicKey()).digest('hex');
    const v = ev.verification;
    const auditIntegrity: AuditIntegrity = {
      ok: v.ok,
      records: v.records,
      checkpoints: v.checkpoints,
      ...(v.problem !== undefined ? { problem: v.problem } : {}),
      ...(v.firstBadSeq !== undefined ? { firstBadSeq: v.firstBadSeq } : {}),
      ...(v.witnesses ? { witnesses: v.witnesses.map((w) => ({ witness: w.witness, kind: w.kind, status: w.status, ...(w.size !== undefined ? { size: w.size } : {}) })) } : {}),
      message: v.message,
      durationMs: round2(v.durationMs),
      checkpointsSigned: settings.checkpointsSigned,
      ...(settings.checkpointKeyId !== undefined ? { checkpointKeyId: settings.checkpointKeyId } : {}),
      ...(settings.checkpointBackend !== undefined ? { checkpointBackend: settings.checkpointBackend } : {}),
      ...(fingerprint !== undefined ? { checkpointPublicKeySha256: fingerprint } : {}),
      alertsConfigured: settings.alertsConfigured,
      failClosed: settings.failClosed,
      retentionDays: settings.retentionDays,
      hotDays: settings.hotDays,
      ...(oldest ? { oldestRecord: oldest.toISOString() } : {}),
    };

    const report: ComplianceReport = {
      reportVersion: 1,
      metadata: {
        framework: ev.framework,
        frameworkName: FRAMEWORK_NAMES[ev.framework],
        ...(ev.level !== undefined ? { level: ev.level } : {}),
        period: { from: ev.period.from.toISOString(), to: ev.period.to.toISOString() },
        generatedAt: ev.now.toISOString(),
        tool: { name: TOOL_NAME, version: TOOL_VERSION },
        inventorySource: this.inventory.source,
        config: structuredClone(this.config),
        rules: ev.rules.map((r) => ({ id: r.id, title: r.title, source: r.source, category: r.category, severity: r.severityAt ? r.severityAt(ev.now, this.config) : r.severity })),
      },
      summary: {
        status,
        violations: violations.length,
        warnings: warnings.length,
        notices: notices.length,
        passes: ev.findings.filter((f) => f.status === 'pass').length,
        notApplicable: ev.findings.filter((f) => f.status === 'not-applicable').length,
        violationsBySeverity: bySeverity,
        rulesEvaluated: ev.rules.length,
        rulesViolated: new Set(violations.map((x) => x.ruleId)).size,
      },
      scores: {
        availability: availabilityScore(collector.totals.operations, collector.successfulOperations),
        integrity: integrityScore(v, settings, ev.findings, ev.rules),
        confidentiality: confidentialityScore(privateKeys, hardware, ev.findings, ev.rules),
      },
      metrics: collector.metrics(),
      violations,
      warnings,
      notices,
      passes: of('pass'),
      notApplicable: of('not-applicable'),
      recommendations: recommendations(ev.findings, ev.rules),
      modules: ev.modules.map(moduleReport),
      auditIntegrity,
      inventory: inventorySummary(this.inventory.source, ev.keys),
    };
    if (cc) report.commonCriteria = { keys: ccTable(ctx, this.config, collector) };
    return report;
  }
}

/** Remediations of every non-pass finding, deduplicated by text, most severe first. */
export function recommendations(findings: readonly Finding[], rules: readonly Rule[]): Recommendation[] {
  const order = new Map(rules.map((r, i) => [r.id, i]));
  const byText = new Map<string, Recommendation>();
  for (const f of findings) {
    if (f.status === 'pass' || f.status === 'not-applicable' || f.remediation.trim() === '') continue;
    const rec = byText.get(f.remediation);
    if (!rec) {
      byText.set(f.remediation, { severity: f.severity, text: f.remediation, ruleIds: [f.ruleId], findings: 1 });
      continue;
    }
    rec.findings++;
    if (severityRank(f.severity) < severityRank(rec.severity)) rec.severity = f.severity;
    if (!rec.ruleIds.includes(f.ruleId)) rec.ruleIds.push(f.ruleId);
  }
  const first = (r: Recommendation) => Math.min(...r.ruleIds.map((id) => order.get(id) ?? 999));
  return [...byText.values()].sort((a, b) => severityRank(a.severity) - severityRank(b.severity) || first(a) - first(b) || a.text.localeCompare(b.text));
}

function moduleReport(m: ModuleFacts): ModuleReport {
  const out: ModuleReport = {
    backend: m.backend,
    description: m.info.description,
    fips: { standard: m.fips.standard, level: m.fips.level, approvedMode: m.fips.approvedMode, notes: m.fips.notes, evidence: fipsEvidenceOf(m.fips) },
    hardwareBacked: m.capabilities.hardwareBacked,
    persistentKeys: m.capabilities.persistentKeys,
    algorithms: [...m.capabilities.algorithms],
  };
  for (const k of ['manufacturer', 'model', 'serialNumber', 'firmwareVersion', 'libraryVersion'] as const) if (m.info[k] !== undefined) out[k] = m.info[k];
  if (m.fips.certificate !== undefined) out.fips.certificate = m.fips.certificate;
  if (m.fips.certificateStatus !== undefined) out.fips.certificateStatus = m.fips.certificateStatus;
  if (m.fips.eddsaValidated !== undefined) out.fips.eddsaValidated = m.fips.eddsaValidated;
  const findings = fipsFindingsOf(m.fips);
  if (findings.length > 0) out.fips.findings = findings;
  return out;
}

function count(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

function sorted(map: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(map).sort(([a], [b]) => a.localeCompare(b)));
}

export function inventorySummary(source: string, keys: readonly InventoryLogicalKey[]): InventorySummary {
  const byState: Record<string, number> = {};
  const byAlgorithm: Record<string, number> = {};
  const byBackend: Record<string, number> = {};
  let versions = 0;
  for (const k of keys) {
    for (const v of k.versions) {
      versions++;
      count(byState, v.state);
      count(byAlgorithm, v.algorithm);
      count(byBackend, v.backend);
    }
  }
  return { source, logicalKeys: keys.length, versions, byState: sorted(byState), byAlgorithm: sorted(byAlgorithm), byBackend: sorted(byBackend) };
}

function ccTable(ctx: RuleContext, config: ResolvedComplianceConfig, collector: MetricsCollector): CcKeyRow[] {
  return ctx.versions.map((e) => {
    const f = algorithmFacts(e.version.algorithm);
    const events = collector.eventsOf(e.version.keyId);
    const row: CcKeyRow = {
      keyId: e.version.keyId,
      baseKeyId: e.version.baseKeyId,
      state: e.version.state,
      backend: e.version.backend,
      algorithm: e.version.algorithm,
      standard: f.standard ?? 'not recognised',
      destructionMethod: config.policy.destruction.methods[e.version.backend] ?? 'not named',
      lifecycle: e.history.map((h) => ({
        ...(h.at instanceof Date && !Number.isNaN(h.at.getTime()) ? { time: h.at.toISOString() } : {}),
        from: h.from,
        to: h.to,
        ...(h.actor !== undefined ? { actor: h.actor } : {}),
        ...(h.reason !== undefined ? { reason: h.reason } : {}),
      })),
      auditedEvents: events.list,
      auditedEventsOmitted: events.omitted,
    };
    if (f.sizeBits !== undefined) row.sizeBits = f.sizeBits;
    return row;
  });
}
