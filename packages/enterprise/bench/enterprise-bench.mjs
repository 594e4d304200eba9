// The cost of policy enforcement and the scaling of a pool, side by side in one run:
//  1. signing through EnterpriseKeyManager.signWithPolicyEnforcement (key policy, Cedar decision
//     over a realistic store — 20 global policies, 100 applications with 5 policies each — rate
//     limit check, durable audit record) against audited HsmManager.sign (the same SoftHSM token,
//     the same backend instance, the same kind of audit log), for RSA-2048, Ed25519 and P-256, at
//     concurrency 16; the two modes alternate within each round (order rotated per round) so
//     machine noise hits them alike; medians of the rounds and the ratio. Targets: >= 0.90 for
//     RSA-2048 and Ed25519, >= 0.75 for P-256. Also the Cedar decision's p50/p99.
//  2. a pool of two tokens (one key replicated by wrap/unwrap) against a pool of one, P-256.
//
//   node bench/enterprise-bench.mjs [--seconds 2] [--rounds 3] [--concurrency 16] [--algs Ed25519,...] [--skip-pool] [--json]
//   (pnpm --filter @olocus/hsm-enterprise bench; build core, backend-pkcs11, rotation,
//    compliance and enterprise first)
import { register } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';

// The token helpers register their cleanup with vitest's afterAll; outside vitest a stand-in
// collects it and runs it at the end.
const cleanups = [];
globalThis.__olocusBenchCleanups = cleanups;
const stub = 'export const afterAll = (fn) => globalThis.__olocusBenchCleanups.push(fn);';
const hooks = `export async function resolve(specifier, context, next) {
  if (specifier === 'vitest') return { url: 'data:text/javascript,' + encodeURIComponent(${JSON.stringify(stub)}), shortCircuit: true };
  return next(specifier, context);
}`;
register('data:text/javascript,' + encodeURIComponent(hooks));

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '16' },
    algs: { type: 'string', default: 'RSA_2048,Ed25519,ECDSA_P256' },
    'skip-pool': { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);
const log = values.json ? () => undefined : (...a) => console.error(...a);

let enterprise;
try {
  enterprise = await import(new URL('../dist/index.js', import.meta.url).href);
} catch (error) {
  console.error(`cannot load the built package (${error.message}); build it first: pnpm --filter @olocus/hsm-enterprise... build`);
  process.exit(2);
}
const { CedarAuthorizer, EnterpriseKeyManager, HsmPool, Pkcs11Replicator } = enterprise;
const { HsmManager, BackendRegistry } = await import('@olocus/hsm-core');
const { openRotation } = await import('@olocus/hsm-rotation');
const { openAuditLog, auditorFor } = await import('@olocus/hsm-compliance');
const { createToken, SOFTHSM_LIB } = await import('@olocus/hsm-test-support');
const { Pkcs11Backend } = await import('@olocus/hsm-backend-pkcs11');

const work = mkdtempSync(join(tmpdir(), 'olocus-enterprise-bench-'));
cleanups.push(() => rmSync(work, { recursive: true, force: true }));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const results = { machine: { node: process.version, cpus: cpus().length, note: 'shared machine: other work ran at the same time' }, params: { seconds, rounds, concurrency } };

/** Runs `op` from `concurrency` loops for `seconds`; operations per second. */
async function throughput(op) {
  let count = 0;
  const until = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        await op();
        count++;
      }
    }),
  );
  return count / seconds;
}

// ---------- a realistic policy store ----------
function globalPolicies() {
  const out = [];
  for (let i = 0; i < 10; i++) out.push(`forbid (principal, action == Olocus::Action::"sign", resource) when { context has classification && context.classification == "level-${i}-secret" };`);
  for (let i = 0; i < 5; i++) out.push(`permit (principal in Olocus::Group::"ops-${i}", action == Olocus::Action::"export-public", resource);`);
  for (let i = 0; i < 5; i++) out.push(`forbid (principal, action, resource) when { resource.hasTag("quarantine-${i}") } unless { context has ticketId };`);
  return [{ file: 'global.cedar', text: out.join('\n') }];
}
function appPolicies(app) {
  return [
    {
      file: `${app}.cedar`,
      text: [
        `permit (principal == Olocus::Application::"${app}", action in [Olocus::Action::"sign", Olocus::Action::"verify"], resource in Olocus::Application::"${app}");`,
        `permit (principal in Olocus::Group::"${app}-team", action == Olocus::Action::"sign", resource in Olocus::Application::"${app}") when { context has purpose && context.purpose == "invoice" };`,
        `permit (principal is Olocus::Caller, action == Olocus::Action::"rotate", resource in Olocus::Application::"${app}") when { principal.roles.contains("key-admin") };`,
        `forbid (principal, action == Olocus::Action::"sign", resource in Olocus::Application::"${app}") when { context has sourceAddress && context.sourceAddress.isInRange(ip("192.0.2.0/24")) };`,
        `permit (principal in Olocus::Group::"security-officers", action == Olocus::Action::"destroy", resource in Olocus::Application::"${app}") when { context has approvals && context.approvals >= 2 };`,
      ].join('\n'),
    },
  ];
}

// ---------- 1. enforcement against audited HsmManager.sign ----------
const token = createToken('ent-bench-a');
const tokenB = createToken('ent-bench-b');
const backendA = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, sessionPool: { minSessions: 2, maxSessions: concurrency } }, { pin: token.pin });
await backendA.initialize();

const authorizer = new CedarAuthorizer();
authorizer.loadGlobal(globalPolicies());
const apps = Array.from({ length: 100 }, (_, i) => `app${String(i).padStart(3, '0')}`);
for (const app of apps) authorizer.loadApplication(app, appPolicies(app));

const pool = new HsmPool({ members: [{ name: 'a', backend: backendA }], startHealthChecks: false });
let manager;
const poolBackend = EnterpriseKeyManager.poolBackend(pool, () => manager);
await poolBackend.initialize();
const rotation = await openRotation({ storage: { kind: 'sqlite', path: join(work, 'registry.db') }, backend: poolBackend });
const entLog = await openAuditLog({ storage: { kind: 'sqlite', path: join(work, 'audit-enterprise.db') } });
manager = new EnterpriseKeyManager({ pool, rotation, authorizer, audit: entLog });

const registry = new BackendRegistry();
registry.register({ type: 'bench-shared', parseOptions: () => ({}), create: () => backendA });
const baseLog = await openAuditLog({ storage: { kind: 'sqlite', path: join(work, 'audit-baseline.db') } });
const hsm = new HsmManager({ backend: { type: 'bench-shared' } }, { registry, auditor: auditorFor(baseLog, { actor: 'bench' }) });
await hsm.initialize();

const ALGORITHMS = [
  ['RSA_2048', 0.9],
  ['Ed25519', 0.9],
  ['ECDSA_P256', 0.75],
];
results.enforcement = {};
for (const [algorithm, target] of ALGORITHMS.filter(([a]) => values.algs.split(',').includes(a))) {
  const app = { RSA_2048: 'app000', Ed25519: 'app001', ECDSA_P256: 'app002' }[algorithm];
  await manager.generateApplicationKey(app, { algorithm, allowedOperations: ['sign', 'verify'], rateLimits: { perKey: { limit: 1_000_000, per: '1s' }, perCaller: { limit: 1_000_000, per: '1s' } } }, { actor: 'bench' });
  const keyId = `${app}.v1`;
  const data = randomBytes(256);
  const context = { principal: { type: 'Application', id: app }, purpose: 'bench', sourceAddress: '10.0.0.1' };
  const modes = {
    baseline: () => hsm.sign(keyId, data),
    enforced: () => manager.signWithPolicyEnforcement(app, data, context),
  };
  await throughput(modes.baseline);
  await throughput(modes.enforced);
  const per = { baseline: [], enforced: [] };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? ['enforced', 'baseline'] : ['baseline', 'enforced'];
    for (const mode of order) per[mode].push(await throughput(modes[mode]));
  }
  const baseline = median(per.baseline);
  const enforced = median(per.enforced);
  results.enforcement[algorithm] = { baselineOpsPerSec: baseline, enforcedOpsPerSec: enforced, ratio: enforced / baseline, target, rounds: per };
  log(`${algorithm}: audited HsmManager.sign ${baseline.toFixed(0)}/s, signWithPolicyEnforcement ${enforced.toFixed(0)}/s, ratio ${(enforced / baseline).toFixed(3)} (target ${target})`);
}

// the decision alone, on the same store (one application's preparsed set: 20 + 5 policies):
// cached (an identical request within the cache TTL) and evaluated by Cedar every time
const request = { principal: { type: 'Application', id: 'app050' }, action: 'sign', resource: { application: 'app050', keyId: 'app050.v1', algorithm: 'ECDSA_P256', version: 1, tags: {} }, context: { purpose: 'bench', sourceAddress: '10.0.0.1' } };
const uncachedAuthorizer = new CedarAuthorizer({ decisionCacheMs: 0 });
uncachedAuthorizer.loadGlobal(globalPolicies());
for (const app of apps) uncachedAuthorizer.loadApplication(app, appPolicies(app));
results.decision = { policiesEvaluated: 25, storeSize: 20 + 100 * 5 };
for (const [name, a, n] of [['cached', authorizer, 20000], ['uncached', uncachedAuthorizer, 5000]]) {
  const micros = [];
  for (let i = 0; i < 500; i++) a.authorize(request);
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    a.authorize(request);
    micros.push((performance.now() - t) * 1000);
  }
  results.decision[name] = { p50Micros: quantile(micros, 0.5), p99Micros: quantile(micros, 0.99), samples: n };
  log(`Cedar decision ${name} (25 of ${20 + 100 * 5} policies in the set): p50 ${results.decision[name].p50Micros.toFixed(1)} µs, p99 ${results.decision[name].p99Micros.toFixed(1)} µs`);
}

await hsm.close().catch(() => undefined);

// ---------- 2. a pool of two tokens against one ----------
if (!values['skip-pool']) {
  const replicator = new Pkcs11Replicator(SOFTHSM_LIB);
  await replicator.provisionGroupKek([token, tokenB].map((t) => ({ tokenLabel: t.label, soPin: t.soPin, pin: t.pin })));
  await replicator.generateReplicated([token, tokenB].map((t) => ({ tokenLabel: t.label, pin: t.pin })), 'bench-pool-p256', 'ECDSA_P256');
  const a2 = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, sessionPool: { minSessions: 2, maxSessions: concurrency } }, { pin: token.pin });
  const b2 = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: tokenB.label, sessionPool: { minSessions: 2, maxSessions: concurrency } }, { pin: tokenB.pin });
  const one = new HsmPool({ members: [{ name: 'a', backend: a2 }], startHealthChecks: false });
  await one.initialize();
  const two = new HsmPool({ members: [{ name: 'a', backend: a2 }, { name: 'b', backend: b2 }], startHealthChecks: false });
  await two.initialize();
  one.place('bench-pool-p256', ['a']);
  two.place('bench-pool-p256', ['a', 'b']);
  const msg = randomBytes(64);
  const pools = { one: () => one.sign('bench-pool-p256', msg), two: () => two.sign('bench-pool-p256', msg) };
  await throughput(pools.one);
  await throughput(pools.two);
  const perPool = { one: [], two: [] };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? ['two', 'one'] : ['one', 'two'];
    for (const mode of order) perPool[mode].push(await throughput(pools[mode]));
  }
  results.pool = { oneTokenOpsPerSec: median(perPool.one), twoTokensOpsPerSec: median(perPool.two), scaling: median(perPool.two) / median(perPool.one), shares: two.status().map((m) => ({ name: m.name, dispatched: m.dispatched })), rounds: perPool };
  log(`pool P-256: one token ${results.pool.oneTokenOpsPerSec.toFixed(0)}/s, two tokens ${results.pool.twoTokensOpsPerSec.toFixed(0)}/s, scaling ${results.pool.scaling.toFixed(2)}x`);

  await two.close();
  await one.close().catch(() => undefined);
}
await rotation.close();
await pool.close().catch(() => undefined);
await entLog.close();
await baseLog.close();
for (const c of cleanups) await c();
if (values.json) console.log(JSON.stringify(results, null, 2));
