/**
 * The asynchronous face of a PKCS#11 module, and the module thread that hosts a remote one.
 *
 * Why: a call into a network HSM's client library (p11-kit-client.so, Luna, CloudHSM...) blocks the
 * calling thread until the device answers. A device that stops answering without closing the
 * connection (a frozen server, a network partition) blocked the event loop for as long as it
 * stayed frozen, and no call ever settled. So a remote module is never called from the main thread:
 * it is loaded, initialised and called only on one worker thread (the module thread), and every call
 * made from the main thread is a message with a deadline. When the deadline passes the caller gets
 * a retryable `Timeout`; the call itself cannot be interrupted (PKCS#11 has no cancellation), so
 * its late answer is discarded, and a session it used is quarantined by the caller.
 *
 * Why one thread and not the libuv pool: pkcs11js has no asynchronous C_SignInit, C_Login,
 * C_OpenSession or C_FindObjects, and a libuv pool thread stuck in a frozen device would also stall
 * fs, dns and crypto work of the whole process (4 threads by default). One thread per module also
 * fits p11-kit-client.so, which gives each C_GetFunctionList caller its own RPC connection (so the
 * sessions of one thread do not exist in another). The cost: calls to one remote module are
 * serialised (one round trip at a time); requests that expired while queued behind a frozen call are
 * answered `expired` without reaching the module.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { HsmError } from '@olocus/hsm-core';
import type { Attribute, KeyPair, Mechanism, MechanismInfo, ModuleInfo, PKCS11, SessionInfo, SlotInfo, TemplateResult, TokenInfo } from 'pkcs11js';

/** Deadline classes: each is configurable (`deadlines` option). */
export type DeadlineKind = 'sign' | 'generate' | 'find' | 'login' | 'session' | 'admin';

export type Deadlines = Record<DeadlineKind, number>;

export const DEFAULT_DEADLINES: Deadlines = { sign: 5_000, generate: 60_000, find: 10_000, login: 10_000, session: 5_000, admin: 10_000 };

/** The PKCS#11 calls the backend makes outside the signing hot path, all asynchronous. */
export interface AsyncPkcs11 {
  readonly remote: boolean;
  C_Initialize(options?: { flags: number }): Promise<void>;
  C_Finalize(): Promise<void>;
  C_GetInfo(): Promise<ModuleInfo>;
  C_GetSlotList(tokenPresent?: boolean): Promise<Buffer[]>;
  C_GetSlotInfo(slot: Buffer): Promise<SlotInfo>;
  C_GetTokenInfo(slot: Buffer): Promise<TokenInfo>;
  C_GetMechanismList(slot: Buffer): Promise<number[]>;
  C_GetMechanismInfo(slot: Buffer, mech: number): Promise<MechanismInfo>;
  C_OpenSession(slot: Buffer, flags: number): Promise<Buffer>;
  /** Never waits: a session is closed when the module thread gets to it (after a frozen call returns). */
  C_CloseSession(session: Buffer): Promise<void>;
  C_GetSessionInfo(session: Buffer): Promise<SessionInfo>;
  C_Login(session: Buffer, userType: number, pin: string): Promise<void>;
  C_GetAttributeValue(session: Buffer, object: Buffer, template: Attribute[]): Promise<TemplateResult>;
  C_CreateObject(session: Buffer, template: Attribute[]): Promise<Buffer>;
  C_DestroyObject(session: Buffer, object: Buffer): Promise<void>;
  C_GenerateKeyPair(session: Buffer, mechanism: Mechanism, publicTemplate: Attribute[], privateTemplate: Attribute[]): Promise<KeyPair>;
  /** Backup: the wrapped key (the module writes at most `capacity` bytes). */
  C_WrapKey(session: Buffer, mechanism: Mechanism, wrappingKey: Buffer, key: Buffer, capacity: number): Promise<Buffer>;
  C_UnwrapKey(session: Buffer, mechanism: Mechanism, unwrappingKey: Buffer, wrappedKey: Buffer, template: Attribute[]): Promise<Buffer>;
  C_CopyObject(session: Buffer, object: Buffer, template: Attribute[]): Promise<Buffer>;
  /** C_FindObjectsInit + C_FindObjects(max) + C_FindObjectsFinal in one round trip; max 0 = all, in batches. */
  find(session: Buffer, template: Attribute[], max: number): Promise<Buffer[]>;
  /** C_SignInit + C_Sign in one round trip. */
  sign(session: Buffer, mechanism: Mechanism, key: Buffer, input: Buffer, signatureBytes: number): Promise<Buffer>;
}

/** find() on a synchronous module (shared by the local adapter and the module thread's source). */
export function findSync(p11: PKCS11, session: Buffer, template: Attribute[], max: number): Buffer[] {
  p11.C_FindObjectsInit(session, template);
  const out: Buffer[] = [];
  try {
    for (;;) {
      const want = max > 0 ? max - out.length : 100;
      const batch = p11.C_FindObjects(session, want);
      out.push(...batch);
      if (max > 0 || batch.length < want) break;
    }
  } finally {
    try {
      p11.C_FindObjectsFinal(session);
    } catch {
      // the first error (if any) is the one that matters
    }
  }
  return out;
}

/**
 * A local module (SoftHSM in-process): the same synchronous calls, wrapped. Local calls return in
 * microseconds, and a local library that hangs has nothing a deadline could save.
 */
export function localApi(p11: PKCS11, track: <R>(p: Promise<R>) => Promise<R>): AsyncPkcs11 {
  const wrap =
    <A extends unknown[], R>(fn: (...args: A) => R) =>
    (...args: A): Promise<R> => {
      try {
        return Promise.resolve(fn(...args));
      } catch (error) {
        return Promise.reject(error);
      }
    };
  return {
    remote: false,
    C_Initialize: wrap((options?: { flags: number }) => p11.C_Initialize(options)),
    C_Finalize: wrap(() => p11.C_Finalize()),
    C_GetInfo: wrap(() => p11.C_GetInfo()),
    C_GetSlotList: wrap((present?: boolean) => p11.C_GetSlotList(present)),
    C_GetSlotInfo: wrap((slot: Buffer) => p11.C_GetSlotInfo(slot)),
    C_GetTokenInfo: wrap((slot: Buffer) => p11.C_GetTokenInfo(slot)),
    C_GetMechanismList: wrap((slot: Buffer) => p11.C_GetMechanismList(slot)),
    C_GetMechanismInfo: wrap((slot: Buffer, m: number) => p11.C_GetMechanismInfo(slot, m)),
    C_OpenSession: wrap((slot: Buffer, flags: number) => p11.C_OpenSession(slot, flags)),
    C_CloseSession: wrap((session: Buffer) => p11.C_CloseSession(session)),
    C_GetSessionInfo: wrap((session: Buffer) => p11.C_GetSessionInfo(session)),
    C_Login: wrap((session: Buffer, user: number, pin: string) => p11.C_Login(session, user, pin)),
    C_GetAttributeValue: wrap((session: Buffer, object: Buffer, template: Attribute[]) => p11.C_GetAttributeValue(session, object, template)),
    C_CreateObject: wrap((session: Buffer, template: Attribute[]) => p11.C_CreateObject(session, template)),
    C_DestroyObject: wrap((session: Buffer, object: Buffer) => p11.C_DestroyObject(session, object)),
    // key generation takes long (RSA: up to seconds): the libuv pool, counted so C_Finalize waits for it
    C_GenerateKeyPair: (session, mechanism, pub, priv) => track(p11.C_GenerateKeyPairAsync(session, mechanism, pub, priv)),
    C_WrapKey: wrap((session: Buffer, mechanism: Mechanism, wrapping: Buffer, key: Buffer, capacity: number) => p11.C_WrapKey(session, mechanism, wrapping, key, Buffer.alloc(capacity))),
    C_UnwrapKey: wrap((session: Buffer, mechanism: Mechanism, unwrapping: Buffer, wrapped: Buffer, template: Attribute[]) => p11.C_UnwrapKey(session, mechanism, unwrapping, wrapped, template)),
    C_CopyObject: wrap((session: Buffer, object: Buffer, template: Attribute[]) => p11.C_CopyObject(session, object, template)),
    find: wrap((session: Buffer, template: Attribute[], max: number) => findSync(p11, session, template, max)),
    sign: wrap((session: Buffer, mechanism: Mechanism, key: Buffer, input: Buffer, bytes: number) => {
      p11.C_SignInit(session, mechanism, key);
      return p11.C_Sign(session, input, Buffer.allocUnsafe(bytes));
    }),
  };
}

/** Which deadline applies to each call. */
const KIND: Record<string, DeadlineKind> = {
  C_Initialize: 'admin',
  C_Finalize: 'admin',
  C_GetInfo: 'admin',
  C_GetSlotList: 'admin',
  C_GetSlotInfo: 'admin',
  C_GetTokenInfo: 'admin',
  C_GetMechanismList: 'admin',
  C_GetMechanismInfo: 'admin',
  C_OpenSession: 'session',
  C_CloseSession: 'session',
  C_GetSessionInfo: 'session',
  C_Login: 'login',
  C_GetAttributeValue: 'find',
  C_CreateObject: 'generate',
  C_DestroyObject: 'generate',
  C_GenerateKeyPair: 'generate',
  C_WrapKey: 'generate',
  C_UnwrapKey: 'generate',
  C_CopyObject: 'generate',
  find: 'find',
  sign: 'sign',
};

const WORKER_SOURCE = String.raw`
'use strict';
const { workerData, parentPort } = require('node:worker_threads');
const { PKCS11 } = require(workerData.pkcs11js);
const p11 = new PKCS11();
let loadError;
try { p11.load(workerData.libraryPath); } catch (error) { loadError = error; }
// structured clone turns Buffers into Uint8Arrays; pkcs11js wants Buffers
function revive(v) {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') { const o = {}; for (const k of Object.keys(v)) o[k] = revive(v[k]); return o; }
  return v;
}
function findSync(p11, session, template, max) {
  p11.C_FindObjectsInit(session, template);
  const out = [];
  try {
    for (;;) {
      const want = max > 0 ? max - out.length : 100;
      const batch = p11.C_FindObjects(session, want);
      out.push(...batch);
      if (max > 0 || batch.length < want) break;
    }
  } finally {
    try { p11.C_FindObjectsFinal(session); } catch {}
  }
  return out;
}
function run(method, args) {
  if (loadError) throw loadError;
  if (method === 'find') return findSync(p11, args[0], args[1], args[2]);
  if (method === 'sign') { p11.C_SignInit(args[0], args[1], args[2]); return p11.C_Sign(args[0], args[3], Buffer.allocUnsafe(args[4])); }
  if (method === 'C_WrapKey') return p11.C_WrapKey(args[0], args[1], args[2], args[3], Buffer.alloc(args[4]));
  return p11[method](...args);
}
parentPort.on('message', (m) => {
  if (m.expiresAt > 0 && Date.now() > m.expiresAt) { parentPort.postMessage({ id: m.id, expired: true }); return; }
  try {
    const result = run(m.method, revive(m.args));
    parentPort.postMessage({ id: m.id, result: result === undefined ? null : result });
  } catch (error) {
    parentPort.postMessage({ id: m.id, error: { name: error && error.name, message: String(error && error.message), code: error && typeof error.code === 'number' ? error.code : undefined } });
  }
});
`;

function reviveResult(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(reviveResult);
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const k of Object.keys(v)) o[k] = reviveResult((v as Record<string, unknown>)[k]);
    return o;
  }
  return v;
}

interface Call {
  resolve(value: unknown): void;
  reject(error: unknown): void;
  timer: NodeJS.Timeout | undefined;
  method: string;
  /** Set when the caller was answered Timeout: the late answer is discarded (C_OpenSession's session is closed). */
  abandoned: boolean;
}

let pkcs11jsPath: string | undefined;

/**
 * One worker thread that owns a remote module: it loads it, and every PKCS#11 call to it runs there.
 * The worker is referenced only while calls are waiting for an answer the caller still wants, so an
 * idle (or frozen-and-abandoned) module thread never keeps the process alive.
 */
export class ModuleThread implements AsyncPkcs11 {
  readonly remote = true;
  private readonly worker: Worker;
  private readonly calls = new Map<number, Call>();
  private nextId = 1;
  private waiting = 0;
  private exited = false;
  /** Calls that timed out and have not come back yet (a frozen device). */
  abandonedCalls = 0;

  constructor(
    readonly libraryPath: string,
    private readonly deadlines: () => Deadlines,
  ) {
    pkcs11jsPath ??= createRequire(import.meta.url).resolve('pkcs11js');
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { libraryPath, pkcs11js: pkcs11jsPath }, name: 'olocus-pkcs11-module' });
    this.worker.on('message', (m: { id: number; result?: unknown; error?: { name?: string; message: string; code?: number }; expired?: boolean }) => this.answer(m));
    this.worker.on('error', () => undefined); // 'exit' follows
    this.worker.on('exit', () => {
      this.exited = true;
      for (const [id, call] of this.calls) {
        this.calls.delete(id);
        if (call.timer) clearTimeout(call.timer);
        if (!call.abandoned) call.reject(new HsmError('DeviceUnavailable', `the PKCS#11 module thread for ${this.libraryPath} exited`, { retryable: true }));
      }
    });
    this.worker.unref();
  }

  /** Calls in flight on the module thread (answered or not): close() waits for them before C_Finalize. */
  get inflight(): number {
    return this.calls.size;
  }

  private hold(delta: number): void {
    const before = this.waiting;
    this.waiting += delta;
    if (before === 0 && this.waiting > 0) this.worker.ref();
    else if (before > 0 && this.waiting === 0) this.worker.unref();
  }

  private answer(m: { id: number; result?: unknown; error?: { name?: string; message: string; code?: number }; expired?: boolean }): void {
    const call = this.calls.get(m.id);
    if (!call) return;
    this.calls.delete(m.id);
    if (call.timer) clearTimeout(call.timer);
    if (call.abandoned) {
      this.abandonedCalls--;
      // a session opened after its caller gave up belongs to nobody: close it
      if (call.method === 'C_OpenSession' && m.result instanceof Uint8Array) void this.C_CloseSession(reviveResult(m.result) as Buffer);
      return;
    }
    this.hold(-1);
    if (m.expired) call.reject(this.timeoutError(call.method, 'expired while queued behind an earlier call'));
    else if (m.error) call.reject(Object.assign(new Error(m.error.message), { name: m.error.name ?? 'Error', code: m.error.code }));
    else call.resolve(reviveResult(m.result));
  }

  private timeoutError(method: string, why: string): HsmError {
    const kind = KIND[method] ?? 'admin';
    const deadline = this.deadlines()[kind];
    return new HsmError('Timeout', `${method} on the PKCS#11 module ${this.libraryPath} did not answer within ${deadline} ms (${kind} deadline; ${why}); the device may be frozen or unreachable, try again later`, {
      retryable: true,
      details: { operation: method, deadlineKind: kind, deadlineMs: deadline },
    });
  }

  /**
   * Sends one call. `wait` false (C_CloseSession) sends without a deadline and resolves at once:
   * the close happens when the thread gets to it.
   */
  private call<R>(method: string, args: unknown[], wait = true): Promise<R> {
    if (this.exited) return Promise.reject(new HsmError('DeviceUnavailable', `the PKCS#11 module thread for ${this.libraryPath} has stopped`, { retryable: true }));
    const id = this.nextId++;
    const kind = KIND[method] ?? 'admin';
    const deadline = this.deadlines()[kind];
    if (!wait) {
      this.calls.set(id, { resolve: () => undefined, reject: () => undefined, timer: undefined, method, abandoned: true });
      this.abandonedCalls++;
      this.worker.postMessage({ id, method, args, expiresAt: 0 });
      return Promise.resolve(undefined as R);
    }
    return new Promise<R>((resolve, reject) => {
      const call: Call = { resolve: resolve as (v: unknown) => void, reject, timer: undefined, method, abandoned: false };
      call.timer = setTimeout(() => {
        if (call.abandoned || !this.calls.has(id)) return;
        call.abandoned = true;
        this.abandonedCalls++;
        this.hold(-1);
        reject(this.timeoutError(method, 'no answer'));
      }, deadline);
      this.calls.set(id, call);
      this.hold(1);
      // C_Finalize/C_Initialize must run whatever the queue: they are never skipped as expired
      const expiresAt = method === 'C_Finalize' || method === 'C_Initialize' ? 0 : Date.now() + deadline;
      this.worker.postMessage({ id, method, args, expiresAt });
    });
  }

  C_Initialize(options?: { flags: number }): Promise<void> {
    return this.call('C_Initialize', [options]);
  }
  C_Finalize(): Promise<void> {
    return this.call('C_Finalize', []);
  }
  C_GetInfo(): Promise<ModuleInfo> {
    return this.call('C_GetInfo', []);
  }
  C_GetSlotList(tokenPresent?: boolean): Promise<Buffer[]> {
    return this.call('C_GetSlotList', [tokenPresent]);
  }
  C_GetSlotInfo(slot: Buffer): Promise<SlotInfo> {
    return this.call('C_GetSlotInfo', [slot]);
  }
  C_GetTokenInfo(slot: Buffer): Promise<TokenInfo> {
    return this.call('C_GetTokenInfo', [slot]);
  }
  C_GetMechanismList(slot: Buffer): Promise<number[]> {
    return this.call('C_GetMechanismList', [slot]);
  }
  C_GetMechanismInfo(slot: Buffer, mech: number): Promise<MechanismInfo> {
    return this.call('C_GetMechanismInfo', [slot, mech]);
  }
  C_OpenSession(slot: Buffer, flags: number): Promise<Buffer> {
    return this.call('C_OpenSession', [slot, flags]);
  }
  C_CloseSession(session: Buffer): Promise<void> {
    return this.call('C_CloseSession', [session], false);
  }
  C_GetSessionInfo(session: Buffer): Promise<SessionInfo> {
    return this.call('C_GetSessionInfo', [session]);
  }
  C_Login(session: Buffer, userType: number, pin: string): Promise<void> {
    // the PIN crosses to the worker in memory (structured clone), never through argv, env or a file
    return this.call('C_Login', [session, userType, pin]);
  }
  C_GetAttributeValue(session: Buffer, object: Buffer, template: Attribute[]): Promise<TemplateResult> {
    return this.call('C_GetAttributeValue', [session, object, template]);
  }
  C_CreateObject(session: Buffer, template: Attribute[]): Promise<Buffer> {
    return this.call('C_CreateObject', [session, template]);
  }
  C_DestroyObject(session: Buffer, object: Buffer): Promise<void> {
    return this.call('C_DestroyObject', [session, object]);
  }
  C_GenerateKeyPair(session: Buffer, mechanism: Mechanism, publicTemplate: Attribute[], privateTemplate: Attribute[]): Promise<KeyPair> {
    return this.call('C_GenerateKeyPair', [session, mechanism, publicTemplate, privateTemplate]);
  }
  C_WrapKey(session: Buffer, mechanism: Mechanism, wrappingKey: Buffer, key: Buffer, capacity: number): Promise<Buffer> {
    return this.call('C_WrapKey', [session, mechanism, wrappingKey, key, capacity]);
  }
  C_UnwrapKey(session: Buffer, mechanism: Mechanism, unwrappingKey: Buffer, wrappedKey: Buffer, template: Attribute[]): Promise<Buffer> {
    return this.call('C_UnwrapKey', [session, mechanism, unwrappingKey, wrappedKey, template]);
  }
  C_CopyObject(session: Buffer, object: Buffer, template: Attribute[]): Promise<Buffer> {
    return this.call('C_CopyObject', [session, object, template]);
  }
  find(session: Buffer, template: Attribute[], max: number): Promise<Buffer[]> {
    return this.call('find', [session, template, max]);
  }
  sign(session: Buffer, mechanism: Mechanism, key: Buffer, input: Buffer, signatureBytes: number): Promise<Buffer> {
    return this.call('sign', [session, mechanism, key, input, signatureBytes]);
  }

  /**
   * Stops the thread. A thread stuck in a frozen call cannot be stopped until the call returns
   * (no cancellation in PKCS#11); it is unreferenced, so it does not keep the process alive.
   */
  async stop(): Promise<void> {
    if (this.exited) return;
    this.worker.unref();
    if (this.abandonedCalls > 0) return; // terminate() would wait for the frozen call
    await this.worker.terminate().catch(() => undefined);
  }
}
