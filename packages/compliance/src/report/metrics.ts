import type { AuditRecord } from '../audit/types.js';
import type { CcAuditedEvent, MetricCounts, OperationMetrics } from './types.js';

const DAY_MS = 86_400_000;

/** Audit types that are key operations (availability's denominator). */
/** HsmError codes that are the caller's, not the service's (see availabilityScore). */
export const CALLER_ERROR_CODES: ReadonlySet<string> = new Set([
  'KeyNotFound',
  'KeyAlreadyExists',
  'InvalidArgument',
  'KeyUsageNotAllowed',
  'UnsupportedAlgorithm',
  'InvalidSignatureEncoding',
  'KeyExpired',
]);

export const KEY_OPERATION_TYPES: ReadonlySet<string> = new Set(['key.generate', 'key.sign', 'key.verify', 'key.access', 'key.rotate', 'key.destroy', 'key.import']);

/** HsmError codes that mean "refused by policy": a failed key operation with one counts as a security violation. */
export const POLICY_REFUSAL_CODES: ReadonlySet<string> = new Set(['PolicyViolation', 'KeyUsageNotAllowed', 'KeyExpired', 'IllegalStateTransition']);

/** Key-management record types listed per key in the Common Criteria table. */
export const LIFECYCLE_RECORD_TYPES: ReadonlySet<string> = new Set(['key.generate', 'key.rotate', 'key.state', 'key.destroy', 'key.import']);

const MAX_EVENTS_PER_KEY = 100;

function zero(): MetricCounts {
  return { operations: 0, keyGenerations: 0, signs: 0, verifies: 0, keyAccesses: 0, failures: 0, lookupMisses: 0, securityViolations: 0 };
}

/**
 * A key lookup that found no key: `keys create` (and any caller checking whether an id is free)
 * asks first, and "no such key" is the answer it wants. Counting it as a failure turned every
 * clean `keys create` into a failure in the report. Other operations that name a missing key
 * (sign, verify, destroy) stay failures.
 */
export function isLookupMiss(r: Pick<AuditRecord, 'type' | 'outcome' | 'errorCode'>): boolean {
  return r.type === 'key.access' && r.outcome === 'failure' && r.errorCode === 'KeyNotFound';
}

function dayKey(ms: number): string {
  return new Date(Math.floor(ms / DAY_MS) * DAY_MS).toISOString().slice(0, 10);
}

/**
 * Accumulates the report's metrics one record at a time (the records are streamed, never held):
 * totals and per-UTC-day buckets, plus the successful key operations availability needs and,
 * for Common Criteria, each key's lifecycle records.
 */
export class MetricsCollector {
  readonly totals = zero();
  records = 0;
  successfulOperations = 0;
  private readonly days = new Map<string, MetricCounts>();
  private readonly order: string[] = [];
  private readonly events = new Map<string, { list: CcAuditedEvent[]; omitted: number }>();

  constructor(
    period: { from: Date; to: Date },
    private readonly trackKeys?: ReadonlySet<string>,
  ) {
    const first = Math.floor(period.from.getTime() / DAY_MS) * DAY_MS;
    const last = period.to.getTime() - 1;
    for (let t = first; t <= last; t += DAY_MS) {
      const k = dayKey(t);
      this.days.set(k, zero());
      this.order.push(k);
    }
  }

  add(r: AuditRecord): void {
    this.records++;
    const day = this.days.get(dayKey(Date.parse(r.time)));
    const buckets = day ? [this.totals, day] : [this.totals];
    const ok = r.outcome === 'success';
    const isOp = KEY_OPERATION_TYPES.has(r.type);
    const miss = isLookupMiss(r);
    const security = r.type === 'security.event' || r.type === 'auth.failure' || (isOp && !ok && r.errorCode !== undefined && POLICY_REFUSAL_CODES.has(r.errorCode));
    for (const b of buckets) {
      if (isOp) b.operations++;
      if (ok && r.type === 'key.generate') b.keyGenerations++;
      if (ok && r.type === 'key.sign') b.signs++;
      if (ok && r.type === 'key.verify') b.verifies++;
      if (r.type === 'key.access') b.keyAccesses++;
      if (miss) b.lookupMisses++;
      else if (!ok) b.failures++;
      if (security) b.securityViolations++;
    }
    // A caller's mistake (no such key, bad argument) is recorded as a failure but says nothing
    // about whether the HSM was available: availability counts it as served.
    if (isOp && (ok || (r.errorCode !== undefined && CALLER_ERROR_CODES.has(r.errorCode)))) this.successfulOperations++;
    if (this.trackKeys && LIFECYCLE_RECORD_TYPES.has(r.type)) {
      const key = r.keyId ?? (r.baseKeyId !== undefined && r.keyVersion !== undefined ? `${r.baseKeyId}.v${r.keyVersion}` : undefined);
      if (key !== undefined && this.trackKeys.has(key)) {
        const e = this.events.get(key) ?? { list: [], omitted: 0 };
        if (e.list.length < MAX_EVENTS_PER_KEY) e.list.push({ time: r.time, type: r.type, outcome: r.outcome, actor: r.actor, seq: r.seq });
        else e.omitted++;
        this.events.set(key, e);
      }
    }
  }

  metrics(): OperationMetrics {
    return { records: this.records, totals: { ...this.totals }, perDay: this.order.map((date) => ({ date, ...this.days.get(date)! })) };
  }

  eventsOf(keyId: string): { list: CcAuditedEvent[]; omitted: number } {
    return this.events.get(keyId) ?? { list: [], omitted: 0 };
  }
}
