#!/usr/bin/env node
// Signing throughput on aws-kms against local-kms on loopback: a bare @aws-sdk/client-kms Sign
// loop (the peer) and this backend through HsmManager, in one run. ECDSA P-256 and RSA-2048 at
// concurrency 1, 16 and 64, median of 3 rounds (--rounds N; order alternated), the ratio of the
// medians and the median of the per-round ratios (both measured back to back); then 64 signers
// through a proxy (own process) that adds 50 ms to every answer. Reports CPU per signature in this
// process (local-kms runs in its own) and the event-loop delay p99.
//
//   bash scripts/emulators/aws.sh
//   pnpm --filter @olocus/hsm-core build && pnpm --filter @olocus/hsm-backend-aws build
//   node packages/backend-aws/bench/kms-sign.mjs [--seconds 2] [--rounds 3] [--json out.json]
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const SECONDS = Number(opt('seconds', '2'));
const ROUNDS = Number(opt('rounds', '3'));
const CONCURRENCY = [1, 16, 64];
const DELAY_MS = 50;
const REGION = 'eu-west-1';
const ACCOUNT = '111122223333';

process.env.AWS_EC2_METADATA_DISABLED = 'true';
process.env.AWS_ACCESS_KEY_ID = 'AKIDBENCHONLY00000';
process.env.AWS_SECRET_ACCESS_KEY = 'bench-secret-not-real';
process.env.AWS_CONFIG_FILE = join(tmpdir(), 'olocus-no-aws-config');
process.env.AWS_SHARED_CREDENTIALS_FILE = join(tmpdir(), 'olocus-no-aws-credentials');

const bin = join(process.env.OLOCUS_EMULATORS_DIR ?? join(homedir(), '.cache', 'olocus-emulators'), 'aws', 'bin', 'local-kms');
if (!existsSync(bin)) {
  console.error(`local-kms is not installed at ${bin}; run \`bash scripts/emulators/aws.sh\``);
  process.exit(1);
}

const freePort = () =>
  new Promise((ok) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });

async function startLocalKms() {
  const port = await freePort();
  const data = mkdtempSync(join(tmpdir(), 'olocus-bench-kms-'));
  const child = spawn(bin, [], { env: { ...process.env, PORT: String(port), KMS_REGION: REGION, KMS_ACCOUNT_ID: ACCOUNT, KMS_DATA_PATH: data }, stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}`);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { port, stop: () => (child.kill('SIGTERM'), rmSync(data, { recursive: true, force: true })) };
}

async function startDelayProxy(target) {
  const child = spawn(process.execPath, [join(here, '..', '..', '..', 'bench', 'delay-proxy.mjs'), String(target), String(DELAY_MS)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise((ok, fail) => {
    createInterface({ input: child.stdout }).once('line', ok);
    child.once('exit', (code) => fail(new Error(`the delay proxy exited (${code})`)));
  });
  return { ...JSON.parse(line), stop: () => child.stdin.end() };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function measure(op, concurrency, seconds = SECONDS) {
  const histogram = monitorEventLoopDelay({ resolution: 5 });
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  const cpu0 = process.cpuUsage();
  histogram.enable();
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        await op();
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  histogram.disable();
  const cpu = process.cpuUsage(cpu0);
  return { rate: done / elapsed, cpuUsPerSig: (cpu.user + cpu.system) / done, loopP99Ms: histogram.percentile(99) / 1e6 };
}

async function main() {
  const { awsKmsBackendFactory } = await import(join(pkg, 'dist', 'index.js'));
  const { BackendRegistry, HsmManager } = await import('@olocus/hsm-core');
  const { KMSClient, SignCommand } = await import('@aws-sdk/client-kms');
  const { NodeHttpHandler } = await import('@smithy/node-http-handler');

  const kms = await startLocalKms();
  const proxy = await startDelayProxy(kms.port);
  const results = { when: new Date().toISOString(), node: process.version, seconds: SECONDS, rounds: ROUNDS, throughput: [], delayed: [] };
  const manager = async (port) => {
    const options = { region: REGION, endpoint: `http://127.0.0.1:${port}`, accountId: ACCOUNT, maxConcurrency: 64, algorithms: ['ECDSA_P256', 'RSA_2048'], deletionWindowDays: 7 };
    const hsm = new HsmManager({ backend: { type: 'aws-kms', options } }, { registry: new BackendRegistry().register(awsKmsBackendFactory) });
    await hsm.initialize();
    return hsm;
  };
  try {
    const hsm = await manager(kms.port);
    // the peer gets the same socket budget as the backend, so neither is capped by the SDK's default agent
    const bare = new KMSClient({ region: REGION, endpoint: `http://127.0.0.1:${kms.port}`, requestHandler: new NodeHttpHandler({ httpAgent: new Agent({ keepAlive: true, maxSockets: 64 }) }) });
    const message = randomBytes(64);
    for (const [algorithm, awsAlg] of [['ECDSA_P256', 'ECDSA_SHA_256'], ['RSA_2048', 'RSASSA_PKCS1_V1_5_SHA_256']]) {
      const handle = await hsm.generateKey({ id: `bench.${algorithm}.${Date.now()}`, algorithm });
      // the peer hashes too and sends the digest: both sides do the same work per signature
      const bareOp = () => bare.send(new SignCommand({ KeyId: handle.ref, Message: createHash('sha256').update(message).digest(), MessageType: 'DIGEST', SigningAlgorithm: awsAlg }));
      const oursOp = () => hsm.sign(handle, message);
      await measure(bareOp, 16, 0.5); // warm-up: connections, JIT
      await measure(oursOp, 16, 0.5);
      for (const concurrency of CONCURRENCY) {
        const bareRuns = [];
        const oursRuns = [];
        for (let round = 0; round < ROUNDS; round++) {
          if (round % 2 === 0) {
            bareRuns.push(await measure(bareOp, concurrency));
            oursRuns.push(await measure(oursOp, concurrency));
          } else {
            oursRuns.push(await measure(oursOp, concurrency));
            bareRuns.push(await measure(bareOp, concurrency));
          }
        }
        const row = {
          algorithm,
          concurrency,
          bareRate: median(bareRuns.map((r) => r.rate)),
          oursRate: median(oursRuns.map((r) => r.rate)),
          bareCpuUs: median(bareRuns.map((r) => r.cpuUsPerSig)),
          oursCpuUs: median(oursRuns.map((r) => r.cpuUsPerSig)),
          bareLoopP99Ms: median(bareRuns.map((r) => r.loopP99Ms)),
          oursLoopP99Ms: median(oursRuns.map((r) => r.loopP99Ms)),
        };
        row.ratio = row.oursRate / row.bareRate;
        row.cpuRatio = row.oursCpuUs / row.bareCpuUs;
        // each round measures both back to back: the ratio within a round is what drift on a shared machine moves least
        const roundRatios = oursRuns.map((r, i) => r.rate / bareRuns[i].rate);
        const roundCpuRatios = oursRuns.map((r, i) => r.cpuUsPerSig / bareRuns[i].cpuUsPerSig);
        row.pairedRatio = median(roundRatios);
        row.pairedRatioRange = [Math.min(...roundRatios), Math.max(...roundRatios)];
        row.pairedCpuRatio = median(roundCpuRatios);
        results.throughput.push(row);
        console.log(`${algorithm} c=${concurrency}: bare ${row.bareRate.toFixed(0)}/s, ours ${row.oursRate.toFixed(0)}/s, ratio ${row.ratio.toFixed(3)}; CPU ${row.oursCpuUs.toFixed(0)} vs ${row.bareCpuUs.toFixed(0)} µs/sig (${row.cpuRatio.toFixed(3)}); loop p99 ${row.oursLoopP99Ms.toFixed(1)} vs ${row.bareLoopP99Ms.toFixed(1)} ms; per-round ratio median ${row.pairedRatio.toFixed(3)} (${row.pairedRatioRange.map((x) => x.toFixed(3)).join('–')}), CPU ${row.pairedCpuRatio.toFixed(3)}`);
      }
    }
    bare.destroy();
    await hsm.close();

    // 64 signers behind 50 ms: the ideal is 64 / 0.05 s = 1,280 signatures/s
    const delayed = await manager(proxy.port);
    const key = await delayed.generateKey({ id: `bench.delayed.${Date.now()}`, algorithm: 'ECDSA_P256' });
    await measure(() => delayed.sign(key, message), 64, 1);
    const runs = [];
    for (let round = 0; round < ROUNDS; round++) runs.push(await measure(() => delayed.sign(key, message), 64, Math.max(SECONDS, 3)));
    const row = { algorithm: 'ECDSA_P256', concurrency: 64, addedMs: DELAY_MS, rate: median(runs.map((r) => r.rate)), ideal: 64 / (DELAY_MS / 1000), cpuUs: median(runs.map((r) => r.cpuUsPerSig)), loopP99Ms: median(runs.map((r) => r.loopP99Ms)) };
    row.ofIdeal = row.rate / row.ideal;
    results.delayed.push(row);
    console.log(`+${DELAY_MS} ms, 64 signers: ${row.rate.toFixed(0)}/s = ${(row.ofIdeal * 100).toFixed(1)}% of ${row.ideal}/s; CPU ${row.cpuUs.toFixed(0)} µs/sig; loop p99 ${row.loopP99Ms.toFixed(1)} ms`);
    await delayed.close();
  } finally {
    proxy.stop();
    kms.stop();
  }
  const json = opt('json');
  if (json) writeFileSync(json, `${JSON.stringify(results, null, 2)}\n`);
  console.log(JSON.stringify(results));
  process.exit(0);
}

await main();
