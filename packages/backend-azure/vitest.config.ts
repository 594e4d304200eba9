import { mergeConfig } from 'vitest/config';
import { sharedTestConfig } from '../../vitest.shared.js';

export default mergeConfig(sharedTestConfig, {
  test: {
    // Makes the test CA and exports NODE_EXTRA_CA_CERTS before any test process starts: Node
    // reads that variable only at start-up, and the forked workers inherit it.
    globalSetup: ['./test/global-setup.ts'],
  },
});
