import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackendRegistry } from '@olocus/hsm-core';
import { checkpointSignerFromBackend, openAuditLog, withAudit } from '@olocus/hsm-compliance';
import { openRotation } from '@olocus/hsm-rotation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsKmsBackend, awsKmsBackendFactory, parseAwsKmsOptions } from '../src/index.js';
import { ACCOUNT_ID, REGION, startLocalKms, useTestCredentials, type Emulator } from './emulators.js';

/**
 * Runs against: local-kms. Rotation (@olocus/hsm-rotation) and the audit log
 * (@olocus/hsm-compliance) use the aws-kms backend through the contract only, unchanged.
 * What it cannot prove: anything AWS-side beyond what local-kms implements (see conformance).
 */
useTestCredentials();
let kms: Emulator;
let dir: string;
beforeAll(async () => {
  kms = await startLocalKms();
  dir = mkdtempSync(join(tmpdir(), 'olocus-aws-rotation-'));
}, 120_000);
afterAll(async () => {
  await kms?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const options = () => ({ region: REGION, endpoint: kms.endpoint, accountId: ACCOUNT_ID, deletionWindowDays: 7, algorithms: ['ECDSA_P256', 'RSA_2048'] });

describe('rotation and audit work unchanged on aws-kms', () => {
  it('createKey, signWithLogicalKey, rotateKey, then the old signature verifies at its signing time', async () => {
    const registry = new BackendRegistry().register(awsKmsBackendFactory);
    const rotation = await openRotation({ storage: { kind: 'sqlite', path: join(dir, 'registry.db') }, backend: { type: 'aws-kms', options: options() }, backendRegistry: registry });
    try {
      const hsm = rotation.hsm!;
      await rotation.manager.createKey('payments', 'ECDSA_P256', { actor: 'alice', reason: 'new key' });
      const data = randomBytes(64);
      const old = await hsm.signWithLogicalKey('payments', data);
      expect(old.version.version).toBe(1);
      await rotation.manager.rotateKey('payments', { actor: 'alice', reason: 'scheduled rotation' });
      const fresh = await hsm.signWithLogicalKey('payments', data);
      expect(fresh.version.version).toBe(2);
      expect(String(fresh.version.key)).not.toBe(String(old.version.key));
      expect(await hsm.verifyWithLogicalKey('payments', data, old.signature, old.signedAt)).toBe(true);
      expect(await hsm.verifyWithLogicalKey('payments', data, fresh.signature, fresh.signedAt)).toBe(true);
      // dated inside v1's overlap it is still v1's (a signer with a fresh cache may have used v1)
      expect((await hsm.verifyWithLogicalKeyDetailed('payments', data, old.signature, fresh.signedAt)).version?.version).toBe(1);
      // a tampered message verifies under no version
      expect(await hsm.verifyWithLogicalKey('payments', randomBytes(64), old.signature, old.signedAt)).toBe(false);
      // without a time: the version that made it is found
      const detailed = await hsm.verifyWithLogicalKeyDetailed('payments', data, old.signature);
      expect(detailed.valid).toBe(true);
      expect(detailed.version?.version).toBe(1);
      // both versions are KMS keys under the alias prefix
      const listed = await hsm.backend.listKeys({ prefix: 'payments' });
      expect(listed.keys.length).toBe(2);
      for (const key of listed.keys) expect(key.ref).toMatch(/^arn:aws:kms:/);
    } finally {
      await rotation.close();
    }
  });

  it('an audit log signs its checkpoints with a KMS key, and the chain verifies', async () => {
    const backend = new AwsKmsBackend(parseAwsKmsOptions(options()));
    await backend.initialize();
    const log = await openAuditLog({
      storage: { kind: 'sqlite', path: join(dir, 'audit.db') },
      checkpoint: { everyRecords: 2, signer: checkpointSignerFromBackend(backend, 'audit-checkpoint') },
    });
    try {
      const audited = withAudit(backend, log, { actor: 'svc-test' });
      const key = await audited.generateKeyPair({ id: 'audited-key', algorithm: 'RSA_2048' });
      for (let i = 0; i < 3; i++) await audited.sign(key, randomBytes(32));
      await log.flush();
      const checkpoint = await log.checkpoint();
      expect(checkpoint?.signature).toBeTruthy();
      const verification = await log.verify();
      expect(verification.ok).toBe(true);
      expect(verification.checkpoints).toBeGreaterThan(0);
    } finally {
      await log.close();
      await backend.close();
    }
  });
});
