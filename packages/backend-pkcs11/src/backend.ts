/**
 * Pkcs11Backend: the public class. It owns the lifecycle (new → ready → closed) and the contract
 * checks, and delegates to the rooms below:
 * - token.ts       module start-up: library path, slot/token selection, mechanism probe
 * - login.ts       C_Login, and proving a PIN when the token is already logged in
 * - connection.ts  anchor session, session pool, sign threads, failure classification, circuit breaker, recovery
 * - key-store.ts   key lookup and cache, reading keys (algorithm, public key, dates), generate / list / destroy
 * - metadata.ts    the metadata data object bound to a key; templates.ts the key-pair templates
 * - signing.ts     the signing path; keys.ts sign plans and client-side hashing
 * - health.ts      info() and healthCheck(); fips.ts the FIPS status from measurement and attestation
 */
import { resolve as resolvePath } from 'node:path';
import {
  HsmError,
  assertAlgorithmSupported,
  assertSameInstance,
  normalizeKeySpec,
  normalizeListOptions,
  readSecret as coreReadSecret,
  throwIfAborted,
  verifyLocally,
  type BackendContext,
  type BackendMetrics,
  type Capabilities,
  type FipsStatus,
  type HealthStatus,
  type HsmBackend,
  type HsmInfo,
  type HsmKeyHandle,
  type KeyBackupCapability,
  type KeyPage,
  type KeyRef,
  type KeySpec,
  type ListKeysOptions,
  type PoolMetrics,
  type PublicKeyInfo,
  type SignOptions,
  type VerifyOptions,
} from '@olocus/hsm-core';
import { Pkcs11KeyBackup } from './backup.js';
import { TokenConnection, closedError, notInitializedError } from './connection.js';
import { fipsStatusOf, profileMismatch } from './fips.js';
import { tokenHealth, tokenInfo } from './health.js';
import { KeyStore } from './key-store.js';
import { STREAM_BUFFER_LIMIT, signInput, streamSignInput } from './keys.js';
import { parsePkcs11Options, type Pkcs11Options, type Pkcs11OptionsInput } from './options.js';
import { Signer } from './signing.js';
import { formatPkcs11Uri } from './uri.js';
import { getVendorProfile, type VendorProfile } from './vendors.js';

export { slotNumberOf } from './token.js';

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
  /**
   * Sign threads: 'off' (signThreads = 0), 'idle' (not started yet: they start when signing needs them), 'starting', 'ready', 'unsupported' (the module does not
   * share sessions across threads), or 'remote' (a remote module: every call runs on its module thread).
   */
  signThreads: 'off' | 'idle' | 'starting' | 'ready' | 'unsupported' | 'remote';
  /** Signs made inline (synchronously on the main thread, bounded per event-loop turn). */
  inlineSigns: number;
  /** Adaptive dispatch: mode, measured hop and threshold (µs), per-turn budget, turns that ran out of budget, per-operation figures. */
  dispatch: { mode: 'auto' | 'inline' | 'threads' | 'remote'; thresholdUs: number; hopUs: number; budgetUs: number; yields: number; ops: Record<string, { opUs: number; samples: number; path: 'inline' | 'threads' }> };
  /** The module is remote: loaded and called only on a module thread, with deadlines. */
  remote: boolean;
  /** Operations answered Timeout past their deadline (their sessions quarantined). */
  timeouts: number;
  /** Start-ups begun again because the token was briefly missing or failing (another process rewriting it). */
  startRetries: number;
}

type State = 'new' | 'ready' | 'closed';

/**
 * The PKCS#11 backend: one token (slot), one anchor session holding the login, a pool of
 * operation sessions, handle and public-key caches by CKA_ID, and a circuit breaker that
 * re-initialises the module in the background when the device goes away.
 */
export class Pkcs11Backend implements HsmBackend {
  readonly type = 'pkcs11';
  readonly options: Pkcs11Options;
  readonly vendor: VendorProfile;
  #instanceId = '';
  #pin: string | undefined;
  readonly #readSecret: BackendContext['readSecret'];
  private readonly connection: TokenConnection;
  private readonly keyStore: KeyStore;
  private readonly signer: Signer;
  /**
   * Backup (method `wrapped`): keys generated with `backup: true` leave the token only as
   * C_WrapKey output under the backup KEK (`backupKekLabel`, CKA_TRUSTED); restore unwraps them
   * under the same KEK and proves the pair by signing. See the README, "Backup".
   */
  readonly backup: Required<KeyBackupCapability>;
  private state: State = 'new';
  private initPromise: Promise<void> | undefined;
  private closePromise: Promise<void> | undefined;

  constructor(options: Pkcs11OptionsInput | Pkcs11Options, init: Pkcs11BackendInit = {}) {
    this.options = parsePkcs11Options(options);
    this.vendor = getVendorProfile(this.options.vendor);
    this.#pin = init.pin;
    this.#readSecret = init.readSecret ?? ((source, field) => coreReadSecret(source, field));
    this.connection = new TokenConnection(this.options, this.vendor, () => this.keyStore.clear());
    const usable = () => this.assertUsable();
    this.keyStore = new KeyStore(this.connection, { type: this.type, instanceId: () => this.instanceId, assertUsable: usable });
    this.signer = new Signer(this.connection, this.keyStore, usable);
    this.backup = new Pkcs11KeyBackup(this.connection, this.keyStore, {
      type: this.type,
      instanceId: () => this.instanceId,
      assertUsable: usable,
      readOnly: this.options.readOnly,
      kekLabel: this.options.backupKekLabel,
    });
  }

  /**
   * The instance's identity, as an RFC 7512 URI: the token (by serial, or by label when the token
   * reports no serial) and the module path. Provisional (configured label or slot) until
   * initialize() has found the token; it does not change when the module is re-initialised.
   */
  get instanceId(): string {
    if (this.#instanceId) return this.#instanceId;
    const token = this.options.tokenLabel !== undefined ? formatPkcs11Uri({ token: this.options.tokenLabel }) : `pkcs11:slot-id=${this.options.slotId}`;
    return `${token}?module-path=${encodeURI(this.options.libraryPath ?? this.vendor.name)}`;
  }

  // ---------------------------------------------------------------- lifecycle

  async initialize(): Promise<void> {
    if (this.state === 'closed') throw closedError();
    if (this.state === 'ready') return;
    this.initPromise ??= this.doInitialize().catch((error: unknown) => {
      void this.connection.teardown();
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
    await this.connection.open(pin);
    if ((this.state as State) === 'closed') throw closedError();
    const { serial, label } = this.connection.token;
    this.#instanceId = `${formatPkcs11Uri(serial !== '' ? { serial } : { token: label })}?module-path=${encodeURI(resolvePath(this.connection.libraryPath))}`;
    this.connection.active = true;
    this.state = 'ready';
  }

  async close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closePromise = (async () => {
      const pending = this.initPromise;
      this.state = 'closed';
      if (pending) await pending.catch(() => undefined);
      await this.connection.close();
    })();
    return this.closePromise;
  }

  private assertOpen(): void {
    if (this.state === 'closed') throw closedError();
    if (this.state !== 'ready') throw notInitializedError();
  }

  private assertUsable(): void {
    this.assertOpen();
    this.connection.assertAvailable();
  }

  /** Resolves when the circuit is closed again (tests, orchestration). */
  async waitForRecovery(): Promise<void> {
    await this.connection.waitForRecovery();
  }

  // ---------------------------------------------------------------- keys

  async generateKeyPair(input: KeySpec): Promise<HsmKeyHandle> {
    this.assertUsable();
    const spec = normalizeKeySpec(input);
    if (!this.connection.plans.has(spec.algorithm)) assertAlgorithmSupported(spec.algorithm, [...this.connection.plans.keys()], `token '${this.connection.token.label}'`);
    if (this.options.readOnly) throw new HsmError('InvalidArgument', 'the backend is configured readOnly: it cannot generate keys', { details: { field: 'readOnly' } });
    return { ...(await this.keyStore.generate(spec)).handle };
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    return { ...(await this.keyStore.resolve(key)).handle };
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    const entry = await this.keyStore.resolve(key);
    if (!entry.spki) throw new HsmError('KeyNotFound', `key ${entry.handle.ref} has no public key object on the token`, { details: { key: entry.id } });
    return { algorithm: entry.algorithm, spki: entry.spki };
  }

  async listKeys(options: ListKeysOptions = {}): Promise<KeyPage> {
    this.assertUsable();
    const { prefix, limit, cursor } = normalizeListOptions(options);
    return this.keyStore.list(prefix, limit, cursor);
  }

  async destroyKey(key: KeyRef): Promise<void> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    if (this.options.readOnly) throw new HsmError('InvalidArgument', 'the backend is configured readOnly: it cannot destroy keys', { details: { field: 'readOnly' } });
    await this.keyStore.destroy(await this.keyStore.resolve(key));
  }

  // ---------------------------------------------------------------- signing and verification

  async sign(key: KeyRef, data: Uint8Array, options: SignOptions = {}): Promise<Uint8Array> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    if (!(data instanceof Uint8Array)) throw new HsmError('InvalidArgument', 'data must be a Uint8Array', { details: { field: 'data' } });
    throwIfAborted(options.signal);
    return this.signer.sign(key, await this.keyStore.resolve(key, options.signal), (plan) => signInput(plan, data), options.signal);
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
    const entry = await this.keyStore.resolve(key, options.signal);
    // usage and expiry are refused before the stream is read
    const input = await streamSignInput(this.signer.plan(entry), chunks, STREAM_BUFFER_LIMIT, options.signal);
    return this.signer.sign(key, entry, () => input, options.signal);
  }

  /** Verification is local, with the cached public key: no session, no round trip. */
  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options: VerifyOptions = {}): Promise<boolean> {
    this.assertUsable();
    assertSameInstance(key, this.instanceId);
    throwIfAborted(options.signal);
    const entry = await this.keyStore.resolve(key, options.signal);
    if (!entry.publicKey) throw new HsmError('KeyNotFound', `key ${entry.handle.ref} has no public key object on the token`, { details: { key: entry.id } });
    if (!(data instanceof Uint8Array)) throw new HsmError('InvalidArgument', 'data must be a Uint8Array', { details: { field: 'data' } });
    if (!(signature instanceof Uint8Array)) return false;
    return verifyLocally(entry.algorithm, entry.publicKey, data, signature);
  }

  // ---------------------------------------------------------------- information

  async capabilities(): Promise<Capabilities> {
    this.assertOpen();
    const { identity } = this.connection;
    return {
      algorithms: [...this.connection.plans.keys()],
      persistentKeys: true,
      // believed only when the device is the one the profile names
      hardwareBacked: this.vendor.hardwareBacked && identity !== undefined && profileMismatch(this.vendor, identity) === undefined,
      remoteVerify: false,
      maxConcurrency: this.connection.pool?.max ?? this.options.sessionPool.maxSessions,
    };
  }

  async info(): Promise<HsmInfo> {
    this.assertUsable();
    try {
      return await tokenInfo(this.connection, this.type);
    } catch (error) {
      throw this.connection.nativeError(error, 'Internal', 'reading token information');
    }
  }

  async fipsStatus(): Promise<FipsStatus> {
    this.assertOpen();
    return fipsStatusOf(this.vendor, this.connection.identity!, this.options.attestation);
  }

  async healthCheck(): Promise<HealthStatus> {
    this.assertOpen();
    return tokenHealth(this.connection, this.state === 'ready', () => {
      const m = this.metrics();
      const out: Record<string, string | number | boolean> = {
        tokenLabel: this.connection.token.label,
        slotId: this.connection.token.slotNumber,
        circuitOpen: m.circuitOpen,
        sessionsOpen: m.sessionsOpen,
        generation: m.generation,
        relogins: m.relogins,
        recoveries: m.recoveries,
      };
      if (m.pool) for (const [k, v] of Object.entries(m.pool)) out[`pool.${k}`] = v;
      return out;
    });
  }

  /** A loggable summary (never the PIN; the object graph itself is circular). */
  toJSON(): Record<string, unknown> {
    const { libraryPath, token } = this.connection;
    return { type: this.type, vendor: this.vendor.name, libraryPath: libraryPath || this.options.libraryPath, slotId: token.slotNumber, tokenLabel: token.label || this.options.tokenLabel, state: this.state };
  }

  /** Pool and recovery counters (for monitoring and tests). */
  metrics(): Pkcs11Metrics {
    const conn = this.connection;
    return {
      pool: conn.poolMetrics(),
      sessionsOpen: conn.sessionsOpen,
      circuitOpen: conn.circuit.open,
      generation: conn.generation,
      ...conn.counters,
      logins: conn.loginState.logins,
      loginFailures: conn.loginState.fatal ? 1 : 0,
      signThreads: conn.remote ? 'remote' : (conn.signThreads?.state ?? 'off'),
      remote: conn.remote,
      dispatch: {
        mode: conn.remote ? 'remote' : this.options.dispatch,
        thresholdUs: Math.round(this.signer.dispatch.thresholdUs),
        hopUs: Math.round(this.signer.dispatch.hopUs),
        budgetUs: this.signer.dispatch.budgetUs,
        // the process's inline runner (shared by instances with the same budget)
        yields: this.signer.inline.yields,
        ops: this.signer.dispatch.snapshot(),
      },
    };
  }
}
