import { generateKeyPairSync, sign as nodeSign, createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  HsmError,
  KEY_ALGORITHMS,
  algorithmInfo,
  decodeSignature,
  ecdsaDerToRaw,
  ecdsaRawToDer,
  encodeSignature,
  exportPublicKey,
  verifyLocally,
} from '../src/index.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'));

describe('ECDSA raw <-> DER', () => {
  it('round-trips signatures made by OpenSSL (via node:crypto) for each curve', () => {
    for (const [curve, n] of [['prime256v1', 32], ['secp384r1', 48], ['secp521r1', 66]] as const) {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: curve });
      for (let i = 0; i < 50; i++) {
        const msg = Buffer.from(`m${i}`);
        const der = nodeSign('sha256', msg, privateKey);
        const raw = ecdsaDerToRaw(der, n);
        expect(raw.length).toBe(2 * n);
        expect(Buffer.from(ecdsaRawToDer(raw, n)).equals(der)).toBe(true);
      }
    }
  });

  it('encodes small and high-bit components minimally', () => {
    const raw = new Uint8Array(64);
    raw[31] = 1; // r = 1
    raw[32] = 0x80; // s has its top bit set -> needs a 0x00 pad
    const der = ecdsaRawToDer(raw);
    expect(Buffer.from(der).toString('hex')).toBe('3026020101022100' + '80' + '00'.repeat(31));
    expect(Buffer.from(ecdsaDerToRaw(der, 32)).equals(Buffer.from(raw))).toBe(true);
  });

  it('uses the long length form for P-521 signatures', () => {
    const raw = new Uint8Array(132).fill(0x7f);
    const der = ecdsaRawToDer(raw);
    expect(der[1]).toBe(0x81);
    expect(Buffer.from(ecdsaDerToRaw(der, 66)).equals(Buffer.from(raw))).toBe(true);
  });

  it.each([
    ['not a sequence', '3106020101020101'],
    ['trailing bytes', '300602010102010100'],
    ['non-minimal integer', '30070202000102010 1'.replace(/ /g, '')],
    ['negative integer', '3006020181020101'],
    ['length mismatch', '3007020101020101'],
    ['empty', ''],
    ['integer longer than the curve', '3026022101' + '00'.repeat(32) + '020101'],
  ])('rejects %s with InvalidSignatureEncoding', (_name, input) => {
    let error: unknown;
    try {
      ecdsaDerToRaw(hex(input), 32);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(HsmError);
    expect((error as HsmError).code).toBe('InvalidSignatureEncoding');
  });

  it('rejects raw signatures of odd or wrong length', () => {
    expect(() => ecdsaRawToDer(new Uint8Array(63))).toThrow(HsmError);
    expect(() => ecdsaRawToDer(new Uint8Array(64), 48)).toThrow(/must be 96 bytes/);
  });

  it('leaves non-ECDSA signatures unchanged', () => {
    const sig = new Uint8Array([1, 2, 3]);
    expect(encodeSignature('Ed25519', sig, 'der')).toBe(sig);
    expect(decodeSignature('RSA_2048', sig, 'der')).toBe(sig);
  });
});

describe('public key export and local verification', () => {
  const keys = {
    Ed25519: generateKeyPairSync('ed25519'),
    ECDSA_P256: generateKeyPairSync('ec', { namedCurve: 'prime256v1' }),
    ECDSA_P384: generateKeyPairSync('ec', { namedCurve: 'secp384r1' }),
    ECDSA_P521: generateKeyPairSync('ec', { namedCurve: 'secp521r1' }),
    RSA_2048: generateKeyPairSync('rsa', { modulusLength: 2048 }),
  };

  it('exports SPKI DER, PEM and JWK that describe the same key', () => {
    for (const [algorithm, pair] of Object.entries(keys)) {
      const spki = pair.publicKey.export({ format: 'der', type: 'spki' });
      const info = { algorithm: algorithm as keyof typeof keys, spki };
      expect(exportPublicKey(info, 'der')).toBe(spki);
      const pem = exportPublicKey(info, 'pem');
      expect(pem).toMatch(/^-----BEGIN PUBLIC KEY-----/);
      expect(createPublicKey(pem).export({ format: 'der', type: 'spki' }).equals(spki)).toBe(true);
      const jwk = exportPublicKey(info, 'jwk');
      expect(createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'der', type: 'spki' }).equals(spki)).toBe(true);
      expect(jwk.use).toBe('sig');
    }
    expect((exportPublicKey({ algorithm: 'ECDSA_P384', spki: keys.ECDSA_P384.publicKey.export({ format: 'der', type: 'spki' }) }, 'jwk') as { alg: string }).alg).toBe('ES384');
  });

  it('verifies node-made signatures and refuses a key of the wrong type', () => {
    const msg = Buffer.from('hello');
    const ed = nodeSign(null, msg, keys.Ed25519.privateKey);
    expect(verifyLocally('Ed25519', keys.Ed25519.publicKey, msg, ed)).toBe(true);
    expect(verifyLocally('Ed25519', keys.Ed25519.publicKey, Buffer.from('hellO'), ed)).toBe(false);
    const ec = nodeSign('sha384', msg, { key: keys.ECDSA_P384.privateKey, dsaEncoding: 'ieee-p1363' });
    expect(verifyLocally('ECDSA_P384', keys.ECDSA_P384.publicKey, msg, ec)).toBe(true);
    expect(() => verifyLocally('ECDSA_P256', keys.ECDSA_P384.publicKey, msg, ec)).toThrow(/does not match algorithm ECDSA_P256/);
    expect(() => verifyLocally('RSA_3072', keys.RSA_2048.publicKey, msg, ec)).toThrow(HsmError);
  });

  it('has table entries for every algorithm', () => {
    for (const algorithm of KEY_ALGORITHMS) expect(algorithmInfo(algorithm).name).toBe(algorithm);
    expect(() => algorithmInfo('RSA_1024' as never)).toThrow(/unknown key algorithm/);
  });
});
