// Health checks under load: does a HealthMonitor running every 1 s (and every 100 ms, a stress
// case) lower signing throughput? SoftHSM ECDSA P-256 through @olocus/hsm-backend-pkcs11 at a
// fixed concurrency, one process, one backend.
//
// Method (the machine is shared and noisy, so the design has to carry the answer):
// - modes: `none`; `none-b`, a second "no checks" mode (an A/A control: it shows the noise
//   floor); a HealthMonitor every 1 s (`health-1s`), every 100 ms (`health-100ms`, stress) and
//   every 10 ms (`health-10ms`, an amplifier: ~100 checks/s make the cost of one check large
//   enough to measure);
// - every round runs each mode once, in the order of a Williams design (each mode takes each
//   position and follows each other mode equally often across the design), so drift and
//   carry-over hit every mode alike;
// - per round, each mode's rate is divided by `none`'s in the same round (a paired ratio); the
//   tables give the median of the paired ratios with a 95 % bootstrap interval;
// - the cost of one check = (1 - ratio of `health-10ms`) / its checks per second; from it, the
//   ratio expected at one check per second (with the interval carried through);
// - other processes are watched through /proc/stat: a round in which anything outside this
//   process used more than --max-foreign of a core is discarded and run again (at most
//   8 x --rounds attempts), so only undisturbed rounds are compared;
// - CPU per signature (all threads of this process) and the checks' own CPU are reported too.
//
//   node bench/health-bench.mjs [--seconds 1] [--rounds 30] [--concurrency 8] [--max-foreign 0.05]
//                               [--modes none,none-b,health-1s,health-100ms,health-10ms] [--json out.json]
//   (pnpm --filter @olocus/hsm-monitoring bench; build backend-pkcs11 and monitoring first)
import { register } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';

// The token helpers of @olocus/hsm-backend-pkcs11/testing register their cleanup with vitest's
// afterAll; outside vitest a tiny stand-in collects it and runs it at the end.
const cleanups = [];
globalThis.__olocusBenchCleanups = cleanups;
const stub = 'export const afterAll = (fn) => globalThis.__olocusBenchCleanups.push(fn);';
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier === 'vitest') return { url: 'data:text/javascript,' + encodeURIComponent(${JSON.stringify(stub)}), shortCircuit: true };
  return next(specifier, context);
}`;
register('data:text/javascript,' + encodeURIComponent(hooks));
// The token folder goes away however the run ends (the cleanups are synchronous rmSync calls).
process.once('exit', () => {
  for (const fn of cleanups.splice(0)) fn();
});

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '30' },
    concurrency: { type: 'string', default: '8' },
    'max-foreign': { type: 'string', default: '0.05' },
    modes: { type: 'string', default: 'none,none-b,health-1s,health-100ms,health-10ms' },
    json: { type: 'string' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);
const maxForeign = Number(values['max-foreign']);
for (const [name, v] of Object.entries({ seconds, rounds, concurrency, 'max-foreign': maxForeign })) {
  if (!(v > 0)) throw new Error(`--${name}: expected a positive number, got ${values[name]}`);
}

// Busy CPU time of the whole machine, in seconds (/proc/stat counts in USER_HZ = 1/100 s).
const machineBusyS = () => {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + steal) / 100;
};

const { createToken, SOFTHSM_LIB } = await import('@olocus/hsm-test-support');
const { Pkcs11Backend } = await import('@olocus/hsm-backend-pkcs11');
const { HealthMonitor } = await import('../dist/index.js');

const token = createToken('health-bench');
const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label }, { pin: token.pin });
await backend.initialize();
await backend.generateKeyPair({ id: 'bench-p256', algorithm: 'ECDSA_P256' });
const data = new TextEncoder().encode('olocus health bench message');

const ALL_MODES = [
  { name: 'none', intervalMs: 0 },
  { name: 'none-b', intervalMs: 0 },
  { name: 'health-1s', intervalMs: 1000 },
  { name: 'health-100ms', intervalMs: 100 },
  { name: 'health-10ms', intervalMs: 10 },
];
const AMPLIFIER = 'health-10ms';
// --modes picks a subset (a focused A/B run: --modes none,health-1s); `none` is always the reference.
const wanted = new Set(['none', ...values.modes.split(',').map((m) => m.trim())]);
for (const m of wanted) if (!ALL_MODES.some((x) => x.name === m)) throw new Error(`--modes: unknown mode ${m} (known: ${ALL_MODES.map((x) => x.name).join(', ')})`);
const MODES = ALL_MODES.filter((m) => wanted.has(m.name));

/** Williams design: sequences in which every mode takes every position and follows every other mode equally often. */
function williams(n) {
  const first = [0];
  for (let i = 1, lo = 1, hi = n - 1; i < n; i++) first.push(i % 2 ? lo++ : hi--);
  const rows = Array.from({ length: n }, (_, r) => first.map((x) => (x + r) % n));
  return n % 2 ? [...rows, ...rows.map((row) => [...row].reverse())] : rows;
}
const DESIGN = williams(MODES.length);

// One monitor per mode; the canary key is created before measuring (its first-use cost is not
// what is measured).
const monitors = new Map();
for (const m of MODES) {
  if (!m.intervalMs) continue;
  const monitor = new HealthMonitor({ backend, intervalMs: m.intervalMs });
  const r = await monitor.performHealthCheck();
  if (r.status !== 'Healthy') console.error(`warning: ${m.name} warm-up health is ${r.status}`);
  monitors.set(m.name, monitor);
}

// The checks' own cost with the backend idle: CPU time (all threads of the process) per check.
const probe = new HealthMonitor({ backend });
await probe.performHealthCheck();
for (let i = 0; i < 50; i++) await probe.performHealthCheck();
const probeRuns = 500;
const cpu0 = process.cpuUsage();
const wall0 = performance.now();
for (let i = 0; i < probeRuns; i++) await probe.performHealthCheck();
const cpu = process.cpuUsage(cpu0);
const checkCpuUs = (cpu.user + cpu.system) / probeRuns;
const checkWallUs = ((performance.now() - wall0) * 1000) / probeRuns;

async function sample(mode) {
  const monitor = monitors.get(mode.name);
  let checks = 0;
  let checkMs = 0;
  const notHealthy = new Set();
  const off = monitor?.onReport((r) => {
    checks++;
    checkMs += r.durationMs;
    for (const c of r.checks) if (c.status !== 'Healthy') notHealthy.add(`${c.name} ${c.status}`);
  });
  const cpuStart = process.cpuUsage();
  const busyStart = machineBusyS();
  monitor?.start();
  const end = performance.now() + seconds * 1000;
  let ops = 0;
  const worker = async () => {
    while (performance.now() < end) {
      await backend.sign('bench-p256', data);
      ops++;
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - started) / 1000;
  await monitor?.stop();
  const used = process.cpuUsage(cpuStart);
  const cpuS = (used.user + used.system) / 1e6;
  const foreign = (machineBusyS() - busyStart - cpuS) / elapsed;
  off?.();
  return { rate: ops / elapsed, ops, checks, checkMs, notHealthy, cpuS, elapsed, foreign };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
};
// 95 % bootstrap interval of a statistic (deterministic: a fixed-seed PRNG, 4000 resamples).
const bootstrap = (xs, stat = median) => {
  let seed = 0x2545f491;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const out = [];
  for (let i = 0; i < 4000; i++) out.push(stat(xs.map(() => xs[Math.floor(rand() * xs.length)])));
  return [quantile(out, 0.025), quantile(out, 0.975)];
};

// warm-up (pool sessions, sign threads, JIT)
for (const m of MODES) await sample(m);

const results = Object.fromEntries(MODES.map((m) => [m.name, { rates: [], ratios: [], checks: [], checkMs: [], cpuS: [], ops: [], elapsed: [], notHealthy: new Set() }]));
let attempts = 0;
let discarded = 0;
for (let r = 0; r < rounds; ) {
  if (attempts++ >= rounds * 8) {
    console.error(`gave up waiting for a quiet machine after ${attempts - 1} attempts: ${r} clean rounds`);
    break;
  }
  const order = DESIGN[r % DESIGN.length].map((i) => MODES[i]);
  const round = {};
  for (const m of order) round[m.name] = await sample(m);
  const foreign = Math.max(...Object.values(round).map((s) => s.foreign));
  if (foreign > maxForeign) {
    discarded++;
    console.error(`round discarded: other processes used ${foreign.toFixed(2)} of a core`);
    if (discarded % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 5000));
    continue;
  }
  r++;
  for (const m of MODES) {
    const s = round[m.name];
    const out = results[m.name];
    out.rates.push(s.rate);
    out.ratios.push(s.rate / round.none.rate);
    out.checks.push(s.checks);
    out.checkMs.push(s.checkMs);
    out.cpuS.push(s.cpuS);
    out.ops.push(s.ops);
    out.elapsed.push(s.elapsed);
    for (const n of s.notHealthy) out.notHealthy.add(n);
  }
  console.error(`round ${r}/${rounds} (${order.map((m) => m.name).join(' ')}): ` + MODES.map((m) => `${m.name} ${round[m.name].rate.toFixed(0)}/s`).join(', '));
}
const clean = results.none.rates.length;
if (clean < Math.min(3, rounds)) throw new Error(`only ${clean} undisturbed rounds: run again on a quieter machine (or raise --max-foreign)`);

const round4 = (x) => Number(x.toFixed(4));
const baseMedian = median(results.none.rates);
const rows = MODES.map((m) => {
  const r = results[m.name];
  const checksPerSec = r.checks.reduce((a, b) => a + b, 0) / r.elapsed.reduce((a, b) => a + b, 0);
  const processCores = median(r.cpuS.map((c, i) => c / r.elapsed[i]));
  return {
    mode: m.name,
    intervalMs: m.intervalMs,
    medianSignsPerSec: Math.round(median(r.rates)),
    cpuUsPerSign: Number(median(r.cpuS.map((c, i) => (c * 1e6) / r.ops[i])).toFixed(1)),
    ratioOfMedians: round4(median(r.rates) / baseMedian),
    pairedRatioMedian: round4(median(r.ratios)),
    pairedRatioCi95: bootstrap(r.ratios).map(round4),
    pairedRatioIqr: [round4(quantile(r.ratios, 0.25)), round4(quantile(r.ratios, 0.75))],
    checksPerSec: Number(checksPerSec.toFixed(2)),
    medianCheckMs: r.checks.some((n) => n > 0) ? Number(median(r.checkMs.map((ms, i) => ms / Math.max(1, r.checks[i]))).toFixed(3)) : 0,
    // The most the checks can take from signing: their CPU per second / the process's CPU per second.
    checkCpuShare: Number(((checksPerSec * checkCpuUs) / 1e6 / processCores).toFixed(5)),
    notHealthyChecks: [...r.notHealthy].sort(),
    rates: r.rates.map((x) => Math.round(x)),
  };
});

// The amplifier: loss per check/s, and the ratio it predicts at 1 check/s.
const amp = rows.find((r) => r.mode === AMPLIFIER);
const perCheck = (ratio) => (1 - ratio) / amp.checksPerSec;
const amplifier = amp && {
  mode: AMPLIFIER,
  lossPerCheck: perCheck(amp.pairedRatioMedian),
  lossPerCheckCi: [perCheck(amp.pairedRatioCi95[1]), perCheck(amp.pairedRatioCi95[0])],
};
if (amplifier) amplifier.predicted1s = { ratio: round4(1 - amplifier.lossPerCheck), ci95: [round4(1 - amplifier.lossPerCheckCi[1]), round4(1 - amplifier.lossPerCheckCi[0])] };

console.log(
  `P-256, ${concurrency} concurrent signers, ${seconds} s per sample, ${clean} undisturbed rounds (${discarded} discarded: other processes above ${maxForeign} of a core), ${availableParallelism()} cores, Node ${process.version}`,
);
console.log(`one health check, backend idle: ${checkCpuUs.toFixed(0)} µs CPU, ${checkWallUs.toFixed(0)} µs wall`);
console.log('');
console.log("| mode | checks/s | check ms (median, under load) | checks' CPU share | median sign/s | CPU µs / sign | paired ratio: median (95 % CI) [IQR] | checks not Healthy |");
console.log('| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |');
for (const r of rows) {
  const share = r.checkCpuShare ? `${(r.checkCpuShare * 100).toFixed(3)} %` : '–';
  const ci = (xs) => xs.map((x) => x.toFixed(3)).join('–');
  const paired = r.mode === 'none' ? '1 (reference)' : `${r.pairedRatioMedian.toFixed(3)} (${ci(r.pairedRatioCi95)}) [${r.pairedRatioIqr.map((x) => x.toFixed(3)).join(', ')}]`;
  const notHealthy = r.intervalMs ? r.notHealthyChecks.join(', ') || 'none' : '–';
  console.log(`| ${r.mode} | ${r.checksPerSec} | ${r.medianCheckMs || '–'} | ${share} | ${r.medianSignsPerSec} | ${r.cpuUsPerSign} | ${paired} | ${notHealthy} |`);
}
if (amplifier) {
  const { lossPerCheck, lossPerCheckCi, predicted1s } = amplifier;
  console.log('');
  console.log(
    `${AMPLIFIER}: ${(lossPerCheck * 100).toFixed(4)} % of throughput per check/s (95 % CI ${(lossPerCheckCi[0] * 100).toFixed(4)} … ${(lossPerCheckCi[1] * 100).toFixed(4)} %) ` +
      `=> ratio expected at 1 check/s: ${predicted1s.ratio.toFixed(4)} (95 % CI ${predicted1s.ci95.map((x) => x.toFixed(4)).join('–')})`,
  );
}
console.log('');
for (const r of rows) console.log(`${r.mode}: ${r.rates.join(', ')}`);
const report = { seconds, rounds: clean, discarded, maxForeign, concurrency, cores: availableParallelism(), node: process.version, checkCpuUs, checkWallUs, rows, ...(amplifier ? { amplifier } : {}) };
if (values.json) writeFileSync(values.json, JSON.stringify(report, null, 2));

await backend.close();
