#!/usr/bin/env node
/**
 * Signing throughput of gcp-kms against its peer, in one run, on gcp-kms-emulator (loopback):
 *   peer: a bare KeyManagementServiceClient.asymmetricSign loop (hash locally, send the digest);
 *   ours: HsmManager.sign through the gcp-kms backend (hash, CRC32C both ways, name check, DER→raw).
 * P-256 and RSA-2048, concurrency 1, 16 and 64; median of 3 rounds (--rounds N; peer and ours alternate),
 * and the median of the per-round ratios (both measured back to back in each round).
 * Then, through a local TCP proxy adding 50 ms to every answer, ours at concurrency 64 against
 * the 1,280 signatures/s that 64 signers at 50 ms each allow. CPU per signature (this process
 * only: the emulator is another process) and the event-loop delay p99 while ours runs.
 *
 *   pnpm --filter @olocus/hsm-backend-gcp build && node packages/backend-gcp/bench/sign-throughput.mjs [--seconds 2] [--rounds 3]
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { KeyManagementServiceClient } from '@google-cloud/kms';
import { credentials } from '@grpc/grpc-js';
import { BackendRegistry, HsmManager } from '@olocus/hsm-core';
import * as gcp from '../dist/index.js';

process.env.METADATA_SERVER_DETECTION = 'none';
const args = process.argv.slice(2);
const seconds = Number(args[args.indexOf('--seconds') + 1] ?? 0) || 2;
const ROUNDS = args.includes('--rounds') ? Number(args[args.indexOf('--rounds') + 1]) : 3;
const CONCURRENCY = [1, 16, 64];
const ALGORITHMS = [
  ['ECDSA_P256', 'sha256'],
  ['RSA_2048', 'sha256'],
];

const root = process.env.OLOCUS_EMULATORS_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'olocus-emulators');
const binary = join(root, 'gcp', 'bin', 'server-dual');
if (!existsSync(binary)) {
  console.error(`gcp-kms-emulator is missing (${binary}): run \`bash scripts/emulators/gcp.sh\``);
  process.exit(1);
}

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const waitPort = async (port) => {
  for (let i = 0; i < 400; i++) {
    const ok = await new Promise((resolve) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), resolve(true)));
      c.once('error', () => (c.destroy(), resolve(false)));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`emulator did not listen on ${port}`);
};

/** The shared delay proxy (bench/delay-proxy.mjs), in its own process: its work never shares the measured event loop. */
async function latencyProxy(targetPort, delayMs) {
  const child = spawn(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'delay-proxy.mjs'), String(targetPort), String(delayMs)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise((ok, fail) => {
    createInterface({ input: child.stdout }).once('line', ok);
    child.once('exit', (code) => fail(new Error(`the delay proxy exited (${code})`)));
  });
  return { port: JSON.parse(line).port, close: async () => child.stdin.end() };
}

const grpcPort = await freePort();
const emulator = spawn(binary, ['--grpc-port', String(grpcPort), '--http-port', String(await freePort()), '--log-level', 'warn'], { stdio: 'ignore' });
await waitPort(grpcPort);

const keyRing = `bench-${randomBytes(3).toString('hex')}`;
const options = (port) => ({ projectId: 'olocus-bench', location: 'us-east1', keyRing, createKeyRing: true, apiEndpoint: '127.0.0.1', port, insecure: true, maxConcurrency: 128 });
const registry = () => new BackendRegistry({ importer: async () => gcp });
async function manager(port) {
  const hsm = new HsmManager({ backend: { type: 'gcp-kms', package: '@olocus/hsm-backend-gcp', options: options(port) } }, { registry: registry() });
  await hsm.initialize();
  return hsm;
}

const hsm = await manager(grpcPort);
const keys = {};
for (const [algorithm] of ALGORITHMS) keys[algorithm] = await hsm.generateKey({ id: `bench-${algorithm}`, algorithm });
const peer = new KeyManagementServiceClient({ apiEndpoint: '127.0.0.1', port: grpcPort, sslCreds: credentials.createInsecure() });

async function loop(concurrency, signOnce) {
  const message = randomBytes(256);
  let count = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await signOnce(message);
        count++;
      }
    }),
  );
  return count / seconds;
}

const peerSign = (algorithm, hash) => (message) =>
  peer.asymmetricSign({ name: keys[algorithm].ref, digest: { [hash]: createHash(hash).update(message).digest() } });
const oursSign = (manager, algorithm) => (message) => manager.sign(keys[algorithm].ref, message);

// warm both paths (connections, public-key cache, JIT)
for (const [algorithm, hash] of ALGORITHMS) {
  await loop(8, peerSign(algorithm, hash));
  await loop(8, oursSign(hsm, algorithm));
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [];
for (const [algorithm, hash] of ALGORITHMS) {
  for (const concurrency of CONCURRENCY) {
    const peerRates = [];
    const ourRates = [];
    const cpu = [];
    const peerCpu = [];
    const p99 = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? ['peer', 'ours'] : ['ours', 'peer'];
      for (const who of order) {
        if (who === 'peer') {
          const before = process.cpuUsage();
          const rate = await loop(concurrency, peerSign(algorithm, hash));
          const used = process.cpuUsage(before);
          peerRates.push(rate);
          peerCpu.push((used.user + used.system) / (rate * seconds));
        } else {
          const histogram = monitorEventLoopDelay({ resolution: 10 });
          histogram.enable();
          const before = process.cpuUsage();
          const rate = await loop(concurrency, oursSign(hsm, algorithm));
          const used = process.cpuUsage(before);
          histogram.disable();
          ourRates.push(rate);
          cpu.push((used.user + used.system) / (rate * seconds));
          p99.push(histogram.percentile(99) / 1e6);
        }
      }
    }
    const row = { algorithm, concurrency, peer: median(peerRates), ours: median(ourRates), cpuUsPerSig: median(cpu), peerCpuUsPerSig: median(peerCpu), loopP99Ms: median(p99) };
    row.ratio = row.ours / row.peer;
    // each round measures both back to back: the ratio within a round is what drift on a shared machine moves least
    const roundRatios = ourRates.map((r, i) => r / peerRates[i]);
    row.pairedRatio = median(roundRatios);
    row.pairedRatioRange = [Math.min(...roundRatios), Math.max(...roundRatios)];
    row.pairedCpuRatio = median(cpu.map((c, i) => c / peerCpu[i]));
    rows.push(row);
    console.error(JSON.stringify(row));
  }
}

// 50 ms added to every answer: 64 signers can reach 64 / 0.05 s = 1,280 signatures/s at best
const proxy = await latencyProxy(grpcPort, 50);
const slow = await manager(proxy.port);
// the bare client behind the same proxy says what this machine allows, so a shortfall is not blamed on the library
const slowPeer = new KeyManagementServiceClient({ apiEndpoint: '127.0.0.1', port: proxy.port, sslCreds: credentials.createInsecure() });
const slowPeerSign = (message) => slowPeer.asymmetricSign({ name: keys.ECDSA_P256.ref, digest: { sha256: createHash('sha256').update(message).digest() } });
await loop(64, oursSign(slow, 'ECDSA_P256'));
await loop(64, slowPeerSign);
const latencyRates = [];
const latencyPeerRates = [];
for (let round = 0; round < ROUNDS; round++) {
  latencyRates.push(await loop(64, oursSign(slow, 'ECDSA_P256')));
  latencyPeerRates.push(await loop(64, slowPeerSign));
}
await slowPeer.close();
const latency = { algorithm: 'ECDSA_P256', concurrency: 64, addedMs: 50, ours: median(latencyRates), peer: median(latencyPeerRates), target: 0.8 * 1280 };
console.error(JSON.stringify(latency));

await slow.close();
await proxy.close();
await hsm.close();
await peer.close();
emulator.kill('SIGTERM');

const fmt = (n, d = 0) => n.toFixed(d);
console.log(`| algorithm | concurrency | bare client sig/s | gcp-kms via HsmManager sig/s | ratio of medians | per-round ratio, median (range) | CPU µs/sig bare | CPU µs/sig ours | per-round CPU ratio | event-loop p99 ms (ours) |`);
console.log(`| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`);
for (const r of rows) console.log(`| ${r.algorithm} | ${r.concurrency} | ${fmt(r.peer)} | ${fmt(r.ours)} | ${fmt(r.ratio, 3)} | ${fmt(r.pairedRatio, 3)} (${r.pairedRatioRange.map((x) => fmt(x, 3)).join('–')}) | ${fmt(r.peerCpuUsPerSig)} | ${fmt(r.cpuUsPerSig)} | ${fmt(r.pairedCpuRatio, 3)} | ${fmt(r.loopP99Ms, 1)} |`);
console.log('');
console.log(`With 50 ms added per answer (local proxy), ECDSA_P256, 64 signers: ${fmt(latency.ours)} sig/s (target ≥ ${fmt(latency.target)} = 80% of 1,280); the bare client behind the same proxy: ${fmt(latency.peer)} sig/s.`);
