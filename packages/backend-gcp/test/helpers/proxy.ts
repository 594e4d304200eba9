import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on loopback between the client and a server. `mode` switches at any time:
 * forward (optionally delaying every server→client chunk by `delayMs`, order kept) or hang
 * (accepts and holds everything, forwards nothing: a server that stopped answering).
 */
export class TcpProxy {
  mode: 'forward' | 'hang' = 'forward';
  delayMs = 0;
  port = 0;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly targetPort: number) {}

  async start(): Promise<number> {
    const server = createServer((client) => {
      this.sockets.add(client);
      const upstream = connect(this.targetPort, '127.0.0.1');
      this.sockets.add(upstream);
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
      client.on('data', (chunk: Buffer) => {
        if (this.mode === 'forward') upstream.write(chunk);
      });
      let chain = Promise.resolve();
      upstream.on('data', (chunk: Buffer) => {
        if (this.mode !== 'forward') return;
        const delay = this.delayMs;
        if (delay <= 0) {
          chain = chain.then(() => void client.write(chunk));
          return;
        }
        const due = Date.now() + delay;
        chain = chain.then(() => new Promise<void>((resolve) => setTimeout(() => {
          if (this.mode === 'forward') client.write(chunk);
          resolve();
        }, Math.max(0, due - Date.now()))));
      });
    });
    this.port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
    });
    this.server = server;
    return this.port;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
