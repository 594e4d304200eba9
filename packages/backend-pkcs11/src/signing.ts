/**
 * The signing path: usage/expiry checks, the sign plan (mechanism, client-side hashing), and
 * C_SignInit + C_Sign on a sign thread or on the main thread + libuv pool.
 */
import { HsmError, assertUsable, isHsmError, throwIfAborted, type KeyRef } from '@olocus/hsm-core';
import type { TokenConnection } from './connection.js';
import type { SignPlan } from './keys.js';
import type { KeyEntry, KeyStore } from './key-store.js';

export class Signer {
  constructor(
    private readonly conn: TokenConnection,
    private readonly keys: KeyStore,
    private readonly assertBackendUsable: () => void,
  ) {}

  /** Refuses keys that may not sign now (usage, expiry, state) and algorithms the token cannot sign. */
  plan(entry: KeyEntry): SignPlan {
    assertUsable(entry.handle, 'sign');
    const plan = this.conn.plans.get(entry.algorithm);
    if (!plan) throw new HsmError('UnsupportedAlgorithm', `this token cannot sign with ${entry.algorithm}`, { details: { key: entry.id, algorithm: entry.algorithm } });
    return plan;
  }

  /**
   * Signs `inputFor(plan)` with the key; a stale cached object handle (the token was reset or
   * the object recreated) is looked up again once.
   */
  async sign(key: KeyRef, first: KeyEntry, inputFor: (plan: SignPlan) => Buffer, signal: AbortSignal | undefined): Promise<Uint8Array> {
    let entry = first;
    const plan = this.plan(entry);
    const input = inputFor(plan);
    throwIfAborted(signal);
    this.inflight++;
    try {
      return await this.signWith(entry, plan, input, signal);
    } catch (error) {
      if (!isHsmError(error) || error.details.stale !== true) throw error;
      this.keys.forget(entry);
      entry = await this.keys.resolve(key, signal);
      return await this.signWith(entry, this.plan(entry), input, signal);
    } finally {
      this.inflight--;
    }
  }

  /** Signs in progress (the demand that starts sign threads). */
  private inflight = 0;

  /**
   * The hot path: C_SignInit + C_Sign on a sign thread (see sign-threads.ts), or, with
   * signThreads = 0, C_SignInit on the main thread + C_Sign on the libuv thread pool.
   */
  private signWith(entry: KeyEntry, plan: SignPlan, input: Buffer, signal?: AbortSignal): Promise<Uint8Array> {
    const conn = this.conn;
    return conn.withSession(
      'SigningFailed',
      `signing with key ${entry.id}`,
      async (session, p11) => {
        if (entry.generation !== session.generation) {
          throw new HsmError('SigningFailed', `key ${entry.id}: cached handle is from before a re-initialisation`, { retryable: true, details: { stale: true } });
        }
        const mod = conn.mod!;
        if (mod.remote) {
          // the module thread runs C_SignInit + C_Sign in one round trip; never the main thread
          const signature = await p11.sign(session.handle, plan.mechanism(), entry.priv, input, plan.signatureBytes);
          conn.counters.signs++;
          return new Uint8Array(signature.buffer, signature.byteOffset, signature.byteLength);
        }
        const threads = conn.signThreads;
        // threads start on demand: when signs overlap (or dispatch forces them)
        if (threads && threads.state === 'idle' && this.inflight > 1) threads.start();
        if (threads && threads.accepts(session.handle.length, plan.signatureBytes) && entry.priv.length === session.handle.length) {
          const signature = await mod.track(threads.sign(session.handle, entry.priv, plan.mechanism(), input, plan.signatureBytes));
          conn.counters.signs++;
          conn.counters.threadSigns++;
          return signature;
        }
        // a fresh mechanism object per call: pkcs11js keeps native state on the object it is given
        const sync = mod.p11;
        sync.C_SignInit(session.handle, plan.mechanism(), entry.priv);
        const out = Buffer.allocUnsafe(plan.signatureBytes);
        const signature = await mod.track(sync.C_SignAsync(session.handle, input, out));
        conn.counters.signs++;
        return new Uint8Array(signature.buffer, signature.byteOffset, signature.byteLength);
      },
      this.assertBackendUsable,
      signal,
      'sign',
    );
  }
}
