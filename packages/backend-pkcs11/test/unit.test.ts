import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BackendRegistry, HsmError } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { backendFactories, classifyReturnValue, formatPkcs11Uri, parsePkcs11Uri, pkcs11BackendFactory, vendorProfiles, VENDOR_NAMES } from '../src/index.js';
import { Pkcs11Backend } from '../src/index.js';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';

const registryToken = createToken('registry');

describe('options', () => {
  const parse = (raw: unknown) => pkcs11BackendFactory.parseOptions(raw);

  it('applies defaults', () => {
    const o = parse({ tokenLabel: 't' });
    expect(o.vendor).toBe('softhsm');
    expect(o.pin).toEqual({ env: 'OLOCUS_HSM_PIN' });
    expect(o.sessionPool.maxSessions).toBe(4);
    expect(o.readOnly).toBe(false);
  });

  it.each([
    [{}, 'tokenLabel'],
    [{ tokenLabel: 't', vendor: 'acme' }, 'vendor'],
    [{ slotId: -1 }, 'slotId'],
    [{ tokenLabel: 't', sessionPool: { maxSessions: 0 } }, 'sessionPool.maxSessions'],
    [{ tokenLabel: 't', sessionPool: { minSessions: 5, maxSessions: 2 } }, 'sessionPool.minSessions'],
    [{ tokenLabel: 't', pin: '1234' }, 'pin'],
    [{ tokenLabel: 't', libraryPath: 42 }, 'libraryPath'],
    [{ tokenLabel: 't', unknown: true }, '(root)'],
  ])('rejects %j naming %s', (raw, field) => {
    let caught: unknown;
    try {
      parse(raw);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(HsmError);
    expect((caught as HsmError).code).toBe('InvalidConfiguration');
    if (field !== '(root)') expect((caught as HsmError).message).toContain(field);
  });

  it('never echoes a PIN given in place of a secret source', () => {
    try {
      parse({ tokenLabel: 't', pin: 'super-secret-pin' });
    } catch (error) {
      expect((error as Error).message).not.toContain('super-secret-pin');
    }
  });
});

describe('RFC 7512 URIs', () => {
  it('parses ids, labels, types and tokens', () => {
    const uri = parsePkcs11Uri('pkcs11:token=my%20token;id=%0a%0b;object=key-1;type=private?module-path=/x.so');
    expect(uri.token).toBe('my token');
    expect(Buffer.from(uri.id!).toString('hex')).toBe('0a0b');
    expect(uri.object).toBe('key-1');
    expect(uri.type).toBe('private');
    expect(uri.query['module-path']).toBe('/x.so');
  });

  it('round-trips through formatPkcs11Uri', () => {
    const id = randomBytes(8);
    const text = formatPkcs11Uri({ token: 'tök', id, object: 'a b', type: 'private' });
    const back = parsePkcs11Uri(text);
    expect(Buffer.from(back.id!).equals(id)).toBe(true);
    expect(back.token).toBe('tök');
    expect(back.object).toBe('a b');
  });

  it.each(['http://x', 'pkcs11:id=%zz', 'pkcs11:bogus=1', 'pkcs11:type=secret', 'pkcs11:id=%01;id=%02', 'pkcs11:?pin-value'])('rejects %s with InvalidArgument', (text) => {
    expect(() => parsePkcs11Uri(text)).toThrow(HsmError);
  });

  it('does not echo pin-value in errors', () => {
    try {
      parsePkcs11Uri('pkcs11:object=x?pin-value=hunter2&pin-value=hunter2');
    } catch (error) {
      expect((error as Error).message).not.toContain('hunter2');
    }
  });
});

describe('return-code classification', () => {
  it.each([
    [0xb3, 'session'],
    [0xb0, 'session'],
    [0x101, 'login'],
    [0x30, 'device'],
    [0x32, 'device'],
    [0xe0, 'device'],
    [0x190, 'device'],
    [0x5, 'ambiguous'],
    [0x82, 'staleObject'],
    [0xa0, 'pin'],
    [0xa4, 'pin'],
    [0x7, 'caller'],
    [0x21, 'caller'],
    [0x70, 'caller'],
  ])('0x%s → %s', (rv, cls) => {
    expect(classifyReturnValue(rv)).toBe(cls);
  });
});

describe('vendor profiles', () => {
  it('has every vendor, with library paths, a PIN format and a FIPS claim', () => {
    for (const name of VENDOR_NAMES) {
      const v = vendorProfiles[name];
      expect(v.libraryPaths.length).toBeGreaterThan(0);
      expect(v.pinHint.length).toBeGreaterThan(0);
      expect(v.documentedFips.notes.length).toBeGreaterThan(0);
      expect(v.identity.manufacturer).toBeInstanceOf(RegExp);
      expect(v.testedHere).toBe(name === 'softhsm');
    }
  });

  it('refuses a CloudHSM PIN that is not user:password before any login', async () => {
    const backend = new Pkcs11Backend({ libraryPath: '/nonexistent.so', tokenLabel: 'hsm1', vendor: 'cloudhsm' }, { pin: 'nocolon' });
    const error = await expectHsmError(backend.initialize(), 'InvalidConfiguration');
    expect(error.message).not.toContain('nocolon');
  });
});

describe('registry', () => {
  it('exports one factory of type pkcs11', () => {
    expect(backendFactories.map((f) => f.type)).toEqual(['pkcs11']);
  });

  it('builds a working backend through core BackendRegistry, reading the PIN from the environment', async () => {
    const token = registryToken;
    const registry = new BackendRegistry({ env: { OLOCUS_HSM_PIN: token.pin }, importer: async () => import('../src/index.js') });
    const backend = await registry.create({ type: 'pkcs11', options: { libraryPath: SOFTHSM_LIB, tokenLabel: token.label } });
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'via-registry', algorithm: 'ECDSA_P256' });
      const data = randomBytes(16);
      expect(await backend.verify(key, data, await backend.sign(key, data))).toBe(true);
      expect((await backend.fipsStatus()).standard).toBe('none');
      expect(JSON.stringify(backend)).not.toContain(token.pin);
    } finally {
      await backend.close();
    }
  });

  it('reports a missing PIN variable as InvalidConfiguration naming the variable', async () => {
    const registry = new BackendRegistry({ env: {}, importer: async () => import('../src/index.js') });
    const backend = await registry.create({ type: 'pkcs11', options: { libraryPath: SOFTHSM_LIB, tokenLabel: 'x' } });
    const error = await expectHsmError(backend.initialize(), 'InvalidConfiguration');
    expect(error.message).toContain('OLOCUS_HSM_PIN');
  });
});

describe('module discovery', () => {
  it('finds a vendor module under any multiarch directory, not only the architecture the profile names', async () => {
    const { mkdtempSync, mkdirSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { findLibrary } = await import('../src/token.js');
    const root = mkdtempSync(join(tmpdir(), 'olocus-libdirs-'));
    try {
      mkdirSync(join(root, 'usr/lib/riscv64-linux-gnu/pkcs11'), { recursive: true });
      writeFileSync(join(root, 'usr/lib/riscv64-linux-gnu/pkcs11/yubihsm_pkcs11.so'), '');
      const options = pkcs11BackendFactory.parseOptions({ tokenLabel: 't', vendor: 'yubihsm' });
      expect(findLibrary(options, vendorProfiles.yubihsm, root)).toBe(join(root, 'usr/lib/riscv64-linux-gnu/pkcs11/yubihsm_pkcs11.so'));
      let caught: unknown;
      try {
        findLibrary(options, vendorProfiles.luna, root);
      } catch (error) {
        caught = error;
      }
      expect((caught as HsmError).code).toBe('InitializationFailed');
      expect((caught as HsmError).message).toContain('set libraryPath');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
