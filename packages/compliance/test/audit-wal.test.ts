import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HsmManager } from '@olocus/hsm-core';
import { auditorFor, openAuditLog } from '../src/audit/index.js';
import { tempDir } from './audit-helpers.js';

const PASS_ENV = 'OLOCUS_AUDIT_WAL_PASSPHRASE';
process.env[PASS_ENV] = randomBytes(12).toString('hex');

/** Signing time; OLOCUS_WAL_TEST_SECONDS shortens or lengthens it. */
const SECONDS = Number(process.env['OLOCUS_WAL_TEST_SECONDS'] ?? 20);
const WAL_MAX = 4 * 1024 * 1024;
/**
 * The stated bound: the configured size plus what one checkpoint interval (200 ms) and one
 * TRUNCATE checkpoint's wait can add at full speed on the test machine; the WAL of the code
 * before this bound reached 33 MiB in 20 s here (1,583 signatures/s; 416 MB in 90 s in the run).
 */
const WAL_BOUND = 3 * WAL_MAX;
const MIN_SIGNATURES = 15_000;

const walBytes = (path: string) => {
  try {
    return statSync(`${path}-wal`).size;
  } catch {
    return 0;
  }
};

describe.each([false, true])('the SQLite audit WAL stays bounded under continuous signing (writerThread %s, issue 18 item 5)', (writerThread) => {
  it(`signing for ${SECONDS} s keeps ${'<path>'}-wal under ${WAL_BOUND / 1024 / 1024} MiB (walMaxBytes ${WAL_MAX / 1024 / 1024} MiB)`, async () => {
    const path = join(tempDir('wal'), 'audit.db');
    const log = await openAuditLog({ storage: { kind: 'sqlite', path, walMaxBytes: WAL_MAX, writerThread }, logName: 'wal' });
    const manager = new HsmManager(
      { backend: { type: 'software', options: { directory: tempDir('wal-keys'), passphrase: { env: PASS_ENV }, scrypt: { N: 2 ** 15, r: 8, p: 1 } } } },
      { auditor: auditorFor(log, { actor: 'svc-wal' }) },
    );
    await manager.initialize();
    const key = await manager.generateKey({ id: 'k', algorithm: 'Ed25519' });
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, walBytes(path));
    }, 50);
    // At least SECONDS of signing and at least MIN_SIGNATURES records (what an unbounded WAL needs
    // to pass the bound: ~1.1 KiB of WAL per record here), at most 90 s on a starved machine.
    const started = Date.now();
    let signatures = 0;
    const more = () => Date.now() - started < 90_000 && (Date.now() - started < SECONDS * 1000 || signatures < MIN_SIGNATURES);
    const worker = async () => {
      while (more()) {
        await manager.sign(key, randomBytes(64));
        signatures++;
      }
    };
    try {
      await Promise.all(Array.from({ length: 16 }, worker));
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, walBytes(path));
    const records = await log.size();
    const seconds = (Date.now() - started) / 1000;
    console.log(`writerThread ${writerThread}: ${signatures} signatures in ${seconds.toFixed(1)} s (${Math.round(signatures / seconds)}/s), WAL peak ${(peak / 1024 / 1024).toFixed(1)} MiB, database ${(statSync(path).size / 1024 / 1024).toFixed(1)} MiB`);
    // enough writing happened for an unbounded WAL to pass the bound
    expect(records, 'too few records were written in 90 s to exercise the bound (machine overloaded?)').toBeGreaterThan(MIN_SIGNATURES);
    expect(peak).toBeLessThan(WAL_BOUND);
    expect(await log.verify()).toMatchObject({ ok: true });
    await manager.close();
    await log.close();
  });
});
