import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, tempDir } from './helpers.js';
import { AWS_ACCOUNT_ID, AWS_REGION, freePort, startGcpKmsEmulator, startLocalKms, type Emulator } from './cloud-emulators.js';
import { cloudCliEnv as env, lifecycle, show } from './cloud-lifecycle.js';

/**
 * The CLI over the cloud backends, end to end through dist/bin.js: `init --backend <cloud>` →
 * keys create → sign → verify → keys rotate → verify --signed-at of the old signature → audit
 * verify, against the emulators (local-kms for aws-kms, gcp-kms-emulator for gcp-kms). The
 * backend packages load through core's registry because the config names them.
 */

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
