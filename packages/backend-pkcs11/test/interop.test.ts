/**
 * Independent checkers: pkcs11-tool (OpenSC) reads what the library made, openssl verifies what it
 * signed, and the library uses a key pair that pkcs11-tool made. PINs travel in environment
 * variables only (`pkcs11-tool --pin env:VAR`).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ecdsaRawToDer, exportPublicKey, type KeyAlgorithm } from '@olocus/hsm-core';
import { Pkcs11Backend } from '../src/index.js';
import {
  CKA_APPLICATION,
  CKA_CLASS,
  CKA_DECRYPT,
  CKA_DERIVE,
  CKA_ENCRYPT,
  CKA_END_DATE,
  CKA_EXTRACTABLE,
  CKA_ID,
  CKA_LABEL,
  CKA_MODIFIABLE,
  CKA_PRIVATE,
  CKA_SENSITIVE,
  CKA_SIGN,
  CKA_SIGN_RECOVER,
  CKA_START_DATE,
  CKA_TOKEN,
  CKA_UNWRAP,
  CKA_VALUE,
  CKA_VERIFY,
  CKA_VERIFY_RECOVER,
  CKA_WRAP,
  CKF_RW_SESSION,
  CKF_SERIAL_SESSION,
  CKO_DATA,
  CKO_PRIVATE_KEY,
  CKO_PUBLIC_KEY,
} from '../src/constants.js';
import { acquireModule, releaseModule } from '../src/module.js';
import { SOFTHSM_LIB, createToken, runTool } from '@olocus/hsm-test-support';

const token = createToken('interop');
const PIN_VAR = 'OLOCUS_TEST_PIN';
const work = mkdtempSync(join(tmpdir(), 'olocus-interop-'));
let backend: Pkcs11Backend;

function pkcs11Tool(args: string[]) {
  const result = runTool('pkcs11-tool', ['--module', SOFTHSM_LIB, '--token-label', token.label, '--login', '--pin', `env:${PIN_VAR}`, ...args], { [PIN_VAR]: token.pin });
  expect(result.status, `pkcs11-tool ${args.join(' ')} failed: ${result.stderr}`).toBe(0);
  expect(`${result.stdout}${result.stderr}`).not.toContain(token.pin);
  return result.stdout;
}

/**
 * A raw pkcs11js session on the test token, as an independent reader and as a "foreign" writer.
 * The backend in this file keeps the token logged in, so private objects are visible here too.
 */
function withRawSession<R>(fn: (p11: import('pkcs11js').PKCS11, session: Buffer) => R): R {
  const mod = acquireModule(SOFTHSM_LIB);
  const p11 = mod.p11;
  try {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === token.label)!;
    const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    try {
      return fn(p11, session);
    } finally {
      p11.C_CloseSession(session);
    }
  } finally {
    releaseModule(mod);
  }
}

function findObjects(p11: import('pkcs11js').PKCS11, session: Buffer, template: import('pkcs11js').Attribute[]): Buffer[] {
  p11.C_FindObjectsInit(session, template);
  try {
    return p11.C_FindObjects(session, 16);
  } finally {
    p11.C_FindObjectsFinal(session);
  }
}

function bools(p11: import('pkcs11js').PKCS11, session: Buffer, object: Buffer, types: number[]): boolean[] {
  return p11.C_GetAttributeValue(session, object, types.map((type) => ({ type }))).map((a) => a.value![0] !== 0);
}

/** pkcs11-tool -O output split into object blocks. */
function listObjects(): Array<{ kind: string; label: string; id: string; access: string; usage: string }> {
  const out = pkcs11Tool(['-O']);
  return out
    .split(/\n(?=\S)/)
    .filter((block) => /Object;/.test(block))
    .map((block) => ({
      kind: block.split(';')[0]!.trim(),
      label: /label:\s+(.*)/.exec(block)?.[1]?.trim() ?? '',
      id: /ID:\s+([0-9a-f]+)/.exec(block)?.[1] ?? '',
      access: /Access:\s+(.*)/.exec(block)?.[1] ?? '',
      usage: /Usage:\s+(.*)/.exec(block)?.[1] ?? '',
    }));
}

function opensslVerify(algorithm: KeyAlgorithm, pem: string, data: Uint8Array, signature: Uint8Array): boolean {
  const name = randomBytes(4).toString('hex');
  const pub = join(work, `${name}.pem`);
  const dataFile = join(work, `${name}.bin`);
  const sigFile = join(work, `${name}.sig`);
  writeFileSync(pub, pem);
  writeFileSync(dataFile, data);
  let args: string[];
  if (algorithm === 'Ed25519') {
    writeFileSync(sigFile, signature);
    args = ['pkeyutl', '-verify', '-pubin', '-inkey', pub, '-rawin', '-in', dataFile, '-sigfile', sigFile];
  } else if (algorithm.startsWith('ECDSA')) {
    writeFileSync(sigFile, ecdsaRawToDer(signature));
    const hash = algorithm === 'ECDSA_P256' ? '-sha256' : algorithm === 'ECDSA_P384' ? '-sha384' : '-sha512';
    args = ['dgst', hash, '-verify', pub, '-signature', sigFile, dataFile];
  } else {
    writeFileSync(sigFile, signature);
    args = ['dgst', '-sha256', '-verify', pub, '-signature', sigFile];
    if (algorithm.startsWith('RSA_PSS')) args.push('-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32');
    args.push(dataFile);
  }
  const result = runTool('openssl', args);
  return result.status === 0 && /Verified OK|Signature Verified Successfully/.test(result.stdout);
}

beforeAll(async () => {
  backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label }, { pin: token.pin });
  await backend.initialize();
});

afterAll(async () => {
  await backend?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('keys made by the library, seen by pkcs11-tool', () => {
  const algorithms: KeyAlgorithm[] = ['Ed25519', 'ECDSA_P256', 'RSA_2048', 'RSA_PSS_2048'];

  it('lists each key pair with CKA_ID = UTF-8 of the id, CKA_LABEL = id; the private key signs only (sensitive, never extractable), the public key verifies only', async () => {
    for (const algorithm of algorithms) await backend.generateKeyPair({ id: `lib-${algorithm}`, algorithm });
    const objects = listObjects();
    for (const algorithm of algorithms) {
      const id = `lib-${algorithm}`;
      const idHex = Buffer.from(id, 'utf8').toString('hex');
      const priv = objects.find((o) => o.kind === 'Private Key Object' && o.label === id);
      const pub = objects.find((o) => o.kind === 'Public Key Object' && o.label === id);
      expect(priv, `${id} private key listed`).toBeDefined();
      expect(pub, `${id} public key listed`).toBeDefined();
      expect(priv!.id).toBe(idHex);
      expect(pub!.id).toBe(idHex);
      // pkcs11-tool prints every capability that is true: nothing but sign / verify may appear
      // (SoftHSM's defaults would print "decrypt, sign, unwrap" and "encrypt, verify, wrap")
      expect(priv!.usage.trim(), `${id} private key usage`).toBe('sign');
      expect(pub!.usage.trim(), `${id} public key usage`).toBe('verify');
      expect(priv!.access).toContain('sensitive');
      expect(priv!.access).toContain('always sensitive');
      expect(priv!.access).toContain('never extractable');
      expect(priv!.access).not.toMatch(/(^|, )extractable/);
    }
  });

  it('sets every capability explicitly and makes both halves non-modifiable (read back with pkcs11js, as pkcs11-tool does not print CKA_MODIFIABLE)', () => {
    withRawSession((p11, session) => {
      for (const algorithm of algorithms) {
        const ckaId = Buffer.from(`lib-${algorithm}`, 'utf8');
        const [priv] = findObjects(p11, session, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_ID, value: ckaId }]);
        const [pub] = findObjects(p11, session, [{ type: CKA_CLASS, value: CKO_PUBLIC_KEY }, { type: CKA_ID, value: ckaId }]);
        expect(bools(p11, session, priv!, [CKA_SIGN, CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE, CKA_SIGN_RECOVER, CKA_MODIFIABLE, CKA_EXTRACTABLE, CKA_SENSITIVE])).toEqual([
          true,
          false,
          false,
          false,
          false,
          false,
          false,
          true,
        ]);
        expect(bools(p11, session, pub!, [CKA_VERIFY, CKA_ENCRYPT, CKA_WRAP, CKA_VERIFY_RECOVER, CKA_MODIFIABLE])).toEqual([true, false, false, false, false]);
        expect(() => p11.C_SetAttributeValue(session, priv!, [{ type: CKA_DECRYPT, value: true }])).toThrow();
        expect(() => p11.C_SetAttributeValue(session, pub!, [{ type: CKA_LABEL, value: 'renamed' }])).toThrow();
      }
    });
  });
});

describe('key metadata is bound to the key', () => {
  it('puts CKA_START_DATE / CKA_END_DATE on the key and keeps exact times and labels in a non-modifiable data object found by CKA_ID', async () => {
    const expiresAt = new Date(Date.now() + 3 * 86_400_000);
    const key = await backend.generateKeyPair({ id: 'dated', algorithm: 'ECDSA_P256', expiresAt, labels: { team: 'payments' } });
    const day = (d: Date) => d.toISOString().slice(0, 10).replace(/-/g, '');
    withRawSession((p11, session) => {
      const ckaId = Buffer.from('dated', 'utf8');
      const [pub] = findObjects(p11, session, [{ type: CKA_CLASS, value: CKO_PUBLIC_KEY }, { type: CKA_ID, value: ckaId }]);
      const [start, end] = p11.C_GetAttributeValue(session, pub!, [{ type: CKA_START_DATE }, { type: CKA_END_DATE }]);
      expect(start!.value!.toString('ascii')).toBe(day(key.createdAt!));
      expect(end!.value!.toString('ascii')).toBe(day(expiresAt));
      // the expiry cannot be moved on the key
      expect(() => p11.C_SetAttributeValue(session, pub!, [{ type: CKA_END_DATE, value: Buffer.from('20991231') }])).toThrow();
      const data = findObjects(p11, session, [{ type: CKA_CLASS, value: CKO_DATA }, { type: CKA_APPLICATION, value: `olocus-hsm/key-metadata/v2;id=${ckaId.toString('hex')}` }]);
      expect(data).toHaveLength(1);
      expect(bools(p11, session, data[0]!, [CKA_MODIFIABLE, CKA_PRIVATE])).toEqual([false, true]);
      expect(() => p11.C_SetAttributeValue(session, data[0]!, [{ type: CKA_VALUE, value: Buffer.from('{}') }])).toThrow();
    });
    const second = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label }, { pin: token.pin });
    await second.initialize();
    try {
      const again = await second.getKey('dated');
      expect(again.expiresAt?.toISOString()).toBe(expiresAt.toISOString());
      expect(again.createdAt?.toISOString()).toBe(key.createdAt!.toISOString());
      expect(again.metadata['label.team']).toBe('payments');
    } finally {
      await second.close();
    }
  });

  it('ignores foreign data objects: same label (pkcs11-tool), same CKA_APPLICATION but another public key, or modifiable (pkcs11js); keys made by other tools have an unknown creation time', async () => {
    pkcs11Tool(['--keypairgen', '--key-type', 'EC:prime256v1', '--id', 'f00d', '--label', 'foreign-target']);
    const lie = JSON.stringify({ createdAt: '2001-01-01T00:00:00.000Z', expiresAt: '2001-01-02T00:00:00.000Z', labels: { owner: 'mallory' } });
    const lieFile = join(work, 'lie.json');
    writeFileSync(lieFile, lie);
    // what the library used to trust: a data object with the key's label and the v1 application
    pkcs11Tool(['--write-object', lieFile, '--type', 'data', '--label', 'foreign-target', '--application-label', 'olocus-hsm/key-metadata/v1', '--private']);
    const handle = await backend.getKey('pkcs11:id=%f0%0d');
    const fingerprint = (await import('node:crypto')).createHash('sha256').update((await backend.getPublicKey(handle)).spki).digest('hex');
    withRawSession((p11, session) => {
      const forged = (publicKeySha256: string, modifiable: boolean) =>
        p11.C_CreateObject(session, [
          { type: CKA_CLASS, value: CKO_DATA },
          { type: CKA_TOKEN, value: true },
          { type: CKA_PRIVATE, value: true },
          { type: CKA_MODIFIABLE, value: modifiable },
          { type: CKA_LABEL, value: 'foreign-target' },
          { type: CKA_APPLICATION, value: 'olocus-hsm/key-metadata/v2;id=f00d' },
          { type: CKA_VALUE, value: Buffer.from(JSON.stringify({ ...JSON.parse(lie), ckaId: 'f00d', publicKeySha256 })) },
        ]);
      forged('00'.repeat(32), false); // names another key pair
      forged(fingerprint, true); // names this key, but could have been edited since
    });
    const fresh = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label }, { pin: token.pin });
    await fresh.initialize();
    try {
      const seen = await fresh.getKey('pkcs11:id=%f0%0d');
      expect(seen.createdAt).toBeUndefined();
      expect(seen.expiresAt).toBeUndefined();
      expect(seen.metadata['label.owner']).toBeUndefined();
      const data = randomBytes(32);
      expect(await fresh.verify(seen, data, await fresh.sign(seen, data))).toBe(true);
      // a foreign object with a library key's label does not touch that key either
      await fresh.generateKeyPair({ id: 'labelled-twin', algorithm: 'ECDSA_P256' });
      writeFileSync(lieFile, lie);
      pkcs11Tool(['--write-object', lieFile, '--type', 'data', '--label', 'labelled-twin', '--application-label', 'olocus-hsm/key-metadata/v1', '--private']);
      const third = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label }, { pin: token.pin });
      await third.initialize();
      try {
        const twin = await third.getKey('labelled-twin');
        expect(twin.expiresAt).toBeUndefined();
        expect(twin.createdAt!.getUTCFullYear()).toBeGreaterThan(2001);
        expect(twin.metadata['label.owner']).toBeUndefined();
      } finally {
        await third.close();
      }
    } finally {
      await fresh.close();
    }
  });
});

describe('signatures made by the library, verified by openssl', () => {
  const algorithms: KeyAlgorithm[] = ['Ed25519', 'ECDSA_P256', 'ECDSA_P384', 'ECDSA_P521', 'RSA_2048', 'RSA_PSS_2048'];
  for (const algorithm of algorithms) {
    it(`${algorithm}`, async () => {
      const key = await backend.generateKeyPair({ id: `ossl-${algorithm}`, algorithm });
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      const data = randomBytes(3000);
      const signature = await backend.sign(key, data);
      expect(opensslVerify(algorithm, pem, data, signature)).toBe(true);
      const tampered = Buffer.from(data);
      tampered[0] = tampered[0]! ^ 1;
      expect(opensslVerify(algorithm, pem, tampered, signature)).toBe(false);
    });
  }
});

describe('key pairs made by pkcs11-tool, used by the library', () => {
  it('signs with an EC key generated by pkcs11-tool --keypairgen --id 0a0b, addressed by pkcs11:id=%0a%0b;type=private', async () => {
    pkcs11Tool(['--keypairgen', '--key-type', 'EC:prime256v1', '--id', '0a0b', '--label', 'made-by-opensc']);
    const handle = await backend.getKey('pkcs11:id=%0a%0b;type=private');
    expect(handle.algorithm).toBe('ECDSA_P256');
    expect(handle.metadata.ckaId).toBe('0a0b');
    expect(handle.id).toBe('made-by-opensc');
    expect(handle.usages).toContain('sign');

    // the public key the library reads equals the one pkcs11-tool exports
    const derFile = join(work, 'opensc-pub.der');
    pkcs11Tool(['--read-object', '--type', 'pubkey', '--id', '0a0b', '--output-file', derFile]);
    const info = await backend.getPublicKey('pkcs11:id=%0a%0b;type=private');
    expect(Buffer.from(info.spki).equals(readFileSync(derFile))).toBe(true);

    const data = randomBytes(100);
    const signature = await backend.sign('pkcs11:id=%0a%0b;type=private', data);
    expect(opensslVerify('ECDSA_P256', exportPublicKey(info, 'pem'), data, signature)).toBe(true);
    expect(await backend.verify(handle, data, signature)).toBe(true);
    // by label, and by the handle returned earlier
    expect(opensslVerify('ECDSA_P256', exportPublicKey(info, 'pem'), data, await backend.sign('pkcs11:object=made-by-opensc', data))).toBe(true);
    expect(opensslVerify('ECDSA_P256', exportPublicKey(info, 'pem'), data, await backend.sign(handle, data))).toBe(true);

    const listed = await backend.listKeys({ prefix: 'made-by-' });
    expect(listed.keys.map((k) => k.ref)).toContain(handle.ref);
  });

  it('treats an RSA key made by pkcs11-tool (no CKA_ALLOWED_MECHANISMS) as PKCS#1 v1.5', async () => {
    pkcs11Tool(['--keypairgen', '--key-type', 'rsa:2048', '--id', 'c0ffee', '--label', 'opensc-rsa']);
    const handle = await backend.getKey('pkcs11:id=%c0%ff%ee');
    expect(handle.algorithm).toBe('RSA_2048');
    const data = randomBytes(64);
    const pem = exportPublicKey(await backend.getPublicKey(handle), 'pem');
    expect(opensslVerify('RSA_2048', pem, data, await backend.sign(handle, data))).toBe(true);
  });

  it('recovers a PSS key as RSA_PSS from its CKA_ALLOWED_MECHANISMS in a new instance', async () => {
    await backend.generateKeyPair({ id: 'pss-durable', algorithm: 'RSA_PSS_2048' });
    const second = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label }, { pin: token.pin });
    await second.initialize();
    try {
      expect((await second.getKey('pss-durable')).algorithm).toBe('RSA_PSS_2048');
    } finally {
      await second.close();
    }
  });
});
