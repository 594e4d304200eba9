import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Starts the AWS emulators that scripts/emulators/aws.sh installed, each on a free loopback port,
 * for one test file. A missing emulator fails the test with the command that installs it.
 */
export const INSTALL_HINT = 'bash scripts/emulators/aws.sh';
export const ACCOUNT_ID = '111122223333';
export const REGION = 'eu-west-1';

const root = join(process.env.OLOCUS_EMULATORS_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'olocus-emulators'), 'aws');
export const LOCAL_KMS_BIN = join(root, 'bin', 'local-kms');
export const MOTO_BIN = join(root, 'moto-venv', 'bin', 'moto_server');

/** No test reaches a real AWS endpoint or the instance metadata address; the SDK finds these dummy credentials. */
export function useTestCredentials(): void {
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.METADATA_SERVER_DETECTION = 'none';
  process.env.AWS_ACCESS_KEY_ID = 'AKIDTESTONLY000000';
  process.env.AWS_SECRET_ACCESS_KEY = 'test-secret-not-real';
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
  // nothing from the developer's ~/.aws leaks into a test
  process.env.AWS_CONFIG_FILE = join(tmpdir(), 'olocus-no-aws-config');
  process.env.AWS_SHARED_CREDENTIALS_FILE = join(tmpdir(), 'olocus-no-aws-credentials');
  process.env.AWS_REGION = REGION;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export interface Emulator {
  endpoint: string;
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
  /** Output so far, for a failure message. */
  log(): string;
}

async function waitForHttp(url: string, child: ChildProcess, log: () => string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the emulator exited with code ${child.exitCode} before answering:\n${log()}`);
    try {
      await fetch(url, { signal: AbortSignal.timeout(1000) });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 150));
    }
  }
  throw new Error(`the emulator did not answer ${url} within ${timeoutMs} ms:\n${log()}`);
}

function launch(command: string, args: string[], env: Record<string, string>, cleanup?: () => void): { child: ChildProcess; log: () => string; stop: () => Promise<void> } {
  let output = '';
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    cleanup?.();
  };
  return { child, log: () => output, stop };
}

/** local-kms (github.com/nsmithuk/local-kms): plain HTTP, AWS JSON 1.1, state in a temp dir. */
export async function startLocalKms(options: { dataDir?: string; port?: number } = {}): Promise<Emulator & { dataDir: string }> {
  if (!existsSync(LOCAL_KMS_BIN)) throw new Error(`local-kms is not installed at ${LOCAL_KMS_BIN}; run \`${INSTALL_HINT}\` from the repository root`);
  const port = options.port ?? (await freePort());
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'olocus-local-kms-'));
  const owned = options.dataDir === undefined;
  const { child, log, stop } = launch(LOCAL_KMS_BIN, [], { PORT: String(port), KMS_REGION: REGION, KMS_ACCOUNT_ID: ACCOUNT_ID, KMS_DATA_PATH: dataDir }, () => {
    if (owned) rmSync(dataDir, { recursive: true, force: true });
  });
  const endpoint = `http://127.0.0.1:${port}`;
  await waitForHttp(endpoint, child, log);
  return { endpoint, port, process: child, stop, log, dataDir };
}

/** moto_server (PyPI moto[server]): every AWS service on one port; state in memory. */
export async function startMoto(): Promise<Emulator> {
  if (!existsSync(MOTO_BIN)) throw new Error(`moto is not installed at ${MOTO_BIN}; run \`${INSTALL_HINT}\` from the repository root`);
  const port = await freePort();
  const { child, log, stop } = launch(MOTO_BIN, ['-H', '127.0.0.1', '-p', String(port)], { MOTO_ACCOUNT_ID: ACCOUNT_ID });
  const endpoint = `http://127.0.0.1:${port}`;
  await waitForHttp(`${endpoint}/moto-api/`, child, log, 90_000);
  return { endpoint, port, process: child, stop, log };
}
