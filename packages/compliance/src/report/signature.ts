import { createHash } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { HsmError, isKeyAlgorithm, publicKeyObject, verifyLocally, type KeyAlgorithm } from '@olocus/hsm-core';

/**
 * Signs reports: structurally the same as the audit log's CheckpointSigner, so the key that
 * signs audit checkpoints can sign reports too.
 */
export interface ReportSigner {
  keyId: string;
  algorithm: KeyAlgorithm;
  /** Library-format signature over `data`. */
  sign(data: Uint8Array): Promise<Uint8Array>;
  /** SPKI DER. */
  publicKey(): Promise<Uint8Array>;
  backend?: string;
}

export const REPORT_SIGNATURE_FORMAT = 'olocus-hsm-report-signature/v1';

/** A detached signature over a rendered report's exact bytes (written beside it as JSON). */
export interface ReportSignature {
  format: typeof REPORT_SIGNATURE_FORMAT;
  algorithm: KeyAlgorithm;
  keyId: string;
  /** Hex SHA-256 of the report bytes. */
  sha256: string;
  /** Length of the report in bytes. */
  size: number;
  /** Hex SHA-256 of the signing key's SPKI (which public key to check with). */
  publicKeySha256: string;
  signedAt: string;
  /** Base64 signature, in the library's format, over `reportSignatureStatement(...)`. */
  signature: string;
}

export interface ReportSignatureVerification {
  valid: boolean;
  problem?: 'malformed' | 'digest-mismatch' | 'key-mismatch' | 'bad-signature';
  message: string;
}

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function bytesOf(report: Uint8Array | string): Uint8Array {
  return typeof report === 'string' ? new TextEncoder().encode(report) : report;
}

/**
 * The bytes the key signs: a format line, then the signed fields as JSON in a fixed order. The
 * digest binds the report; algorithm, key, size and time are signed too, so none can be
 * swapped without breaking the signature.
 */
export function reportSignatureStatement(doc: Omit<ReportSignature, 'signature'>): Uint8Array {
  const fields = { format: doc.format, algorithm: doc.algorithm, keyId: doc.keyId, sha256: doc.sha256, size: doc.size, publicKeySha256: doc.publicKeySha256, signedAt: doc.signedAt };
  return new TextEncoder().encode(`${REPORT_SIGNATURE_FORMAT}\n${JSON.stringify(fields)}\n`);
}

/** Signs a rendered report (the exact bytes written out) and returns the detached signature document. */
export async function signReport(report: Uint8Array | string, signer: ReportSigner, options: { clock?: () => Date } = {}): Promise<ReportSignature> {
  if (!signer || typeof signer.sign !== 'function' || typeof signer.publicKey !== 'function' || typeof signer.keyId !== 'string') {
    throw new HsmError('InvalidArgument', 'signer must be a ReportSigner { keyId, algorithm, sign(data), publicKey() }', { details: { field: 'signer' } });
  }
  if (!isKeyAlgorithm(signer.algorithm)) throw new HsmError('UnsupportedAlgorithm', `signer.algorithm ${JSON.stringify(signer.algorithm)} is not a key algorithm of the library`, { details: { field: 'signer.algorithm' } });
  const bytes = bytesOf(report);
  const spki = await signer.publicKey();
  const unsigned: Omit<ReportSignature, 'signature'> = {
    format: REPORT_SIGNATURE_FORMAT,
    algorithm: signer.algorithm,
    keyId: signer.keyId,
    sha256: sha256Hex(bytes),
    size: bytes.byteLength,
    publicKeySha256: sha256Hex(spki),
    signedAt: (options.clock ?? (() => new Date()))().toISOString(),
  };
  const signature = await signer.sign(reportSignatureStatement(unsigned));
  // Check our own output: a signer whose key does not match its public key is caught here, not by the auditor.
  if (!verifyLocally(signer.algorithm, spki, reportSignatureStatement(unsigned), signature)) {
    throw new HsmError('SigningFailed', `the report signature by ${signer.keyId} does not verify with its own public key`, { details: { keyId: signer.keyId } });
  }
  return { ...unsigned, signature: Buffer.from(signature).toString('base64') };
}

function malformed(message: string): ReportSignatureVerification {
  return { valid: false, problem: 'malformed', message };
}

/**
 * Checks a detached report signature against the report bytes and the signer's SPKI (obtained
 * independently: never trust a key shipped with the signature). Never throws for a bad
 * signature or document: `valid` is false and `problem` says why.
 */
export function verifyReportSignature(report: Uint8Array | string, signature: unknown, spki: Uint8Array): ReportSignatureVerification {
  const doc = signature as Partial<ReportSignature> | null;
  if (!doc || typeof doc !== 'object') return malformed('the signature document is not an object');
  if (doc.format !== REPORT_SIGNATURE_FORMAT) return malformed(`unknown signature format ${JSON.stringify(doc.format)}`);
  if (!isKeyAlgorithm(doc.algorithm)) return malformed(`unknown algorithm ${JSON.stringify(doc.algorithm)}`);
  for (const f of ['keyId', 'sha256', 'publicKeySha256', 'signedAt', 'signature'] as const) {
    if (typeof doc[f] !== 'string') return malformed(`field ${f} is missing or not a string`);
  }
  if (typeof doc.size !== 'number') return malformed('field size is missing or not a number');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(doc.signature!)) return malformed('field signature is not base64');
  const bytes = bytesOf(report);
  if (sha256Hex(bytes) !== doc.sha256 || bytes.byteLength !== doc.size) return { valid: false, problem: 'digest-mismatch', message: 'the report bytes do not match the signed digest: the report was changed' };
  if (sha256Hex(spki) !== doc.publicKeySha256) return { valid: false, problem: 'key-mismatch', message: `the public key given is not the one that signed (key ${doc.keyId})` };
  let key: KeyObject;
  let ok: boolean;
  try {
    key = publicKeyObject(spki);
    ok = verifyLocally(doc.algorithm, key, reportSignatureStatement(doc as ReportSignature), Buffer.from(doc.signature!, 'base64'));
  } catch (error) {
    // Not an SPKI, or not a key of the document's algorithm.
    return { valid: false, problem: 'key-mismatch', message: (error as Error).message };
  }
  return ok ? { valid: true, message: `signed by ${doc.keyId} (${doc.algorithm}) at ${doc.signedAt}` } : { valid: false, problem: 'bad-signature', message: 'the signature does not verify' };
}
