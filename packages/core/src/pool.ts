import { HsmError, type HsmErrorCode } from './errors.js';

export interface PoolFactory<T> {
  create(): Promise<T>;
  destroy(resource: T): Promise<void>;
  /** Returns false (or throws) when the resource is unusable; used on borrow and on the interval. */
  validate?(resource: T): Promise<boolean>;
}

export interface PoolOptions {
  /** Resources kept open even when idle (warmed by `start()`). Default 0. */
  min?: number;
  /** Hard ceiling of resources alive at once. Default 10. */
  max?: number;
  /** Idle resources above `min` are destroyed after this long. Default 30 s; 0 disables. */
  idleTimeoutMs?: number;
  /** A caller waiting longer than this gets `exhaustedCode`. Default 5 s. */
  acquireTimeoutMs?: number;
  /** Validate each resource as it is borrowed. Default false (costs a round trip per borrow). */
  validateOnBorrow?: boolean;
  /** Validate idle resources every this many ms. Default 0 (off). */
  healthCheckIntervalMs?: number;
  /** Resources older than this are recycled when returned. Default 0 (never). */
  maxAgeMs?: number;
  /** Resources used this many times are recycled when returned. Default 0 (never). */
  maxUses?: number;
  /** Error code for an acquire timeout. Default 'SessionPoolExhausted'. */
  exhaustedCode?: HsmErrorCode;
  /** Name used in error messages. */
  name?: string;
  /** Clock, injectable for tests. */
  now?: () => number;
}

export interface PoolMetrics {
  size: number;
  idle: number;
  inUse: number;
  waiting: number;
  max: number;
  created: number;
  acquired: number;
  released: number;
  destroyed: number;
  evicted: number;
  recycled: number;
  timeouts: number;
  createFailures: number;
}

interface Entry<T> {
  resource: T;
  createdAt: number;
  lastUsedAt: number;
  uses: number;
}

interface Waiter<T> {
  resolve(lease: PoolLease<T>): void;
  reject(error: unknown): void;
  timer: NodeJS.Timeout | undefined;
  settled: boolean;
}

export interface PoolLease<T> {
  readonly resource: T;
  /** Number of times this resource has been lent, this lease included. */
  readonly uses: number;
  readonly createdAt: number;
  /** Returns the resource to the pool. */
  release(): void;
  /** Destroys the resource instead of returning it (it failed in a way that makes it unusable). */
  evict(): void;
}

export type PoolEvent = 'create' | 'destroy' | 'evict' | 'recycle' | 'timeout';

/**
 * A generic pool of expensive resources (PKCS#11 sessions, SDK clients): FIFO waiters,
 * a hard maximum, idle expiry, validation, recycling by age or use count, and eviction
 * of resources that the caller classifies as broken.
 */
export class ResourcePool<T> {
  private readonly idle: Entry<T>[] = [];
  private readonly waiters: Waiter<T>[] = [];
  private readonly leased = new Set<Entry<T>>();
  private pending = 0;
  private closed = false;
  private maxSize: number;
  private readonly opts: Required<Omit<PoolOptions, 'name'>> & { name: string };
  private readonly counters = {
    created: 0,
    acquired: 0,
    released: 0,
    destroyed: 0,
    evicted: 0,
    recycled: 0,
    timeouts: 0,
    createFailures: 0,
  };
  private idleTimer: NodeJS.Timeout | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<(event: PoolEvent) => void>();

  constructor(
    private readonly factory: PoolFactory<T>,
    options: PoolOptions = {},
  ) {
    const o = {
      min: options.min ?? 0,
      max: options.max ?? 10,
      idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
      acquireTimeoutMs: options.acquireTimeoutMs ?? 5_000,
      validateOnBorrow: options.validateOnBorrow ?? false,
      healthCheckIntervalMs: options.healthCheckIntervalMs ?? 0,
      maxAgeMs: options.maxAgeMs ?? 0,
      maxUses: options.maxUses ?? 0,
      exhaustedCode: options.exhaustedCode ?? 'SessionPoolExhausted',
      name: options.name ?? 'pool',
      now: options.now ?? Date.now,
    };
    for (const field of ['min', 'max', 'idleTimeoutMs', 'acquireTimeoutMs', 'healthCheckIntervalMs', 'maxAgeMs', 'maxUses'] as const) {
      const value = o[field];
      if (!Number.isInteger(value) || value < 0) {
        throw new HsmError('InvalidConfiguration', `${o.name}: ${field} must be a whole number >= 0, got ${String(value)}`);
      }
    }
    if (o.max < 1) throw new HsmError('InvalidConfiguration', `${o.name}: max must be at least 1, got ${o.max}`);
    if (o.min > o.max) throw new HsmError('InvalidConfiguration', `${o.name}: min (${o.min}) must not exceed max (${o.max})`);
    this.opts = o;
    this.maxSize = o.max;
  }

  /** Opens `min` resources and starts the background timers. */
  async start(): Promise<void> {
    await this.ensureMin();
    if (this.opts.idleTimeoutMs > 0) {
      this.idleTimer = setInterval(() => void this.reapIdle(), Math.max(250, Math.min(this.opts.idleTimeoutMs, 5_000)));
      this.idleTimer.unref();
    }
    if (this.opts.healthCheckIntervalMs > 0) {
      this.healthTimer = setInterval(() => void this.checkIdle(), this.opts.healthCheckIntervalMs);
      this.healthTimer.unref();
    }
  }

  /** Opens resources up to `min` again (after a device restart drained the pool). */
  warm(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.ensureMin();
  }

  /** Fails every caller currently waiting with `error` (e.g. when a circuit opens: fail fast). */
  rejectWaiters(error: unknown): void {
    for (const waiter of this.waiters.splice(0)) {
      if (waiter.settled) continue;
      waiter.settled = true;
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
  }

  onEvent(listener: (event: PoolEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get max(): number {
    return this.maxSize;
  }

  /** Lowers or raises the ceiling (e.g. to a token's ulMaxSessionCount). */
  setMax(max: number): void {
    if (!Number.isInteger(max) || max < 1) throw new HsmError('InvalidArgument', `${this.opts.name}: max must be at least 1, got ${max}`);
    this.maxSize = max;
    this.dispatch();
  }

  get size(): number {
    return this.idle.length + this.leased.size + this.pending;
  }

  metrics(): PoolMetrics {
    return {
      size: this.size,
      idle: this.idle.length,
      inUse: this.leased.size,
      waiting: this.waiters.length,
      max: this.maxSize,
      ...this.counters,
    };
  }

  /** Borrows a resource: an idle one, a new one while under `max`, or the next one returned (FIFO). */
  acquire(signal?: AbortSignal): Promise<PoolLease<T>> {
    if (this.closed) return Promise.reject(new HsmError('Closed', `${this.opts.name} is closed`));
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.waiters.length === 0 && !this.opts.validateOnBorrow) {
      const entry = this.takeIdle();
      if (entry) return Promise.resolve(this.lend(entry));
    }
    return new Promise<PoolLease<T>>((resolve, reject) => {
      const waiter: Waiter<T> = { resolve, reject, timer: undefined, settled: false };
      if (this.opts.acquireTimeoutMs > 0) {
        waiter.timer = setTimeout(() => {
          if (waiter.settled) return;
          this.removeWaiter(waiter);
          this.counters.timeouts++;
          this.emit('timeout');
          reject(
            new HsmError(this.opts.exhaustedCode, `${this.opts.name}: no resource free within ${this.opts.acquireTimeoutMs} ms (${this.leased.size} in use, max ${this.maxSize})`, {
              retryable: true,
              details: { inUse: this.leased.size, max: this.maxSize, waiting: this.waiters.length },
            }),
          );
        }, this.opts.acquireTimeoutMs);
      }
      if (signal) {
        signal.addEventListener(
          'abort',
          () => {
            if (waiter.settled) return;
            this.removeWaiter(waiter);
            reject(abortError(signal));
          },
          { once: true },
        );
      }
      this.waiters.push(waiter);
      this.dispatch();
    });
  }

  /**
   * Runs `fn` with a borrowed resource. When `fn` throws, `shouldEvict(error)` decides whether the
   * resource is destroyed (it is broken) or returned (the caller's input was at fault).
   */
  async use<R>(fn: (resource: T) => Promise<R>, shouldEvict: (error: unknown) => boolean = () => false, signal?: AbortSignal): Promise<R> {
    const lease = await this.acquire(signal);
    let result: R;
    try {
      result = await fn(lease.resource);
    } catch (error) {
      if (shouldEvict(error)) lease.evict();
      else lease.release();
      throw error;
    }
    lease.release();
    return result;
  }

  /** Destroys every idle resource and marks leased ones for destruction on return (after a device restart). */
  async drain(): Promise<void> {
    const entries = this.idle.splice(0);
    for (const entry of this.leased) this.doomed.add(entry);
    await Promise.all(entries.map((e) => this.destroyEntry(e, 'evict')));
  }

  /** Closes the pool: waiters fail with Closed, idle resources are destroyed, leased ones on return. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.idleTimer);
    clearInterval(this.healthTimer);
    for (const waiter of this.waiters.splice(0)) {
      waiter.settled = true;
      clearTimeout(waiter.timer);
      waiter.reject(new HsmError('Closed', `${this.opts.name} is closed`));
    }
    await this.drain();
    // Wait (bounded) for leased resources to come back so close() releases everything it can.
    const deadline = this.opts.now() + 5_000;
    while (this.leased.size > 0 && this.opts.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  private readonly doomed = new Set<Entry<T>>();

  private takeIdle(): Entry<T> | undefined {
    return this.idle.pop();
  }

  private lend(entry: Entry<T>): PoolLease<T> {
    entry.uses++;
    entry.lastUsedAt = this.opts.now();
    this.leased.add(entry);
    this.counters.acquired++;
    let done = false;
    return {
      resource: entry.resource,
      uses: entry.uses,
      createdAt: entry.createdAt,
      release: () => {
        if (done) return;
        done = true;
        this.giveBack(entry, false);
      },
      evict: () => {
        if (done) return;
        done = true;
        this.giveBack(entry, true);
      },
    };
  }

  private giveBack(entry: Entry<T>, evict: boolean): void {
    this.leased.delete(entry);
    this.counters.released++;
    const now = this.opts.now();
    if (evict || this.doomed.delete(entry) || this.closed) {
      void this.destroyEntry(entry, 'evict').then(() => this.dispatch());
      return;
    }
    const tooOld = this.opts.maxAgeMs > 0 && now - entry.createdAt >= this.opts.maxAgeMs;
    const tooUsed = this.opts.maxUses > 0 && entry.uses >= this.opts.maxUses;
    if (tooOld || tooUsed || this.size > this.maxSize) {
      void this.destroyEntry(entry, 'recycle').then(() => this.dispatch());
      return;
    }
    entry.lastUsedAt = now;
    const waiter = this.opts.validateOnBorrow ? undefined : this.nextWaiter();
    if (waiter) {
      waiter.resolve(this.lend(entry));
      return;
    }
    this.idle.push(entry);
    this.dispatch();
  }

  private nextWaiter(): Waiter<T> | undefined {
    while (this.waiters.length > 0) {
      const waiter = this.waiters.shift()!;
      if (waiter.settled) continue;
      waiter.settled = true;
      clearTimeout(waiter.timer);
      return waiter;
    }
    return undefined;
  }

  private removeWaiter(waiter: Waiter<T>): void {
    waiter.settled = true;
    clearTimeout(waiter.timer);
    const i = this.waiters.indexOf(waiter);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  /** Serves waiters from idle resources, or creates resources while under max. */
  private dispatch(): void {
    if (this.closed) return;
    while (this.waiters.length > 0 && this.idle.length > 0) {
      const entry = this.idle.pop()!;
      if (this.opts.validateOnBorrow) {
        void this.validateThenLend(entry);
        continue;
      }
      const waiter = this.nextWaiter();
      if (!waiter) {
        this.idle.push(entry);
        return;
      }
      waiter.resolve(this.lend(entry));
    }
    const wanted = this.waiters.filter((w) => !w.settled).length - this.pending;
    let room = this.maxSize - this.size;
    for (let i = 0; i < wanted && room > 0; i++, room--) void this.createForWaiter();
  }

  private async validateThenLend(entry: Entry<T>): Promise<void> {
    let ok = false;
    this.pending++;
    try {
      ok = (await this.factory.validate?.(entry.resource)) ?? true;
    } catch {
      ok = false;
    } finally {
      this.pending--;
    }
    if (!ok) {
      await this.destroyEntry(entry, 'evict');
      this.dispatch();
      return;
    }
    const waiter = this.nextWaiter();
    if (waiter) waiter.resolve(this.lend(entry));
    else this.idle.push(entry);
  }

  private async createForWaiter(): Promise<void> {
    this.pending++;
    let entry: Entry<T>;
    try {
      const resource = await this.factory.create();
      const now = this.opts.now();
      entry = { resource, createdAt: now, lastUsedAt: now, uses: 0 };
      this.counters.created++;
      this.emit('create');
    } catch (error) {
      this.pending--;
      this.counters.createFailures++;
      // The first waiter learns why; the others try again (a new create, or a returned resource).
      const waiter = this.nextWaiter();
      waiter?.reject(error);
      if (this.waiters.length > 0) setImmediate(() => this.dispatch());
      return;
    }
    this.pending--;
    if (this.closed) {
      await this.destroyEntry(entry, 'destroy');
      return;
    }
    const waiter = this.nextWaiter();
    if (waiter) waiter.resolve(this.lend(entry));
    else {
      this.idle.push(entry);
    }
  }

  private async ensureMin(): Promise<void> {
    const missing = this.opts.min - this.size;
    const created = await Promise.allSettled(
      Array.from({ length: Math.max(0, missing) }, async () => {
        this.pending++;
        try {
          const resource = await this.factory.create();
          const now = this.opts.now();
          this.counters.created++;
          this.emit('create');
          return { resource, createdAt: now, lastUsedAt: now, uses: 0 };
        } finally {
          this.pending--;
        }
      }),
    );
    for (const result of created) {
      if (result.status === 'fulfilled') this.idle.push(result.value);
    }
    const failed = created.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      this.counters.createFailures++;
      throw failed.reason;
    }
    this.dispatch();
  }

  private async reapIdle(): Promise<void> {
    if (this.closed || this.opts.idleTimeoutMs === 0) return;
    const now = this.opts.now();
    const expired: Entry<T>[] = [];
    // Oldest-idle first: the idle stack keeps the most recently used at the end.
    for (let i = 0; i < this.idle.length && this.size - expired.length > this.opts.min; ) {
      const entry = this.idle[i]!;
      if (now - entry.lastUsedAt >= this.opts.idleTimeoutMs) {
        this.idle.splice(i, 1);
        expired.push(entry);
      } else i++;
    }
    await Promise.all(expired.map((e) => this.destroyEntry(e, 'destroy')));
  }

  private async checkIdle(): Promise<void> {
    if (this.closed || !this.factory.validate) return;
    const entries = this.idle.splice(0);
    const results = await Promise.all(
      entries.map(async (entry) => {
        try {
          return (await this.factory.validate!(entry.resource)) ? entry : undefined;
        } catch {
          return undefined;
        }
      }),
    );
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      if (results[i] && !this.closed) this.idle.push(entry);
      else await this.destroyEntry(entry, 'evict');
    }
    this.dispatch();
    if (!this.closed) await this.ensureMin().catch(() => undefined);
  }

  private async destroyEntry(entry: Entry<T>, reason: 'destroy' | 'evict' | 'recycle'): Promise<void> {
    this.counters.destroyed++;
    if (reason === 'evict') this.counters.evicted++;
    if (reason === 'recycle') this.counters.recycled++;
    this.emit(reason);
    this.pending++;
    try {
      await this.factory.destroy(entry.resource);
    } catch {
      // A resource that fails to close is gone either way (dead session, closed socket).
    } finally {
      this.pending--;
    }
  }

  private emit(event: PoolEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}

function abortError(signal: AbortSignal): HsmError {
  return new HsmError('Timeout', 'the wait for a resource was aborted', { cause: signal.reason, retryable: true });
}
