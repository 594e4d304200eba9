/**
 * Runs against: gcp-kms-emulator (Go, github.com/blackwell-systems/gcp-kms-emulator), a third
 * party's implementation of the Cloud KMS gRPC API. It has no Ed25519 and no RSA-PSS, so those
 * run against the project's gRPC fake (fake-conformance.test.ts).
 */
import { runConformanceSuite } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll } from 'vitest';
import { isolateFromGoogle, startEmulator, type RunningEmulator } from './helpers/emulator.js';
import { loopbackBackend, uniqueRing } from './helpers/backend.js';

isolateFromGoogle();
let emulator: RunningEmulator;
const keyRing = uniqueRing();

beforeAll(async () => {
  emulator = await startEmulator();
});
afterAll(async () => {
  await emulator?.stop();
});

runConformanceSuite({
  name: 'gcp-kms on gcp-kms-emulator (P-256, P-384, RSA PKCS#1)',
  createBackend: () => loopbackBackend(emulator.port, { keyRing, algorithms: ['ECDSA_P256', 'ECDSA_P384', 'RSA_2048', 'RSA_3072', 'RSA_4096'] }),
  expectedAlgorithms: ['ECDSA_P256', 'ECDSA_P384', 'RSA_2048', 'RSA_3072', 'RSA_4096'],
});
