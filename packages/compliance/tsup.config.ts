import { defineConfig } from 'tsup';

export default defineConfig({
  // ./audit is the audit log alone (what a one-shot command loads), without the rules and reports
  entry: { index: 'src/index.ts', audit: 'src/audit/index.ts' },
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: ['better-sqlite3', 'pg'],
  // kysely ships about 260 ESM files: loading them took 180 ms of a one-shot command's start; bundled, 40 ms
  noExternal: ['kysely'],
  tsconfig: 'tsconfig.build.json',
});
