import type { AuditRecord } from '../audit/types.js';
import type { KeyLifecycleState } from './inputs.js';
import type { EvidenceValue, Finding, FindingStatus, RecordScanner, Rule, RuleContext, Severity, VersionEntry } from './types.js';

export const DAY_MS = 86_400_000;
export const HOUR_MS = 3_600_000;

/** States from which a version may (still or again) sign: PreActivation, Active, Suspended. */
export const SIGNING_CAPABLE_STATES: ReadonlySet<KeyLifecycleState> = new Set(['PreActivation', 'Active', 'Suspended']);

export function canSign(entry: VersionEntry): boolean {
  const v = entry.version;
  return SIGNING_CAPABLE_STATES.has(v.state) && (v.usages.length === 0 || v.usages.includes('sign'));
}

/** A private key that still exists (not Destroyed). */
export function exists(entry: VersionEntry): boolean {
  return entry.version.state !== 'Destroyed';
}

export function iso(d: Date): string {
  return d.toISOString();
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

type RuleRef = Pick<Rule, 'id' | 'severity'>;

export function finding(
  rule: RuleRef,
  status: Exclude<FindingStatus, 'pass' | 'not-applicable'>,
  severity: Severity,
  message: string,
  remediation: string,
  extra: { keyId?: string | undefined; time?: string | undefined; evidence?: Record<string, EvidenceValue | undefined> } = {},
): Finding {
  const f: Finding = { ruleId: rule.id, status, severity, message, remediation };
  if (extra.keyId !== undefined) f.keyId = extra.keyId;
  if (extra.time !== undefined) f.time = extra.time;
  if (extra.evidence) {
    const ev: Record<string, EvidenceValue> = {};
    for (const [k, v] of Object.entries(extra.evidence)) if (v !== undefined) ev[k] = v;
    if (Object.keys(ev).length > 0) f.evidence = ev;
  }
  return f;
}

export function pass(rule: RuleRef, message: string, evidence?: Record<string, EvidenceValue>): Finding {
  return { ruleId: rule.id, status: 'pass', severity: rule.severity, message, remediation: '', ...(evidence ? { evidence } : {}) };
}

export function notApplicable(rule: RuleRef, message: string): Finding {
  return { ruleId: rule.id, status: 'not-applicable', severity: rule.severity, message, remediation: '' };
}

/** Counts matching records per key, remembering the first one (aggregated findings instead of one per record). */
export class PerKeyTally<T = undefined> {
  readonly entries = new Map<string, { count: number; first: AuditRecord; extra: T }>();

  add(key: string, record: AuditRecord, extra: T): void {
    const e = this.entries.get(key);
    if (e) e.count++;
    else this.entries.set(key, { count: 1, first: record, extra });
  }

  get size(): number {
    return this.entries.size;
  }

  *[Symbol.iterator](): IterableIterator<[string, { count: number; first: AuditRecord; extra: T }]> {
    yield* this.entries;
  }
}

/** The key a record is about, for messages: keyId, else base.vN, else base id, else "(no key)". */
export function recordKey(r: AuditRecord): string {
  if (r.keyId) return r.keyId;
  if (r.baseKeyId && r.keyVersion !== undefined) return `${r.baseKeyId}.v${r.keyVersion}`;
  return r.baseKeyId ?? '(no key)';
}

/**
 * When a signature was made, for the rules: a logical-key sign is dated by `details.signedAt` —
 * the moment the registry confirmed its version Active (core's OperationEvent.signedAt) — not by
 * the record's append time, which may fall after a concurrent rotation deactivated the version
 * the signature was already bound to (issue 18 item 9). Other records: their time.
 */
export function signatureTime(r: AuditRecord): Date {
  const at = r.type === 'key.sign' ? r.details?.['signedAt'] : undefined;
  if (typeof at === 'string') {
    const t = Date.parse(at);
    // a signedAt after the record itself cannot be the signing moment: the record's time wins
    if (!Number.isNaN(t) && t <= Date.parse(r.time)) return new Date(t);
  }
  return new Date(r.time);
}

/** A detail value as a trimmed string ('' when absent). */
export function detail(r: AuditRecord, name: string): string {
  const v = r.details?.[name];
  return v === undefined || v === null ? '' : String(v).trim();
}

/** Distinct, non-empty names in a comma/space separated approvers detail. */
export function approverSet(r: AuditRecord): Set<string> {
  const raw = detail(r, 'approvers') || detail(r, 'approvedBy');
  return new Set(
    raw
      .split(/[,;\s]+/)
      .map((s) => s.trim())
      .filter((s) => s.length > 0),
  );
}

/**
 * A rule that reads audit records: `scan` sets up from the inventory and returns the scanner;
 * `evaluate` (the rule on its own) streams the period's records of the scanner's types through it.
 */
export function scanningRule(def: Omit<Rule, 'evaluate' | 'scan'> & { scan(this: Rule, ctx: RuleContext): RecordScanner }): Rule {
  const rule: Rule = {
    ...def,
    scan: def.scan,
    async evaluate(ctx: RuleContext): Promise<Finding[]> {
      const scanner = rule.scan!(ctx);
      for await (const r of ctx.records(scanner.types)) scanner.visit(r);
      return scanner.finish();
    },
  };
  return rule;
}
