import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, DescribeKeyCommand, KMSClient, ListAliasesCommand, ListResourceTagsCommand } from '@aws-sdk/client-kms';
import { ecdsaRawToDer, exportPublicKey, type KeyAlgorithm } from '@olocus/hsm-core';
import { expectHsmError } from '@olocus/hsm-core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsKmsBackend, parseAwsKmsOptions, TAG_ALGORITHM, TAG_ID, type AwsKmsOptionsInput } from '../src/index.js';
import { ACCOUNT_ID, REGION, startLocalKms, useTestCredentials, type Emulator } from './emulators.js';
import { HttpFaultProxy } from './proxy.js';

/**
 * Runs against: local-kms (github.com/nsmithuk/local-kms). It checks that AWS's own API shapes
 * (CreateKey with tags, CreateAlias, Sign with MessageType DIGEST, GetPublicKey) are what we send
 * and parse. What it cannot prove: Ed25519 (no ECC_NIST_EDWARDS25519 in local-kms), AWS's PSS
 * salt length (local-kms uses the maximum salt; OpenSSL checks with salt auto-detection here),
 * key policies and IAM.
 */
useTestCredentials();
let kms: Emulator;
let sdk: KMSClient;
let dir: string;
beforeAll(async () => {
  kms = await startLocalKms();
  sdk = new KMSClient({ region: REGION, endpoint: kms.endpoint });
  dir = mkdtempSync(join(tmpdir(), 'olocus-aws-openssl-'));
}, 120_000);
afterAll(async () => {
  sdk?.destroy();
  await kms?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const ALL: KeyAlgorithm[] = ['ECDSA_P256', 'ECDSA_P384', 'ECDSA_P521', 'RSA_2048', 'RSA_3072', 'RSA_4096', 'RSA_PSS_2048', 'RSA_PSS_3072', 'RSA_PSS_4096'];
function backendAt(endpoint: string, extra: Partial<AwsKmsOptionsInput> = {}): AwsKmsBackend {
  return new AwsKmsBackend(parseAwsKmsOptions({ region: REGION, endpoint, accountId: ACCOUNT_ID, algorithms: ALL, deletionWindowDays: 7, ...extra }));
}

function openssl(args: string[]): { status: number | null; out: string } {
  const result = spawnSync('openssl', args, { encoding: 'utf8' });
  if (result.error) throw new Error(`openssl is needed for this test (apt-get install openssl): ${result.error.message}`);
  return { status: result.status, out: `${result.stdout}${result.stderr}` };
}

describe('aws-kms on local-kms', () => {
  it.each([
    ['ECDSA_P256', ['-sha256']],
    ['ECDSA_P384', ['-sha384']],
    ['RSA_2048', ['-sha256']],
    ['RSA_PSS_2048', ['-sha256', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:auto']],
  ] as const)('OpenSSL verifies a %s signature from the exported public key', async (algorithm, digestArgs) => {
    const backend = backendAt(kms.endpoint);
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: `openssl-${algorithm}`, algorithm });
      const message = randomBytes(5000); // larger than KMS's 4 KB RAW limit: only the digest travels
      const raw = await backend.sign(key, message);
      const pem = exportPublicKey(await backend.getPublicKey(key), 'pem');
      const files = { pub: join(dir, `${algorithm}.pem`), msg: join(dir, `${algorithm}.bin`), sig: join(dir, `${algorithm}.sig`) };
      writeFileSync(files.pub, pem);
      writeFileSync(files.msg, message);
      writeFileSync(files.sig, algorithm.startsWith('ECDSA') ? ecdsaRawToDer(raw) : raw);
      const ok = openssl(['dgst', ...digestArgs, '-verify', files.pub, '-signature', files.sig, files.msg]);
      expect(ok.out).toMatch(/Verified OK/);
      const tampered = Buffer.from(message);
      tampered[0]! ^= 1;
      writeFileSync(files.msg, tampered);
      expect(openssl(['dgst', ...digestArgs, '-verify', files.pub, '-signature', files.sig, files.msg]).status).not.toBe(0);
    } finally {
      await backend.close();
    }
  });

  it('signs with a key made directly with the SDK (no Olocus tags) by ARN, by alias name and by alias ARN', async () => {
    const created = await sdk.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY', Description: 'made by terraform' }));
    const arn = created.KeyMetadata!.Arn!;
    await sdk.send(new CreateAliasCommand({ AliasName: 'alias/payments/signing', TargetKeyId: created.KeyMetadata!.KeyId! }));
    const backend = backendAt(kms.endpoint);
    await backend.initialize();
    try {
      const byArn = await backend.getKey(arn);
      expect(byArn.ref).toBe(arn);
      expect(byArn.algorithm).toBe('ECDSA_P256');
      expect(byArn.metadata.managedByOlocus).toBe('false');
      const byAlias = await backend.getKey('alias/payments/signing');
      expect(byAlias.ref).toBe(arn);
      expect(byAlias.id).toBe('alias/payments/signing');
      const byKeyId = await backend.getKey(created.KeyMetadata!.KeyId!);
      expect(byKeyId.ref).toBe(arn);
      const pem = exportPublicKey(await backend.getPublicKey(arn), 'pem');
      const data = randomBytes(100);
      for (const ref of [arn, 'alias/payments/signing', `arn:aws:kms:${REGION}:${ACCOUNT_ID}:alias/payments/signing`, byAlias]) {
        const sig = await backend.sign(ref, data);
        expect(await backend.verify(arn, data, sig)).toBe(true);
        const { createVerify } = await import('node:crypto');
        expect(createVerify('sha256').update(data).verify({ key: pem, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true);
      }
      // a foreign key is not listed under the Olocus prefix
      expect((await backend.listKeys()).keys.map((k) => k.ref)).not.toContain(arn);
    } finally {
      await backend.close();
    }
  });

  it('tags the key with the Olocus id and algorithm and names it alias/olocus/<encoded id>', async () => {
    const backend = backendAt(kms.endpoint);
    await backend.initialize();
    try {
      const key = await backend.generateKeyPair({ id: 'team.a:key_1', algorithm: 'RSA_PSS_2048', labels: { team: 'payments' } });
      const described = await sdk.send(new DescribeKeyCommand({ KeyId: 'alias/olocus/team_1a_3key_21' }));
      expect(described.KeyMetadata!.Arn).toBe(key.ref);
      expect(described.KeyMetadata!.KeySpec).toBe('RSA_2048');
      const tags = Object.fromEntries(((await sdk.send(new ListResourceTagsCommand({ KeyId: key.ref }))).Tags ?? []).map((t) => [t.TagKey, t.TagValue]));
      expect(tags[TAG_ID]).toBe('team.a:key_1');
      expect(tags[TAG_ALGORITHM]).toBe('RSA_PSS_2048');
      expect(tags['olocus:label:team']).toBe('payments');
      expect((await backend.getKey(key.ref)).labels).toEqual({ team: 'payments' });
      // a verify-only key cannot be a KMS SIGN_VERIFY key
      await expectHsmError(backend.generateKeyPair({ id: 'verify-only', algorithm: 'ECDSA_P256', usages: ['verify'] }), 'InvalidArgument');
    } finally {
      await backend.close();
    }
  });

  it('a failed CreateAlias leaves no unnamed key behind', async () => {
    const proxy = await new HttpFaultProxy(kms.port).start();
    const backend = backendAt(proxy.endpoint);
    try {
      await backend.initialize();
      proxy.inject = (target) => (target.endsWith('.CreateAlias') ? { status: 400, type: 'KMSInternalException', message: 'injected' } : undefined);
      await expectHsmError(backend.generateKeyPair({ id: 'alias-fails', algorithm: 'ECDSA_P256' }), 'DeviceUnavailable');
      proxy.inject = undefined;
      // the key that was made is scheduled for deletion, and the id is free
      const tagged = await keysTagged('alias-fails');
      expect(tagged.length).toBe(1);
      expect(tagged[0]!.state).toBe('PendingDeletion');
      const again = await backend.generateKeyPair({ id: 'alias-fails', algorithm: 'ECDSA_P256' });
      expect(again.ref).not.toBe(tagged[0]!.arn);
    } finally {
      await backend.close();
      await proxy.stop();
    }
  });

  it('after a crash between CreateKey and CreateAlias the next instance adopts or cleans the unnamed key (by tag)', async () => {
    // what a process that died after CreateKey leaves: a tagged key without its alias
    const crash = async (id: string, algorithm: KeyAlgorithm, spec: 'ECC_NIST_P256' | 'ECC_NIST_P384') =>
      (await sdk.send(new CreateKeyCommand({ KeySpec: spec, KeyUsage: 'SIGN_VERIFY', Tags: [{ TagKey: TAG_ID, TagValue: id }, { TagKey: TAG_ALGORITHM, TagValue: algorithm }] }))).KeyMetadata!;
    const same = await crash('crashed-same', 'ECDSA_P256', 'ECC_NIST_P256');
    const different = await crash('crashed-other-spec', 'ECDSA_P384', 'ECC_NIST_P384');
    const unrelated = await crash('crashed-never-retried', 'ECDSA_P256', 'ECC_NIST_P256');

    const young = backendAt(kms.endpoint); // default grace: a young orphan may be another process at work
    await young.initialize();
    const first = await young.generateKeyPair({ id: 'crashed-same', algorithm: 'ECDSA_P256' });
    expect(first.ref).toBe(same.Arn); // adopted: same spec and tags
    expect((await keysTagged('crashed-never-retried'))[0]!.state).toBe('Enabled');
    await young.close();

    const next = backendAt(kms.endpoint, { orphanGraceMs: 0 });
    await next.initialize();
    try {
      const made = await next.generateKeyPair({ id: 'crashed-other-spec', algorithm: 'ECDSA_P256' });
      expect(made.ref).not.toBe(different.Arn);
      expect((await keysTagged('crashed-other-spec')).find((k) => k.arn === different.Arn)!.state).toBe('PendingDeletion');
      expect((await keysTagged('crashed-never-retried')).find((k) => k.arn === unrelated.Arn)!.state).toBe('PendingDeletion');
      // named keys are never touched
      expect((await next.getKey('crashed-same')).state ?? 'enabled').toBe('enabled');
    } finally {
      await next.close();
    }
  });

  it('reads the account for its instance id from alias ARNs when none is configured', async () => {
    const backend = new AwsKmsBackend(parseAwsKmsOptions({ region: REGION, endpoint: kms.endpoint }));
    await backend.initialize();
    try {
      const aliases = await sdk.send(new ListAliasesCommand({}));
      expect(aliases.Aliases?.length).toBeGreaterThan(0);
      expect(backend.instanceId).toBe(`aws-kms:${REGION}:${ACCOUNT_ID}`);
      expect((await backend.info()).details?.account).toBe(ACCOUNT_ID);
      const fips = await backend.fipsStatus();
      expect(fips.evidence).toBe('provider-claim');
      expect(fips.standard).toBe('FIPS 140-3');
    } finally {
      await backend.close();
    }
  });
});

async function keysTagged(id: string): Promise<Array<{ arn: string; state: string }>> {
  const { ListKeysCommand } = await import('@aws-sdk/client-kms');
  const out: Array<{ arn: string; state: string }> = [];
  for (const entry of (await sdk.send(new ListKeysCommand({ Limit: 1000 }))).Keys ?? []) {
    const tags = (await sdk.send(new ListResourceTagsCommand({ KeyId: entry.KeyId! }))).Tags ?? [];
    if (tags.some((t) => t.TagKey === TAG_ID && t.TagValue === id)) {
      const meta = (await sdk.send(new DescribeKeyCommand({ KeyId: entry.KeyId! }))).KeyMetadata!;
      out.push({ arn: meta.Arn!, state: meta.KeyState! });
    }
  }
  return out;
}

describe('backup (reference-only): the private key stays in KMS', () => {
  it('exportKey records the ARN, key spec and public key, no blob, and says what the key relies on; importKey refuses', async () => {
    const backend = backendAt(kms.endpoint);
    await backend.initialize();
    try {
      expect(backend.backup.method).toBe('reference-only');
      const key = await backend.generateKeyPair({ id: 'backup.ref', algorithm: 'ECDSA_P256', backup: true });
      const out = await backend.backup.exportKey(key);
      expect(out).toMatchObject({ method: 'reference-only', id: 'backup.ref', algorithm: 'ECDSA_P256', usages: ['sign', 'verify'] });
      expect(out.blob).toBeUndefined();
      expect(Buffer.from(out.publicKeySpki).equals(Buffer.from((await backend.getPublicKey(key)).spki))).toBe(true);
      expect(out.parameters).toMatchObject({ provider: 'aws-kms', region: REGION, account: ACCOUNT_ID, keyArn: key.ref, keySpec: 'ECC_NIST_P256', keyState: 'Enabled' });
      expect(out.parameters.durability).toContain("relies on the provider's durability");
      const refused = await expectHsmError(backend.backup.importKey(out), 'InvalidArgument');
      expect(refused.message).toContain('AWS KMS keeps the private key');
      expect(refused.message).toContain(key.ref);
    } finally {
      await backend.close();
    }
  });
});

