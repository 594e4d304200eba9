import type { Kysely, Selectable } from 'kysely';
import { sql } from 'kysely';
import {
  HsmError,
  assertValidKeyId,
  isKeyAlgorithm,
  type KeyAlgorithm,
  type KeyUsage,
  type KeyVersionResolver,
  type ResolvedKeyVersion,
} from '@olocus/hsm-core';
import { assertChangeContext, illegalTransition, rotationError, type ChangeContext } from './errors.js';
import { canTransition, isKeyState, KEY_STATES, VERIFYING_STATES, type KeyState } from './states.js';
import type { Database, KeyVersionTable, LogicalKeyTable } from './storage/schema.js';
import { beforeCommit, isUniqueViolation, openStore, type Store } from './storage/database.js';
import { parseWithSchema } from '@olocus/hsm-core';
import { storageConfigSchema, type StorageConfigInput } from './config.js';
import type {
  KeyVersion,
  ListLogicalKeysOptions,
  ListVersionsOptions,
  LogicalKey,
  LogicalKeyPage,
  StateChange,
  VersionPage,
} from './types.js';

export type Trx = Kysely<Database>;

export interface KeyRegistryOptions {
  /** The clock for every recorded time. Default `() => new Date()`. */
  now?: () => Date;
  /**
   * Lifetime of cached getActiveKey results in milliseconds (default 1000; 0 = no cache).
   * Changes made through this process invalidate the cache at once; changes made by another
   * node become visible here at most this long after they commit.
   */
  cacheTtlMs?: number;
  /** Monotonic clock for the cache TTL (milliseconds). Default `performance.now`. */
  monotonicNow?: () => number;
  /** Usage counts are written this often (ms, default 5000) and on close(). */
  usageFlushIntervalMs?: number;
  /** Whether close() also closes the store (true when the registry opened it). */
  ownsStore?: boolean;
  /**
   * Receives the state changes of a transaction inside it, just before it commits; a rejection
   * rolls them back. An audit log written here can never miss a committed change, whatever
   * crashes when (changes completed by `reconcile()` included).
   */
  beforeCommit?: (changes: readonly StateChange[]) => Promise<void>;
}

/** Per-version side effects a transition may carry. */
export interface TransitionExtras {
  overlapUntil?: number | null;
  destroyAfter?: number | null;
  successorVersion?: number;
  predecessorVersion?: number;
  expiresAt?: number | null;
}

export type StateChangeListener = (change: StateChange) => void;

import { parseVersionKeyId, versionKeyId } from './key-ids.js';

export { versionKeyId, parseVersionKeyId };

/** Logical key ids leave room for the `.v<N>` suffix inside core's 128-character key id. */
export function assertValidBaseKeyId(baseKeyId: unknown, field = 'baseKeyId'): asserts baseKeyId is string {
  assertValidKeyId(baseKeyId, field);
  if ((baseKeyId as string).length > 117) {
    throw new HsmError('InvalidArgument', `${field} ${JSON.stringify(baseKeyId)} is longer than 117 characters (room is kept for the ".v<N>" version suffix)`, {
      details: { field },
    });
  }
}

let savepoints = 0;

/**
 * Runs one statement under a savepoint, so that a constraint violation leaves the transaction
 * usable (PostgreSQL aborts the whole transaction otherwise) and can be explained by a query.
 */
export async function underSavepoint<T>(trx: Trx, fn: () => Promise<T>): Promise<T> {
  const name = `olocus_sp_${++savepoints}`;
  await sql.raw(`savepoint ${name}`).execute(trx);
  try {
    const result = await fn();
    await sql.raw(`release savepoint ${name}`).execute(trx);
    return result;
  } catch (error) {
    await sql.raw(`rollback to savepoint ${name}`).execute(trx).catch(() => undefined);
    throw error;
  }
}

const ms = (value: number | null | undefined): Date | undefined => (value === null || value === undefined ? undefined : new Date(Number(value)));

export function toKeyVersion(row: Selectable<KeyVersionTable>): KeyVersion {
  const v: KeyVersion = {
    keyId: row.key_id,
    baseKeyId: row.base_key_id,
    version: Number(row.version),
    backend: row.backend,
    keyRef: row.key_ref,
    algorithm: row.algorithm as KeyAlgorithm,
    usages: JSON.parse(row.usages) as KeyUsage[],
    state: row.state as KeyState,
    createdAt: new Date(Number(row.created_at)),
    stateChangedAt: new Date(Number(row.state_changed_at)),
    usageCount: Number(row.usage_count),
  };
  const opt: [keyof KeyVersion, Date | number | undefined][] = [
    ['activatedAt', ms(row.activated_at)],
    ['deactivatedAt', ms(row.deactivated_at)],
    ['expiresAt', ms(row.expires_at)],
    ['overlapUntil', ms(row.overlap_until)],
    ['destroyAfter', ms(row.destroy_after)],
    ['revokedAt', ms(row.revoked_at)],
    ['lastUsedAt', ms(row.last_used_at)],
    ['predecessorVersion', row.predecessor_version === null ? undefined : Number(row.predecessor_version)],
    ['successorVersion', row.successor_version === null ? undefined : Number(row.successor_version)],
  ];
  for (const [k, val] of opt) if (val !== undefined) (v as unknown as Record<string, unknown>)[k] = val;
  return v;
}

export function toLogicalKey(row: Selectable<LogicalKeyTable>): LogicalKey {
  const k: LogicalKey = {
    baseKeyId: row.base_key_id,
    algorithm: row.algorithm as KeyAlgorithm,
    usages: JSON.parse(row.usages) as KeyUsage[],
    backend: row.backend,
    lastVersion: Number(row.last_version),
    createdAt: new Date(Number(row.created_at)),
    createdBy: row.created_by,
  };
  if (row.rotation_interval_ms !== null) k.rotationIntervalMs = Number(row.rotation_interval_ms);
  if (Number(row.backup) === 1) k.backup = true;
  return k;
}

function encodeCursor(parts: (string | number)[]): string {
  return Buffer.from(JSON.stringify(parts)).toString('base64url');
}

function decodeCursor(cursor: string, arity: number): (string | number)[] {
  try {
    const parts = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(parts) && parts.length === arity) return parts as (string | number)[];
  } catch {
    /* fall through */
  }
  throw new HsmError('InvalidArgument', 'cursor is not a cursor returned by this registry', { details: { field: 'cursor' } });
}

function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw new HsmError('InvalidArgument', `limit must be a whole number from 1 to 1000 (got ${limit})`, { details: { field: 'limit' } });
  }
  return limit;
}

interface CacheEntry {
  version: KeyVersion;
  resolved: ResolvedKeyVersion;
  expires: number;
}

/**
 * The key registry: logical keys, their versions, states and history, over SQLite or
 * PostgreSQL. Implements core's `KeyVersionResolver`, so
 * `new HsmManager(config, { resolver: registry })` signs and verifies by logical key.
 */
export class KeyRegistry implements KeyVersionResolver {
  readonly store: Store;
  readonly now: () => Date;
  private readonly cacheTtlMs: number;
  private readonly monotonicNow: () => number;
  private readonly cache = new Map<string, CacheEntry>();
  private generation = 0;
  private readonly listeners = new Set<StateChangeListener>();
  private pendingUsage = new Map<string, { count: number; lastUsed: number }>();
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly ownsStore: boolean;
  private closed = false;
  /** Milliseconds now: Date.now unless a clock was injected (keeps the signing path allocation-free). */
  private readonly nowMs: () => number;
  private beforeCommitHook: ((changes: readonly StateChange[]) => Promise<void>) | undefined;
  private readonly pendingChanges = new WeakMap<object, StateChange[]>();

  constructor(store: Store, options: KeyRegistryOptions = {}) {
    this.store = store;
    this.now = options.now ?? (() => new Date());
    const injected = options.now;
    this.nowMs = injected ? () => injected().getTime() : Date.now;
    this.cacheTtlMs = options.cacheTtlMs ?? 1000;
    this.monotonicNow = options.monotonicNow ?? (() => performance.now());
    this.ownsStore = options.ownsStore ?? false;
    this.beforeCommitHook = options.beforeCommit;
    const interval = options.usageFlushIntervalMs ?? 5000;
    this.flushTimer = setInterval(() => void this.flushUsage().catch(() => undefined), interval);
    this.flushTimer.unref();
  }

  /** Opens (and migrates) the storage and returns a registry that owns it. */
  static async open(storage: StorageConfigInput, options: Omit<KeyRegistryOptions, 'ownsStore'> = {}): Promise<KeyRegistry> {
    const config = parseWithSchema(storageConfigSchema, storage, 'storage');
    const store = await openStore(config);
    try {
      await store.migrate();
    } catch (error) {
      await store.close();
      throw error;
    }
    return new KeyRegistry(store, { ...options, ownsStore: true });
  }

  get dialect(): Store['dialect'] {
    return this.store.dialect;
  }

  private get db(): Trx {
    if (this.closed) throw new HsmError('Closed', 'the key registry is closed');
    return this.store.db;
  }

  /** Subscribes to every committed state change made through this registry. */
  onStateChange(listener: StateChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ---------------------------------------------------------------- queries

  async getLogicalKey(baseKeyId: string): Promise<LogicalKey> {
    const row = await this.db.selectFrom('logical_keys').selectAll().where('base_key_id', '=', baseKeyId).executeTakeFirst();
    if (!row) throw new HsmError('KeyNotFound', `unknown logical key ${JSON.stringify(baseKeyId)}`, { details: { baseKeyId } });
    return toLogicalKey(row);
  }

  async hasLogicalKey(baseKeyId: string): Promise<boolean> {
    const row = await this.db.selectFrom('logical_keys').select('base_key_id').where('base_key_id', '=', baseKeyId).executeTakeFirst();
    return row !== undefined;
  }

  /** The Active version of a logical key (cached; see `cacheTtlMs`). KeyNotFound when none. */
  async getActiveKey(baseKeyId: string): Promise<KeyVersion> {
    return (await this.activeEntry(baseKeyId)).version;
  }

  /** Same as getActiveKey but bypasses (and refreshes) the cache. */
  async getActiveKeyUncached(baseKeyId: string): Promise<KeyVersion> {
    this.cache.delete(baseKeyId);
    return (await this.activeEntry(baseKeyId)).version;
  }

  private async activeEntry(baseKeyId: string): Promise<CacheEntry> {
    const hit = this.cache.get(baseKeyId);
    if (hit !== undefined) {
      if (hit.expires > this.monotonicNow()) return hit;
      this.cache.delete(baseKeyId);
    }
    const generation = this.generation;
    // The read holds the Active row against a rotation (a shared row lock on PostgreSQL; SQLite's
    // write lock) while it takes the time: no swap can commit in between, and a swap takes its own
    // time only once it holds the row, so the version was Active at `confirmed` by the registry's
    // own record, and a signature dated by it verifies by that date.
    const { row, confirmed } = await this.store.tx(async (trx) => {
      let q = trx.selectFrom('key_versions').selectAll().where('base_key_id', '=', baseKeyId).where('state', '=', 'Active');
      if (this.store.dialect === 'postgres') q = q.forShare();
      const found = await q.executeTakeFirst();
      return { row: found, confirmed: this.nowMs() };
    });
    if (!row) throw await this.noActiveVersion(baseKeyId);
    const version = toKeyVersion(row);
    const readStarted = confirmed;
    const activatedAt = version.activatedAt?.getTime() ?? readStarted;
    const entry: CacheEntry = {
      version,
      resolved: { baseKeyId, version: version.version, key: version.keyId, algorithm: version.algorithm, confirmedActiveAt: new Date(Math.max(readStarted, activatedAt)) },
      expires: this.monotonicNow() + this.cacheTtlMs,
    };
    if (this.cacheTtlMs > 0 && generation === this.generation && !this.closed) this.cache.set(baseKeyId, entry);
    return entry;
  }

  private async noActiveVersion(baseKeyId: string): Promise<HsmError> {
    const latest = await this.db
      .selectFrom('key_versions')
      .select(['version', 'state'])
      .where('base_key_id', '=', baseKeyId)
      .orderBy('version', 'desc')
      .executeTakeFirst();
    if (latest) {
      return new HsmError('KeyNotFound', `logical key ${JSON.stringify(baseKeyId)} has no Active version (latest is v${latest.version}, ${latest.state})`, {
        details: { baseKeyId, latestVersion: Number(latest.version), latestState: latest.state },
      });
    }
    if (await this.hasLogicalKey(baseKeyId)) {
      return new HsmError('KeyNotFound', `logical key ${JSON.stringify(baseKeyId)} has no version yet (a creation was interrupted; run reconcile)`, { details: { baseKeyId } });
    }
    return new HsmError('KeyNotFound', `unknown logical key ${JSON.stringify(baseKeyId)}`, { details: { baseKeyId } });
  }

  /**
   * The version that was Active at `signatureTime`: activatedAt <= t < deactivatedAt (or still
   * Active), and whose state now still allows verification (Active, Superseded, Archived; never
   * a version that was ever Revoked or Compromised, never PreActivation, Suspended,
   * PendingDestruction or Destroyed). KeyNotFound when none.
   */
  async getKeyForVerification(baseKeyId: string, signatureTime: Date): Promise<KeyVersion> {
    const t = signatureTime.getTime();
    if (!Number.isFinite(t)) throw new HsmError('InvalidArgument', 'signatureTime is not a valid date', { details: { field: 'signatureTime' } });
    const row = await this.db
      .selectFrom('key_versions')
      .selectAll()
      .where('base_key_id', '=', baseKeyId)
      .where('activated_at', '<=', t)
      .where((eb) => eb.or([eb('deactivated_at', 'is', null), eb('deactivated_at', '>', t)]))
      .where('state', 'in', [...VERIFYING_STATES])
      .where('revoked_at', 'is', null)
      .orderBy('version', 'desc')
      .executeTakeFirst();
    if (!row) {
      throw new HsmError('KeyNotFound', `logical key ${JSON.stringify(baseKeyId)} has no version that was Active at ${signatureTime.toISOString()} and may still verify`, {
        details: { baseKeyId, signatureTime: signatureTime.toISOString() },
      });
    }
    return toKeyVersion(row);
  }

  /**
   * Every version a signature dated `signatureTime` may come from: the one Active then, plus
   * versions superseded at most `overlap` before it (a node whose cache was still fresh may
   * have signed with them). Newest first; empty when none.
   */
  async getVerificationCandidates(baseKeyId: string, signatureTime: Date): Promise<KeyVersion[]> {
    const t = signatureTime.getTime();
    const rows = await this.db
      .selectFrom('key_versions')
      .selectAll()
      .where('base_key_id', '=', baseKeyId)
      .where('activated_at', '<=', t)
      .where((eb) =>
        eb.or([eb('deactivated_at', 'is', null), eb('deactivated_at', '>', t), eb.and([eb('overlap_until', 'is not', null), eb('overlap_until', '>', t)])]),
      )
      .where('state', 'in', [...VERIFYING_STATES])
      .where('revoked_at', 'is', null)
      .orderBy('version', 'desc')
      .execute();
    return rows.map(toKeyVersion);
  }

  /** All versions of a logical key, oldest first. KeyNotFound for an unknown key. */
  async getKeyVersions(baseKeyId: string): Promise<KeyVersion[]> {
    const rows = await this.db.selectFrom('key_versions').selectAll().where('base_key_id', '=', baseKeyId).orderBy('version', 'asc').execute();
    if (rows.length === 0 && !(await this.hasLogicalKey(baseKeyId))) {
      throw new HsmError('KeyNotFound', `unknown logical key ${JSON.stringify(baseKeyId)}`, { details: { baseKeyId } });
    }
    return rows.map(toKeyVersion);
  }

  /** One version by its key id (`<base>.v<N>`). */
  async getKeyVersion(keyId: string): Promise<KeyVersion> {
    const row = await this.db.selectFrom('key_versions').selectAll().where('key_id', '=', keyId).executeTakeFirst();
    if (!row) throw new HsmError('KeyNotFound', `unknown key version ${JSON.stringify(keyId)}`, { details: { keyId } });
    return toKeyVersion(row);
  }

  /** Recorded state changes, oldest first: of one version (key id) or of every version of a logical key. */
  async getHistory(keyIdOrBase: string): Promise<StateChange[]> {
    const rows = await this.db
      .selectFrom('key_state_history')
      .selectAll()
      .where((eb) => eb.or([eb('key_id', '=', keyIdOrBase), eb('base_key_id', '=', keyIdOrBase)]))
      .orderBy('id', 'asc')
      .execute();
    return rows.map((r) => ({
      keyId: r.key_id,
      baseKeyId: r.base_key_id,
      version: Number(r.version),
      from: (r.from_state ?? null) as KeyState | null,
      to: r.to_state as KeyState,
      at: new Date(Number(r.at)),
      actor: r.actor,
      reason: r.reason,
    }));
  }

  /** Versions across logical keys, filtered, in (baseKeyId, version) order, paged. */
  async listKeyVersions(options: ListVersionsOptions = {}): Promise<VersionPage> {
    const limit = pageLimit(options.limit);
    let q = this.db.selectFrom('key_versions').selectAll();
    if (options.baseKeyId !== undefined) q = q.where('base_key_id', '=', options.baseKeyId);
    if (options.state !== undefined) {
      const states = Array.isArray(options.state) ? options.state : [options.state];
      for (const s of states) if (!isKeyState(s)) throw new HsmError('InvalidArgument', `state must be one of ${KEY_STATES.join(', ')} (got ${JSON.stringify(s)})`, { details: { field: 'state' } });
      q = q.where('state', 'in', states);
    }
    if (options.algorithm !== undefined) {
      if (!isKeyAlgorithm(options.algorithm)) throw new HsmError('InvalidArgument', `unknown algorithm ${JSON.stringify(options.algorithm)}`, { details: { field: 'algorithm' } });
      q = q.where('algorithm', '=', options.algorithm);
    }
    if (options.backend !== undefined) q = q.where('backend', '=', options.backend);
    if (options.cursor !== undefined) {
      const [base, version] = decodeCursor(options.cursor, 2) as [string, number];
      q = q.where((eb) => eb.or([eb('base_key_id', '>', base), eb.and([eb('base_key_id', '=', base), eb('version', '>', version)])]));
    }
    const rows = await q.orderBy('base_key_id').orderBy('version').limit(limit + 1).execute();
    const versions = rows.slice(0, limit).map(toKeyVersion);
    const last = versions[versions.length - 1];
    return rows.length > limit && last ? { versions, nextCursor: encodeCursor([last.baseKeyId, last.version]) } : { versions };
  }

  async listLogicalKeys(options: ListLogicalKeysOptions = {}): Promise<LogicalKeyPage> {
    const limit = pageLimit(options.limit);
    let q = this.db.selectFrom('logical_keys').selectAll();
    if (options.prefix) q = q.where('base_key_id', '>=', options.prefix).where('base_key_id', '<', `${options.prefix}\uffff`);
    if (options.cursor !== undefined) q = q.where('base_key_id', '>', String(decodeCursor(options.cursor, 1)[0]));
    const rows = await q.orderBy('base_key_id').limit(limit + 1).execute();
    const keys = rows.slice(0, limit).map(toLogicalKey);
    const last = keys[keys.length - 1];
    return rows.length > limit && last ? { keys, nextCursor: encodeCursor([last.baseKeyId]) } : { keys };
  }

  // ---------------------------------------------------------------- usage (batched)

  /**
   * Counts a use of a version. Nothing is written here: counts accumulate in memory and are
   * flushed every `usageFlushIntervalMs` and on close(), so signing does no database write.
   */
  recordKeyUsage(keyId: string): void {
    if (this.closed) return;
    const at = this.nowMs();
    const entry = this.pendingUsage.get(keyId);
    if (entry) {
      entry.count++;
      if (at > entry.lastUsed) entry.lastUsed = at;
    } else this.pendingUsage.set(keyId, { count: 1, lastUsed: at });
  }

  /** Writes the batched usage counts now. */
  async flushUsage(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.pendingUsage.size === 0) return;
    const batch = this.pendingUsage;
    this.pendingUsage = new Map();
    this.flushing = (async () => {
      try {
        await this.store.tx(async (trx) => {
          for (const [keyId, { count, lastUsed }] of batch) {
            await trx
              .updateTable('key_versions')
              .set({
                usage_count: sql<number>`usage_count + ${count}`,
                last_used_at: sql<number>`case when last_used_at is null or last_used_at < ${lastUsed} then ${lastUsed} else last_used_at end`,
              })
              .where('key_id', '=', keyId)
              .execute();
          }
        });
      } catch (error) {
        // keep the counts for the next flush
        for (const [keyId, { count, lastUsed }] of batch) {
          const e = this.pendingUsage.get(keyId);
          if (e) {
            e.count += count;
            e.lastUsed = Math.max(e.lastUsed, lastUsed);
          } else this.pendingUsage.set(keyId, { count, lastUsed });
        }
        throw error;
      } finally {
        this.flushing = undefined;
      }
    })();
    await this.flushing;
  }

  // ---------------------------------------------------------------- KeyVersionResolver

  resolveForSigning(baseKeyId: string): Promise<ResolvedKeyVersion> {
    // Hot path: a fresh cache hit resolves without touching the database or an extra await.
    const hit = this.cache.get(baseKeyId);
    if (hit !== undefined && hit.expires > this.monotonicNow()) {
      const error = this.expired(hit);
      return error ? Promise.reject(error) : Promise.resolve(hit.resolved);
    }
    return this.activeEntry(baseKeyId).then((entry) => {
      const error = this.expired(entry);
      if (error) throw error;
      return entry.resolved;
    });
  }

  private expired(entry: CacheEntry): HsmError | undefined {
    const expires = entry.version.expiresAt;
    if (expires === undefined || expires.getTime() > this.nowMs()) return undefined;
    return new HsmError('KeyExpired', `key ${entry.version.keyId} passed its protect-stop date ${expires.toISOString()} (LC-PROTECT); rotate ${entry.version.baseKeyId}`, {
      details: { keyId: entry.version.keyId, baseKeyId: entry.version.baseKeyId },
    });
  }

  async resolveForVerification(baseKeyId: string, signatureTime: Date): Promise<ResolvedKeyVersion> {
    const v = await this.getKeyForVerification(baseKeyId, signatureTime);
    return { baseKeyId, version: v.version, key: v.keyId, algorithm: v.algorithm };
  }

  /**
   * Versions a signature of unknown time may be checked against: every version that was Active
   * at some time, may still verify, and was never revoked or compromised, newest first. A
   * signature valid under one of them was made while it was Active (only then could it sign).
   */
  async versionsForVerification(baseKeyId: string): Promise<ResolvedKeyVersion[]> {
    const rows = await this.db
      .selectFrom('key_versions')
      .selectAll()
      .where('base_key_id', '=', baseKeyId)
      .where('activated_at', 'is not', null)
      .where('state', 'in', [...VERIFYING_STATES])
      .where('revoked_at', 'is', null)
      .orderBy('version', 'desc')
      .execute();
    return rows.map(toKeyVersion).map((v) => ({ baseKeyId, version: v.version, key: v.keyId, algorithm: v.algorithm }));
  }

  /**
   * The versions a signature dated `signatureTime` may come from (`getVerificationCandidates`):
   * a sign that read the registry just before a rotation committed is dated by that read, which
   * may fall after the old version's recorded end — its overlap still covers it.
   */
  async versionsForVerificationAt(baseKeyId: string, signatureTime: Date): Promise<ResolvedKeyVersion[]> {
    if (!Number.isFinite(signatureTime.getTime())) throw new HsmError('InvalidArgument', 'signatureTime is not a valid date', { details: { field: 'signatureTime' } });
    const versions = await this.getVerificationCandidates(baseKeyId, signatureTime);
    return versions.map((v) => ({ baseKeyId, version: v.version, key: v.keyId, algorithm: v.algorithm }));
  }

  recordUsage(version: ResolvedKeyVersion): void {
    this.recordKeyUsage(typeof version.key === 'string' ? version.key : version.key.id);
  }

  // ---------------------------------------------------------------- changes

  /**
   * Moves one version to another state (validated against the transition table), recording
   * time, actor and reason. For rotation, retention and destruction use RotationManager, which
   * also acts on the backend.
   */
  async transition(keyId: string, to: KeyState, ctx: ChangeContext, extras: TransitionExtras = {}): Promise<KeyVersion> {
    assertChangeContext(ctx, `transition of ${keyId} to ${to}`);
    const changes: StateChange[] = [];
    const result = await this.store.tx(async (trx) => {
      const row = await this.lockVersion(trx, keyId);
      changes.push(await this.applyTransition(trx, row, to, ctx, this.now().getTime(), extras));
      return this.lockVersion(trx, keyId);
    });
    this.committed(changes);
    return toKeyVersion(result);
  }

  /** @internal Reads a version row for update (row lock on PostgreSQL; SQLite holds the write lock). */
  async lockVersion(trx: Trx, keyId: string): Promise<Selectable<KeyVersionTable>> {
    let q = trx.selectFrom('key_versions').selectAll().where('key_id', '=', keyId);
    if (this.store.dialect === 'postgres') q = q.forUpdate();
    const row = await q.executeTakeFirst();
    if (!row) throw new HsmError('KeyNotFound', `unknown key version ${JSON.stringify(keyId)}`, { details: { keyId } });
    return row;
  }

  /** @internal Locks the logical key row: serializes rotations and creations of one key. */
  async lockLogicalKey(trx: Trx, baseKeyId: string): Promise<Selectable<LogicalKeyTable>> {
    let q = trx.selectFrom('logical_keys').selectAll().where('base_key_id', '=', baseKeyId);
    if (this.store.dialect === 'postgres') q = q.forUpdate();
    const row = await q.executeTakeFirst();
    if (!row) throw new HsmError('KeyNotFound', `unknown logical key ${JSON.stringify(baseKeyId)}`, { details: { baseKeyId } });
    return row;
  }

  /**
   * @internal Validates and applies one transition inside a transaction; the caller passes the
   * returned change to `committed()` after the commit.
   */
  async applyTransition(trx: Trx, row: Selectable<KeyVersionTable>, to: KeyState, ctx: ChangeContext, at: number, extras: TransitionExtras = {}): Promise<StateChange> {
    assertChangeContext(ctx, `transition of ${row.key_id} to ${to}`);
    const from = row.state as KeyState;
    if (!canTransition(from, to)) throw illegalTransition(row.key_id, from, to);
    const set: Partial<Record<keyof KeyVersionTable, unknown>> = { state: to, state_changed_at: at };
    if (to === 'Active') {
      if (from === 'Suspended' && row.expires_at !== null && Number(row.expires_at) <= at) {
        throw illegalTransition(row.key_id, from, to, `its cryptoperiod ended at ${new Date(Number(row.expires_at)).toISOString()}`);
      }
      if (row.activated_at === null) set.activated_at = at;
      set.deactivated_at = null;
      if (extras.expiresAt !== undefined) set.expires_at = extras.expiresAt;
      if (extras.predecessorVersion !== undefined) set.predecessor_version = extras.predecessorVersion;
    }
    if (from === 'Active') set.deactivated_at = at;
    if (to === 'Superseded' && extras.overlapUntil !== undefined) set.overlap_until = extras.overlapUntil;
    if (extras.successorVersion !== undefined) set.successor_version = extras.successorVersion;
    if (to === 'Revoked' || to === 'Compromised') {
      set.revoked_at = row.revoked_at ?? at;
      set.overlap_until = null;
    }
    if (to === 'PendingDestruction') {
      if (extras.destroyAfter === undefined || extras.destroyAfter === null) throw new HsmError('Internal', 'PendingDestruction needs a destroyAfter time');
      set.destroy_after = extras.destroyAfter;
      set.pre_destruction_state = from;
    }
    if (from === 'PendingDestruction' && to !== 'Destroyed') {
      set.destroy_after = null;
      set.pre_destruction_state = null;
    }
    if (to === 'Destroyed') {
      if (row.destroy_after === null || Number(row.destroy_after) > at) {
        throw rotationError(
          'DestructionNotDue',
          `key ${row.key_id} may not be destroyed before ${row.destroy_after === null ? '(no date)' : new Date(Number(row.destroy_after)).toISOString()} (LC-PENDING waiting period)`,
          { keyId: row.key_id },
        );
      }
    }
    try {
      const result = await underSavepoint(trx, () =>
        trx
          .updateTable('key_versions')
          .set(set as never)
          .where('key_id', '=', row.key_id)
          .where('state', '=', from)
          .executeTakeFirst(),
      );
      if (Number(result.numUpdatedRows) !== 1) {
        throw rotationError('RotationInProgress', `key ${row.key_id} changed state concurrently (expected ${from}); try again`, { keyId: row.key_id });
      }
    } catch (error) {
      if (isUniqueViolation(error)) {
        const other = await trx.selectFrom('key_versions').select('key_id').where('base_key_id', '=', row.base_key_id).where('state', '=', 'Active').executeTakeFirst();
        throw illegalTransition(row.key_id, from, to, `${other?.key_id ?? 'another version'} is already Active; at most one Active version per logical key (LC-PRIMARY)`);
      }
      throw error;
    }
    const change: StateChange = {
      keyId: row.key_id,
      baseKeyId: row.base_key_id,
      version: Number(row.version),
      from,
      to,
      at: new Date(at),
      actor: ctx.actor,
      reason: ctx.reason,
    };
    await this.insertHistory(trx, change);
    return change;
  }

  /** @internal */
  /** Sets (or replaces) the hook that sees each transaction's changes before it commits. */
  setBeforeCommit(hook: ((changes: readonly StateChange[]) => Promise<void>) | undefined): void {
    this.beforeCommitHook = hook;
  }

  async insertHistory(trx: Trx, change: StateChange): Promise<void> {
    const hook = this.beforeCommitHook;
    if (hook) {
      const pending = this.pendingChanges.get(trx);
      if (pending) pending.push(change);
      else {
        const changes = [change];
        this.pendingChanges.set(trx, changes);
        beforeCommit(trx, () => hook(changes));
      }
    }
    await trx
      .insertInto('key_state_history')
      .values({
        key_id: change.keyId,
        base_key_id: change.baseKeyId,
        version: change.version,
        from_state: change.from,
        to_state: change.to,
        at: change.at.getTime(),
        actor: change.actor,
        reason: change.reason,
      })
      .execute();
  }

  /** @internal Inserts a new version (PreActivation or Active) and its creation record. */
  async insertVersion(
    trx: Trx,
    args: {
      baseKeyId: string;
      version: number;
      backend: string;
      keyRef: string;
      algorithm: KeyAlgorithm;
      usages: KeyUsage[];
      state: 'PreActivation' | 'Active';
      at: number;
      expiresAt?: number | null;
      predecessorVersion?: number | null;
    },
    ctx: ChangeContext,
  ): Promise<StateChange> {
    assertChangeContext(ctx, `registration of ${args.baseKeyId} v${args.version}`);
    if (!canTransition(null, args.state)) throw illegalTransition(versionKeyId(args.baseKeyId, args.version), null, args.state);
    const keyId = versionKeyId(args.baseKeyId, args.version);
    try {
      await underSavepoint(trx, () =>
        trx
          .insertInto('key_versions')
          .values({
            key_id: keyId,
            base_key_id: args.baseKeyId,
            version: args.version,
            backend: args.backend,
            key_ref: args.keyRef,
            algorithm: args.algorithm,
            usages: JSON.stringify(args.usages),
            state: args.state,
            created_at: args.at,
            activated_at: args.state === 'Active' ? args.at : null,
            deactivated_at: null,
            expires_at: args.state === 'Active' ? (args.expiresAt ?? null) : null,
            state_changed_at: args.at,
            overlap_until: null,
            destroy_after: null,
            pre_destruction_state: null,
            revoked_at: null,
            predecessor_version: args.predecessorVersion ?? null,
            successor_version: null,
            usage_count: 0,
            last_used_at: null,
          })
          .execute(),
      );
    } catch (error) {
      if (isUniqueViolation(error)) {
        const exists = await trx.selectFrom('key_versions').select('key_id').where('key_id', '=', keyId).executeTakeFirst();
        if (exists) throw new HsmError('KeyAlreadyExists', `key version ${keyId} is already registered`, { details: { keyId } });
        throw illegalTransition(keyId, null, args.state, `${args.baseKeyId} already has an Active version; at most one Active version per logical key (LC-PRIMARY)`);
      }
      throw error;
    }
    const change: StateChange = {
      keyId,
      baseKeyId: args.baseKeyId,
      version: args.version,
      from: null,
      to: args.state,
      at: new Date(args.at),
      actor: ctx.actor,
      reason: ctx.reason,
    };
    await this.insertHistory(trx, change);
    return change;
  }

  /** @internal After a commit: drops cached lookups of the touched keys and notifies listeners. */
  committed(changes: readonly StateChange[]): void {
    if (changes.length === 0) return;
    this.generation++;
    for (const c of changes) this.cache.delete(c.baseKeyId);
    for (const c of changes) {
      for (const listener of this.listeners) {
        try {
          listener(c);
        } catch {
          /* a listener's failure never undoes a committed change */
        }
      }
    }
  }

  /** Drops cached lookups (one logical key, or all). */
  invalidate(baseKeyId?: string): void {
    this.generation++;
    if (baseKeyId === undefined) this.cache.clear();
    else this.cache.delete(baseKeyId);
  }

  /** Flushes usage counts, stops the timer and (if it opened it) closes the storage. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flushTimer = undefined;
    try {
      await this.flushUsage();
    } finally {
      this.closed = true;
      this.cache.clear();
      if (this.ownsStore) await this.store.close();
    }
  }
}
