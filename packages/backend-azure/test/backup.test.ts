/**
 * Backup (method `provider-blob`) against the project's wire-level Key Vault fake
 * (test/fake-key-vault.ts: POST /keys/{name}/backup → {value: base64url blob}, POST /keys/restore
 * with {value}), not against Azure and not against Lowkey Vault (which implements backup and
 * restore, but whose jar the Maven mirror reachable from this machine does not serve).
 *
 * What this fake cannot prove: that Azure's real blob restores (the fake's blob is a random handle
 * to a copy it keeps, not the service's encrypted format), that the real service refuses a blob
 * from another geography or subscription with the status the fake uses (400 BadParameter; the
 * wording is not published), or anything about the blob's cryptographic protection. It proves the
 * library's side: the REST calls, the parameters it records, the checks after restore (same name,
 * same public key, a challenge signed by the restored key verifies), and how refusals are typed.
 */
import { randomBytes } from 'node:crypto';
import { verifyLocally } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AZURE_RESTORE_SCOPE, type AzureKeyVaultBackend } from '../src/index.js';
import { startFakeKeyVault, type FakeKeyVault } from './fake-key-vault.js';
import { backendFor } from './helpers.js';

let home: FakeKeyVault;
let sameGeography: FakeKeyVault;
let elsewhere: FakeKeyVault;
beforeAll(async () => {
  home = await startFakeKeyVault();
  sameGeography = await startFakeKeyVault();
  elsewhere = await startFakeKeyVault({ geography: 'other-geography' });
});
afterAll(async () => {
  for (const fake of [home, sameGeography, elsewhere]) await fake?.close();
});

async function open(fake: FakeKeyVault, purge = true): Promise<AzureKeyVaultBackend> {
  const backend = backendFor(fake, { purgeOnDestroy: purge });
  await backend.initialize();
  return backend;
}

describe('Azure Key Vault backup (provider-blob) on the wire-level fake', () => {
  it('exports the vault blob with where it restores, and restores it into another vault of the same geography; the restored key signs for the exported public key', async () => {
    const source = await open(home);
    const target = await open(sameGeography);
    try {
      expect(source.backup.method).toBe('provider-blob');
      const keys = [];
      for (const algorithm of ['ECDSA_P256', 'ECDSA_P384', 'RSA_2048', 'RSA_PSS_2048'] as const) {
        keys.push(await source.generateKeyPair({ id: `bk.${algorithm}`, algorithm, labels: { team: 'ops' } }));
      }
      await expectHsmError(source.generateKeyPair({ id: 'bk.ed', algorithm: 'Ed25519', backup: true }), 'UnsupportedAlgorithm');
      for (const key of keys) {
        const out = await source.backup.exportKey(key);
        expect(out).toMatchObject({ method: 'provider-blob', id: key.id, algorithm: key.algorithm, usages: ['sign', 'verify'] });
        expect(Buffer.from(out.publicKeySpki).equals(Buffer.from((await source.getPublicKey(key)).spki))).toBe(true);
        expect(out.blob!.length).toBeGreaterThan(16);
        expect(out.parameters).toMatchObject({ format: 'azure-keyvault-backup/v1', provider: 'azure-keyvault', vaultUrl: home.vaultUrl, keyId: key.ref, restoreScope: AZURE_RESTORE_SCOPE });
        expect(out.parameters.restoreScope).toContain('same Azure geography and the same subscription');
        const restored = await target.backup.importKey(out);
        expect(restored).toMatchObject({ id: key.id, algorithm: key.algorithm, labels: { team: 'ops' }, instance: target.instanceId });
        const data = randomBytes(50);
        expect(verifyLocally(key.algorithm, out.publicKeySpki, data, await target.sign(restored, data))).toBe(true);
        // restored once: the name is taken now
        await expectHsmError(target.backup.importKey(out), 'KeyAlreadyExists');
      }
      // Azure restores under the blob's own name
      const one = await source.backup.exportKey(keys[0]!);
      await expectHsmError(target.backup.importKey(one, { id: 'another-name' }), 'InvalidArgument');
    } finally {
      await source.close();
      await target.close();
    }
  });

  it('a blob from another geography, an altered blob, and a blob whose key is not the exported public key are refused (IntegrityError); nothing stays behind', async () => {
    const source = await open(home);
    const foreign = await open(elsewhere);
    const target = await open(sameGeography);
    try {
      const key = await source.generateKeyPair({ id: 'bk.refused', algorithm: 'ECDSA_P256' });
      const other = await source.generateKeyPair({ id: 'bk.other', algorithm: 'ECDSA_P256' });
      const out = await source.backup.exportKey(key);

      const geo = await expectHsmError(foreign.backup.importKey(out), 'IntegrityError');
      expect(geo.message).toContain('another Azure geography or subscription');
      await expectHsmError(foreign.getKey('bk.refused'), 'KeyNotFound');

      const altered = Buffer.from(out.blob!);
      altered[altered.length - 1]! ^= 0x01;
      await expectHsmError(target.backup.importKey({ ...out, blob: altered }), 'IntegrityError');
      await expectHsmError(target.getKey('bk.refused'), 'KeyNotFound');

      // the blob of bk.other presented as bk.refused's backup
      const otherOut = await source.backup.exportKey(other);
      const swapped = await expectHsmError(target.backup.importKey({ ...otherOut, id: 'bk.refused', publicKeySpki: out.publicKeySpki }), 'IntegrityError');
      expect(swapped.message).toContain('another public key');
      await expectHsmError(target.getKey('bk.other'), 'KeyNotFound');

      await expectHsmError(target.backup.importKey({ ...out, method: 'wrapped' }), 'InvalidArgument');
    } finally {
      await source.close();
      await foreign.close();
      await target.close();
    }
  });
});
