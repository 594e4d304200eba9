import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runWycheproofDirectory } from '../src/testing/wycheproof.js';

// Project Wycheproof's vectors (C2SP, Apache-2.0: see vectors/wycheproof/LICENSE and README.md),
// carried in the repository so the tests need nothing outside the clone.
const VECTORS = resolve(__dirname, 'vectors/wycheproof');

describe('local verification against Wycheproof', () => {
  it('finds the vectors', () => {
    expect(existsSync(VECTORS), `Wycheproof vectors not found at ${VECTORS}: they are part of the repository (git checkout packages/core/test/vectors)`).toBe(true);
  });

  it('accepts every valid vector and rejects every invalid one', async () => {
    const outcomes = await runWycheproofDirectory(VECTORS);
    const algorithms = new Set(outcomes.map((o) => o.algorithm));
    // every family the library signs with is covered
    for (const a of ['Ed25519', 'ECDSA_P256', 'ECDSA_P384', 'RSA_2048', 'RSA_PSS_2048']) expect(algorithms).toContain(a);
    const total = outcomes.reduce((n, o) => n + o.total, 0);
    expect(total).toBeGreaterThan(1500);
    for (const outcome of outcomes) {
      expect(outcome.failures, `${outcome.file} (${outcome.algorithm})`).toEqual([]);
      expect(outcome.valid).toBeGreaterThan(0);
      expect(outcome.invalid).toBeGreaterThan(0);
    }
  });
});
