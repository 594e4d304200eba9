import { createRequire } from 'node:module';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { HsmError } from '@olocus/hsm-core';
import { returnValueName } from './classify.js';

/**
 * Sign threads: C_SignInit + C_Sign, both synchronous, on a few worker threads instead of
 * C_SignInit on the main thread + C_Sign on the libuv pool.
 *
 * Why: C_SignInit is not cheap (SoftHSM 2.6.1 loads and decrypts the private key object: 30–65 µs
 * per call here, half of a P-256 sign) and pkcs11js only has it in a synchronous form, so on the
 * main thread it capped throughput and added to event-loop delay. A worker runs the whole pair.
 *
 * How:
 * - Every worker loads pkcs11js against the same library path. `dlopen` returns the process's
 *   already-loaded module, and PKCS#11 state (initialisation, sessions, object handles, login) is
 *   per process, so a worker uses the sessions and key handles the main thread opened and found.
 *   Workers never call C_Initialize or C_Finalize: the main thread owns the module's lifecycle
 *   (a call while it is finalised fails with CKR_CRYPTOKI_NOT_INITIALIZED, which opens the circuit).
 * - Workers keep no handles: every request carries its session and key handle, so nothing in a
 *   worker goes stale across a re-initialisation (the backend checks generations before sending).
 * - One request per pooled session at a time (the pool lends a session to one caller), so a
 *   session is only ever used by one thread at a time; the request goes to the least busy worker.
 * - Requests and results travel through a SharedArrayBuffer: one slot per in-flight request
 *   (handles, mechanism, input, signature) and single-producer/single-consumer rings of slot
 *   numbers (requests main → worker, completions worker → main). An idle worker sleeps in
 *   `Atomics.wait` and is woken by `Atomics.notify`; the main thread learns of completions through
 *   `Atomics.waitAsync` on the completion counter, armed only while requests are in flight, so
 *   completions that land before the main thread runs are harvested together (a postMessage per
 *   result measured slower). Inputs larger than a slot go over a side MessagePort.
 * - At start every worker checks with C_GetSessionInfo(anchor) that it sees the main thread's
 *   sessions; if the first one does not, the threads are stopped and signing stays on the main
 *   thread (p11-kit-client.so gives each C_GetFunctionList caller its own RPC connection).
 */

/** The wire form of a CK_MECHANISM for signing (PSS carries its parameters). */
export interface SignMechanism {
  mechanism: number;
  parameter?: { type: number; hashAlg: number; mgf: number; saltLen: number };
}

const IN_CAP = 1024;
const OUT_CAP = 1024;
const HEADER = 64;
const SLOT_BYTES = HEADER + IN_CAP + OUT_CAP;
// slot header (Uint32 indices)
// Uint32 0..3 hold the session handle (bytes 0..7) and the key handle (bytes 8..15), written as
// 64-bit values through a BigUint64Array view.
const H_MECH = 4;
const H_PSS = 5; // 1 when PSS parameters follow
const H_HASH = 6;
const H_MGF = 7;
const H_SALT = 8;
const H_INLEN = 9;
const H_OUTCAP = 10;
const H_RV = 11;
const H_OUTLEN = 12;
const H_BIGIN = 13; // input sent over the side port
const H_HLEN = 14; // handle length in bytes (4 or 8)
const H_OPUS = 15; // time of C_SignInit + C_Sign in the thread, µs (adaptive dispatch measures with it)
// control block (Int32 indices), one per worker
const C_REQ_HEAD = 0;
const C_DONE_HEAD = 1;
const C_STOP = 2;
const C_RINGS = 8;

/** rv written for failures that are not a CK_RV (a JS exception in the worker). */
const RV_NOT_PKCS11 = 0xffffffff;

const WORKER_SOURCE = String.raw`
'use strict';
(function main() {
const { workerData, parentPort, receiveMessageOnPort } = require('node:worker_threads');
const startFlag = new Int32Array(workerData.startFlag);
let p11;
let probe = 0;
try {
  const { PKCS11 } = require(workerData.pkcs11js);
  p11 = new PKCS11();
  p11.load(workerData.libraryPath); // no C_Initialize: the main thread owns the module's lifecycle
  // Does this thread see the main thread's module state? Some modules hand every
  // C_GetFunctionList caller its own instance (p11-kit-client.so: one RPC connection each);
  // then the main thread's sessions do not exist here and the backend must not use threads.
  try {
    p11.C_GetSessionInfo(Buffer.from(workerData.probe));
  } catch (error) {
    probe = error && typeof error.code === 'number' && error.code !== 0 ? error.code : ${RV_NOT_PKCS11};
  }
} finally {
  // the addon is loaded (or failed to): from here the thread may be torn down at process exit
  Atomics.store(startFlag, 0, 1);
  Atomics.notify(startFlag, 0);
}
parentPort.postMessage(probe);
if (probe !== 0) return;
const ctl = new Int32Array(workerData.control);
const u32 = new Uint32Array(workerData.slots);
const { slotBytes, header, inCap, cap, side } = workerData;
const mask = cap - 1;
const reqRing = ${C_RINGS};
const doneRing = ${C_RINGS} + cap;
let tail = 0;
let doneHead = 0;
let notified = 0;
const NOTIFY_EVERY = 4;
const views = [];
function run(slot) {
  const base = slot * slotBytes;
  const h = base >>> 2;
  const hlen = u32[h + ${H_HLEN}];
  let v = views[slot];
  if (v === undefined || v.hlen !== hlen) {
    v = views[slot] = {
      hlen,
      session: Buffer.from(workerData.slots, base, hlen),
      key: Buffer.from(workerData.slots, base + 8, hlen),
      input: Buffer.from(workerData.slots, base + header, inCap),
      out: Buffer.from(workerData.slots, base + header + inCap, workerData.outCap),
    };
  }
  const session = v.session;
  const key = v.key;
  const mechanism = { mechanism: u32[h + ${H_MECH}] };
  if (u32[h + ${H_PSS}] === 1) mechanism.parameter = { type: 5, hashAlg: u32[h + ${H_HASH}], mgf: u32[h + ${H_MGF}], saltLen: u32[h + ${H_SALT}] };
  let input;
  if (u32[h + ${H_BIGIN}] === 1) {
    const m = receiveMessageOnPort(side).message;
    input = Buffer.from(m.buffer, m.byteOffset, m.byteLength);
  } else {
    input = v.input.subarray(0, u32[h + ${H_INLEN}]);
  }
  const out = v.out.subarray(0, u32[h + ${H_OUTCAP}]);
  const t0 = performance.now();
  try {
    p11.C_SignInit(session, mechanism, key);
    const signature = p11.C_Sign(session, input, out);
    u32[h + ${H_OUTLEN}] = signature.length;
    u32[h + ${H_RV}] = 0;
    u32[h + ${H_OPUS}] = Math.round((performance.now() - t0) * 1000);
  } catch (error) {
    const code = error && typeof error.code === 'number' && /^CKR_/.test(String(error.message)) ? error.code : ${RV_NOT_PKCS11};
    u32[h + ${H_RV}] = code === 0 ? ${RV_NOT_PKCS11} : code;
  }
}
for (;;) {
  const head = Atomics.load(ctl, ${C_REQ_HEAD});
  if (head === tail) {
    if (Atomics.load(ctl, ${C_STOP}) === 1) break;
    Atomics.wait(ctl, ${C_REQ_HEAD}, head);
    continue;
  }
  const slot = ctl[reqRing + (tail & mask)];
  tail = (tail + 1) | 0;
  run(slot);
  ctl[doneRing + (doneHead & mask)] = slot;
  doneHead = (doneHead + 1) | 0;
  Atomics.store(ctl, ${C_DONE_HEAD}, doneHead);
  // wakes the main thread's Atomics.waitAsync, if armed: when this thread has nothing left to do,
  // or every few results while it has (a wake per result cost a context switch per signature)
  if (Atomics.load(ctl, ${C_REQ_HEAD}) === tail || ((doneHead - notified) | 0) >= NOTIFY_EVERY) {
    notified = doneHead;
    Atomics.notify(ctl, ${C_DONE_HEAD});
  }
}
})();
`;

/** Atomics.waitAsync (Node 16+; not in this TypeScript lib). */
interface AtomicsWaitAsync {
  waitAsync(array: Int32Array, index: number, value: number): { async: false; value: string } | { async: true; value: Promise<string> };
}

/** A signature made on a thread, with the time the module took for it there. */
export interface ThreadSignature {
  signature: Uint8Array;
  /** C_SignInit + C_Sign in the thread, µs. */
  opUs: number;
}

interface Pending {
  resolve: (result: ThreadSignature) => void;
  reject: (error: unknown) => void;
}

class SignThread {
  readonly worker: Worker;
  readonly control: Int32Array;
  readonly side: MessagePort;
  inflight = 0;
  private reqHead = 0;
  private doneTail = 0;
  readonly slotsHere = new Set<number>();
  exited = false;
  /** Its own probe succeeded: requests may go to it (a thread still loading, or whose probe failed, gets none). */
  ready = false;
  /** Set once the thread has loaded pkcs11js and answered the sharing probe. */
  private started: Promise<void>;
  private stopping = false;
  /** Set to 1 by the thread once it has loaded the addon (see waitForStartingThreads). */
  readonly startFlag = new Int32Array(new SharedArrayBuffer(4));

  constructor(
    private readonly owner: SignThreads,
    readonly cap: number,
    libraryPath: string,
    pkcs11js: string,
    slots: SharedArrayBuffer,
    probe: Uint8Array,
  ) {
    this.control = new Int32Array(new SharedArrayBuffer(4 * (C_RINGS + 2 * cap)));
    const { port1, port2 } = new MessageChannel();
    this.side = port1;
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { startFlag: this.startFlag.buffer, libraryPath, pkcs11js, control: this.control.buffer, slots, slotBytes: SLOT_BYTES, header: HEADER, inCap: IN_CAP, outCap: OUT_CAP, cap, side: port2, probe },
      transferList: [port2],
      name: 'olocus-pkcs11-sign',
    });
    let started!: () => void;
    this.started = new Promise<void>((resolve) => (started = resolve));
    startingThreads.add(this);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.once('exit', waitForStartingThreads);
    }
    this.worker.once('message', (rv: number) => {
      startingThreads.delete(this);
      started();
      // referenced until here: a process must not exit while a thread is still loading the addon
      // (that crashed at exit: napi_create_reference on a worker thread, issue 18 item 10)
      if (this.inflight === 0 && !this.stopping) this.worker.unref();
      if (rv === 0) {
        this.ready = true;
        this.owner.threadReady();
      }
      this.owner.probed(rv);
    });
    this.worker.on('error', () => undefined); // 'exit' follows and handles the pending requests
    this.worker.on('exit', () => {
      this.exited = true;
      startingThreads.delete(this);
      started();
      this.owner.threadExited(this);
    });
  }

  submit(slot: number, bigInput: Uint8Array | undefined): void {
    // (only called once the thread is ready, so its reference count is the in-flight count)
    if (bigInput) this.side.postMessage(bigInput);
    this.control[C_RINGS + (this.reqHead & (this.cap - 1))] = slot;
    this.reqHead = (this.reqHead + 1) | 0;
    this.slotsHere.add(slot);
    if (this.inflight++ === 0) this.worker.ref();
    Atomics.store(this.control, C_REQ_HEAD, this.reqHead);
    Atomics.notify(this.control, C_REQ_HEAD);
    if (!this.armed) this.arm();
  }

  private armed = false;
  private arm(): void {
    this.armed = true;
    const r = (Atomics as unknown as AtomicsWaitAsync).waitAsync(this.control, C_DONE_HEAD, this.doneTail);
    if (r.async) void r.value.then(this.onWake);
    else queueMicrotask(this.onWake);
  }

  private readonly onWake = (): void => {
    this.armed = false;
    this.harvest();
    if (this.inflight > 0 && !this.exited) this.arm();
  };

  private harvest(): void {
    const head = Atomics.load(this.control, C_DONE_HEAD);
    while (this.doneTail !== head) {
      const slot = this.control[C_RINGS + this.cap + (this.doneTail & (this.cap - 1))]!;
      this.doneTail = (this.doneTail + 1) | 0;
      this.slotsHere.delete(slot);
      if (--this.inflight === 0 && !this.stopping) this.worker.unref();
      this.owner.complete(slot);
    }
  }

  /**
   * Resolves once the thread is gone: only then may the main thread finalize the module it signs with.
   * A thread is never terminated while it loads the addon: stop waits for its start, then asks it to
   * leave its loop and lets it exit by itself; terminate() is only the fallback for one that does not.
   */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    // referenced until it is gone: close() must not be left pending with nothing keeping the loop alive
    this.stopping = true;
    this.worker.ref();
    await Promise.race([this.started, exited, delay(10_000)]);
    Atomics.store(this.control, C_STOP, 1);
    Atomics.notify(this.control, C_REQ_HEAD);
    this.side.close();
    const gone = await Promise.race([exited.then(() => true), delay(2_000).then(() => false)]);
    if (!gone) await this.worker.terminate().catch(() => undefined);
  }
}

let pkcs11jsPath: string | undefined;

/**
 * Threads still loading the addon. The process must not tear them down in that state: a
 * process.exit() while a thread was inside pkcs11.node's initialisation crashed with SIGSEGV
 * (napi_create_reference on the worker, issue 18 item 10). A natural exit cannot happen then (the
 * thread is referenced while it starts); for process.exit() the 'exit' hook waits, synchronously
 * and at most 5 s, until each has finished loading.
 */
const startingThreads = new Set<SignThread>();
let exitHookInstalled = false;

function waitForStartingThreads(): void {
  const deadline = Date.now() + 5_000;
  for (const thread of startingThreads) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    Atomics.wait(thread.startFlag, 0, 0, left);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** A small pool of sign threads for one backend instance. */
export class SignThreads {
  private readonly slots: SharedArrayBuffer;
  private readonly u8: Uint8Array;
  private readonly u32: Uint32Array;
  private readonly free: number[] = [];
  private readonly pending: Array<Pending | undefined>;
  private readonly threads: SignThread[] = [];
  private readonly cap: number;
  private next = 0;
  private closed = false;
  /** Unexpected worker exits; past a bound the threads are given up and signing stays on the main thread. */
  private exits = 0;

  /**
   * @param threads number of worker threads
   * @param maxInflight most requests in flight at once (the session pool's maximum)
   */
  constructor(
    private readonly libraryPath: string,
    threads: number,
    maxInflight: number,
    /**
     * A session handle of the main thread (its anchor), for the sharing probe: asked at each spawn,
     * since a replacement thread probing with an anchor closed since (C_CloseAllSessions, a
     * re-login) would fail its probe and exit.
     */
    private readonly probe: () => Uint8Array,
  ) {
    pkcs11jsPath ??= createRequire(import.meta.url).resolve('pkcs11js');
    this.slots = new SharedArrayBuffer(SLOT_BYTES * maxInflight);
    this.u8 = new Uint8Array(this.slots);
    this.u32 = new Uint32Array(this.slots);
    this.pending = new Array<Pending | undefined>(maxInflight);
    for (let i = maxInflight - 1; i >= 0; i--) this.free.push(i);
    let cap = 1;
    while (cap < maxInflight) cap *= 2;
    this.cap = cap;
    this.wanted = threads;
  }

  private readonly wanted: number;

  /**
   * Starts the threads (once). They are not started with the backend: a process that only verifies,
   * or signs one message and exits, never loads the addon on another thread (faster start, and no
   * thread can still be loading it when the process exits).
   */
  start(): void {
    if (this.state !== 'idle' || this.closed) return;
    this.state = 'starting';
    for (let i = 0; i < this.wanted; i++) this.threads.push(this.spawn());
  }

  /** The threads this pool runs once started (0 of them exist while it is idle). */
  get size(): number {
    return this.wanted;
  }

  private spawn(): SignThread {
    return new SignThread(this, this.cap, this.libraryPath, pkcs11jsPath!, this.slots, this.probe());
  }

  /**
   * 'starting' until the first thread has checked that it sees the main thread's sessions;
   * 'unsupported' when it does not (the threads are then stopped and signing stays on the main thread).
   */
  state: 'idle' | 'starting' | 'ready' | 'unsupported' = 'idle';

  /** The first probe decides (later threads are replacements for the same module). */
  probed(rv: number): void {
    if (this.state !== 'starting' || this.closed) return;
    if (rv === 0) {
      this.state = 'ready';
      return;
    }
    this.state = 'unsupported';
    this.unsupportedReason = returnValueName(rv);
    void this.close();
  }

  unsupportedReason: string | undefined;

  /** Threads whose own probe succeeded and that have not exited. */
  private readyThreads = 0;

  threadReady(): void {
    this.readyThreads++;
  }

  /** Whether a request of this shape can go to a thread (else the caller signs on the main thread). */
  accepts(handleBytes: number, signatureBytes: number): boolean {
    return this.state === 'ready' && !this.closed && this.readyThreads > 0 && this.free.length > 0 && (handleBytes === 8 || handleBytes === 4) && signatureBytes <= OUT_CAP;
  }

  /** C_SignInit + C_Sign on a sign thread. Rejects like pkcs11js (a Pkcs11Error-shaped error with `code`). */
  sign(session: Buffer, key: Buffer, mechanism: SignMechanism, input: Uint8Array, signatureBytes: number): Promise<ThreadSignature> {
    const slot = this.free.pop()!;
    const base = slot * SLOT_BYTES;
    const h = base >>> 2;
    const u32 = this.u32;
    this.u8.set(session, base);
    this.u8.set(key, base + 8);
    u32[h + H_HLEN] = session.length;
    u32[h + H_MECH] = mechanism.mechanism;
    const p = mechanism.parameter;
    if (p) {
      u32[h + H_PSS] = 1;
      u32[h + H_HASH] = p.hashAlg;
      u32[h + H_MGF] = p.mgf;
      u32[h + H_SALT] = p.saltLen;
    } else {
      u32[h + H_PSS] = 0;
    }
    const big = input.length > IN_CAP;
    if (!big) this.u8.set(input, base + HEADER);
    u32[h + H_INLEN] = input.length;
    u32[h + H_BIGIN] = big ? 1 : 0;
    u32[h + H_OUTCAP] = signatureBytes;
    u32[h + H_RV] = RV_NOT_PKCS11;
    const promise = new Promise<ThreadSignature>((resolve, reject) => {
      this.pending[slot] = { resolve, reject };
    });
    this.pick().submit(slot, big ? input.slice() : undefined);
    return promise;
  }

  /** The least busy ready thread (round robin among equals); accepts() made sure there is one. */
  private pick(): SignThread {
    const threads = this.threads;
    const n = threads.length;
    let best: SignThread | undefined;
    for (let i = 0; i < n; i++) {
      const t = threads[(this.next + i) % n]!;
      if (!t.ready) continue;
      if (best === undefined || t.inflight < best.inflight) best = t;
      if (best.inflight === 0) break;
    }
    this.next = (this.next + 1) % n;
    return best!;
  }

  /** Called by a thread when the worker has written the result of `slot`. */
  complete(slot: number): void {
    const waiter = this.pending[slot];
    this.pending[slot] = undefined;
    const base = slot * SLOT_BYTES;
    const h = base >>> 2;
    const rv = this.u32[h + H_RV]!;
    let signature: Uint8Array | undefined;
    if (rv === 0) {
      const start = base + HEADER + IN_CAP;
      signature = this.u8.slice(start, start + this.u32[h + H_OUTLEN]!);
    }
    this.free.push(slot);
    if (!waiter) return;
    if (signature) waiter.resolve({ signature, opUs: this.u32[h + H_OPUS]! });
    else waiter.reject(rv === RV_NOT_PKCS11 ? new Error('the sign thread failed with a non-PKCS#11 error') : pkcs11Error(rv));
  }

  /** A worker died (it should not): fail its requests as retryable and replace it. */
  threadExited(thread: SignThread): void {
    const index = this.threads.indexOf(thread);
    if (thread.ready) {
      thread.ready = false;
      this.readyThreads--;
    }
    for (const slot of thread.slotsHere) {
      const waiter = this.pending[slot];
      this.pending[slot] = undefined;
      this.free.push(slot);
      waiter?.reject(new HsmError('SigningFailed', 'the sign thread exited during the operation', { retryable: true, details: { signThread: 'exited' } }));
    }
    thread.slotsHere.clear();
    if (index < 0 || this.closed) return;
    if (++this.exits > 4 * (this.threads.length + 1)) {
      this.threads.splice(index, 1); // a worker that cannot start (e.g. the addon fails to load in it)
      return;
    }
    this.threads[index] = this.spawn();
  }

  private stopped: Promise<void> | undefined;

  /** Stops every thread; the promise resolves when all have exited (idempotent). */
  close(): Promise<void> {
    if (this.stopped) return this.stopped;
    this.closed = true;
    this.stopped = Promise.all(this.threads.map((thread) => thread.stop())).then(() => undefined);
    return this.stopped;
  }
}

/** An error shaped like pkcs11js's Pkcs11Error, so that the classification applies unchanged. */
function pkcs11Error(rv: number): Error {
  return Object.assign(new Error(returnValueName(rv)), { name: 'Pkcs11Error', code: rv });
}
