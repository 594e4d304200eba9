import { defineConfig } from 'tsup';

export default defineConfig({
  // ./lite: the id convention, the states, the policy schema and a read-only look into a SQLite registry, without Kysely
  entry: { index: 'src/index.ts', lite: 'src/lite.ts' },
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
