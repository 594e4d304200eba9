import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, cleanEnv, tempDir, type RunResult } from './helpers.js';
import { AWS_ACCOUNT_ID, AWS_REGION, CLOUD_ENV_CLEARED, cloudEnv, freePort, startGcpKmsEmulator, startLocalKms, type Emulator } from './cloud-emulators.js';

/**
 * The CLI over the cloud backends, end to end through dist/bin.js: `init --backend <cloud>` →
 * keys create → sign → verify → keys rotate → verify --signed-at of the old signature → audit
 * verify, against the emulators (local-kms for aws-kms, gcp-kms-emulator for gcp-kms). The
 * backend packages load through core's registry because the config names them.
 */

function env(): Record<string, string> {
  const base = cleanEnv(cloudEnv());
  for (const k of CLOUD_ENV_CLEARED) delete base[k];
  return base;
}

const show = (r: RunResult) => `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

/** The lifecycle every cloud must pass; `init` flags differ, and so does the form of `ref`. */
async function lifecycle(initArgs: string[], refPattern: RegExp): Promise<void> {
  const { dir, cleanup } = await tempDir('olocus-cli-cloud-');
  try {
    const run = (args: string[]) => cli(args, { cwd: dir, env: env() });
    const init = await run(['init', ...initArgs, '--json']);
    expect(init.code, show(init)).toBe(0);
    const config = JSON.parse(await readFile(join(dir, '.olocus', 'config.json'), 'utf8')) as { backend: { type: string; options: Record<string, unknown> } };
    // No credential of any kind in the config: the provider's default chain finds them.
    expect(JSON.stringify(config)).not.toMatch(/AKID|test-secret|password|credential/i);

    const created = await run(['keys', 'create', '--id', 'release', '--algorithm', 'ECDSA_P256', '--json']);
    expect(created.code, show(created)).toBe(0);
    const shown = await run(['keys', 'show', '--id', 'release', '--json']);
    expect(shown.code, show(shown)).toBe(0);
    expect((JSON.parse(shown.stdout) as { key: { ref: string } }).key.ref).toMatch(refPattern);
    const human = await run(['keys', 'show', '--id', 'release']);
    expect(human.stdout).toMatch(new RegExp(`^ref\\s+${refPattern.source.replace(/^\^/, '')}`, 'm'));

    await writeFile(join(dir, 'build.tar'), randomBytes(100_000));
    const signed = await run(['sign', '--key', 'release', '--in', 'build.tar', '--out', 'build.tar.sig', '--json']);
    expect(signed.code, show(signed)).toBe(0);
    const { signedAt, keyId } = JSON.parse(signed.stdout) as { signedAt: string; keyId: string };
    expect(keyId).toBe('release.v1');

    const verified = await run(['verify', '--key', 'release', '--in', 'build.tar', '--signature', 'build.tar.sig']);
    expect(verified.code, show(verified)).toBe(0);

    const rotated = await run(['keys', 'rotate', '--id', 'release', '--reason', 'quarterly']);
    expect(rotated.code, show(rotated)).toBe(0);
    const after = await run(['keys', 'show', '--id', 'release', '--json']);
    expect((JSON.parse(after.stdout) as { key: { keyId: string } }).key.keyId).toBe('release.v2');

    // The old signature still verifies, dated: only the version Active at signedAt is tried.
    const old = await run(['verify', '--key', 'release', '--in', 'build.tar', '--signature', 'build.tar.sig', '--signed-at', signedAt]);
    expect(old.code, show(old)).toBe(0);
    expect(old.stdout).toMatch(/version 1/);
    // ... and a tampered message does not.
    await writeFile(join(dir, 'other.tar'), randomBytes(100));
    const bad = await run(['verify', '--key', 'release', '--in', 'other.tar', '--signature', 'build.tar.sig', '--signed-at', signedAt]);
    expect(bad.code, show(bad)).toBe(1);

    const signed2 = await run(['sign', '--key', 'release', '--in', 'build.tar', '--out', 'v2.sig', '--json']);
    expect(signed2.code, show(signed2)).toBe(0);
    expect((JSON.parse(signed2.stdout) as { keyId: string }).keyId).toBe('release.v2');

    const audit = await run(['audit', 'verify', '--json']);
    expect(audit.code, show(audit)).toBe(0);
    const report = JSON.parse(audit.stdout) as { audit: { ok: boolean; records: number } };
    expect(report.audit.ok).toBe(true);
    expect(report.audit.records).toBeGreaterThan(5);
  } finally {
    await cleanup();
  }
}

describe('aws-kms through the CLI (local-kms)', () => {
  let kms: Emulator & { endpoint: string };
  beforeAll(async () => {
    kms = await startLocalKms();
  }, 60_000);
  afterAll(async () => {
    await kms?.stop();
  });

  it('init → keys create → sign → verify → keys rotate → verify --signed-at → audit verify; keys show prints the key ARN', async () => {
    await lifecycle(['--backend', 'aws-kms', '--region', AWS_REGION, '--endpoint', kms.endpoint, '--request-timeout-ms', '5000'], new RegExp(`^arn:aws:kms:${AWS_REGION}:${AWS_ACCOUNT_ID}:key/[0-9a-f-]{36}$`));
  }, 180_000);

  it('an endpoint nothing answers on writes no config: init opens the backend before writing', async () => {
    const { dir, cleanup } = await tempDir('olocus-cli-cloud-');
    try {
      const port = await freePort();
      const started = Date.now();
      const r = await cli(['init', '--backend', 'aws-kms', '--region', AWS_REGION, '--endpoint', `http://127.0.0.1:${port}`, '--request-timeout-ms', '500'], { cwd: dir, env: env() });
      expect(r.code, show(r)).toBe(2);
      expect(r.stderr).toMatch(/^olocus-hsm: (DeviceUnavailable|Timeout|InitializationFailed): /m);
      expect(Date.now() - started).toBeLessThan(60_000);
      await expect(readFile(join(dir, '.olocus', 'config.json'))).rejects.toThrow(/ENOENT/);
    } finally {
      await cleanup();
    }
  }, 90_000);
});

describe('gcp-kms through the CLI (gcp-kms-emulator)', () => {
  let emulator: Emulator;
  beforeAll(async () => {
    emulator = await startGcpKmsEmulator();
  }, 60_000);
  afterAll(async () => {
    await emulator?.stop();
  });

  it('init → keys create → sign → verify → keys rotate → verify --signed-at → audit verify; keys show prints the CryptoKeyVersion name', async () => {
    const ring = `ring-${randomBytes(4).toString('hex')}`;
    await lifecycle(
      ['--backend', 'gcp-kms', '--project', 'olocus-test', '--location', 'us-east1', '--key-ring', ring, '--create-key-ring', '--emulator', `127.0.0.1:${emulator.port}`],
      new RegExp(`^projects/olocus-test/locations/us-east1/keyRings/${ring}/cryptoKeys/[A-Za-z0-9_-]+/cryptoKeyVersions/1$`),
    );
  }, 180_000);
});

describe('cloud init flags and packages', () => {
  it('a config naming a backend package that is not installed: BackendNotInstalled naming the package', async () => {
    const { dir, cleanup } = await tempDir('olocus-cli-cloud-');
    try {
      await writeFile(join(dir, 'config.json'), JSON.stringify({ backend: { type: 'acme-kms', package: '@acme/olocus-backend-not-installed', options: {} } }));
      const r = await cli(['--config', 'config.json', 'keys', 'list', '--json'], { cwd: dir, env: env() });
      expect(r.code, show(r)).toBe(2);
      expect(r.stderr).toMatch(/^olocus-hsm: BackendNotInstalled: .*@acme\/olocus-backend-not-installed/m);
      expect((JSON.parse(r.stdout) as { error: { code: string; details: { package: string } } }).error).toMatchObject({ code: 'BackendNotInstalled', details: { package: '@acme/olocus-backend-not-installed' } });
    } finally {
      await cleanup();
    }
  });

  it('refuses a cloud flag for another backend or without --backend, by name, and writes nothing', async () => {
    const { dir, cleanup } = await tempDir('olocus-cli-cloud-');
    try {
      const cases: [string[], RegExp][] = [
        [['--backend', 'gcp-kms', '--project', 'olocus-test', '--location', 'us-east1', '--key-ring', 'r', '--vault-url', 'https://x.vault.azure.net'], /--vault-url applies to --backend azure-keyvault, not to --backend gcp-kms/],
        [['--region', 'eu-west-1'], /--region applies to --backend aws-kms or aws-cloudhsm: give --backend too/],
        [['--backend', 'software', '--max-concurrency', '8'], /--max-concurrency applies to --backend aws-kms or aws-cloudhsm or azure-keyvault or gcp-kms, not to --backend software/],
        [['--backend', 'aws-kms', '--region', 'eu-west-1', '--slot', '1'], /--slot applies to --backend pkcs11/],
        [['--backend', 'azure-keyvault'], /--vault-url is required for --backend azure-keyvault/],
        [['--backend', 'gcp-kms', '--project', 'olocus-test', '--location', 'us-east1'], /--key-ring is required/],
        [['--backend', 'aws-cloudhsm', '--region', 'eu-west-1', '--module', '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so'], /--cluster-id is required/],
        [['--backend', 'gcp-kms', '--project', 'olocus-test', '--location', 'us-east1', '--key-ring', 'r', '--pin-file', 'pin'], /--pin-file applies to --backend pkcs11 and aws-cloudhsm, not to --backend gcp-kms/],
      ];
      for (const [args, message] of cases) {
        const r = await cli(['init', ...args], { cwd: dir, env: env() });
        expect(r.code, `${args.join(' ')}\n${show(r)}`).toBe(2);
        expect(r.stderr, args.join(' ')).toMatch(/^olocus-hsm: InvalidArgument: /m);
        expect(r.stderr, args.join(' ')).toMatch(message);
        await expect(readFile(join(dir, '.olocus', 'config.json')), args.join(' ')).rejects.toThrow(/ENOENT/);
      }
    } finally {
      await cleanup();
    }
  });

  it('init --help lists each shared flag once', async () => {
    const { dir, cleanup } = await tempDir('olocus-cli-cloud-');
    try {
      const r = await cli(['init', '--help'], { cwd: dir, env: env() });
      expect(r.code).toBe(0);
      for (const flag of ['--max-concurrency', '--request-timeout-ms', '--region', '--vault-url', '--hsm', '--key-ring', '--protection-level', '--cluster-id']) {
        expect(r.stdout.match(new RegExp(`^\\s+${flag}[ ,]`, 'gm'))?.length, flag).toBe(1);
      }
      expect(r.stdout).toMatch(/aws-kms, aws-cloudhsm, azure-keyvault, gcp-kms|"aws-kms", "aws-cloudhsm", "azure-keyvault", "gcp-kms"/);
    } finally {
      await cleanup();
    }
  });
});
