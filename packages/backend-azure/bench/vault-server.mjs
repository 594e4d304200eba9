// The benchmark's vault process: the project's wire-level Key Vault (test/fake-key-vault.ts,
// transpiled by the caller) and a TCP proxy adding a fixed delay to every answer, so the
// vault's work never shares the measured process's event loop. Prints one JSON line.
import { connect, createServer } from 'node:net';
import { pathToFileURL } from 'node:url';

const [, , fakeModule, delayArg] = process.argv;
const delayMs = Number(delayArg ?? 50);
const { startFakeKeyVault } = await import(pathToFileURL(fakeModule).href);
const fake = await startFakeKeyVault();

// answers are held back delayMs; requests pass at once
const proxy = createServer((client) => {
  const upstream = connect(fake.port, '127.0.0.1');
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
  client.pipe(upstream);
  upstream.on('data', (chunk) => setTimeout(() => client.writable && client.write(chunk), delayMs));
  upstream.on('end', () => setTimeout(() => client.end(), delayMs));
});
await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));

process.stdout.write(`${JSON.stringify({ port: fake.port, delayedPort: proxy.address().port, identityEndpoint: fake.identityEndpoint, identityHeader: fake.identityHeader })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
