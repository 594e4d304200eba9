import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DefaultAzureCredential } from '@azure/identity';
import { KeyClient } from '@azure/keyvault-keys';
import { BackendRegistry, NAME_CODECS, ecdsaRawToDer, exportPublicKey, type KeyAlgorithm } from '@olocus/hsm-core';
import { expectHsmError, independentVerify } from '@olocus/hsm-core/testing';
import { openRotation } from '@olocus/hsm-rotation';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { azureBackendFactory, type AzureKeyVaultBackend } from '../src/index.js';
import { startFakeKeyVault, useManagedIdentityOf, type FakeKeyVault } from './fake-key-vault.js';
import { backendFor } from './helpers.js';

// Against the project's wire-level Key Vault over HTTPS (Lowkey Vault is not served here: README).
let fake: FakeKeyVault;
let backend: AzureKeyVaultBackend;
let sdk: KeyClient;
let work: string;

beforeAll(async () => {
  fake = await startFakeKeyVault();
  backend = backendFor(fake);
  await backend.initialize();
  useManagedIdentityOf(fake);
  sdk = new KeyClient(fake.vaultUrl, new DefaultAzureCredential(), { disableChallengeResourceVerification: true });
  work = mkdtempSync(join(tmpdir(), 'olocus-azure-'));
});
afterAll(async () => {
  await backend?.close();
  await fake?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function opensslVerify(algorithm: KeyAlgorithm, pem: string, data: Uint8Array, signature: Uint8Array): boolean {
  const dir = mkdtempSync(join(work, 'ossl-'));
  const files = { key: join(dir, 'pub.pem'), data: join(dir, 'data.bin'), sig: join(dir, 'sig.bin') };
  writeFileSync(files.key, pem);
  writeFileSync(files.data, data);
  // OpenSSL reads ECDSA signatures as DER
  writeFileSync(files.sig, algorithm.startsWith('ECDSA') ? ecdsaRawToDer(signature) : signature);
  const digest = algorithm === 'ECDSA_P384' ? '-sha384' : algorithm === 'ECDSA_P521' ? '-sha512' : '-sha256';
  const pss = algorithm.startsWith('RSA_PSS') ? ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:digest'] : [];
  try {
    execFileSync('openssl', ['dgst', digest, ...pss, '-verify', files.key, '-signature', files.sig, files.data], { stdio: 'pipe' });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('openssl is not installed (apt-get install openssl)');
    return false;
  }
}

describe('signatures', () => {
  it('OpenSSL verifies signatures made through the backend from the exported public key', async () => {
    for (const algorithm of ['ECDSA_P256', 'ECDSA_P384', 'ECDSA_P521', 'RSA_2048', 'RSA_PSS_2048', 'RSA_PSS_3072'] as const) {
      const key = await backend.generateKeyPair({ id: `ossl.${algorithm}`, algorithm });
      const data = randomBytes(777);
      const signature = await backend.sign(key, data);
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      expect(opensslVerify(algorithm, pem, data, signature), algorithm).toBe(true);
      const tampered = Buffer.from(data);
      tampered[0] = tampered[0]! ^ 1;
      expect(opensslVerify(algorithm, pem, tampered, signature), `${algorithm} tampered`).toBe(false);
    }
  });

  it('refuses Ed25519 with a message saying Azure has no Ed25519 keys', async () => {
    const error = await expectHsmError(backend.generateKeyPair({ id: 'ed', algorithm: 'Ed25519' }), 'UnsupportedAlgorithm');
    expect(error.message).toMatch(/no Ed25519/);
  });

  it('makes EC-HSM / RSA-HSM keys with hsm: true and software keys without', async () => {
    const soft = await backend.generateKeyPair({ id: 'prot.soft', algorithm: 'ECDSA_P256' });
    expect(soft.metadata.keyType).toBe('EC');
    expect(soft.metadata.protection).toBe('software');
    const hsmBackend = backendFor(fake, { hsm: true });
    await hsmBackend.initialize();
    const ec = await hsmBackend.generateKeyPair({ id: 'prot.hsm', algorithm: 'ECDSA_P384' });
    const rsa = await hsmBackend.generateKeyPair({ id: 'prot.hsm-rsa', algorithm: 'RSA_PSS_2048' });
    expect([ec.metadata.keyType, rsa.metadata.keyType]).toEqual(['EC-HSM', 'RSA-HSM']);
    expect([ec.metadata.protection, ec.metadata.hsmPlatform]).toEqual(['hsm', '2']);
    expect((await hsmBackend.fipsStatus()).evidence).toBe('provider-claim');
    expect((await backend.fipsStatus())).toMatchObject({ standard: 'none', level: 0, evidence: 'none' });
    await hsmBackend.close();
  });

  it('keeps the exact expiry, labels and usages in the vault (tags, exp, key_ops)', async () => {
    const expiresAt = new Date(Date.now() + 3_600_123);
    const key = await backend.generateKeyPair({ id: 'tags:one', algorithm: 'ECDSA_P256', expiresAt, labels: { team: 'payments', 'env/stage': 'prod' }, usages: ['verify'] });
    const raw = await sdk.getKey(NAME_CODECS.azureKeyVault.encode('tags:one'));
    expect(raw.properties.tags).toMatchObject({ 'olocus-id': 'tags:one', 'olocus-alg': 'ECDSA_P256', 'olocus-label.team': 'payments' });
    expect(raw.keyOperations).toEqual(['verify']);
    expect(raw.properties.expiresOn!.getTime()).toBe(Math.ceil(expiresAt.getTime() / 1000) * 1000);
    const reader = await init(backendFor(fake));
    const again = await reader.getKey('tags:one');
    await reader.close();
    expect(again.expiresAt?.getTime()).toBe(expiresAt.getTime());
    expect(again.labels).toEqual({ team: 'payments', 'env/stage': 'prod' });
    expect(again.usages).toEqual(['verify']);
    expect(key.ref).toBe(raw.id);
  });
});

async function init(b: AzureKeyVaultBackend): Promise<AzureKeyVaultBackend> {
  await b.initialize();
  return b;
}

describe('keys made outside the library', () => {
  it('signs by name, by unversioned and versioned id; an old versioned handle keeps its version after a rotation elsewhere', async () => {
    const made = await sdk.createEcKey('Foreign-Release', { curve: 'P-256' });
    const byName = await backend.getKey('Foreign-Release');
    expect(byName.id).toBe('Foreign-Release');
    expect(byName.ref).toBe(made.id);
    expect(byName.createdAt).toBeInstanceOf(Date);
    expect(byName.metadata.managedByOlocus).toBe('false');
    const data = randomBytes(64);
    const oldPem = exportPublicKey(await backend.getPublicKey(made.id!), 'pem');
    expect(independentVerify('ECDSA_P256', oldPem, data, await backend.sign('Foreign-Release', data))).toBe(true);
    expect(independentVerify('ECDSA_P256', oldPem, data, await backend.sign(made.id!, data))).toBe(true);
    expect((await backend.getKey(`${fake.vaultUrl}/keys/Foreign-Release`)).ref).toBe(made.id);

    // someone rotates it with the SDK: a new version, the old one stays usable
    const rotated = await sdk.rotateKey('Foreign-Release');
    expect(rotated.id).not.toBe(made.id);
    const newPem = exportPublicKey(await backend.getPublicKey(rotated.id!), 'pem');
    const sigOld = await backend.sign(byName, data);
    expect(independentVerify('ECDSA_P256', oldPem, data, sigOld)).toBe(true);
    expect(independentVerify('ECDSA_P256', newPem, data, sigOld)).toBe(false);
    // a fresh instance resolving the name gets the newest version
    const fresh = await init(backendFor(fake));
    expect((await fresh.getKey('Foreign-Release')).ref).toBe(rotated.id);
    expect(independentVerify('ECDSA_P256', newPem, data, await fresh.sign('Foreign-Release', data))).toBe(true);
    await fresh.close();
    // foreign keys are not listed as the library's
    expect((await backend.listKeys({ prefix: 'Foreign' })).keys).toEqual([]);
    // unless asked for all
    const all = await init(backendFor(fake, { listForeignKeys: true }));
    const listed = (await all.listKeys({ prefix: 'Foreign' })).keys;
    expect(listed.map((k) => [k.id, k.ref, k.metadata.managedByOlocus])).toEqual([['Foreign-Release', rotated.id, 'false']]);
    await all.close();
  });

  it('refuses a key id from another vault and a disabled key', async () => {
    await expectHsmError(backend.getKey('https://other.vault.azure.net/keys/abc/0123'), 'InvalidArgument');
    const key = await backend.generateKeyPair({ id: 'to-disable', algorithm: 'ECDSA_P256' });
    await sdk.updateKeyProperties(NAME_CODECS.azureKeyVault.encode('to-disable'), key.metadata.version!, { enabled: false });
    // this instance still holds the key in its cache: the vault refuses
    await expectHsmError(backend.sign(key, randomBytes(8)), 'KeyDisabled');
    const fresh = await init(backendFor(fake));
    expect((await fresh.getKey('to-disable')).state).toBe('disabled');
    await expectHsmError(fresh.sign('to-disable', randomBytes(8)), 'KeyDisabled');
    await fresh.close();
  });
});

describe('names', () => {
  const tricky = ['a.b', 'a_b', 'a:b', 'a-b', 'A-b', 'a-B', 'ab', 'AB', 'a0b', 'a--b', 'a-0b', 'x.y_z:w-V'];

  it('ids with ., _, : and upper case round-trip through the vault and never collide', async () => {
    const names = tricky.map((id) => NAME_CODECS.azureKeyVault.encode(id));
    expect(new Set(names.map((n) => n.toLowerCase())).size).toBe(tricky.length);
    for (const name of names) expect(name).toMatch(/^[0-9a-zA-Z-]{1,127}$/);
    const pems = new Map<string, string>();
    for (const id of tricky) {
      const key = await backend.generateKeyPair({ id: `n.${id}`, algorithm: 'ECDSA_P256' });
      expect(key.id).toBe(`n.${id}`);
      pems.set(id, exportPublicKey(await backend.getPublicKey(key), 'pem'));
    }
    expect(new Set(pems.values()).size).toBe(tricky.length);
    const listed = (await backend.listKeys({ prefix: 'n.' })).keys.map((k) => k.id);
    expect(listed.sort()).toEqual(tricky.map((id) => `n.${id}`).sort());
    const fresh = await init(backendFor(fake));
    for (const id of tricky) expect(exportPublicKey(await fresh.getPublicKey(`n.${id}`), 'pem')).toBe(pems.get(id));
    await fresh.close();
  });

  it('refuses an id whose name would pass 127 characters, naming the limit', async () => {
    const error = await expectHsmError(backend.generateKeyPair({ id: `A${'B'.repeat(80)}`, algorithm: 'ECDSA_P256' }), 'InvalidArgument');
    expect(error.message).toMatch(/127/);
  });
});

describe('deletion', () => {
  it('soft-deletes: the state shows as pending-deletion; purgeOnDestroy purges and the name is free again', async () => {
    const key = await backend.generateKeyPair({ id: 'del.soft', algorithm: 'ECDSA_P256' });
    await backend.destroyKey(key);
    expect((await backend.getKey('del.soft')).state).toBe('pending-deletion');
    await expectHsmError(backend.sign('del.soft', randomBytes(8)), ['KeyNotFound', 'KeyDisabled']);
    await expectHsmError(backend.generateKeyPair({ id: 'del.soft', algorithm: 'ECDSA_P256' }), 'KeyAlreadyExists');

    const purging = await init(backendFor(fake, { purgeOnDestroy: true }));
    await purging.generateKeyPair({ id: 'del.purge', algorithm: 'ECDSA_P256' });
    await purging.destroyKey('del.purge');
    await expectHsmError(purging.getKey('del.purge'), 'KeyNotFound');
    await purging.generateKeyPair({ id: 'del.purge', algorithm: 'ECDSA_P256' });
    await purging.close();
  });
});

describe('backup and restore', () => {
  it('a key backed up, purged and restored has the same versions and public key, and signs again', async () => {
    const purging = await init(backendFor(fake, { purgeOnDestroy: true }));
    const key = await purging.generateKeyPair({ id: 'backup.me', algorithm: 'RSA_PSS_2048', labels: { team: 'ops' } });
    const pem = exportPublicKey(await purging.getPublicKey(key), 'pem');
    const blob = await purging.backupKey(key);
    expect(blob.length).toBeGreaterThan(16);
    await purging.destroyKey(key);
    await expectHsmError(purging.getKey('backup.me'), 'KeyNotFound');
    const restored = await purging.restoreKey(blob);
    expect([restored.id, restored.ref, restored.algorithm, restored.labels]).toEqual([key.id, key.ref, 'RSA_PSS_2048', { team: 'ops' }]);
    const data = randomBytes(40);
    expect(independentVerify('RSA_PSS_2048', pem, data, await purging.sign(key, data))).toBe(true);
    // a second restore while the key exists is refused
    await expectHsmError(purging.restoreKey(blob), 'KeyAlreadyExists');
    await expectHsmError(purging.restoreKey(new Uint8Array(0)), 'InvalidArgument');
    await purging.close();
  });
});

describe('rotation works unchanged', () => {
  it('createKey, sign, rotateKey, then verify an old signature at its signing time (openRotation on azure-keyvault)', async () => {
    useManagedIdentityOf(fake);
    const ctx = await openRotation({
      storage: { kind: 'sqlite', path: join(work, 'registry.db') },
      backend: { type: 'azure-keyvault', options: { vaultUrl: fake.vaultUrl, disableChallengeResourceVerification: true, requestTimeoutMs: 20_000 } },
      backendRegistry: new BackendRegistry().register(azureBackendFactory),
    });
    try {
      const hsm = ctx.hsm!;
      await ctx.manager.createKey('invoices', 'ECDSA_P256', { actor: 'test', reason: 'new signing key' });
      const data = randomBytes(100);
      const before = await hsm.signWithLogicalKey('invoices', data);
      const signedAt = new Date();
      await new Promise((r) => setTimeout(r, 20));
      await ctx.manager.rotateKey('invoices', { actor: 'test', reason: 'scheduled rotation' });
      const after = await hsm.signWithLogicalKey('invoices', data);
      expect(after.version.version).toBe(2);
      expect(await hsm.verifyWithLogicalKey('invoices', data, before.signature, signedAt)).toBe(true);
      expect(await hsm.verifyWithLogicalKey('invoices', data, after.signature, new Date())).toBe(true);
      // both versions are Key Vault keys with the library's names
      expect((await ctx.backend.getKey('invoices.v1')).ref).toMatch(/\/keys\/invoices-1v1\//);
      expect((await ctx.backend.getKey('invoices.v2')).ref).toMatch(/\/keys\/invoices-1v2\//);
    } finally {
      await ctx.close();
    }
  });
});
