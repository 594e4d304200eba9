import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Tests never reach Google or a metadata server. */
export function isolateFromGoogle(): void {
  process.env.METADATA_SERVER_DETECTION = 'none';
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
  delete process.env.GOOGLE_CLOUD_PROJECT;
}

export const INSTALL_HINT = 'bash scripts/emulators/gcp.sh';

/** Where scripts/emulators/gcp.sh puts the emulator. */
export function emulatorBinary(): string {
  const root = process.env.OLOCUS_EMULATORS_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'olocus-emulators');
  const binary = join(root, 'gcp', 'bin', 'server-dual');
  if (!existsSync(binary)) {
    throw new Error(`the Cloud KMS emulator is not installed (${binary} is missing): run \`${INSTALL_HINT}\` from the repository root (needs Go 1.25+ and the Go module proxy)`);
  }
  return binary;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export function waitForPort(port: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

export interface RunningEmulator {
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
  output(): string;
}

/** Starts gcp-kms-emulator's server-dual on free loopback ports (state in memory, gone on stop). */
export async function startEmulator(): Promise<RunningEmulator> {
  const binary = emulatorBinary();
  const port = await freePort();
  const httpPort = await freePort();
  const child = spawn(binary, ['--grpc-port', String(port), '--http-port', String(httpPort), '--log-level', 'warn'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '', IAM_MODE: 'off' },
  });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-20_000)));
  child.stderr!.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-20_000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitForPort(port);
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`the Cloud KMS emulator did not start: ${String(error)}\n${output}`);
  }
  return {
    port,
    process: child,
    output: () => output,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}
