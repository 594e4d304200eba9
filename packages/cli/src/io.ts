import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { CliError, fileError } from './errors.js';
import type { CliContext } from './context.js';

async function readStdin(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return new Uint8Array(Buffer.concat(chunks));
}

/** Reads FILE, or standard input for `-`. */
export async function readInput(ctx: CliContext, flag: string, path: string): Promise<Uint8Array> {
  if (path === '-') return readStdin();
  const full = resolve(ctx.cwd, path);
  try {
    return new Uint8Array(await readFile(full));
  } catch (cause) {
    throw fileError(flag, full, cause);
  }
}

/** Writes FILE, or standard output for `-`. */
export async function writeOutput(ctx: CliContext, flag: string, path: string, data: Uint8Array | string): Promise<string> {
  if (path === '-') {
    await new Promise<void>((ok, fail) => ctx.stdout.write(data, (e) => (e ? fail(e) : ok())));
    return '-';
  }
  const full = resolve(ctx.cwd, path);
  try {
    await writeFile(full, data);
  } catch (cause) {
    throw fileError(flag, full, cause);
  }
  return full;
}

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
