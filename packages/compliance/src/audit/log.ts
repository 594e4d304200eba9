import { createReadStream, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';
import { existsSync, statSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { HsmError, publicKeyObject, verifyLocally, type KeyAlgorithm } from '@olocus/hsm-core';
import { canonicalDetails, checkpointBody, ZERO_HASH, type RecordLike } from './jcs.js';
import { resolveOptions, type AuditLogOptions, type CheckpointSigner, type ResolvedAuditLogOptions } from './options.js';
import { openStore, storageError, type AuditStore, type CheckpointKeyRow } from './store.js';
import { consultWitnesses, keyFingerprint, witnessEntry, type AuditWitness, type WitnessEntry } from './witness.js';
import { AUDIT_EVENT_TYPES, type AuditCheckpoint, type AuditDetails, type AuditEventInput, type AuditQuery, type AuditReader, type AuditRecord, type AuditSettings, type AuditVerifyResult } from './types.js';
import { verifyChain } from './verify.js';

/** Detail keys that look like a secret are refused (the value is never echoed). */
export const SECRET_KEY_PATTERN = /pin|pass|secret|private|password|credential|token_?key|master_?key/i;
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
  /** SPKI DER (or a KeyObject) of the checkpoint key now in charge; defaults to the signer's public key. */
  publicKey?: Uint8Array | KeyObject;
  /** Ask the log's witnesses (default true when it has any). */
  witnesses?: boolean;
}

/** What `rotateCheckpointKey` did. */
export interface CheckpointKeyRotation {
  /** Seq of the `config.change` record that names the new key. */
  seq: number;
  oldKeyId: string;
  oldFingerprint: string;
  newKeyId: string;
  newFingerprint: string;
  /** The old key's checkpoint that covers the rotation record. */
  checkpoint: AuditCheckpoint;
}

/** `details.action` of the record a checkpoint-key rotation writes. */
export const CHECKPOINT_KEY_ROTATED = 'audit.checkpoint-key-rotated';

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
        throw bad(`audit record: details key "${key}" looks like a secret (pin, passphrase, secret, private key, master key, credential); secrets never enter the audit log — record a digest or leave it out`, `details.${key}`);
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
  #settings: AuditSettings;
  #signer: CheckpointSigner | undefined;
  #spki = new Map<string, Uint8Array>();
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
    this.#signer = options.checkpoint.signer;
    this.#settings = this.#makeSettings();
    if (options.checkpoint.intervalMs > 0) {
      this.#interval = setInterval(() => this.#autoCheckpoint(), options.checkpoint.intervalMs);
      this.#interval.unref();
    }
  }

  get settings(): AuditSettings {
    return this.#settings;
  }

  #makeSettings(): AuditSettings {
    const options = this.#o;
    const signer = this.#signer;
    return Object.freeze({
      retentionDays: options.retention.days,
      hotDays: options.retention.hotDays,
      failClosed: options.failClosed,
      checkpointsSigned: signer !== undefined,
      ...(signer ? { checkpointKeyId: signer.keyId, ...(signer.backend ? { checkpointBackend: signer.backend } : {}) } : {}),
      alertsConfigured: options.alertsConfigured,
    });
  }

  async #publicKeyOf(signer: CheckpointSigner): Promise<Uint8Array> {
    let spki = this.#spki.get(signer.keyId);
    if (!spki) {
      spki = await signer.publicKey();
      this.#spki.set(signer.keyId, spki);
    }
    return spki;
  }

  /** Names of the witnesses every checkpoint is sent to. */
  get witnesses(): string[] {
    return this.#o.witnesses.map((w) => w.name);
  }

  /**
   * Sends a checkpoint to every witness. A witness that fails does not fail the checkpoint (the
   * log itself is fine); `onFailure` is told, and the next checkpoint reaches it.
   */
  async #witness(cp: AuditCheckpoint, signer: CheckpointSigner | undefined): Promise<void> {
    if (this.#o.witnesses.length === 0) return;
    let entry: WitnessEntry;
    try {
      entry = witnessEntry(cp, signer ? await this.#publicKeyOf(signer) : undefined);
    } catch (error) {
      this.#notify(error);
      return;
    }
    await Promise.all(this.#o.witnesses.map((w) => w.submit(entry).catch((error: unknown) => this.#notify(error))));
  }

  get storage(): 'sqlite' | 'postgres' {
    return this.#store.dialect;
  }

  /** The signer now in charge (after a rotation: the new key's). */
  get checkpointSigner(): CheckpointSigner | undefined {
    return this.#signer;
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
      const signer = this.#signer;
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
        await this.#witness(cp, signer);
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

  /**
   * Every key that has signed this log's checkpoints, oldest first (one entry until the key is
   * rotated): the keys to keep — a destroyed one leaves its checkpoints unverifiable.
   */
  async checkpointKeys(): Promise<Array<{ keyId: string; fingerprint?: string; fromSeq: number }>> {
    const rows = await this.#store.checkpointKeys(this.logName);
    if (rows.length === 0) return this.#signer ? [{ keyId: this.#signer.keyId, fromSeq: 0 }] : [];
    const first = (await this.#store.page(this.logName, rows[0]!.seq - 1, 1))[0];
    const d = first ? toRecord(first).details : undefined;
    const oldest = typeof d?.['oldKeyId'] === 'string' ? [{ keyId: d['oldKeyId'], ...(typeof d['oldFingerprint'] === 'string' ? { fingerprint: d['oldFingerprint'] } : {}), fromSeq: 0 }] : [];
    return [...oldest, ...rows.map((r) => ({ keyId: r.keyId, fingerprint: r.fingerprint, fromSeq: r.seq }))];
  }

  async checkpoints(): Promise<AuditCheckpoint[]> {
    return this.#store.checkpoints(this.logName);
  }

  /**
   * Verifies the chain and the checkpoints (signatures with `publicKey`, else the signer's key;
   * across rotations with each checkpoint key the chain names), then — when the log has
   * witnesses — the log against the newest checkpoint a witness holds: `rollback`, `wipe` or
   * `fork` by name, with every witness consulted in `witnesses`.
   */
  async verify(options: AuditVerifyOptions = {}): Promise<AuditVerifyResult> {
    const started = performance.now();
    const head = await this.#store.head(this.logName);
    const checkpoints = await this.#store.checkpoints(this.logName);
    const trusted = options.publicKey ?? (this.#signer ? await this.#publicKeyOf(this.#signer) : undefined);
    const anchor = { seq: head.anchorSeq, hash: head.anchorHash };
    const store = this.#store;
    const epochs = await this.#keyEpochs(head.anchorSeq, trusted);
    const failed = (problem: NonNullable<AuditVerifyResult['problem']>, seq: number, message: string): AuditVerifyResult => ({ ok: false, records: 0, checkpoints: checkpoints.length, firstBadSeq: seq, problem, message, durationMs: performance.now() - started });
    let result: AuditVerifyResult;
    if (typeof epochs === 'string') result = failed('bad-checkpoint-signature', 0, epochs);
    else {
      result = await verifyChain({
        logName: this.logName,
        anchor,
        pages: pagesOf(store, this.logName, head.anchorSeq),
        checkpoints,
        headSeq: head.seq,
        ...(epochs ? { keys: epochs.map((e) => ({ keyId: e.keyId, key: e.key, rotationSeq: e.rotationSeq })) } : trusted ? { publicKey: trusted } : {}),
        ...(store.verifyParallel ? { parallel: (cps: Map<number, string>) => store.verifyParallel!(this.logName, anchor, head.seq, cps) } : {}),
      });
      if (epochs) result.checkpointKeys = epochs.map((e) => ({ keyId: e.keyId, fingerprint: e.fingerprint, fromSeq: e.rotationSeq }));
    }
    if (options.witnesses === false || this.#o.witnesses.length === 0) return result;
    const keyOf = (keyId: string): KeyObject | undefined => {
      if (typeof epochs === 'object' && epochs) return epochs.find((e) => e.keyId === keyId)?.key;
      if (!trusted) return undefined;
      return keyId === this.#signer?.keyId || options.publicKey ? (trusted instanceof Uint8Array ? publicKeyObject(trusted) : trusted) : undefined;
    };
    return this.#checkWitnesses(result, head, keyOf, trusted !== undefined, started);
  }

  /**
   * The checkpoint keys in the order they took over, from the rotation index checked against the
   * rotation records in the chain; undefined when the key was never rotated; a string saying
   * what is wrong when the index and the chain disagree or the trusted key is not the last one.
   */
  async #keyEpochs(anchorSeq: number, trusted: Uint8Array | KeyObject | undefined): Promise<Array<{ keyId: string; fingerprint: string; key: KeyObject; rotationSeq: number }> | undefined | string> {
    const rows = await this.#store.checkpointKeys(this.logName);
    if (rows.length === 0) return undefined;
    const epochs: Array<{ keyId: string; fingerprint: string; key: KeyObject; rotationSeq: number }> = [];
    for (const row of rows) {
      const spki = Buffer.from(row.spki, 'base64');
      if (keyFingerprint(spki) !== row.fingerprint) return `checkpoint key ${row.keyId} (rotation at record ${row.seq}): its stored public key does not match its fingerprint ${row.fingerprint}`;
      let oldKeyId: string | undefined;
      let oldSpki: Buffer | undefined;
      if (row.seq > anchorSeq) {
        const r = (await this.#store.page(this.logName, row.seq - 1, 1))[0];
        const d = r ? toRecord(r).details : undefined;
        if (!r || r.seq !== row.seq || r.type !== 'config.change' || d?.['action'] !== CHECKPOINT_KEY_ROTATED || d['newKeyId'] !== row.keyId || d['newFingerprint'] !== row.fingerprint || d['newPublicKey'] !== row.spki) {
          return `the rotation to checkpoint key ${row.keyId} (${row.fingerprint}) is not what record ${row.seq} of the chain says: the key index was altered`;
        }
        oldKeyId = String(d['oldKeyId']);
        oldSpki = Buffer.from(String(d['oldPublicKey']), 'base64');
        if (keyFingerprint(oldSpki) !== d['oldFingerprint']) return `record ${row.seq}: the old checkpoint key's public key does not match its fingerprint`;
      }
      if (epochs.length === 0) {
        if (!oldKeyId || !oldSpki) return `the first checkpoint-key rotation (record ${row.seq}) was pruned: the key before it is unknown`;
        epochs.push({ keyId: oldKeyId, fingerprint: keyFingerprint(oldSpki), key: publicKeyObject(oldSpki), rotationSeq: 0 });
      } else if (oldKeyId !== undefined && (oldKeyId !== epochs[epochs.length - 1]!.keyId || keyFingerprint(oldSpki!) !== epochs[epochs.length - 1]!.fingerprint)) {
        return `record ${row.seq} rotates from checkpoint key ${oldKeyId}, but the key in charge then was ${epochs[epochs.length - 1]!.keyId}`;
      }
      epochs.push({ keyId: row.keyId, fingerprint: row.fingerprint, key: publicKeyObject(spki), rotationSeq: row.seq });
    }
    if (trusted) {
      const der = trusted instanceof Uint8Array ? trusted : (trusted.export({ type: 'spki', format: 'der' }) as Buffer);
      const fp = keyFingerprint(der);
      const last = epochs[epochs.length - 1]!;
      if (fp !== last.fingerprint) {
        const known = epochs.find((e) => e.fingerprint === fp);
        return known
          ? `the key given (${known.keyId}, ${fp}) was retired as checkpoint key; the key in charge is ${last.keyId} (${last.fingerprint}): verify with that key`
          : `the checkpoint key the chain names last, ${last.keyId} (${last.fingerprint}), is not the key given (${fp})`;
      }
    }
    return epochs;
  }

  async #checkWitnesses(result: AuditVerifyResult, head: { seq: number; anchorSeq: number; anchorHash: string }, keyOf: (keyId: string) => KeyObject | undefined, signed: boolean, started: number): Promise<AuditVerifyResult> {
    const answers = await consultWitnesses(this.#o.witnesses, this.logName);
    let best: { entry: WitnessEntry; witness: string } | undefined;
    for (const a of answers) {
      if (!a.entry) continue;
      if (signed) {
        const key = keyOf(a.entry.keyId);
        let ok = false;
        try {
          ok = key !== undefined && a.entry.signature !== '' && verifyLocally(a.entry.algorithm as KeyAlgorithm, key, Buffer.from(checkpointBody(a.entry.logName, a.entry.size, a.entry.headHash)), Buffer.from(a.entry.signature, 'base64'));
        } catch {
          ok = false;
        }
        if (!ok) {
          a.consultation.status = 'invalid';
          a.consultation.message = `its checkpoint of size ${a.entry.size} is not signed by a checkpoint key of this log (${a.entry.keyId || 'unsigned'}); ignored`;
          continue;
        }
      }
      if (!best || a.entry.size > best.entry.size) best = { entry: a.entry, witness: a.witness.name };
    }
    const witnesses = answers.map((a) => a.consultation);
    const asked = witnesses.filter((w) => w.status !== 'write-only').map((w) => `${w.witness}: ${w.status}${w.size !== undefined ? ` ${w.size}` : ''}`);
    const consulted = `witnesses consulted: ${asked.length > 0 ? asked.join('; ') : 'none readable'}`;
    if (!best) return { ...result, witnesses, message: `${result.message}; no witnessed checkpoint to compare with (${consulted})`, durationMs: performance.now() - started };
    const w = best.entry;
    const witnessed = { size: w.size, headHash: w.headHash, time: w.time, witness: best.witness };
    const out = (patch: Partial<AuditVerifyResult>): AuditVerifyResult => ({ ...result, witnesses, witnessed, ...patch, durationMs: performance.now() - started });
    if (!result.ok) return out({ message: `${result.message} (${consulted})` });
    const first = head.anchorSeq === 0 ? (await this.#store.page(this.logName, 0, 1))[0] : undefined;
    const startedAnew = first !== undefined && Date.parse(first.time) > Date.parse(w.time);
    if (head.seq === 0 || (head.seq === head.anchorSeq && head.seq < w.size) || startedAnew) {
      const what = head.seq === 0 ? 'the log is empty' : `the log was started anew (its first record, ${first?.time}, is later than the checkpoint)`;
      return out({ ok: false, problem: 'wipe', firstBadSeq: 1, message: `WIPE: ${what}, but ${best.witness} witnessed a checkpoint of ${w.size} records at ${w.time}: the log was wiped and its history lost (${consulted})` });
    }
    if (head.seq < w.size) {
      return out({ ok: false, problem: 'rollback', firstBadSeq: head.seq + 1, message: `ROLLBACK: the log ends at record ${head.seq}, but ${best.witness} witnessed a checkpoint of ${w.size} records at ${w.time}: records ${head.seq + 1}-${w.size} were removed together with their checkpoints (${consulted})` });
    }
    let atSize: string | undefined;
    if (w.size === head.anchorSeq) atSize = head.anchorHash;
    else if (w.size > head.anchorSeq) atSize = (await this.#store.page(this.logName, w.size - 1, 1))[0]?.hash;
    if (atSize !== undefined && atSize !== w.headHash) {
      return out({ ok: false, problem: 'fork', firstBadSeq: w.size, message: `FORK: record ${w.size} is not the record ${best.witness} witnessed at size ${w.size} (${w.time}): the log was rewritten at or before it (${consulted})` });
    }
    // every earlier witnessed checkpoint too: a log rolled back and run on past the witnessed
    // size has a newest checkpoint that matches, and an older one that does not
    const older = await this.#olderWitnessed(answers.map((a) => a.witness), head, keyOf, signed);
    if (older) {
      return out({ ok: false, problem: 'fork', firstBadSeq: older.size, message: `FORK: record ${older.size} is not the record ${older.witness} witnessed at size ${older.size} (${older.time}): the log was rolled back and rewritten past it (${consulted})` });
    }
    const checked = atSize === undefined ? `witnessed size ${w.size} is pruned, only its size was checked` : `matches the newest witnessed checkpoint (size ${w.size}, ${best.witness})`;
    return out({ message: `${result.message}; ${checked} (${consulted})` });
  }

  /** The smallest witnessed checkpoint (validly signed) whose size the log holds with another hash. */
  async #olderWitnessed(witnesses: AuditWitness[], head: { seq: number; anchorSeq: number; anchorHash: string }, keyOf: (keyId: string) => KeyObject | undefined, signed: boolean): Promise<{ size: number; time: string; witness: string } | undefined> {
    const hashAt = new Map<number, string | undefined>();
    let found: { size: number; time: string; witness: string } | undefined;
    for (const witness of witnesses) {
      if (!witness.readable || !witness.entries) continue;
      try {
        for await (const e of witness.entries(this.logName)) {
          if (e.size > head.seq || e.size < head.anchorSeq || (found && e.size >= found.size)) continue;
          if (!hashAt.has(e.size)) hashAt.set(e.size, e.size === head.anchorSeq ? head.anchorHash : (await this.#store.page(this.logName, e.size - 1, 1))[0]?.hash);
          const at = hashAt.get(e.size);
          if (at === undefined || at === e.headHash) continue;
          if (signed) {
            const key = keyOf(e.keyId);
            let ok = false;
            try {
              ok = key !== undefined && e.signature !== '' && verifyLocally(e.algorithm as KeyAlgorithm, key, Buffer.from(checkpointBody(e.logName, e.size, e.headHash)), Buffer.from(e.signature, 'base64'));
            } catch {
              ok = false;
            }
            if (!ok) continue;
          }
          found = { size: e.size, time: e.time, witness: witness.name };
        }
      } catch {
        // reported as unreachable by the newest-checkpoint pass
      }
    }
    return found;
  }

  /**
   * Hands checkpoint signing to another key (issue 18 item 12), recorded in the chain: a
   * `config.change` record (details.action ${CHECKPOINT_KEY_ROTATED}) names both keys by
   * fingerprint with their public keys, the old key signs the checkpoint that covers it, and from
   * then on the new key signs. `verify` checks old checkpoints with the old key and new ones with
   * the new key; the new key must be the one given to (or signing for) verify.
   */
  async rotateCheckpointKey(next: CheckpointSigner, options: { actor?: string; reason?: string } = {}): Promise<CheckpointKeyRotation> {
    if (this.#state !== 'open') throw new HsmError('Closed', `audit log ${this.logName} is closed`, { details: { auditCode: 'AuditClosed' } });
    const old = this.#signer;
    if (!old) throw new HsmError('InvalidConfiguration', `audit log ${this.logName} has no checkpoint signer (checkpoint.signer): there is no checkpoint key to rotate; configure one first`, { details: { field: 'checkpoint.signer', auditCode: 'CheckpointKeyRotation' } });
    if (next.keyId === old.keyId) throw new HsmError('InvalidArgument', `the new checkpoint key must differ from the current one (${old.keyId}): give a new key id`, { details: { field: 'keyId', auditCode: 'CheckpointKeyRotation' } });
    const oldSpki = await this.#publicKeyOf(old);
    const newSpki = await next.publicKey();
    const oldFingerprint = keyFingerprint(oldSpki);
    const newFingerprint = keyFingerprint(newSpki);
    if (oldFingerprint === newFingerprint) throw new HsmError('InvalidArgument', `the new checkpoint key ${next.keyId} has the same public key as ${old.keyId}: rotate to new key material`, { details: { field: 'keyId', auditCode: 'CheckpointKeyRotation' } });
    // the new key must sign verifiably before it is put in charge
    const probe = Buffer.from(`olocus audit checkpoint key probe\n${this.logName}\n`);
    let works = false;
    try {
      works = verifyLocally(next.algorithm, publicKeyObject(newSpki), probe, await next.sign(probe));
    } catch (error) {
      throw new HsmError('SigningFailed', `the new checkpoint key ${next.keyId} could not sign: ${(error as Error).message}`, { cause: error, details: { auditCode: 'CheckpointKeyRotation', keyId: next.keyId } });
    }
    if (!works) throw new HsmError('SigningFailed', `the new checkpoint key ${next.keyId} made a signature its own public key does not verify; nothing was rotated`, { details: { auditCode: 'CheckpointKeyRotation', keyId: next.keyId } });
    const record = await this.append({
      type: 'config.change',
      actor: options.actor ?? SYSTEM_ACTOR,
      outcome: 'success',
      ...(options.reason ? { reason: options.reason } : {}),
      details: {
        action: CHECKPOINT_KEY_ROTATED,
        oldKeyId: old.keyId,
        oldAlgorithm: old.algorithm,
        oldFingerprint,
        oldPublicKey: Buffer.from(oldSpki).toString('base64'),
        newKeyId: next.keyId,
        newAlgorithm: next.algorithm,
        newFingerprint,
        newPublicKey: Buffer.from(newSpki).toString('base64'),
      },
    });
    const checkpoint = await this.checkpoint();
    if (!checkpoint || checkpoint.size < record.seq || checkpoint.keyId !== old.keyId) {
      throw new HsmError('Internal', `checkpoint-key rotation: the old key's checkpoint covering record ${record.seq} was not written; the key was not rotated (the record stays as evidence of the attempt)`, { details: { auditCode: 'CheckpointKeyRotation' } });
    }
    const row: CheckpointKeyRow = { seq: record.seq, keyId: next.keyId, algorithm: next.algorithm, fingerprint: newFingerprint, spki: Buffer.from(newSpki).toString('base64'), time: this.#o.clock().toISOString() };
    await this.#store.insertCheckpointKey(this.logName, row).catch((error: unknown) => {
      throw writeFailure(error, this.#store.target);
    });
    this.#signer = next;
    this.#spki.set(next.keyId, newSpki);
    this.#settings = this.#makeSettings();
    return { seq: record.seq, oldKeyId: old.keyId, oldFingerprint, newKeyId: next.keyId, newFingerprint, checkpoint };
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
      for (const w of this.#o.witnesses) await w.close?.().catch(() => undefined);
    }
  }

  /** @internal */
  static async open(raw: AuditLogOptions): Promise<AuditLog> {
    const options = resolveOptions(raw);
    if (options.expectExisting && options.storage.kind === 'sqlite') {
      const path = options.storage.path;
      if (!existsSync(path)) throw missingLog(path, 'does not exist', EXPECTED);
      if (statSync(path).size === 0) throw missingLog(path, 'is empty (0 bytes)', EXPECTED);
    }
    const store = await openStore(options.storage);
    try {
      await store.migrate();
      await store.ensureHead(options.logName, ZERO_HASH);
      const head = await store.head(options.logName);
      if (head.seq === 0 && !options.acceptNewLog) {
        if (options.expectExisting) throw missingLog(store.target, `holds no records of log ${options.logName}`, EXPECTED);
        for (const a of await consultWitnesses(options.witnesses, options.logName)) {
          if (a.entry) throw missingLog(store.target, `holds no records of log ${options.logName}`, `witness ${a.witness.name} holds a checkpoint of ${a.entry.size} records from ${a.entry.time}`);
        }
      }
      const keys = await store.checkpointKeys(options.logName);
      const current = keys[keys.length - 1];
      const signer = options.checkpoint.signer;
      if (current && signer && signer.keyId !== current.keyId) {
        if (!signer.withKey) {
          throw new HsmError('InvalidConfiguration', `audit log ${options.logName}: its checkpoint key was rotated to ${current.keyId} (${current.fingerprint}) at record ${current.seq}, but it was opened with a signer for ${signer.keyId}; give checkpoint.signer for ${current.keyId} (or a signer with withKey)`, {
            details: { field: 'checkpoint.signer', auditCode: 'CheckpointKeyRotated', keyId: current.keyId },
          });
        }
        options.checkpoint.signer = signer.withKey(current.keyId, current.algorithm as KeyAlgorithm);
      }
      const latest = await store.latestCheckpoint(options.logName);
      const log = new AuditLog(options, store, latest?.size ?? 0);
      await log.append({ type: 'audit.start', actor: SYSTEM_ACTOR, outcome: 'success', details: { logName: options.logName, failClosed: options.failClosed, checkpointsSigned: log.settings.checkpointsSigned, ...(options.acceptNewLog && head.seq === 0 ? { acceptedNewLog: true } : {}) } });
      return log;
    } catch (error) {
      await store.close().catch(() => undefined);
      throw error instanceof HsmError ? error : storageError(error, 'opening the audit log', store.target);
    }
  }
}

const EXPECTED = 'the caller expects an existing log (expectExisting: the backend holds the checkpoint key)';

/** A missing or emptied log where evidence says one was kept: never silently a new log. */
function missingLog(file: string, what: string, evidence: string): HsmError {
  return new HsmError(
    'IntegrityError',
    `audit log ${file} ${what}, but a log was kept there: ${evidence}. A new log would hide the loss, so none was started: restore ${file} from a backup (or re-import an export), or, if it is lost for good, start a new log deliberately (acceptNewLog; the CLI: OLOCUS_HSM_ACCEPT_NEW_STORE=audit), record why, and archive the witnesses' entries of the old log`,
    { details: { auditCode: 'AuditLogMissing', file } },
  );
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
