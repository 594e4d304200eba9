import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyAlgorithm } from '../algorithms.js';
import { algorithmInfo } from '../algorithms.js';
import { ecdsaDerToRaw } from '../encoding.js';
import { verifyLocally } from '../verify.js';

/**
 * Runs Wycheproof signature-verification vectors against `verifyLocally`.
 *
 * "acceptable" vectors (legal but discouraged encodings, e.g. a PKCS#1 v1.5 DigestInfo without
 * the NULL parameter) are run and their outcome recorded, but either outcome passes: the library
 * is strict (DER must be minimal, ECDSA P1363 signatures exactly 2×n bytes), so it rejects most.
 */
export interface WycheproofOutcome {
  file: string;
  algorithm: KeyAlgorithm;
  total: number;
  valid: number;
  invalid: number;
  acceptable: number;
  acceptableAccepted: number;
  /** Vectors whose outcome contradicts their expected result. */
  failures: Array<{ tcId: number; expected: string; got: 'accepted' | 'rejected'; comment: string }>;
}

interface Group {
  type: string;
  publicKeyDer: string;
  publicKey?: { curve?: string };
  sha?: string;
  keySize?: number;
  sLen?: number;
  mgfSha?: string;
  tests: Array<{ tcId: number; msg: string; sig: string; result: 'valid' | 'invalid' | 'acceptable'; comment: string }>;
}

const CURVES: Record<string, KeyAlgorithm> = { secp256r1: 'ECDSA_P256', secp384r1: 'ECDSA_P384', secp521r1: 'ECDSA_P521' };

function groupAlgorithm(group: Group): KeyAlgorithm | undefined {
  switch (group.type) {
    case 'EddsaVerify':
      return 'Ed25519';
    case 'EcdsaVerify':
    case 'EcdsaP1363Verify': {
      const algorithm = CURVES[group.publicKey?.curve ?? ''];
      return algorithm && algorithmInfo(algorithm).hash === group.sha ? algorithm : undefined;
    }
    case 'RsassaPkcs1Verify':
      return group.sha === 'SHA-256' ? ({ 2048: 'RSA_2048', 3072: 'RSA_3072', 4096: 'RSA_4096' } as const)[group.keySize as 2048] : undefined;
    case 'RsassaPssVerify':
      return group.sha === 'SHA-256' && group.mgfSha === 'SHA-256' && group.sLen === 32
        ? ({ 2048: 'RSA_PSS_2048', 3072: 'RSA_PSS_3072', 4096: 'RSA_PSS_4096' } as const)[group.keySize as 2048]
        : undefined;
    default:
      return undefined;
  }
}

export async function runWycheproofFile(path: string): Promise<WycheproofOutcome[]> {
  const doc = JSON.parse(await readFile(path, 'utf8')) as { testGroups: Group[] };
  const outcomes = new Map<KeyAlgorithm, WycheproofOutcome>();
  for (const group of doc.testGroups) {
    const algorithm = groupAlgorithm(group);
    if (!algorithm) throw new Error(`${path}: test group of type ${group.type} does not map to a library algorithm`);
    const outcome =
      outcomes.get(algorithm) ??
      outcomes
        .set(algorithm, { file: path, algorithm, total: 0, valid: 0, invalid: 0, acceptable: 0, acceptableAccepted: 0, failures: [] })
        .get(algorithm)!;
    const spki = Buffer.from(group.publicKeyDer, 'hex');
    const der = group.type === 'EcdsaVerify';
    for (const test of group.tests) {
      outcome.total++;
      outcome[test.result]++;
      const msg = Buffer.from(test.msg, 'hex');
      let sig: Uint8Array | undefined = Buffer.from(test.sig, 'hex');
      if (der) {
        try {
          sig = ecdsaDerToRaw(sig, algorithmInfo(algorithm).signatureBytes / 2);
        } catch {
          sig = undefined;
        }
      }
      const accepted = sig !== undefined && verifyLocally(algorithm, spki, msg, sig);
      if (test.result === 'acceptable') {
        if (accepted) outcome.acceptableAccepted++;
        continue;
      }
      if (accepted !== (test.result === 'valid')) {
        outcome.failures.push({ tcId: test.tcId, expected: test.result, got: accepted ? 'accepted' : 'rejected', comment: test.comment });
      }
    }
  }
  return [...outcomes.values()];
}

/** Every `*_test.json` in a directory. */
export async function runWycheproofDirectory(dir: string): Promise<WycheproofOutcome[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('_test.json')).sort();
  const all: WycheproofOutcome[] = [];
  for (const file of files) all.push(...(await runWycheproofFile(join(dir, file))));
  return all;
}
