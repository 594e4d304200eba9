/**
 * Adaptive dispatch (issue 12): where a signature on a local module is made.
 *
 * A synchronous pkcs11js call on the main thread reaches the module's single-thread rate, while a
 * hop to a sign thread and back costs more than a whole P-256 signature on SoftHSM. So:
 * - every (key, mechanism)'s operation time is measured as it runs (inline: around the call; on a
 *   thread: inside the thread), as a moving average;
 * - the cost of the hop is measured too: round trip of a thread request minus the time the module
 *   took in the thread (moving average);
 * - an operation is **short** when it fits in one turn's budget (the threshold).
 *   Short operations run inline, synchronously, in bounded batches: at most `budgetUs` of inline
 *   signing per event-loop turn, then the rest waits for the next turn (setImmediate, after I/O) or,
 *   when the sign threads are ready, goes to them at once (the second core);
 * - long operations go to the sign threads (or, until they are ready, to the libuv pool);
 * - with several callers at once short operations go to the threads too, so every core signs:
 *   from 4 callers per sign thread for an operation under half the budget (the hop costs about
 *   as much as the operation), from 1 per thread for one of half the budget or more
 *   (`parallelFrom`).
 * A classification changes only past a margin (hysteresis), so an operation near the threshold does
 * not flip at every sample. Nothing here applies to remote modules: they are never signed inline.
 */

/** Moving-average weight of a new sample. */
const ALPHA = 0.1;
/**
 * Inline samples of an operation before its first classification; their minimum is taken, because
 * the first uses of a key are slow on their own (measured here for P-256: 466, 417, 326, 218, 188 µs,
 * then ~120–190 µs on a busy machine: object load, caches, JIT) and would classify it as long.
 * An operation whose best sample is over the whole per-turn budget after two samples is long
 * without waiting for the rest (RSA-4096 must not block the loop five times).
 */
const WARMUP = 5;

/** Concurrent callers per sign thread from which an operation under half the budget goes to the threads. */
const PARALLEL_DEPTH = 4;

export interface OpStats {
  /** Moving average of the module's time for this operation, µs. */
  opUs: number;
  samples: number;
  short: boolean;
}

export class DispatchStats {
  private readonly ops = new Map<string, OpStats>();
  /** Moving average of the sign-thread hop (round trip minus the module's time), µs; 0 = not measured yet. */
  hopUs = 0;
  hopSamples = 0;

  constructor(
    /** Inline signing allowed per event-loop turn, µs. */
    readonly budgetUs: number,
  ) {}

  /**
   * The threshold below which an operation counts as short, µs: the per-turn budget. An operation
   * that fits in a turn is signed inline when its caller is alone (no hop: lower latency, the
   * module's own rate), and `parallelFrom` sends it to the threads once there are callers enough
   * to keep them busy. The threshold was once the measured hop but at least half the budget:
   * RSA-2048 on SoftHSM (0.45-0.75 ms) then went to the threads whenever a busy machine measured it
   * over 0.5 ms, and one caller signed at 0.65 of the module's rate instead of 0.91-0.97 inline.
   */
  get thresholdUs(): number {
    return this.budgetUs;
  }

  /**
   * Concurrent callers per sign thread from which a short operation goes to the threads. Under
   * half the budget (P-256, Ed25519 on SoftHSM: 50-200 µs) the hop costs about as much as the
   * operation and a thread idles between the main thread's harvests unless it has 4 requests
   * queued (P-256, 2 threads, sign/s: 2 callers threads 14.9k / inline 17.1k, 8 callers 20.2k /
   * 19.0k, 16 callers about 28k / 19k); from half the budget on the hop is small beside the
   * operation, so as many callers as threads already fill them.
   */
  parallelFrom(s: OpStats): number {
    return 2 * s.opUs >= this.budgetUs ? 1 : PARALLEL_DEPTH;
  }

  stats(key: string): OpStats {
    let s = this.ops.get(key);
    if (!s) {
      s = { opUs: 0, samples: 0, short: true };
      this.ops.set(key, s);
    }
    return s;
  }

  /** Records one measured operation and re-classifies it (with a ±25 % margin around the threshold). */
  recordOp(s: OpStats, us: number): void {
    const threshold = this.thresholdUs;
    if (s.samples < WARMUP) {
      // warm-up: measured inline (short stays true), then classified on the best sample
      s.opUs = s.samples === 0 ? us : Math.min(s.opUs, us);
      s.samples++;
      if (s.samples >= 2 && s.opUs > this.budgetUs) {
        s.samples = WARMUP;
        s.short = false;
      } else if (s.samples === WARMUP) s.short = s.opUs <= threshold;
      return;
    }
    // a sample counts for at most 3× the average: one pause (GC, the process descheduled on a
    // busy machine) must not flip a short operation to the threads; a module that really became
    // slower still moves the average up by ~20 % per sample
    s.opUs += ALPHA * (Math.min(us, 3 * s.opUs) - s.opUs);
    s.samples++;
    if (s.short && s.opUs > threshold * 1.25) s.short = false;
    else if (!s.short && s.opUs < threshold * 0.75) s.short = true;
  }

  recordHop(roundTripUs: number, opUs: number): void {
    const hop = Math.max(0, roundTripUs - opUs);
    this.hopUs = this.hopSamples === 0 ? hop : this.hopUs + ALPHA * (hop - this.hopUs);
    this.hopSamples++;
  }

  /** Per-operation figures for metrics (key ids are not secret; µs rounded). */
  snapshot(): Record<string, { opUs: number; samples: number; path: 'inline' | 'threads' }> {
    const out: Record<string, { opUs: number; samples: number; path: 'inline' | 'threads' }> = {};
    for (const [key, s] of this.ops) out[key] = { opUs: Math.round(s.opUs), samples: s.samples, path: s.short ? 'inline' : 'threads' };
    return out;
  }
}

interface Job {
  run: () => void;
  /**
   * Sends the job to a sign thread instead; false when no thread can take it now. `backlog` is the
   * number of other jobs waiting: threads are worth starting only when jobs really pile up (one
   * caller signing in a loop just waits for the next turn).
   */
  overflow: (backlog: number) => boolean;
}

const sharedRunners = new Map<number, InlineRunner>();

/**
 * The process's inline runner for a per-turn budget: every backend instance with that budget
 * shares it, so the event loop is held at most one budget per turn however many tokens the
 * process uses (a pool of three members each with its own 1 ms would hold it 3 ms), and a
 * member that is sent more work is not capped at the same per-turn share as the others.
 */
export function sharedInlineRunner(budgetUs: number): InlineRunner {
  let runner = sharedRunners.get(budgetUs);
  if (!runner) {
    runner = new InlineRunner(budgetUs);
    sharedRunners.set(budgetUs, runner);
  }
  return runner;
}

/**
 * Runs short signing jobs synchronously on the main thread, at most `budgetUs` per event-loop turn.
 * A job that does not fit in the current turn is handed to a sign thread if one can take it, else
 * it waits for the next turn (setImmediate: timers and I/O run in between).
 */
export class InlineRunner {
  private readonly queue: Job[] = [];
  private usedUs = 0;
  private turnOpen = false;
  /** Turns in which the budget ran out (for metrics and tests). */
  yields = 0;

  constructor(private readonly budgetUs: number) {}

  submit(job: Job): void {
    this.openTurn();
    if (this.queue.length === 0 && this.usedUs < this.budgetUs) {
      this.runTimed(job);
      return;
    }
    if (job.overflow(this.queue.length)) return;
    this.queue.push(job);
  }

  private openTurn(): void {
    if (this.turnOpen) return;
    this.turnOpen = true;
    this.usedUs = 0;
    setImmediate(this.nextTurn);
  }

  private readonly nextTurn = (): void => {
    this.turnOpen = false;
    if (this.queue.length === 0) return;
    this.yields++;
    this.openTurn();
    while (this.queue.length > 0 && this.usedUs < this.budgetUs) this.runTimed(this.queue.shift()!);
    while (this.queue.length > 0 && this.queue[0]!.overflow(this.queue.length - 1)) this.queue.shift();
  };

  private runTimed(job: Job): void {
    const t0 = performance.now();
    job.run();
    this.usedUs += (performance.now() - t0) * 1000;
  }
}
