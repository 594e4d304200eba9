#!/usr/bin/env node
// Signing throughput on azure-keyvault: a bare CryptographyClient.sign loop (the peer) against
// this backend through HsmManager, in one run, against the project's wire-level Key Vault on
// loopback (Lowkey Vault's jar is not served here; see README). EC P-256 and RSA-2048 at
// concurrency 1, 16 and 64, median of 3 rounds, ratios; then 64 signers through a proxy that
// adds 50 ms to every answer. Reports CPU per signature (this process) and event-loop delay p99.
//
//   pnpm --filter @olocus/hsm-core build && pnpm --filter @olocus/hsm-backend-azure build
//   node packages/backend-azure/bench/sign-throughput.mjs [--seconds 2] [--json out.json]
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const root = resolve(pkg, '../..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const SECONDS = Number(opt('seconds', '2'));
const ROUNDS = 3;
const CONCURRENCY = [1, 16, 64];
const DELAY_MS = 50;

// NODE_EXTRA_CA_CERTS is read when node starts: make the vault's certificate, then run again with it.
if (!process.env.OLOCUS_TEST_AZURE_TLS_CERT) {
  const dir = join(pkg, '.test-results', 'bench-tls');
  mkdirSync(dir, { recursive: true });
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=olocus bench vault', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-addext', 'basicConstraints=critical,CA:TRUE'], { stdio: 'pipe' });
  const previous = process.env.NODE_EXTRA_CA_CERTS;
  const bundle = join(dir, 'ca-bundle.pem');
  writeFileSync(bundle, (previous && existsSync(previous) ? `${readFileSync(previous, 'utf8').trimEnd()}\n` : '') + readFileSync(cert, 'utf8'));
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), ...args], {
    stdio: 'inherit',
    env: { ...process.env, NODE_EXTRA_CA_CERTS: bundle, OLOCUS_TEST_AZURE_TLS_KEY: key, OLOCUS_TEST_AZURE_TLS_CERT: cert },
  });
  child.on('exit', (code) => process.exit(code ?? 1));
} else {
  await main();
}

async function startVault() {
  const out = join(pkg, '.test-results', 'bench-fake-key-vault.mjs');
  execFileSync(join(root, 'node_modules', '.bin', 'esbuild'), [join(pkg, 'test', 'fake-key-vault.ts'), '--format=esm', '--platform=node', `--outfile=${out}`, '--log-level=warning']);
  const child = spawn(process.execPath, [join(here, 'vault-server.mjs'), out, String(DELAY_MS)], { stdio: ['pipe', 'pipe', 'inherit'], env: process.env });
  const line = await new Promise((resolveLine, reject) => {
    createInterface({ input: child.stdout }).once('line', resolveLine);
    child.once('exit', (code) => reject(new Error(`the vault process exited (${code})`)));
  });
  return { ...JSON.parse(line), stop: () => child.stdin.end() };
}

function median(xs) {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** Runs `concurrency` loops of `op` for SECONDS; returns signatures/s, CPU µs per signature, loop delay p99 ms. */
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
  const { AzureKeyVaultBackend, azureBackendFactory } = await import(join(pkg, 'dist', 'index.js'));
  const { BackendRegistry, HsmManager } = await import('@olocus/hsm-core');
  const { CryptographyClient, KeyClient } = await import('@azure/keyvault-keys');
  const { DefaultAzureCredential } = await import('@azure/identity');
  void AzureKeyVaultBackend;

  const vault = await startVault();
  process.env.IDENTITY_ENDPOINT = vault.identityEndpoint;
  process.env.IDENTITY_HEADER = vault.identityHeader;
  const results = { when: new Date().toISOString(), node: process.version, seconds: SECONDS, rounds: ROUNDS, throughput: [], delayed: [] };

  const setup = async (port) => {
    const vaultUrl = `https://127.0.0.1:${port}`;
    const options = { vaultUrl, disableChallengeResourceVerification: true, maxConcurrency: 64, requestTimeoutMs: 30_000 };
    const hsm = new HsmManager({ backend: { type: 'azure-keyvault', options } }, { registry: new BackendRegistry().register(azureBackendFactory) });
    await hsm.initialize();
    const sdk = new KeyClient(vaultUrl, new DefaultAzureCredential(), { disableChallengeResourceVerification: true });
    return { hsm, sdk };
  };

  try {
    const direct = await setup(vault.port);
    const message = randomBytes(64);
    for (const [algorithm, azureAlg] of [['ECDSA_P256', 'ES256'], ['RSA_2048', 'RS256']]) {
      const handle = await direct.hsm.generateKey({ id: `bench.${algorithm}.${Date.now()}`, algorithm });
      const bare = new CryptographyClient(await direct.sdk.getKey(handle.metadata.name, { version: handle.metadata.version }), new DefaultAzureCredential(), { disableChallengeResourceVerification: true });
      // the peer hashes too: both sides do the same work per signature
      const bareOp = () => bare.sign(azureAlg, createHash('sha256').update(message).digest());
      const oursOp = () => direct.hsm.sign(handle, message);
      await measure(bareOp, 16, 0.5); // warm-up: connections, tokens, JIT
      await measure(oursOp, 16, 0.5);
      for (const concurrency of CONCURRENCY) {
        const bareRuns = [];
        const oursRuns = [];
        for (let round = 0; round < ROUNDS; round++) {
          // alternate the order so drift on the shared machine hits both sides
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
        results.throughput.push(row);
        console.log(`${algorithm} c=${concurrency}: bare ${row.bareRate.toFixed(0)}/s, ours ${row.oursRate.toFixed(0)}/s, ratio ${row.ratio.toFixed(3)}, CPU ${row.oursCpuUs.toFixed(0)} vs ${row.bareCpuUs.toFixed(0)} µs/sig, loop p99 ${row.oursLoopP99Ms.toFixed(1)} ms`);
      }
    }
    await direct.hsm.close();

    // 64 signers behind 50 ms: the ideal is 64 / 0.05 s = 1,280 signatures/s
    const delayed = await setup(vault.delayedPort);
    const key = await delayed.hsm.generateKey({ id: `bench.delayed.${Date.now()}`, algorithm: 'ECDSA_P256' });
    const bareDelayed = new CryptographyClient(await delayed.sdk.getKey(key.metadata.name, { version: key.metadata.version }), new DefaultAzureCredential(), { disableChallengeResourceVerification: true });
    const bareOp = () => bareDelayed.sign('ES256', createHash('sha256').update(message).digest());
    const oursOp = () => delayed.hsm.sign(key, message);
    await measure(bareOp, 64, 1);
    await measure(oursOp, 64, 1);
    const bareRuns = [];
    const oursRuns = [];
    const seconds = Math.max(SECONDS, 3);
    for (let round = 0; round < ROUNDS; round++) {
      if (round % 2 === 0) {
        bareRuns.push(await measure(bareOp, 64, seconds));
        oursRuns.push(await measure(oursOp, 64, seconds));
      } else {
        oursRuns.push(await measure(oursOp, 64, seconds));
        bareRuns.push(await measure(bareOp, 64, seconds));
      }
    }
    const row = {
      algorithm: 'ECDSA_P256',
      concurrency: 64,
      addedMs: DELAY_MS,
      ideal: 64 / (DELAY_MS / 1000),
      rate: median(oursRuns.map((r) => r.rate)),
      bareRate: median(bareRuns.map((r) => r.rate)),
      cpuUs: median(oursRuns.map((r) => r.cpuUsPerSig)),
      bareCpuUs: median(bareRuns.map((r) => r.cpuUsPerSig)),
      loopP99Ms: median(oursRuns.map((r) => r.loopP99Ms)),
    };
    row.ofIdeal = row.rate / row.ideal;
    row.bareOfIdeal = row.bareRate / row.ideal;
    row.ratio = row.rate / row.bareRate;
    results.delayed.push(row);
    console.log(`+${DELAY_MS} ms, 64 signers: ours ${row.rate.toFixed(0)}/s = ${(row.ofIdeal * 100).toFixed(1)}% of ${row.ideal}/s; bare ${row.bareRate.toFixed(0)}/s = ${(row.bareOfIdeal * 100).toFixed(1)}%; ratio ${row.ratio.toFixed(3)}; CPU ${row.cpuUs.toFixed(0)} vs ${row.bareCpuUs.toFixed(0)} µs/sig, loop p99 ${row.loopP99Ms.toFixed(1)} ms`);
    await delayed.hsm.close();
  } finally {
    vault.stop();
  }
  const json = opt('json');
  if (json) writeFileSync(json, `${JSON.stringify(results, null, 2)}\n`);
  console.log(JSON.stringify(results));
  process.exit(0);
}
