import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Makes the test vault's TLS certificate (a self-signed CA certificate for 127.0.0.1 and
 * localhost) and exports NODE_EXTRA_CA_CERTS before vitest forks its test processes: Node reads
 * that variable only when a process starts, so setting it inside a test would be too late. TLS
 * verification stays on everywhere; the tests only add one trusted root.
 */
export default function setup(): void {
  // kept (git-ignored) after the run: a process still starting then would read the variable
  const dir = join(dirname(fileURLToPath(import.meta.url)), '..', '.test-results', 'azure-tls');
  mkdirSync(dir, { recursive: true });
  const key = join(dir, 'vault-key.pem');
  const cert = join(dir, 'vault-cert.pem');
  const config = join(dir, 'openssl.cnf');
  writeFileSync(
    config,
    [
      '[req]',
      'distinguished_name = dn',
      'x509_extensions = ext',
      'prompt = no',
      '[dn]',
      'CN = olocus test key vault',
      '[ext]',
      'basicConstraints = critical, CA:TRUE',
      'keyUsage = critical, digitalSignature, keyCertSign',
      'subjectAltName = IP:127.0.0.1, DNS:localhost',
      '',
    ].join('\n'),
  );
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-config', config], {
      stdio: 'pipe',
    });
  } catch (error) {
    throw new Error(`cannot make the test vault's TLS certificate with openssl (apt-get install openssl): ${(error as Error).message}`);
  }
  // keep whatever extra roots the environment already trusts, and add the test vault's
  const previous = process.env.NODE_EXTRA_CA_CERTS;
  const bundle = join(dir, 'ca-bundle.pem');
  const inherited = previous && previous !== bundle && existsSync(previous) ? `${readFileSync(previous, 'utf8').trimEnd()}\n` : '';
  writeFileSync(bundle, inherited + readFileSync(cert, 'utf8'));
  process.env.NODE_EXTRA_CA_CERTS = bundle;
  process.env.OLOCUS_TEST_AZURE_TLS_KEY = key;
  process.env.OLOCUS_TEST_AZURE_TLS_CERT = cert;
  // no test may ever reach a cloud metadata endpoint
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.METADATA_SERVER_DETECTION = 'none';
}
