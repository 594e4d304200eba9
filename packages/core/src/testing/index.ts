export { runConformanceSuite, expectHsmError, independentVerify, type ConformanceOptions } from './conformance.js';
export { runWycheproofFile, runWycheproofDirectory, type WycheproofOutcome } from './wycheproof.js';
export { MemoryBackend, MemoryKeyStore, memoryBackendFactory, type MemoryBackendOptions } from './memory-backend.js';
