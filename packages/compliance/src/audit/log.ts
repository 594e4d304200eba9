import { createReadStream, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';
import type { KeyObject } from 'node:crypto';
import { HsmError } from '@olocus/hsm-core';
import { canonicalDetails, checkpointBody, ZERO_HASH, type RecordLike } from './jcs.js';
import { resolveOptions, type AuditLogOptions, type CheckpointSigner, type ResolvedAuditLogOptions } from './options.js';
import { openStore, storageError, type AuditStore } from './store.js';
import { AUDIT_EVENT_TYPES, type AuditCheckpoint, type AuditDetails, type AuditEventInput, type AuditQuery, type AuditReader, type AuditRecord, type AuditSettings, type AuditVerifyResult } from './types.js';
import { verifyChain } from './verify.js';

/** Detail keys that look like a secret are refused (the value is never echoed). */
export const SECRET_KEY_PATTERN = /pin|pass|secret|private|password|credential|token_?key/i;
const TYPES: ReadonlySet<string> = new Set(AUDIT_EVENT_TYPES);
const DIGEST = /^sha256:[0-9a-f]{64}$/;
const SYSTEM_ACTOR = 'olocus-audit';
const PAGE = 5000;

export interface AuditStats {
  appends: number;
  /** Write transactions (group-commit batches) committed. */
  transactions: number;
  /** Batches that failed (every waiter rejected). */
  failures: number;
  checkpoints: number;
  /** Largest batch written in one transaction. */
  largestBatch: number;
  /** Longest write transaction in ms (SQLite: time the event loop was held by the synchronous driver). */
  maxTransactionMs: number;
  pending: number;
}

export interface AuditExportSummary {
  records: number;
  checkpoints: number;
  firstSeq?: number;
  lastSeq?: number;
}

export interface AuditTailOptions {
  limit?: number;
  follow?: boolean;
  signal?: AbortSignal;
  /** Poll interval while following (default 250 ms). */
  pollMs?: number;
}

export interface AuditVerifyOptions {
  /** SPKI DER (or a KeyObject) of the checkpoint key; defaults to the signer's public key. */
  publicKey?: Uint8Array | KeyObject;
}

export interface AuditPruneResult {
  removed: number;
  /** The seq the chain now starts after. */
  anchorSeq: number;
}

interface Pending {
  record: Omit<AuditRecord, 'seq' | 'prevHash' | 'hash'>;
  detailsJson: string | null;
  resolve: (r: AuditRecord) => void;
  reject: (e: unknown) => void;
}

function bad(message: string, field: string): HsmError {
  return new HsmError('InvalidArgument', message, { details: { field, auditCode: 'AuditInvalidRecord' } });
}

/** NUL (PostgreSQL refuses it) and lone surrogates (SQLite would store U+FFFD, breaking the hash). */
const ILL_FORMED = /\u0000|\p{Cs}/u;

function checkText(v: string, field: string): string {
  if (ILL_FORMED.test(v)) throw bad(`audit record: ${field} contains NUL or an unpaired surrogate (not storable as text)`, field);
  return v;
}

function optString(v: unknown, field: string, max = 1024): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw bad(`audit record: ${field} must be a non-empty string of at most ${max} characters`, field);
  return checkText(v, field);
}

/** Checks an input and turns it into the record's fields (all but seq, prevHash, hash). */
export function normalizeInput(input: AuditEventInput, origin: string, now: () => Date): { record: Pending['record']; detailsJson: string | null } {
  if (typeof input !== 'object' || input === null) throw bad('audit record: expected an object', '(root)');
  if (!TYPES.has(input.type)) throw bad(`audit record: type must be one of ${AUDIT_EVENT_TYPES.join(', ')}`, 'type');
  if (typeof input.actor !== 'string' || input.actor.trim().length === 0 || input.actor.length > 512) throw bad('audit record: actor must be a non-empty string (who performed the operation)', 'actor');
  checkText(input.actor, 'actor');
  if (input.outcome !== 'success' && input.outcome !== 'failure') throw bad("audit record: outcome must be 'success' or 'failure'", 'outcome');
  const time = input.time ?? now();
  if (!(time instanceof Date) || Number.isNaN(time.getTime())) throw bad('audit record: time must be a valid Date', 'time');
  const record: Pending['record'] = { time: time.toISOString(), type: input.type, actor: input.actor, outcome: input.outcome, origin: optString(input.origin, 'origin') ?? origin };
  const b = optString(input.backend, 'backend');
  if (b !== undefined) record.backend = b;
  const k = optString(input.keyId, 'keyId');
  if (k !== undefined) record.keyId = k;
  const bk = optString(input.baseKeyId, 'baseKeyId');
  if (bk !== undefined) record.baseKeyId = bk;
  if (input.keyVersion !== undefined) {
    if (!Number.isSafeInteger(input.keyVersion) || input.keyVersion < 0) throw bad('audit record: keyVersion must be a non-negative integer', 'keyVersion');
    record.keyVersion = input.keyVersion;
  }
  const alg = optString(input.algorithm, 'algorithm', 64);
  if (alg !== undefined) record.algorithm = alg;
  if (input.latencyMs !== undefined) {
    if (typeof input.latencyMs !== 'number' || !Number.isFinite(input.latencyMs) || input.latencyMs < 0) throw bad('audit record: latencyMs must be a finite number >= 0', 'latencyMs');
    record.latencyMs = Math.round(input.latencyMs * 1000) / 1000;
  }
  if (input.dataDigest !== undefined) {
    if (typeof input.dataDigest !== 'string' || !DIGEST.test(input.dataDigest)) throw bad('audit record: dataDigest must be sha256:<64 hex digits> (data is recorded by digest only)', 'dataDigest');
    record.dataDigest = input.dataDigest;
  }
  const ec = optString(input.errorCode, 'errorCode', 128);
  if (ec !== undefined) record.errorCode = ec;
  const reason = optString(input.reason, 'reason', 4096);
  if (reason !== undefined) record.reason = reason;
  let detailsJson: string | null = null;
  if (input.details !== undefined) {
    if (typeof input.details !== 'object' || input.details === null || Array.isArray(input.details)) throw bad('audit record: details must be an object of scalars', 'details');
    const details: AuditDetails = {};
    for (const [key, value] of Object.entries(input.details)) {
      if (SECRET_KEY_PATTERN.test(key)) {
        throw bad(`audit record: details key "${key}" looks like a secret (pin, passphrase, secret, private key, credential); secrets never enter the audit log — record a digest or leave it out`, `details.${key}`);
      }
      checkText(key, 'details');
      if (value === undefined) continue;
      if (typeof value === 'string') checkText(value, `details.${key}`);
      const t = typeof value;
      if (!(value === null || t === 'string' || t === 'boolean' || (t === 'number' && Number.isFinite(value)))) throw bad(`audit record: details.${key} must be a string, finite number, boolean or null`, `details.${key}`);
      details[key] = value;
    }
    record.details = details;
    detailsJson = canonicalDetails(details);
  }
  return { record, detailsJson };
}

function toRecord(r: RecordLike): AuditRecord {
  const out = { ...r } as AuditRecord;
  if (typeof r.details === 'string') {
    try {
      out.details = JSON.parse(r.details) as AuditDetails;
    } catch (cause) {
      throw new HsmError('StorageCorrupted', `audit record ${r.seq}: stored details are not JSON (the store was altered; run verify)`, { cause, details: { auditCode: 'AuditRecordCorrupted', seq: r.seq } });
    }
  }
  return out;
}

function writeFailure(error: unknown, target: string): HsmError {
  if (error instanceof HsmError && (error.code === 'DeviceUnavailable' || error.code === 'Internal') && error.details['auditCode'] === 'AuditWriteFailed') return error;
  if (error instanceof HsmError) {
    return new HsmError(error.code === 'Closed' ? 'DeviceUnavailable' : 'Internal', `audit store (${target}): the records could not be written: ${error.message}`, {
      cause: error,
      details: { auditCode: 'AuditWriteFailed', target, errorCode: error.code },
    });
  }
  return storageError(error, 'writing audit records', target);
}

async function* pagesOf(store: AuditStore, logName: string, afterSeq: number, toSeq?: number): AsyncGenerator<RecordLike[]> {
  let after = afterSeq;
  for (;;) {
    const page = await store.page(logName, after, PAGE, undefined, toSeq);
    if (page.length === 0) return;
    yield page;
    after = page[page.length - 1]!.seq;
    if (page.length < PAGE) return;
  }
}

async function write(out: Writable, line: string): Promise<void> {
  if (!out.write(line)) await once(out, 'drain');
}

/** The tamper-evident audit log (hash chain + checkpoints) over SQLite or PostgreSQL. */
export class AuditLog implements AuditReader {
  readonly settings: AuditSettings;
  readonly logName: string;
  readonly origin: string;
  readonly #o: ResolvedAuditLogOptions;
  readonly #store: AuditStore;
  #queue: Pending[] = [];
  #flushing = false;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #idle: Array<() => void> = [];
  #interval: NodeJS.Timeout | undefined;
  #lastCheckpointSize = 0;
  #autoPending = false;
  #lastSeq = 0;
  #checkpointing: Promise<AuditCheckpoint | undefined> | undefined;
  #state: 'open' | 'closing' | 'closed' = 'open';
  #stats: AuditStats = { appends: 0, transactions: 0, failures: 0, checkpoints: 0, largestBatch: 0, maxTransactionMs: 0, pending: 0 };

  /** @internal use openAuditLog */
  constructor(options: ResolvedAuditLogOptions, store: AuditStore, lastCheckpointSize: number) {
    this.#o = options;
    this.#store = store;
    this.logName = options.logName;
    this.origin = options.origin;
    this.#lastCheckpointSize = lastCheckpointSize;
    const signer = options.checkpoint.signer;
    this.settings = Object.freeze({
      retentionDays: options.retention.days,
      hotDays: options.retention.hotDays,
      failClosed: options.failClosed,
      checkpointsSigned: signer !== undefined,
      ...(signer ? { checkpointKeyId: signer.keyId, ...(signer.backend ? { checkpointBackend: signer.backend } : {}) } : {}),
      alertsConfigured: options.alertsConfigured,
    });
    if (options.checkpoint.intervalMs > 0) {
      this.#interval = setInterval(() => this.#autoCheckpoint(), options.checkpoint.intervalMs);
      this.#interval.unref();
    }
  }

  get storage(): 'sqlite' | 'postgres' {
    return this.#store.dialect;
  }

  get checkpointSigner(): CheckpointSigner | undefined {
    return this.#o.checkpoint.signer;
  }

  /**
   * Appends a record; resolves once it is durable (committed with synchronous=FULL / a
   * PostgreSQL commit) with its seq and hash. Appends are group-committed: all records queued
   * while a batch is being written go into the next transaction.
   */
  append(input: AuditEventInput): Promise<AuditRecord> {
    if (this.#state === 'closed') return Promise.reject(new HsmError('Closed', `audit log ${this.logName} is closed`, { details: { auditCode: 'AuditClosed' } }));
    let normalized: ReturnType<typeof normalizeInput>;
    try {
      normalized = normalizeInput(input, this.origin, this.#o.clock);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<AuditRecord>((resolve, reject) => {
      this.#queue.push({ ...normalized, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#flushing) return;
    if (this.#queue.length >= this.#o.groupCommit.maxBatch) {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      void this.#flushLoop();
      return;
    }
    if (this.#timer || this.#immediate) return;
    const delay = this.#o.groupCommit.maxDelayMs;
    if (delay === 0) {
      // no added wait: everything appended in this turn of the event loop goes in one batch, and
      // whatever arrives while a batch commits goes in the next one
      this.#immediate = setImmediate(() => {
        this.#immediate = undefined;
        void this.#flushLoop();
      });
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#flushLoop();
    }, delay);
  }

  async #flushLoop(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, this.#o.groupCommit.maxBatch);
        await this.#writeBatch(batch);
      }
    } finally {
      this.#flushing = false;
      const idle = this.#idle;
      this.#idle = [];
      for (const f of idle) f();
    }
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    const started = performance.now();
    let written: AuditRecord[];
    try {
      written = await this.#store.appendBatch(this.logName, batch);
    } catch (error) {
      const failure = writeFailure(error, this.#store.target);
      this.#stats.failures++;
      for (const p of batch) p.reject(failure);
      this.#notify(failure);
      return;
    }
    const ms = performance.now() - started;
    this.#stats.transactions++;
    this.#stats.appends += written.length;
    if (written.length > this.#stats.largestBatch) this.#stats.largestBatch = written.length;
    if (ms > this.#stats.maxTransactionMs) this.#stats.maxTransactionMs = ms;
    for (let i = 0; i < batch.length; i++) batch[i]!.resolve(written[i]!);
    const last = written[written.length - 1];
    if (last && last.seq > this.#lastSeq) this.#lastSeq = last.seq;
    if (last && last.seq - this.#lastCheckpointSize >= this.#o.checkpoint.everyRecords && this.#state === 'open') this.#autoCheckpoint();
  }

  #notify(error: unknown): void {
    try {
      this.#o.onFailure?.(error);
    } catch {
      // an alert sink that throws must not break the log
    }
  }

  #autoCheckpoint(): void {
    // one automatic checkpoint at a time: batches committed while it is being signed do not queue more
    if (this.#autoPending) return;
    this.#autoPending = true;
    this.checkpoint().then(
      () => {
        this.#autoPending = false;
        // records committed while it was being signed may already call for the next one
        if (this.#state === 'open' && this.#lastSeq - this.#lastCheckpointSize >= this.#o.checkpoint.everyRecords) this.#autoCheckpoint();
      },
      (error) => {
        // a failed checkpoint is retried by the next batch or interval, not in a loop
        this.#autoPending = false;
        this.#notify(error);
      },
    );
  }

  /** Waits until every record appended so far is written (or failed). */
  async flush(): Promise<void> {
    if (this.#queue.length === 0 && !this.#flushing) return;
    await new Promise<void>((resolve) => {
      this.#idle.push(resolve);
      if (!this.#flushing) {
        if (this.#timer) clearTimeout(this.#timer);
        this.#timer = undefined;
        void this.#flushLoop();
      }
    });
    if (this.#queue.length > 0) await this.flush();
  }

  /**
   * Writes a checkpoint of the current head (signed when the log has a signer), unless one
   * already covers it. Returns the newest checkpoint.
   */
  checkpoint(): Promise<AuditCheckpoint | undefined> {
    const run = async (): Promise<AuditCheckpoint | undefined> => {
      const head = await this.#store.head(this.logName);
      const latest = await this.#store.latestCheckpoint(this.logName);
      if (head.seq === 0 || (latest && latest.size >= head.seq)) {
        if (latest) this.#lastCheckpointSize = Math.max(this.#lastCheckpointSize, latest.size);
        return latest;
      }
      const signer = this.#o.checkpoint.signer;
      let signature = '';
      if (signer) {
        try {
          signature = Buffer.from(await signer.sign(Buffer.from(checkpointBody(this.logName, head.seq, head.hash)))).toString('base64');
        } catch (error) {
          throw new HsmError('SigningFailed', `audit checkpoint at size ${head.seq} could not be signed with ${signer.keyId}: ${(error as Error).message}`, {
            cause: error,
            details: { auditCode: 'CheckpointSignFailed', keyId: signer.keyId },
          });
        }
      }
      const cp: AuditCheckpoint = {
        logName: this.logName,
        size: head.seq,
        headHash: head.hash,
        time: this.#o.clock().toISOString(),
        keyId: signer?.keyId ?? '',
        algorithm: signer?.algorithm ?? '',
        signature,
      };
      const inserted = await this.#store.insertCheckpoint(this.logName, cp).catch((error: unknown) => {
        throw writeFailure(error, this.#store.target);
      });
      if (inserted) {
        this.#stats.checkpoints++;
        this.#lastCheckpointSize = cp.size;
        return cp;
      }
      const now = await this.#store.latestCheckpoint(this.logName);
      if (now) this.#lastCheckpointSize = Math.max(this.#lastCheckpointSize, now.size);
      return now;
    };
    const next = (this.#checkpointing ?? Promise.resolve(undefined)).catch(() => undefined).then(run);
    this.#checkpointing = next;
    return next;
  }

  async checkpoints(): Promise<AuditCheckpoint[]> {
    return this.#store.checkpoints(this.logName);
  }

  /** Verifies the chain and the checkpoints (signatures with `publicKey`, else the signer's key). */
  async verify(options: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
    const head = await this.#store.head(this.logName);
    const checkpoints = await this.#store.checkpoints(this.logName);
    const publicKey = options.publicKey ?? (this.#o.checkpoint.signer ? await this.#o.checkpoint.signer.publicKey() : undefined);
    const anchor = { seq: head.anchorSeq, hash: head.anchorHash };
    const store = this.#store;
    return verifyChain({
      logName: this.logName,
      anchor,
      pages: pagesOf(store, this.logName, head.anchorSeq),
      checkpoints,
      headSeq: head.seq,
      ...(publicKey ? { publicKey } : {}),
      ...(store.verifyParallel ? { parallel: (cps: Map<number, string>) => store.verifyParallel!(this.logName, anchor, head.seq, cps) } : {}),
    });
  }

  /** Records in seq order, filtered, read page by page. */
  async *iterate(query: AuditQuery = {}): AsyncGenerator<AuditRecord> {
    let after = query.afterSeq ?? 0;
    let remaining = query.limit ?? Number.POSITIVE_INFINITY;
    const filter = {
      ...(query.from ? { from: query.from.toISOString() } : {}),
      ...(query.to ? { to: query.to.toISOString() } : {}),
      ...(query.types ? { types: query.types } : {}),
      ...(query.keyId ? { keyId: query.keyId } : {}),
      ...(query.baseKeyId ? { baseKeyId: query.baseKeyId } : {}),
    };
    while (remaining > 0) {
      const want = Math.min(1000, remaining);
      const page = await this.#store.page(this.logName, after, want, filter);
      for (const r of page) yield toRecord(r);
      remaining -= page.length;
      if (page.length < want) return;
      after = page[page.length - 1]!.seq;
    }
  }

  /** The last `limit` records (default 20), then, with `follow`, new ones as they arrive until `signal` aborts. */
  async *tail(options: AuditTailOptions = {}): AsyncGenerator<AuditRecord> {
    const limit = options.limit ?? 20;
    const last = (await this.#store.lastRecords(this.logName, limit)).reverse();
    let after = last.length > 0 ? last[last.length - 1]!.seq : (await this.#store.head(this.logName)).seq;
    for (const r of last) yield toRecord(r);
    if (!options.follow) return;
    const signal = options.signal;
    while (!signal?.aborted) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, options.pollMs ?? 250);
        function done() {
          clearTimeout(t);
          signal?.removeEventListener('abort', done);
          resolve();
        }
        signal?.addEventListener('abort', done, { once: true });
      });
      if (signal?.aborted) return;
      for (;;) {
        const page = await this.#store.page(this.logName, after, 1000);
        for (const r of page) yield toRecord(r);
        if (page.length > 0) after = page[page.length - 1]!.seq;
        if (page.length < 1000) break;
      }
    }
  }

  /**
   * Writes the records (a contiguous seq range covering `from`..`to`) and every checkpoint as
   * JSON Lines: a header, `{"kind":"record",...}` lines, `{"kind":"checkpoint",...}` lines.
   * A path is created (mode 0600); a stream given by the caller is written to but not ended.
   */
  async export(destination: string | Writable, range: { from?: Date; to?: Date } = {}): Promise<AuditExportSummary> {
    const head = await this.#store.head(this.logName);
    const firstSeq = range.from ? await this.#store.firstSeqAtOrAfter(this.logName, range.from.toISOString()) : head.anchorSeq + 1;
    const lastSeq = range.to ? await this.#store.lastSeqBefore(this.logName, range.to.toISOString()) : head.seq;
    const checkpoints = await this.#store.checkpoints(this.logName);
    const out: Writable = typeof destination === 'string' ? createWriteStream(destination, { mode: 0o600 }) : destination;
    const summary: AuditExportSummary = { records: 0, checkpoints: checkpoints.length };
    try {
      const header = {
        kind: 'header',
        format: 'olocus-audit-export/1',
        logName: this.logName,
        exportedAt: this.#o.clock().toISOString(),
        origin: this.origin,
        ...(range.from ? { from: range.from.toISOString() } : {}),
        ...(range.to ? { to: range.to.toISOString() } : {}),
        anchor: { seq: head.anchorSeq, hash: head.anchorHash },
        headSeq: head.seq,
        ...(firstSeq !== undefined && lastSeq !== undefined && lastSeq >= firstSeq ? { firstSeq, lastSeq } : {}),
      };
      await write(out, JSON.stringify(header) + '\n');
      if (firstSeq !== undefined && lastSeq !== undefined && lastSeq >= firstSeq) {
        for await (const page of pagesOf(this.#store, this.logName, firstSeq - 1, lastSeq)) {
          let chunk = '';
          for (const r of page) chunk += JSON.stringify({ kind: 'record', ...toRecord(r) }) + '\n';
          await write(out, chunk);
          summary.records += page.length;
          summary.firstSeq ??= page[0]!.seq;
          summary.lastSeq = page[page.length - 1]!.seq;
        }
      }
      for (const cp of checkpoints) await write(out, JSON.stringify({ kind: 'checkpoint', ...cp }) + '\n');
    } finally {
      if (typeof destination === 'string') {
        out.end();
        await once(out, 'close');
      }
    }
    return summary;
  }

  /**
   * Deletes records older than `before` — only outside the retention window and only up to a
   * checkpointed seq, whose hash becomes the anchor the chain is verified from — and records an
   * `audit.prune` event.
   */
  async prune(options: { before: Date; actor?: string }): Promise<AuditPruneResult> {
    const before = options.before;
    if (!(before instanceof Date) || Number.isNaN(before.getTime())) throw bad('prune: before must be a valid Date', 'before');
    const limit = this.#o.clock().getTime() - this.#o.retention.days * 86_400_000;
    if (before.getTime() > limit) {
      throw new HsmError('PolicyViolation', `prune refused: ${before.toISOString()} is inside the ${this.#o.retention.days}-day retention window (records after ${new Date(limit).toISOString()} are kept)`, {
        details: { auditCode: 'AuditRetention', retentionDays: this.#o.retention.days },
      });
    }
    await this.flush();
    const head = await this.#store.head(this.logName);
    const firstKept = await this.#store.firstSeqAtOrAfter(this.logName, before.toISOString());
    const through = (firstKept ?? head.seq + 1) - 1;
    const cps = await this.#store.checkpoints(this.logName);
    const anchor = cps.reduce((m, cp) => (cp.size <= through && cp.size > m ? cp.size : m), 0);
    if (anchor <= head.anchorSeq) return { removed: 0, anchorSeq: head.anchorSeq };
    const removed = await this.#store.prune(this.logName, anchor);
    await this.append({
      type: 'audit.prune',
      actor: options.actor ?? SYSTEM_ACTOR,
      outcome: 'success',
      details: { before: before.toISOString(), throughSeq: anchor, removed, retentionDays: this.#o.retention.days },
    });
    return { removed, anchorSeq: anchor };
  }

  async oldestRecordTime(): Promise<Date | undefined> {
    const t = await this.#store.oldestTime(this.logName);
    return t === undefined ? undefined : new Date(t);
  }

  /** Number of records ever appended (the last seq). */
  async size(): Promise<number> {
    return (await this.#store.head(this.logName)).seq;
  }

  async head(): Promise<{ seq: number; hash: string }> {
    const h = await this.#store.head(this.logName);
    return { seq: h.seq, hash: h.hash };
  }

  /** Records still stored (after pruning). */
  async count(): Promise<number> {
    return this.#store.count(this.logName);
  }

  stats(): AuditStats {
    return { ...this.#stats, pending: this.#queue.length };
  }

  /** Records `audit.stop`, flushes, writes the final checkpoint and closes the store. */
  async close(): Promise<void> {
    if (this.#state !== 'open') return;
    this.#state = 'closing';
    if (this.#interval) clearInterval(this.#interval);
    try {
      await this.append({ type: 'audit.stop', actor: SYSTEM_ACTOR, outcome: 'success', details: { logName: this.logName } }).catch((error) => this.#notify(error));
      await this.flush();
      await this.checkpoint().catch((error) => this.#notify(error));
    } finally {
      this.#state = 'closed';
      await this.#store.close();
    }
  }

  /** @internal */
  static async open(raw: AuditLogOptions): Promise<AuditLog> {
    const options = resolveOptions(raw);
    const store = await openStore(options.storage);
    try {
      await store.migrate();
      await store.ensureHead(options.logName, ZERO_HASH);
      const latest = await store.latestCheckpoint(options.logName);
      const log = new AuditLog(options, store, latest?.size ?? 0);
      await log.append({ type: 'audit.start', actor: SYSTEM_ACTOR, outcome: 'success', details: { logName: options.logName, failClosed: options.failClosed, checkpointsSigned: log.settings.checkpointsSigned } });
      return log;
    } catch (error) {
      await store.close().catch(() => undefined);
      throw error instanceof HsmError ? error : storageError(error, 'opening the audit log', store.target);
    }
  }
}

/** Opens (creating when needed) an audit log and records `audit.start`. */
export function openAuditLog(options: AuditLogOptions): Promise<AuditLog> {
  return AuditLog.open(options);
}

/**
 * Re-verifies an export offline: the records' chain from the export's first record, the
 * checkpoints in it (signatures with `publicKey`), and that no checkpoint covers records the
 * export should hold but does not.
 */
export async function verifyExport(path: string, options: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
  const started = performance.now();
  const lines = () => createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let header: { logName?: string; anchor?: { seq: number; hash: string }; headSeq?: number; firstSeq?: number; lastSeq?: number } | undefined;
  const checkpoints: AuditCheckpoint[] = [];
  let first: { seq: number; prevHash: string } | undefined;
  let lineNo = 0;
  const malformed = (n: number, why: string): AuditVerifyResult => ({ ok: false, records: 0, checkpoints: 0, problem: 'edited', message: `export line ${n}: ${why}`, durationMs: performance.now() - started });
  for await (const line of lines()) {
    lineNo++;
    if (line.trim() === '') continue;
    let o: { kind?: string } & Record<string, unknown>;
    try {
      o = JSON.parse(line);
    } catch {
      return malformed(lineNo, 'not valid JSON');
    }
    if (lineNo === 1) {
      if (o.kind !== 'header') return malformed(1, 'the first line is not the export header');
      header = o as typeof header;
    } else if (o.kind === 'checkpoint') {
      const { kind: _k, ...cp } = o;
      checkpoints.push(cp as unknown as AuditCheckpoint);
    } else if (o.kind === 'record') {
      first ??= { seq: Number(o['seq']), prevHash: String(o['prevHash']) };
    } else return malformed(lineNo, `unknown kind ${JSON.stringify(o.kind)}`);
  }
  if (!header) return malformed(1, 'empty export');
  const lastSeq = header.lastSeq ?? header.anchor?.seq ?? 0;
  const anchor =
    header.anchor && first && first.seq === header.anchor.seq + 1
      ? header.anchor
      : first
        ? { seq: first.seq - 1, hash: first.prevHash }
        : (header.anchor ?? { seq: 0, hash: ZERO_HASH });
  async function* pages(): AsyncGenerator<RecordLike[]> {
    let page: RecordLike[] = [];
    for await (const line of lines()) {
      if (!line.startsWith('{"kind":"record"')) continue;
      const { kind: _k, ...r } = JSON.parse(line) as { kind: string } & AuditRecord;
      page.push(r);
      if (page.length >= PAGE) {
        yield page;
        page = [];
      }
    }
    if (page.length > 0) yield page;
  }
  const result = await verifyChain({
    logName: header.logName ?? '',
    anchor,
    pages: pages(),
    checkpoints: checkpoints.filter((cp) => cp.size <= lastSeq),
    headSeq: lastSeq,
    ...(options.publicKey ? { publicKey: options.publicKey } : {}),
  });
  return { ...result, durationMs: performance.now() - started };
}
