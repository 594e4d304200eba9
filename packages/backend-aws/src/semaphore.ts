import { abortError } from '@olocus/hsm-core';

/**
 * Bounds the requests in flight to `maxConcurrency`. The SDK itself queues on its HTTP agent
 * without limit or telemetry; a counter here gives the pool metrics monitoring reads and lets a
 * caller's AbortSignal cancel the wait.
 */
export class Semaphore {
  private active = 0;
  private readonly queue: Array<{ resolve: () => void; reject: (error: unknown) => void; signal?: AbortSignal; onAbort?: () => void }> = [];

  constructor(readonly max: number) {}

  get inUse(): number {
    return this.active;
  }

  get waiting(): number {
    return this.queue.length;
  }

  async acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw abortError(signal);
    if (this.active < this.max) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const entry: (typeof this.queue)[number] = { resolve, reject };
      if (signal) {
        entry.signal = signal;
        entry.onAbort = () => {
          const index = this.queue.indexOf(entry);
          if (index >= 0) this.queue.splice(index, 1);
          reject(abortError(signal));
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.queue.push(entry);
    });
  }

  release(): void {
    const next = this.queue.shift();
    if (next) {
      // the slot passes straight to the next waiter: `active` stays the same
      if (next.signal && next.onAbort) next.signal.removeEventListener('abort', next.onAbort);
      next.resolve();
      return;
    }
    this.active--;
  }

  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal);
    try {
      return await task();
    } finally {
      this.release();
    }
  }
}
