import type { AuditEventType, AuditReader, AuditRecord, AuditVerifyResult } from '../audit/types.js';
import type { ResolvedComplianceConfig } from './config.js';
import type { InventoryKeyVersion, InventoryLogicalKey, InventoryStateChange, KeyLifecycleState, ModuleFacts } from './inputs.js';

/** Severities of COMPLIANCE-RULES.md, most severe first. */
export const SEVERITIES = ['CRIT', 'HIGH', 'MED', 'LOW', 'INFO'] as const;
export type Severity = (typeof SEVERITIES)[number];

/** Rank for sorting: CRIT 0 … INFO 4. */
export function severityRank(s: Severity): number {
  return SEVERITIES.indexOf(s);
}

/** The more severe of two. */
export function maxSeverity(a: Severity, b: Severity): Severity {
  return severityRank(a) <= severityRank(b) ? a : b;
}

/**
 * What a finding says:
 * - `violation`: the rule's condition holds (counted by severity in the report);
 * - `warning`: it will hold soon or cannot be ruled out (e.g. a cryptoperiod ending within the warning window);
 * - `info`: the condition holds at INFO severity (a notice, e.g. ALG-PQ's migration note before 2031);
 * - `pass`: the rule was evaluated and its condition does not hold;
 * - `not-applicable`: the rule's input is absent (e.g. ALG-KEK without backup facts).
 */
export const FINDING_STATUSES = ['violation', 'warning', 'info', 'pass', 'not-applicable'] as const;
export type FindingStatus = (typeof FINDING_STATUSES)[number];

export type EvidenceValue = string | number | boolean;

export interface Finding {
  ruleId: string;
  status: FindingStatus;
  /** For violations, warnings and notices: this finding's severity. For passes: the severity the rule carries when violated. */
  severity: Severity;
  /** The key version (or logical key, or backend) the finding is about. */
  keyId?: string;
  /** ISO 8601 time of the event the finding is about (first occurrence when aggregated). */
  time?: string;
  message: string;
  /** What to do about it (empty for passes). */
  remediation: string;
  /** Non-secret facts behind the finding: counts, seq numbers, dates. */
  evidence?: Record<string, EvidenceValue>;
}

/** Frameworks a report can be made for. */
export const FRAMEWORKS = ['fips-140-2', 'fips-140-3', 'common-criteria', 'pci-dss', 'soc2', 'fisma'] as const;
export type Framework = (typeof FRAMEWORKS)[number];

export const FRAMEWORK_NAMES: Readonly<Record<Framework, string>> = Object.freeze({
  'fips-140-2': 'FIPS 140-2 (with SP 800-131A Rev 2 / FIPS 186-5 algorithm rules)',
  'fips-140-3': 'FIPS 140-3 (with SP 800-131A Rev 2 / FIPS 186-5 algorithm rules)',
  'common-criteria': 'Common Criteria (FCS_CKM / FCS_COP / FAU_GEN; HSM protection profile EN 419 221-5)',
  'pci-dss': 'PCI DSS v4.0.1',
  soc2: 'SOC 2 (Trust Services Criteria 2017, CC6.1)',
  fisma: 'FISMA (NIST SP 800-53 Rev 5)',
});

export function isFramework(value: unknown): value is Framework {
  return typeof value === 'string' && (FRAMEWORKS as readonly string[]).includes(value);
}

/** Which part of the report's triad a rule's violations lower (see the score formulas). */
export type RuleCategory = 'availability' | 'integrity' | 'confidentiality' | 'governance';

/** A state of a key version at an instant, from its recorded history (undefined: it did not exist yet). */
export type StateAt = KeyLifecycleState | undefined;

/** A version with its logical key and its history, oldest change first. */
export interface VersionEntry {
  version: InventoryKeyVersion;
  key: InventoryLogicalKey;
  history: InventoryStateChange[];
}

/** What every rule evaluates against. Built once per evaluation by `createRuleContext`. */
export interface RuleContext {
  /** The evaluation instant (the injectable clock). Date-dependent severities use it. */
  readonly now: Date;
  /** The report period, half-open [from, to): audit records are read only inside it. */
  readonly period: { readonly from: Date; readonly to: Date };
  readonly framework: Framework;
  /** FIPS 140 security level the module must reach (fips-140-2 / fips-140-3). */
  readonly requiredLevel: 1 | 2 | 3 | 4;
  readonly config: ResolvedComplianceConfig;
  readonly keys: readonly InventoryLogicalKey[];
  readonly versions: readonly VersionEntry[];
  readonly modules: readonly ModuleFacts[];
  readonly audit: AuditReader;
  /** A version by its backend key id (`base.vN`), or by base id and version number. */
  findVersion(keyId: string | undefined, baseKeyId?: string, version?: number): VersionEntry | undefined;
  /** The version's state at `time` from its recorded history (falls back to its dates when it has none). */
  stateAt(entry: VersionEntry, time: Date): StateAt;
  /** Module facts of a backend `type`. */
  moduleFor(backend: string | undefined): ModuleFacts | undefined;
  /** The period's audit records of these types (all when omitted), streamed in seq order. */
  records(types?: readonly AuditEventType[]): AsyncIterable<AuditRecord>;
  /** Whether a record's actor is an automated one (scheduler, retention), per config.audit.automatedActorPrefixes. */
  isAutomatedActor(actor: string): boolean;
  /** The audit chain's verification, run once per evaluation. */
  verification(): Promise<AuditVerifyResult>;
}

/**
 * The record-reading half of a rule: it receives the period's audit records (of `types`, or all
 * when omitted) one at a time, then `finish()` returns the findings. The engine feeds one shared
 * streaming pass to every scanner of a report; `evaluate` runs the scan on its own.
 */
export interface RecordScanner {
  readonly types?: readonly AuditEventType[];
  visit(record: AuditRecord): void;
  finish(): Promise<Finding[]> | Finding[];
}

export interface Rule {
  /** Stable id from COMPLIANCE-RULES.md (kept in code, tests and reports). */
  readonly id: string;
  readonly title: string;
  /** Frameworks whose reports run this rule. */
  readonly frameworks: readonly Framework[];
  /** The highest severity the rule assigns. */
  readonly severity: Severity;
  /** Severity of the rule's main condition at an instant (for rules whose severity changes on a date). */
  severityAt?(now: Date, config: ResolvedComplianceConfig): Severity;
  /** Standard and section the rule comes from. */
  readonly source: string;
  readonly category: RuleCategory;
  /** Present on rules that read audit records (see RecordScanner). */
  scan?(ctx: RuleContext): RecordScanner;
  /** Evaluates the rule on its own; always returns at least one finding (a pass or not-applicable when nothing holds). */
  evaluate(ctx: RuleContext): Promise<Finding[]>;
}
