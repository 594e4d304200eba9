import { jwsAlgorithm, type KeyAlgorithm } from '@olocus/hsm-core';
import { CliError } from './errors.js';
import { base64UrlChunks, echo, toBase64Url } from './io.js';

/**
 * Compact JWS (RFC 7515 §7.1): `BASE64URL(header) . BASE64URL(payload) . BASE64URL(signature)`,
 * the signing input being the first two parts as ASCII. A detached JWS (RFC 7515 Appendix F)
 * leaves the payload part empty, `header..signature`: the payload travels as the file itself.
 * The header is `{"alg", "kid"}`: `alg` from the key's algorithm (ES256, ES384, ES512, EdDSA,
 * RS256, PS256), `kid` the backend id of the key version that signed.
 */

export interface JwsHeader {
  alg: string;
  kid?: string;
  [name: string]: unknown;
}

export function jwsHeader(algorithm: KeyAlgorithm, kid: string): string {
  return toBase64Url(JSON.stringify({ alg: jwsAlgorithm(algorithm), kid }));
}

/** The signing input of a JWS whose payload is streamed: `header.` then the payload base64url-encoded as it is read. */
export async function* jwsSigningInput(encodedHeader: string, payload: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield new Uint8Array(Buffer.from(`${encodedHeader}.`, 'ascii'));
  yield* base64UrlChunks(payload);
}

export interface ParsedJws {
  header: JwsHeader;
  encodedHeader: string;
  /** The payload part as it is in the token (base64url), empty when detached. */
  encodedPayload: string;
  signature: Uint8Array;
}

const PART = /^[A-Za-z0-9_-]*$/;

/** Parses a compact JWS; `what` names where it came from (the flag and file) in errors. */
export function parseCompactJws(text: string, what: string): ParsedJws {
  const token = text.trim();
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => PART.test(p)) || parts[0] === '' || parts[2] === '') {
    throw new CliError('InvalidSignatureEncoding', `${what} is not a compact JWS (three base64url parts separated by "."; a detached one has an empty middle part): give the file sign --format jws wrote, or leave out --format jws for a bare signature`);
  }
  const [encodedHeader, encodedPayload, encodedSignature] = parts as [string, string, string];
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(encodedHeader, 'base64url').toString('utf8'));
  } catch {
    throw new CliError('InvalidSignatureEncoding', `${what}: the JWS header is not base64url-encoded JSON`);
  }
  if (typeof header !== 'object' || header === null || typeof (header as JwsHeader).alg !== 'string') {
    throw new CliError('InvalidSignatureEncoding', `${what}: the JWS header has no "alg"`);
  }
  const h = header as JwsHeader;
  if (h.kid !== undefined && typeof h.kid !== 'string') throw new CliError('InvalidSignatureEncoding', `${what}: the JWS header's "kid" is not a string`);
  // RFC 7515 §4.1.11: a "crit" parameter this verifier does not understand must make it fail.
  if (h.crit !== undefined) throw new CliError('InvalidSignatureEncoding', `${what}: the JWS header has "crit" ${echo(JSON.stringify(h.crit))}, which this verifier does not support`);
  return { header: h, encodedHeader, encodedPayload, signature: new Uint8Array(Buffer.from(encodedSignature, 'base64url')) };
}
