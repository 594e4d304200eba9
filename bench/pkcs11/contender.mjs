// One benchmark contender in its own process (C_Initialize is per process, and each library
// loads the module its own way). Prints one JSON line on stdout.
//   node contender.mjs KIND ALG CONCURRENCY SECONDS
// KIND: pkcs11js (C_SignInit + C_SignAsync on the libuv pool) | pkcs11js-sync (C_SignInit + C_Sign,
// synchronous on the main thread: the module's single-thread rate, with the event loop blocked) |
// graphene | pkcs11js-workers (min(CONCURRENCY, cores) worker threads, each on its own session, loop
// C_SignInit + C_Sign synchronously with no caller and no hand-off: the most a Node process signs
// through pkcs11js on this module and machine) |
// olocus (default: adaptive dispatch) | olocus-inline | olocus-threads (dispatch forced) |
// olocus-tN (signThreads = N). Every contender signs with a TOKEN key (CKA_TOKEN = true, destroyed at
// the end), the kind the library keeps, so that all compare with p11-limit's token-key figure.
// The token comes from SOFTHSM2_CONF / BENCH_MODULE / BENCH_TOKEN and the PIN from BENCH_PIN
// (environment, not argv).
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';

const [kind, alg, concArg, secsArg] = process.argv.slice(2);
const concurrency = Number(concArg);
const seconds = Number(secsArg);
const modulePath = process.env.BENCH_MODULE;
const tokenLabel = process.env.BENCH_TOKEN;
const pin = process.env.BENCH_PIN;

const EC_PARAMS = {
  p256: Buffer.from('06082a8648ce3d030107', 'hex'),
  ed25519: Buffer.from('06032b6570', 'hex'),
};
const ALGORITHM = { p256: 'ECDSA_P256', ed25519: 'Ed25519', rsa2048: 'RSA_2048' };

/** Runs `concurrency` loops of `op` for `seconds`; returns rate, latency percentiles, loop delay. */
async function measure(op) {
  for (let i = 0; i < 20; i++) await op(); // warm up
  const latencies = [];
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  // the histogram has no sample at all when the loop never turns (the synchronous loop): count the
  // lateness of a 5 ms timer too, including the time since its last tick at the end
  const lateness = [];
  let lastTick = performance.now();
  const ticker = setInterval(() => {
    const t = performance.now();
    lateness.push(Math.max(0, t - lastTick - 5));
    lastTick = t;
  }, 5);
  const start = performance.now();
  const end = start + seconds * 1000;
  let ops = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        await op();
        latencies.push(performance.now() - t);
        ops++;
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  delay.disable();
  clearInterval(ticker);
  lateness.push(Math.max(0, performance.now() - lastTick - 5));
  lateness.sort((a, b) => a - b);
  const latenessP99 = lateness[Math.min(lateness.length - 1, Math.floor(0.99 * lateness.length))];
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  return {
    ops,
    opsPerSec: ops / elapsed,
    p50Ms: pct(0.5),
    p99Ms: pct(0.99),
    // the histogram records the whole interval between its timer's runs (resolution + lateness):
    // the delay is what exceeds the 5 ms resolution, as the timer's lateness is
    loopDelayP99Ms: delay.count > 0 ? Math.max(delay.percentile(99) / 1e6 - 5, latenessP99) : latenessP99,
  };
}

async function rawModule(useGraphene, sync = false) {
  if (useGraphene) {
    const graphene = await import('graphene-pk11');
    const mod = graphene.Module.load(modulePath, 'softhsm');
    mod.initialize({ flags: 2 /* CKF_OS_LOCKING_OK */ });
    const slot = [...mod.getSlots(true)].find((s) => s.getToken().label.trim() === tokenLabel);
    const login = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
    login.login(pin, graphene.UserType.USER);
    const keys = generateGraphene(graphene, login);
    const sessions = Array.from({ length: concurrency }, () => slot.open(graphene.SessionFlag.SERIAL_SESSION));
    const free = [...sessions];
    const mech = alg === 'p256' ? 'ECDSA' : alg === 'ed25519' ? 0x1057 : 'SHA256_RSA_PKCS';
    const data = alg === 'p256' ? randomBytes(32) : randomBytes(64);
    const op = () => {
      const s = free.pop();
      return new Promise((resolve, reject) =>
        s.createSign(mech, keys.privateKey).once(data, (err, sig) => {
          free.push(s);
          err ? reject(err) : resolve(sig);
        }),
      );
    };
    const result = await measure(op);
    for (const s of sessions) s.close();
    keys.privateKey.destroy();
    keys.publicKey.destroy();
    login.logout();
    login.close();
    mod.finalize();
    return result;
  }
  const token = await openRawToken(concurrency);
  const { p11, sessions, privateKey } = token;
  const free = [...sessions];
  const mech = { mechanism: SIGN_MECHANISM[alg] };
  const data = randomBytes(SIGN_INPUT_BYTES[alg]);
  const out = () => Buffer.alloc(SIGNATURE_BYTES[alg]);
  const op = sync
    ? async () => {
        // synchronous: C_SignInit + C_Sign on the main thread (each caller yields only a microtask)
        const s = free.pop();
        try {
          p11.C_SignInit(s, mech, privateKey);
          return p11.C_Sign(s, data, out());
        } finally {
          free.push(s);
        }
      }
    : async () => {
        const s = free.pop();
        try {
          p11.C_SignInit(s, mech, privateKey);
          return await p11.C_SignAsync(s, data, out());
        } finally {
          free.push(s);
        }
      };
  const result = await measure(op);
  closeRawToken(token);
  return result;
}

/** What the raw contenders sign: a ready digest (P-256) or a 64-byte message, and the signature size. */
const SIGN_MECHANISM = { p256: 0x1041 /* CKM_ECDSA */, ed25519: 0x1057 /* CKM_EDDSA */, rsa2048: 0x40 /* CKM_SHA256_RSA_PKCS */ };
const SIGN_INPUT_BYTES = { p256: 32, ed25519: 64, rsa2048: 64 };
const SIGNATURE_BYTES = { p256: 64, ed25519: 64, rsa2048: 256 };

/** The token through plain pkcs11js: logged in, a fresh token key pair, and `count` sessions to sign on. */
async function openRawToken(count) {
  const { PKCS11 } = await import('pkcs11js');
  const p11 = new PKCS11();
  p11.load(modulePath);
  p11.C_Initialize({ flags: 2 });
  const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === tokenLabel);
  const login = p11.C_OpenSession(slot, 4 | 2);
  p11.C_Login(login, 1, pin);
  const { privateKey, publicKey } = generatePlain(p11, login);
  const sessions = Array.from({ length: count }, () => p11.C_OpenSession(slot, 4));
  return { p11, login, privateKey, publicKey, sessions };
}

function closeRawToken({ p11, login, privateKey, publicKey, sessions }) {
  for (const s of sessions) p11.C_CloseSession(s);
  p11.C_DestroyObject(login, privateKey);
  p11.C_DestroyObject(login, publicKey);
  p11.C_Logout(login);
  p11.C_CloseSession(login);
  p11.C_Finalize();
}

/** Each worker loops on its own session for the whole sample; the main thread only waits. */
const WORKER_LOOP = `
const { workerData, parentPort } = require('node:worker_threads');
const { PKCS11 } = require(workerData.pkcs11js);
const p11 = new PKCS11();
p11.load(workerData.modulePath);
try { p11.C_Initialize({ flags: 2 }); } catch {} // CKR_CRYPTOKI_ALREADY_INITIALIZED: the process's module is shared
const session = Buffer.from(workerData.session), key = Buffer.from(workerData.key), data = Buffer.from(workerData.data);
let ops = 0;
const end = performance.now() + workerData.seconds * 1000;
while (performance.now() < end) {
  p11.C_SignInit(session, { mechanism: workerData.mechanism }, key);
  p11.C_Sign(session, data, Buffer.allocUnsafe(workerData.outBytes));
  ops++;
}
parentPort.postMessage(ops);`;

async function workerLoops() {
  const threads = Math.min(concurrency, availableParallelism());
  const token = await openRawToken(threads);
  const workerData = {
    pkcs11js: createRequire(import.meta.url).resolve('pkcs11js'),
    modulePath,
    mechanism: SIGN_MECHANISM[alg],
    data: randomBytes(SIGN_INPUT_BYTES[alg]),
    outBytes: SIGNATURE_BYTES[alg],
    seconds,
    key: token.privateKey,
  };
  // warm-up: the same loop for a fifth of the sample, as the other contenders warm up first
  const run = (secs) =>
    Promise.all(
      token.sessions.map(
        (session) =>
          new Promise((resolve, reject) => {
            const worker = new Worker(WORKER_LOOP, { eval: true, workerData: { ...workerData, session, seconds: secs } });
            worker.once('message', (ops) => worker.terminate().then(() => resolve(ops)));
            worker.once('error', reject);
          }),
      ),
    );
  await run(seconds / 5);
  const start = performance.now();
  const counts = await run(seconds);
  const elapsed = (performance.now() - start) / 1000;
  closeRawToken(token);
  const ops = counts.reduce((a, b) => a + b, 0);
  return { ops, opsPerSec: ops / elapsed, threads };
}

function generatePlain(p11, session) {
  const yes = true;
  const priv = [
    { type: 0x108 /* CKA_SIGN */, value: yes },
    { type: 0x2 /* CKA_PRIVATE */, value: yes },
    { type: 0x103 /* CKA_SENSITIVE */, value: yes },
    { type: 0x1 /* CKA_TOKEN */, value: yes },
  ];
  if (alg === 'rsa2048') {
    const pub = [
      { type: 0x121, value: 2048 },
      { type: 0x122, value: Buffer.from([1, 0, 1]) },
      { type: 0x10a, value: yes },
      { type: 0x1, value: yes },
    ];
    const keys = p11.C_GenerateKeyPair(session, { mechanism: 0x0 }, pub, priv);
    return keys;
  }
  const pub = [
    { type: 0x180 /* CKA_EC_PARAMS */, value: EC_PARAMS[alg] },
    { type: 0x10a, value: yes },
    { type: 0x1, value: yes },
  ];
  return p11.C_GenerateKeyPair(session, { mechanism: alg === 'ed25519' ? 0x1055 : 0x1040 }, pub, priv);
}

function generateGraphene(graphene, session) {
  if (alg === 'rsa2048') {
    return session.generateKeyPair(
      graphene.KeyGenMechanism.RSA,
      { keyType: graphene.KeyType.RSA, modulusBits: 2048, publicExponent: Buffer.from([1, 0, 1]), verify: true, token: true },
      { keyType: graphene.KeyType.RSA, sign: true, private: true, sensitive: true, token: true },
    );
  }
  const ed = alg === 'ed25519';
  return session.generateKeyPair(
    ed ? 0x1055 : graphene.KeyGenMechanism.EC,
    { keyType: ed ? 0x40 : graphene.KeyType.EC, paramsEC: EC_PARAMS[alg], verify: true, token: true },
    { keyType: ed ? 0x40 : graphene.KeyType.EC, sign: true, private: true, sensitive: true, token: true },
  );
}

async function olocus(signThreads, dispatch) {
  const { BackendRegistry } = await import('@olocus/hsm-core');
  const registry = new BackendRegistry({ importer: (s) => import(s), env: { ...process.env, OLOCUS_HSM_PIN: pin } });
  const backend = await registry.create({
    type: 'pkcs11',
    options: {
      libraryPath: modulePath,
      tokenLabel,
      pin: { env: 'OLOCUS_HSM_PIN' },
      sessionPool: { minSessions: concurrency, maxSessions: concurrency },
      ...(signThreads === undefined ? {} : { signThreads }),
      ...(dispatch === undefined ? {} : { dispatch }),
    },
  });
  await backend.initialize();
  const id = `bench-${alg}-${process.pid}`;
  const key = await backend.generateKeyPair({ id, algorithm: ALGORITHM[alg] });
  const message = randomBytes(64);
  const result = await measure(() => backend.sign(key, message));
  const m = backend.metrics();
  result.paths = { inline: m.inlineSigns, threads: m.threadSigns, signThreads: m.signThreads, yields: m.dispatch?.yields, thresholdUs: m.dispatch?.thresholdUs, hopUs: m.dispatch?.hopUs, ops: m.dispatch?.ops };
  await backend.destroyKey(key);
  await backend.close();
  return result;
}

const threadsSuffix = /^olocus-t(\d+)$/.exec(kind);
const dispatchSuffix = /^olocus-(inline|threads)$/.exec(kind);
const result =
  kind === 'olocus' || threadsSuffix || dispatchSuffix
    ? await olocus(threadsSuffix ? Number(threadsSuffix[1]) : undefined, dispatchSuffix?.[1])
    : kind === 'pkcs11js-workers'
      ? await workerLoops()
      : await rawModule(kind === 'graphene', kind === 'pkcs11js-sync');
process.stdout.write(JSON.stringify({ kind, alg, concurrency, ...result }) + '\n');
// pkcs11js keeps no handles open after C_Finalize, but be explicit for graphene
process.exit(0);
