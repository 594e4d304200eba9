// PKCS#11 signing benchmark, side by side in one run on one SoftHSM token:
//   p11-limit (C, no library: the module's own rate) with TOKEN keys — the reference, the kind of
//   key the library keeps — and with session keys as a second line; plain pkcs11js loops
//   (synchronous C_SignInit + C_Sign on the main thread, and C_SignInit + C_SignAsync), worker
//   threads (as many as cores) looping synchronously with no caller at all — the most a Node
//   process gets through pkcs11js, the ceiling of every Node contender — graphene-pk11,
//   and @olocus/hsm-backend-pkcs11 — for ECDSA P-256, Ed25519 and RSA-2048 at several
//   concurrencies. Every Node contender signs with a token key. Ratios are to p11-limit's
//   token-key figure at the same concurrency (threads = callers) and to its best figure.
//   Rounds are interleaved and medians reported, because this machine is shared.
// usage: pnpm --filter @olocus/bench bench:pkcs11 [--seconds 3] [--rounds 3] [--algs p256,ed25519,rsa2048] [--concurrency 1,2,4,16]
//        [--olocus-threads 0,4]  (extra contenders: the backend with signThreads = N; 'olocus' is its default)
//        [--olocus-dispatch inline,threads]  (extra contenders: the backend with dispatch forced)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir, cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).flatMap((a, i, all) => (a.startsWith('--') ? [[a.slice(2), all[i + 1]]] : [])),
);
const seconds = Number(args.seconds ?? 3);
const rounds = Number(args.rounds ?? 3);
const algs = (args.algs ?? 'p256,ed25519,rsa2048').split(',');
const concurrencies = (args.concurrency ?? '1,2,4,16').split(',').map(Number);
const modulePath = process.env.BENCH_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';
const limitSource = resolve(process.env.P11_LIMIT_SRC ?? join(here, '../../../shared/bench/p11-limit.c'));

function fail(message) {
  console.error(`bench: ${message}`);
  process.exit(2);
}
if (!existsSync(modulePath)) fail(`${modulePath} not found: apt-get install softhsm2`);
if (!existsSync('/usr/include/p11-kit-1/p11-kit/pkcs11.h')) fail('p11-kit header missing: apt-get install libp11-kit-dev');
// p11-limit is a measuring tool kept outside the repository; without it the other contenders run
// and the ratio column compares against the best of them instead.
const haveLimit = existsSync(limitSource);
if (!haveLimit) {
  console.error(`bench: p11-limit not found at ${limitSource} (set P11_LIMIT_SRC to shared/bench/p11-limit.c); running without the module's own rate — ratios are to the best other contender`);
}

const work = mkdtempSync(join(tmpdir(), 'olocus-bench-'));
const tokens = join(work, 'tokens');
mkdirSync(tokens);
const conf = join(work, 'softhsm2.conf');
writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
const label = 'olocus-bench';
// A throwaway token for this run only: p11-limit takes its PIN as an argument (it is the shared
// reference tool), so the PIN is random, used for nothing else, and the token is deleted at the end.
const pin = randomBytes(8).toString('hex');
const env = {
  ...process.env,
  SOFTHSM2_CONF: conf,
  BENCH_MODULE: modulePath,
  BENCH_TOKEN: label,
  BENCH_PIN: pin,
  BENCH_SO_PIN: randomBytes(8).toString('hex'),
  UV_THREADPOOL_SIZE: String(Math.max(4, ...concurrencies)),
};

try {
  execFileSync(process.execPath, [join(here, 'init-token.mjs'), modulePath, label], { env, stdio: 'inherit' });
  const limit = join(work, 'p11-limit');
  if (haveLimit) execFileSync('cc', ['-O2', '-I/usr/include/p11-kit-1', '-o', limit, limitSource, '-ldl', '-lpthread'], { stdio: 'inherit' });

  // --olocus-threads 0,4 adds contenders olocus-t0, olocus-t4: the backend with signThreads = N
  const extra = args['olocus-threads'] ? String(args['olocus-threads']).split(',').map((n) => `olocus-t${Number(n)}`) : [];
  const dispatches = args['olocus-dispatch'] ? String(args['olocus-dispatch']).split(',').map((d) => `olocus-${d}`) : [];
  const contenders = [...(haveLimit ? ['p11-limit-token', 'p11-limit-session'] : []), 'pkcs11js-sync', 'pkcs11js', 'pkcs11js-workers', 'graphene', 'olocus', ...dispatches, ...extra];
  const reference = haveLimit ? 'p11-limit-token' : 'best other contender';
  const samples = new Map(); // key -> [result]
  const total = rounds * algs.length * concurrencies.length * contenders.length;
  let done = 0;
  for (let round = 0; round < rounds; round++) {
    for (const alg of algs) {
      for (const conc of concurrencies) {
        // rotate the order each round so no contender always runs first or last
        const order = contenders.map((_, i) => contenders[(i + round) % contenders.length]);
        for (const kind of order) {
          process.stderr.write(`\rbench: round ${round + 1}/${rounds} ${alg} c=${conc} ${kind.padEnd(17)} [${++done}/${total}]   `);
          const result = kind.startsWith('p11-limit-') ? runLimit(limit, alg, conc, kind.slice('p11-limit-'.length)) : runNode(kind, alg, conc);
          const key = `${kind}|${alg}|${conc}`;
          samples.set(key, [...(samples.get(key) ?? []), result]);
        }
      }
    }
  }
  process.stderr.write('\n');

  const median = (values) => {
    const v = values.filter((x) => x !== undefined).sort((a, b) => a - b);
    return v.length ? v[Math.floor((v.length - 1) / 2)] : undefined;
  };
  const rows = [];
  for (const alg of algs) {
    const referenceKinds = haveLimit ? ['p11-limit-token'] : contenders.filter((k) => !k.startsWith('olocus'));
    const referenceAt = (c) => Math.max(...referenceKinds.map((k) => median(samples.get(`${k}|${alg}|${c}`).map((r) => r.opsPerSec))));
    const limitBest = Math.max(...concurrencies.map(referenceAt));
    for (const conc of concurrencies) {
      for (const kind of contenders) {
        const runs = samples.get(`${kind}|${alg}|${conc}`);
        const ops = median(runs.map((r) => r.opsPerSec));
        rows.push({
          alg,
          concurrency: conc,
          kind,
          opsPerSec: Math.round(ops),
          ratioToReference: ops / referenceAt(conc),
          ratioToLimitBest: ops / limitBest,
          p50Ms: median(runs.map((r) => r.p50Ms)),
          p99Ms: median(runs.map((r) => r.p99Ms)),
          loopDelayP99Ms: median(runs.map((r) => r.loopDelayP99Ms)),
          // olocus only: where its signatures were made (inline / threads) and the dispatch figures, last round
          ...(runs.at(-1)?.paths ? { paths: runs.at(-1).paths } : {}),
        });
      }
    }
  }
  const fmt = (x, d = 2) => (x === undefined ? '–' : x.toFixed(d));
  const lines = [
    `PKCS#11 sign benchmark — SoftHSM ${softhsmVersion()}, ${cpus().length} cores, ${seconds} s per sample, median of ${rounds} interleaved rounds, UV_THREADPOOL_SIZE=${env.UV_THREADPOOL_SIZE}`,
    '',
    `| alg | conc | contender | sign/s | ratio to ${reference}, same conc | ratio to ${reference} best | p50 ms | p99 ms | event-loop delay p99 ms |`,
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.alg} | ${r.concurrency} | ${r.kind} | ${r.opsPerSec} | ${fmt(r.ratioToReference)} | ${fmt(r.ratioToLimitBest)} | ${fmt(r.p50Ms)} | ${fmt(r.p99Ms)} | ${fmt(r.loopDelayP99Ms)} |`),
  ];
  console.log(lines.join('\n'));
  const outDir = join(here, '..', 'out');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'pkcs11.json'), JSON.stringify({ seconds, rounds, rows }, null, 2));
} finally {
  rmSync(work, { recursive: true, force: true });
}

function runLimit(limit, alg, conc, keyKind) {
  const r = spawnSync(limit, [modulePath, label, pin, String(conc), String(seconds), alg, keyKind], { env, encoding: 'utf8' });
  if (r.status !== 0) fail(`p11-limit ${alg} ${conc} ${keyKind}: ${r.stderr}`);
  const m = /ops_per_s=(\d+)/.exec(r.stdout);
  return { opsPerSec: Number(m[1]) };
}

function runNode(kind, alg, conc) {
  const r = spawnSync(process.execPath, [join(here, 'contender.mjs'), kind, alg, String(conc), String(seconds)], { env, encoding: 'utf8' });
  if (r.status !== 0) fail(`${kind} ${alg} ${conc} failed: ${r.stderr.split('\n').slice(0, 5).join(' ')}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function softhsmVersion() {
  try {
    return execFileSync('softhsm2-util', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}
