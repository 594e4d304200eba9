import { randomBytes } from 'node:crypto';
import { link, open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { HsmError } from '@olocus/hsm-core';

export const FILE_MODE = 0o600;
export const DIRECTORY_MODE = 0o700;

/** errno codes after which the same I/O may succeed if tried again. */
const TRANSIENT = new Set(['EAGAIN', 'EBUSY', 'EINTR', 'EIO', 'EMFILE', 'ENFILE', 'ETIMEDOUT']);

export function errnoOf(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/** An I/O failure on the store: names the action, the path and the errno, nothing else. */
export function ioError(cause: unknown, action: string, path: string): HsmError {
  if (cause instanceof HsmError) return cause;
  const code = errnoOf(cause) ?? 'unknown error';
  return new HsmError('DeviceUnavailable', `software key store: cannot ${action} ${path} (${code})`, {
    cause,
    retryable: TRANSIENT.has(code),
    details: { path, errno: code },
  });
}

/** A temporary name in the store directory; it starts with '.', which no key id can. */
export function tempName(purpose: string): string {
  return `.${purpose}-${process.pid}-${randomBytes(6).toString('hex')}.tmp`;
}

/**
 * Writes `content` to `directory/name` atomically and exclusively:
 * the bytes go to a temporary file in the same directory (mode 0600), which is fsync-ed and
 * then hard-linked to the final name. link(2) fails with EEXIST when the name exists, so of two
 * writers (threads or processes) exactly one wins, and a reader never sees a partial file.
 * The directory is fsync-ed so the new entry survives a crash.
 *
 * Returns 'exists' when the name was already taken (nothing is written then).
 */
export async function writeFileExclusive(directory: string, name: string, content: string): Promise<'created' | 'exists'> {
  const finalPath = join(directory, name);
  const tempPath = join(directory, tempName('new'));
  let handle: FileHandle | undefined;
  try {
    handle = await open(tempPath, 'wx', FILE_MODE);
    await handle.writeFile(content, 'utf8');
    await handle.sync();
  } catch (cause) {
    await handle?.close().catch(() => undefined);
    await unlink(tempPath).catch(() => undefined);
    throw ioError(cause, 'write', tempPath);
  }
  await handle.close().catch(() => undefined);
  try {
    await link(tempPath, finalPath);
  } catch (cause) {
    if (errnoOf(cause) === 'EEXIST') return 'exists';
    throw ioError(cause, 'create', finalPath);
  } finally {
    await unlink(tempPath).catch(() => undefined);
  }
  await syncDirectory(directory);
  return 'created';
}

/**
 * fsync(2) on the directory so a created or removed entry is durable. Platforms that cannot
 * open a directory (Windows) are skipped: there the rename/link itself is what is durable.
 */
export async function syncDirectory(directory: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(directory, 'r');
    await handle.sync();
  } catch (cause) {
    const code = errnoOf(cause);
    if (code === 'EISDIR' || code === 'EPERM' || code === 'EACCES' || code === 'EINVAL' || code === 'ENOTSUP') return;
    throw ioError(cause, 'fsync', directory);
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
