import type { ActivityView } from './activity.js';
import type { Alert } from './alerts.js';
import type { CheckName, HealthLevel, HealthReport } from './health.js';
import type { KeyInventoryItem } from './lifecycle.js';
import type { MetricsSnapshot } from './metrics.js';

/** How a check is shown: its health level, or `Warning` for a Healthy check with a warning (FIPS posture). */
export type DisplayLevel = HealthLevel | 'Warning';

export interface StatusCheckView {
  name: CheckName;
  status: HealthLevel;
  display: DisplayLevel;
  message: string;
  warning?: string;
  metric?: number;
  unit?: string;
  durationMs: number;
  details?: Record<string, string | number | boolean>;
}

export interface StatusKeyView {
  keyId: string;
  baseKeyId?: string;
  version?: number;
  state: string;
  algorithm?: string;
  backend?: string;
  source?: string;
  activatedAt?: string;
  expiresAt?: string;
  rotationDueAt?: string;
  destroyAfter?: string;
  lastUsedAt?: string;
  usageCount?: number;
  /** `overdue` (rotation due or cryptoperiod ended), `soon` (within the warning window) or `ok`. */
  attention: 'overdue' | 'soon' | 'ok';
}

/** The operator's view: what `/status` renders and `/status.json` returns. */
export interface StatusView {
  title: string;
  generatedAt: string;
  refreshSeconds: number;
  health: { status: HealthLevel; timestamp: string; durationMs: number; checks: StatusCheckView[] };
  fips: { display: DisplayLevel; summary: string; warning?: string; details?: Record<string, string | number | boolean> };
  /** Installation-wide activity (from the audit log when one is connected). */
  activity: ActivityView;
  /** This process's own counters (the monitor's backend), for comparison with the installation's. */
  process: { uptimeSeconds: number; operations: { success: number; failure: number }; keyGenerations: number; pool?: MetricsSnapshot['pool']; circuitOpen?: boolean };
  alerts?: { firing: Alert[]; resolved: Alert[] };
  keys?: { counts: Record<string, number>; items: StatusKeyView[]; error?: string };
}

export interface StatusViewInput {
  title: string;
  refreshSeconds: number;
  report: HealthReport;
  snapshot: MetricsSnapshot;
  activity: ActivityView;
  alerts?: { firing: Alert[]; resolved: Alert[] } | undefined;
  keys?: { items?: KeyInventoryItem[]; counts?: Record<string, number>; error?: string } | undefined;
  /** Keys whose rotation or cryptoperiod end is this close are marked `soon`. Default 30 days. */
  warnMs?: number;
  now?: number;
}

const iso = (d: Date | undefined): string | undefined => (d && Number.isFinite(d.getTime()) ? d.toISOString() : undefined);

export function buildStatusView(input: StatusViewInput): StatusView {
  const { report, snapshot } = input;
  const now = input.now ?? Date.now();
  const warnMs = input.warnMs ?? 30 * 86_400_000;
  const checks: StatusCheckView[] = report.checks.map((c) => {
    const v: StatusCheckView = { name: c.name, status: c.status, display: c.status === 'Healthy' && c.warning ? 'Warning' : c.status, message: c.message, durationMs: round(c.durationMs) };
    if (c.warning) v.warning = c.warning;
    if (c.metric !== undefined) v.metric = c.metric;
    if (c.unit !== undefined) v.unit = c.unit;
    if (c.details) v.details = c.details;
    return v;
  });
  const fipsCheck = checks.find((c) => c.name === 'fips');
  const fips: StatusView['fips'] = fipsCheck
    ? { display: fipsCheck.display, summary: fipsCheck.message, ...(fipsCheck.warning ? { warning: fipsCheck.warning } : {}), ...(fipsCheck.details ? { details: fipsCheck.details } : {}) }
    : { display: 'Warning', summary: 'the FIPS status was not checked', warning: 'the FIPS status was not checked' };
  const view: StatusView = {
    title: input.title,
    generatedAt: new Date(now).toISOString(),
    refreshSeconds: input.refreshSeconds,
    health: { status: report.status, timestamp: report.timestamp.toISOString(), durationMs: round(report.durationMs), checks },
    fips,
    activity: input.activity,
    process: { uptimeSeconds: round(snapshot.uptimeSeconds), operations: { ...snapshot.totals }, keyGenerations: snapshot.keyGenerations },
  };
  if (snapshot.pool) view.process.pool = snapshot.pool;
  if (snapshot.circuitOpen !== undefined) view.process.circuitOpen = snapshot.circuitOpen;
  if (input.alerts) view.alerts = input.alerts;
  if (input.keys) {
    const items = (input.keys.items ?? []).map((k) => keyView(k, now, warnMs)).sort(byKey);
    let counts = input.keys.counts;
    if (!counts) {
      counts = {};
      for (const k of items) counts[k.state] = (counts[k.state] ?? 0) + 1;
    }
    view.keys = { counts, items, ...(input.keys.error ? { error: input.keys.error } : {}) };
  }
  return view;
}

function keyView(k: KeyInventoryItem, now: number, warnMs: number): StatusKeyView {
  const v: StatusKeyView = { keyId: k.keyId, state: k.state, attention: 'ok' };
  if (k.baseKeyId) v.baseKeyId = k.baseKeyId;
  if (k.version !== undefined) v.version = k.version;
  if (k.algorithm) v.algorithm = k.algorithm;
  if (k.backend) v.backend = k.backend;
  if (k.source) v.source = k.source;
  for (const f of ['activatedAt', 'expiresAt', 'rotationDueAt', 'destroyAfter', 'lastUsedAt'] as const) {
    const t = iso(k[f]);
    if (t) v[f] = t;
  }
  if (k.usageCount !== undefined) v.usageCount = k.usageCount;
  // Only keys that still sign can be late for rotation or past their cryptoperiod.
  const signing = k.state === 'Active' || k.state === 'enabled';
  if (signing) {
    const dates = [k.rotationDueAt, k.expiresAt].filter((d): d is Date => d instanceof Date).map((d) => d.getTime());
    if (dates.some((t) => t <= now)) v.attention = 'overdue';
    else if (dates.some((t) => t - now <= warnMs)) v.attention = 'soon';
  }
  return v;
}

const STATE_ORDER = ['Active', 'enabled', 'PreActivation', 'Suspended', 'disabled', 'Superseded', 'PendingDestruction', 'pending-deletion', 'Compromised', 'Revoked', 'Archived', 'Destroyed', 'destroyed'];

function byKey(a: StatusKeyView, b: StatusKeyView): number {
  const ra = STATE_ORDER.indexOf(a.state);
  const rb = STATE_ORDER.indexOf(b.state);
  return (ra === -1 ? 99 : ra) - (rb === -1 ? 99 : rb) || (a.baseKeyId ?? a.keyId).localeCompare(b.baseKeyId ?? b.keyId) || (b.version ?? 0) - (a.version ?? 0) || a.keyId.localeCompare(b.keyId);
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
