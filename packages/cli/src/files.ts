import { chmod, open, stat } from 'node:fs/promises';

/**
 * File modes of a store: the config, the key directory, audit.db and rotation.db (with their
 * -wal/-shm/-journal companions) are the operator's alone.
 */
export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

const SQLITE_COMPANIONS = ['', '-wal', '-shm', '-journal'];

function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException)?.code;
}

/** Removes group and other access from an existing file or directory; a missing one is fine. */
export async function restrictMode(path: string, mode: number): Promise<void> {
  try {
    const info = await stat(path);
    if ((info.mode & 0o077) !== 0) await chmod(path, mode);
  } catch (error) {
    // ENOENT: nothing to restrict; EPERM: not ours (a shared file the operator placed), left as it is
    if (errno(error) !== 'ENOENT' && errno(error) !== 'EPERM') throw error;
  }
}

/**
 * Prepares a SQLite store file before the library opens it: a missing file is created empty with
 * mode 0600 (SQLite creates -wal and -shm with the mode of the database file, so they follow),
 * and an existing one with a wider mode is narrowed.
 */
export async function ensurePrivateSqliteFile(path: string): Promise<void> {
  if (path === ':memory:' || path === '') return;
  try {
    const handle = await open(path, 'wx', PRIVATE_FILE_MODE);
    await handle.close();
  } catch (error) {
    // EEXIST: an existing store; ENOENT: its folder is missing, which the store itself reports
    if (errno(error) !== 'EEXIST' && errno(error) !== 'ENOENT') throw error;
  }
  for (const suffix of SQLITE_COMPANIONS) await restrictMode(path + suffix, PRIVATE_FILE_MODE);
}

/** SQLite's own words for a damaged file (better-sqlite3 codes, or the message when wrapped). */
export function isCorruptSqlite(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e && depth < 6; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    const message = (e as { message?: unknown }).message;
    if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT_VTAB') return true;
    if (typeof message === 'string' && /file is not a database|database disk image is malformed/i.test(message)) return true;
  }
  return false;
}
