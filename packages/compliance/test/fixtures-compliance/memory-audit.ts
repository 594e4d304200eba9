import { createHash } from 'node:crypto';
import type { AuditQuery, AuditReader, AuditRecord, AuditSettings, AuditVerifyResult } from '../../src/audit/types.js';

/**
 * An in-memory AuditReader for the compliance tests. It stands for the audit store: its records
 * are a plain array here, because the store's own integrity (hash chain, checkpoints, tamper
 * detection) is what the audit tests (test/audit-*) prove. It honours the query like the store
 * does (half-open [from, to), types, key filters, afterSeq, limit) and remembers every query, so
 * tests can check that rules read period-scoped streams.
 */
export class MemoryAuditReader implements AuditReader {
  readonly queries: AuditQuery[] = [];
  /** Records handed out by iterate(), over all calls. */
  yielded = 0;

  constructor(
    readonly records: AuditRecord[],
    readonly settings: AuditSettings = defaultSettings(),
    private readonly verification: Partial<AuditVerifyResult> = {},
  ) {}

  async *iterate(query: AuditQuery = {}): AsyncIterable<AuditRecord> {
    this.queries.push(query);
    let n = 0;
    for (const r of this.records) {
      const t = Date.parse(r.time);
      if (query.from && t < query.from.getTime()) continue;
      if (query.to && t >= query.to.getTime()) continue;
      if (query.types && !query.types.includes(r.type)) continue;
      if (query.keyId !== undefined && r.keyId !== query.keyId) continue;
      if (query.baseKeyId !== undefined && r.baseKeyId !== query.baseKeyId) continue;
      if (query.afterSeq !== undefined && r.seq <= query.afterSeq) continue;
      if (query.limit !== undefined && n >= query.limit) return;
      n++;
      this.yielded++;
      yield r;
    }
  }

  async verify(): Promise<AuditVerifyResult> {
    return { ok: true, records: this.records.length, checkpoints: Math.ceil(this.records.length / 10), message: `${this.records.length} records and their checkpoints verified`, durationMs: 3, ...this.verification };
  }

  async oldestRecordTime(): Promise<Date | undefined> {
    const first = this.records[0];
    return first ? new Date(first.time) : undefined;
  }
}

export function defaultSettings(over: Partial<AuditSettings> = {}): AuditSettings {
  return { retentionDays: 365, hotDays: 90, failClosed: true, checkpointsSigned: true, checkpointKeyId: 'audit-checkpoint', checkpointBackend: 'pkcs11', alertsConfigured: true, ...over };
}

export type RecordInput = Partial<Omit<AuditRecord, 'seq' | 'prevHash' | 'hash'>> & Pick<AuditRecord, 'type' | 'time'>;

/** Builds a chain of records (seq from 1, real SHA-256 links) with sensible defaults. */
export function chain(inputs: RecordInput[]): AuditRecord[] {
  let prev = '0'.repeat(64);
  return inputs.map((input, i) => {
    const body = { actor: 'alice@example.com', outcome: 'success' as const, origin: 'node-1', ...input, seq: i + 1 };
    const hash = createHash('sha256').update(prev).update(JSON.stringify(body)).digest('hex');
    const r: AuditRecord = { ...body, prevHash: prev, hash };
    prev = hash;
    return r;
  });
}
