import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { HsmError } from '@olocus/hsm-core';
import type { PKCS11 } from 'pkcs11js';
import { returnValueName, returnValueOf } from './classify.js';
import { CKF_OS_LOCKING_OK, CKR } from './constants.js';

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
  readonly p11: PKCS11;
  refs = 0;
  /** True while the module is initialised. */
  initialized = false;
  /** This process initialised it (so it may finalise it). */
  initializedHere = false;
  /** Bumped at every C_Finalize: sessions and object handles from an older generation are dead. */
  generation = 0;
  /** Native calls running on the libuv thread pool; C_Finalize waits for them. */
  inflight = 0;
  private readonly tokenLocks = new Map<string, Mutex>();
  private reinitializing: Promise<void> | undefined;

  constructor(readonly path: string) {
    const { PKCS11 } = loadPkcs11Js();
    const p11 = new PKCS11();
    try {
      p11.load(path);
    } catch (cause) {
      throw new HsmError('InitializationFailed', `cannot load PKCS#11 module ${path}: ${(cause as Error).message}`, { cause, details: { field: 'libraryPath', libraryPath: path } });
    }
    this.p11 = p11;
  }

  /** C_Initialize with CKF_OS_LOCKING_OK; CKR_CRYPTOKI_ALREADY_INITIALIZED counts as success. */
  initialize(): void {
    if (this.initialized) return;
    try {
      this.p11.C_Initialize({ flags: CKF_OS_LOCKING_OK });
      this.initializedHere = true;
    } catch (cause) {
      const rv = returnValueOf(cause);
      if (rv !== CKR.CRYPTOKI_ALREADY_INITIALIZED) {
        throw new HsmError('InitializationFailed', `C_Initialize of ${this.path} failed: ${rv === undefined ? (cause as Error).message : returnValueName(rv)}`, {
          cause,
          retryable: true,
          details: { libraryPath: this.path, rv: rv === undefined ? undefined : returnValueName(rv) },
        });
      }
    }
    this.initialized = true;
  }

  /** The lock that serialises object creation/destruction on one token (SoftHSM 2.6.1 bug). */
  tokenLock(tokenKey: string): Mutex {
    let lock = this.tokenLocks.get(tokenKey);
    if (!lock) this.tokenLocks.set(tokenKey, (lock = new Mutex()));
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
      const deadline = Date.now() + 5_000;
      while (this.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      try {
        this.p11.C_Finalize();
      } catch {
        // already finalised, or the connection is gone: either way start again
      }
      this.initialized = false;
      this.generation++;
      this.initialize();
    })().finally(() => {
      this.reinitializing = undefined;
    });
    return this.reinitializing;
  }

  /** C_Finalize when this process initialised the module (used when the last user leaves). */
  finalize(): void {
    if (!this.initialized) return;
    this.initialized = false;
    this.generation++;
    if (!this.initializedHere) return;
    this.initializedHere = false;
    try {
      this.p11.C_Finalize();
    } catch {
      // nothing useful to do: the module is being released
    }
  }
}

const modules = new Map<string, SharedModule>();

/**
 * Takes a reference on the module at `path`, loading and initialising it on first use.
 * The module stays loaded (dlclose is never called: some modules do not survive being unloaded),
 * but it is finalised when the last reference goes.
 */
export function acquireModule(path: string): SharedModule {
  const key = resolve(path);
  let mod = modules.get(key);
  if (!mod) {
    mod = new SharedModule(key);
    modules.set(key, mod);
  }
  mod.initialize();
  mod.refs++;
  return mod;
}

export function releaseModule(mod: SharedModule): void {
  if (mod.refs <= 0) return;
  mod.refs--;
  if (mod.refs === 0) mod.finalize();
}

/** Number of references held on a module (tests, diagnostics). */
export function moduleReferences(path: string): number {
  return modules.get(resolve(path))?.refs ?? 0;
}
