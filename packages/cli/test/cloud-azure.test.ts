import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { azureBackendConfig } from '../src/init-azure.js';
import { lifecycle } from './cloud-lifecycle.js';
// The Azure package's wire-level Key Vault (its README: Lowkey Vault is not served by this
// machine's registries). A test helper of that package, used here as a test fixture only.
import { startFakeKeyVault, type FakeKeyVault } from '../../backend-azure/test/fake-key-vault.js';

/**
 * azure-keyvault through the binary, against the Key Vault REST fake over HTTPS: the CLI child
 * trusts the fake's certificate through NODE_EXTRA_CA_CERTS (TLS checks stay on) and gets its
 * token from the fake's managed-identity endpoint through DefaultAzureCredential, as it would
 * from App Service. No credential goes into the config.
 */

const tls = mkdtempSync(join(tmpdir(), 'olocus-cli-azure-tls-'));
let vault: FakeKeyVault;
let childEnv: Record<string, string>;

beforeAll(async () => {
  const key = join(tls, 'vault-key.pem');
  const cert = join(tls, 'vault-cert.pem');
  const config = join(tls, 'openssl.cnf');
  writeFileSync(
    config,
    ['[req]', 'distinguished_name = dn', 'x509_extensions = ext', 'prompt = no', '[dn]', 'CN = olocus cli test key vault', '[ext]', 'basicConstraints = critical, CA:TRUE', 'keyUsage = critical, digitalSignature, keyCertSign', 'subjectAltName = IP:127.0.0.1, DNS:localhost', ''].join('\n'),
  );
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-config', config], { stdio: 'pipe' });
  } catch (error) {
    throw new Error(`cannot make the test vault's TLS certificate with openssl (apt-get install openssl): ${(error as Error).message}`);
  }
  const bundle = join(tls, 'ca-bundle.pem');
  writeFileSync(bundle, readFileSync(cert, 'utf8'));
  // What the fake reads to serve HTTPS (and to check that its certificate is trusted).
  process.env.OLOCUS_TEST_AZURE_TLS_KEY = key;
  process.env.OLOCUS_TEST_AZURE_TLS_CERT = cert;
  process.env.NODE_EXTRA_CA_CERTS = bundle;
  vault = await startFakeKeyVault();
  childEnv = { NODE_EXTRA_CA_CERTS: bundle, IDENTITY_ENDPOINT: vault.identityEndpoint, IDENTITY_HEADER: vault.identityHeader };
}, 60_000);

afterAll(async () => {
  await vault?.close();
  rmSync(tls, { recursive: true, force: true });
});

describe('azure-keyvault through the CLI (wire-level Key Vault fake)', () => {
  it('init → keys create → sign → verify → keys rotate → verify --signed-at → audit verify; keys show prints the versioned key id', async () => {
    // The section init --backend azure-keyvault --vault-url URL --hsm writes, plus the one option
    // only a test double needs: the SDK checks that the vault's auth challenge names
    // vault.azure.net, which a vault on 127.0.0.1 cannot (init has no flag for it, on purpose).
    const section = azureBackendConfig({ backend: 'azure-keyvault', vaultUrl: vault.vaultUrl, hsm: true });
    expect(section).toEqual({ type: 'azure-keyvault', options: { vaultUrl: vault.vaultUrl, hsm: true } });
    await lifecycle({ backend: { ...section, options: { ...section.options, disableChallengeResourceVerification: true } } }, /^https:\/\/127\.0\.0\.1:\d+\/keys\/[0-9a-zA-Z-]+\/[0-9a-f]{32}$/, childEnv);
  }, 180_000);
});
