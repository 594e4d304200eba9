// Registry benchmark: 100,000 logical keys x 5 versions on SQLite and PostgreSQL.
//   pnpm --filter @olocus/hsm-rotation bench          (builds first)
// Env: BENCH_KEYS (default 100000), BENCH_ROTATIONS (default 1000), BENCH_SAMPLES (default 20000),
//      BENCH_STORAGE (sqlite,postgres), OLOCUS_TEST_PG_URL.
// Prints a markdown table. Absolute figures depend on the machine; ratios travel better.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { sql } from 'kysely';
import { BackendRegistry } from '@olocus/hsm-core';
import { softwareBackendFactory } from '@olocus/hsm-backend-software';
import { openRotation } from '../dist/index.js';

const KEYS = Number(process.env.BENCH_KEYS ?? 100_000);
const VERSIONS = 5;
const ROTATIONS = Number(process.env.BENCH_ROTATIONS ?? 1000);
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 20_000);
const STORAGES = (process.env.BENCH_STORAGE ?? 'sqlite,postgres').split(',');
const PG_URL = process.env.OLOCUS_TEST_PG_URL ?? 'postgres://olocus_test@127.0.0.1:5432/olocus_test';
const HOUR = 3_600_000;
const T0 = Date.UTC(2020, 0, 1);

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const us = (ns) => (Number(ns) / 1000).toFixed(ns < 10_000n ? 2 : 1);
const baseOf = (i) => `bench-${String(i).padStart(6, '0')}`;
const rnd = (n) => Math.floor(Math.random() * n);

async function timeEach(n, fn) {
  const times = new Array(n);
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await fn(i);
    times[i] = process.hrtime.bigint() - t;
  }
  times.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { p50: pct(times, 50), p99: pct(times, 99) };
}

async function bulkLoad(store) {
  const started = process.hrtime.bigint();
  const chunk = store.dialect === 'postgres' ? 1000 : 500; // rows per INSERT (parameter limits)
  const perTx = 5000; // logical keys per transaction
  for (let from = 0; from < KEYS; from += perTx) {
    const to = Math.min(KEYS, from + perTx);
    await store.tx(async (trx) => {
      const lks = [];
      const versions = [];
      for (let i = from; i < to; i++) {
        const base = baseOf(i);
        lks.push({ base_key_id: base, algorithm: 'Ed25519', usages: '["sign","verify"]', backend: 'software', rotation_interval_ms: null, last_version: VERSIONS, created_at: T0, created_by: 'bench' });
        for (let v = 1; v <= VERSIONS; v++) {
          const activated = T0 + (v - 1) * HOUR;
          versions.push({
            key_id: `${base}.v${v}`, base_key_id: base, version: v, backend: 'software', key_ref: `software:${base}.v${v}`,
            algorithm: 'Ed25519', usages: '["sign","verify"]', state: v === VERSIONS ? 'Active' : v >= VERSIONS - 2 ? 'Superseded' : 'Archived',
            created_at: activated, activated_at: activated, deactivated_at: v === VERSIONS ? null : activated + HOUR, expires_at: null,
            state_changed_at: activated, overlap_until: null, destroy_after: null, pre_destruction_state: null, revoked_at: null,
            predecessor_version: v > 1 ? v - 1 : null, successor_version: v < VERSIONS ? v + 1 : null, usage_count: 0, last_used_at: null,
          });
        }
      }
      for (let i = 0; i < lks.length; i += chunk) await trx.insertInto('logical_keys').values(lks.slice(i, i + chunk)).execute();
      for (let i = 0; i < versions.length; i += chunk) await trx.insertInto('key_versions').values(versions.slice(i, i + chunk)).execute();
    });
  }
  await sql`analyze`.execute(store.db);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function runOne(kind) {
  const dir = await mkdtemp(join(tmpdir(), 'olocus-rot-bench-'));
  let schema;
  let storage;
  if (kind === 'sqlite') storage = { kind: 'sqlite', path: join(dir, 'registry.db'), synchronous: 'NORMAL' };
  else {
    schema = `rot_bench_${randomBytes(4).toString('hex')}`;
    storage = { kind: 'postgres', connectionString: PG_URL, schema };
  }
  process.env.OLOCUS_BENCH_PASSPHRASE = 'bench-passphrase';
  const ctx = await openRotation({
    storage,
    backend: { type: 'software', options: { directory: join(dir, 'keys'), scrypt: { N: 2 ** 15, r: 8, p: 1 }, passphrase: { env: 'OLOCUS_BENCH_PASSPHRASE' } } },
    backendRegistry: new BackendRegistry().register(softwareBackendFactory),
    policy: { cacheTtl: '1h', usageFlushInterval: '1h' },
    reconcile: false,
  });
  const rows = {};
  try {
    const { registry, manager, hsm } = ctx;
    const loadSeconds = await bulkLoad(registry.store);
    rows.load = `${(KEYS * VERSIONS).toLocaleString('en')} versions in ${loadSeconds.toFixed(1)} s`;

    // cached: a hot set of 1,000 keys, warmed
    const hot = Array.from({ length: 1000 }, () => baseOf(rnd(KEYS)));
    for (const b of hot) await registry.getActiveKey(b);
    rows.cached = await timeEach(SAMPLES, (i) => registry.getActiveKey(hot[i % hot.length]));
    rows.uncached = await timeEach(Math.min(SAMPLES, 10_000), () => registry.getActiveKeyUncached(baseOf(rnd(KEYS))));
    rows.verify = await timeEach(Math.min(SAMPLES, 10_000), () => registry.getKeyForVerification(baseOf(rnd(KEYS)), new Date(T0 + rnd(VERSIONS * HOUR))));

    // rotations per second (software backend, Ed25519), 1,000 keys each rotated once
    const actor = { actor: 'bench', reason: 'benchmark' };
    for (let i = 0; i < ROTATIONS; i++) await manager.createKey(`rot-${i}`, 'Ed25519', actor);
    const r0 = process.hrtime.bigint();
    for (let i = 0; i < ROTATIONS; i++) await manager.rotateKey(`rot-${i}`, actor);
    rows.rotationsPerSecond = ROTATIONS / (Number(process.hrtime.bigint() - r0) / 1e9);

    // signing by logical key vs by handle, same run, interleaved rounds
    const data = Buffer.from('benchmark payload');
    const keyId = (await registry.getActiveKey('rot-0')).keyId;
    for (let i = 0; i < 2000; i++) {
      await hsm.sign(keyId, data);
      await hsm.signWithLogicalKey('rot-0', data);
    }
    let handleNs = 0n;
    let logicalNs = 0n;
    const rounds = 20;
    const per = Math.max(100, Math.floor(SAMPLES / rounds));
    for (let r = 0; r < rounds; r++) {
      let t = process.hrtime.bigint();
      for (let i = 0; i < per; i++) await hsm.sign(keyId, data);
      handleNs += process.hrtime.bigint() - t;
      t = process.hrtime.bigint();
      for (let i = 0; i < per; i++) await hsm.signWithLogicalKey('rot-0', data);
      logicalNs += process.hrtime.bigint() - t;
    }
    const n = BigInt(rounds * per);
    rows.signHandle = handleNs / n;
    rows.signLogical = logicalNs / n;
    rows.signRatio = Number(logicalNs) / Number(handleNs);
  } finally {
    await ctx.close();
    await rm(dir, { recursive: true, force: true });
    if (schema) {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`drop schema if exists "${schema}" cascade`);
      await c.end();
    }
  }
  return rows;
}

const results = {};
for (const kind of STORAGES) {
  process.stderr.write(`${kind}: loading ${KEYS} keys x ${VERSIONS} versions...\n`);
  results[kind] = await runOne(kind);
}

const cols = STORAGES;
const line = (label, f) => `| ${label} | ${cols.map((k) => f(results[k])).join(' | ')} |`;
console.log(`\nRegistry benchmark — ${KEYS.toLocaleString('en')} logical keys x ${VERSIONS} versions; Node ${process.version}; ${cpus()[0]?.model ?? 'cpu'} x${cpus().length}\n`);
console.log(`| measure | ${cols.join(' | ')} |`);
console.log(`| --- | ${cols.map(() => '---').join(' | ')} |`);
console.log(line('bulk load', (r) => r.load));
console.log(line('getActiveKey cached p50 / p99 (µs)', (r) => `${us(r.cached.p50)} / ${us(r.cached.p99)}`));
console.log(line('getActiveKey uncached p50 / p99 (µs)', (r) => `${us(r.uncached.p50)} / ${us(r.uncached.p99)}`));
console.log(line('getKeyForVerification p50 / p99 (µs)', (r) => `${us(r.verify.p50)} / ${us(r.verify.p99)}`));
console.log(line(`rotations per second (${ROTATIONS} keys, software Ed25519)`, (r) => r.rotationsPerSecond.toFixed(0)));
console.log(line('sign by handle, mean (µs)', (r) => us(r.signHandle)));
console.log(line('sign by logical key, mean (µs)', (r) => us(r.signLogical)));
console.log(line('logical / handle ratio', (r) => `${r.signRatio.toFixed(3)} (${((r.signRatio - 1) * 100).toFixed(1)}%)`));
console.log('\nTargets: cached p99 < 50 µs and uncached p99 < 2 ms on SQLite; logical-key signing < 5% slower than by handle.');
