import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { HsmError, isHsmError, type HsmErrorCode } from '@olocus/hsm-core';

/**
 * One mapping from storage driver failures (SQLite, PostgreSQL, the file system) to HsmError,
 * used by the audit log, the rotation registry's callers and the CLI, so that the same fault
 * has the same code and the same words everywhere: a full disk is a retryable storage error that
 * says the disk is full and names the file, whichever layer meets it first.
 */
export type StorageFaultKind = 'disk-full' | 'read-only' | 'permission' | 'corrupt' | 'busy' | 'unreachable' | 'authentication' | 'io' | 'other';

export interface StorageFault {
  kind: StorageFaultKind;
  /** The driver's code (SQLITE_FULL, ENOSPC, 53100...), when it gave one. */
  driverCode?: string;
  /** The HsmError code this fault maps to. */
  code: HsmErrorCode;
  retryable: boolean;
  /** What is wrong, in words, without the action or the file ("the disk is full"). */
  reason: string;
  /** What to do about it. */
  remedy: string;
}

export interface StorageFaultContext {
  /** What the store is, for people: "audit log", "rotation registry". */
  store: string;
  /** What was being done: "writing audit records", "opening". */
  action: string;
  /** The file (SQLite) or a connection description without credentials (PostgreSQL). */
  target?: string;
  /** The file is a local path (SQLite): a vague I/O error is checked against the free space of its volume. */
  file?: string;
  /** Extra non-secret details to carry (e.g. auditCode). */
  details?: Record<string, string | number | boolean | undefined>;
}

const has = (list: readonly string[], code: string) => list.some((c) => code === c || code.startsWith(`${c}_`));

const DISK_FULL = ['SQLITE_FULL', 'ENOSPC', 'EDQUOT', '53100'];
const READ_ONLY = ['SQLITE_READONLY', 'EROFS', '25006'];
const PERMISSION = ['SQLITE_PERM', 'SQLITE_AUTH', 'EACCES', 'EPERM', '42501'];
const CORRUPT = ['SQLITE_CORRUPT', 'SQLITE_NOTADB', 'XX001', 'XX002'];
const BUSY = ['SQLITE_BUSY', 'SQLITE_LOCKED', '55P03', '40001', '40P01', '53300'];
const UNREACHABLE = ['ECONNREFUSED', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET', 'EPIPE', '57P01', '57P02', '57P03', '3D000', '08000', '08001', '08003', '08004', '08006', 'SQLITE_CANTOPEN'];
const AUTHENTICATION = ['28000', '28P01'];
const IO = ['SQLITE_IOERR', 'EIO'];

/** Below this much free space a vague I/O error on the volume is taken as a full disk. */
const NEARLY_FULL_BYTES = 1024 * 1024;

function freeBytes(file: string): number | undefined {
  try {
    const s = statfsSync(dirname(file));
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return undefined;
  }
}

/** Classifies a storage failure. `file` lets an SQLITE_IOERR on a full volume be named for what it is. */
export function classifyStorageFault(error: unknown, file?: string): StorageFault {
  const e = error as { code?: unknown; message?: unknown } | undefined;
  const driverCode = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : '';
  const at = driverCode ? { driverCode } : {};
  const full: StorageFault = { kind: 'disk-full', ...at, code: 'DeviceUnavailable', retryable: true, reason: 'the disk is full', remedy: 'free space on that volume (or move the file to a larger one), then retry' };
  if (has(DISK_FULL, driverCode) || /database or disk is full|no space left on device|could not extend file/i.test(message)) return full;
  if (has(IO, driverCode) || /disk I\/O error/i.test(message)) {
    const free = file ? freeBytes(file) : undefined;
    if (free !== undefined && free < NEARLY_FULL_BYTES) return { ...full, reason: `the disk is full (${free} bytes free; the driver said "${driverCode || 'disk I/O error'}")` };
    return { kind: 'io', ...at, code: 'DeviceUnavailable', retryable: true, reason: 'the disk reported an I/O error', remedy: 'check the volume (dmesg, SMART) and retry' };
  }
  if (has(READ_ONLY, driverCode)) return { kind: 'read-only', ...at, code: 'DeviceUnavailable', retryable: false, reason: 'the store is read-only', remedy: 'mount the volume read-write, or fix the file mode' };
  if (has(PERMISSION, driverCode)) return { kind: 'permission', ...at, code: 'PermissionDenied', retryable: false, reason: 'permission denied', remedy: 'give the service user access to the file and its directory' };
  if (has(CORRUPT, driverCode)) return { kind: 'corrupt', ...at, code: 'StorageCorrupted', retryable: false, reason: 'the file is corrupted (not a valid database)', remedy: 'restore it from a backup; the file was left as it is' };
  if (has(BUSY, driverCode)) return { kind: 'busy', ...at, code: 'DeviceUnavailable', retryable: true, reason: 'the store is busy (locked by another writer)', remedy: 'retry; if it persists, look for a stuck process holding the lock' };
  if (has(AUTHENTICATION, driverCode)) return { kind: 'authentication', ...at, code: 'DeviceUnavailable', retryable: true, reason: 'the database refused the credentials', remedy: 'check the connection string user and its password source' };
  if (has(UNREACHABLE, driverCode) || /Connection terminated|connection timeout/i.test(message)) {
    return { kind: 'unreachable', ...at, code: 'DeviceUnavailable', retryable: true, reason: 'the store cannot be reached or opened', remedy: 'check that the path exists (SQLite) or that the server is up and reachable (PostgreSQL), then retry' };
  }
  return { kind: 'other', ...at, code: 'Internal', retryable: false, reason: 'the store failed', remedy: 'see the cause; report it if it repeats' };
}

/**
 * The HsmError for a storage failure: names the store, the file or target, the action, what is
 * wrong and what to do. An HsmError passes through unchanged. The driver's own message is kept
 * only as the cause (it may quote SQL), and its code in details.driverCode.
 */
export function storageFaultError(error: unknown, context: StorageFaultContext): HsmError {
  if (isHsmError(error)) return error;
  const fault = classifyStorageFault(error, context.file);
  const where = context.target ?? context.file;
  const code = fault.driverCode ? ` (${fault.driverCode})` : '';
  const reason = fault.kind === 'disk-full' && where ? `the disk holding ${where} is full${fault.reason.slice('the disk is full'.length)}` : fault.reason;
  // an unclassified driver message is kept (shortened) for diagnosis; classified ones are said in our words
  const driverMessage = fault.kind === 'other' && typeof (error as { message?: unknown })?.message === 'string' ? `: ${String((error as { message: string }).message).slice(0, 200)}` : '';
  const message = `${context.store}${where ? ` ${where}` : ''}: ${context.action} failed: ${reason}${code}${driverMessage}; ${fault.remedy}`;
  return new HsmError(fault.code, message, {
    cause: error,
    retryable: fault.retryable,
    details: { ...context.details, storageFault: fault.kind, ...(fault.driverCode ? { driverCode: fault.driverCode } : {}), ...(where ? { target: where } : {}) },
  });
}

/** The fault kind an HsmError made by storageFaultError carries (details.storageFault), else undefined. */
export function storageFaultOf(error: unknown): StorageFaultKind | undefined {
  for (let e: unknown = error, depth = 0; e !== undefined && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (isHsmError(e) && typeof e.details['storageFault'] === 'string') return e.details['storageFault'] as StorageFaultKind;
  }
  return undefined;
}
