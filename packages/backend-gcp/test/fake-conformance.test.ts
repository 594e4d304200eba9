/**
 * Runs against: the project's gRPC fake (test/fake/kms-fake.ts), served from the .proto files
 * inside @google-cloud/kms. It covers the algorithms gcp-kms-emulator lacks: Ed25519 and RSA-PSS
 * (RSA PKCS#1 too, as a cross-check of the fake against the emulator's results).
 */
import { runConformanceSuite } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll } from 'vitest';
import { KmsFake } from './fake/kms-fake.js';
import { isolateFromGoogle } from './helpers/emulator.js';
import { loopbackBackend } from './helpers/backend.js';

isolateFromGoogle();
const fake = new KmsFake({ maxPageSize: 2 });
const algorithms = ['Ed25519', 'RSA_PSS_2048', 'RSA_PSS_3072', 'RSA_PSS_4096', 'RSA_2048'] as const;

beforeAll(async () => {
  await fake.start();
});
afterAll(async () => {
  await fake.stop();
});

runConformanceSuite({
  name: 'gcp-kms on the gRPC fake (Ed25519, RSA-PSS)',
  // RSA-4096 generation in the in-process fake takes seconds on a busy machine
  createBackend: () => loopbackBackend(fake.port, { algorithms: [...algorithms], requestTimeoutMs: 60_000 }),
  expectedAlgorithms: algorithms,
});
