import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

export const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));

if (!existsSync(BIN)) {
  throw new Error(`${BIN} is missing: build the CLI first (cd packages/cli && pnpm build, or pnpm build at the root)`);
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
}

/** The environment without any OLOCUS_* variable (and no colours). */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('OLOCUS_')) env[k] = v;
  return { ...env, ...extra };
}

/**
 * The passphrase the tests' stores are created with (only `init` creates a store, and it needs
 * one: from this variable, --passphrase-file or a terminal prompt).
 */
export const TEST_PASSPHRASE = 'olocus-test-store-passphrase-5d1e';

/** cleanEnv() plus OLOCUS_HSM_PASSPHRASE: the default environment of `cli()` and `run()`. */
export function testEnv(extra: Record<string, string> = {}): Record<string, string> {
  return cleanEnv({ OLOCUS_HSM_PASSPHRASE: TEST_PASSPHRASE, ...extra });
}

/** Runs the built binary: `node dist/bin.js ...args`. */
export function cli(args: string[], options: { cwd: string; env?: Record<string, string>; input?: Uint8Array | string } ): Promise<RunResult> {
  return run(process.execPath, [BIN, ...args], options);
}

export function run(command: string, args: string[], options: { cwd: string; env?: Record<string, string>; input?: Uint8Array | string }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? testEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    // A command that exits before reading stdin closes the pipe: that is not a test failure.
    child.stdin.on('error', () => {});
    child.on('close', (code) => {
      const stdoutBytes = Buffer.concat(out);
      resolve({ code: code ?? -1, stdout: stdoutBytes.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), stdoutBytes });
    });
    child.stdin.end(options.input ?? '');
  });
}

export async function tempDir(prefix = 'olocus-cli-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Lines of text, without the empty last one. */
export function lines(text: string): string[] {
  return text.split('\n').filter((l, i, all) => !(l === '' && i === all.length - 1));
}

/** The one stderr line of a refused command (exit 2), checked to start with `olocus-hsm: CODE: `. */
export function errorLine(r: RunResult, code: string): string {
  expect(r.code, r.stdout + r.stderr).toBe(2);
  const errLines = lines(r.stderr);
  expect(errLines, r.stderr).toHaveLength(1);
  expect(errLines[0]).toMatch(new RegExp(`^olocus-hsm: ${code}: `));
  return errLines[0]!;
}

/** An empty folder `name` under `parent` (emptied when it exists). */
export async function freshDir(parent: string, name: string): Promise<string> {
  const path = join(parent, name);
  await rm(path, { recursive: true, force: true });
  await mkdir(path);
  return path;
}

/** Every file under `path`, recursively. */
export async function listFiles(path: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path, { withFileTypes: true })) {
    const full = join(path, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(full)));
    else out.push(full);
  }
  return out;
}
