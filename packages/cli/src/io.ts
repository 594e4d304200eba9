import { randomBytes } from 'node:crypto';
import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { unlinkSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { CliError, fileError } from './errors.js';
import type { CliContext } from './context.js';

/**
 * Every file and stream the commands read or write goes through here, so that each command
 * gets the same checks: `-` is stdin/stdout, a directory given as a file is refused naming the
 * flag, outputs are written atomically (temporary file in the same folder, then rename) and
 * never leave a temporary file behind, inputs are read as streams (no size limit in memory)
 * or with a stated limit, and a closed stdout ends the command quietly.
 */

// ------------------------------------------------------------------------------ terminal safety

/** C0 controls, DEL, C1 controls, line/paragraph separators and bidi overrides: what can forge or hide text. */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UNSAFE_KEEP_LINES = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\u001b': '\\e' };

function escapeChar(c: string): string {
  return NAMED[c] ?? `\\u{${c.codePointAt(0)!.toString(16)}}`;
}

/**
 * A value that came from a user (an id, actor, reason, file name) made safe to print on a
 * terminal: every control character, including newlines and ESC, is shown escaped, so a value
 * cannot move the cursor, colour the screen or forge a line. JSON output does not need this
 * (JSON.stringify escapes control characters) and must stay exact, so it is not applied there.
 */
export function terminalSafe(value: string): string {
  return value.replace(UNSAFE, escapeChar);
}

/** A whole line the CLI composed: its own newlines and tabs stay; any other control character is escaped. */
export function terminalSafeLine(text: string): string {
  return text.replace(UNSAFE_KEEP_LINES, escapeChar);
}

/** How long a value may be before messages shorten it. */
export const ECHO_MAX = 64;

/**
 * A user value as echoed in a message: terminal-safe and, beyond `max` characters, shortened to
 * its start and its length (`aaaa…(10000 chars)`), so a pasted blob does not flood the screen.
 */
export function echo(value: string, max = ECHO_MAX): string {
  if (value.length <= max) return terminalSafe(value);
  return `${terminalSafe(value.slice(0, max))}…(${value.length} chars)`;
}

// ------------------------------------------------------------------------------ closed pipes

let stdoutIsClosed = false;
const closedListeners = new Set<() => void>();

/** EPIPE and friends: the reader of our stdout went away (`olocus-hsm audit tail | head -1`). */
export function isClosedPipeError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED' || code === 'ERR_STREAM_WRITE_AFTER_END' || code === 'ECONNRESET';
}

/**
 * Installed once by `main`: a closed stdout is not a crash. Without a listener, Node turns the
 * EPIPE of a write into an uncaught exception with a stack trace; here it marks stdout closed,
 * later writes are dropped, followers (`audit tail -f`) are told to stop, and the command ends
 * with exit 0. Errors on stderr are ignored: there is nowhere left to report them.
 */
export function installPipeGuards(stdout: NodeJS.WriteStream = process.stdout, stderr: NodeJS.WriteStream = process.stderr): void {
  stdout.on('error', () => {
    // Any error on stdout leaves it unusable; whatever it was, nothing more can be printed there.
    markStdoutClosed();
  });
  stderr.on('error', () => {});
}

export function markStdoutClosed(): void {
  if (stdoutIsClosed) return;
  stdoutIsClosed = true;
  for (const listener of closedListeners) listener();
}

export function stdoutClosed(): boolean {
  return stdoutIsClosed;
}

/** Calls `listener` once stdout is closed (at once if it already is); returns the unsubscribe function. */
export function onStdoutClosed(listener: () => void): () => void {
  if (stdoutIsClosed) {
    listener();
    return () => {};
  }
  closedListeners.add(listener);
  return () => closedListeners.delete(listener);
}

/** Writes to a stream and waits for it to take the data (backpressure); a closed stdout swallows it. */
export function writeTo(stream: NodeJS.WritableStream, data: Uint8Array | string): Promise<void> {
  if (stream === process.stdout && stdoutIsClosed) return Promise.resolve();
  return new Promise<void>((ok, fail) => {
    stream.write(data, (error) => {
      if (!error) return ok();
      if (stream === process.stdout && isClosedPipeError(error)) {
        markStdoutClosed();
        return ok();
      }
      fail(error);
    });
  });
}

// ------------------------------------------------------------------------------ inputs

/** The largest signature file `verify --signature` reads: signatures are at most a few KiB (JWS of RSA-4096 under 1 KiB + header). */
export const SIGNATURE_READ_LIMIT = 64 * 1024;
const CHUNK = 64 * 1024;

async function openForReading(ctx: CliContext, flag: string, path: string): Promise<{ handle: FileHandle; full: string }> {
  const full = resolve(ctx.cwd, path);
  let handle: FileHandle;
  try {
    handle = await open(full, 'r');
  } catch (cause) {
    throw fileError(flag, full, cause);
  }
  try {
    if ((await handle.stat()).isDirectory()) throw new CliError('InvalidArgument', `${flag}: ${full} is a directory; give a file (or - for standard input)`);
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error instanceof CliError ? error : fileError(flag, full, error);
  }
  return { handle, full };
}

/**
 * The message named by a flag, as a stream of chunks (FILE, or standard input for `-`). The file
 * is opened now, so a missing file or a directory is reported before any key is touched; its
 * bytes are read only as the consumer asks (a signer that hashes incrementally never holds more
 * than a chunk). The stream closes the file when it ends or is abandoned.
 */
export async function openInput(ctx: CliContext, flag: string, path: string): Promise<{ chunks: AsyncIterable<Uint8Array>; name: string; bytesRead(): number; close(): Promise<void> }> {
  let count = 0;
  if (path === '-') {
    const stdin = process.stdin;
    return {
      name: 'standard input',
      bytesRead: () => count,
      chunks: (async function* () {
        for await (const chunk of stdin) {
          const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
          count += bytes.length;
          yield new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        }
      })(),
      close: async () => {
        stdin.destroy();
      },
    };
  }
  const { handle, full } = await openForReading(ctx, flag, path);
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await handle.close().catch(() => undefined);
  };
  return {
    name: full,
    bytesRead: () => count,
    chunks: (async function* () {
      try {
        for (;;) {
          // A fresh buffer per chunk: the consumer may keep it (Ed25519 buffers the message).
          const buffer = Buffer.allocUnsafe(CHUNK);
          let n: number;
          try {
            ({ bytesRead: n } = await handle.read(buffer, 0, CHUNK, null));
          } catch (cause) {
            throw fileError(flag, full, cause);
          }
          if (n === 0) return;
          count += n;
          yield new Uint8Array(buffer.buffer, buffer.byteOffset, n);
        }
      } finally {
        await close();
      }
    })(),
    close,
  };
}

/**
 * A small input read whole, refusing more than `limit` bytes: the reading stops at the limit
 * (so `--signature /dev/zero` ends at once) with an error naming the flag, the file and the limit.
 */
export async function readInputLimited(ctx: CliContext, flag: string, path: string, limit: number, what = 'file'): Promise<Uint8Array> {
  const input = await openInput(ctx, flag, path);
  const parts: Uint8Array[] = [];
  let total = 0;
  try {
    for await (const chunk of input.chunks) {
      total += chunk.length;
      if (total > limit) {
        throw new CliError('InvalidArgument', `${flag}: ${input.name} is larger than ${formatBytes(limit)}, the limit for a ${what}; give the ${what} itself, not the message or another file`);
      }
      parts.push(chunk);
    }
  } finally {
    await input.close();
  }
  return new Uint8Array(Buffer.concat(parts));
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}

// ------------------------------------------------------------------------------ outputs

/** Temporary files being written; removed if the process exits before they are renamed or removed. */
const pendingTemporaries = new Set<string>();
let exitHookInstalled = false;

function removePendingTemporaries(): void {
  for (const p of pendingTemporaries) {
    try {
      unlinkSync(p);
    } catch {
      // already gone
    }
  }
  pendingTemporaries.clear();
}

const TERMINATING = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Ctrl-C while an output is being written: the default action would end the process with the
 * temporary file still there. Only while one is pending, a handler removes it and then lets the
 * signal do what it would have done (the handler steps aside and the signal is raised again).
 */
function onTerminatingSignal(signal: NodeJS.Signals): void {
  removePendingTemporaries();
  for (const s of TERMINATING) process.off(s, onTerminatingSignal);
  signalHandlersInstalled = false;
  // Another listener (audit tail -f stops on SIGINT) handles it; otherwise the default applies.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}
let signalHandlersInstalled = false;

function trackTemporary(path: string): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', removePendingTemporaries);
  }
  if (!signalHandlersInstalled) {
    signalHandlersInstalled = true;
    for (const s of TERMINATING) process.on(s, onTerminatingSignal);
  }
  pendingTemporaries.add(path);
}

function untrackTemporary(path: string): void {
  pendingTemporaries.delete(path);
  if (pendingTemporaries.size === 0 && signalHandlersInstalled) {
    for (const s of TERMINATING) process.off(s, onTerminatingSignal);
    signalHandlersInstalled = false;
  }
}

export interface OutputOptions {
  /** File mode of a created file: 0o600 where it carries audit data (audit export, compliance reports). */
  mode?: number;
}

/**
 * Where an output flag points: `-` (stdout), or the absolute path of a file that can be created
 * there. Refused: an existing directory, a path ending in `/`, a folder that does not exist.
 * Called before any work, so a typo costs nothing and writes no audit record of a lost result.
 */
export async function checkOutputPath(ctx: CliContext, flag: string, path: string): Promise<string> {
  if (path === '-') return '-';
  if (path === '') throw new CliError('InvalidArgument', `${flag}: an empty path; give a file name (or - for standard output)`);
  const full = resolve(ctx.cwd, path);
  const info = await stat(full).catch((cause: NodeJS.ErrnoException) => {
    if (cause.code === 'ENOENT') return undefined;
    throw fileError(flag, full, cause);
  });
  if (info?.isDirectory() || /[\\/]$/.test(path)) {
    throw new CliError('InvalidArgument', `${flag}: ${full} is a directory; give a file path inside it (e.g. ${flag} ${resolve(full, 'out')}) or - for standard output`);
  }
  const folder = dirname(full);
  const parent = await stat(folder).catch((cause: NodeJS.ErrnoException) => {
    if (cause.code === 'ENOENT') throw new CliError('FileNotFound', `${flag}: the folder ${folder} does not exist; create it first or choose another path`, { cause });
    throw fileError(flag, folder, cause);
  });
  if (!parent.isDirectory()) throw new CliError('InvalidArgument', `${flag}: ${folder} is not a directory, so ${full} cannot be created`);
  return full;
}

/** An output being written: a stream, then `commit()` (rename into place) or `abort()` (remove). */
export interface OutputSink {
  /** `-`, or the absolute path the output will have once committed. */
  readonly path: string;
  readonly stream: Writable;
  commit(): Promise<string>;
  abort(): Promise<void>;
}

/**
 * Opens an output for streaming (`audit export`): stdout for `-` (never ended), else a temporary
 * file beside the target, renamed over it by `commit()`. Any failure before `commit()` must be
 * followed by `abort()`; `writeStreaming` does both.
 */
export async function openOutput(ctx: CliContext, flag: string, path: string, options: OutputOptions = {}): Promise<OutputSink> {
  const full = await checkOutputPath(ctx, flag, path);
  if (full === '-') {
    return { path: '-', stream: ctx.stdout, commit: async () => '-', abort: async () => {} };
  }
  const temporary = resolve(dirname(full), `.${basename(full)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let handle: FileHandle;
  try {
    handle = await open(temporary, 'wx', options.mode ?? 0o666);
  } catch (cause) {
    throw fileError(flag, full, cause);
  }
  trackTemporary(temporary);
  const stream = handle.createWriteStream();
  let settled = false;
  const finish = async (): Promise<void> => {
    if (!stream.closed) {
      await new Promise<void>((ok) => {
        stream.once('close', () => ok());
        stream.once('error', () => ok());
        stream.end();
      });
    }
  };
  return {
    path: full,
    stream,
    async commit() {
      if (settled) return full;
      settled = true;
      try {
        await new Promise<void>((ok, fail) => {
          stream.once('error', fail);
          stream.end(() => ok());
        });
        if (!stream.closed) await new Promise<void>((ok) => stream.once('close', () => ok()));
        await rename(temporary, full);
        untrackTemporary(temporary);
      } catch (cause) {
        await finish().catch(() => undefined);
        await unlink(temporary).catch(() => undefined);
        untrackTemporary(temporary);
        throw fileError(flag, full, cause);
      }
      return full;
    },
    async abort() {
      if (settled) return;
      settled = true;
      await finish().catch(() => undefined);
      await unlink(temporary).catch(() => undefined);
      untrackTemporary(temporary);
    },
  };
}

/** Runs `fn` with an open output; commits when it resolves, removes the temporary file when it throws. */
export async function writeStreaming<T>(ctx: CliContext, flag: string, path: string, fn: (stream: Writable) => Promise<T>, options: OutputOptions = {}): Promise<{ path: string; result: T }> {
  const sink = await openOutput(ctx, flag, path, options);
  let result: T;
  try {
    result = await fn(sink.stream);
  } catch (error) {
    await sink.abort();
    throw error;
  }
  return { path: await sink.commit(), result };
}

/** Writes FILE atomically (or standard output for `-`); returns the absolute path, or `-`. */
export async function writeOutput(ctx: CliContext, flag: string, path: string, data: Uint8Array | string, options: OutputOptions = {}): Promise<string> {
  if (path === '-') {
    await writeTo(ctx.stdout, data);
    return '-';
  }
  const { path: written } = await writeStreaming(
    ctx,
    flag,
    path,
    async (stream) => {
      await new Promise<void>((ok, fail) => {
        stream.write(data, (error) => (error ? fail(fileError(flag, resolve(ctx.cwd, path), error)) : ok()));
      });
    },
    options,
  );
  return written;
}

// ------------------------------------------------------------------------------ encodings

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** Strict base64 (standard or URL alphabet; whitespace ignored). Garbage is an error, not a silent truncation. */
export function decodeBase64(text: string, what: string): Uint8Array {
  const compact = text.replace(/\s+/g, '');
  const ok = (BASE64.test(compact) && compact.length % 4 === 0) || (BASE64URL.test(compact) && compact.length % 4 !== 1);
  if (!ok || compact.length === 0) {
    throw new CliError('InvalidSignatureEncoding', `${what} is not valid base64 (--encoding base64 expects the base64 text of the signature)`);
  }
  return new Uint8Array(Buffer.from(compact, compact.includes('-') || compact.includes('_') ? 'base64url' : 'base64'));
}

export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export function toBase64Url(bytes: Uint8Array | string): string {
  return (typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString('base64url');
}

/**
 * Base64url-encodes a stream of chunks on the fly (JWS signing input of a large payload): bytes
 * are carried over between chunks so that every emitted piece encodes a multiple of 3 bytes.
 */
export async function* base64UrlChunks(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let carry: Buffer = Buffer.alloc(0);
  for await (const chunk of chunks) {
    const all = carry.length ? Buffer.concat([carry, chunk]) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const whole = all.length - (all.length % 3);
    if (whole > 0) yield new Uint8Array(Buffer.from(all.subarray(0, whole).toString('base64url'), 'ascii'));
    carry = Buffer.from(all.subarray(whole));
  }
  if (carry.length) yield new Uint8Array(Buffer.from(carry.toString('base64url'), 'ascii'));
}
