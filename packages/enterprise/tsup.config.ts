import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', '!src/**/*.test.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: ['@cedar-policy/cedar-wasm', '@olocus/hsm-backend-pkcs11', 'pg', 'better-sqlite3'],
  tsconfig: 'tsconfig.build.json',
});
