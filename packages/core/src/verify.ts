import { createVerify, verify as nodeVerify, constants, type KeyObject } from 'node:crypto';
import { algorithmInfo, nodeHashName, pssSaltLength, type KeyAlgorithm } from './algorithms.js';
import { HsmError } from './errors.js';
import { publicKeyObject } from './encoding.js';

const CURVE_OIDS: Record<string, string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1' };

/**
 * Verifies a library-format signature (ECDSA raw r||s) over `data` with node:crypto,
 * no backend involved. Returns false for any signature that does not verify, malformed
 * ones included: a verifier does not say why a signature failed.
 * Throws HsmError('InvalidArgument') only when the key does not fit the algorithm.
 */
export function verifyLocally(
  algorithm: KeyAlgorithm,
  publicKey: Uint8Array | KeyObject,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  const info = algorithmInfo(algorithm);
  const key = publicKey instanceof Uint8Array ? publicKeyObject(publicKey) : publicKey;
  assertKeyMatches(algorithm, key);
  if (signature.length !== info.signatureBytes) return false;
  try {
    if (info.family === 'EdDSA') return nodeVerify(null, data, key, signature);
    const hash = nodeHashName(info.hash!);
    if (info.family === 'ECDSA') {
      return nodeVerify(hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature);
    }
    const pss = info.padding === 'PSS';
    return nodeVerify(
      hash,
      data,
      pss
        ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pssSaltLength(info.hash!) }
        : { key, padding: constants.RSA_PKCS1_PADDING },
      signature,
    );
  } catch {
    return false;
  }
}

/**
 * `verifyLocally` for a message read in chunks: ECDSA and RSA hash as they read, so a large file
 * never sits in memory; Ed25519 (which signs the whole message) reads at most `maxBufferedBytes`.
 */
export async function verifyStreamLocally(
  algorithm: KeyAlgorithm,
  publicKey: Uint8Array | KeyObject,
  chunks: AsyncIterable<Uint8Array>,
  signature: Uint8Array,
  maxBufferedBytes: number,
): Promise<boolean> {
  const info = algorithmInfo(algorithm);
  const key = publicKey instanceof Uint8Array ? publicKeyObject(publicKey) : publicKey;
  assertKeyMatches(algorithm, key);
  if (info.family === 'EdDSA') return verifyLocally(algorithm, key, await readAll(chunks, maxBufferedBytes), signature);
  const verifier = createVerify(nodeHashName(info.hash!));
  for await (const chunk of chunks) verifier.update(chunk);
  if (signature.length !== info.signatureBytes) return false;
  try {
    if (info.family === 'ECDSA') return verifier.verify({ key, dsaEncoding: 'ieee-p1363' }, signature);
    return verifier.verify(
      info.padding === 'PSS' ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pssSaltLength(info.hash!) } : { key, padding: constants.RSA_PKCS1_PADDING },
      signature,
    );
  } catch {
    return false;
  }
}

/** Reads chunks into one buffer, refusing past `maxBytes` with InvalidArgument naming the limit. */
export async function readAll(chunks: AsyncIterable<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of chunks) {
    length += chunk.length;
    if (length > maxBytes) {
      throw new HsmError('InvalidArgument', `the message is larger than ${maxBytes} bytes, the most that can be held in memory for this algorithm or backend`, {
        details: { field: 'data', limit: maxBytes },
      });
    }
    parts.push(chunk);
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, length);
}

/** Throws InvalidArgument when `key` is not a public key of `algorithm`'s type, curve and size. */
export function assertKeyMatches(algorithm: KeyAlgorithm, key: KeyObject): void {
  const info = algorithmInfo(algorithm);
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  const matches =
    info.family === 'EdDSA'
      ? type === 'ed25519'
      : info.family === 'ECDSA'
        ? type === 'ec' && details.namedCurve === CURVE_OIDS[info.curve!]
        : (type === 'rsa' || type === 'rsa-pss') && details.modulusLength === info.modulusBits;
  if (!matches) {
    const described = [type ?? 'unknown', details.namedCurve, details.modulusLength].filter(Boolean).join(' ');
    throw new HsmError('InvalidArgument', `public key (${described}) does not match algorithm ${algorithm}`);
  }
}

