/**
 * The audit record and the read side of the audit log: the contract between the log
 * (src/audit) and the compliance engine (src/rules, src/report). Kept in one file so the two
 * halves agree on field names; ids here appear in stored records and exports, so they are
 * stable — add, never rename.
 */

/** Every kind of event the log records (PCI-10.2's classes are all here). */
export const AUDIT_EVENT_TYPES = [
  'key.generate',
  'key.sign',
  'key.verify',
  /** Public-key reads and key lookups (PCI-10.2 "key access"). */
  'key.access',
  'key.rotate',
  'key.state',
  'key.destroy',
  'key.import',
  /** Wrong PIN / passphrase / credential, locked PIN (PCI-10.2 "invalid access attempts"). */
  'auth.failure',
  'auth.credential-change',
  'config.change',
  /** Reads of the audit log itself: verify, export, tail, report (PCI-10.2 "audit-log access"). */
  'audit.access',
  'audit.start',
  'audit.stop',
  'audit.prune',
  /** Emergency rotations, policy refusals, tamper detection. */
  'security.event',
  'admin.action',
] as const;

export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

export type AuditOutcome = 'success' | 'failure';

/** Non-secret extra facts; values are scalars so canonical form stays simple. */
export type AuditDetails = Record<string, string | number | boolean | null>;

/** What a caller hands to `append()`. Never data, never a secret: data is recorded by digest. */
export interface AuditEventInput {
  type: AuditEventType;
  /** Who: an authenticated principal, service account or OS user ("unknown" is a PCI-10.2.2 finding). */
  actor: string;
  outcome: AuditOutcome;
  /** Where: host/process/node that performed the operation. Defaults to the log's origin node id. */
  origin?: string;
  /** Backend `type` (software, pkcs11, aws-kms...). */
  backend?: string;
  /** Backend key id (`payments.v3` for a logical key's version). */
  keyId?: string;
  /** Logical key and version when the key is rotated by the registry. */
  baseKeyId?: string;
  keyVersion?: number;
  algorithm?: string;
  /** Milliseconds the operation took. */
  latencyMs?: number;
  /** `sha256:<hex>` of the signed / verified data. */
  dataDigest?: string;
  /** HsmError code on failure. */
  errorCode?: string;
  reason?: string;
  details?: AuditDetails;
  /** Defaults to the log's clock at append time. */
  time?: Date;
}

/** A stored record: the input (time and origin filled in) plus its place and hash in the chain. */
export interface AuditRecord extends Omit<AuditEventInput, 'time' | 'origin'> {
  /** 1-based position in the chain; the log's size is the last seq. */
  seq: number;
  /** ISO 8601 UTC with milliseconds. */
  time: string;
  origin: string;
  /** Hex SHA-256 of the previous record (64 zeros for seq 1, or the prune anchor). */
  prevHash: string;
  /** Hex SHA-256(prevHash bytes || canonical record bytes). */
  hash: string;
}

/** A signed statement of the log's size and head hash (C2SP signed-note style). */
export interface AuditCheckpoint {
  /** The log's name (one chain per origin name). */
  logName: string;
  size: number;
  /** Hex hash of record `size`. */
  headHash: string;
  time: string;
  /** Backend key that signed, and its algorithm. */
  keyId: string;
  algorithm: string;
  /** Base64 signature over `checkpointBody(...)`, in the library's signature format. */
  signature: string;
}

export interface AuditTimeRange {
  from?: Date;
  to?: Date;
}

export interface AuditQuery extends AuditTimeRange {
  types?: AuditEventType[];
  keyId?: string;
  baseKeyId?: string;
  /** Start after this seq (paging). */
  afterSeq?: number;
  limit?: number;
}

/** The outcome of checking the chain and checkpoints. */
export interface AuditVerifyResult {
  ok: boolean;
  /** Records checked. */
  records: number;
  checkpoints: number;
  /** First record (seq) where the chain breaks, when it does. */
  firstBadSeq?: number;
  /** What is wrong, in a sentence naming the seq. */
  problem?: 'edited' | 'inserted' | 'deleted' | 'reordered' | 'truncated' | 'bad-checkpoint-signature' | 'checkpoint-shrank' | 'gap' | 'rollback' | 'wipe' | 'fork';
  message: string;
  durationMs: number;
  /**
   * The witnesses asked (when the log has any), each with what it answered. A witness's
   * checkpoint is checked against the log: shorter than it = `rollback`, empty or started anew
   * after it = `wipe`, a different record at its size = `fork`.
   */
  witnesses?: Array<{ witness: string; kind: string; status: 'consulted' | 'empty' | 'write-only' | 'unreachable' | 'invalid'; size?: number; headHash?: string; time?: string; message?: string }>;
  /** The newest valid witnessed checkpoint the log was checked against. */
  witnessed?: { size: number; headHash: string; time: string; witness: string };
  /** Checkpoint keys the checkpoints were verified with (more than one after rotations), oldest first. */
  checkpointKeys?: Array<{ keyId: string; fingerprint: string; fromSeq: number }>;
}

/** Retention and durability settings the compliance rules inspect (PCI-10.5.1, NIST-AU-11, NIST-AU-5). */
export interface AuditSettings {
  /** Total retention in days (default 365). */
  retentionDays: number;
  /** Days kept immediately available (default 90). */
  hotDays: number;
  failClosed: boolean;
  /** True when checkpoints are signed by a key (AU-9(3)). */
  checkpointsSigned: boolean;
  /** Backend and key that sign checkpoints. */
  checkpointKeyId?: string;
  checkpointBackend?: string;
  /** Whether a sink receives alerts on audit failure / tamper (NIST-AU-5, AU-9). */
  alertsConfigured: boolean;
}

/** What the compliance engine reads: records over a period, the chain's integrity, settings. */
export interface AuditReader {
  readonly settings: AuditSettings;
  /** Records in seq order, filtered; streams so a year of records never sits in memory. */
  iterate(query?: AuditQuery): AsyncIterable<AuditRecord>;
  verify(): Promise<AuditVerifyResult>;
  /** Oldest record still stored (after pruning), if any. */
  oldestRecordTime(): Promise<Date | undefined>;
}
