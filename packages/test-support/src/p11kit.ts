import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { SOFTHSM_LIB } from './libraries.js';

/**
 * `p11-kit server` exposing one SoftHSM token on a unix socket: a stand-in for a network HSM.
 * The server forks a child per client connection, so it runs in its own process group and is
 * killed as a group (killing only the listener would leave the connection alive).
 */
export class P11KitServer {
  private child: ChildProcess | undefined;

  constructor(
    readonly socket: string,
    readonly tokenLabel: string,
  ) {}

  get address(): string {
    return `unix:path=${this.socket}`;
  }

  async start(): Promise<void> {
    const child = spawn('p11-kit', ['server', '-f', '--provider', SOFTHSM_LIB, '-n', this.socket, `pkcs11:token=${this.tokenLabel}`], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: process.env,
    });
    this.child = child;
    let output = '';
    child.stdout?.on('data', (d) => (output += String(d)));
    child.stderr?.on('data', (d) => (output += String(d)));
    // the server prints P11_KIT_SERVER_ADDRESS once it listens
    const deadline = Date.now() + 10_000;
    while (!output.includes('P11_KIT_SERVER_ADDRESS')) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`p11-kit server did not start: ${output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    if (!existsSync(this.socket)) throw new Error(`p11-kit server socket ${this.socket} missing`);
  }

  /**
   * SIGSTOP to the whole process group: the HSM freezes without closing its connections (the
   * server forks a child per connection, so stopping only the listener would not freeze them).
   */
  freeze(): void {
    this.signal('SIGSTOP');
  }

  /** SIGCONT to the whole process group: a frozen HSM answers again. */
  thaw(): void {
    this.signal('SIGCONT');
  }

  private signal(name: NodeJS.Signals): void {
    if (this.child?.pid === undefined) throw new Error('p11-kit server is not running');
    process.kill(-this.child.pid, name);
  }

  /** SIGKILL to the whole process group: the HSM "loses power". */
  kill(): void {
    if (this.child?.pid !== undefined) {
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    this.child = undefined;
  }
}
