import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { HsmError, isHsmError } from '@olocus/hsm-core';
import type { PKCS11 } from 'pkcs11js';
import { returnValueName, returnValueOf } from './classify.js';
import { CKF_OS_LOCKING_OK, CKR } from './constants.js';
import { DEFAULT_DEADLINES, ModuleThread, localApi, type AsyncPkcs11, type Deadlines } from './module-thread.js';

type Pkcs11Js = typeof import('pkcs11js');

let binding: Pkcs11Js | undefined;

/** Loads pkcs11js (a native addon) on first use, so importing this package never needs it. */
export function loadPkcs11Js(): Pkcs11Js {
  if (binding) return binding;
  try {
    binding = createRequire(import.meta.url)('pkcs11js') as Pkcs11Js;
  } catch (cause) {
    throw new HsmError('InitializationFailed', `the native module pkcs11js failed to load (${(cause as Error).message}); reinstall it (native builds need a C++ toolchain and, offline, npm_config_nodedir)`, { cause });
  }
  return binding;
}

/** A simple FIFO mutex (promise chain). */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async run<R>(fn: () => Promise<R>): Promise<R> {
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/**
 * One loaded PKCS#11 module, shared by every backend in the process that uses the same library
 * path: C_Initialize is per process, so C_Finalize must wait for the last user.
 */
export class SharedModule {
  readonly #p11: PKCS11 | undefined;
  /** Every call outside the local signing hot path goes through here (a module thread for remote modules). */
  readonly api: AsyncPkcs11;
  readonly thread: ModuleThread | undefined;
  /** Deadlines of calls to a remote module (set by the backends that use it; the last one wins). */
  deadlines: Deadlines = DEFAULT_DEADLINES;
  refs = 0;
  /** True while the module is initialised. */
  initialized = false;
  /** This process initialised it (so it may finalise it). */
  initializedHere = false;
  /** Bumped at every C_Finalize: sessions and object handles from an older generation are dead. */
  generation = 0;
  /** Native calls running off the main thread (libuv pool, sign threads); C_Finalize waits for them. */
  inflight = 0;
  private readonly tokenLocks = new Map<string, Mutex>();
  private reinitializing: Promise<void> | undefined;
  private finalizing: Promise<void> | undefined;

  /**
   * @param remote the module reaches a device over a network (or is slow): it is loaded and
   *   called only on a module thread (see module-thread.ts), never on the main thread.
   */
  constructor(
    readonly path: string,
    readonly remote = false,
  ) {
    if (remote) {
      this.thread = new ModuleThread(path, () => this.deadlines);
      this.api = this.thread;
      return;
    }
    const { PKCS11 } = loadPkcs11Js();
    const p11 = new PKCS11();
    try {
      p11.load(path);
    } catch (cause) {
      throw new HsmError('InitializationFailed', `cannot load PKCS#11 module ${path}: ${(cause as Error).message}`, { cause, details: { field: 'libraryPath', libraryPath: path } });
    }
    this.#p11 = p11;
    this.api = localApi(p11, (p) => this.track(p));
  }

  /** The synchronous module, for the local signing hot path (and tests). Remote modules have none on this thread. */
  get p11(): PKCS11 {
    if (!this.#p11) throw new HsmError('Internal', `the PKCS#11 module ${this.path} is remote: it is only called on its module thread`);
    return this.#p11;
  }

  /** C_Initialize with CKF_OS_LOCKING_OK; CKR_CRYPTOKI_ALREADY_INITIALIZED counts as success. Local modules only. */
  initialize(): void {
    if (this.initialized) return;
    try {
      this.p11.C_Initialize({ flags: CKF_OS_LOCKING_OK });
      this.initializedHere = true;
    } catch (cause) {
      this.initializeFailed(cause);
    }
    this.initialized = true;
  }

  /** initialize() for both kinds: a remote module is initialised on its module thread. */
  async start(): Promise<void> {
    if (this.finalizing) await this.finalizing;
    if (!this.remote) return this.initialize();
    if (this.initialized) return;
    try {
      await this.api.C_Initialize({ flags: CKF_OS_LOCKING_OK });
      this.initializedHere = true;
    } catch (cause) {
      this.initializeFailed(cause);
    }
    this.initialized = true;
  }

  private initializeFailed(cause: unknown): void {
    const rv = returnValueOf(cause);
    if (rv === CKR.CRYPTOKI_ALREADY_INITIALIZED) return;
    if (isHsmError(cause)) throw cause;
    throw new HsmError('InitializationFailed', `C_Initialize of ${this.path} failed: ${rv === undefined ? (cause as Error).message : returnValueName(rv)}`, {
      cause,
      retryable: true,
      details: { libraryPath: this.path, rv: rv === undefined ? undefined : returnValueName(rv) },
    });
  }

  /** The lock that serialises object creation/destruction on one token (SoftHSM 2.6.1 bug). */
  tokenLock(tokenKey: string): Mutex {
    let lock = this.tokenLocks.get(tokenKey);
    if (!lock) {
      lock = new Mutex();
      this.tokenLocks.set(tokenKey, lock);
    }
    return lock;
  }

  /** Runs an async native call, counted so that C_Finalize never races it. */
  async track<R>(promise: Promise<R>): Promise<R> {
    this.inflight++;
    try {
      return await promise;
    } finally {
      this.inflight--;
    }
  }

  /**
   * C_Finalize + C_Initialize, once per generation: callers that saw `seenGeneration` share one
   * re-initialisation; a caller that saw an older generation finds it already done.
   */
  reinitialize(seenGeneration: number): Promise<void> {
    if (this.generation !== seenGeneration) return Promise.resolve();
    if (this.reinitializing) return this.reinitializing;
    this.reinitializing = (async () => {
      await this.quiesce();
      try {
        await this.api.C_Finalize();
      } catch {
        // already finalised, or the connection is gone: either way start again
      }
      this.initialized = false;
      this.generation++;
      await this.start();
    })().finally(() => {
      this.reinitializing = undefined;
    });
    return this.reinitializing;
  }

  /** Waits (bounded) until no native call of this module runs off the main thread. */
  private async quiesce(): Promise<void> {
    const deadline = Date.now() + 5_000;
    while ((this.inflight > 0 || (this.thread?.inflight ?? 0) > (this.thread?.abandonedCalls ?? 0)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  }

  /**
   * C_Finalize when this process initialised the module (used when the last user leaves). Never
   * while a native call is in flight on the libuv pool or a thread: finalising under a running call
   * crashed the process at exit (issue 18, item 10), so it waits (bounded) for them first, and does
   * nothing if a user came back meanwhile.
   */
  finalize(): Promise<void> {
    if (!this.initialized) return this.finalizing ?? Promise.resolve();
    this.finalizing ??= (async () => {
      await this.quiesce();
      if (this.refs > 0) return;
      this.initialized = false;
      this.generation++;
      if (this.initializedHere) {
        this.initializedHere = false;
        try {
          await this.api.C_Finalize();
        } catch {
          // nothing useful to do: the module is being released
        }
      }
      if (this.thread) {
        modules.delete(moduleKey(this.path, true));
        await this.thread.stop();
      }
    })().finally(() => {
      this.finalizing = undefined;
    });
    return this.finalizing;
  }
}

const modules = new Map<string, SharedModule>();

/**
 * Takes a reference on the module at `path`, loading and initialising it on first use.
 * The module stays loaded (dlclose is never called: some modules do not survive being unloaded),
 * but it is finalised when the last reference goes.
 */
export function acquireModule(path: string): SharedModule {
  const key = moduleKey(path, false);
  let mod = modules.get(key);
  if (!mod) {
    mod = new SharedModule(resolve(path));
    modules.set(key, mod);
  }
  mod.initialize();
  mod.refs++;
  return mod;
}

function moduleKey(path: string, remote: boolean): string {
  return `${remote ? 'remote' : 'local'}:${resolve(path)}`;
}

/** acquireModule for either kind; a remote module gets (or shares) its module thread. */
export async function acquireModuleAsync(path: string, remote: boolean, deadlines?: Deadlines): Promise<SharedModule> {
  if (!remote) return acquireModule(path);
  const key = moduleKey(path, true);
  let mod = modules.get(key);
  if (!mod) {
    mod = new SharedModule(resolve(path), true);
    modules.set(key, mod);
  }
  if (deadlines) mod.deadlines = deadlines;
  mod.refs++;
  try {
    await mod.start();
  } catch (error) {
    mod.refs--;
    if (mod.refs === 0) {
      modules.delete(key);
      void mod.thread?.stop();
    }
    throw error;
  }
  return mod;
}

export function releaseModule(mod: SharedModule): Promise<void> {
  if (mod.refs <= 0) return Promise.resolve();
  mod.refs--;
  if (mod.refs === 0) return mod.finalize();
  return Promise.resolve();
}

/** Number of references held on a module (tests, diagnostics). */
export function moduleReferences(path: string): number {
  return (modules.get(moduleKey(path, false))?.refs ?? 0) + (modules.get(moduleKey(path, true))?.refs ?? 0);
}
