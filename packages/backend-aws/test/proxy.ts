import { createServer as createHttpServer, request, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, connect, type Server as TcpServer, type Socket } from 'node:net';

/**
 * A TCP proxy in front of an emulator that can stop forwarding: connections are accepted and
 * bytes are read, but nothing reaches the emulator and nothing comes back (a hung service).
 */
export class TcpProxy {
  private server: TcpServer | undefined;
  private readonly sockets = new Set<Socket>();
  hung = false;
  port = 0;

  constructor(private readonly targetPort: number) {}

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createTcpServer((client) => {
      this.sockets.add(client);
      client.on('close', () => this.sockets.delete(client));
      client.on('error', () => undefined);
      if (this.hung) return; // read nothing, answer nothing
      const upstream = connect(this.targetPort, '127.0.0.1');
      this.sockets.add(upstream);
      upstream.on('close', () => this.sockets.delete(upstream));
      upstream.on('error', () => client.destroy());
      client.on('data', (chunk) => {
        if (!this.hung) upstream.write(chunk);
      });
      upstream.on('data', (chunk) => {
        if (!this.hung) client.write(chunk);
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const address = this.server.address();
    this.port = typeof address === 'object' && address ? address.port : 0;
    return this;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

export type Injection = (target: string, body: string) => { status: number; type: string; message: string } | undefined;

/**
 * An HTTP proxy that forwards AWS JSON requests to an emulator, and can answer some of them
 * itself with an AWS error (throttling, access denied, rejected credentials) or add a delay.
 */
export class HttpFaultProxy {
  private server: HttpServer | undefined;
  inject: Injection | undefined;
  /** Rewrites a successful upstream JSON answer (e.g. a cluster's state and HSMs). */
  rewrite: ((target: string, body: string) => string) | undefined;
  delayMs = 0;
  /** A delay for some operations only (by X-Amz-Target), added to `delayMs`. */
  delayFor: ((target: string) => number) | undefined;
  port = 0;
  readonly seen: string[] = [];
  /** Requests being handled now, and the most at once: what the client really had in flight. */
  inFlight = 0;
  maxInFlight = 0;

  constructor(private readonly targetPort: number) {}

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    this.server = createHttpServer((req, res) => void this.handle(req, res));
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const address = this.server.address();
    this.port = typeof address === 'object' && address ? address.port : 0;
    return this;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const target = String(req.headers['x-amz-target'] ?? '');
    this.seen.push(target);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    res.once('close', () => this.inFlight--);
    const delay = this.delayMs + (this.delayFor?.(target) ?? 0);
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const fault = this.inject?.(target, body.toString());
    if (fault) {
      res.writeHead(fault.status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': 'proxy-injected' });
      res.end(JSON.stringify({ __type: fault.type, message: fault.message }));
      return;
    }
    const upstream = request(
      { host: '127.0.0.1', port: this.targetPort, method: req.method, path: req.url, headers: { ...req.headers, host: `127.0.0.1:${this.targetPort}` } },
      (answer) => {
        const rewrite = this.rewrite;
        if (!rewrite || answer.statusCode !== 200) {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          return;
        }
        const parts: Buffer[] = [];
        answer.on('data', (c: Buffer) => parts.push(c));
        answer.on('end', () => {
          const text = rewrite(target, Buffer.concat(parts).toString());
          const headers = { ...answer.headers, 'content-length': String(Buffer.byteLength(text)) };
          delete headers['transfer-encoding'];
          res.writeHead(200, headers);
          res.end(text);
        });
      },
    );
    upstream.on('error', () => {
      res.destroy();
    });
    upstream.end(body);
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
