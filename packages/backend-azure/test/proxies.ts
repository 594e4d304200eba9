import { readFileSync } from 'node:fs';
import { request as httpsRequest, createServer as createHttpsServer } from 'node:https';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';

/**
 * A TCP proxy in front of the test vault. `hang()` makes it a black hole: connections are
 * accepted and bytes read, but nothing is forwarded or answered, as a vault behind a dead
 * network path looks to a client.
 */
export interface TcpProxy {
  port: number;
  hang(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number, delayMs = 0): Promise<TcpProxy> {
  let hung = false;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    if (hung) {
      client.resume();
      return;
    }
    const upstream = connect(targetPort, '127.0.0.1');
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    const forward = (from: Socket, to: Socket) =>
      from.on('data', (chunk: Buffer) => {
        if (hung) return;
        if (delayMs > 0) setTimeout(() => to.writable && to.write(chunk), delayMs);
        else to.write(chunk);
      });
    forward(client, upstream);
    forward(upstream, client);
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    hang: () => {
      hung = true;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r(undefined)));
    },
  };
}

/**
 * An HTTPS proxy (the test vault's certificate) that answers chosen requests with 429 and a
 * Retry-After header, as Key Vault does when a vault's request limits are exceeded, and
 * forwards everything else.
 */
export interface ThrottlingProxy {
  port: number;
  /** The next `count` requests whose path matches get 429 with `Retry-After: retryAfterSeconds`. */
  throttle(match: RegExp, count: number, retryAfterSeconds: number): void;
  readonly throttled: number[];
  close(): Promise<void>;
}

export async function startThrottlingProxy(targetPort: number): Promise<ThrottlingProxy> {
  let rule: { match: RegExp; left: number; retryAfter: number } | undefined;
  const throttled: number[] = [];
  const tls = { key: readFileSync(process.env.OLOCUS_TEST_AZURE_TLS_KEY!), cert: readFileSync(process.env.OLOCUS_TEST_AZURE_TLS_CERT!) };
  const server = createHttpsServer(tls, (req, res) => {
    if (rule && rule.left > 0 && rule.match.test(req.url ?? '') && req.headers.authorization) {
      rule.left--;
      throttled.push(Date.now());
      req.resume();
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': String(rule.retryAfter) });
      res.end(JSON.stringify({ error: { code: 'Throttled', message: 'Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached' } }));
      return;
    }
    // the client's Host header is kept, so the vault names keys by the proxy's address
    const upstream = httpsRequest({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    throttle: (match, count, retryAfterSeconds) => {
      rule = { match, left: count, retryAfter: retryAfterSeconds };
    },
    throttled,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(() => r(undefined)));
    },
  };
}
