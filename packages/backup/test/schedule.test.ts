import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SoftwareBackend } from '@olocus/hsm-backend-software';
import { AlertManager, callbackSink, type Alert } from '@olocus/hsm-monitoring';
import { openRotation, type RotationContext } from '@olocus/hsm-rotation';
import { BACKUP_STALE_ALERT, applyRetention, checkBackupFreshness, listBundles, runScheduledBackup } from '../src/index.js';

/**
 * Scheduled backups on the real software backend (sealed-file export) and a SQLite registry:
 * a run backs up only when the newest restorable bundle is older than the interval, retention
 * keeps the newest N restorable bundles (never an invalid one, which is evidence), and the
 * monitoring package's AlertManager receives `backup.stale` when the newest restorable bundle is
 * older than the policy allows, resolved by the next fresh backup. Time is a test clock.
 */

const PASS_VAR = 'OLOCUS_TEST_BACKUP_SCHEDULE_PASSPHRASE';
process.env[PASS_VAR] = randomBytes(18).toString('base64url');
const work = mkdtempSync(join(tmpdir(), 'olocus-backup-schedule-'));
const dir = join(work, 'bundles');
let backend: SoftwareBackend;
let rot: RotationContext;
let clock = new Date('2026-12-01T00:00:00Z');
const now = () => clock;
const HOUR = 3_600_000;
const sent: Alert[] = [];
let alerts: AlertManager;

beforeAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  backend = new SoftwareBackend({ directory: join(work, 'keys'), scrypt: { N: 2 ** 15, r: 8, p: 1 }, passphrase: { env: PASS_VAR } });
  await backend.initialize();
  rot = await openRotation({ storage: { kind: 'sqlite', path: join(work, 'rotation.db') }, backend, startScheduler: false, reconcile: false });
  await rot.manager.createKey('svc', 'ECDSA_P256', { actor: 'alice' });
  alerts = new AlertManager({ sinks: [callbackSink((a) => void sent.push(a))], now: () => clock.getTime() });
});

afterAll(async () => {
  await rot?.close();
  await backend?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('scheduled backups', () => {
  it('backs up when due, skips when fresh, keeps the newest N, alerts when stale and resolves after the next backup', async () => {
    const base = { backend, registry: rot.registry, dir, everyMs: 24 * HOUR, keep: 2, maxAgeMs: 36 * HOUR, now, alerts, trustedSigners: [] as string[] };
    const first = await runScheduledBackup(base);
    expect(first.created).toBeDefined();
    const trusted = [first.created!.signer.fingerprint];
    const opts = { ...base, trustedSigners: trusted };
    expect(first.freshness.ok).toBe(true);

    clock = new Date(clock.getTime() + 2 * HOUR);
    const second = await runScheduledBackup(opts);
    expect(second.created).toBeUndefined();
    expect(second.skipped).toMatch(/younger than the interval/);

    for (let day = 1; day <= 3; day++) {
      clock = new Date(Date.parse('2026-12-01T00:00:00Z') + day * 24 * HOUR);
      expect((await runScheduledBackup(opts)).created).toBeDefined();
    }
    const listing = await listBundles(dir, { trustedSigners: trusted });
    expect(listing.map((b) => b.createdAt.toISOString())).toEqual(['2026-12-04T00:00:00.000Z', '2026-12-03T00:00:00.000Z']);

    // an invalid bundle is never kept as a backup nor deleted by retention
    const bogus = join(dir, 'olocus-backup-20261205T000000000Z.olb');
    writeFileSync(bogus, '{"format":"olocus-backup/1"}');
    const retention = await applyRetention(dir, { trustedSigners: trusted, keep: 1, now });
    expect(retention.invalid).toEqual([bogus]);
    expect(retention.kept).toHaveLength(1);
    expect(readdirSync(dir)).toContain('olocus-backup-20261205T000000000Z.olb');

    // 40 h without a backup: stale, critical alert through the monitoring package's AlertManager
    clock = new Date(Date.parse('2026-12-04T00:00:00Z') + 40 * HOUR);
    const stale = await checkBackupFreshness(dir, { trustedSigners: trusted, maxAgeMs: 36 * HOUR, now, alerts });
    expect(stale.ok).toBe(false);
    await alerts.flush();
    expect(alerts.active().map((a) => [a.rule, a.severity])).toEqual([[BACKUP_STALE_ALERT, 'critical']]);
    expect(sent.at(-1)).toMatchObject({ rule: BACKUP_STALE_ALERT, state: 'firing' });

    const fresh = await runScheduledBackup(opts);
    expect(fresh.created).toBeDefined();
    expect(fresh.freshness.ok).toBe(true);
    await alerts.flush();
    expect(alerts.active()).toEqual([]);
    expect(sent.at(-1)).toMatchObject({ rule: BACKUP_STALE_ALERT, state: 'resolved' });
  });
});
