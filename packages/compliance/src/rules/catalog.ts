import { HsmError, toHsmError } from '@olocus/hsm-core';
import { ALGORITHM_RULES, MODULE_RULES } from './algorithm-rules.js';
import { CC_RULES } from './cc-rules.js';
import { LIFECYCLE_RULES } from './lifecycle-rules.js';
import { NIST_RULES } from './nist-rules.js';
import { PCI_RULES } from './pci-rules.js';
import type { AuditRecord } from '../audit/types.js';
import { FRAMEWORKS, severityRank, type Finding, type Framework, type RecordScanner, type Rule, type RuleContext } from './types.js';

/** Every rule, in COMPLIANCE-RULES.md order (A–E), plus MOD-LEVEL (the FIPS frameworks' security-level option). */
export const RULES: readonly Rule[] = Object.freeze([...ALGORITHM_RULES, ...MODULE_RULES, ...LIFECYCLE_RULES, ...PCI_RULES, ...NIST_RULES, ...CC_RULES]);

/** Which rules each framework runs (derived from each rule's `frameworks`). */
export const FRAMEWORK_RULES: Readonly<Record<Framework, readonly string[]>> = Object.freeze(
  Object.fromEntries(FRAMEWORKS.map((f) => [f, Object.freeze(RULES.filter((r) => r.frameworks.includes(f)).map((r) => r.id))])) as Record<Framework, readonly string[]>,
);

export function rulesFor(framework: Framework): Rule[] {
  return RULES.filter((r) => r.frameworks.includes(framework));
}

export function getRule(id: string): Rule {
  const rule = RULES.find((r) => r.id === id);
  if (!rule) throw new HsmError('InvalidArgument', `unknown compliance rule ${JSON.stringify(id)}`, { details: { ruleId: id } });
  return rule;
}

/** Runs one rule on its own; a failure becomes an HsmError naming the rule (an HsmError from a store passes through). */
export async function evaluateRule(rule: Rule, ctx: RuleContext): Promise<Finding[]> {
  try {
    return await rule.evaluate(ctx);
  } catch (error) {
    throw wrap(rule, error);
  }
}

/**
 * Evaluates rules over one shared streaming pass of the audit period: every rule that reads
 * records gets a scanner (`rule.scan`), the period's records of the union of their types are
 * read once and handed to each scanner that asked for that type (and to `extraVisitors`, e.g.
 * the report's metrics), then each rule finishes. Rules without a scanner are evaluated after
 * the pass, one at a time. Findings come back sorted: by status (violation, warning, info, pass,
 * not-applicable), most severe first (passes in rule order), then by rule order, key and time.
 */
export async function evaluateRules(rules: readonly Rule[], ctx: RuleContext, extraVisitors: readonly { visit(record: AuditRecord): void }[] = []): Promise<Finding[]> {
  const scanners = new Map<Rule, RecordScanner>();
  for (const rule of rules) {
    if (!rule.scan) continue;
    try {
      scanners.set(rule, rule.scan(ctx));
    } catch (error) {
      throw wrap(rule, error);
    }
  }
  if (scanners.size > 0 || extraVisitors.length > 0) {
    const all = extraVisitors.length > 0 || [...scanners.values()].some((s) => !s.types || s.types.length === 0);
    const union = all ? undefined : [...new Set([...scanners.values()].flatMap((s) => [...s.types!]))];
    const byType = new Map<string, [Rule, RecordScanner][]>();
    const everything: [Rule, RecordScanner][] = [];
    for (const [rule, s] of scanners) {
      if (!s.types || s.types.length === 0) everything.push([rule, s]);
      else for (const t of new Set(s.types)) byType.set(t, [...(byType.get(t) ?? []), [rule, s]]);
    }
    const visit = (rule: Rule, s: RecordScanner, r: AuditRecord): void => {
      try {
        s.visit(r);
      } catch (error) {
        throw wrap(rule, error);
      }
    };
    try {
      for await (const r of ctx.records(union)) {
        for (const v of extraVisitors) v.visit(r);
        for (const [rule, s] of everything) visit(rule, s, r);
        const list = byType.get(r.type);
        if (list) for (const [rule, s] of list) visit(rule, s, r);
      }
    } catch (error) {
      // A rule's failure is already an HsmError naming it; anything else came from reading the log.
      throw toHsmError(error, 'Internal', `reading the audit log for the compliance evaluation failed: ${(error as Error)?.message ?? String(error)}`);
    }
  }
  const all: Finding[] = [];
  for (const rule of rules) {
    const scanner = scanners.get(rule);
    try {
      all.push(...(scanner ? await scanner.finish() : await rule.evaluate(ctx)));
    } catch (error) {
      throw wrap(rule, error);
    }
  }
  return sortFindings(all, rules);
}

function wrap(rule: Rule, error: unknown): HsmError {
  return toHsmError(error, 'Internal', `compliance rule ${rule.id} failed: ${(error as Error)?.message ?? String(error)}`, { details: { ruleId: rule.id } });
}

const STATUS_ORDER = ['violation', 'warning', 'info', 'pass', 'not-applicable'];

export function sortFindings(findings: Finding[], rules: readonly Rule[] = RULES): Finding[] {
  const order = new Map(rules.map((r, i) => [r.id, i]));
  return findings
    .map((f, i) => ({ f, i }))
    .sort(
      (a, b) =>
        STATUS_ORDER.indexOf(a.f.status) - STATUS_ORDER.indexOf(b.f.status) ||
        // Passes and not-applicable in rule order; the rest most severe first.
        (a.f.status === 'pass' || a.f.status === 'not-applicable' ? 0 : severityRank(a.f.severity) - severityRank(b.f.severity)) ||
        (order.get(a.f.ruleId) ?? 999) - (order.get(b.f.ruleId) ?? 999) ||
        (a.f.keyId ?? '').localeCompare(b.f.keyId ?? '') ||
        (a.f.time ?? '').localeCompare(b.f.time ?? '') ||
        a.i - b.i,
    )
    .map(({ f }) => f);
}
