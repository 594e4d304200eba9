import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { openAuditLog, type AuditRecord } from '../src/audit/index.js';
import { storageFor } from './audit-helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHILD = join(here, 'audit-child.mjs');

beforeAll(() => {
  // The child runs the built package, as a second application process would.
  if (!existsSync(join(here, '../dist/index.js'))) throw new Error('this test runs its child process on the built package: run pnpm build (or pnpm --filter @olocus/hsm-compliance build) first');
});

function child(env: object): Promise<{ seqs: number[]; transactions: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CHILD], { env: { ...process.env, AUDIT_CHILD: JSON.stringify(env) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited ${code}: ${err}`))));
  });
}

describe.each(['sqlite', 'sqlite-thread', 'postgres'] as const)('two processes appending to one log on %s', (kind) => {
  it('produce one chain, seqs 1..N, no fork', async () => {
    const { storage } = await storageFor(kind, 'mp');
    const count = 1000;
    const startAt = Date.now() + 2000;
    const [a, b] = await Promise.all([
      child({ storage, logName: 'shared', origin: 'proc-a', count, startAt }),
      child({ storage, logName: 'shared', origin: 'proc-b', count, startAt }),
    ]);
    expect(a.seqs).toHaveLength(count);
    expect(b.seqs).toHaveLength(count);
    const mine = new Set([...a.seqs, ...b.seqs]);
    expect(mine.size).toBe(2 * count); // no seq handed to both
    const log = await openAuditLog({ storage, logName: 'shared', origin: 'checker' });
    const records: AuditRecord[] = [];
    for await (const r of log.iterate()) records.push(r);
    const total = 2 * count + 4 + 1; // two starts, two stops, this start
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    for (let i = 1; i < records.length; i++) expect(records[i]!.prevHash).toBe(records[i - 1]!.hash);
    // the writers interleaved (the test proves concurrency, not two sequential runs)
    const origins = records.filter((r) => r.type === 'key.sign').map((r) => r.origin);
    const switches = origins.filter((o, i) => i > 0 && o !== origins[i - 1]).length;
    expect(switches).toBeGreaterThan(1);
    const v = await log.verify();
    expect(v).toMatchObject({ ok: true, records: total });
    expect(v.checkpoints).toBeGreaterThan(0);
    const sizes = (await log.checkpoints()).map((c) => c.size);
    expect(sizes.every((s, i) => i === 0 || s > sizes[i - 1]!)).toBe(true);
    await log.close();
  });
});
