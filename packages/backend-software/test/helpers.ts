import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import { SoftwareBackend, type SoftwareBackendOptionsInput } from '../src/index.js';

export const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
export const DIST_ENTRY = join(PACKAGE_DIR, 'dist', 'index.js');

/** The smallest scrypt cost a new store accepts (≈0.1 s); the default (2^17) is ≈0.4 s per initialize. */
export const FAST_SCRYPT = { N: 2 ** 15, r: 8, p: 1 } as const;

export async function tempStore(label: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `olocus-sw-${label}-`));
}

export async function removeStore(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** A `tempStore` maker for one test file: every store it made is removed after the file's tests. */
export function storesRemovedAfterAll(): (label: string) => Promise<string> {
  const made: string[] = [];
  afterAll(async () => {
    for (const dir of made) await removeStore(dir);
  });
  return async (label) => {
    const dir = await tempStore(label);
    made.push(dir);
    return dir;
  };
}

export function backendFor(directory: string, passphrase: string, extra: Partial<SoftwareBackendOptionsInput> = {}): SoftwareBackend {
  return new SoftwareBackend({ directory, scrypt: FAST_SCRYPT, cacheRevalidateMs: 0, ...extra }, { passphrase });
}

export async function openBackend(directory: string, passphrase: string, extra: Partial<SoftwareBackendOptionsInput> = {}): Promise<SoftwareBackend> {
  const backend = backendFor(directory, passphrase, extra);
  await backend.initialize();
  return backend;
}

/** sha256 of every file in the directory, by name. */
export async function snapshot(directory: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(directory)).sort()) {
    out[name] = createHash('sha256').update(await readFile(join(directory, name))).digest('hex');
  }
  return out;
}

export function requireDist(): void {
  if (!existsSync(DIST_ENTRY)) {
    throw new Error(`${DIST_ENTRY} is missing: build first (pnpm --filter @olocus/hsm-core build && pnpm --filter @olocus/hsm-backend-software build)`);
  }
}
