/**
 * The connection to one token: the loaded module, an anchor session that holds the login, the
 * session pool, sign threads, and what happens when a call fails (retry on a fresh session,
 * shared re-login, circuit breaker with background re-initialisation). Key handling and signing
 * live in key-store.ts and signing.ts; they reach the token only through `withSession`.
 */
import { availableParallelism } from 'node:os';
import { basename } from 'node:path';
import { HsmError, ResourcePool, isHsmError, type HsmErrorCode, type KeyAlgorithm, type PoolLease, type PoolMetrics } from '@olocus/hsm-core';
import type { PKCS11 } from 'pkcs11js';
import { classifyReturnValue, returnValueName, returnValueOf, type FailureClass } from './classify.js';
import { CKF_RW_SESSION, CKF_SERIAL_SESSION, CKR, isUnavailable } from './constants.js';
import { measureIdentity, type ModuleIdentity } from './fips.js';
import type { SignPlan } from './keys.js';
import { LoginState, loginScope } from './login.js';
import { acquireModuleAsync, releaseModule, type SharedModule } from './module.js';
import { DEFAULT_DEADLINES, type AsyncPkcs11, type DeadlineKind, type Deadlines } from './module-thread.js';
import type { Pkcs11Session } from './objects.js';
import type { Pkcs11Options } from './options.js';
import { SignThreads } from './sign-threads.js';
import { findLibrary, probeAlgorithms, selectToken, type SelectedToken } from './token.js';
import type { VendorProfile } from './vendors.js';

export function closedError(): HsmError {
  return new HsmError('Closed', 'the pkcs11 backend is closed');
}

export function notInitializedError(): HsmError {
  return new HsmError('NotInitialized', 'the pkcs11 backend is not initialized: call initialize() first');
}

/** A CKR_USER_NOT_LOGGED_IN as pkcs11js would throw it, for logins found lost by other means. */
export function loginLostError(): Error {
  return Object.assign(new Error('CKR_USER_NOT_LOGGED_IN'), { name: 'Pkcs11Error', code: CKR.USER_NOT_LOGGED_IN });
}

function rvName(error: unknown): string {
  const rv = returnValueOf(error);
  return rv === undefined ? 'error' : returnValueName(rv);
}

/** Marks a Timeout whose session beforeDeadline already quarantines. */
const QUARANTINED = Symbol('quarantined');

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * Whether a module must be kept off the main thread: p11-kit-client.so (an RPC client), and every
 * hardware vendor's client library (network HSMs; USB ones behind a connector). `remote` in the
 * options overrides the guess either way.
 */
export function isRemoteModule(libraryPath: string, options: Pick<Pkcs11Options, 'remote'>, vendor: VendorProfile): boolean {
  if (options.remote !== undefined) return options.remote;
  return /p11-kit-client/i.test(basename(libraryPath)) || vendor.hardwareBacked;
}

export interface ConnectionCounters {
  relogins: number;
  /** Operations answered Timeout (their session quarantined). */
  timeouts: number;
  retries: number;
  circuitOpens: number;
  recoveries: number;
  signs: number;
  threadSigns: number;
  /** Signs made inline, synchronously on the main thread (adaptive dispatch). */
  inlineSigns: number;
  /** Start-ups begun again because the token was briefly missing or failing (another process rewriting it). */
  startRetries: number;
}

/** How long start-up keeps beginning again while the token is briefly missing or failing. */
const START_RETRY_BUDGET_MS = 5_000;

/**
 * Whether another start-up attempt may not meet this failure: `rewrite` for what another
 * process's C_Login shows (no initialised token at all, a slot whose token is not initialised,
 * or the device answering an error), which is retried for up to START_RETRY_BUDGET_MS; `maybe`
 * for a token or slot that is missing while others are there (more likely a wrong label or
 * slot), retried only a few times so that a typo is reported within about a second. A user PIN
 * that is not initialised is `maybe` too: a token being rewritten shows it for a moment.
 */
function transientStartFailure(error: unknown): 'rewrite' | 'maybe' | false {
  if (isHsmError(error, 'LoginFailed')) return error.details.rv === 'CKR_USER_PIN_NOT_INITIALIZED' ? 'maybe' : false;
  if (isHsmError(error, 'TokenLabelMismatch')) return error.details.found === '' ? 'rewrite' : 'maybe';
  if (isHsmError(error, 'SlotNotFound')) return /has no token|not initialised/.test(error.message) ? 'rewrite' : 'maybe';
  const cls = classifyReturnValue(error);
  return cls === 'device' || cls === 'ambiguous' || cls === 'session' ? 'rewrite' : false;
}

export class TokenConnection {
  mod: SharedModule | undefined;
  libraryPath = '';
  token: SelectedToken = { slot: Buffer.alloc(0), slotNumber: -1, label: '', serial: '' };
  identity: ModuleIdentity | undefined;
  plans = new Map<KeyAlgorithm, SignPlan>();
  anchor: Pkcs11Session | undefined;
  pool: ResourcePool<Pkcs11Session> | undefined;
  signThreads: SignThreads | undefined;
  readonly loginState = new LoginState();
  readonly counters: ConnectionCounters = { relogins: 0, timeouts: 0, retries: 0, circuitOpens: 0, recoveries: 0, signs: 0, threadSigns: 0, inlineSigns: 0, startRetries: 0 };
  sessionsOpen = 0;
  circuit: { open: boolean; reason: string; since: number } = { open: false, reason: '', since: 0 };
  /** True between a completed open() and close(): the circuit breaker only runs while active. */
  active = false;
  #pin: string | undefined;
  #loginScope = '';
  #anchorGeneration = -1;
  #seenGeneration = 0;
  #recovery: Promise<void> | undefined;
  #reloginPromise: Promise<void> | undefined;
  #reattachPromise: Promise<void> | undefined;

  constructor(
    readonly options: Pkcs11Options,
    readonly vendor: VendorProfile,
    /** Called whenever object handles may have died (circuit opened, module re-initialised). */
    private readonly onReset: () => void,
  ) {}

  get p11(): PKCS11 {
    if (!this.mod) throw notInitializedError();
    return this.mod.p11;
  }

  /** The module's calls outside the local signing hot path (through the module thread when remote). */
  get api(): AsyncPkcs11 {
    if (!this.mod) throw notInitializedError();
    return this.mod.api;
  }

  get remote(): boolean {
    return this.mod?.remote ?? false;
  }

  get deadlines(): Deadlines {
    const out = { ...DEFAULT_DEADLINES };
    for (const [k, v] of Object.entries(this.options.deadlines ?? {})) if (v !== undefined) out[k as DeadlineKind] = v;
    return out;
  }

  get generation(): number {
    return this.mod?.generation ?? -1;
  }

  /** Loads the module, finds the token, probes it, logs in on the anchor and starts the pool. */
  async open(pin: string): Promise<void> {
    this.#pin = pin;
    this.libraryPath = findLibrary(this.options, this.vendor);
    const remote = isRemoteModule(this.libraryPath, this.options, this.vendor);
    try {
      this.mod = await acquireModuleAsync(this.libraryPath, remote, this.deadlines);
    } catch (error) {
      throw this.nativeError(error, 'InitializationFailed', 'initialization');
    }
    this.#seenGeneration = this.mod.generation;
    // Backing off to 600 ms, for up to START_RETRY_BUDGET_MS in all when the failure looks like
    // another process's login: a fixed five tries lost to a token that several processes keep
    // logging in to (a third of the starts missed it, so five misses in a row came once in a few
    // hundred starts).
    const delaysMs = [20, 60, 150, 300, 600];
    const giveUpAt = performance.now() + START_RETRY_BUDGET_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.startOnToken(remote);
        return;
      } catch (error) {
        const delay = delaysMs[Math.min(attempt, delaysMs.length - 1)]!;
        const transient = transientStartFailure(error);
        const retry = transient === 'rewrite' ? performance.now() + delay <= giveUpAt : transient === 'maybe' && attempt < delaysMs.length;
        if (!retry || !this.mod) throw this.nativeError(error, 'InitializationFailed', 'initialization');
        // Another process can hide the token for a moment: SoftHSM rewrites token.object at every
        // C_Login, truncating it before it takes the lock, and a process reading it then sees no
        // token (measured: 30 of 40 concurrent pkcs11-tool logins) or gets CKR_GENERAL_ERROR from
        // C_GetTokenInfo. The module re-reads its token directory only at C_Initialize, so start again from there.
        this.counters.startRetries++;
        await this.abandonStart();
        await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random())));
        // never under another backend instance's feet: it would lose its sessions for this one's sake
        if (this.mod.refs === 1) await this.mod.reinitialize(this.mod.generation);
        this.#seenGeneration = this.mod.generation;
      }
    }
  }

  /** Finds the token, probes it, logs in on the anchor and starts the pool. */
  private async startOnToken(remote: boolean): Promise<void> {
    const mod = this.mod!;
    await this.selectToken();
    const api = mod.api;
    this.identity = await measureIdentity(api, this.token.slot);
    this.plans = await probeAlgorithms(api, this.token.slot, this.vendor);
    await this.openAnchor();
    await this.login();
    const pool = this.options.sessionPool;
    const tokenInfo = await api.C_GetTokenInfo(this.token.slot);
    let max = pool.maxSessions;
    const tokenMax = tokenInfo.maxSessionCount;
    if (tokenMax > 0 && !isUnavailable(tokenMax)) max = Math.max(1, Math.min(max, tokenMax - 1));
    this.pool = new ResourcePool<Pkcs11Session>(
      {
        create: async () => this.openSession(),
        destroy: async (session) => this.closeSession(session),
        validate: async (session) => this.sessionAlive(session),
      },
      {
        min: Math.min(pool.minSessions, max),
        max,
        idleTimeoutMs: pool.idleTimeout,
        acquireTimeoutMs: pool.acquireTimeout,
        healthCheckIntervalMs: pool.healthCheckInterval,
        maxAgeMs: pool.maxSessionAge,
        maxUses: pool.maxSessionUses,
        exhaustedCode: 'SessionPoolExhausted',
        name: `pkcs11 session pool (token '${this.token.label}')`,
      },
    );
    await this.pool.start();
    const threads = remote ? 0 : (this.options.signThreads ?? Math.min(max, availableParallelism()));
    if (threads > 0) {
      const firstAnchor = Uint8Array.from(this.anchor!.handle);
      this.signThreads = new SignThreads(this.libraryPath, Math.min(threads, max), max, () => (this.anchor ? Uint8Array.from(this.anchor.handle) : firstAnchor));
      // otherwise started on demand (signing.ts): a process that verifies, or signs once, never starts them
      if (this.options.dispatch === 'threads') this.signThreads.start();
    }
  }

  /** Undoes a start-up that failed part way (its sessions die with the re-initialisation that follows). */
  private async abandonStart(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    if (pool) await pool.close().catch(() => undefined);
    if (this.anchor) {
      this.closeSession(this.anchor);
      this.anchor = undefined;
    }
    this.loginState.release();
  }

  /** Waits for the pool and sign threads, then releases everything. */
  async close(): Promise<void> {
    this.active = false;
    if (this.pool) await this.pool.close();
    // Sign threads use the module too: they must have exited before C_Finalize (a thread
    // still inside the library when it is finalized crashes the process).
    await this.signThreads?.close();
    await this.teardown();
  }

  /** Releases sessions, the login record and the module reference; safe to call more than once. */
  teardown(): Promise<void> {
    this.active = false;
    const pool = this.pool;
    this.pool = undefined;
    if (pool) void pool.close();
    void this.signThreads?.close();
    this.signThreads = undefined;
    if (this.anchor) {
      this.closeSession(this.anchor);
      this.anchor = undefined;
    }
    this.loginState.release();
    this.onReset();
    const mod = this.mod;
    this.mod = undefined;
    return mod ? releaseModule(mod) : Promise.resolve();
  }

  private async selectToken(): Promise<void> {
    this.token = await selectToken(this.api, this.options);
    this.#loginScope = loginScope(this.libraryPath, this.token.slotNumber, this.token.serial, this.token.label);
  }

  // ---------------------------------------------------------------- login

  private async openAnchor(): Promise<void> {
    this.anchor = await this.openSession(true);
    this.#anchorGeneration = this.anchor.generation;
  }

  /**
   * C_Login on the anchor session. Called once at start, and again only when the token reports
   * the login lost. A wrong PIN is never retried: it makes the backend unusable until a new one is built.
   */
  private login(): Promise<void> {
    return this.loginState.login({ p11: this.api, session: this.anchor!.handle, scope: this.#loginScope, generation: this.mod!.generation, tokenLabel: this.token.label }, this.#pin);
  }

  /** One shared re-login: concurrent callers that lost the login await the same C_Login. */
  private relogin(): Promise<void> {
    this.#reloginPromise ??= (async () => {
      this.counters.relogins++;
      try {
        await this.login();
      } catch (error) {
        if (classifyReturnValue(error) !== 'session') throw error;
        await this.openAnchor();
        await this.login();
      }
    })().finally(() => {
      this.#reloginPromise = undefined;
    });
    return this.#reloginPromise;
  }

  /** Whether the session sees the user login (CKS_RO/RW_USER_FUNCTIONS). */
  async loggedIn(session: Pkcs11Session): Promise<boolean> {
    try {
      const state = (await this.api.C_GetSessionInfo(session.handle)).state;
      return state === 1 || state === 3;
    } catch {
      return true; // not a login question: let the original error speak
    }
  }

  // ---------------------------------------------------------------- sessions

  private async openSession(anchor = false): Promise<Pkcs11Session> {
    if (this.circuit.open && !anchor) throw this.circuitError();
    const mod = this.mod;
    if (!mod || this.token.slotNumber < 0) throw closedError();
    const flags = CKF_SERIAL_SESSION | (this.options.readOnly ? 0 : CKF_RW_SESSION);
    const handle = await mod.api.C_OpenSession(this.token.slot, flags);
    this.sessionsOpen++;
    return { handle, generation: mod.generation };
  }

  private closeSession(session: Pkcs11Session): void {
    const mod = this.mod;
    // A session from an older generation died with C_Finalize; its handle number may now belong
    // to someone else's session, so it must not be closed.
    if (mod?.initialized && session.generation === mod.generation) {
      // not awaited: on a remote module the close waits its turn behind a frozen call (quarantine)
      mod.api.C_CloseSession(session.handle).catch(() => undefined);
    }
    this.sessionsOpen--;
  }

  private async sessionAlive(session: Pkcs11Session): Promise<boolean> {
    const mod = this.mod;
    if (!mod?.initialized || session.generation !== mod.generation) return false;
    await mod.api.C_GetSessionInfo(session.handle);
    return true;
  }

  /** LoginFailed / PinLocked for good after a refused PIN; CircuitOpen while recovering. */
  assertAvailable(): void {
    const fatal = this.loginState.fatal;
    if (fatal) throw new HsmError(fatal.code, fatal.message, { retryable: false, details: { ...fatal.details } });
    if (this.circuit.open) throw this.circuitError();
  }

  /**
   * Runs `fn` on a pooled session and applies the failure classification:
   * session dead → evict + retry; login lost → shared re-login + retry; device gone → circuit;
   * stale object handle → reported to the caller (which looks the key up again); others → no retry.
   * `assertUsable` is the caller's lifecycle check, repeated before every attempt.
   *
   * On a remote module the whole operation (waiting for a session included) has the deadline of
   * its `kind`; past it the caller gets a retryable Timeout and the session is quarantined: it is
   * never lent again, and closed when (if) the call that holds it returns.
   */
  async withSession<R>(op: HsmErrorCode, what: string, fn: (session: Pkcs11Session, p11: AsyncPkcs11) => Promise<R>, assertUsable: () => void, signal?: AbortSignal, kind: DeadlineKind = 'find'): Promise<R> {
    const deadlineMs = this.remote ? this.deadlines[kind] : 0;
    const deadlineAt = deadlineMs > 0 ? Date.now() + deadlineMs : 0;
    const timeout = () => {
      this.counters.timeouts++;
      return this.timeoutError(what, kind, deadlineMs);
    };
    let sessionRetries = 0;
    let loginRetries = 0;
    const retries = this.options.sessionPool.retryAttempts;
    for (let guard = 0; ; guard++) {
      assertUsable();
      const mod = this.mod!;
      if (this.#anchorGeneration !== mod.generation) {
        try {
          await this.reattach();
        } catch (error) {
          throw this.nativeError(error, op, what);
        }
      }
      let lease: PoolLease<Pkcs11Session>;
      try {
        if (deadlineAt > 0) {
          const remaining = deadlineAt - Date.now();
          if (remaining <= 0) throw timeout();
          const timer = AbortSignal.timeout(remaining);
          lease = await this.pool!.acquire(signal ? AbortSignal.any([signal, timer]) : timer).catch((error: unknown) => {
            throw timer.aborted ? timeout() : error;
          });
        } else {
          lease = await this.pool!.acquire(signal);
        }
      } catch (error) {
        throw this.nativeError(error, op, what);
      }
      const session = lease.resource;
      if (session.generation !== mod.generation && guard < 64) {
        lease.evict();
        continue;
      }
      if (this.circuit.open) {
        lease.release();
        throw this.circuitError();
      }
      try {
        const work = fn(session, mod.api);
        const result = deadlineAt > 0 ? await this.beforeDeadline(work, deadlineAt, timeout, () => lease.evict()) : await work;
        lease.release();
        return result;
      } catch (error) {
        if (isHsmError(error, 'Timeout') && deadlineAt > 0) {
          // quarantine: beforeDeadline evicts it once the call returns; a call of the module thread
          // that expired in its queue never reached the module, but the session is not trusted either
          if (!(error as HsmError & { [QUARANTINED]?: true })[QUARANTINED]) {
            lease.evict();
            this.counters.timeouts++;
          }
          throw error;
        }
        if (isHsmError(error)) {
          lease.release();
          throw error;
        }
        let cls = classifyReturnValue(error);
        // SoftHSM hides private objects after a lost login instead of saying CKR_USER_NOT_LOGGED_IN
        if (cls === 'staleObject' && !(await this.loggedIn(session))) cls = 'login';
        if (cls === 'session') {
          lease.evict();
          // one dead session usually means they all are (token reset, server restart): drop the idle ones
          if (returnValueOf(error) !== CKR.OPERATION_ACTIVE) void this.pool?.drain();
          if (sessionRetries++ < retries) {
            this.counters.retries++;
            continue;
          }
          throw new HsmError('SessionFailed', `${what}: the session failed (${rvName(error)}) and the retry failed too`, { cause: error, retryable: true, details: { rv: rvName(error) } });
        }
        if (cls === 'login') {
          lease.release();
          if (loginRetries++ < retries) {
            this.counters.retries++;
            try {
              await this.relogin();
            } catch (loginError) {
              throw this.nativeError(loginError, op, what);
            }
            continue;
          }
          throw new HsmError('SessionFailed', `${what}: the token reports the login lost (CKR_USER_NOT_LOGGED_IN)`, { cause: error, retryable: true, details: { rv: 'CKR_USER_NOT_LOGGED_IN' } });
        }
        // Any other native failure: the session may be left with an operation active (SoftHSM keeps
        // the sign operation after CKR_ARGUMENTS_BAD), so it is replaced rather than reused.
        lease.evict();
        throw this.nativeError(error, op, what);
      }
    }
  }

  /**
   * Settles with `work`, or with a Timeout at `deadlineAt`; then `quarantine` runs when `work`
   * finally settles (the session it holds is closed then, never lent again).
   */
  private beforeDeadline<R>(work: Promise<R>, deadlineAt: number, timeout: () => HsmError, quarantine: () => void): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        const error = Object.assign(timeout(), { [QUARANTINED]: true as const });
        work.then(quarantine, quarantine);
        reject(error);
      }, Math.max(0, deadlineAt - Date.now()));
      work.then(
        (value) => {
          if (late) return;
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          if (late) return;
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  timeoutError(what: string, kind: DeadlineKind, deadlineMs: number): HsmError {
    return new HsmError('Timeout', `${what}: the PKCS#11 module did not answer within ${deadlineMs} ms (deadlines.${kind}); the device may be frozen or unreachable, try again later`, {
      retryable: true,
      details: { deadlineKind: kind, deadlineMs, tokenLabel: this.token.label },
    });
  }

  /** Maps anything thrown by pkcs11js to an HsmError, opening the circuit for device failures. */
  nativeError(error: unknown, op: HsmErrorCode, what: string): HsmError {
    if (isHsmError(error)) return error;
    const rv = returnValueOf(error);
    const name = rv === undefined ? undefined : returnValueName(rv);
    let cls: FailureClass = classifyReturnValue(error);
    if (cls === 'ambiguous') {
      if (this.remote) {
        // no synchronous canary on a remote module: ask in the background, open the circuit if it fails
        void this.remoteCanaryFails().then((fails) => fails && this.openCircuit(name ?? 'device error'));
        cls = 'caller';
      } else cls = this.canaryFails() ? 'device' : 'caller';
    }
    switch (cls) {
      case 'device':
      case 'session':
      case 'login':
        if (cls === 'device') this.openCircuit(name ?? 'device error');
        return new HsmError('DeviceUnavailable', `${what}: the PKCS#11 device is unavailable (${name}); recovering in the background`, {
          cause: error,
          retryable: true,
          details: { rv: name, tokenLabel: this.token.label },
        });
      case 'staleObject':
        return new HsmError(op, `${what}: the object handle is no longer valid (${name})`, { cause: error, retryable: true, details: { rv: name, stale: true } });
      case 'busy':
        return new HsmError('SessionFailed', `${what}: the token is out of resources (${name})`, { cause: error, retryable: true, details: { rv: name } });
      case 'pin':
        return new HsmError('LoginFailed', `${what}: the token refused the login (${name})`, { cause: error, retryable: false, details: { rv: name } });
      default: {
        if (rv === CKR.KEY_FUNCTION_NOT_PERMITTED) return new HsmError('KeyUsageNotAllowed', `${what}: the key does not permit this operation (${name})`, { cause: error, details: { rv: name } });
        if (rv === CKR.SESSION_READ_ONLY) return new HsmError('InvalidArgument', `${what}: the backend is configured readOnly`, { cause: error, details: { rv: name } });
        const message = name ?? (error as Error)?.message ?? String(error);
        return new HsmError(op, `${what} failed: ${message}`, { cause: error, retryable: false, details: { rv: name } });
      }
    }
  }

  private async remoteCanaryFails(): Promise<boolean> {
    try {
      await this.api.C_GetTokenInfo(this.token.slot);
      if (this.anchor && this.anchor.generation === this.mod!.generation) await this.api.C_GetSessionInfo(this.anchor.handle);
      return false;
    } catch (error) {
      return !isHsmError(error, 'Timeout');
    }
  }

  /** After CKR_GENERAL_ERROR: is the token still there? */
  private canaryFails(): boolean {
    try {
      this.p11.C_GetTokenInfo(this.token.slot);
      if (this.anchor && this.anchor.generation === this.mod!.generation) this.p11.C_GetSessionInfo(this.anchor.handle);
      return false;
    } catch {
      return true;
    }
  }

  // ---------------------------------------------------------------- circuit breaker and recovery

  /** After a module re-initialisation: new anchor session, login, fresh pool and caches. */
  private reattach(): Promise<void> {
    this.#reattachPromise ??= (async () => {
      const mod = this.mod!;
      const generation = mod.generation;
      await this.pool?.drain();
      this.onReset();
      if (this.anchor) {
        this.closeSession(this.anchor);
        this.anchor = undefined;
      }
      await this.selectToken();
      this.anchor = await this.openSession(true);
      await this.login();
      await mod.api.C_GetSessionInfo(this.anchor.handle);
      this.#anchorGeneration = generation;
    })().finally(() => {
      this.#reattachPromise = undefined;
    });
    return this.#reattachPromise;
  }

  private openCircuit(reason: string): void {
    if (this.circuit.open || !this.active) return;
    this.circuit = { open: true, reason, since: Date.now() };
    this.counters.circuitOpens++;
    this.onReset();
    // callers already queued for a session fail fast instead of waiting out acquireTimeout
    this.pool?.rejectWaiters(this.circuitError());
    void this.pool?.drain();
    this.#recovery = this.recoveryLoop();
  }

  private async recoveryLoop(): Promise<void> {
    let delay = 100;
    while (this.active && this.circuit.open) {
      await sleep(delay);
      if (!this.active) return;
      try {
        await this.mod!.reinitialize(this.#seenGeneration);
        this.#seenGeneration = this.mod!.generation;
        await this.reattach();
        this.circuit = { open: false, reason: '', since: 0 };
        this.counters.recoveries++;
        // refill to minSessions so the first callers after recovery do not pay for session opens
        await this.pool?.warm().catch(() => undefined);
        return;
      } catch (error) {
        if (isHsmError(error) && (error.code === 'LoginFailed' || error.code === 'PinLocked')) return; // fatal is set: never retry a PIN
        delay = Math.min(delay * 2, 2_000);
      }
    }
  }

  circuitError(): HsmError {
    return new HsmError('CircuitOpen', `the PKCS#11 device for token '${this.token.label}' is unavailable (${this.circuit.reason}); recovery is in progress, try again shortly`, {
      retryable: true,
      details: { tokenLabel: this.token.label, reason: this.circuit.reason, openForMs: Date.now() - this.circuit.since },
    });
  }

  /** Resolves when the circuit is closed again. */
  async waitForRecovery(): Promise<void> {
    await this.#recovery;
  }

  poolMetrics(): PoolMetrics | undefined {
    return this.pool?.metrics();
  }
}
