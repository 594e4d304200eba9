// The cloud benchmarks' delay process: a TCP proxy in front of an emulator that holds every answer back
// a fixed time, in its own process so its work never shares the measured event loop.
// Prints one JSON line with its port; exits when stdin closes.
import { connect, createServer } from 'node:net';

const [, , targetArg, delayArg] = process.argv;
const target = Number(targetArg);
const delayMs = Number(delayArg ?? 50);
const proxy = createServer((client) => {
  const upstream = connect(target, '127.0.0.1');
  // Nagle's algorithm off on both legs: with it, a small delayed write waits for the ACK of the
  // previous one, which the client delays (40 ms on Linux), and one HTTP/2 connection carrying
  // 64 streams of small frames stalled at half the rate the added 50 ms allow
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
  client.pipe(upstream);
  upstream.on('data', (chunk) => setTimeout(() => client.writable && client.write(chunk), delayMs));
  upstream.on('end', () => setTimeout(() => client.end(), delayMs));
});
await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
process.stdout.write(`${JSON.stringify({ port: proxy.address().port })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
