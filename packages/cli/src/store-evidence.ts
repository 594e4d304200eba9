import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { isHsmError, type HsmBackend } from '@olocus/hsm-core';
import { CliError } from './errors.js';
import type { CliContext } from './context.js';

/**
 * A SQLite store (audit.db, rotation.db) that is missing or empty while the backend holds
 * evidence that it existed is not a new store: it was lost, emptied or rolled away. Starting a
 * fresh one silently would make an empty audit log look intact, and turn old key versions into
 * plain keys that sign again. Such a store is an error naming the file and what to do; the
 * operator may accept a new one explicitly (OLOCUS_HSM_ACCEPT_NEW_STORE), and that is audited.
 */

/** The variable that accepts a new, empty store despite the evidence: `audit`, `rotation`, or both (comma-separated). */
export const ACCEPT_NEW_STORE_ENV = 'OLOCUS_HSM_ACCEPT_NEW_STORE';

export type StoreKind = 'audit' | 'rotation';

/** True when the SQLite file does not exist or has no bytes (`: > file`). */
export async function isMissingOrEmpty(path: string): Promise<boolean> {
  if (path === ':memory:' || path === '') return false;
  try {
    return (await stat(path)).size === 0;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw error;
  }
}

export function acceptsNewStore(ctx: CliContext, kind: StoreKind): boolean {
  const value = ctx.env[ACCEPT_NEW_STORE_ENV];
  return value !== undefined && value.split(',').map((v) => v.trim()).includes(kind);
}

/** The label the checkpoint key carries naming the log it was made for (several logs may share one token). */
export const AUDIT_LOG_LABEL = 'olocus-audit-log';

/** A log's identity for that label: its name and where it is stored, hashed (a path may be long). */
export function auditLogIdentity(logName: string, target: string): string {
  return createHash('sha256').update(`${logName}\n${target}`).digest('hex').slice(0, 32);
}

/**
 * Whether the backend holds the checkpoint key of this log: then the log existed. A key labelled
 * for another log (two configs on one token) is no evidence about this one; a key without the
 * label (made before it existed) is taken as evidence, as it may be this log's.
 */
export async function hasCheckpointKey(backend: HsmBackend, keyId: string, identity: string): Promise<boolean> {
  try {
    const handle = await backend.getKey(keyId);
    const label = handle.labels?.[AUDIT_LOG_LABEL] ?? handle.metadata?.[`label.${AUDIT_LOG_LABEL}`];
    return label === undefined || label === identity;
  } catch (error) {
    if (isHsmError(error, 'KeyNotFound')) return false;
    throw error;
  }
}

/** Backend keys named like rotation versions (`<id>.v<N>`): a key registry made them. At most `limit` are returned. */
export async function versionShapedKeys(backend: HsmBackend, limit = 5): Promise<string[]> {
  const { parseVersionKeyId } = await import('@olocus/hsm-rotation/lite');
  const found: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await backend.listKeys({ limit: 1000, ...(cursor ? { cursor } : {}) });
    for (const k of page.keys) {
      if (parseVersionKeyId(k.id)) found.push(k.id);
      if (found.length >= limit) return found;
    }
    cursor = page.nextCursor;
  } while (cursor);
  return found;
}

export function lostStoreError(kind: StoreKind, file: string, evidence: string, missing: boolean): CliError {
  const what =
    kind === 'audit'
      ? 'the audit log'
      : 'the key registry (logical keys, versions, their states and history: without it old versions would sign again as plain keys)';
  return new CliError(
    'StorageCorrupted',
    `${file} is ${missing ? 'missing' : 'empty'}, but ${evidence}, so ${what} existed and was lost, emptied or replaced; nothing was created. ` +
      `Restore ${file} from a backup. Only if it is truly gone, accept a new empty one with ${ACCEPT_NEW_STORE_ENV}=${kind} (recorded in the audit log).`,
  );
}
