import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { algorithmInfo, type KeyAlgorithm } from './algorithms.js';
import { HsmError } from './errors.js';

/**
 * ECDSA signature conversions between the library's raw r||s form (IEEE P1363)
 * and ASN.1 DER `SEQUENCE { INTEGER r, INTEGER s }` (what OpenSSL, AWS KMS and
 * Cloud KMS use). Strict: non-minimal integers, trailing bytes or wrong lengths
 * are InvalidSignatureEncoding.
 */
export function ecdsaRawToDer(raw: Uint8Array, componentBytes?: number): Uint8Array {
  const n = componentBytes ?? raw.length / 2;
  if (raw.length !== n * 2 || n === 0 || !Number.isInteger(n)) {
    throw new HsmError('InvalidSignatureEncoding', `raw ECDSA signature must be ${n * 2} bytes, got ${raw.length}`);
  }
  const r = derInteger(raw.subarray(0, n));
  const s = derInteger(raw.subarray(n));
  const body = concat([r, s]);
  return concat([Uint8Array.of(0x30), derLength(body.length), body]);
}

export function ecdsaDerToRaw(der: Uint8Array, componentBytes: number): Uint8Array {
  const fail = (why: string): never => {
    throw new HsmError('InvalidSignatureEncoding', `DER ECDSA signature is malformed: ${why}`);
  };
  let pos = 0;
  const readLength = (): number => {
    if (pos >= der.length) return fail('truncated length');
    const first = der[pos++]!;
    if (first < 0x80) return first;
    const count = first & 0x7f;
    if (count === 0 || count > 2) return fail('unsupported length form');
    let len = 0;
    for (let i = 0; i < count; i++) {
      if (pos >= der.length) return fail('truncated length');
      len = (len << 8) | der[pos++]!;
    }
    if (len < 0x80 || (count === 2 && len < 0x100)) return fail('non-minimal length');
    return len;
  };
  const readInteger = (): Uint8Array => {
    if (der[pos++] !== 0x02) return fail('expected INTEGER');
    const len = readLength();
    if (len === 0 || pos + len > der.length) return fail('bad INTEGER length');
    const bytes = der.subarray(pos, pos + len);
    pos += len;
    if (bytes[0]! & 0x80) return fail('negative INTEGER');
    if (len > 1 && bytes[0] === 0 && !(bytes[1]! & 0x80)) return fail('non-minimal INTEGER');
    const trimmed = bytes[0] === 0 ? bytes.subarray(1) : bytes;
    if (trimmed.length > componentBytes) return fail('INTEGER longer than the curve order');
    const out = new Uint8Array(componentBytes);
    out.set(trimmed, componentBytes - trimmed.length);
    return out;
  };
  if (der[pos++] !== 0x30) fail('expected SEQUENCE');
  const seqLen = readLength();
  if (pos + seqLen !== der.length) fail('length does not match the data');
  const r = readInteger();
  const s = readInteger();
  if (pos !== der.length) fail('trailing bytes');
  return concat([r, s]);
}

/** Component size in bytes of an ECDSA algorithm's r and s. */
export function ecdsaComponentBytes(algorithm: KeyAlgorithm): number {
  const info = algorithmInfo(algorithm);
  if (info.family !== 'ECDSA') throw new HsmError('InvalidArgument', `${algorithm} is not an ECDSA algorithm`);
  return info.signatureBytes / 2;
}

export type SignatureFormat = 'raw' | 'der';

/** Converts a library signature (raw) to the requested format; only ECDSA changes. */
export function encodeSignature(algorithm: KeyAlgorithm, raw: Uint8Array, format: SignatureFormat): Uint8Array {
  if (format === 'raw' || algorithmInfo(algorithm).family !== 'ECDSA') return raw;
  return ecdsaRawToDer(raw, ecdsaComponentBytes(algorithm));
}

/** Converts a signature in `format` to the library's raw form; only ECDSA changes. */
export function decodeSignature(algorithm: KeyAlgorithm, signature: Uint8Array, format: SignatureFormat): Uint8Array {
  if (format === 'raw' || algorithmInfo(algorithm).family !== 'ECDSA') return signature;
  return ecdsaDerToRaw(signature, ecdsaComponentBytes(algorithm));
}

export type PublicKeyFormat = 'der' | 'pem' | 'jwk';

export function publicKeyObject(spki: Uint8Array): KeyObject {
  try {
    return createPublicKey({ key: Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength), format: 'der', type: 'spki' });
  } catch (cause) {
    throw new HsmError('InvalidArgument', 'public key is not a valid SubjectPublicKeyInfo', { cause });
  }
}

/** SPKI DER bytes, a PEM string, or a JWK object (RFC 7517/8037) with `alg` set where it is unambiguous. */
export function exportPublicKey(info: { algorithm: KeyAlgorithm; spki: Uint8Array }, format: 'der'): Uint8Array;
export function exportPublicKey(info: { algorithm: KeyAlgorithm; spki: Uint8Array }, format: 'pem'): string;
export function exportPublicKey(info: { algorithm: KeyAlgorithm; spki: Uint8Array }, format: 'jwk'): JsonWebKey;
export function exportPublicKey(info: { algorithm: KeyAlgorithm; spki: Uint8Array }, format: PublicKeyFormat): Uint8Array | string | JsonWebKey;
export function exportPublicKey(info: { algorithm: KeyAlgorithm; spki: Uint8Array }, format: PublicKeyFormat): Uint8Array | string | JsonWebKey {
  if (format === 'der') return info.spki;
  const key = publicKeyObject(info.spki);
  if (format === 'pem') return key.export({ format: 'pem', type: 'spki' }).toString();
  if (format === 'jwk') {
    const jwk = key.export({ format: 'jwk' });
    return { ...jwk, alg: jwsAlgorithm(info.algorithm), use: 'sig' };
  }
  throw new HsmError('InvalidArgument', `unknown public key format "${String(format)}" (use der, pem or jwk)`);
}

/** The JOSE `alg` name for an algorithm (RFC 7518, RFC 8037). */
export function jwsAlgorithm(algorithm: KeyAlgorithm): string {
  switch (algorithm) {
    case 'Ed25519':
      return 'EdDSA';
    case 'ECDSA_P256':
      return 'ES256';
    case 'ECDSA_P384':
      return 'ES384';
    case 'ECDSA_P521':
      return 'ES512';
    case 'RSA_2048':
    case 'RSA_3072':
    case 'RSA_4096':
      return 'RS256';
    default:
      return 'PS256';
  }
}

function derInteger(component: Uint8Array): Uint8Array {
  let start = 0;
  while (start < component.length - 1 && component[start] === 0) start++;
  let bytes = component.subarray(start);
  if (bytes[0]! & 0x80) bytes = concat([Uint8Array.of(0), bytes]);
  return concat([Uint8Array.of(0x02), derLength(bytes.length), bytes]);
}

function derLength(len: number): Uint8Array {
  if (len < 0x80) return Uint8Array.of(len);
  if (len < 0x100) return Uint8Array.of(0x81, len);
  return Uint8Array.of(0x82, len >> 8, len & 0xff);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
