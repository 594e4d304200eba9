import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The cloud emulators the backend packages' tests use (installed by scripts/emulators/aws.sh and
 * gcp.sh), started here for the CLI's own end-to-end runs. The few lines that start them are
 * copied from packages/backend-aws/test/emulators.ts and packages/backend-gcp/test/helpers/emulator.ts:
 * a package is used only through its public exports, and test helpers are not exported.
 */

const ROOT = process.env.OLOCUS_EMULATORS_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'olocus-emulators');
export const LOCAL_KMS_BIN = join(ROOT, 'aws', 'bin', 'local-kms');
export const GCP_KMS_BIN = join(ROOT, 'gcp', 'bin', 'server-dual');
export const AWS_REGION = 'eu-west-1';
export const AWS_ACCOUNT_ID = '111122223333';

/**
 * The environment a CLI child gets for the cloud runs: dummy AWS credentials, no metadata
 * service, nothing from the developer's ~/.aws or gcloud, so no test can reach a real cloud.
 */
export function cloudEnv(): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: 'AKIDTESTONLY000000',
    AWS_SECRET_ACCESS_KEY: 'test-secret-not-real',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: join(tmpdir(), 'olocus-no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(tmpdir(), 'olocus-no-aws-credentials'),
    // The SDK warns on every process under Node 20 that a future release needs Node 22: noise in a test's stderr.
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    METADATA_SERVER_DETECTION: 'none',
    GOOGLE_APPLICATION_CREDENTIALS: join(tmpdir(), 'olocus-no-google-credentials.json'),
  };
}

/** Environment keys cleared from the CLI child so that a developer's cloud settings never leak in. */
export const CLOUD_ENV_CLEARED = ['AWS_PROFILE', 'AWS_SESSION_TOKEN', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'GOOGLE_CLOUD_PROJECT', 'CLOUDSDK_CONFIG'];

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function waitForPort(port: number, child: ChildProcess, output: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (child.exitCode !== null) return reject(new Error(`the emulator exited with code ${child.exitCode} before listening:\n${output()}`));
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms:\n${output()}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

export interface Emulator {
  port: number;
  stop(): Promise<void>;
  output(): string;
}

function launch(binary: string, args: string[], env: Record<string, string>, cleanup?: () => void): { child: ChildProcess; output: () => string; stop: () => Promise<void> } {
  let output = '';
  const child = spawn(binary, args, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (d: Buffer) => (output = (output + d.toString()).slice(-8000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    cleanup?.();
  };
  return { child, output: () => output, stop };
}

/** local-kms (github.com/nsmithuk/local-kms) on a free loopback port, its state in a temporary folder. */
export async function startLocalKms(): Promise<Emulator & { endpoint: string }> {
  if (!existsSync(LOCAL_KMS_BIN)) throw new Error(`local-kms is not installed at ${LOCAL_KMS_BIN}; run \`bash scripts/emulators/aws.sh\` from the repository root`);
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'olocus-cli-local-kms-'));
  const { child, output, stop } = launch(LOCAL_KMS_BIN, [], { PORT: String(port), KMS_REGION: AWS_REGION, KMS_ACCOUNT_ID: AWS_ACCOUNT_ID, KMS_DATA_PATH: dataDir }, () =>
    rmSync(dataDir, { recursive: true, force: true }),
  );
  try {
    await waitForPort(port, child, output);
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, endpoint: `http://127.0.0.1:${port}`, output, stop };
}

/** gcp-kms-emulator's server-dual on free loopback ports (state in memory). */
export async function startGcpKmsEmulator(): Promise<Emulator> {
  if (!existsSync(GCP_KMS_BIN)) throw new Error(`the Cloud KMS emulator is not installed at ${GCP_KMS_BIN}; run \`bash scripts/emulators/gcp.sh\` from the repository root (needs Go and the Go module proxy)`);
  const port = await freePort();
  const httpPort = await freePort();
  const { child, output, stop } = launch(GCP_KMS_BIN, ['--grpc-port', String(port), '--http-port', String(httpPort), '--log-level', 'warn'], { IAM_MODE: 'off' });
  try {
    await waitForPort(port, child, output);
  } catch (error) {
    await stop();
    throw error;
  }
  return { port, output, stop };
}
