import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runWycheproofDirectory } from '../src/testing/wycheproof.js';

// The vectors live in the steering repository's shared folder beside this checkout.
const VECTORS = process.env.WYCHEPROOF_DIR ?? resolve(__dirname, '../../../../shared/vectors/wycheproof');

describe('local verification against Wycheproof', () => {
  it('finds the vectors', () => {
    expect(existsSync(VECTORS), `Wycheproof vectors not found at ${VECTORS}; set WYCHEPROOF_DIR to the folder holding *_test.json`).toBe(true);
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
