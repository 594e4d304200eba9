import { hash as oneShot } from 'node:crypto';
import type { AuditDetails, AuditRecord } from './types.js';

/** The hash that precedes record 1 (and the anchor of an unpruned log). */
export const ZERO_HASH = '0'.repeat(64);

/**
 * A record as the store hands it back: `details` may still be the canonical JSON text the store
 * keeps (used verbatim, so verify never re-parses it).
 */
export type RecordLike = Omit<AuditRecord, 'details' | 'hash'> & { details?: AuditDetails | string | undefined; hash?: string };

/**
 * The canonical form and the hash, written once as plain JavaScript source so the very same code
 * runs on the main thread and in the worker threads (the SQLite writer, parallel verification),
 * which are started from source because the package ships as one bundle.
 *
 * canonical(record) = RFC 8785 (JCS) of the record without `hash`, absent optional fields omitted.
 * The record's field set is fixed, so keys are written in JCS order directly (all ASCII: UTF-16
 * order is byte order); strings and numbers go through JSON.stringify, which is exactly JCS's
 * serialisation of them (a test proves the output byte-identical to `canonicalize`). Stored
 * details text is spliced in verbatim, so readers also check it is canonical (detailsTextOk).
 * Key order: actor algorithm backend baseKeyId dataDigest details errorCode keyId keyVersion
 * latencyMs origin outcome prevHash reason seq time type.
 *
 * hash = SHA-256(bytes(prevHash) || utf8(canonical)), hex.
 */
export const JCS_SOURCE = String.raw`
const q = JSON.stringify;
function scalar(v) {
  if (typeof v === 'number' && !Number.isFinite(v)) throw new TypeError('canonical JSON has no NaN or Infinity');
  return q(v);
}
function canonicalDetails(d) {
  const keys = Object.keys(d).sort();
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const v = d[k];
    if (v === undefined) continue;
    if (out.length > 1) out += ',';
    out += q(k) + ':' + scalar(v);
  }
  return out + '}';
}
function canonicalRecord(r) {
  let out = '{"actor":' + q(r.actor);
  if (r.algorithm !== undefined) out += ',"algorithm":' + q(r.algorithm);
  if (r.backend !== undefined) out += ',"backend":' + q(r.backend);
  if (r.baseKeyId !== undefined) out += ',"baseKeyId":' + q(r.baseKeyId);
  if (r.dataDigest !== undefined) out += ',"dataDigest":' + q(r.dataDigest);
  if (r.details !== undefined) out += ',"details":' + (typeof r.details === 'string' ? r.details : canonicalDetails(r.details));
  if (r.errorCode !== undefined) out += ',"errorCode":' + q(r.errorCode);
  if (r.keyId !== undefined) out += ',"keyId":' + q(r.keyId);
  if (r.keyVersion !== undefined) out += ',"keyVersion":' + scalar(r.keyVersion);
  if (r.latencyMs !== undefined) out += ',"latencyMs":' + scalar(r.latencyMs);
  out += ',"origin":' + q(r.origin) + ',"outcome":' + q(r.outcome) + ',"prevHash":' + q(r.prevHash);
  if (r.reason !== undefined) out += ',"reason":' + q(r.reason);
  return out + ',"seq":' + scalar(r.seq) + ',"time":' + q(r.time) + ',"type":' + q(r.type) + '}';
}
let hbuf = Buffer.allocUnsafe(8192);
function hashOf(prevHash, canonical) {
  const need = 32 + canonical.length * 3;
  if (need > hbuf.length) hbuf = Buffer.allocUnsafe(need * 2);
  if (typeof prevHash !== 'string' || prevHash.length !== 64 || hbuf.write(prevHash, 0, 32, 'hex') !== 32) return '';
  const n = hbuf.write(canonical, 32, 'utf8');
  return oneShot('sha256', hbuf.subarray(0, 32 + n), 'hex');
}
function recordHash(r) {
  return hashOf(r.prevHash, canonicalRecord(r));
}
let lastOkDetails = '';
function detailsTextOk(text) {
  if (text === lastOkDetails) return true;
  if (typeof text !== 'string' || text.charCodeAt(0) !== 123) return false;
  try {
    const o = JSON.parse(text);
    if (o === null || typeof o !== 'object' || Array.isArray(o)) return false;
    for (const k in o) if (o[k] !== null && typeof o[k] === 'object') return false;
    if (canonicalDetails(o) !== text) return false;
    lastOkDetails = text;
    return true;
  } catch (e) {
    return false;
  }
}
/** A stored row (column order of ROW_COLUMNS) as a record; details stay text. */
function rowRecord(r) {
  const rec = { seq: Number(r[0]), time: r[1], type: r[2], actor: r[3], outcome: r[4], origin: r[5], prevHash: r[16], hash: r[17] };
  if (r[6] !== null) rec.backend = r[6];
  if (r[7] !== null) rec.keyId = r[7];
  if (r[8] !== null) rec.baseKeyId = r[8];
  if (r[9] !== null) rec.keyVersion = Number(r[9]);
  if (r[10] !== null) rec.algorithm = r[10];
  if (r[11] !== null) rec.latencyMs = Number(r[11]);
  if (r[12] !== null) rec.dataDigest = r[12];
  if (r[13] !== null) rec.errorCode = r[13];
  if (r[14] !== null) rec.reason = r[14];
  if (r[15] !== null) rec.details = r[15];
  return rec;
}
`;

export const JCS_EXPORTS = 'return { canonicalDetails, canonicalRecord, recordHash, detailsTextOk, rowRecord };';

interface Jcs {
  canonicalDetails(details: AuditDetails): string;
  canonicalRecord(r: RecordLike): string;
  recordHash(r: RecordLike): string;
  detailsTextOk(text: string): boolean;
  rowRecord(row: unknown[]): RecordLike;
}

// eslint-disable-next-line @typescript-eslint/no-implied-eval
const jcs = new Function('oneShot', 'Buffer', JCS_SOURCE + JCS_EXPORTS)(oneShot, Buffer) as Jcs;

/** RFC 8785 canonical JSON of `details` (scalar values; keys in UTF-16 code-unit order). */
export const canonicalDetails: (details: AuditDetails) => string = jcs.canonicalDetails;
/** The record's canonical form: RFC 8785 (JCS) of the record without `hash`. */
export const canonicalRecord: (r: RecordLike) => string = jcs.canonicalRecord;
/** hash = SHA-256(bytes(prevHash) || utf8(canonical(record))), hex ('' when prevHash is not 64 hex digits). */
export const recordHash: (r: RecordLike) => string = jcs.recordHash;
/**
 * Whether stored details text is exactly the canonical JSON of an object of scalars. The
 * canonical form splices the stored text in verbatim, so without this check text could be moved
 * between the details column and neighbouring fields without changing the hash.
 */
export const detailsTextOk: (text: string) => boolean = jcs.detailsTextOk;
/** @internal a stored row as a record */
export const rowRecord: (row: unknown[]) => RecordLike = jcs.rowRecord;

/** The checkpoint body that is signed (C2SP signed-note style): origin, size, base64 head hash. */
export function checkpointBody(logName: string, size: number, headHash: string): string {
  return `${logName}\n${size}\n${Buffer.from(headHash, 'hex').toString('base64')}\n`;
}
