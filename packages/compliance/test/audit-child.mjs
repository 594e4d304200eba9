/**
 * A second process for audit-multiprocess.test.ts: opens the log named in AUDIT_CHILD (JSON:
 * storage, logName, origin, count), says `ready` on stderr, waits for a line on stdin (the parent
 * releases both processes together), appends `count` records in concurrent bursts, closes, and
 * prints what it appended. It runs the built package (dist), as an application would.
 */
import { openAuditLog } from '../dist/index.js';

const cfg = JSON.parse(process.env['AUDIT_CHILD'] ?? '{}');
const log = await openAuditLog({ storage: cfg.storage, logName: cfg.logName, origin: cfg.origin, checkpoint: { everyRecords: 97, intervalMs: 0 } });
// both processes start appending at the same moment, however long each took to start (a loaded
// machine once made one finish before the other began, when a fixed start time was used)
process.stderr.write('ready\n');
await new Promise((r) => process.stdin.once('data', r));
process.stdin.pause();
const seqs = [];
for (let i = 0; i < cfg.count; i += 25) {
  const burst = await Promise.all(
    Array.from({ length: Math.min(25, cfg.count - i) }, (_, j) => log.append({ type: 'key.sign', actor: cfg.origin, outcome: 'success', details: { i: i + j } })),
  );
  seqs.push(...burst.map((r) => r.seq));
}
const stats = log.stats();
await log.close();
process.stdout.write(JSON.stringify({ seqs, transactions: stats.transactions }) + '\n');
