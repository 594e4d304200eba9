import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HsmError, type HsmBackend } from '@olocus/hsm-core';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import { afterAll } from 'vitest';

/** The lowest scrypt cost the software backend accepts: the tests measure monitoring, not key derivation. */
export const FAST_SCRYPT = { N: 2 ** 15, r: 8, p: 1 } as const; // the smallest N the software backend accepts

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** An initialised software backend in a fresh temporary directory; the passphrase is passed directly. */
export async function softwareBackend(): Promise<SoftwareBackend> {
  const directory = mkdtempSync(join(tmpdir(), 'olocus-monitoring-'));
  dirs.push(directory);
  const backend = new SoftwareBackend({ directory, scrypt: FAST_SCRYPT, cacheRevalidateMs: 0 }, { passphrase: 'monitoring-test-passphrase' });
  await backend.initialize();
  return backend;
}

/** Counts calls per method of a backend (a plain forwarding wrapper). */
export function counting(inner: HsmBackend): { backend: HsmBackend; calls: Record<string, number> } {
  const calls: Record<string, number> = {};
  const backend = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls[String(prop)] = (calls[String(prop)] ?? 0) + 1;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { backend, calls };
}

/** A backend whose listed methods misbehave: 'reject' fails with DeviceUnavailable, 'hang' never settles. */
export function faulty(inner: HsmBackend, faults: Partial<Record<keyof HsmBackend, 'reject' | 'hang'>>): HsmBackend {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      const fault = faults[prop as keyof HsmBackend];
      if (typeof value !== 'function') return value;
      if (fault === 'reject') return () => Promise.reject(new HsmError('DeviceUnavailable', `${String(prop)}: injected failure`));
      if (fault === 'hang') return () => new Promise(() => undefined);
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}
