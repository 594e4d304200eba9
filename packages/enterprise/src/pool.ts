import { HsmError, isHsmError, type HsmBackend, type HsmKeyHandle, type KeySpec, type PublicKeyInfo, type SignOptions } from '@olocus/hsm-core';

/** One backend instance in the pool, as the operator describes it. */
export interface PoolMemberInit {
  /** The operator's name for the member (`luna-a`, `kms-eu`); unique in the pool. */
  name: string;
  backend: HsmBackend;
  /** Share of the work relative to the other members of a group (default 1). */
  weight?: number;
  zone?: string;
  /** Free, non-secret facts (vendor, region, fips level as measured or attested...). */
  tags?: Record<string, string>;
}

export interface HsmPoolOptions {
  members: PoolMemberInit[];
  /** How often every member's healthCheck runs (default 1000 ms). */
  healthIntervalMs?: number;
  /** A health check that takes longer than this counts as failed (default: the interval). */
  healthTimeoutMs?: number;
  /**
   * Consecutive retryable failures (other than device-gone ones, which open the circuit at once)
   * after which a member takes no new work until a health check passes (default 3).
   */
  failureThreshold?: number;
  /** Start the periodic health checks in `initialize()` (default true). */
  startHealthChecks?: boolean;
}

export type CircuitState = 'closed' | 'open';

export interface MemberStatus {
  name: string;
  instanceId: string;
  type: string;
  weight: number;
  zone?: string;
  tags: Record<string, string>;
  healthy: boolean;
  circuit: CircuitState;
  /** Why the member takes no work (absent when it does). */
  reason?: string;
  outstanding: number;
  /** Calls dispatched to it. */
  dispatched: number;
  succeeded: number;
  failed: number;
  consecutiveFailures: number;
  circuitOpens: number;
  recoveries: number;
  lastHealthAt?: Date;
  lastHealthLatencyMs?: number;
}

/** Where a key lives: the members (by name) that hold the same key material under its id. */
export interface KeyPlacement {
  keyId: string;
  members: string[];
}

export interface DriftReport {
  checkedAt: Date;
  /** Keys the registry places on a member that the member does not hold. */
  missing: Array<{ keyId: string; member: string }>;
  /** Keys a member holds that nothing places there. */
  extra: Array<{ keyId: string; member: string }>;
  /** Replicas whose public key differs from the group's first member: not the same key. */
  mismatched: Array<{ keyId: string; member: string; reference: string }>;
  unreachable: Array<{ member: string; reason: string }>;
}

export interface PoolSignResult {
  signature: Uint8Array;
  /** The member that made the signature. */
  member: string;
  /** Members tried before it (0 or 1 entries: a call is retried once). */
  retriedFrom: string[];
}

// The device is gone or refusing everything: no point sending it more until it answers a health check.
const DEVICE_GONE = new Set(['DeviceUnavailable', 'CircuitOpen', 'TokenNotPresent', 'InitializationFailed', 'Closed']);
// Load, not breakage: a busy member is not a broken one.
const NOT_A_MEMBER_FAULT = new Set(['SessionPoolExhausted', 'Conflict']);

/** How far (outstanding calls per unit of weight) a member may be above the least loaded and still get work. */
const LOAD_SLACK = 1;

class Member {
  readonly name: string;
  readonly backend: HsmBackend;
  readonly weight: number;
  readonly zone: string | undefined;
  readonly tags: Record<string, string>;
  healthy = true;
  circuit: CircuitState = 'closed';
  reason: string | undefined;
  outstanding = 0;
  dispatched = 0;
  /** Calls counted for the weighted share (realigned when the member rejoins). */
  routed = 0;
  succeeded = 0;
  failed = 0;
  consecutiveFailures = 0;
  circuitOpens = 0;
  recoveries = 0;
  lastHealthAt: Date | undefined;
  lastHealthLatencyMs: number | undefined;

  constructor(init: PoolMemberInit) {
    this.name = init.name;
    this.backend = init.backend;
    this.weight = init.weight ?? 1;
    this.zone = init.zone;
    this.tags = { ...(init.tags ?? {}) };
  }

  /** Why it takes no new work, or undefined when it does. */
  unavailableReason(): string | undefined {
    if (this.circuit === 'open') return `circuit open: ${this.reason ?? 'failures'}`;
    // the backend's own breaker (PKCS#11 device-gone) says the same thing sooner than our health loop
    if (this.backend.metrics?.().circuitOpen) return "the backend's own circuit is open";
    if (!this.healthy) return `health check failed: ${this.reason ?? 'unknown'}`;
    return undefined;
  }

  open(reason: string): void {
    if (this.circuit !== 'open') this.circuitOpens++;
    this.circuit = 'open';
    this.reason = reason;
  }

  status(): MemberStatus {
    const reason = this.unavailableReason();
    return {
      name: this.name,
      instanceId: safeInstanceId(this.backend),
      type: this.backend.type,
      weight: this.weight,
      ...(this.zone !== undefined ? { zone: this.zone } : {}),
      tags: { ...this.tags },
      healthy: this.healthy,
      circuit: this.circuit,
      ...(reason !== undefined ? { reason } : {}),
      outstanding: this.outstanding,
      dispatched: this.dispatched,
      succeeded: this.succeeded,
      failed: this.failed,
      consecutiveFailures: this.consecutiveFailures,
      circuitOpens: this.circuitOpens,
      recoveries: this.recoveries,
      ...(this.lastHealthAt ? { lastHealthAt: this.lastHealthAt } : {}),
      ...(this.lastHealthLatencyMs !== undefined ? { lastHealthLatencyMs: this.lastHealthLatencyMs } : {}),
    };
  }
}

function safeInstanceId(backend: HsmBackend): string {
  try {
    return backend.instanceId;
  } catch {
    return '(not initialized)';
  }
}

function describeError(error: unknown): string {
  if (isHsmError(error)) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}

/**
 * A set of backend instances that share work. Keys are placed on one member or on a replication
 * group (members holding the same key material under the same id); each call goes to the healthy
 * member of the key's group with the least outstanding work per unit of weight, and a retryable
 * failure is retried once on another member, never the one that just failed.
 */
export class HsmPool {
  private readonly members = new Map<string, Member>();
  private readonly placements = new Map<string, string[]>();
  private readonly healthIntervalMs: number;
  private readonly healthTimeoutMs: number;
  private readonly failureThreshold: number;
  private readonly startHealthChecks: boolean;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private state: 'new' | 'ready' | 'closed' = 'new';

  constructor(options: HsmPoolOptions) {
    if (!Array.isArray(options.members) || options.members.length === 0) {
      throw new HsmError('InvalidConfiguration', 'pool.members must list at least one backend instance', { details: { field: 'pool.members' } });
    }
    for (const [i, init] of options.members.entries()) {
      if (typeof init.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(init.name)) {
        throw new HsmError('InvalidConfiguration', `pool.members[${i}].name must be 1-64 letters, digits, '.', '_' or '-'`, { details: { field: `pool.members[${i}].name` } });
      }
      if (this.members.has(init.name)) throw new HsmError('InvalidConfiguration', `pool.members[${i}].name ${init.name} is used twice`, { details: { field: `pool.members[${i}].name` } });
      if (init.weight !== undefined && (!Number.isFinite(init.weight) || init.weight <= 0 || init.weight > 1000)) {
        throw new HsmError('InvalidConfiguration', `pool.members[${i}].weight must be a number above 0 and at most 1000`, { details: { field: `pool.members[${i}].weight` } });
      }
      this.members.set(init.name, new Member(init));
    }
    this.healthIntervalMs = options.healthIntervalMs ?? 1000;
    this.healthTimeoutMs = options.healthTimeoutMs ?? this.healthIntervalMs;
    this.failureThreshold = options.failureThreshold ?? 3;
    this.startHealthChecks = options.startHealthChecks ?? true;
  }

  get healthInterval(): number {
    return this.healthIntervalMs;
  }

  /** Initializes every member (in parallel), then starts the health loop. */
  async initialize(): Promise<void> {
    if (this.state === 'closed') throw new HsmError('Closed', 'the HSM pool is closed');
    if (this.state === 'ready') return;
    const results = await Promise.allSettled([...this.members.values()].map((m) => m.backend.initialize()));
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [[[...this.members.values()][i]!, r.reason] as const] : []));
    if (failed.length === this.members.size) {
      throw new HsmError('InitializationFailed', `no pool member could be initialized: ${failed.map(([m, e]) => `${m.name} (${describeError(e)})`).join('; ')}`, {
        cause: failed[0]![1],
        retryable: true,
      });
    }
    // a member down at start is a member down: it joins when a health check passes
    for (const [member, error] of failed) {
      member.healthy = false;
      member.open(`initialize failed: ${describeError(error)}`);
    }
    // two members on one device would count its capacity twice and "fail over" onto itself
    const seen = new Map<string, string>();
    for (const m of this.members.values()) {
      const id = safeInstanceId(m.backend);
      if (m.circuit === 'closed' && seen.has(id)) {
        throw new HsmError('InvalidConfiguration', `pool members ${seen.get(id)} and ${m.name} are the same backend instance (${id}); list each instance once`, { details: { field: 'pool.members' } });
      }
      seen.set(id, m.name);
    }
    this.state = 'ready';
    if (this.startHealthChecks) {
      this.timer = setInterval(() => void this.checkHealth(), this.healthIntervalMs);
      this.timer.unref();
    }
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.timer) clearInterval(this.timer);
    await this.checking?.catch(() => undefined);
    await Promise.allSettled([...this.members.values()].map((m) => m.backend.close()));
  }

  private ready(): void {
    if (this.state === 'closed') throw new HsmError('Closed', 'the HSM pool is closed');
    if (this.state !== 'ready') throw new HsmError('NotInitialized', 'call initialize() before using the HSM pool');
  }

  memberNames(): string[] {
    return [...this.members.keys()];
  }

  /** The backend of a member, for placement decisions and tools (drift, replication). */
  backendOf(name: string): HsmBackend {
    return this.member(name).backend;
  }

  private member(name: string): Member {
    const member = this.members.get(name);
    if (!member) throw new HsmError('InvalidArgument', `no pool member named ${JSON.stringify(name)}; members: ${this.memberNames().join(', ')}`, { details: { field: 'member' } });
    return member;
  }

  /** The member whose backend instance is `instanceId` (handles name instances, not members). */
  memberForInstance(instanceId: string): string | undefined {
    for (const m of this.members.values()) if (safeInstanceId(m.backend) === instanceId) return m.name;
    return undefined;
  }

  status(): MemberStatus[] {
    return [...this.members.values()].map((m) => m.status());
  }

  /** Runs every member's health check once (the loop calls this; tests may too). */
  checkHealth(): Promise<void> {
    if (this.checking) return this.checking;
    this.checking = Promise.all([...this.members.values()].map((m) => this.checkMember(m))).then(
      () => undefined,
      () => undefined,
    );
    return this.checking.finally(() => (this.checking = undefined));
  }

  private async checkMember(member: Member): Promise<void> {
    const started = performance.now();
    let healthy = false;
    let message: string;
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new HsmError('Timeout', `health check took longer than ${this.healthTimeoutMs} ms`)), this.healthTimeoutMs);
      });
      const result = await Promise.race([member.backend.healthCheck(), timeout]);
      healthy = result.healthy;
      message = result.message;
    } catch (error) {
      message = describeError(error);
    } finally {
      clearTimeout(timer);
    }
    if (this.state === 'closed') return;
    member.lastHealthAt = new Date();
    member.lastHealthLatencyMs = performance.now() - started;
    if (healthy) {
      if (member.circuit === 'open' || !member.healthy) {
        member.recoveries++;
        // a member back from the dead starts level with the others, not owed every call it missed
        const others = [...this.members.values()].filter((m) => m !== member && m.unavailableReason() === undefined);
        if (others.length > 0) member.routed = Math.min(...others.map((m) => m.routed / m.weight)) * member.weight;
      }
      member.healthy = true;
      member.circuit = 'closed';
      member.consecutiveFailures = 0;
      member.reason = undefined;
    } else {
      member.healthy = false;
      member.open(message);
    }
  }

  // ---- placement ----

  /** Records that `keyId` lives on `members` (same key material under the same id on each). */
  place(keyId: string, members: readonly string[]): void {
    if (members.length === 0) throw new HsmError('InvalidArgument', `key ${keyId} must be placed on at least one member`, { details: { field: 'members' } });
    for (const name of members) this.member(name);
    this.placements.set(keyId, [...new Set(members)]);
  }

  placementOf(keyId: string): KeyPlacement | undefined {
    const members = this.placements.get(keyId);
    return members ? { keyId, members: [...members] } : undefined;
  }

  listPlacements(): KeyPlacement[] {
    return [...this.placements].map(([keyId, members]) => ({ keyId, members: [...members] }));
  }

  /** Asks every member whether it holds `keyId` and records the answer as the key's placement. */
  async discover(keyId: string): Promise<KeyPlacement> {
    this.ready();
    const found: string[] = [];
    await Promise.all(
      [...this.members.values()].map(async (m) => {
        try {
          await m.backend.getKey(keyId);
          found.push(m.name);
        } catch (error) {
          if (!isHsmError(error, 'KeyNotFound')) return;
        }
      }),
    );
    if (found.length === 0) throw new HsmError('KeyNotFound', `no pool member holds key ${keyId}`, { details: { keyId } });
    found.sort();
    this.placements.set(keyId, found);
    return { keyId, members: found };
  }

  /** Generates a key on one member and records the placement. */
  async generateOn(member: string, spec: KeySpec): Promise<HsmKeyHandle> {
    this.ready();
    const m = this.member(member);
    const handle = await m.backend.generateKeyPair(spec);
    this.placements.set(spec.id, [member]);
    return handle;
  }

  // ---- routing ----

  /**
   * The member to send the next call on `keyId` to. Among the group's members that take work,
   * those whose outstanding calls per unit of weight are within one of the least loaded are
   * candidates, and of those the one furthest behind its weighted share of the calls gets it. So a
   * slow or stuck member stops getting work as soon as its queue grows (least outstanding work),
   * while members that keep up share the calls by weight instead of by who answered last.
   */
  pick(keyId: string, exclude: ReadonlySet<string> = new Set()): Member {
    const group = this.groupOf(keyId);
    const available: Member[] = [];
    const refused: string[] = [];
    for (const name of group) {
      const m = this.members.get(name)!;
      if (exclude.has(name)) {
        refused.push(`${name} (just failed this call)`);
        continue;
      }
      const reason = m.unavailableReason();
      if (reason !== undefined) {
        refused.push(`${name} (${reason})`);
        continue;
      }
      available.push(m);
    }
    if (available.length > 0) {
      const least = Math.min(...available.map((m) => m.outstanding / m.weight));
      let best: Member | undefined;
      let bestShare = Infinity;
      for (const m of available) {
        if (m.outstanding / m.weight > least + LOAD_SLACK) continue;
        const share = m.routed / m.weight;
        if (share < bestShare) {
          best = m;
          bestShare = share;
        }
      }
      return best!;
    }
    const where = group.length === 1 ? `only on member ${group[0]}` : `on members ${group.join(', ')}`;
    throw new HsmError('KeyUnavailable', `key ${keyId} lives ${where}, and none can take work: ${refused.join('; ')}`, {
      retryable: true,
      details: { keyId, members: group.join(',') },
    });
  }

  private groupOf(keyId: string): string[] {
    this.ready();
    const group = this.placements.get(keyId);
    if (!group) throw new HsmError('KeyNotFound', `key ${keyId} is not placed on any pool member (place() or discover() it first)`, { details: { keyId } });
    return group;
  }

  /**
   * Runs `op` on the chosen member; a retryable failure is retried once on another member of the
   * key's group. A key with nowhere else to go fails with KeyUnavailable naming the member and why.
   */
  async run<T>(keyId: string, op: (backend: HsmBackend, member: string) => Promise<T>): Promise<{ result: T; member: string; retriedFrom: string[] }> {
    const tried = new Set<string>();
    const first = this.pick(keyId);
    try {
      return { result: await this.dispatch(first, op), member: first.name, retriedFrom: [] };
    } catch (error) {
      if (!isHsmError(error) || !error.retryable) throw error;
      tried.add(first.name);
      let second: Member;
      try {
        second = this.pick(keyId, tried);
      } catch (unavailable) {
        const group = this.groupOf(keyId);
        const why = describeError(error);
        const message =
          group.length === 1
            ? `key ${keyId} lives only on member ${first.name}, which failed (${why}); there is no other member to fail over to`
            : `key ${keyId} failed on member ${first.name} (${why}) and no other member can take it: ${(unavailable as Error).message}`;
        throw new HsmError('KeyUnavailable', message, { cause: error, retryable: true, details: { keyId, member: first.name, code: error.code } });
      }
      return { result: await this.dispatch(second, op), member: second.name, retriedFrom: [first.name] };
    }
  }

  private async dispatch<T>(member: Member, op: (backend: HsmBackend, member: string) => Promise<T>): Promise<T> {
    member.outstanding++;
    member.dispatched++;
    member.routed++;
    try {
      const result = await op(member.backend, member.name);
      member.succeeded++;
      member.consecutiveFailures = 0;
      return result;
    } catch (error) {
      member.failed++;
      this.noteFailure(member, error);
      throw error;
    } finally {
      member.outstanding--;
    }
  }

  private noteFailure(member: Member, error: unknown): void {
    if (!isHsmError(error) || !error.retryable || NOT_A_MEMBER_FAULT.has(error.code)) return;
    if (DEVICE_GONE.has(error.code)) {
      member.healthy = false;
      member.open(describeError(error));
      return;
    }
    member.consecutiveFailures++;
    if (member.consecutiveFailures >= this.failureThreshold) member.open(`${member.consecutiveFailures} consecutive failures, last: ${describeError(error)}`);
  }

  /**
   * Compares where keys should be (`expected`, by default the pool's own placements) with what
   * each member holds: keys missing from a member, keys a member holds that nothing placed there
   * (only among ids matching `extraPrefix`, so unrelated keys on a shared token are not noise),
   * and replicas whose public key differs from the group's first member (not the same key).
   */
  async drift(expected: readonly KeyPlacement[] = this.listPlacements(), options: { extraPrefix?: string } = {}): Promise<DriftReport> {
    this.ready();
    const report: DriftReport = { checkedAt: new Date(), missing: [], extra: [], mismatched: [], unreachable: [] };
    const expectedOn = new Map<string, Set<string>>();
    for (const name of this.members.keys()) expectedOn.set(name, new Set());
    for (const placement of expected) {
      let reference: { member: string; spki: string } | undefined;
      for (const name of placement.members) {
        expectedOn.get(name)?.add(placement.keyId);
        const backend = this.member(name).backend;
        try {
          const spki = Buffer.from((await backend.getPublicKey(placement.keyId)).spki).toString('hex');
          if (!reference) reference = { member: name, spki };
          else if (reference.spki !== spki) report.mismatched.push({ keyId: placement.keyId, member: name, reference: reference.member });
        } catch (error) {
          if (isHsmError(error, 'KeyNotFound')) report.missing.push({ keyId: placement.keyId, member: name });
          else report.unreachable.push({ member: name, reason: describeError(error) });
        }
      }
    }
    if (options.extraPrefix !== undefined) {
      for (const [name, wanted] of expectedOn) {
        try {
          let cursor: string | undefined;
          do {
            const page = await this.member(name).backend.listKeys({ prefix: options.extraPrefix, limit: 1000, ...(cursor ? { cursor } : {}) });
            for (const k of page.keys) if (!wanted.has(k.id)) report.extra.push({ keyId: k.id, member: name });
            cursor = page.nextCursor;
          } while (cursor);
        } catch (error) {
          report.unreachable.push({ member: name, reason: describeError(error) });
        }
      }
    }
    return report;
  }

  async sign(keyId: string, data: Uint8Array, options?: SignOptions): Promise<PoolSignResult> {
    const { result, member, retriedFrom } = await this.run(keyId, (backend) => backend.sign(keyId, data, options));
    return { signature: result, member, retriedFrom };
  }

  async verify(keyId: string, data: Uint8Array, signature: Uint8Array, options?: SignOptions): Promise<boolean> {
    return (await this.run(keyId, (backend) => backend.verify(keyId, data, signature, options))).result;
  }

  async getPublicKey(keyId: string): Promise<PublicKeyInfo> {
    return (await this.run(keyId, (backend) => backend.getPublicKey(keyId))).result;
  }

  /** Destroys the key on every member of its group (a member that is down fails the call). */
  async destroyEverywhere(keyId: string): Promise<void> {
    const group = this.groupOf(keyId);
    for (const name of group) {
      try {
        await this.member(name).backend.destroyKey(keyId);
      } catch (error) {
        if (!isHsmError(error, 'KeyNotFound')) throw error;
      }
    }
    this.placements.delete(keyId);
  }
}
