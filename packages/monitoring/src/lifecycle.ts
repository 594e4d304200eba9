import { HsmError } from '@olocus/hsm-core';
import type { AlertManager } from './alerts.js';
import { PeriodicRunner } from './periodic.js';

/**
 * Key lifecycle alerts: cryptoperiods about to end (or ended) and rotations due. Everything here
 * is structurally typed, so monitoring works with `@olocus/hsm-rotation` without importing it
 * (its `RotationEvents`, `KeyRegistry` fit the shapes below) and with any other key store.
 */

const DAY_MS = 86_400_000;

/** The fields of a rotation event these alerts read (every `RotationEvent` fits). */
export interface LifecycleEvent {
  type: string;
  baseKeyId?: string;
  keyId?: string;
  version?: number;
  rotationDueAt?: Date;
  from?: string | null;
  to?: string;
  at?: Date;
}

/** What `alertsFromRotation` subscribes to: `RotationEvents` (or anything with the same `on`). */
export interface LifecycleEventSource {
  on(type: 'event', listener: (event: LifecycleEvent) => void): () => void;
}

/**
 * Forwards rotation events to `alerts`:
 * - `rotationWarning` fires `rotation-due:<keyId>` (warning), once per version;
 * - `rotated`, a version leaving Active (`stateChanged`) or `keyDestroyed` resolves the
 *   lifecycle alerts (`rotation-due:*`, `cryptoperiod:*`) of the versions of that key.
 * Returns a function that unsubscribes.
 */
export function alertsFromRotation(events: LifecycleEventSource, alerts: AlertManager): () => void {
  return events.on('event', (event) => {
    if (event.type === 'rotationWarning' && event.keyId) {
      const due = event.rotationDueAt;
      alerts.fire(`${ROTATION_DUE}${event.keyId}`, {
        rule: 'rotation-due',
        severity: 'warning',
        summary: `key ${event.baseKeyId ?? event.keyId} (version ${event.keyId}) is due for rotation${due ? ` at ${due.toISOString()}` : ''}`,
        details: { keyId: event.keyId, ...(event.baseKeyId ? { baseKeyId: event.baseKeyId } : {}), ...(due ? { rotationDueAt: due.toISOString() } : {}) },
      });
      return;
    }
    if (event.type === 'rotated' && event.baseKeyId) {
      resolveLifecycle(alerts, (a) => a.baseKeyId === event.baseKeyId && a.keyId !== event.keyId, `key ${event.baseKeyId} was rotated`);
      return;
    }
    if ((event.type === 'stateChanged' && event.from === 'Active') || event.type === 'keyDestroyed') {
      if (event.keyId) resolveLifecycle(alerts, (a) => a.keyId === event.keyId, `version ${event.keyId} is no longer Active`);
    }
  });
}

const ROTATION_DUE = 'rotation-due:';
const EXPIRING = 'cryptoperiod:expiring:';
const EXPIRED = 'cryptoperiod:expired:';
const LIFECYCLE_PREFIXES = [ROTATION_DUE, EXPIRING, EXPIRED];

function resolveLifecycle(alerts: AlertManager, match: (details: { keyId?: unknown; baseKeyId?: unknown }) => boolean, summary: string): string[] {
  const resolved: string[] = [];
  for (const a of alerts.active()) {
    if (!LIFECYCLE_PREFIXES.some((p) => a.key.startsWith(p))) continue;
    if (match(a.details) && alerts.resolve(a.key, `resolved: ${summary}`)) resolved.push(a.key);
  }
  return resolved;
}

/** One key in use, as the cryptoperiod check sees it. */
export interface KeyLifecycleInfo {
  /** The key (version) that signs, e.g. `payments.v3`. */
  keyId: string;
  /** The logical key it is a version of, when there is one. */
  baseKeyId?: string;
  /** End of the cryptoperiod (protect-stop): no signing after it. */
  expiresAt?: Date;
  /** When the key is scheduled to rotate. */
  rotationDueAt?: Date;
}

export type KeyListProvider = () => Promise<KeyLifecycleInfo[]>;

export interface CryptoperiodWatchOptions {
  alerts: AlertManager;
  /** The keys in use (Active versions). A key that is no longer listed has its alerts resolved. */
  keys: KeyListProvider;
  /** Warn this many days ahead of `expiresAt` / `rotationDueAt`. Default 30. */
  warnDays?: number;
  /** Period of the background checks started by `start()`. Default 3600000 (1 h). */
  intervalMs?: number;
  /** Clock (ms since epoch). Default Date.now. */
  now?: () => number;
  /** Where a failed key listing is reported by background checks. Default: console.error. */
  onError?: (error: unknown) => void;
}

export interface CryptoperiodCheckResult {
  /** Alert keys that fire after this check (new or already firing). */
  firing: string[];
  /** Alert keys this check fired (first notification). */
  fired: string[];
  /** Alert keys this check resolved. */
  resolved: string[];
  keys: number;
}

/**
 * Checks a key list for cryptoperiods ending within `warnDays` (`cryptoperiod:expiring:<keyId>`,
 * warning), ended (`cryptoperiod:expired:<keyId>`, critical; the expiring alert is resolved as
 * escalated) and rotations due within `warnDays` (`rotation-due:<keyId>`, warning; critical when
 * overdue). Alerts go through the AlertManager, so each fires once and not on every check; an
 * alert whose key is no longer listed (rotated, deactivated) or no longer due resolves.
 */
export class CryptoperiodWatch {
  readonly warnMs: number;
  readonly intervalMs: number;
  private readonly alerts: AlertManager;
  private readonly keys: KeyListProvider;
  private readonly now: () => number;
  private readonly onError: (error: unknown) => void;
  private readonly loop: PeriodicRunner;
  /** Alert keys raised by this watch and still firing. */
  private readonly mine = new Set<string>();
  private running: Promise<CryptoperiodCheckResult> | undefined;

  constructor(options: CryptoperiodWatchOptions) {
    const warnDays = options.warnDays ?? 30;
    if (!Number.isFinite(warnDays) || warnDays < 0) throw new HsmError('InvalidArgument', 'warnDays must be a number >= 0', { details: { field: 'warnDays' } });
    const intervalMs = options.intervalMs ?? 3_600_000;
    if (!Number.isFinite(intervalMs) || intervalMs <= 0) throw new HsmError('InvalidArgument', 'intervalMs must be a positive number', { details: { field: 'intervalMs' } });
    if (typeof options.keys !== 'function') throw new HsmError('InvalidArgument', 'keys must be a function returning the keys in use', { details: { field: 'keys' } });
    this.warnMs = warnDays * DAY_MS;
    this.intervalMs = intervalMs;
    this.alerts = options.alerts;
    this.keys = options.keys;
    this.now = options.now ?? Date.now;
    this.onError = options.onError ?? ((error) => console.error('cryptoperiod check failed:', error instanceof Error ? error.message : error));
    this.loop = new PeriodicRunner(() => this.check(), this.intervalMs, this.onError);
  }

  get isRunning(): boolean {
    return this.loop.isRunning;
  }

  /** Runs the check once (joins a check in progress). */
  check(): Promise<CryptoperiodCheckResult> {
    if (!this.running) {
      this.running = this.run().finally(() => {
        this.running = undefined;
      });
    }
    return this.running;
  }

  /** Checks now and then every `intervalMs` (unref'd timer). Idempotent. */
  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    this.loop.stop();
    await this.running?.catch(() => undefined);
  }

  private async run(): Promise<CryptoperiodCheckResult> {
    const list = await this.keys();
    const now = this.now();
    const wanted = new Map<string, { severity: 'warning' | 'critical'; rule: string; summary: string; details: Record<string, string | number | boolean> }>();
    for (const k of list) {
      const base = { keyId: k.keyId, ...(k.baseKeyId ? { baseKeyId: k.baseKeyId } : {}) };
      const name = k.baseKeyId && k.baseKeyId !== k.keyId ? `key ${k.baseKeyId} (version ${k.keyId})` : `key ${k.keyId}`;
      if (k.expiresAt) {
        const at = k.expiresAt.getTime();
        const details = { ...base, expiresAt: k.expiresAt.toISOString() };
        if (at <= now) {
          wanted.set(`${EXPIRED}${k.keyId}`, { severity: 'critical', rule: 'cryptoperiod', summary: `${name}: cryptoperiod ended at ${k.expiresAt.toISOString()}; it can no longer sign: rotate it`, details });
        } else if (at - now <= this.warnMs) {
          wanted.set(`${EXPIRING}${k.keyId}`, { severity: 'warning', rule: 'cryptoperiod', summary: `${name}: cryptoperiod ends in ${days(at - now)} (${k.expiresAt.toISOString()})`, details: { ...details, daysLeft: round1((at - now) / DAY_MS) } });
        }
      }
      if (k.rotationDueAt) {
        const at = k.rotationDueAt.getTime();
        const details = { ...base, rotationDueAt: k.rotationDueAt.toISOString() };
        if (at <= now) {
          wanted.set(`${ROTATION_DUE}${k.keyId}`, { severity: 'critical', rule: 'rotation-due', summary: `${name}: rotation overdue since ${k.rotationDueAt.toISOString()}`, details });
        } else if (at - now <= this.warnMs) {
          wanted.set(`${ROTATION_DUE}${k.keyId}`, { severity: 'warning', rule: 'rotation-due', summary: `${name}: rotation due in ${days(at - now)} (${k.rotationDueAt.toISOString()})`, details });
        }
      }
    }
    const fired: string[] = [];
    const resolved: string[] = [];
    const firingNow = new Map(this.alerts.active().map((a) => [a.key, a]));
    for (const [key, alert] of wanted) {
      // Escalation: a warning that became critical is resolved as escalated and raised again.
      const current = firingNow.get(key);
      if (current && current.severity === 'warning' && alert.severity === 'critical') {
        if (this.alerts.resolve(key, `escalated: ${alert.summary}`)) resolved.push(key);
      }
      if (key.startsWith(EXPIRED)) {
        const expiring = `${EXPIRING}${key.slice(EXPIRED.length)}`;
        if (firingNow.has(expiring) && this.alerts.resolve(expiring, `escalated: ${alert.summary}`)) {
          resolved.push(expiring);
          this.mine.delete(expiring);
        }
      }
      if (this.alerts.fire(key, alert)) fired.push(key);
      this.mine.add(key);
    }
    // Alerts this watch (or the rotation events) raised for keys no longer due or no longer listed.
    const listed = new Set(list.map((k) => k.keyId));
    for (const key of [...firingNow.keys()]) {
      if (wanted.has(key) || resolved.includes(key)) continue;
      const prefix = LIFECYCLE_PREFIXES.find((p) => key.startsWith(p));
      if (!prefix) continue;
      const keyId = key.slice(prefix.length);
      // A rotation-due alert from a rotationWarning event stays until the version is gone or rotated.
      if (!this.mine.has(key) && listed.has(keyId)) continue;
      const why = listed.has(keyId) ? 'no longer due' : `${keyId} is no longer in use (rotated or deactivated)`;
      if (this.alerts.resolve(key, `resolved: ${why}`)) resolved.push(key);
      this.mine.delete(key);
    }
    return { firing: this.alerts.active().map((a) => a.key).filter((k) => LIFECYCLE_PREFIXES.some((p) => k.startsWith(p))), fired, resolved, keys: list.length };
  }
}

function days(ms: number): string {
  const d = ms / DAY_MS;
  return d >= 1 ? `${round1(d)} day(s)` : `${round1(ms / 3_600_000)} hour(s)`;
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

// ------------------------------------------------------------------ a key registry as the source

/** The parts of a key version the helpers below read (`@olocus/hsm-rotation`'s KeyVersion fits). */
export interface RegistryVersion {
  keyId: string;
  baseKeyId: string;
  state: string;
  version?: number;
  algorithm?: string;
  backend?: string;
  activatedAt?: Date;
  expiresAt?: Date;
  destroyAfter?: Date;
  lastUsedAt?: Date;
  usageCount?: number;
}

/** The parts of a key registry the helpers below use (`@olocus/hsm-rotation`'s KeyRegistry fits). */
export interface KeyRegistryLike {
  listKeyVersions(options: { limit?: number; cursor?: string }): Promise<{ versions: RegistryVersion[]; nextCursor?: string }>;
  getLogicalKey(baseKeyId: string): Promise<{ rotationIntervalMs?: number }>;
}

async function allVersions(registry: KeyRegistryLike): Promise<RegistryVersion[]> {
  const out: RegistryVersion[] = [];
  let cursor: string | undefined;
  do {
    const page = await registry.listKeyVersions({ limit: 1000, ...(cursor ? { cursor } : {}) });
    out.push(...page.versions);
    cursor = page.nextCursor;
  } while (cursor);
  return out;
}

/**
 * A key-list provider over a key registry: every Active version, with its protect-stop date
 * (`expiresAt`) and, for logical keys on a rotation schedule, activation + interval as `rotationDueAt`.
 */
export function registryKeyList(registry: KeyRegistryLike): KeyListProvider {
  return async () => {
    const active = (await allVersions(registry)).filter((v) => v.state === 'Active');
    const intervals = new Map<string, number | undefined>();
    const out: KeyLifecycleInfo[] = [];
    for (const v of active) {
      if (!intervals.has(v.baseKeyId)) intervals.set(v.baseKeyId, (await registry.getLogicalKey(v.baseKeyId)).rotationIntervalMs);
      const interval = intervals.get(v.baseKeyId);
      const info: KeyLifecycleInfo = { keyId: v.keyId, baseKeyId: v.baseKeyId };
      if (v.expiresAt) info.expiresAt = v.expiresAt;
      if (interval !== undefined && v.activatedAt) info.rotationDueAt = new Date(v.activatedAt.getTime() + interval);
      out.push(info);
    }
    return out;
  };
}

/** Key versions by state (`{ Active: 3, Superseded: 2, ... }`), for the status page and the `keys` gauge. */
export function registryKeyCounts(registry: KeyRegistryLike): () => Promise<Record<string, number>> {
  return async () => {
    const counts: Record<string, number> = {};
    for (const v of await allVersions(registry)) counts[v.state] = (counts[v.state] ?? 0) + 1;
    return counts;
  };
}

// ------------------------------------------------------------------ the key inventory of the status page

/** One key (version) as the status page lists it. */
export interface KeyInventoryItem {
  keyId: string;
  /** The logical key, for versions the registry rotates. */
  baseKeyId?: string;
  version?: number;
  /** Registry state (Active, Superseded, ...) or the backend's (enabled, disabled, ...). */
  state: string;
  algorithm?: string;
  backend?: string;
  activatedAt?: Date;
  /** End of the cryptoperiod (protect-stop): no signing after it. */
  expiresAt?: Date;
  /** Next scheduled rotation (Active versions of logical keys with a rotation interval). */
  rotationDueAt?: Date;
  /** PendingDestruction: when the key may be destroyed. */
  destroyAfter?: Date;
  lastUsedAt?: Date;
  usageCount?: number;
  /** Where the entry comes from: `registry` or `backend` (a key outside the registry). */
  source?: string;
}

export type KeyInventoryProvider = () => Promise<KeyInventoryItem[]>;

/**
 * Every version in a key registry with its state, cryptoperiod end and (Active versions of
 * keys on a schedule) next rotation = activation + interval, the date the rotation manager uses.
 */
export function registryInventory(registry: KeyRegistryLike): KeyInventoryProvider {
  return async () => {
    const versions = await allVersions(registry);
    const intervals = new Map<string, number | undefined>();
    const out: KeyInventoryItem[] = [];
    for (const v of versions) {
      const item: KeyInventoryItem = { keyId: v.keyId, baseKeyId: v.baseKeyId, state: v.state, source: 'registry' };
      if (v.version !== undefined) item.version = v.version;
      if (v.algorithm) item.algorithm = v.algorithm;
      if (v.backend) item.backend = v.backend;
      if (v.activatedAt) item.activatedAt = v.activatedAt;
      if (v.expiresAt) item.expiresAt = v.expiresAt;
      if (v.destroyAfter) item.destroyAfter = v.destroyAfter;
      if (v.lastUsedAt) item.lastUsedAt = v.lastUsedAt;
      if (v.usageCount !== undefined) item.usageCount = v.usageCount;
      if (v.state === 'Active' && v.activatedAt) {
        if (!intervals.has(v.baseKeyId)) intervals.set(v.baseKeyId, (await registry.getLogicalKey(v.baseKeyId)).rotationIntervalMs);
        const interval = intervals.get(v.baseKeyId);
        if (interval !== undefined) item.rotationDueAt = new Date(v.activatedAt.getTime() + interval);
      }
      out.push(item);
    }
    return out;
  };
}
