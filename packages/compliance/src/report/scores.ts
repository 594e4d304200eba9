import type { AuditSettings, AuditVerifyResult } from '../audit/types.js';
import type { Finding, Rule, Severity } from '../rules/types.js';
import type { Score } from './types.js';

/** Points a rule's most severe violation takes off the integrity or confidentiality score. */
export const SCORE_WEIGHTS: Readonly<Record<Severity, number>> = Object.freeze({ CRIT: 25, HIGH: 15, MED: 8, LOW: 3, INFO: 0 });

/** Rules whose condition a score already counts directly (so it is not subtracted twice). */
const INTEGRITY_DIRECT = new Set(['PCI-10.3', 'NIST-AU-9']);
const CONFIDENTIALITY_DIRECT = new Set(['PCI-3.6.1.2']);

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** Per rule of `category` with violations: the weight of its most severe violation. */
function penalties(findings: readonly Finding[], rules: readonly Rule[], category: Rule['category'], exclude: ReadonlySet<string>): { total: number; rules: string[] } {
  const byId = new Map(rules.map((r) => [r.id, r]));
  const worst = new Map<string, number>();
  for (const f of findings) {
    if (f.status !== 'violation' || exclude.has(f.ruleId) || byId.get(f.ruleId)?.category !== category) continue;
    worst.set(f.ruleId, Math.max(worst.get(f.ruleId) ?? 0, SCORE_WEIGHTS[f.severity]));
  }
  let total = 0;
  for (const w of worst.values()) total += w;
  return { total, rules: [...worst.keys()].sort() };
}

function weightsText(): string {
  return `CRIT ${SCORE_WEIGHTS.CRIT}, HIGH ${SCORE_WEIGHTS.HIGH}, MED ${SCORE_WEIGHTS.MED}, LOW ${SCORE_WEIGHTS.LOW}`;
}

export function availabilityScore(operations: number, successful: number): Score {
  return {
    value: operations === 0 ? 100 : round1((100 * successful) / operations),
    formula:
      'availability = 100 × served key operations ÷ all key operations in the period (audit types key.generate, key.sign, key.verify, key.access, key.rotate, key.destroy, key.import; served = succeeded, or failed with a caller error — KeyNotFound, KeyAlreadyExists, InvalidArgument, KeyUsageNotAllowed, UnsupportedAlgorithm, InvalidSignatureEncoding, KeyExpired; a verification that finds a signature invalid is a successful operation); 100 when there were none',
    inputs: { operations, successful },
  };
}

export function integrityScore(verification: AuditVerifyResult, settings: AuditSettings, findings: readonly Finding[], rules: readonly Rule[]): Score {
  const p = penalties(findings, rules, 'integrity', INTEGRITY_DIRECT);
  const value = !verification.ok ? 0 : Math.max(0, 100 - (settings.checkpointsSigned ? 0 : 30) - (settings.alertsConfigured ? 0 : 10) - p.total);
  return {
    value: round1(value),
    formula:
      'integrity = 0 when the audit hash chain fails verification; otherwise 100 − 30 when checkpoints are not signed − 10 when no tamper alert is configured − for each integrity rule of this report with violations (other than PCI-10.3 and NIST-AU-9, whose conditions are the two terms before) the weight of its most severe violation (' +
      weightsText() +
      '); never below 0',
    inputs: { chainVerified: verification.ok, checkpointsSigned: settings.checkpointsSigned, alertsConfigured: settings.alertsConfigured, rulePenalty: p.total, rulesPenalised: p.rules.length },
  };
}

export function confidentialityScore(privateKeys: number, hardwareBacked: number, findings: readonly Finding[], rules: readonly Rule[]): Score {
  const p = penalties(findings, rules, 'confidentiality', CONFIDENTIALITY_DIRECT);
  const share = privateKeys === 0 ? 100 : (100 * hardwareBacked) / privateKeys;
  return {
    value: round1(Math.max(0, share - p.total)),
    formula:
      'confidentiality = 100 × hardware-backed private keys ÷ private keys in the inventory that are not Destroyed (100 when there are none; a key on a backend without module facts counts as not hardware-backed) − for each confidentiality rule of this report with violations (other than PCI-3.6.1.2, whose condition is the share) the weight of its most severe violation (' +
      weightsText() +
      '); never below 0',
    inputs: { privateKeys, hardwareBacked, hardwareShare: round1(share), rulePenalty: p.total, rulesPenalised: p.rules.length },
  };
}
