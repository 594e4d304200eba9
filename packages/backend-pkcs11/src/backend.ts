import { existsSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { availableParallelism } from 'node:os';
import type { KeyObject } from 'node:crypto';
import {
  HsmError,
  KEY_ALGORITHMS,
  ResourcePool,
  algorithmInfo,
  assertAlgorithmSupported,
  assertValidKeyId,
  assertSameInstance,
  assertUsable,
  isHsmError,
  normalizeKeySpec,
  normalizeListOptions,
  throwIfAborted,
  type BackendMetrics,
  readSecret as coreReadSecret,
  verifyLocally,
  type BackendContext,
  type Capabilities,
  type FipsStatus,
  type HealthStatus,
  type HsmBackend,
  type HsmErrorCode,
  type HsmInfo,
  type HsmKeyHandle,
  type KeyAlgorithm,
  type KeyPage,
  type KeyRef,
  type KeySpec,
  type KeyUsage,
  type ListKeysOptions,
  type PoolMetrics,
  type PublicKeyInfo,
  type SignOptions,
  type VerifyOptions,
} from '@olocus/hsm-core';
import type { Attribute, PKCS11 } from 'pkcs11js';
import { classifyReturnValue, returnValueName, returnValueOf, type FailureClass } from './classify.js';
import {
  CKA_ALLOWED_MECHANISMS,
  CKA_APPLICATION,
  CKA_VALUE,
  CKO_DATA,
  CKA_CLASS,
  CKA_EC_PARAMS,
  CKA_EC_POINT,
  CKA_EXTRACTABLE,
  CKA_ID,
  CKA_KEY_TYPE,
  CKA_LABEL,
  CKA_MODULUS,
  CKA_MODULUS_BITS,
  CKA_PRIVATE,
  CKA_PUBLIC_EXPONENT,
  CKA_SENSITIVE,
  CKA_SIGN,
  CKA_TOKEN,
  CKA_VERIFY,
  CKF_GENERATE_KEY_PAIR,
  CKF_RW_SESSION,
  CKF_SERIAL_SESSION,
  CKF_SIGN,
  CKF_TOKEN_INITIALIZED,
  CKF_TOKEN_PRESENT,
  CKF_USER_PIN_INITIALIZED,
  CKK_EC,
  CKK_EC_EDWARDS,
  CKK_RSA,
  CKM_EC_EDWARDS_KEY_PAIR_GEN,
  CKM_EC_KEY_PAIR_GEN,
  CKM_RSA_PKCS_KEY_PAIR_GEN,
  CKM_RSA_PKCS_PSS,
  CKM_SHA256_RSA_PKCS_PSS,
  CKO_PRIVATE_KEY,
  CKO_PUBLIC_KEY,
  CKR,
  isUnavailable,
} from './constants.js';
import {
  EC_PARAMS,
  ED25519_PARAMS_OID,
  ED25519_PARAMS_PRINTABLE,
  algorithmFromAttributes,
  ckaIdFor,
  keyIdFromAttributes,
  publicKeyFromAttributes,
  readBool,
  readUlong,
  readUlongArray,
  STREAM_BUFFER_LIMIT,
  signInput,
  signPlanFor,
  streamSignInput,
  spkiOf,
  ulongArray,
  type SignPlan,
} from './keys.js';
import { fipsStatusOf, measureIdentity, profileMismatch, type ModuleIdentity } from './fips.js';
import { LoginState, loginScope } from './login.js';
import { readKeyDates, readMetadata, writeMetadata, metadataTemplate } from './metadata.js';
import { find, findAll, optionalAttribute, type Pkcs11Session } from './objects.js';
import { keyPairTemplates } from './templates.js';
import { acquireModule, releaseModule, type SharedModule } from './module.js';
import { SignThreads } from './sign-threads.js';
import { parsePkcs11Options, type Pkcs11Options, type Pkcs11OptionsInput } from './options.js';
import { formatPkcs11Uri, parsePkcs11Uri } from './uri.js';
import { getVendorProfile, type VendorProfile } from './vendors.js';


interface KeyEntry {
  id: string;
  ckaId: Buffer;
  label: string;
  algorithm: KeyAlgorithm;
  priv: Buffer;
  pub: Buffer | undefined;
  publicKey: KeyObject | undefined;
  spki: Uint8Array | undefined;
  usages: KeyUsage[];
  createdAt: Date | undefined;
  expiresAt: Date | undefined;
  labels: Record<string, string> | undefined;
  generation: number;
  handle: HsmKeyHandle;
}

interface KeyQuery {
  id?: Buffer;
  label?: string;
  /** Tried by CKA_LABEL when nothing has the CKA_ID (keys made by other tools). */
  labelFallback?: string;
  display: string;
}

/** Extra construction arguments for programmatic use. */
export interface Pkcs11BackendInit {
  /** The user PIN itself (otherwise read from `options.pin` at initialize()). */
  pin?: string;
  /** How to read `options.pin` (the registry passes its context's readSecret). */
  readSecret?: BackendContext['readSecret'];
}

export interface Pkcs11Metrics extends BackendMetrics {
  pool: PoolMetrics | undefined;
  /** Sessions this backend holds open, anchor included. */
  sessionsOpen: number;
  circuitOpen: boolean;
  generation: number;
  logins: number;
  /** 1 once this instance's PIN was refused (the instance stays unusable), else 0. */
  loginFailures: number;
  relogins: number;
  retries: number;
  circuitOpens: number;
  recoveries: number;
  signs: number;
  /** Signs that ran on a sign thread (the rest ran C_SignInit on the main thread). */
  threadSigns: number;
  /** Sign threads: 'off' (signThreads = 0), 'starting', 'ready', or 'unsupported' (the module does not share sessions across threads). */
  signThreads: 'off' | 'starting' | 'ready' | 'unsupported';
}

type State = 'new' | 'ready' | 'closed';

const ED25519_BITS = [255, 256];

/**
 * The PKCS#11 backend: one token (slot), one anchor session holding the login, a pool of
 * operation sessions, handle and public-key caches by CKA_ID, and a circuit breaker that
 * re-initialises the module in the background when the device goes away.
 */
export class Pkcs11Backend implements HsmBackend {
  readonly type = 'pkcs11';
  #instanceId = '';
  readonly options: Pkcs11Options;
  readonly vendor: VendorProfile;
  #pin: string | undefined;
  readonly #readSecret: BackendContext['readSecret'];

  private mod: SharedModule | undefined;
  private libraryPath = '';
  private slot: Buffer | undefined;
  private slotNumber = -1;
  private tokenLabel = '';
  private tokenSerial = '';
  private anchor: Pkcs11Session | undefined;
  private anchorGeneration = -1;
  private seenGeneration = 0;
  private pool: ResourcePool<Pkcs11Session> | undefined;
  private signThreads: SignThreads | undefined;
  private state: State = 'new';
  private initPromise: Promise<void> | undefined;
  private closePromise: Promise<void> | undefined;
  private algorithms: KeyAlgorithm[] = [];
  private readonly plans = new Map<KeyAlgorithm, SignPlan>();
  private readonly keys = new Map<string, KeyEntry>();
  private readonly resolving = new Map<string, Promise<KeyEntry>>();
  private circuit: { open: boolean; reason: string; since: number } = { open: false, reason: '', since: 0 };
  private recovery: Promise<void> | undefined;
  private readonly loginState = new LoginState();
  private loginScope = '';
  private identity: ModuleIdentity | undefined;
  private reloginPromise: Promise<void> | undefined;
  private reattachPromise: Promise<void> | undefined;
  private sessionsOpen = 0;
  private readonly counters = { relogins: 0, retries: 0, circuitOpens: 0, recoveries: 0, signs: 0, threadSigns: 0 };

  /**
   * The instance's identity, as an RFC 7512 URI: the token (by serial, or by label when the token
   * reports no serial) and the module path. Provisional (configured label or slot) until
   * initialize() has found the token.
   */
  get instanceId(): string {
    if (this.#instanceId) return this.#instanceId;
    const token = this.options.tokenLabel !== undefined ? formatPkcs11Uri({ token: this.options.tokenLabel }) : `pkcs11:slot-id=${this.options.slotId}`;
    return `${token}?module-path=${encodeURI(this.options.libraryPath ?? this.vendor.name)}`;
  }

  constructor(options: Pkcs11OptionsInput | Pkcs11Options, init: Pkcs11BackendInit = {}) {
    this.options = parsePkcs11Options(options);
    this.vendor = getVendorProfile(this.options.vendor);
    this.#pin = init.pin;
    this.#readSecret = init.readSecret ?? ((source, field) => coreReadSecret(source, field));
  }

  // ---------------------------------------------------------------- lifecycle

  async initialize(): Promise<void> {
    if (this.state === 'closed') throw closedError();
    if (this.state === 'ready') return;
    this.initPromise ??= this.doInitialize().catch((error: unknown) => {
      this.teardown();
      this.initPromise = undefined;
      throw error;
    });
    return this.initPromise;
  }

  private async doInitialize(): Promise<void> {
    const pin = this.#pin ?? (await this.#readSecret(this.options.pin, 'pin'));
    if (this.vendor.pinPattern && !this.vendor.pinPattern.test(pin)) {
      throw new HsmError('InvalidConfiguration', `pin: ${this.vendor.displayName} expects ${this.vendor.pinHint}`, { details: { field: 'pin', vendor: this.vendor.name } });
    }
    this.#pin = pin;
    this.libraryPath = this.findLibrary();
    this.mod = acquireModule(this.libraryPath);
    this.seenGeneration = this.mod.generation;
    try {
      this.selectSlot();
      this.identity = measureIdentity(this.mod.p11, this.slot!);
      this.probe();
      this.openAnchor();
      this.login();
      const pool = this.options.sessionPool;
      const tokenInfo = this.mod.p11.C_GetTokenInfo(this.slot!);
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
          name: `pkcs11 session pool (token '${this.tokenLabel}')`,
        },
      );
      await this.pool.start();
      const threads = this.options.signThreads ?? Math.min(max, availableParallelism());
      if (threads > 0) this.signThreads = new SignThreads(this.libraryPath, Math.min(threads, max), max, Uint8Array.from(this.anchor!.handle));
    } catch (error) {
      throw this.nativeError(error, 'InitializationFailed', 'initialization');
    }
    if ((this.state as State) === 'closed') throw closedError();
    this.state = 'ready';
  }

  async close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closePromise = (async () => {
      const pending = this.initPromise;
      this.state = 'closed';
      if (pending) await pending.catch(() => undefined);
      if (this.pool) await this.pool.close();
      // Sign threads use the module too: they must have exited before C_Finalize (a thread
      // still inside the library when it is finalized crashes the process).
      await this.signThreads?.close();
      this.teardown();
    })();
    return this.closePromise;
  }

  /** Releases sessions and the module reference; safe to call more than once. */
  private teardown(): void {
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
    this.keys.clear();
    if (this.mod) {
      releaseModule(this.mod);
      this.mod = undefined;
    }
  }

  private findLibrary(): string {
    if (this.options.libraryPath) return this.options.libraryPath;
    const found = this.vendor.libraryPaths.find((p) => existsSync(p));
    if (!found) {
      throw new HsmError('InitializationFailed', `no PKCS#11 module found for vendor ${this.vendor.name}; tried ${this.vendor.libraryPaths.join(', ')}; set libraryPath`, {
        details: { field: 'libraryPath', vendor: this.vendor.name },
      });
    }
    return found;
  }

  private get p11(): PKCS11 {
    if (!this.mod) throw this.state === 'closed' ? closedError() : new HsmError('NotInitialized', 'the pkcs11 backend is not initialized: call initialize() first');
    return this.mod.p11;
  }

  // ---------------------------------------------------------------- slot, probe, login

  private selectSlot(): void {
    const p11 = this.p11;
    const { slotId, tokenLabel } = this.options;
    const slots = p11.C_GetSlotList(false).map((slot) => ({ slot, id: slotNumberOf(slot) }));
    const tokenOf = (slot: Buffer) => {
      const slotInfo = p11.C_GetSlotInfo(slot);
      if (!(slotInfo.flags & CKF_TOKEN_PRESENT)) return undefined;
      const info = p11.C_GetTokenInfo(slot);
      return { info, label: trimLabel(info.label), initialized: (info.flags & CKF_TOKEN_INITIALIZED) !== 0 };
    };
    if (slotId !== undefined) {
      const found = slots.find((s) => s.id === slotId);
      if (!found) {
        throw new HsmError('SlotNotFound', `slot ${slotId} does not exist; slots: ${slots.map((s) => s.id).join(', ') || '(none)'}`, { details: { field: 'slotId', slotId } });
      }
      const token = tokenOf(found.slot);
      if (!token) throw new HsmError('SlotNotFound', `slot ${slotId} has no token`, { details: { field: 'slotId', slotId } });
      if (!token.initialized) throw new HsmError('SlotNotFound', `the token in slot ${slotId} is not initialised`, { details: { field: 'slotId', slotId } });
      if (tokenLabel !== undefined && token.label !== tokenLabel) {
        throw new HsmError('TokenLabelMismatch', `slot ${slotId} holds token '${token.label}', but tokenLabel is '${tokenLabel}'`, {
          details: { field: 'tokenLabel', slotId, wanted: tokenLabel, found: token.label },
        });
      }
      this.useSlot(found.slot, found.id, token.label, token.info.serialNumber);
      return;
    }
    const tokens = slots.map((s) => ({ ...s, token: tokenOf(s.slot) })).filter((s) => s.token?.initialized);
    const match = tokens.find((s) => s.token!.label === tokenLabel);
    if (!match) {
      const labels = tokens.map((s) => `'${s.token!.label}'`);
      throw new HsmError('TokenLabelMismatch', `no token labelled '${tokenLabel}'; tokens found: ${labels.join(', ') || '(none)'}`, {
        details: { field: 'tokenLabel', wanted: tokenLabel, found: labels.join(', ') },
      });
    }
    this.useSlot(match.slot, match.id, match.token!.label, match.token!.info.serialNumber);
  }

  private useSlot(slot: Buffer, id: number, label: string, serial: string): void {
    this.slot = slot;
    this.slotNumber = id;
    this.tokenLabel = label;
    this.tokenSerial = trimLabel(serial);
    this.loginScope = loginScope(this.libraryPath, id, this.tokenSerial, label);
    // after a re-initialisation the slot is selected again: the identity must not change under handles
    this.#instanceId ||= `${formatPkcs11Uri(this.tokenSerial !== '' ? { serial: this.tokenSerial } : { token: label })}?module-path=${encodeURI(resolvePath(this.libraryPath))}`;
  }

  /** C_GetMechanismList / C_GetMechanismInfo: which contract algorithms this token really does. */
  private probe(): void {
    const p11 = this.p11;
    const slot = this.slot!;
    const list = new Set(p11.C_GetMechanismList(slot));
    const infos = new Map<number, { minKeySize: number; maxKeySize: number; flags: number } | undefined>();
    const info = (m: number) => {
      if (!infos.has(m)) {
        let value: { minKeySize: number; maxKeySize: number; flags: number } | undefined;
        try {
          value = list.has(m) ? p11.C_GetMechanismInfo(slot, m) : undefined;
        } catch {
          value = undefined;
        }
        infos.set(m, value);
      }
      return infos.get(m);
    };
    const fits = (i: { minKeySize: number; maxKeySize: number }, bits: number[]) =>
      (i.minKeySize === 0 && i.maxKeySize === 0) || bits.some((b) => b >= i.minKeySize && b <= i.maxKeySize);
    const can = (m: number, flag: number, bits: number[]) => {
      const i = info(m);
      return !!i && (i.flags & flag) !== 0 && fits(i, bits);
    };
    this.algorithms = [];
    this.plans.clear();
    for (const algorithm of KEY_ALGORITHMS) {
      if (this.vendor.unsupportedAlgorithms.includes(algorithm)) continue;
      const a = algorithmInfo(algorithm);
      if (a.padding === 'PSS' && !this.vendor.allowedMechanisms) continue; // no durable PSS marker on this product
      const bits = a.family === 'EdDSA' ? ED25519_BITS : a.family === 'ECDSA' ? [a.curve === 'P-521' ? 521 : a.curve === 'P-384' ? 384 : 256] : [a.modulusBits!];
      const gen = a.family === 'EdDSA' ? CKM_EC_EDWARDS_KEY_PAIR_GEN : a.family === 'ECDSA' ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN;
      if (!can(gen, CKF_GENERATE_KEY_PAIR, bits)) continue;
      const plan = signPlanFor(algorithm, (m) => can(m, CKF_SIGN, bits));
      if (!plan) continue;
      this.algorithms.push(algorithm);
      this.plans.set(algorithm, plan);
    }
  }

  private openAnchor(): void {
    this.anchor = this.openSession(true);
    this.anchorGeneration = this.anchor.generation;
  }

  /**
   * C_Login on the anchor session. Called once at start, and again only when the token reports
   * the login lost. A wrong PIN is never retried: it makes the backend unusable until a new one is built.
   */
  private login(): void {
    this.loginState.login(
      { p11: this.p11, session: this.anchor!.handle, scope: this.loginScope, generation: this.mod!.generation, tokenLabel: this.tokenLabel },
      this.#pin,
    );
  }

  // ---------------------------------------------------------------- sessions

  private openSession(anchor = false): Pkcs11Session {
    if (this.circuit.open && !anchor) throw this.circuitError();
    const mod = this.mod;
    if (!mod || !this.slot) throw closedError();
    const flags = CKF_SERIAL_SESSION | (this.options.readOnly ? 0 : CKF_RW_SESSION);
    const handle = mod.p11.C_OpenSession(this.slot, flags);
    this.sessionsOpen++;
    return { handle, generation: mod.generation };
  }

  private closeSession(session: Pkcs11Session): void {
    const mod = this.mod;
    // A session from an older generation died with C_Finalize; its handle number may now belong
    // to someone else's session, so it must not be closed.
    if (mod && mod.initialized && session.generation === mod.generation) {
      try {
        mod.p11.C_CloseSession(session.handle);
      } catch {
        // already gone
      }
    }
    this.sessionsOpen--;
  }

  private sessionAlive(session: Pkcs11Session): boolean {
    const mod = this.mod;
    if (!mod || !mod.initialized || session.generation !== mod.generation) return false;
    mod.p11.C_GetSessionInfo(session.handle);
    return true;
  }

  /**
   * Runs `fn` on a pooled session and applies the failure classification:
   * session dead → evict + retry; login lost → shared re-login + retry; device gone → circuit;
   * stale object handle → reported to the caller (which looks the key up again); others → no retry.
   */
  private async withSession<R>(op: HsmErrorCode, what: string, fn: (session: Pkcs11Session, p11: PKCS11) => R | Promise<R>, signal?: AbortSignal): Promise<R> {
    let sessionRetries = 0;
    let loginRetries = 0;
    const retries = this.options.sessionPool.retryAttempts;
    for (let guard = 0; ; guard++) {
      this.assertUsable();
      const mod = this.mod!;
      if (this.anchorGeneration !== mod.generation) {
        try {
          await this.reattach();
        } catch (error) {
          throw this.nativeError(error, op, what);
        }
      }
      let lease;
      try {
        lease = await this.pool!.acquire(signal);
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
        const result = await fn(session, mod.p11);
        lease.release();
        return result;
      } catch (error) {
        if (isHsmError(error)) {
          lease.release();
          throw error;
        }
        let cls = classifyReturnValue(error);
        // SoftHSM hides private objects after a lost login instead of saying CKR_USER_NOT_LOGGED_IN
        if (cls === 'staleObject' && !this.loggedIn(session)) cls = 'login';
        if (cls === 'session') {
          lease.evict();
          // one dead session usually means they all are (token reset, server restart): drop the idle ones
          if (rvOf(error) !== CKR.OPERATION_ACTIVE) void this.pool?.drain();
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

  /** Maps anything thrown by pkcs11js to an HsmError, opening the circuit for device failures. */
  private nativeError(error: unknown, op: HsmErrorCode, what: string): HsmError {
    if (isHsmError(error)) return error;
    const rv = returnValueOf(error);
    const name = rv === undefined ? undefined : returnValueName(rv);
    let cls: FailureClass = classifyReturnValue(error);
    if (cls === 'ambiguous') cls = this.canaryFails() ? 'device' : 'caller';
    switch (cls) {
      case 'device':
      case 'session':
      case 'login':
        if (cls === 'device') this.openCircuit(name ?? 'device error');
        return new HsmError('DeviceUnavailable', `${what}: the PKCS#11 device is unavailable (${name}); recovering in the background`, {
          cause: error,
          retryable: true,
          details: { rv: name, tokenLabel: this.tokenLabel },
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

  /** Whether the session sees the user login (CKS_RO/RW_USER_FUNCTIONS). */
  private loggedIn(session: Pkcs11Session): boolean {
    try {
      const state = this.p11.C_GetSessionInfo(session.handle).state;
      return state === 1 || state === 3;
    } catch {
      return true; // not a login question: let the original error speak
    }
  }

  /** After CKR_GENERAL_ERROR: is the token still there? */
  private canaryFails(): boolean {
    try {
      this.p11.C_GetTokenInfo(this.slot!);
      if (this.anchor && this.anchor.generation === this.mod!.generation) this.p11.C_GetSessionInfo(this.anchor.handle);
      return false;
    } catch {
      return true;
    }
  }

  /** One shared re-login: concurrent callers that lost the login await the same C_Login. */
  private relogin(): Promise<void> {
    this.reloginPromise ??= (async () => {
      this.counters.relogins++;
      try {
        this.login();
      } catch (error) {
        if (classifyReturnValue(error) !== 'session') throw error;
        this.openAnchor();
        this.login();
      }
    })().finally(() => {
      this.reloginPromise = undefined;
    });
    return this.reloginPromise;
  }

  /** After a module re-initialisation: new anchor session, login, fresh pool and caches. */
  private reattach(): Promise<void> {
    this.reattachPromise ??= (async () => {
      const mod = this.mod!;
      const generation = mod.generation;
      await this.pool?.drain();
      this.keys.clear();
      if (this.anchor) {
        this.closeSession(this.anchor);
        this.anchor = undefined;
      }
      this.selectSlot();
      this.anchor = this.openSession(true);
      this.login();
      mod.p11.C_GetSessionInfo(this.anchor.handle);
      this.anchorGeneration = generation;
    })().finally(() => {
      this.reattachPromise = undefined;
    });
    return this.reattachPromise;
  }

  // ---------------------------------------------------------------- circuit breaker

  private openCircuit(reason: string): void {
    if (this.circuit.open || this.state !== 'ready') return;
    this.circuit = { open: true, reason, since: Date.now() };
    this.counters.circuitOpens++;
    this.keys.clear();
    // callers already queued for a session fail fast instead of waiting out acquireTimeout
    this.pool?.rejectWaiters(this.circuitError());
    void this.pool?.drain();
    this.recovery = this.recoveryLoop();
  }

  private async recoveryLoop(): Promise<void> {
    let delay = 100;
    while (this.state === 'ready' && this.circuit.open) {
      await sleep(delay);
      if (this.state !== 'ready') return;
      try {
        await this.mod!.reinitialize(this.seenGeneration);
        this.seenGeneration = this.mod!.generation;
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

  private circuitError(): HsmError {
    return new HsmError('CircuitOpen', `the PKCS#11 device for token '${this.tokenLabel}' is unavailable (${this.circuit.reason}); recovery is in progress, try again shortly`, {
      retryable: true,
      details: { tokenLabel: this.tokenLabel, reason: this.circuit.reason, openForMs: Date.now() - this.circuit.since },
    });
  }

  private assertUsable(): void {
    if (this.state === 'closed') throw closedError();
    if (this.state !== 'ready') throw new HsmError('NotInitialized', 'the pkcs11 backend is not initialized: call initialize() first');
    if (this.loginState.fatal) throw new HsmError(this.loginState.fatal.code, this.loginState.fatal.message, { retryable: false, details: { ...this.loginState.fatal.details } });
    if (this.circuit.open) throw this.circuitError();
  }

  /** Resolves when the circuit is closed again (tests, orchestration). */
  async waitForRecovery(): Promise<void> {
    await this.recovery;
  }

  // ---------------------------------------------------------------- keys

  private queryFor(ref: KeyRef): { cacheKey: string; query: KeyQuery } {
    // A handle is resolved by its ref alone: its id, metadata and algorithm are the caller's
    // words, and believing them would let a forged handle borrow another key's name.
    if (ref !== null && typeof ref === 'object') {
      if (typeof ref.ref !== 'string' || !/^pkcs11:/i.test(ref.ref)) throw new HsmError('InvalidArgument', 'key handle has no pkcs11: ref; pass a handle returned by this backend', { details: { field: 'key.ref' } });
      return this.queryFor(ref.ref);
    }
    if (typeof ref !== 'string') throw new HsmError('InvalidArgument', 'key must be a key id, a pkcs11: URI or a key handle', { details: { field: 'key' } });
    if (/^pkcs11:/i.test(ref)) {
      const uri = parsePkcs11Uri(ref);
      if (uri.token !== undefined && uri.token !== this.tokenLabel) {
        throw new HsmError('KeyNotFound', `key ${ref} is on token '${uri.token}', this backend uses token '${this.tokenLabel}'`, { details: { key: ref } });
      }
      if (uri.serial !== undefined && uri.serial !== this.tokenSerial) throw new HsmError('KeyNotFound', `key ${ref} is on another token (serial)`, { details: { key: ref } });
      if (!uri.id && uri.object === undefined) throw new HsmError('InvalidArgument', 'a key URI needs id= or object=', { details: { field: 'key' } });
      const query: KeyQuery = { display: ref };
      if (uri.id) query.id = Buffer.from(uri.id);
      if (uri.object !== undefined) query.label = uri.object;
      return { cacheKey: `uri:${uri.id ? Buffer.from(uri.id).toString('hex') : ''}:${uri.object ?? ''}`, query };
    }
    assertValidKeyId(ref, 'key');
    return { cacheKey: `id:${ref}`, query: { id: ckaIdFor(ref), labelFallback: ref, display: ref } };
  }

  private async resolve(ref: KeyRef, signal?: AbortSignal): Promise<KeyEntry> {
    const { cacheKey, query } = this.queryFor(ref);
    const cached = this.keys.get(cacheKey);
    if (cached && cached.generation === this.mod?.generation) return cached;
    let pending = this.resolving.get(cacheKey);
    if (!pending) {
      pending = this.withSession('Internal', `looking up key ${query.display}`, (session, p11) => this.findKey(session, p11, query), signal).finally(() =>
        this.resolving.delete(cacheKey),
      );
      this.resolving.set(cacheKey, pending);
    }
    const entry = await pending;
    this.remember(entry, cacheKey);
    return entry;
  }

  private remember(entry: KeyEntry, ...aliases: string[]): void {
    for (const key of [`cka:${entry.ckaId.toString('hex')}`, `id:${entry.id}`, ...aliases]) this.keys.set(key, entry);
  }

  private forget(entry: KeyEntry): void {
    for (const [key, value] of this.keys) if (value === entry || value.ckaId.equals(entry.ckaId)) this.keys.delete(key);
  }

  private findKey(session: Pkcs11Session, p11: PKCS11, query: KeyQuery): KeyEntry {
    const template: Attribute[] = [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }];
    if (query.id) template.push({ type: CKA_ID, value: query.id });
    if (query.label !== undefined) template.push({ type: CKA_LABEL, value: query.label });
    let found = find(p11, session, template, 2);
    if (found.length === 0 && query.labelFallback !== undefined) {
      found = find(p11, session, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: query.labelFallback }], 2);
      if (found.length > 1) throw new HsmError('InvalidArgument', `more than one private key is labelled '${query.labelFallback}'; address it by pkcs11: URI with id=`, { details: { key: query.display } });
    }
    if (found.length === 0 && !this.loggedIn(session)) throw loginLostError();
    if (found.length === 0) throw new HsmError('KeyNotFound', `key ${query.display} not found on token '${this.tokenLabel}'`, { details: { key: query.display, tokenLabel: this.tokenLabel } });
    return this.loadKey(session, p11, found[0]!);
  }

  /** Reads a private key's attributes (and finds its public half) into a cache entry. */
  private loadKey(session: Pkcs11Session, p11: PKCS11, priv: Buffer, pubHint?: Buffer): KeyEntry {
    const h = session.handle;
    const [typeAttr, idAttr, labelAttr, signAttr] = p11.C_GetAttributeValue(h, priv, [{ type: CKA_KEY_TYPE }, { type: CKA_ID }, { type: CKA_LABEL }, { type: CKA_SIGN }]);
    const keyType = readUlong(typeAttr!.value);
    const ckaId = Buffer.from(idAttr!.value);
    const label = labelAttr!.value.toString('utf8');
    let ecParams: Buffer | undefined;
    let modulusBits: number | undefined;
    let allowed: number[] = [];
    if (keyType === CKK_EC || keyType === CKK_EC_EDWARDS) {
      ecParams = p11.C_GetAttributeValue(h, priv, [{ type: CKA_EC_PARAMS }])[0]!.value;
    } else if (keyType === CKK_RSA) {
      const modulus = p11.C_GetAttributeValue(h, priv, [{ type: CKA_MODULUS }])[0]!.value;
      modulusBits = bitLength(modulus);
      allowed = optionalAttribute(p11, h, priv, CKA_ALLOWED_MECHANISMS, readUlongArray) ?? [];
    }
    const uri = formatPkcs11Uri({ token: this.tokenLabel, id: ckaId, object: label, type: 'private' });
    const algorithm = algorithmFromAttributes(keyType, ecParams, modulusBits, allowed);
    if (!algorithm) {
      throw new HsmError('UnsupportedAlgorithm', `key ${uri} uses an algorithm outside the contract (key type 0x${keyType.toString(16)}${modulusBits ? `, ${modulusBits} bits` : ''})`, {
        details: { key: uri },
      });
    }
    let pub = pubHint;
    if (!pub) {
      const template: Attribute[] = [{ type: CKA_CLASS, value: CKO_PUBLIC_KEY }];
      template.push(ckaId.length > 0 ? { type: CKA_ID, value: ckaId } : { type: CKA_LABEL, value: label });
      pub = find(p11, session, template, 1)[0];
    }
    let publicKey: KeyObject | undefined;
    let verify = false;
    const info = algorithmInfo(algorithm);
    if (pub) {
      verify = readBool(p11.C_GetAttributeValue(h, pub, [{ type: CKA_VERIFY }])[0]!.value);
      if (info.family === 'RSA') {
        const [m, e] = p11.C_GetAttributeValue(h, pub, [{ type: CKA_MODULUS }, { type: CKA_PUBLIC_EXPONENT }]);
        publicKey = publicKeyFromAttributes(algorithm, { modulus: m!.value, exponent: e!.value });
      } else {
        publicKey = publicKeyFromAttributes(algorithm, { ecPoint: p11.C_GetAttributeValue(h, pub, [{ type: CKA_EC_POINT }])[0]!.value });
      }
    } else if (info.family === 'RSA') {
      const [m, e] = p11.C_GetAttributeValue(h, priv, [{ type: CKA_MODULUS }, { type: CKA_PUBLIC_EXPONENT }]);
      publicKey = publicKeyFromAttributes(algorithm, { modulus: m!.value, exponent: e!.value });
      verify = true;
    }
    const spki = publicKey ? spkiOf(publicKey) : undefined;
    const dates = pub ? readKeyDates(p11, h, pub) : {};
    if (!dates.end) Object.assign(dates, { ...readKeyDates(p11, h, priv), ...dates });
    const meta = readMetadata(p11, session, ckaId, spki, dates, this.vendor.keyDates);
    const id = keyIdFromAttributes(ckaId, label, uri);
    const usages: KeyUsage[] = [];
    if (readBool(signAttr!.value)) usages.push('sign');
    if (verify) usages.push('verify');
    const entry: KeyEntry = {
      id,
      ckaId,
      label,
      algorithm,
      priv,
      pub,
      publicKey,
      spki,
      usages,
      createdAt: meta.createdAt,
      expiresAt: meta.expiresAt,
      labels: meta.labels,
      generation: session.generation,
      handle: undefined as unknown as HsmKeyHandle,
    };
    entry.handle = this.handleOf(entry, uri);
    return entry;
  }

  private handleOf(entry: KeyEntry, ref: string): HsmKeyHandle {
    const handle = {
      id: entry.id,
      ref,
      algorithm: entry.algorithm,
      usages: [...entry.usages],
      backend: this.type,
      instance: this.instanceId,
      state: 'enabled',
      metadata: {
        ckaId: entry.ckaId.toString('hex'),
        label: entry.label,
        tokenLabel: this.tokenLabel,
        tokenSerial: this.tokenSerial,
        slotId: String(this.slotNumber),
      } as Record<string, string>,
    } as HsmKeyHandle;
    for (const [k, v] of Object.entries(entry.labels ?? {})) if (typeof v === 'string') handle.metadata[`label.${k}`] = v;
    if (entry.createdAt) handle.createdAt = entry.createdAt;
    if (entry.labels) handle.labels = { ...entry.labels };
    if (entry.expiresAt) handle.expiresAt = entry.expiresAt;
    return handle;
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    return { ...(await this.resolve(key)).handle };
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    const entry = await this.resolve(key);
    if (!entry.spki) throw new HsmError('KeyNotFound', `key ${entry.handle.ref} has no public key object on the token`, { details: { key: entry.id } });
    return { algorithm: entry.algorithm, spki: entry.spki };
  }

  async sign(key: KeyRef, data: Uint8Array, options: SignOptions = {}): Promise<Uint8Array> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    if (!(data instanceof Uint8Array)) throw new HsmError('InvalidArgument', 'data must be a Uint8Array', { details: { field: 'data' } });
    throwIfAborted(options.signal);
    return this.signResolved(key, await this.resolve(key, options.signal), (plan) => signInput(plan, data), options.signal);
  }

  /**
   * Hashes the chunks as they arrive (ECDSA, RSA: the token signs the digest), so a large
   * message never sits in memory. Ed25519 (CKM_EDDSA is single-part) buffers up to
   * STREAM_BUFFER_LIMIT bytes.
   */
  async signStream(key: KeyRef, chunks: AsyncIterable<Uint8Array>, options: SignOptions = {}): Promise<Uint8Array> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    if (!chunks || typeof (chunks as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] !== 'function') {
      throw new HsmError('InvalidArgument', 'chunks must be an async iterable of Uint8Array', { details: { field: 'chunks' } });
    }
    throwIfAborted(options.signal);
    const entry = await this.resolve(key, options.signal);
    const plan = this.checkSignable(entry);
    const input = await streamSignInput(plan, chunks, STREAM_BUFFER_LIMIT, options.signal);
    return this.signResolved(key, entry, () => input, options.signal);
  }

  private async signResolved(key: KeyRef, first: KeyEntry, inputFor: (plan: SignPlan) => Buffer, signal: AbortSignal | undefined): Promise<Uint8Array> {
    let entry = first;
    const plan = this.checkSignable(entry);
    const input = inputFor(plan);
    throwIfAborted(signal);
    try {
      return await this.signWith(entry, plan, input, signal);
    } catch (error) {
      if (!isHsmError(error) || error.details.stale !== true) throw error;
      this.forget(entry);
      entry = await this.resolve(key, signal);
      return this.signWith(entry, this.checkSignable(entry), input, signal);
    }
  }

  private checkSignable(entry: KeyEntry): SignPlan {
    assertUsable(entry.handle, 'sign');
    const plan = this.plans.get(entry.algorithm);
    if (!plan) throw new HsmError('UnsupportedAlgorithm', `this token cannot sign with ${entry.algorithm}`, { details: { key: entry.id, algorithm: entry.algorithm } });
    return plan;
  }

  /**
   * The hot path: C_SignInit + C_Sign on a sign thread (see sign-threads.ts), or, with
   * signThreads = 0, C_SignInit on the main thread + C_Sign on the libuv thread pool.
   */
  private signWith(entry: KeyEntry, plan: SignPlan, input: Buffer, signal?: AbortSignal): Promise<Uint8Array> {
    return this.withSession(
      'SigningFailed',
      `signing with key ${entry.id}`,
      async (session, p11) => {
        if (entry.generation !== session.generation) {
          throw new HsmError('SigningFailed', `key ${entry.id}: cached handle is from before a re-initialisation`, { retryable: true, details: { stale: true } });
        }
        const mod = this.mod!;
        const threads = this.signThreads;
        if (threads && threads.accepts(session.handle.length, plan.signatureBytes) && entry.priv.length === session.handle.length) {
          const signature = await mod.track(threads.sign(session.handle, entry.priv, plan.mechanism(), input, plan.signatureBytes));
          this.counters.signs++;
          this.counters.threadSigns++;
          return signature;
        }
        // a fresh mechanism object per call: pkcs11js keeps native state on the object it is given
        p11.C_SignInit(session.handle, plan.mechanism(), entry.priv);
        const out = Buffer.allocUnsafe(plan.signatureBytes);
        const signature = await mod.track(p11.C_SignAsync(session.handle, input, out));
        this.counters.signs++;
        return new Uint8Array(signature.buffer, signature.byteOffset, signature.byteLength);
      },
      signal,
    );
  }

  /** Verification is local, with the cached public key: no session, no round trip. */
  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options: VerifyOptions = {}): Promise<boolean> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    throwIfAborted(options.signal);
    const entry = await this.resolve(key, options.signal);
    if (!entry.publicKey) throw new HsmError('KeyNotFound', `key ${entry.handle.ref} has no public key object on the token`, { details: { key: entry.id } });
    if (!(data instanceof Uint8Array)) throw new HsmError('InvalidArgument', 'data must be a Uint8Array', { details: { field: 'data' } });
    if (!(signature instanceof Uint8Array)) return false;
    return verifyLocally(entry.algorithm, entry.publicKey, data, signature);
  }

  async generateKeyPair(input: KeySpec): Promise<HsmKeyHandle> {
    this.assertUsable();
    const spec = normalizeKeySpec(input);
    const { algorithm, usages } = spec;
    if (!this.plans.has(algorithm)) assertAlgorithmSupported(algorithm, this.algorithms, `token '${this.tokenLabel}'`);
    if (this.options.readOnly) throw new HsmError('InvalidArgument', 'the backend is configured readOnly: it cannot generate keys', { details: { field: 'readOnly' } });
    const ckaId = ckaIdFor(spec.id);
    const createdAt = new Date();
    const { mechanism, publicTemplate, privateTemplate } = keyPairTemplates(this.vendor, { algorithm, id: spec.id, ckaId, usages, createdAt, expiresAt: spec.expiresAt });
    const lock = this.mod!.tokenLock(`${this.slotNumber}:${this.tokenSerial}`);
    const entry = await lock.run(() =>
      this.withSession('KeyGenerationFailed', `generating key ${spec.id}`, async (session, p11) => {
        const clash = find(p11, session, [{ type: CKA_ID, value: ckaId }], 1).length > 0 || find(p11, session, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_LABEL, value: spec.id }], 1).length > 0;
        if (clash) throw new HsmError('KeyAlreadyExists', `a key with id ${spec.id} already exists on token '${this.tokenLabel}'`, { details: { key: spec.id } });
        const pair = await this.mod!.track(p11.C_GenerateKeyPairAsync(session.handle, mechanism, publicTemplate, privateTemplate));
        try {
          const loaded = this.loadKey(session, p11, pair.privateKey, pair.publicKey);
          if (!loaded.spki) throw new HsmError('KeyGenerationFailed', `key ${spec.id}: the token returned no readable public key`, { details: { key: spec.id } });
          // a data object left over from an earlier key with this CKA_ID names another public key and is ignored; remove it
          for (const stale of find(p11, session, metadataTemplate(ckaId), 8)) p11.C_DestroyObject(session.handle, stale);
          writeMetadata(p11, session, ckaId, spec.id, loaded.spki, { createdAt, expiresAt: spec.expiresAt, labels: spec.labels });
          loaded.createdAt = createdAt;
          loaded.expiresAt = spec.expiresAt;
          loaded.labels = spec.labels ? { ...spec.labels } : undefined;
          loaded.handle = this.handleOf(loaded, loaded.handle.ref);
          return loaded;
        } catch (error) {
          // Without its metadata the key's labels and exact expiry would be lost after a restart: undo.
          for (const object of [pair.privateKey, pair.publicKey]) {
            try {
              p11.C_DestroyObject(session.handle, object);
            } catch {
              // best effort
            }
          }
          throw error;
        }
      }),
    );
    this.remember(entry);
    return { ...entry.handle };
  }

  async listKeys(options: ListKeysOptions = {}): Promise<KeyPage> {
    this.assertUsable();
    const { prefix, limit, cursor } = normalizeListOptions(options);
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    return this.withSession('Internal', 'listing keys', (session, p11) => {
      const handles = findAll(p11, session, [
        { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
        { type: CKA_TOKEN, value: true },
      ]);
      const rows: Array<{ handle: Buffer; id: string }> = [];
      for (const handle of handles) {
        const [idAttr, labelAttr] = p11.C_GetAttributeValue(session.handle, handle, [{ type: CKA_ID }, { type: CKA_LABEL }]);
        const ckaId = idAttr!.value;
        const label = labelAttr!.value.toString('utf8');
        const id = keyIdFromAttributes(ckaId, label, formatPkcs11Uri({ token: this.tokenLabel, id: ckaId, object: label, type: 'private' }));
        if (!id.startsWith(prefix) && !label.startsWith(prefix)) continue;
        if (after !== undefined && id <= after) continue;
        rows.push({ handle, id });
      }
      rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const keys: HsmKeyHandle[] = [];
      let more = false;
      for (const row of rows) {
        if (keys.length === limit) {
          more = true;
          break;
        }
        let entry: KeyEntry;
        try {
          entry = this.loadKey(session, p11, row.handle);
        } catch (error) {
          if (isHsmError(error, 'UnsupportedAlgorithm')) continue; // not a contract key: not listed
          throw error;
        }
        this.remember(entry);
        keys.push({ ...entry.handle });
      }
      const page: KeyPage = { keys };
      if (more && keys.length > 0) page.nextCursor = Buffer.from(JSON.stringify({ after: keys[keys.length - 1]!.id })).toString('base64url');
      return page;
    });
  }

  async destroyKey(key: KeyRef): Promise<void> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    if (this.options.readOnly) throw new HsmError('InvalidArgument', 'the backend is configured readOnly: it cannot destroy keys', { details: { field: 'readOnly' } });
    const entry = await this.resolve(key);
    const lock = this.mod!.tokenLock(`${this.slotNumber}:${this.tokenSerial}`);
    await lock.run(() =>
      this.withSession('Internal', `destroying key ${entry.id}`, (session, p11) => {
        let objects: Buffer[];
        if (entry.ckaId.length > 0) {
          objects = [
            ...find(p11, session, [{ type: CKA_CLASS, value: CKO_PRIVATE_KEY }, { type: CKA_ID, value: entry.ckaId }], 16),
            ...find(p11, session, [{ type: CKA_CLASS, value: CKO_PUBLIC_KEY }, { type: CKA_ID, value: entry.ckaId }], 16),
          ];
        } else {
          objects = entry.generation === session.generation ? [entry.priv, ...(entry.pub ? [entry.pub] : [])] : [];
        }
        if (objects.length === 0) throw new HsmError('KeyNotFound', `key ${entry.id} not found on token '${this.tokenLabel}'`, { details: { key: entry.id } });
        if (entry.ckaId.length > 0) objects.push(...find(p11, session, metadataTemplate(entry.ckaId), 8));
        for (const object of objects) p11.C_DestroyObject(session.handle, object);
      }),
    );
    this.forget(entry);
  }

  // ---------------------------------------------------------------- information

  async capabilities(): Promise<Capabilities> {
    this.assertOpen();
    return {
      algorithms: [...this.algorithms],
      persistentKeys: true,
      // believed only when the device is the one the profile names
      hardwareBacked: this.vendor.hardwareBacked && this.identity !== undefined && profileMismatch(this.vendor, this.identity) === undefined,
      remoteVerify: false,
      maxConcurrency: this.pool?.max ?? this.options.sessionPool.maxSessions,
    };
  }

  async info(): Promise<HsmInfo> {
    this.assertUsable();
    try {
      const p11 = this.p11;
      const token = p11.C_GetTokenInfo(this.slot!);
      const module = p11.C_GetInfo();
      const v = (x: { major: number; minor: number }) => `${x.major}.${x.minor}`;
      return {
        backend: this.type,
        description: `${this.vendor.displayName} slot ${this.slotNumber} token '${this.tokenLabel}'`,
        manufacturer: trimLabel(token.manufacturerID),
        model: trimLabel(token.model),
        serialNumber: trimLabel(token.serialNumber),
        firmwareVersion: v(token.firmwareVersion),
        libraryVersion: v(module.libraryVersion),
        details: {
          vendor: this.vendor.name,
          libraryPath: this.libraryPath,
          libraryManufacturer: trimLabel(module.manufacturerID),
          libraryDescription: trimLabel(module.libraryDescription),
          cryptokiVersion: v(module.cryptokiVersion),
          slotId: this.slotNumber,
          tokenLabel: this.tokenLabel,
          hardwareVersion: v(token.hardwareVersion),
          tokenFlags: token.flags,
          tokenInitialized: (token.flags & CKF_TOKEN_INITIALIZED) !== 0,
          userPinInitialized: (token.flags & CKF_USER_PIN_INITIALIZED) !== 0,
          loginRequired: (token.flags & 0x4) !== 0,
          writeProtected: (token.flags & 0x2) !== 0,
          rng: (token.flags & 0x1) !== 0,
          sessionCount: isUnavailable(token.sessionCount) ? 'unavailable' : token.sessionCount,
          maxSessionCount: isUnavailable(token.maxSessionCount) ? 'unavailable' : token.maxSessionCount === 0 ? 'unlimited' : token.maxSessionCount,
          readOnly: this.options.readOnly,
        },
      };
    } catch (error) {
      throw this.nativeError(error, 'Internal', 'reading token information');
    }
  }

  async fipsStatus(): Promise<FipsStatus> {
    this.assertOpen();
    return fipsStatusOf(this.vendor, this.identity!, this.options.attestation);
  }

  async healthCheck(): Promise<HealthStatus> {
    this.assertOpen();
    const started = performance.now();
    const details = (): Record<string, string | number | boolean> => {
      const m = this.metrics();
      const out: Record<string, string | number | boolean> = {
        tokenLabel: this.tokenLabel,
        slotId: this.slotNumber,
        circuitOpen: m.circuitOpen,
        sessionsOpen: m.sessionsOpen,
        generation: m.generation,
        relogins: m.relogins,
        recoveries: m.recoveries,
      };
      if (m.pool) for (const [k, v] of Object.entries(m.pool)) out[`pool.${k}`] = v;
      return out;
    };
    const done = (healthy: boolean, message: string): HealthStatus => ({ healthy, latencyMs: performance.now() - started, message, details: details() });
    if (this.state !== 'ready') return done(false, 'not initialized');
    if (this.loginState.fatal) return done(false, this.loginState.fatal.message);
    if (this.circuit.open) return done(false, `circuit open (${this.circuit.reason}); recovering`);
    try {
      const p11 = this.p11;
      const slotInfo = p11.C_GetSlotInfo(this.slot!);
      if (!(slotInfo.flags & CKF_TOKEN_PRESENT)) return done(false, `token '${this.tokenLabel}' is not present`);
      p11.C_GetTokenInfo(this.slot!);
      if (this.anchor && this.anchor.generation === this.mod!.generation) p11.C_GetSessionInfo(this.anchor.handle);
      return done(true, `token '${this.tokenLabel}' present, session alive`);
    } catch (error) {
      const mapped = this.nativeError(error, 'Internal', 'health check');
      return done(false, mapped.message);
    }
  }

  /** A loggable summary (never the PIN; the object graph itself is circular). */
  toJSON(): Record<string, unknown> {
    return { type: this.type, vendor: this.vendor.name, libraryPath: this.libraryPath || this.options.libraryPath, slotId: this.slotNumber, tokenLabel: this.tokenLabel || this.options.tokenLabel, state: this.state };
  }

  /** Pool and recovery counters (for monitoring and tests). */
  metrics(): Pkcs11Metrics {
    return {
      pool: this.pool?.metrics(),
      sessionsOpen: this.sessionsOpen,
      circuitOpen: this.circuit.open,
      generation: this.mod?.generation ?? -1,
      ...this.counters,
      logins: this.loginState.logins,
      loginFailures: this.loginState.fatal ? 1 : 0,
      signThreads: this.signThreads?.state ?? 'off',
    };
  }

  private assertOpen(): void {
    if (this.state === 'closed') throw closedError();
    if (this.state !== 'ready') throw new HsmError('NotInitialized', 'the pkcs11 backend is not initialized: call initialize() first');
  }
}

// ---------------------------------------------------------------- helpers

function closedError(): HsmError {
  return new HsmError('Closed', 'the pkcs11 backend is closed');
}

/** A CKR_USER_NOT_LOGGED_IN as pkcs11js would throw it, for logins found lost by other means. */
function loginLostError(): Error {
  return Object.assign(new Error('CKR_USER_NOT_LOGGED_IN'), { name: 'Pkcs11Error', code: CKR.USER_NOT_LOGGED_IN });
}

function rvOf(error: unknown): number | undefined {
  return returnValueOf(error);
}

function rvName(error: unknown): string {
  const rv = returnValueOf(error);
  return rv === undefined ? 'error' : returnValueName(rv);
}

function trimLabel(label: string): string {
  return label.replace(/[\0 ]+$/, '');
}

export function slotNumberOf(slot: Buffer): number {
  return slot.length >= 8 ? Number(slot.readBigUInt64LE(0)) : slot.readUInt32LE(0);
}

function bitLength(value: Buffer): number {
  let i = 0;
  while (i < value.length && value[i] === 0) i++;
  if (i === value.length) return 0;
  return (value.length - i - 1) * 8 + (32 - Math.clz32(value[i]!));
}

function decodeCursor(cursor: string): string {
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { after?: unknown };
    if (typeof parsed.after === 'string') return parsed.after;
  } catch {
    // fall through
  }
  throw new HsmError('InvalidArgument', 'cursor is not a cursor returned by listKeys', { details: { field: 'cursor' } });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
