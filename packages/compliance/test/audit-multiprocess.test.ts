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

/** Starts a child; `started` resolves when it has opened the log, `go()` lets it append. */
function child(env: object): { started: Promise<void>; go: () => void; done: Promise<{ seqs: number[]; transactions: number }> } {
  const p = spawn(process.execPath, [CHILD], { env: { ...process.env, AUDIT_CHILD: JSON.stringify(env) }, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let ready: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (ready = resolve));
  p.stdout.on('data', (d) => (out += d));
  p.stdin.on('error', () => undefined); // a child that already died: its exit says why
  p.stderr.on('data', (d) => {
    err += d;
    if (err.includes('ready\n')) ready();
  });
  const done = new Promise<{ seqs: number[]; transactions: number }>((resolve, reject) => {
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited ${code}: ${err}`))));
  });
  // a child that dies before it is ready fails the test instead of hanging it
  done.catch(() => ready());
  return { started, go: () => p.stdin.end('go\n'), done };
}

describe.each(['sqlite', 'sqlite-thread', 'postgres'] as const)('two processes appending to one log on %s', (kind) => {
  it('produce one chain, seqs 1..N, no fork', async () => {
    const { storage } = await storageFor(kind, 'mp');
    const count = 1000;
    const first = child({ storage, logName: 'shared', origin: 'proc-a', count });
    const second = child({ storage, logName: 'shared', origin: 'proc-b', count });
    await Promise.all([first.started, second.started]);
    first.go();
    second.go();
    const [a, b] = await Promise.all([first.done, second.done]);
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
