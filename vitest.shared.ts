import { defineConfig } from 'vitest/config';

/**
 * Settings every package's vitest config starts from.
 * - forks: each test file in its own process, so native modules and per-file environment
 *   (SOFTHSM2_CONF is read once per process by C_Initialize) never leak between files.
 * - a JSON report per package, which scripts/test-summary.mjs adds up into the one closing
 *   line CI reads ("N passed, N failed").
 */
export const sharedTestConfig = defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default', 'json'],
    outputFile: { json: '.test-results/vitest.json' },
  },
});
