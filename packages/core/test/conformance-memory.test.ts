import { MemoryBackend, MemoryKeyStore, runConformanceSuite } from '../src/testing/index.js';

// The suite checked against core's own reference backend, so a change to the suite that no
// backend can pass shows here first.
const store = new MemoryKeyStore('conformance');
runConformanceSuite({
  name: 'memory (core reference backend)',
  createBackend: () => new MemoryBackend({ store, maxMessageBytes: { Ed25519: 4096 } }),
  expectedAlgorithms: ['Ed25519', 'ECDSA_P256', 'ECDSA_P384', 'RSA_2048', 'RSA_PSS_2048'],
});
