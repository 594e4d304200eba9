import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', '!src/**/*.test.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: ['@olocus/hsm-core', '@olocus/hsm-rotation', '@olocus/hsm-compliance'],
  tsconfig: 'tsconfig.build.json',
});
