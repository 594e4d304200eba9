import { createHash, createPublicKey, verify as nodeVerify } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import type { KeyAlgorithm } from '@olocus/hsm-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CheckpointSigner } from '../src/audit/options.js';
import { renderJson, reportSignatureStatement, signReport, verifyReportSignature, type ReportSignature, type ReportSigner } from '../src/report/index.js';
import { GOLDEN_FROM, GOLDEN_TO, goldenManager } from './fixtures-compliance/golden-fixture.js';

// ReportSigner and the audit log's CheckpointSigner are the same shape, in both directions.
const asReport = (s: CheckpointSigner): ReportSigner => s;
const asCheckpoint = (s: ReportSigner): CheckpointSigner => s;
void asReport;
void asCheckpoint;

function signerFor(backend: SoftwareBackend, keyId: string, algorithm: KeyAlgorithm): ReportSigner {
  return {
    keyId,
    algorithm,
    backend: backend.type,
    sign: (data) => backend.sign(keyId, data),
    publicKey: async () => (await backend.getPublicKey(keyId)).spki,
  };
}

describe('signed reports (real software-backend keys)', () => {
  let dir: string;
  let backend: SoftwareBackend;
  let bytes: Uint8Array;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'olocus-compliance-sig-'));
    backend = new SoftwareBackend({ directory: dir, scrypt: { N: 2 ** 15, r: 8, p: 1 }, cacheRevalidateMs: 0 }, { passphrase: 'compliance-signature-test' });
    await backend.initialize();
    for (const [id, algorithm] of [
      ['report-p256', 'ECDSA_P256'],
      ['report-ed', 'Ed25519'],
      ['report-pss', 'RSA_PSS_3072'],
      ['other', 'ECDSA_P256'],
    ] as const) {
      await backend.generateKeyPair({ id, algorithm });
    }
    const { manager, framework } = goldenManager();
    bytes = new TextEncoder().encode(renderJson(await manager.generateComplianceReport({ framework, from: GOLDEN_FROM, to: GOLDEN_TO })));
  });
  afterAll(async () => {
    await backend?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    ['report-p256', 'ECDSA_P256'],
    ['report-ed', 'Ed25519'],
    ['report-pss', 'RSA_PSS_3072'],
  ] as const)('round trip with %s (%s); any one-byte change is detected', async (keyId, algorithm) => {
    const signer = signerFor(backend, keyId, algorithm);
    const sig = await signReport(bytes, signer, { clock: () => new Date('2026-03-08T06:00:01Z') });
    expect(sig).toMatchObject({ format: 'olocus-hsm-report-signature/v1', algorithm, keyId, size: bytes.byteLength, signedAt: '2026-03-08T06:00:01.000Z' });
    expect(sig.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    const spki = await signer.publicKey();
    // The document survives a JSON round trip (it is written beside the report).
    const doc = JSON.parse(JSON.stringify(sig)) as ReportSignature;
    expect(verifyReportSignature(bytes, doc, spki)).toMatchObject({ valid: true });

    for (const at of [0, Math.floor(bytes.length / 2), bytes.length - 1]) {
      const changed = Uint8Array.from(bytes);
      changed[at] = changed[at]! ^ 0x01;
      expect(verifyReportSignature(changed, doc, spki)).toMatchObject({ valid: false, problem: 'digest-mismatch' });
    }
    expect(verifyReportSignature(bytes.subarray(0, bytes.length - 1), doc, spki)).toMatchObject({ valid: false, problem: 'digest-mismatch' });
  });

  it('the signature is checkable without this library (node:crypto over the documented statement)', async () => {
    const signer = signerFor(backend, 'report-ed', 'Ed25519');
    const sig = await signReport(bytes, signer);
    const { signature, ...unsigned } = sig;
    const statement = reportSignatureStatement(unsigned);
    expect(new TextDecoder().decode(statement).startsWith('olocus-hsm-report-signature/v1\n{"format":')).toBe(true);
    const key = createPublicKey({ key: Buffer.from(await signer.publicKey()), format: 'der', type: 'spki' });
    expect(nodeVerify(null, statement, key, Buffer.from(signature, 'base64'))).toBe(true);
  });

  it('a changed signed field, a wrong key, or a malformed document fails', async () => {
    const signer = signerFor(backend, 'report-p256', 'ECDSA_P256');
    const sig = await signReport(bytes, signer);
    const spki = await signer.publicKey();
    expect(verifyReportSignature(bytes, { ...sig, signedAt: '2020-01-01T00:00:00.000Z' }, spki)).toMatchObject({ valid: false, problem: 'bad-signature' });
    expect(verifyReportSignature(bytes, { ...sig, keyId: 'someone-else' }, spki)).toMatchObject({ valid: false, problem: 'bad-signature' });
    const flipped = Buffer.from(sig.signature, 'base64');
    flipped[5] = flipped[5]! ^ 0xff;
    expect(verifyReportSignature(bytes, { ...sig, signature: flipped.toString('base64') }, spki)).toMatchObject({ valid: false, problem: 'bad-signature' });
    const otherSpki = (await backend.getPublicKey('other')).spki;
    expect(verifyReportSignature(bytes, sig, otherSpki)).toMatchObject({ valid: false, problem: 'key-mismatch' });
    // Claiming the other key's fingerprint does not help: the signature still does not verify with it.
    expect(verifyReportSignature(bytes, { ...sig, publicKeySha256: createHash('sha256').update(otherSpki).digest('hex') }, otherSpki)).toMatchObject({ valid: false, problem: 'bad-signature' });
    // A key of another type (Ed25519 for an ECDSA signature) is a key mismatch, even with its own fingerprint.
    const edSpki = (await backend.getPublicKey('report-ed')).spki;
    expect(verifyReportSignature(bytes, { ...sig, publicKeySha256: createHash('sha256').update(edSpki).digest('hex') }, edSpki)).toMatchObject({ valid: false, problem: 'key-mismatch' });
    expect(verifyReportSignature(bytes, null, spki)).toMatchObject({ valid: false, problem: 'malformed' });
    expect(verifyReportSignature(bytes, { ...sig, algorithm: 'DSA_1024' }, spki)).toMatchObject({ valid: false, problem: 'malformed' });
  });

  it('a signer whose key does not match its public key is refused with an HsmError', async () => {
    const liar: ReportSigner = { ...signerFor(backend, 'report-p256', 'ECDSA_P256'), publicKey: async () => (await backend.getPublicKey('other')).spki };
    await expect(signReport(bytes, liar)).rejects.toMatchObject({ name: 'HsmError', code: 'SigningFailed' });
    await expect(signReport(bytes, { keyId: 'x' } as unknown as ReportSigner)).rejects.toMatchObject({ code: 'InvalidArgument' });
  });
});
