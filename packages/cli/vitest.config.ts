import { defineConfig } from 'vitest/config';

// forks: each test file in its own process, so native modules and per-file environment
// (SOFTHSM2_CONF is read once per process by C_Initialize) never leak between files.
export default defineConfig({ test: { include: ['src/**/*.test.ts', 'test/**/*.test.ts'], pool: 'forks', testTimeout: 120_000, hookTimeout: 120_000 } });
