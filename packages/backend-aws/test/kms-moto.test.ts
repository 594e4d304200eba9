import { randomBytes } from 'node:crypto';
import { DescribeKeyCommand, DisableKeyCommand, EnableKeyCommand, KMSClient, ListResourceTagsCommand } from '@aws-sdk/client-kms';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsKmsBackend, parseAwsKmsOptions, TAG_ID } from '../src/index.js';
import { ACCOUNT_ID, REGION, startMoto, useTestCredentials, type Emulator } from './emulators.js';

/**
 * Runs against: moto_server (PyPI moto[server] 5.2.5), a second, independent implementation of
 * the KMS API, for the alias listing, tags and enable/disable paths. What it cannot prove:
 * signatures (moto ignores MessageType DIGEST and hashes the digest again, so signatures are not
 * checked here: local-kms covers them), that AWS refuses a disabled key (moto still signs with
 * it: the refusal seen here is the library's own state check after DescribeKey; test/faults.test.ts
 * shows the service-side DisabledException on local-kms), and IAM.
 */
useTestCredentials();
let moto: Emulator;
let sdk: KMSClient;
beforeAll(async () => {
  moto = await startMoto();
  sdk = new KMSClient({ region: REGION, endpoint: moto.endpoint });
}, 120_000);
afterAll(async () => {
  sdk?.destroy();
  await moto?.stop();
});

const backendAt = () => new AwsKmsBackend(parseAwsKmsOptions({ region: REGION, endpoint: moto.endpoint, accountId: ACCOUNT_ID, deletionWindowDays: 7 }));

describe('aws-kms on moto', () => {
  it('lists the keys under the alias prefix page by page, with their tags and labels', async () => {
    const backend = backendAt();
    await backend.initialize();
    try {
      const ids = ['list.a', 'list.b', 'list.c', 'list.d', 'list.e'];
      for (const id of ids) await backend.generateKeyPair({ id, algorithm: 'ECDSA_P256', labels: { owner: id } });
      await backend.generateKeyPair({ id: 'other', algorithm: 'RSA_PSS_3072' });
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await backend.listKeys({ prefix: 'list.', limit: 2, ...(cursor ? { cursor } : {}) });
        for (const key of page.keys) {
          expect(key.labels).toEqual({ owner: key.id });
          expect(key.algorithm).toBe('ECDSA_P256');
          expect(key.ref).toMatch(new RegExp(`^arn:aws:kms:${REGION}:${ACCOUNT_ID}:key/`));
        }
        seen.push(...page.keys.map((k) => k.id));
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      expect(seen).toEqual(ids);
      expect(pages).toBe(3);
      // the algorithm tag chooses PSS for an RSA key; the tag names the Olocus id
      const other = await backend.getKey('other');
      expect(other.algorithm).toBe('RSA_PSS_3072');
      const tags = (await sdk.send(new ListResourceTagsCommand({ KeyId: other.ref }))).Tags ?? [];
      expect(tags).toContainEqual({ TagKey: TAG_ID, TagValue: 'other' });
    } finally {
      await backend.close();
    }
  });

  it('follows DisableKey / EnableKey done outside the library', async () => {
    const backend = backendAt();
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'toggle', algorithm: 'ECDSA_P256' });
      await sdk.send(new DisableKeyCommand({ KeyId: key.metadata.keyId }));
      const disabled = await backend.getKey('toggle');
      expect(disabled.state).toBe('disabled');
      await expectHsmError(backend.sign('toggle', randomBytes(8)), 'KeyDisabled');
      await sdk.send(new EnableKeyCommand({ KeyId: key.metadata.keyId }));
      expect((await backend.getKey('toggle')).state ?? 'enabled').toBe('enabled');
      expect((await backend.sign('toggle', randomBytes(8))).length).toBe(64);
    } finally {
      await backend.close();
    }
  });

  it('destroyKey schedules deletion with the configured window and removes the alias', async () => {
    const backend = backendAt();
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'doomed', algorithm: 'ECDSA_P384' });
      await backend.destroyKey('doomed');
      const meta = (await sdk.send(new DescribeKeyCommand({ KeyId: key.ref }))).KeyMetadata!;
      expect(meta.KeyState).toBe('PendingDeletion');
      const days = (new Date(meta.DeletionDate!).getTime() - Date.now()) / 86_400_000;
      expect(days).toBeGreaterThan(6);
      expect(days).toBeLessThan(8);
      await expectHsmError(backend.getKey('doomed'), 'KeyNotFound');
      expect((await backend.getKey(key.ref)).state).toBe('pending-deletion');
      await expectHsmError(backend.sign(key, randomBytes(8)), 'KeyDisabled');
      await expectHsmError(backend.destroyKey(key), 'KeyDisabled');
      expect((await backend.listKeys({ prefix: 'doomed' })).keys).toEqual([]);
      // the id is free again
      const again = await backend.generateKeyPair({ id: 'doomed', algorithm: 'ECDSA_P384' });
      expect(again.ref).not.toBe(key.ref);
    } finally {
      await backend.close();
    }
  });
});
