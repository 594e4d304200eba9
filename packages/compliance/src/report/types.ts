import type { ResolvedComplianceConfig } from '../rules/config.js';
import type { EvidenceValue, FindingStatus, Framework, RuleCategory, Severity } from '../rules/types.js';

/**
 * A compliance report: a plain JSON-safe object (every time an ISO 8601 string), described by
 * schema/report.schema.json and rendered by renderJson / renderMarkdown / renderHtml.
 */
export interface ComplianceReport {
  /** Version of this report format (the schema's). */
  reportVersion: 1;
  metadata: ReportMetadata;
  summary: ReportSummary;
  scores: { availability: Score; integrity: Score; confidentiality: Score };
  metrics: OperationMetrics;
  /** Findings whose condition holds, most severe first. */
  violations: ReportFinding[];
  /** Conditions about to hold, or that could not be ruled out. */
  warnings: ReportFinding[];
  /** INFO findings (e.g. ALG-PQ migration notes before the deadline). */
  notices: ReportFinding[];
  passes: ReportFinding[];
  notApplicable: ReportFinding[];
  recommendations: Recommendation[];
  modules: ModuleReport[];
  auditIntegrity: AuditIntegrity;
  inventory: InventorySummary;
  /** Common Criteria only: the per-key table. */
  commonCriteria?: { keys: CcKeyRow[] };
}

export interface ReportMetadata {
  framework: Framework;
  frameworkName: string;
  /** FIPS 140 security level required (fips-140-2 / fips-140-3). */
  level?: 1 | 2 | 3 | 4;
  /** Half-open: records with from <= time < to. */
  period: { from: string; to: string };
  generatedAt: string;
  tool: { name: string; version: string };
  inventorySource: string;
  /** The validated configuration the rules used (defaults filled in). */
  config: ResolvedComplianceConfig;
  /** The rules this framework runs, with their severity at generatedAt. */
  rules: ReportRule[];
}

export interface ReportRule {
  id: string;
  title: string;
  source: string;
  category: RuleCategory;
  severity: Severity;
}

export type ReportStatus = 'compliant' | 'needs-attention' | 'non-compliant';

export interface ReportSummary {
  /** non-compliant: a CRIT or HIGH violation; needs-attention: other violations or warnings; compliant: neither. */
  status: ReportStatus;
  violations: number;
  warnings: number;
  notices: number;
  passes: number;
  notApplicable: number;
  violationsBySeverity: Record<Severity, number>;
  rulesEvaluated: number;
  /** Rules with at least one violation. */
  rulesViolated: number;
}

export interface Score {
  /** 0–100, one decimal. */
  value: number;
  /** How the value is computed, in words. */
  formula: string;
  /** The numbers the formula used. */
  inputs: Record<string, number | boolean>;
}

export interface MetricCounts {
  /** Key operations (key.generate/sign/verify/access/rotate/destroy/import), success and failure. */
  operations: number;
  /** Successful key.generate. */
  keyGenerations: number;
  /** Successful key.sign. */
  signs: number;
  /** Successful key.verify (whatever the signature's validity). */
  verifies: number;
  /** key.access records (public-key reads, lookups). */
  keyAccesses: number;
  /**
   * Records of any type with outcome failure, except lookups that found no key (lookupMisses):
   * `keys create` asks whether the id is free, and "no such key" is the answer it wants.
   */
  failures: number;
  /** key.access records that answered KeyNotFound: an existence check's answer, not a failed operation. */
  lookupMisses: number;
  /** security.event and auth.failure records, and key operations refused by policy. */
  securityViolations: number;
}

export interface OperationMetrics {
  /** Every audit record in the period. */
  records: number;
  totals: MetricCounts;
  /** One bucket per UTC day of the period, in order. */
  perDay: (MetricCounts & { date: string })[];
}

export interface ReportFinding {
  ruleId: string;
  title: string;
  source: string;
  status: FindingStatus;
  severity: Severity;
  keyId?: string;
  time?: string;
  message: string;
  remediation: string;
  evidence?: Record<string, EvidenceValue>;
}

export interface Recommendation {
  severity: Severity;
  text: string;
  ruleIds: string[];
  /** How many findings this recommendation answers. */
  findings: number;
}

export interface ModuleReport {
  backend: string;
  description: string;
  manufacturer?: string;
  model?: string;
  serialNumber?: string;
  firmwareVersion?: string;
  libraryVersion?: string;
  fips: {
    standard: string;
    level: number;
    approvedMode: boolean;
    certificate?: string;
    certificateStatus?: string;
    eddsaValidated?: boolean;
    notes: string;
    /**
     * How the facts above are known: measured (read from the device), attested (the operator's
     * config), provider-claim (a cloud provider's documentation) or none. Never shown as measured
     * unless measured.
     */
    evidence: 'measured' | 'attested' | 'provider-claim' | 'none';
    /** Contradictions the backend found (each is also a MOD-STATUS finding). */
    findings?: string[];
  };
  hardwareBacked: boolean;
  persistentKeys: boolean;
  algorithms: string[];
}

export interface AuditIntegrity {
  ok: boolean;
  records: number;
  checkpoints: number;
  problem?: string;
  firstBadSeq?: number;
  /** The audit log's witnesses asked during verification, with what each answered. */
  witnesses?: Array<{ witness: string; kind: string; status: string; size?: number }>;
  message: string;
  durationMs: number;
  checkpointsSigned: boolean;
  checkpointKeyId?: string;
  checkpointBackend?: string;
  /** sha256 of the checkpoint key's SPKI, when the manager was given it. */
  checkpointPublicKeySha256?: string;
  alertsConfigured: boolean;
  failClosed: boolean;
  retentionDays: number;
  hotDays: number;
  oldestRecord?: string;
}

export interface InventorySummary {
  source: string;
  logicalKeys: number;
  versions: number;
  byState: Record<string, number>;
  byAlgorithm: Record<string, number>;
  byBackend: Record<string, number>;
}

export interface CcLifecycleEntry {
  time?: string;
  from: string | null;
  to: string;
  actor?: string;
  reason?: string;
}

export interface CcAuditedEvent {
  time: string;
  type: string;
  outcome: string;
  actor: string;
  seq: number;
}

export interface CcKeyRow {
  keyId: string;
  baseKeyId: string;
  state: string;
  backend: string;
  algorithm: string;
  sizeBits?: number;
  standard: string;
  destructionMethod: string;
  /** The registry's recorded state changes. */
  lifecycle: CcLifecycleEntry[];
  /** Key-management audit records of this key in the period (at most 100; `auditedEventsOmitted` counts the rest). */
  auditedEvents: CcAuditedEvent[];
  auditedEventsOmitted: number;
}
