// Rollback, run-on and wipe of a large audit log against a file witness (issue 18 item 6): how
// long `verify()` takes to name each fault, and that it names the right one.
//
//   node bench/witness-faults.mjs [--records 100000] [--every 10000] [--rollback 1000] [--json]
//   (build core and compliance first: pnpm --filter @olocus/hsm-compliance build)
//
// The checkpoint key is an in-process ECDSA P-256 key (the signer's shape, no HSM): the figures
// are the log's and the witness's, not a backend's.
import { generateKeyPairSync, sign as nodeSign } from 'node:crypto';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import BetterSqlite3 from 'better-sqlite3';
import { openAuditLog } from '../dist/index.js';

const { values } = parseArgs({ options: { records: { type: 'string', default: '100000' }, every: { type: 'string', default: '10000' }, rollback: { type: 'string', default: '1000' }, json: { type: 'boolean', default: false } } });
const N = Number(values.records);
const EVERY = Number(values.every);
const BACK = Number(values.rollback);

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signer = {
  keyId: 'bench-checkpoints',
  algorithm: 'ECDSA_P256',
  sign: async (data) => nodeSign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' }),
  publicKey: async () => publicKey.export({ type: 'spki', format: 'der' }),
};

const dir = mkdtempSync(join(tmpdir(), 'olocus-witness-faults-'));
const path = join(dir, 'audit.db');
const witness = { kind: 'file', path: join(mkdtempSync(join(tmpdir(), 'olocus-witness-volume-')), 'audit.witness') };
const figures = {};
try {
  const log = await openAuditLog({ storage: { kind: 'sqlite', path }, logName: 'bench', checkpoint: { signer, everyRecords: EVERY, intervalMs: 0 }, witnesses: [witness] });
  const t = performance.now();
  for (let done = 1; done < N; ) {
    const batch = Math.min(1000, N - done);
    await Promise.all(Array.from({ length: batch }, (_, i) => log.append({ type: 'key.sign', actor: 'bench', outcome: 'success', keyId: 'app', details: { n: done + i } })));
    done += batch;
  }
  await log.checkpoint();
  figures.build = { records: await log.size(), witnessedCheckpoints: readFileSync(witness.path, 'utf8').trim().split('\n').length, seconds: +((performance.now() - t) / 1000).toFixed(2) };

  const measure = async (name) => {
    const t0 = performance.now();
    const r = await log.verify();
    figures[name] = { problem: r.problem ?? 'none', ok: r.ok, firstBadSeq: r.firstBadSeq ?? null, ms: +(performance.now() - t0).toFixed(1), witnesses: (r.witnesses ?? []).map((w) => w.status).join(',') };
  };
  await measure('intact');

  // rollback: the tail and its newer checkpoints deleted, the head moved back
  const size = await log.size();
  const keep = size - BACK;
  const db = new BetterSqlite3(path, { timeout: 5000 });
  db.prepare('delete from audit_records where seq > ?').run(keep);
  db.prepare('delete from audit_checkpoints where size > ?').run(keep);
  db.prepare('update audit_head set seq = ?, hash = (select hash from audit_records where seq = ?)').run(keep, keep);
  await measure('rollback');

  // run on past the witnessed size: the newest witnessed checkpoint is now the rolled-back log's own
  for (let i = 0; i < BACK + 10; i++) await log.append({ type: 'key.sign', actor: 'after', outcome: 'success' });
  await log.checkpoint();
  await measure('rollbackRunOn');

  // wipe in place
  db.exec("delete from audit_records; delete from audit_checkpoints; update audit_head set seq = 0, hash = '" + '0'.repeat(64) + "'");
  db.close();
  await measure('wipe');
  await log.close().catch(() => undefined);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
if (values.json) console.log(JSON.stringify(figures, null, 2));
else for (const [k, v] of Object.entries(figures)) console.log(`${k.padEnd(14)} ${JSON.stringify(v)}`);
