import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { P11KIT_CLIENT_LIB, SOFTHSM_LIB, SPY_LIB, findPkcs11Module, multiarchTriplets } from '../src/index.js';

const root = mkdtempSync(join(tmpdir(), 'olocus-libs-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const touch = (path: string) => {
  mkdirSync(join(root, path, '..'), { recursive: true });
  writeFileSync(join(root, path), '');
};

describe('PKCS#11 module discovery', () => {
  it('finds the modules installed on this machine (and fails with the install line otherwise)', () => {
    for (const [name, path] of Object.entries({ SOFTHSM_LIB, SPY_LIB, P11KIT_CLIENT_LIB })) {
      expect(path, `${name} not found: apt-get install softhsm2 opensc p11-kit p11-kit-modules`).toMatch(/\.so$/);
    }
  });

  it('searches whatever multiarch directory a machine has, not one hard-coded architecture', () => {
    touch('usr/lib/aarch64-linux-gnu/pkcs11/pkcs11-spy.so');
    touch('usr/lib/riscv64-linux-gnu/pkcs11/p11-kit-client.so');
    touch('usr/lib64/pkcs11/libsofthsm2.so');
    expect(multiarchTriplets(root).sort()).toEqual(['aarch64-linux-gnu', 'riscv64-linux-gnu']);
    expect(findPkcs11Module('pkcs11-spy.so', ['pkcs11'], { root })).toBe(join(root, 'usr/lib/aarch64-linux-gnu/pkcs11/pkcs11-spy.so'));
    expect(findPkcs11Module('p11-kit-client.so', ['pkcs11'], { root })).toBe(join(root, 'usr/lib/riscv64-linux-gnu/pkcs11/p11-kit-client.so'));
    expect(findPkcs11Module('libsofthsm2.so', ['softhsm', 'pkcs11'], { root })).toBe(join(root, 'usr/lib64/pkcs11/libsofthsm2.so'));
    expect(findPkcs11Module('absent.so', ['pkcs11'], { root })).toBeUndefined();
  });
});
