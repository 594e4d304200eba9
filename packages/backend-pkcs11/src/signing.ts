/**
 * The signing path: usage/expiry checks, the sign plan (mechanism, client-side hashing), and
 * C_SignInit + C_Sign on a sign thread or on the main thread + libuv pool.
 */
import { HsmError, assertUsable, isHsmError, throwIfAborted, type KeyRef } from '@olocus/hsm-core';
import type { TokenConnection } from './connection.js';
import type { SignPlan } from './keys.js';
import { DispatchStats, sharedInlineRunner, type InlineRunner } from './dispatch.js';
import type { KeyEntry, KeyStore } from './key-store.js';

export class Signer {
  readonly dispatch: DispatchStats;
  readonly inline: InlineRunner;
  /** Signatures of this backend in progress (callers in signWith), the measure of concurrency. */
  private signing = 0;

  constructor(
    private readonly conn: TokenConnection,
    private readonly keys: KeyStore,
    private readonly assertBackendUsable: () => void,
  ) {
    const budgetUs = conn.options.inlineBudgetMs * 1000;
    this.dispatch = new DispatchStats(budgetUs);
    this.inline = sharedInlineRunner(budgetUs);
  }

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
    try {
      return await this.signWith(entry, plan, input, signal);
    } catch (error) {
      if (!isHsmError(error) || error.details.stale !== true) throw error;
      this.keys.forget(entry);
      entry = await this.keys.resolve(key, signal);
      return await this.signWith(entry, this.plan(entry), input, signal);
    }
  }

  /**
   * The hot path, on a local module (see dispatch.ts): short operations inline (C_SignInit + C_Sign
   * synchronously, bounded per event-loop turn), long ones on a sign thread, or — until the threads
   * are ready, or with signThreads = 0 — C_SignInit on the main thread + C_Sign on the libuv pool.
   * A remote module signs on its module thread. Every path runs inside withSession: one operation
   * per session, the same failure classification, retries and circuit.
   */
  private signWith(entry: KeyEntry, plan: SignPlan, input: Buffer, signal?: AbortSignal): Promise<Uint8Array> {
    this.signing++;
    const signed = this.signOnSession(entry, plan, input, signal);
    // counted down beside the caller's chain, not in it (an async wrapper cost one caller ~1 µs a signature)
    signed.then(this.signedOne, this.signedOne);
    return signed;
  }

  private readonly signedOne = (): void => {
    this.signing--;
  };

  private signOnSession(entry: KeyEntry, plan: SignPlan, input: Buffer, signal?: AbortSignal): Promise<Uint8Array> {
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
        const mode = conn.options.dispatch;
        const threads = conn.signThreads;
        const stats = this.dispatch.stats(`${entry.id}:${plan.mechanism().mechanism.toString(16)}`);
        const threadFits = () => (threads?.accepts(session.handle.length, plan.signatureBytes) ?? false) && entry.priv.length === session.handle.length;
        const onThread = async (): Promise<Uint8Array> => {
          const t0 = performance.now();
          const result = await mod.track(threads!.sign(session.handle, entry.priv, plan.mechanism(), input, plan.signatureBytes));
          this.dispatch.recordHop((performance.now() - t0) * 1000, result.opUs);
          this.dispatch.recordOp(stats, result.opUs);
          conn.counters.signs++;
          conn.counters.threadSigns++;
          return result.signature;
        };
        if (mode === 'inline' || (mode === 'auto' && stats.short)) {
          // Several callers at once: the sign threads take them all, so every core signs. Inline,
          // everything ran at one core's rate (the threads only got what overflowed a turn, and 16
          // callers never fill a 1 ms turn), and mixing the two kept the threads' results waiting
          // while the main thread signed. How many callers make the threads worth it depends on
          // the operation's time against the hop (DispatchStats.parallelFrom); a lone caller signs
          // inline, even with one thread (a hop would only add to its latency). The count is of the
          // threads configured: idle ones are started at the same count they are used from.
          if (mode === 'auto' && threads && this.signing >= Math.max(2, this.dispatch.parallelFrom(stats) * threads.size)) {
            if (threads.state === 'idle') threads.start();
            if (threadFits()) return onThread();
          }
          const sync = mod.p11;
          return new Promise<Uint8Array>((resolve, reject) => {
            this.inline.submit({
              run: () => {
                try {
                  const t0 = performance.now();
                  // a fresh mechanism object per call: pkcs11js keeps native state on the object it is given
                  sync.C_SignInit(session.handle, plan.mechanism(), entry.priv);
                  const signature = sync.C_Sign(session.handle, input, Buffer.allocUnsafe(plan.signatureBytes));
                  this.dispatch.recordOp(stats, (performance.now() - t0) * 1000);
                  conn.counters.signs++;
                  conn.counters.inlineSigns++;
                  resolve(new Uint8Array(signature.buffer, signature.byteOffset, signature.byteLength));
                } catch (error) {
                  reject(error);
                }
              },
              // past this turn's inline budget: the other core, when a thread can take it
              overflow: (backlog) => {
                if (mode !== 'auto' || !threads) return false;
                if (threads.state === 'idle' && backlog === 0) return false;
                threads.start();
                if (!threadFits()) return false;
                onThread().then(resolve, reject);
                return true;
              },
            });
          });
        }
        threads?.start();
        if (threadFits()) return onThread();
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
