import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Selectable } from 'kysely';
import {
  HsmError,
  isHsmError,
  isKeyAlgorithm,
  KEY_ALGORITHMS,
  type HsmBackend,
  type HsmKeyHandle,
  type KeyAlgorithm,
  type KeyUsage,
} from '@olocus/hsm-core';
import { assertChangeContext, illegalTransition, rotationError, type ChangeContext } from './errors.js';
import { RotationEvents } from './events.js';
import { parseDuration, parsePolicy, type RotationPolicy, type RotationPolicyInput } from './config.js';
import { assertValidBaseKeyId, parseVersionKeyId, toKeyVersion, toLogicalKey, underSavepoint, versionKeyId, type KeyRegistry, type Trx } from './registry.js';
import { canTransition, type KeyState } from './states.js';
import { isUniqueViolation } from './storage/database.js';
import type { RotationJournalTable } from './storage/schema.js';
import { cancelTasks, insertTask } from './tasks.js';
import type { KeyVersion, StateChange } from './types.js';

/** The steps of a rotation, in order; the crash hook fires right after each. */
export const ROTATION_STEPS = ['intent', 'generated', 'registered', 'activated'] as const;
export type RotationStep = (typeof ROTATION_STEPS)[number];
export type RotationKind = 'create' | 'manual' | 'scheduled' | 'emergency';

const OPEN_STEPS = ['intent', 'generated', 'registered'] as const;

export interface RotationHooks {
  /** Called right after each step (tests use it to simulate a crash). */
  afterStep?: (step: RotationStep, info: { baseKeyId: string; version: number; kind: RotationKind }) => void | Promise<void>;
}

export interface RotationManagerOptions {
  registry: KeyRegistry;
  /** The backend new versions are generated in (and destroyed from). */
  backend: HsmBackend;
  policy?: RotationPolicyInput;
  /** This process's name in journal and task rows. Default `<hostname>:<pid>:<random>`. */
  nodeId?: string;
  events?: RotationEvents;
  hooks?: RotationHooks;
}

export interface CreateKeyOptions extends Partial<ChangeContext> {
  actor: string;
  usages?: KeyUsage[];
  /** Per-key rotation interval (ms or "90d"); null = never scheduled; default: the policy's. */
  rotationInterval?: number | string | null;
  /**
   * Every version of this key, now and after each rotation, is generated backup-eligible
   * (`KeySpec.backup`): a key policy that requires backup must say so at creation.
   */
  backup?: boolean;
}

export interface RotateOptions extends ChangeContext {
  /** Refuse (VersionConflict) unless the current version is this one: makes retries and concurrent callers produce one new version. */
  expectedVersion?: number;
}

export interface RotationResult {
  baseKeyId: string;
  kind: RotationKind;
  previous?: KeyVersion;
  current: KeyVersion;
  /** The backend key already existed (found after a crash) and was adopted. */
  adopted: boolean;
  /**
   * Set when this call completed an interrupted rotation instead of starting a new one: a
   * rotation asked for after a crash finishes the one that was under way, never rotates twice.
   */
  recovered?: { fromStep: string; startedAt: Date; owner: string };
}

export interface ReconcileOptions {
  /** Take over unfinished rotations even if their owner's lease has not expired (single-node recovery). */
  force?: boolean;
  /** Also list the backend for `<base>.v<N>` keys the registry does not know (default true). */
  scanBackend?: boolean;
}

export interface ReconcileReport {
  /** Unfinished rotations completed (rolled forward). */
  resumed: { baseKeyId: string; version: number; kind: RotationKind; fromStep: string; adopted: boolean }[];
  /** Unfinished rotations that could not be completed now (retried by the next reconcile). */
  failed: { baseKeyId: string; version: number; fromStep: string; error: string }[];
  /** Backend keys named `<base>.v<N>` for a known logical key with no registry row and no recorded intent: reported, not adopted. */
  orphans: { keyId: string; baseKeyId: string; version: number; ref: string }[];
  /** Unfinished rotations still within their owner's lease (another node is working on them). */
  inProgressElsewhere: { baseKeyId: string; version: number; owner: string }[];
}

type JournalRow = Selectable<RotationJournalTable>;

/** Whether the env crash hook is allowed (test runs only). */
function envCrashHook(step: RotationStep): void {
  if (process.env['OLOCUS_ROTATION_TEST_HOOKS'] === '1' && process.env['OLOCUS_ROTATION_CRASH_AT'] === step) {
    process.kill(process.pid, 'SIGKILL');
  }
}

export function defaultNodeId(): string {
  return `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
}

/**
 * True only when `owner` (a node id made by `defaultNodeId`) names a process on this host that
 * no longer exists: then its lease protects nothing and is taken over at once. A reused pid or
 * a foreign id reads as alive, so the lease is waited out — never a rotation taken from a
 * living node.
 */
export function ownerIsDead(owner: string): boolean {
  const match = /^(.*):(\d+):[0-9a-f]{8}$/.exec(owner);
  if (!match || match[1] !== hostname()) return false;
  const pid = Number(match[2]);
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * Creates, rotates, retires and destroys key versions: the backend side of the lifecycle,
 * made crash-safe by the `rotations` journal (see README, "Crash safety").
 */
export class RotationManager {
  readonly registry: KeyRegistry;
  readonly backend: HsmBackend;
  readonly policy: RotationPolicy;
  readonly nodeId: string;
  readonly events: RotationEvents;
  private readonly hooks: RotationHooks;
  private readonly unsubscribe: () => void;
  /** Rotations this manager's reconcile() completed, handed to the next rotateKey() of that key. */
  private readonly recoveredHere = new Map<string, { result: RotationResult; at: number }>();

  constructor(options: RotationManagerOptions) {
    this.registry = options.registry;
    this.backend = options.backend;
    this.policy = parsePolicy(options.policy ?? {});
    this.nodeId = options.nodeId ?? defaultNodeId();
    this.events = options.events ?? new RotationEvents();
    this.hooks = options.hooks ?? {};
    this.unsubscribe = this.registry.onStateChange((change) => this.events.emit({ type: 'stateChanged', ...change }));
  }

  private nowMs(): number {
    return this.registry.now().getTime();
  }

  private get store() {
    return this.registry.store;
  }

  private async step(step: RotationStep, j: JournalRow): Promise<void> {
    envCrashHook(step);
    await this.hooks.afterStep?.(step, { baseKeyId: j.base_key_id, version: Number(j.to_version), kind: j.kind as RotationKind });
  }

  // ---------------------------------------------------------------- create / rotate

  /** Creates a logical key: version 1 generated in the backend as `<base>.v1` and made Active. */
  async createKey(baseKeyId: string, algorithm: KeyAlgorithm, options: CreateKeyOptions): Promise<KeyVersion> {
    assertValidBaseKeyId(baseKeyId);
    if (!isKeyAlgorithm(algorithm)) {
      throw new HsmError('UnsupportedAlgorithm', `unknown algorithm ${JSON.stringify(algorithm)}; one of ${KEY_ALGORITHMS.join(', ')}`, { details: { field: 'algorithm' } });
    }
    const ctx: ChangeContext = { actor: options?.actor, reason: options?.reason ?? `create logical key ${baseKeyId}` };
    assertChangeContext(ctx, `createKey(${baseKeyId})`);
    const usages = options.usages ?? ['sign', 'verify'];
    if (!Array.isArray(usages) || usages.length === 0 || usages.some((u) => u !== 'sign' && u !== 'verify')) {
      throw new HsmError('InvalidArgument', 'usages must be a non-empty list of "sign" and "verify"', { details: { field: 'usages' } });
    }
    let interval: number | null = this.policy.rotationInterval ?? null;
    if (options.rotationInterval !== undefined) {
      interval = options.rotationInterval === null ? null : (parseDuration(options.rotationInterval) ?? NaN);
      if (interval !== null && !(interval >= 1000)) {
        throw new HsmError('InvalidArgument', 'rotationInterval must be a duration of at least 1s (ms or "90d")', { details: { field: 'rotationInterval' } });
      }
    }
    if (options.backup !== undefined && typeof options.backup !== 'boolean') {
      throw new HsmError('InvalidArgument', `backup must be true or false, not ${JSON.stringify(options.backup)}`, { details: { field: 'backup' } });
    }
    const at = this.nowMs();
    const journal = await this.store.tx(async (trx) => {
      try {
        await trx
          .insertInto('logical_keys')
          .values({
            base_key_id: baseKeyId,
            algorithm,
            usages: JSON.stringify(usages),
            backend: this.backend.type,
            rotation_interval_ms: interval,
            backup: options.backup ? 1 : 0,
            last_version: 1,
            created_at: at,
            created_by: ctx.actor,
          })
          .execute();
      } catch (error) {
        if (isUniqueViolation(error)) throw new HsmError('KeyAlreadyExists', `logical key ${JSON.stringify(baseKeyId)} already exists`, { details: { baseKeyId } });
        throw error;
      }
      return this.insertJournal(trx, baseKeyId, 'create', null, 1, ctx, at);
    });
    await this.step('intent', journal);
    return (await this.continueRotation(journal, false)).current;
  }

  /**
   * Rotates a logical key: a new version with the same algorithm and usages is generated in the
   * backend, registered, and made Active in one transaction that also supersedes the old one.
   * The old version stays Active (signing never stops) until that transaction commits.
   */
  async rotateKey(baseKeyId: string, options: RotateOptions): Promise<RotationResult> {
    assertChangeContext(options, `rotateKey(${baseKeyId})`);
    const finished = this.recoveredHere.get(baseKeyId);
    this.recoveredHere.delete(baseKeyId);
    // only a rotation just completed on start-up stands in for the one asked for now
    if (finished && this.nowMs() - finished.at < this.policy.rotationLease) return finished.result;
    const recovered = await this.recoverInterrupted(baseKeyId, false);
    if (recovered) return recovered;
    return this.startRotation(baseKeyId, 'manual', options);
  }

  /**
   * Completes the interrupted rotation of `baseKeyId` now, whoever owned it — for an operator who
   * knows its node is gone (`rotation recover --key K`). Emits `rotationRecovered` (audited).
   * KeyNotFound when the key has no unfinished rotation.
   */
  async recoverRotation(baseKeyId: string, ctx: ChangeContext): Promise<RotationResult> {
    assertChangeContext(ctx, `recoverRotation(${baseKeyId})`);
    const result = await this.recoverInterrupted(baseKeyId, true, ctx);
    if (!result) throw new HsmError('KeyNotFound', `logical key ${JSON.stringify(baseKeyId)} has no unfinished rotation to recover`, { details: { baseKeyId } });
    return result;
  }

  /**
   * Takes over and completes the open rotation of one key when its owner is gone (lease expired
   * or, on this host, its process dead), or always with `force`. Undefined when there is none or
   * a living node still holds it (then RotationInProgress tells the caller who).
   */
  private async recoverInterrupted(baseKeyId: string, force: boolean, ctx?: ChangeContext): Promise<RotationResult | undefined> {
    const row = await this.store.db.selectFrom('rotations').selectAll().where('base_key_id', '=', baseKeyId).where('step', 'in', [...OPEN_STEPS]).executeTakeFirst();
    if (!row) return undefined;
    const j = { ...row, lease_until: Number(row.lease_until) } as JournalRow;
    const now = this.nowMs();
    // our own node's open rotation is in flight in this process: never take it from ourselves
    if (!force && (j.owner === this.nodeId || (j.lease_until >= now && !ownerIsDead(j.owner)))) {
      throw rotationError(
        'RotationInProgress',
        `a rotation of ${baseKeyId} to v${j.to_version} is in progress on node ${j.owner} (step ${j.step}, lease until ${new Date(j.lease_until).toISOString()}); if that node is gone, run: olocus-hsm rotation recover --key ${baseKeyId}`,
        { baseKeyId },
      );
    }
    const previousOwner = j.owner;
    const fromStep = j.step;
    if (!(await this.takeOver(j, now))) return undefined;
    const result = await this.continueRotation(j, true);
    const recovered = { ...result, recovered: { fromStep, startedAt: new Date(Number(j.started_at)), owner: previousOwner } };
    this.events.emit({
      type: 'rotationRecovered',
      baseKeyId,
      version: Number(j.to_version),
      fromStep,
      previousOwner,
      actor: ctx?.actor ?? j.actor,
      reason: ctx?.reason ?? `${j.reason} (interrupted rotation completed by ${this.nodeId})`,
      at: new Date(this.nowMs()),
    });
    return recovered;
  }

  private async takeOver(j: JournalRow, now: number): Promise<boolean> {
    const taken = await this.store.tx(async (trx) => {
      const r = await trx
        .updateTable('rotations')
        .set({ owner: this.nodeId, lease_until: now + this.policy.rotationLease, updated_at: now })
        .where('id', '=', j.id)
        .where('owner', '=', j.owner)
        .where('step', '=', j.step)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) === 1;
    });
    if (taken) j.owner = this.nodeId;
    return taken;
  }

  /**
   * Emergency rotation (suspected compromise): only when `allowEmergencyRotation` is set. The
   * old version is marked Compromised (or Revoked, `emergencyState`) in the same transaction
   * that activates the new one — no overlap: it verifies nothing from then on. A securityEvent
   * is emitted. If the new key cannot be generated, the old version is still marked at once
   * (fail closed) and the error is thrown.
   */
  async emergencyRotateKey(baseKeyId: string, options: RotateOptions): Promise<RotationResult> {
    assertChangeContext(options, `emergencyRotateKey(${baseKeyId})`);
    if (!this.policy.allowEmergencyRotation) {
      throw rotationError('EmergencyRotationDisabled', `emergency rotation of ${baseKeyId} refused: policy.allowEmergencyRotation is false`, {
        field: 'policy.allowEmergencyRotation',
        baseKeyId,
      });
    }
    return this.startRotation(baseKeyId, 'emergency', options);
  }

  /** @internal Used by the scheduler: rotates only if `version` is still the current one. */
  async rotateScheduled(baseKeyId: string, version: number): Promise<RotationResult | undefined> {
    const current = await this.currentVersion(baseKeyId).catch(() => undefined);
    if (!current || current.version !== version) return undefined;
    const interval = (await this.registry.getLogicalKey(baseKeyId)).rotationIntervalMs;
    return this.startRotation(baseKeyId, 'scheduled', {
      actor: 'system:scheduler',
      reason: `scheduled rotation (interval ${interval ?? '?'} ms)`,
      expectedVersion: version,
    });
  }

  private async currentVersion(baseKeyId: string): Promise<KeyVersion> {
    const row = await this.store.db
      .selectFrom('key_versions')
      .selectAll()
      .where('base_key_id', '=', baseKeyId)
      .where('state', 'in', ['Active', 'Suspended'])
      .orderBy('version', 'desc')
      .executeTakeFirst();
    if (!row) throw new HsmError('KeyNotFound', `${baseKeyId} has no current version`);
    return toKeyVersion(row);
  }

  private async startRotation(baseKeyId: string, kind: RotationKind, options: RotateOptions): Promise<RotationResult> {
    if (typeof baseKeyId !== 'string') assertValidBaseKeyId(baseKeyId);
    const ctx: ChangeContext = { actor: options.actor, reason: options.reason };
    const at = this.nowMs();
    const journal = await this.store.tx(async (trx) => {
      const lk = await this.registry.lockLogicalKey(trx, baseKeyId);
      const current = await trx
        .selectFrom('key_versions')
        .selectAll()
        .where('base_key_id', '=', baseKeyId)
        .where('state', 'in', ['Active', 'Suspended'])
        .orderBy('version', 'desc')
        .executeTakeFirst();
      if (!current) {
        const latest = await trx.selectFrom('key_versions').select(['key_id', 'state']).where('base_key_id', '=', baseKeyId).orderBy('version', 'desc').executeTakeFirst();
        if (!latest) throw new HsmError('KeyNotFound', `logical key ${JSON.stringify(baseKeyId)} has no version yet (an interrupted creation: run reconcile)`, { details: { baseKeyId } });
        throw illegalTransition(latest.key_id, latest.state as KeyState, 'Superseded', `cannot rotate ${baseKeyId}: its latest version is ${latest.state}, not Active or Suspended`);
      }
      if (options.expectedVersion !== undefined && Number(current.version) !== options.expectedVersion) {
        throw rotationError('VersionConflict', `rotation of ${baseKeyId} refused: the current version is v${current.version}, not v${options.expectedVersion} (rotated already?)`, {
          baseKeyId,
          currentVersion: Number(current.version),
          expectedVersion: options.expectedVersion,
        });
      }
      const next = Number(lk.last_version) + 1;
      await trx.updateTable('logical_keys').set({ last_version: next }).where('base_key_id', '=', baseKeyId).execute();
      return this.insertJournal(trx, baseKeyId, kind, Number(current.version), next, ctx, at);
    });
    await this.step('intent', journal);
    try {
      return await this.continueRotation(journal, false);
    } catch (error) {
      if (kind === 'emergency' && journal.from_version !== null) await this.failClosed(journal, error);
      throw error;
    }
  }

  private async insertJournal(trx: Trx, baseKeyId: string, kind: RotationKind, fromVersion: number | null, toVersion: number, ctx: ChangeContext, at: number): Promise<JournalRow> {
    const row: JournalRow = {
      id: randomUUID(),
      base_key_id: baseKeyId,
      kind,
      from_version: fromVersion,
      to_version: toVersion,
      key_id: versionKeyId(baseKeyId, toVersion),
      step: 'intent',
      actor: ctx.actor,
      reason: ctx.reason,
      owner: this.nodeId,
      lease_until: at + this.policy.rotationLease,
      started_at: at,
      updated_at: at,
      key_ref: null,
      error: null,
    };
    try {
      await underSavepoint(trx, () => trx.insertInto('rotations').values(row).execute());
    } catch (error) {
      if (isUniqueViolation(error)) {
        const open = await trx.selectFrom('rotations').select(['owner', 'to_version', 'step']).where('base_key_id', '=', baseKeyId).where('step', 'in', [...OPEN_STEPS]).executeTakeFirst();
        throw rotationError(
          'RotationInProgress',
          `a rotation of ${baseKeyId} to v${open?.to_version ?? '?'} is already in progress (step ${open?.step ?? '?'}, node ${open?.owner ?? '?'}); if that node died, reconcile() completes it once its lease expires`,
          { baseKeyId },
          error,
        );
      }
      throw error;
    }
    return row;
  }

  /** Moves the journal row on, only while this node still owns it. */
  private async advanceJournal(trx: Trx, j: JournalRow, to: string, extra: { key_ref?: string; error?: string | null } = {}): Promise<void> {
    const result = await trx
      .updateTable('rotations')
      .set({ step: to, updated_at: this.nowMs(), ...extra })
      .where('id', '=', j.id)
      .where('owner', '=', this.nodeId)
      .where('step', '=', j.step)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) {
      throw rotationError('RotationInProgress', `rotation of ${j.base_key_id} to v${j.to_version} was taken over by another node (lease expired)`, { baseKeyId: j.base_key_id });
    }
    j.step = to;
    if (extra.key_ref !== undefined) j.key_ref = extra.key_ref;
  }

  private async generateOrAdopt(j: JournalRow, algorithm: KeyAlgorithm, usages: KeyUsage[], adopt: boolean, backup: boolean): Promise<{ handle: HsmKeyHandle; adopted: boolean }> {
    const check = (handle: HsmKeyHandle) => {
      if (handle.algorithm !== algorithm) {
        throw new HsmError('KeyAlreadyExists', `backend key ${j.key_id} exists with algorithm ${handle.algorithm}, not ${algorithm}: not adopted`, { details: { keyId: j.key_id } });
      }
      return { handle, adopted: true };
    };
    if (adopt) {
      try {
        return check(await this.backend.getKey(j.key_id));
      } catch (error) {
        if (!isHsmError(error, 'KeyNotFound')) throw error;
      }
    }
    try {
      const handle = await this.backend.generateKeyPair({ id: j.key_id, algorithm, usages, ...(backup ? { backup: true } : {}) });
      return { handle, adopted: false };
    } catch (error) {
      if (adopt && isHsmError(error, 'KeyAlreadyExists')) return check(await this.backend.getKey(j.key_id));
      throw error;
    }
  }

  /**
   * Runs a journalled rotation from its recorded step to the end. Every step is idempotent, so
   * the same code completes a fresh rotation and one interrupted by a crash (`adopt` = true:
   * a backend key that already exists under the version's id is adopted, not regenerated).
   */
  private async continueRotation(j: JournalRow, adopt: boolean): Promise<RotationResult> {
    const lk = toLogicalKey(
      (await this.store.db.selectFrom('logical_keys').selectAll().where('base_key_id', '=', j.base_key_id).executeTakeFirst()) ??
        (() => {
          throw new HsmError('KeyNotFound', `unknown logical key ${j.base_key_id}`);
        })(),
    );
    const ctx: ChangeContext = { actor: j.actor, reason: adopt ? `${j.reason} (completed by reconcile on ${this.nodeId})` : j.reason };
    let adopted = false;
    if (j.step === 'intent') {
      let handle: HsmKeyHandle;
      try {
        const r = await this.generateOrAdopt(j, lk.algorithm, lk.usages, adopt, lk.backup === true);
        handle = r.handle;
        adopted = r.adopted;
      } catch (error) {
        // Nothing usable was generated: close the journal row so the key can be rotated again
        // (the version number stays used; a key that did appear is reported as an orphan).
        // If the backend surely has no key under that id, the version number is given back.
        const absent = await this.backend.getKey(j.key_id).then(
          () => false,
          (e: unknown) => isHsmError(e, 'KeyNotFound'),
        );
        await this.store
          .tx(async (trx) => {
            await this.advanceJournal(trx, j, 'failed', { error: describe(error) });
            if (j.kind === 'create') {
              // The creation did not happen: nothing was made, or the id is taken by a key that is
              // not ours (made outside the library). No logical key without a version is left.
              await trx.deleteFrom('logical_keys').where('base_key_id', '=', j.base_key_id).execute();
            } else if (absent) {
              await trx
                .updateTable('logical_keys')
                .set({ last_version: Number(j.to_version) - 1 })
                .where('base_key_id', '=', j.base_key_id)
                .where('last_version', '=', Number(j.to_version))
                .execute();
            }
          })
          .catch(() => undefined);
        throw error;
      }
      await this.step('generated', j);
      await this.store.tx((trx) => this.advanceJournal(trx, j, 'generated', { key_ref: handle.ref }));
    }
    if (j.step === 'generated') {
      const changes: StateChange[] = [];
      await this.store.tx(async (trx) => {
        await this.registry.lockLogicalKey(trx, j.base_key_id);
        await this.advanceJournal(trx, j, 'registered');
        const exists = await trx.selectFrom('key_versions').select('state').where('key_id', '=', j.key_id).executeTakeFirst();
        if (!exists) {
          changes.push(
            await this.registry.insertVersion(
              trx,
              {
                baseKeyId: j.base_key_id,
                version: Number(j.to_version),
                backend: this.backend.type,
                keyRef: j.key_ref ?? j.key_id,
                algorithm: lk.algorithm,
                usages: lk.usages,
                state: 'PreActivation',
                at: this.nowMs(),
                predecessorVersion: j.from_version === null ? null : Number(j.from_version),
              },
              ctx,
            ),
          );
        }
      });
      this.registry.committed(changes);
      await this.step('registered', j);
    }
    if (j.step !== 'registered') throw new HsmError('Internal', `rotation journal of ${j.base_key_id} is at unexpected step ${j.step}`);
    return this.swap(j, lk.rotationIntervalMs, ctx, adopted);
  }

  /** The single transaction that makes the new version Active and retires the old one. */
  private async swap(j: JournalRow, intervalMs: number | undefined, ctx: ChangeContext, adopted: boolean): Promise<RotationResult> {
    const kind = j.kind as RotationKind;
    const emergency = kind === 'emergency';
    const changes: StateChange[] = [];
    let previous: KeyVersion | undefined;
    let oldState: KeyState | undefined;
    let overlapUntil: number | undefined;
    // The swap's time is taken once its rows are locked: a signer that read the old version as
    // Active held that row (shared) until its read ended, so it dated its signature before this.
    let at = 0;
    const current = await this.store.tx(async (trx) => {
      await this.registry.lockLogicalKey(trx, j.base_key_id);
      await this.advanceJournal(trx, j, 'done');
      const newRow = await this.registry.lockVersion(trx, j.key_id);
      at = this.nowMs();
      if (j.from_version !== null) {
        const oldRow = await this.registry.lockVersion(trx, versionKeyId(j.base_key_id, Number(j.from_version)));
        at = this.nowMs();
        const from = oldRow.state as KeyState;
        if (from === 'Active' || from === 'Suspended') {
          let target: KeyState = 'Superseded';
          if (emergency) target = canTransition(from, this.policy.emergencyState) ? this.policy.emergencyState : 'Revoked';
          if (!emergency) overlapUntil = at + this.policy.overlapPeriod;
          changes.push(
            await this.registry.applyTransition(trx, oldRow, target, ctx, at, {
              successorVersion: Number(j.to_version),
              ...(emergency ? {} : { overlapUntil: overlapUntil ?? null }),
            }),
          );
          oldState = target;
        } else {
          // Retired meanwhile (revoked by an operator during the rotation): only link it.
          await trx.updateTable('key_versions').set({ successor_version: Number(j.to_version) }).where('key_id', '=', oldRow.key_id).execute();
          oldState = from;
        }
        previous = toKeyVersion(await this.registry.lockVersion(trx, oldRow.key_id));
        await cancelTasks(trx, j.base_key_id, ['rotate', 'warn'], oldRow.key_id, at);
        if (overlapUntil !== undefined) {
          await insertTask(trx, { kind: 'deactivate', baseKeyId: j.base_key_id, keyId: oldRow.key_id, dueAt: overlapUntil, dedupeKey: `deactivate:${oldRow.key_id}` }, at);
        } else {
          await insertTask(trx, { kind: 'cleanup', baseKeyId: j.base_key_id, dueAt: at, dedupeKey: `cleanup:${j.base_key_id}:${at}` }, at);
        }
      }
      if (newRow.state !== 'PreActivation') throw illegalTransition(newRow.key_id, newRow.state as KeyState, 'Active', 'the new version is not waiting for activation');
      changes.push(
        await this.registry.applyTransition(trx, newRow, 'Active', ctx, at, {
          expiresAt: this.policy.cryptoperiod === undefined ? null : at + this.policy.cryptoperiod,
          ...(j.from_version === null ? {} : { predecessorVersion: Number(j.from_version) }),
        }),
      );
      if (intervalMs !== undefined) await this.scheduleRotation(trx, j.base_key_id, j.key_id, at, intervalMs);
      return toKeyVersion(await this.registry.lockVersion(trx, j.key_id));
    });
    await this.step('activated', j);
    this.registry.committed(changes);
    const when = new Date(at);
    if (kind === 'create') {
      this.events.emit({ type: 'keyCreated', baseKeyId: j.base_key_id, version: current.version, keyId: current.keyId, algorithm: current.algorithm, actor: ctx.actor, reason: ctx.reason, at: when });
    } else if (previous) {
      this.events.emit({
        type: 'rotated',
        baseKeyId: j.base_key_id,
        kind: kind as 'manual' | 'scheduled' | 'emergency',
        fromVersion: previous.version,
        toVersion: current.version,
        keyId: current.keyId,
        oldState: oldState ?? previous.state,
        ...(overlapUntil === undefined ? {} : { overlapUntil: new Date(overlapUntil) }),
        actor: ctx.actor,
        reason: ctx.reason,
        at: when,
      });
      if (emergency) {
        this.events.emit({
          type: 'securityEvent',
          event: 'emergencyRotation',
          severity: 'CRIT',
          baseKeyId: j.base_key_id,
          compromisedKeyId: previous.keyId,
          compromisedVersion: previous.version,
          markedAs: previous.state,
          newVersion: current.version,
          actor: ctx.actor,
          reason: ctx.reason,
          at: when,
        });
      }
    }
    return { baseKeyId: j.base_key_id, kind, ...(previous ? { previous } : {}), current, adopted };
  }

  private async scheduleRotation(trx: Trx, baseKeyId: string, keyId: string, activatedAt: number, intervalMs: number): Promise<void> {
    const due = activatedAt + intervalMs;
    await insertTask(trx, { kind: 'rotate', baseKeyId, keyId, dueAt: due, dedupeKey: `rotate:${keyId}` }, activatedAt);
    if (this.policy.advanceWarning > 0) {
      await insertTask(trx, { kind: 'warn', baseKeyId, keyId, dueAt: Math.max(activatedAt, due - this.policy.advanceWarning), dedupeKey: `warn:${keyId}` }, activatedAt);
    }
  }

  /** Emergency rotation whose new key could not be made: mark the old version at once anyway. */
  private async failClosed(j: JournalRow, cause: unknown): Promise<void> {
    const ctx: ChangeContext = { actor: j.actor, reason: `${j.reason} (emergency: new version not generated: ${describe(cause)})` };
    const at = this.nowMs();
    let marked: StateChange | undefined;
    await this.store
      .tx(async (trx) => {
        const row = await this.registry.lockVersion(trx, versionKeyId(j.base_key_id, Number(j.from_version)));
        const from = row.state as KeyState;
        const target: KeyState = canTransition(from, this.policy.emergencyState) ? this.policy.emergencyState : 'Revoked';
        if (canTransition(from, target)) marked = await this.registry.applyTransition(trx, row, target, ctx, at);
      })
      .catch(() => undefined);
    if (!marked) return;
    this.registry.committed([marked]);
    this.events.emit({
      type: 'securityEvent',
      event: 'emergencyRotation',
      severity: 'CRIT',
      baseKeyId: j.base_key_id,
      compromisedKeyId: marked.keyId,
      compromisedVersion: marked.version,
      markedAs: marked.to,
      newVersion: null,
      actor: j.actor,
      reason: ctx.reason,
      at: new Date(at),
    });
  }

  // ---------------------------------------------------------------- other state changes

  /** Active → Suspended: the key stops signing (no Active version until resumed or rotated). */
  suspendKey(keyId: string, ctx: ChangeContext): Promise<KeyVersion> {
    return this.registry.transition(keyId, 'Suspended', ctx);
  }

  /** Suspended → Active (refused after the cryptoperiod ended, or if another version is Active). */
  resumeKey(keyId: string, ctx: ChangeContext): Promise<KeyVersion> {
    return this.registry.transition(keyId, 'Active', ctx);
  }

  /** → Revoked (or Compromised when `compromised`): the version never signs or verifies again. */
  revokeKey(keyId: string, ctx: ChangeContext, options: { compromised?: boolean } = {}): Promise<KeyVersion> {
    return this.registry.transition(keyId, options.compromised ? 'Compromised' : 'Revoked', ctx);
  }

  /** Superseded/Archived/Revoked/Compromised → PendingDestruction; destroyed after `destructionDelay` unless cancelled. */
  async scheduleDestruction(keyId: string, ctx: ChangeContext): Promise<KeyVersion> {
    assertChangeContext(ctx, `scheduleDestruction(${keyId})`);
    const at = this.nowMs();
    const destroyAfter = at + this.policy.destructionDelay;
    const changes: StateChange[] = [];
    const row = await this.store.tx(async (trx) => {
      const row = await this.registry.lockVersion(trx, keyId);
      changes.push(await this.registry.applyTransition(trx, row, 'PendingDestruction', ctx, at, { destroyAfter }));
      await insertTask(trx, { kind: 'destroy', baseKeyId: row.base_key_id, keyId, dueAt: destroyAfter, dedupeKey: `destroy:${keyId}:${destroyAfter}` }, at);
      return this.registry.lockVersion(trx, keyId);
    });
    this.registry.committed(changes);
    return toKeyVersion(row);
  }

  /** PendingDestruction → back to Superseded or Archived (a version once revoked stays unable to verify). */
  async cancelDestruction(keyId: string, ctx: ChangeContext): Promise<KeyVersion> {
    assertChangeContext(ctx, `cancelDestruction(${keyId})`);
    const at = this.nowMs();
    const changes: StateChange[] = [];
    const row = await this.store.tx(async (trx) => {
      const row = await this.registry.lockVersion(trx, keyId);
      if (row.state !== 'PendingDestruction') throw illegalTransition(keyId, row.state as KeyState, 'Archived', 'only a PendingDestruction version can have its destruction cancelled');
      const back: KeyState = row.pre_destruction_state === 'Superseded' ? 'Superseded' : 'Archived';
      changes.push(await this.registry.applyTransition(trx, row, back, ctx, at));
      await cancelTasks(trx, row.base_key_id, ['destroy'], keyId, at);
      return this.registry.lockVersion(trx, keyId);
    });
    this.registry.committed(changes);
    return toKeyVersion(row);
  }

  /**
   * Destroys a PendingDestruction version whose waiting period is over: first in the backend
   * (a key already gone counts as destroyed), then in the registry. A crash in between is fixed
   * by running it again. Returns false when the version is not due (cancelled, or later).
   */
  async destroyIfDue(keyId: string, ctx: ChangeContext = { actor: 'system:retention', reason: 'destruction waiting period over (LC-PENDING)' }): Promise<boolean> {
    const v = await this.registry.getKeyVersion(keyId);
    if (v.state !== 'PendingDestruction' || !v.destroyAfter || v.destroyAfter.getTime() > this.nowMs()) return false;
    try {
      await this.backend.destroyKey(keyId);
    } catch (error) {
      if (!isHsmError(error, 'KeyNotFound')) throw error;
    }
    const at = this.nowMs();
    const changes: StateChange[] = [];
    const done = await this.store.tx(async (trx) => {
      const row = await this.registry.lockVersion(trx, keyId);
      if (row.state !== 'PendingDestruction') return false; // cancelled while the backend call ran: the backend key is gone, but state says so below
      changes.push(await this.registry.applyTransition(trx, row, 'Destroyed', ctx, at));
      return true;
    });
    this.registry.committed(changes);
    if (done) this.events.emit({ type: 'keyDestroyed', baseKeyId: v.baseKeyId, version: v.version, keyId, at: new Date(at) });
    return done;
  }

  /**
   * Applies the retention policy to one logical key:
   * - Superseded versions beyond the newest `retentionVersions` (counting the Active one) whose
   *   overlap has ended → Archived;
   * - Archived, Revoked and Compromised versions kept for `archiveRetention` → PendingDestruction
   *   (destroyed `destructionDelay` later by a destroy task, cancellable meanwhile).
   * Schedules the next cleanup when a version will become due later.
   */
  async applyRetention(baseKeyId: string): Promise<StateChange[]> {
    const ctx: ChangeContext = { actor: 'system:retention', reason: `retention policy (keep ${this.policy.retentionVersions} versions, archive ${this.policy.archiveRetention} ms)` };
    const at = this.nowMs();
    const changes: StateChange[] = [];
    await this.store.tx(async (trx) => {
      await this.registry.lockLogicalKey(trx, baseKeyId);
      const rows = await trx.selectFrom('key_versions').selectAll().where('base_key_id', '=', baseKeyId).orderBy('version', 'desc').execute();
      let kept = 0;
      let nextDue: number | undefined;
      const later = (t: number) => (nextDue = nextDue === undefined ? t : Math.min(nextDue, t));
      for (const row of rows) {
        const state = row.state as KeyState;
        if (state === 'Active' || state === 'Suspended') {
          kept++;
          continue;
        }
        if (state === 'Superseded') {
          if (kept < this.policy.retentionVersions) {
            kept++;
            continue;
          }
          if (row.overlap_until !== null && Number(row.overlap_until) > at) {
            later(Number(row.overlap_until));
            continue;
          }
          changes.push(await this.registry.applyTransition(trx, row, 'Archived', { ...ctx, reason: `${ctx.reason}: beyond the newest ${this.policy.retentionVersions}` }, at));
          later(at + this.policy.archiveRetention);
          continue;
        }
        if (state === 'Archived' || state === 'Revoked' || state === 'Compromised') {
          const since = Number(row.state_changed_at);
          if (since + this.policy.archiveRetention > at) {
            later(since + this.policy.archiveRetention);
            continue;
          }
          const destroyAfter = at + this.policy.destructionDelay;
          changes.push(await this.registry.applyTransition(trx, row, 'PendingDestruction', ctx, at, { destroyAfter }));
          await insertTask(trx, { kind: 'destroy', baseKeyId, keyId: row.key_id, dueAt: destroyAfter, dedupeKey: `destroy:${row.key_id}:${destroyAfter}` }, at);
        }
      }
      if (nextDue !== undefined) await insertTask(trx, { kind: 'cleanup', baseKeyId, dueAt: nextDue, dedupeKey: `cleanup:${baseKeyId}:${nextDue}` }, at);
    });
    this.registry.committed(changes);
    return changes;
  }

  /** @internal Scheduler: the overlap of a superseded version ended. */
  async overlapEnded(keyId: string): Promise<void> {
    const v = await this.registry.getKeyVersion(keyId);
    this.events.emit({ type: 'overlapEnded', baseKeyId: v.baseKeyId, version: v.version, keyId, at: new Date(this.nowMs()) });
    await this.applyRetention(v.baseKeyId);
  }

  /** @internal Scheduler: warn ahead of a scheduled rotation, if the version is still Active. */
  async warnRotation(keyId: string, dueAt: Date | undefined): Promise<void> {
    const v = await this.registry.getKeyVersion(keyId);
    if (v.state !== 'Active') return;
    const lk = await this.registry.getLogicalKey(v.baseKeyId);
    const rotationDueAt = dueAt ?? new Date((v.activatedAt?.getTime() ?? 0) + (lk.rotationIntervalMs ?? 0));
    this.events.emit({ type: 'rotationWarning', baseKeyId: v.baseKeyId, version: v.version, keyId, rotationDueAt, at: new Date(this.nowMs()) });
  }

  // ---------------------------------------------------------------- crash recovery

  /**
   * Makes the registry consistent after a crash (run on start; safe to run any time, on any node):
   * 1. every unfinished rotation whose owner's lease expired (or all, with `force`) is taken over
   *    and rolled forward from its recorded step — a backend key generated before the crash is
   *    adopted, not generated twice;
   * 2. the backend is listed for `<base>.v<N>` keys of known logical keys that have no registry
   *    row and no recorded intent: these are reported (`orphans`), never adopted silently.
   * Two Active versions cannot exist (unique index), and the old version stays Active until the
   * swap commits, so signing never stopped meanwhile.
   */
  async reconcile(options: ReconcileOptions = {}): Promise<ReconcileReport> {
    const report: ReconcileReport = { resumed: [], failed: [], orphans: [], inProgressElsewhere: [] };
    const now = this.nowMs();
    const open = await this.store.db.selectFrom('rotations').selectAll().where('step', 'in', [...OPEN_STEPS]).orderBy('started_at').execute();
    for (const row of open) {
      const j = { ...row, lease_until: Number(row.lease_until) } as JournalRow;
      if (!options.force && j.lease_until >= now && j.owner !== this.nodeId && !ownerIsDead(j.owner)) {
        report.inProgressElsewhere.push({ baseKeyId: j.base_key_id, version: Number(j.to_version), owner: j.owner });
        continue;
      }
      const previousOwner = j.owner;
      const fromStep = j.step;
      if (!(await this.takeOver(j, now))) continue;
      try {
        const result = await this.continueRotation(j, true);
        report.resumed.push({ baseKeyId: j.base_key_id, version: Number(j.to_version), kind: j.kind as RotationKind, fromStep, adopted: result.adopted || fromStep !== 'intent' });
        if (j.kind !== 'create') {
          this.recoveredHere.set(j.base_key_id, { result: { ...result, recovered: { fromStep, startedAt: new Date(Number(j.started_at)), owner: previousOwner } }, at: this.nowMs() });
        }
        this.events.emit({
          type: 'rotationRecovered',
          baseKeyId: j.base_key_id,
          version: Number(j.to_version),
          fromStep,
          previousOwner,
          actor: j.actor,
          reason: `${j.reason} (interrupted rotation completed by reconcile on ${this.nodeId})`,
          at: new Date(this.nowMs()),
        });
      } catch (error) {
        report.failed.push({ baseKeyId: j.base_key_id, version: Number(j.to_version), fromStep, error: describe(error) });
      }
    }
    if (options.scanBackend !== false) report.orphans = await this.findOrphans();
    for (const o of report.orphans) this.events.emit({ type: 'orphanKey', ...o, at: new Date(now) });
    return report;
  }

  /** Backend keys named `<base>.v<N>` for known logical keys that the registry does not hold. */
  async findOrphans(): Promise<ReconcileReport['orphans']> {
    const orphans: ReconcileReport['orphans'] = [];
    let cursor: string | undefined;
    do {
      const page = await this.backend.listKeys({ limit: 1000, ...(cursor ? { cursor } : {}) });
      cursor = page.nextCursor;
      const parsed = page.keys.map((k) => ({ k, p: parseVersionKeyId(k.id) })).filter((x): x is { k: HsmKeyHandle; p: { baseKeyId: string; version: number } } => x.p !== undefined);
      if (parsed.length === 0) continue;
      const ids = parsed.map((x) => x.k.id);
      const bases = [...new Set(parsed.map((x) => x.p.baseKeyId))];
      const [registered, known, inFlight] = await Promise.all([
        this.store.db.selectFrom('key_versions').select('key_id').where('key_id', 'in', ids).execute(),
        this.store.db.selectFrom('logical_keys').select('base_key_id').where('base_key_id', 'in', bases).execute(),
        this.store.db.selectFrom('rotations').select('key_id').where('key_id', 'in', ids).where('step', 'in', [...OPEN_STEPS]).execute(),
      ]);
      const reg = new Set(registered.map((r) => r.key_id));
      const kn = new Set(known.map((r) => r.base_key_id));
      const fl = new Set(inFlight.map((r) => r.key_id));
      for (const { k, p } of parsed) {
        if (!reg.has(k.id) && kn.has(p.baseKeyId) && !fl.has(k.id)) orphans.push({ keyId: k.id, baseKeyId: p.baseKeyId, version: p.version, ref: k.ref });
      }
    } while (cursor);
    return orphans;
  }

  /** Stops forwarding registry changes as events. */
  close(): void {
    this.unsubscribe();
  }
}

function describe(error: unknown): string {
  if (error instanceof HsmError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}
