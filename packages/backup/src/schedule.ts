import { readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { createBundle, type CreateBundleOptions, type CreateBundleResult } from './create.js';
import { verifyBundle, type VerifyBundleOptions } from './verify.js';

/**
 * Scheduled backups into a folder, retention, and the freshness alert. The rotation scheduler's
 * task kinds are fixed (rotate, warn, deactivate, cleanup, destroy: no job of another kind can be
 * queued through its public API), so a scheduled backup is one idempotent run that cron, a
 * systemd timer or the CLI (`backup schedule`) repeats: it backs up when the newest restorable
 * bundle is older than `everyMs`, prunes, and checks freshness.
 */

export const BUNDLE_PREFIX = 'olocus-backup-';
export const BUNDLE_SUFFIX = '.olb';

/** `olocus-backup-20261202T100700123Z.olb`: sorts by time, one name per millisecond. */
export function scheduledBundleName(at: Date): string {
  return `${BUNDLE_PREFIX}${at.toISOString().replace(/[-:.]/g, '')}${BUNDLE_SUFFIX}`;
}

export interface BundleListing {
  file: string;
  /** The manifest's creation time when the bundle verifies, else the file's modification time. */
  createdAt: Date;
  restorable: boolean;
  /** Why it is not restorable (the part that failed). */
  error?: string;
}

/** The folder's bundles, newest first, each verified (a bundle counts only if it verifies). */
export async function listBundles(dir: string, verify: VerifyBundleOptions): Promise<BundleListing[]> {
  const names = (await readdir(dir)).filter((n) => n.startsWith(BUNDLE_PREFIX) && n.endsWith(BUNDLE_SUFFIX));
  const out: BundleListing[] = [];
  for (const name of names) {
    const file = join(dir, name);
    try {
      const v = await verifyBundle(file, verify);
      out.push({ file, createdAt: new Date(v.manifest.createdAt), restorable: true });
    } catch (error) {
      out.push({ file, createdAt: (await stat(file)).mtime, restorable: false, error: (error as Error).message });
    }
  }
  return out.sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
}

export interface RetentionResult {
  kept: string[];
  removed: string[];
  /** Bundles that do not verify: never removed by retention (they are evidence), reported. */
  invalid: string[];
}

/**
 * Keeps the `keep` newest restorable bundles and removes older restorable ones, plus temporary
 * files of writes that died (`.partial`, older than an hour). A bundle that does not verify is
 * never counted as a kept backup and never deleted automatically.
 */
export async function applyRetention(dir: string, options: VerifyBundleOptions & { keep: number; now?: () => Date }): Promise<RetentionResult> {
  if (!Number.isInteger(options.keep) || options.keep < 1) throw new RangeError('keep: at least 1 bundle');
  const now = (options.now ?? (() => new Date()))();
  const listing = await listBundles(dir, options);
  const restorable = listing.filter((b) => b.restorable);
  const kept = restorable.slice(0, options.keep).map((b) => b.file);
  const removed: string[] = [];
  for (const b of restorable.slice(options.keep)) {
    await unlink(b.file);
    removed.push(b.file);
  }
  for (const name of await readdir(dir)) {
    if (!name.startsWith(`.${BUNDLE_PREFIX}`) || !name.endsWith('.partial')) continue;
    const file = join(dir, name);
    const info = await stat(file).catch(() => undefined);
    if (info && now.getTime() - info.mtime.getTime() > 3_600_000) {
      await unlink(file).catch(() => {});
      removed.push(file);
    }
  }
  return { kept, removed, invalid: listing.filter((b) => !b.restorable).map((b) => b.file) };
}

/** What receives the freshness alert: @olocus/hsm-monitoring's AlertManager fits. */
export interface BackupAlertTarget {
  fire(key: string, alert: { rule: string; severity: 'warning' | 'critical'; summary: string; details: Record<string, string | number | boolean> }): unknown;
  resolve(key: string, summary?: string): unknown;
}

export const BACKUP_STALE_ALERT = 'backup.stale';

export interface FreshnessReport {
  ok: boolean;
  newest?: { file: string; createdAt: Date; ageMs: number };
  maxAgeMs: number;
  summary: string;
}

/** Fires `backup.stale` (critical) when the newest restorable bundle is older than `maxAgeMs` (or there is none); resolves it otherwise. */
export async function checkBackupFreshness(dir: string, options: VerifyBundleOptions & { maxAgeMs: number; now?: () => Date; alerts?: BackupAlertTarget }): Promise<FreshnessReport> {
  const now = (options.now ?? (() => new Date()))();
  const newest = (await listBundles(dir, options)).find((b) => b.restorable);
  const ageMs = newest ? now.getTime() - newest.createdAt.getTime() : Number.POSITIVE_INFINITY;
  const ok = ageMs <= options.maxAgeMs;
  const hours = (ms: number) => `${(ms / 3_600_000).toFixed(1)} h`;
  const summary = newest
    ? `newest restorable backup ${newest.file} is ${hours(ageMs)} old (policy: at most ${hours(options.maxAgeMs)})`
    : `no restorable backup in ${dir} (policy: one at most ${hours(options.maxAgeMs)} old)`;
  if (options.alerts) {
    if (ok) options.alerts.resolve(BACKUP_STALE_ALERT, summary);
    else options.alerts.fire(BACKUP_STALE_ALERT, { rule: BACKUP_STALE_ALERT, severity: 'critical', summary, details: { dir, maxAgeMs: options.maxAgeMs, ...(newest ? { newest: newest.file, ageMs } : {}) } });
  }
  return { ok, ...(newest ? { newest: { file: newest.file, createdAt: newest.createdAt, ageMs } } : {}), maxAgeMs: options.maxAgeMs, summary };
}

export interface ScheduledBackupOptions extends Omit<CreateBundleOptions, 'now'>, VerifyBundleOptions {
  dir: string;
  /** Back up when the newest restorable bundle is at least this old. */
  everyMs: number;
  keep: number;
  /** Freshness policy; default 1.5 × everyMs. */
  maxAgeMs?: number;
  alerts?: BackupAlertTarget;
  now?: () => Date;
}

export interface ScheduledBackupResult {
  created?: CreateBundleResult;
  skipped?: string;
  retention: RetentionResult;
  freshness: FreshnessReport;
}

export async function runScheduledBackup(options: ScheduledBackupOptions): Promise<ScheduledBackupResult> {
  const now = options.now ?? (() => new Date());
  const verify = { trustedSigners: options.trustedSigners };
  const newest = (await listBundles(options.dir, verify)).find((b) => b.restorable);
  let created: CreateBundleResult | undefined;
  let skipped: string | undefined;
  if (newest && now().getTime() - newest.createdAt.getTime() < options.everyMs) {
    skipped = `the newest restorable backup (${newest.file}) is younger than the interval`;
  } else {
    const { dir, everyMs: _every, keep: _keep, maxAgeMs: _max, alerts: _alerts, trustedSigners: _trusted, now: _now, ...create } = options;
    created = await createBundle(join(dir, scheduledBundleName(now())), { ...create, now });
    // a bundle just written by another signer than the trusted ones would never count as restorable
    if (options.trustedSigners !== 'any' && !options.trustedSigners.includes(created.signer.fingerprint)) {
      verify.trustedSigners = [...options.trustedSigners, created.signer.fingerprint];
    }
  }
  const retention = await applyRetention(options.dir, { ...verify, keep: options.keep, now });
  const freshness = await checkBackupFreshness(options.dir, { ...verify, maxAgeMs: options.maxAgeMs ?? Math.round(options.everyMs * 1.5), now, ...(options.alerts ? { alerts: options.alerts } : {}) });
  return { ...(created ? { created } : {}), ...(skipped ? { skipped } : {}), retention, freshness };
}
