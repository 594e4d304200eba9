import { setTimeout as delay } from 'node:timers/promises';
import { HsmError, isHsmError } from '@olocus/hsm-core';
import { mapAwsError, retryClassOf, type AwsErrorContext } from './errors.js';
import type { Semaphore } from './semaphore.js';

export interface RetryPolicy {
  totalTimeMs: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface CallSettings {
  semaphore: Semaphore;
  retry: RetryPolicy;
  requestTimeoutMs: number;
  /** Ends every wait when the backend closes. */
  closing: AbortSignal;
  /** Requests on the wire, aborted when the backend closes. */
  inflight: Set<AbortController>;
  /**
   * The client's HTTP handler ends an attempt after `requestTimeoutMs` without an answer and
   * close() destroys its sockets: an attempt given the whole per-attempt budget then needs no
   * controller and timer of its own (they cost about 5 % of the CPU of a signature, measured).
   */
  socketBounded?: boolean;
}

/** Aborts what is on the wire and every backoff wait (close()). */
export function abortAll(settings: CallSettings, closing: AbortController): void {
  closing.abort();
  for (const controller of settings.inflight) controller.abort();
  settings.inflight.clear();
}

/**
 * One AWS call: a slot from the semaphore per attempt, each attempt bounded by the request
 * timeout and the time left, throttling and transient faults retried with exponential backoff
 * and full jitter until the total budget is spent. The SDK's own retries are off (maxAttempts 1)
 * so that this one budget holds.
 */
export interface CallOptions {
  /** Caller's signal: cancels the wait for a slot. */
  signal?: AbortSignal;
  /**
   * False for calls that must not run twice (CreateKey): they are retried only when AWS said it
   * throttled or the connection was refused, never after a timeout that may hide a success.
   */
  idempotent?: boolean;
  /** Per-attempt timeout and total budget for this call, when longer than the defaults. */
  timeoutMs?: number;
}

/** What an attempt passes to the SDK's `send`: its signal, and its time limit for the HTTP handler. */
export interface HttpOptions {
  abortSignal?: AbortSignal;
  requestTimeout?: number;
}

export async function awsCall<T>(settings: CallSettings, context: AwsErrorContext, send: (http: HttpOptions) => Promise<T>, options: CallOptions = {}): Promise<T> {
  const callerSignal = options.signal;
  const total = Math.max(settings.retry.totalTimeMs, options.timeoutMs ?? 0);
  const perAttempt = Math.max(settings.requestTimeoutMs, options.timeoutMs ?? 0);
  const started = Date.now();
  let attempt = 0;
  for (;;) {
    attempt++;
    const remaining = total - (Date.now() - started);
    const budget = Math.max(1, Math.min(perAttempt, remaining));
    try {
      return await settings.semaphore.run(async () => {
        // An attempt with the whole requestTimeoutMs is bounded by the handler itself (socketBounded).
        // Any other gets one controller and one timer, aborted by close() through `inflight` (cheaper
        // than AbortSignal.timeout + AbortSignal.any, and nothing accumulates on a long-lived signal),
        // and passes its limit to the handler so that a longer one (CreateKey) is not cut short.
        const controller = settings.socketBounded && budget === settings.requestTimeoutMs ? undefined : new AbortController();
        let timedOut = false;
        let timer: ReturnType<typeof setTimeout> | undefined;
        if (controller) {
          timer = setTimeout(() => {
            timedOut = true;
            controller.abort();
          }, budget);
          settings.inflight.add(controller);
        }
        try {
          return await send(controller ? { abortSignal: controller.signal, requestTimeout: budget } : {});
        } catch (error) {
          if (settings.closing.aborted) throw new HsmError('Closed', `the ${context.service} backend was closed during ${context.operation}`, { cause: error });
          if (timedOut) {
            const timeoutError = new Error(`no answer within ${budget} ms`);
            timeoutError.name = 'TimeoutError';
            throw timeoutError;
          }
          throw error;
        } finally {
          if (controller) {
            clearTimeout(timer);
            settings.inflight.delete(controller);
          }
        }
      }, callerSignal);
    } catch (error) {
      if (isHsmError(error)) throw error;
      const retry = retryClassOf(error);
      if (options.idempotent === false && retry === 'transient' && !refused(error)) throw mapAwsError(error, context, { attempts: attempt });
      const elapsed = Date.now() - started;
      if (retry === 'final') throw mapAwsError(error, context, { attempts: attempt });
      const backoff = Math.random() * Math.min(settings.retry.maxDelayMs, settings.retry.baseDelayMs * 2 ** (attempt - 1));
      // a retry that cannot finish within the budget is not started
      if (elapsed + backoff + 1 >= total) throw mapAwsError(error, context, { attempts: attempt, elapsedMs: elapsed });
      try {
        await delay(backoff, undefined, { signal: settings.closing });
      } catch {
        throw new HsmError('Closed', `the ${context.service} backend was closed during ${context.operation}`, { cause: error });
      }
    }
  }
}

/** The request never reached the service: safe to send again even when it is not idempotent. */
function refused(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current; depth++) {
    if ((current as { code?: string }).code === 'ECONNREFUSED') return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
