import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportPublicKey, type KeyAlgorithm } from '@olocus/hsm-core';
import { expectHsmError, runConformanceSuite } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsKmsBackend, KMS_RAW_MESSAGE_LIMIT, parseAwsKmsOptions } from '../src/index.js';
import { ACCOUNT_ID, REGION, useTestCredentials } from './emulators.js';
import { startFakeKms, type FakeKms } from './fake-kms.js';

/**
 * Runs against: the project's wire-level KMS (test/fake-kms.ts, AWS JSON 1.1 from the KMS API
 * Reference), because neither emulator has Ed25519 (ECC_NIST_EDWARDS25519) and both sign RSA-PSS
 * with the maximum salt where AWS uses the digest length. What it cannot prove: that real AWS
 * accepts these requests (it is our reading of the API, not another implementation), IAM, and
 * latency. Ed25519 is not in the conformance suite: AWS KMS signs Ed25519 messages of 1 to 4,096
 * bytes only, and the suite signs an empty one; the limits are checked below instead.
 */
useTestCredentials();
let fake: FakeKms;
let dir: string;
beforeAll(async () => {
  fake = await startFakeKms(REGION, ACCOUNT_ID);
  dir = mkdtempSync(join(tmpdir(), 'olocus-aws-fake-'));
});
afterAll(async () => {
  await fake?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const backendWith = (algorithms: KeyAlgorithm[]) => new AwsKmsBackend(parseAwsKmsOptions({ region: REGION, endpoint: fake.endpoint, accountId: ACCOUNT_ID, algorithms, deletionWindowDays: 7 }));

runConformanceSuite({
  name: 'aws-kms on the wire-level fake KMS (RSA PKCS#1 and PSS with AWS salt)',
  createBackend: () => backendWith(['RSA_2048', 'RSA_PSS_2048', 'RSA_PSS_3072']),
  expectedAlgorithms: ['RSA_2048', 'RSA_PSS_2048', 'RSA_PSS_3072'],
  concurrency: 32,
});

function openssl(args: string[]): { status: number | null; out: string } {
  const result = spawnSync('openssl', args, { encoding: 'utf8' });
  if (result.error) throw new Error(`openssl is needed for this test (apt-get install openssl): ${result.error.message}`);
  return { status: result.status, out: `${result.stdout}${result.stderr}` };
}

describe('aws-kms Ed25519 and PSS on the wire-level fake KMS', () => {
  it('signs Ed25519 as a RAW message of 1 to 4096 bytes that OpenSSL verifies, and refuses what KMS cannot sign', async () => {
    const backend = backendWith(['Ed25519']);
    await backend.initialize();
    try {
      expect((await backend.capabilities()).maxMessageBytes).toEqual({ Ed25519: KMS_RAW_MESSAGE_LIMIT });
      const key = await backend.generateKeyPair({ id: 'ed25519-key', algorithm: 'Ed25519' });
      expect(key.metadata.keySpec).toBe('ECC_NIST_EDWARDS25519');
      const pub = join(dir, 'ed.pem');
      writeFileSync(pub, exportPublicKey(await backend.getPublicKey(key), 'pem'));
      for (const size of [1, 1000, KMS_RAW_MESSAGE_LIMIT]) {
        const message = randomBytes(size);
        const signature = await backend.sign(key, message);
        expect(signature.length).toBe(64);
        expect(await backend.verify(key, message, signature)).toBe(true);
        writeFileSync(join(dir, 'ed.msg'), message);
        writeFileSync(join(dir, 'ed.sig'), signature);
        const check = openssl(['pkeyutl', '-verify', '-pubin', '-inkey', pub, '-rawin', '-in', join(dir, 'ed.msg'), '-sigfile', join(dir, 'ed.sig')]);
        expect(check.out).toMatch(/Signature Verified Successfully/);
      }
      const tooLong = await expectHsmError(backend.sign(key, randomBytes(KMS_RAW_MESSAGE_LIMIT + 1)), 'InvalidArgument');
      expect(tooLong.message).toContain('4096');
      expect(tooLong.details.limit).toBe(4096);
      const empty = await expectHsmError(backend.sign(key, new Uint8Array(0)), 'InvalidArgument');
      expect(empty.message).toMatch(/1 to 4096 bytes/);
      await expectHsmError(
        backend.signStream(key, (async function* () {
          yield randomBytes(10);
        })()),
        'InvalidArgument',
      );
    } finally {
      await backend.close();
    }
  });

  it('RSA-PSS signatures have the salt length AWS uses (the digest length): OpenSSL verifies with saltlen 32', async () => {
    const backend = backendWith(['RSA_PSS_2048']);
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'pss-key', algorithm: 'RSA_PSS_2048' });
      const message = randomBytes(10_000);
      const files = { pub: join(dir, 'pss.pem'), msg: join(dir, 'pss.msg'), sig: join(dir, 'pss.sig') };
      writeFileSync(files.pub, exportPublicKey(await backend.getPublicKey(key), 'pem'));
      writeFileSync(files.msg, message);
      writeFileSync(files.sig, await backend.sign(key, message));
      const check = openssl(['dgst', '-sha256', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32', '-verify', files.pub, '-signature', files.sig, files.msg]);
      expect(check.out).toMatch(/Verified OK/);
    } finally {
      await backend.close();
    }
  });
});
