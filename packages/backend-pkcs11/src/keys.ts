import { createHash, createPublicKey, hash as digestOf, type KeyObject } from 'node:crypto';
import { HsmError, algorithmInfo, assertValidKeyId, type KeyAlgorithm } from '@olocus/hsm-core';
import {
  CKK_EC,
  CKK_EC_EDWARDS,
  CKK_RSA,
  CKM_ECDSA,
  CKM_ECDSA_SHA256,
  CKM_ECDSA_SHA384,
  CKM_ECDSA_SHA512,
  CKM_EDDSA,
  CKM_RSA_PKCS,
  CKM_RSA_PKCS_PSS,
  CKM_SHA256,
  CKM_SHA256_RSA_PKCS,
  CKM_SHA256_RSA_PKCS_PSS,
  CKG_MGF1_SHA256,
  CK_PARAMS_RSA_PSS,
} from './constants.js';

/** DER OIDs used as CKA_EC_PARAMS. */
export const EC_PARAMS: Readonly<Record<'P-256' | 'P-384' | 'P-521', string>> = {
  'P-256': '06082a8648ce3d030107',
  'P-384': '06052b81040022',
  'P-521': '06052b81040023',
};
export const ED25519_PARAMS_OID = '06032b6570';
/** PrintableString "edwards25519" (the PKCS#11 3.0 alternative form). */
export const ED25519_PARAMS_PRINTABLE = '130c656477617264733235353139';

const CURVE_BY_PARAMS = new Map<string, KeyAlgorithm>([
  [EC_PARAMS['P-256'], 'ECDSA_P256'],
  [EC_PARAMS['P-384'], 'ECDSA_P384'],
  [EC_PARAMS['P-521'], 'ECDSA_P521'],
]);

/**
 * The CKA_ID scheme: the UTF-8 bytes of the key id (at most 128 bytes, since ids are ASCII).
 * Readable in pkcs11-tool (`--id` hex), stable, no collisions between distinct ids.
 */
export function ckaIdFor(id: string): Buffer {
  return Buffer.from(id, 'utf8');
}

/** The library key id for a token object: the CKA_ID as text when it is a valid id, else the label, else a URI. */
export function keyIdFromAttributes(ckaId: Buffer, label: string, uri: string): string {
  const asText = ckaId.toString('utf8');
  if (ckaId.length > 0 && Buffer.from(asText, 'utf8').equals(ckaId) && isValidKeyId(asText)) return asText;
  if (isValidKeyId(label)) return label;
  return uri;
}

export function isValidKeyId(value: string): boolean {
  try {
    assertValidKeyId(value);
    return true;
  } catch {
    return false;
  }
}

/** Reads a CK_ULONG attribute value (little-endian, as pkcs11js returns it on x86/arm). */
export function readUlong(value: Buffer): number {
  if (value.length >= 8) return Number(value.readBigUInt64LE(0));
  if (value.length >= 4) return value.readUInt32LE(0);
  return value.length === 0 ? 0 : value[0]!;
}

export function ulongArray(values: number[]): Buffer {
  const out = Buffer.alloc(values.length * 8);
  for (const [i, v] of values.entries()) out.writeBigUInt64LE(BigInt(v), i * 8);
  return out;
}

export function readUlongArray(value: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i + 8 <= value.length; i += 8) out.push(Number(value.readBigUInt64LE(i)));
  return out;
}

/** CK_BBOOL. */
export function readBool(value: Buffer | undefined): boolean {
  return !!value && value.length > 0 && value[0] !== 0;
}

/**
 * The algorithm of a key from its attributes. RSA padding comes from CKA_ALLOWED_MECHANISMS:
 * a key whose allowed list names PSS mechanisms and no PKCS#1 v1.5 ones is a PSS key; every other
 * RSA key (including keys made by other tools, which usually have no list) is PKCS#1 v1.5.
 * Returns undefined for keys outside the contract (Ed448, RSA-1024, secp256k1...).
 */
export function algorithmFromAttributes(keyType: number, ecParams: Buffer | undefined, modulusBits: number | undefined, allowed: number[]): KeyAlgorithm | undefined {
  if (keyType === CKK_EC) return ecParams ? CURVE_BY_PARAMS.get(ecParams.toString('hex')) : undefined;
  if (keyType === CKK_EC_EDWARDS) {
    const hex = ecParams?.toString('hex');
    return hex === ED25519_PARAMS_OID || hex === ED25519_PARAMS_PRINTABLE ? 'Ed25519' : undefined;
  }
  if (keyType === CKK_RSA) {
    const pss = allowed.some((m) => m === CKM_RSA_PKCS_PSS || m === CKM_SHA256_RSA_PKCS_PSS);
    const pkcs1 = allowed.some((m) => m === CKM_RSA_PKCS || m === CKM_SHA256_RSA_PKCS);
    const padding = pss && !pkcs1 ? 'RSA_PSS_' : 'RSA_';
    if (modulusBits === 2048 || modulusBits === 3072 || modulusBits === 4096) return `${padding}${modulusBits}` as KeyAlgorithm;
  }
  return undefined;
}

/** Strips the DER OCTET STRING that SoftHSM (and the spec) wrap CKA_EC_POINT in, when present. */
export function unwrapEcPoint(point: Buffer, rawLength: number): Buffer {
  if (point.length === rawLength && (rawLength === 32 || point[0] === 0x04)) return point;
  if (point[0] === 0x04) {
    let pos = 1;
    let len = point[pos++]!;
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = (len << 8) | point[pos++]!;
    }
    const inner = point.subarray(pos, pos + len);
    if (inner.length === rawLength && pos + len === point.length) return inner;
  }
  throw new HsmError('Internal', `CKA_EC_POINT has an unexpected form (${point.length} bytes)`);
}

/** Builds the public KeyObject from the public-key attributes. */
export function publicKeyFromAttributes(algorithm: KeyAlgorithm, attrs: { ecPoint?: Buffer; modulus?: Buffer; exponent?: Buffer }): KeyObject {
  const info = algorithmInfo(algorithm);
  if (info.family === 'RSA') {
    if (!attrs.modulus || !attrs.exponent) throw new HsmError('Internal', 'RSA public key without CKA_MODULUS / CKA_PUBLIC_EXPONENT');
    return createPublicKey({ key: { kty: 'RSA', n: stripZeros(attrs.modulus).toString('base64url'), e: stripZeros(attrs.exponent).toString('base64url') }, format: 'jwk' });
  }
  if (!attrs.ecPoint) throw new HsmError('Internal', 'EC public key without CKA_EC_POINT');
  if (info.family === 'EdDSA') {
    const x = unwrapEcPoint(attrs.ecPoint, 32);
    return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: x.toString('base64url') }, format: 'jwk' });
  }
  const size = info.signatureBytes / 2;
  const point = unwrapEcPoint(attrs.ecPoint, 1 + 2 * size);
  return createPublicKey({
    key: { kty: 'EC', crv: info.curve!, x: point.subarray(1, 1 + size).toString('base64url'), y: point.subarray(1 + size).toString('base64url') },
    format: 'jwk',
  });
}

function stripZeros(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

export function spkiOf(key: KeyObject): Uint8Array {
  return new Uint8Array(key.export({ type: 'spki', format: 'der' }));
}

/** How one algorithm is signed on this token: mechanism, and whether the client hashes. */
export interface SignPlan {
  /** Builds the CK_MECHANISM (a new object each call: pkcs11js must not see one object twice). */
  mechanism: () => { mechanism: number; parameter?: { type: number; hashAlg: number; mgf: number; saltLen: number } };
  /** What goes into C_Sign: the message, a digest, or DigestInfo || digest. */
  input: 'message' | 'digest' | 'digestInfo';
  hash?: 'sha256' | 'sha384' | 'sha512';
  signatureBytes: number;
}

const pssParams = () => ({ type: CK_PARAMS_RSA_PSS, hashAlg: CKM_SHA256, mgf: CKG_MGF1_SHA256, saltLen: 32 });
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

/**
 * Picks the sign mechanism for an algorithm from the token's mechanism list. Client-side hashing
 * with the raw mechanism (CKM_ECDSA, CKM_RSA_PKCS, CKM_RSA_PKCS_PSS) is preferred: it sends a
 * fixed-size input to the module whatever the message size, and measured the same speed as the
 * hashed mechanisms on SoftHSM (see README). The hashed mechanism is the fallback.
 */
export function signPlanFor(algorithm: KeyAlgorithm, canSign: (mechanism: number) => boolean): SignPlan | undefined {
  const info = algorithmInfo(algorithm);
  const signatureBytes = info.signatureBytes;
  if (info.family === 'EdDSA') return canSign(CKM_EDDSA) ? { mechanism: () => ({ mechanism: CKM_EDDSA }), input: 'message', signatureBytes } : undefined;
  if (info.family === 'ECDSA') {
    const hash = info.hash === 'SHA-256' ? 'sha256' : info.hash === 'SHA-384' ? 'sha384' : 'sha512';
    if (canSign(CKM_ECDSA)) return { mechanism: () => ({ mechanism: CKM_ECDSA }), input: 'digest', hash, signatureBytes };
    const hashed = hash === 'sha256' ? CKM_ECDSA_SHA256 : hash === 'sha384' ? CKM_ECDSA_SHA384 : CKM_ECDSA_SHA512;
    return canSign(hashed) ? { mechanism: () => ({ mechanism: hashed }), input: 'message', signatureBytes } : undefined;
  }
  if (info.padding === 'PSS') {
    if (canSign(CKM_RSA_PKCS_PSS)) return { mechanism: () => ({ mechanism: CKM_RSA_PKCS_PSS, parameter: pssParams() }), input: 'digest', hash: 'sha256', signatureBytes };
    return canSign(CKM_SHA256_RSA_PKCS_PSS) ? { mechanism: () => ({ mechanism: CKM_SHA256_RSA_PKCS_PSS, parameter: pssParams() }), input: 'message', signatureBytes } : undefined;
  }
  if (canSign(CKM_RSA_PKCS)) return { mechanism: () => ({ mechanism: CKM_RSA_PKCS }), input: 'digestInfo', hash: 'sha256', signatureBytes };
  return canSign(CKM_SHA256_RSA_PKCS) ? { mechanism: () => ({ mechanism: CKM_SHA256_RSA_PKCS }), input: 'message', signatureBytes } : undefined;
}

export function signInput(plan: SignPlan, data: Uint8Array): Buffer {
  const message = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // pkcs11js passes a NULL pointer for an empty Buffer, which modules reject (CKR_ARGUMENTS_BAD);
  // an empty view of a non-empty buffer passes a valid pointer with length 0.
  if (plan.input === 'message') return message.length > 0 ? message : Buffer.alloc(1).subarray(0, 0);
  // the one-shot form: no Hash object per signature (1.4-1.8 µs against 2.0-2.2 for a 64-byte message)
  const digest = digestOf(plan.hash!, message, 'buffer');
  return plan.input === 'digest' ? digest : Buffer.concat([SHA256_DIGEST_INFO, digest]);
}

/** Largest message signStream buffers for single-part mechanisms (Ed25519's CKM_EDDSA). */
export const STREAM_BUFFER_LIMIT = 64 * 1024 * 1024;

/**
 * signInput for a message given in chunks: hashed incrementally when the plan signs a digest,
 * buffered up to `limit` bytes when the mechanism needs the whole message.
 */
export async function streamSignInput(plan: SignPlan, chunks: AsyncIterable<Uint8Array>, limit: number, signal?: AbortSignal): Promise<Buffer> {
  const hash = plan.input === 'message' ? undefined : createHash(plan.hash!);
  const parts: Buffer[] = [];
  let length = 0;
  for await (const chunk of chunks) {
    if (signal?.aborted) throw new HsmError('Timeout', 'the operation was aborted by its caller while the message was read', { cause: signal.reason, retryable: true });
    if (!(chunk instanceof Uint8Array)) throw new HsmError('InvalidArgument', 'every chunk must be a Uint8Array', { details: { field: 'chunks' } });
    const view = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    length += view.length;
    if (hash) {
      hash.update(view);
      continue;
    }
    if (length > limit) {
      throw new HsmError('InvalidArgument', `the message is over ${limit} bytes; this algorithm signs the whole message in one call, so signStream buffers at most ${limit} bytes`, {
        details: { field: 'chunks', limit },
      });
    }
    parts.push(Buffer.from(view)); // the caller may reuse its chunk buffers
  }
  if (!hash) return signInput(plan, Buffer.concat(parts, length));
  const digest = hash.digest();
  return plan.input === 'digest' ? digest : Buffer.concat([SHA256_DIGEST_INFO, digest]);
}
