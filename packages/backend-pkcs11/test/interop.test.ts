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
import { SOFTHSM_LIB, createToken, runTool } from '../src/testing/index.js';

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
  it('lists each key pair with CKA_ID = UTF-8 of the id, CKA_LABEL = id, and a sensitive, never-extractable private key', async () => {
    const algorithms: KeyAlgorithm[] = ['Ed25519', 'ECDSA_P256', 'RSA_2048', 'RSA_PSS_2048'];
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
      expect(priv!.access).toContain('sensitive');
      expect(priv!.access).toContain('never extractable');
      expect(priv!.usage).toContain('sign');
      expect(pub!.usage).toContain('verify');
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
