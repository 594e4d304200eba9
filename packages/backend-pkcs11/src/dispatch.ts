/**
 * Adaptive dispatch (issue 12): where a signature on a local module is made.
 *
 * A synchronous pkcs11js call on the main thread reaches the module's single-thread rate, while a
 * hop to a sign thread and back costs more than a whole P-256 signature on SoftHSM. So:
 * - every (key, mechanism)'s operation time is measured as it runs (inline: around the call; on a
 *   thread: inside the thread), as a moving average;
 * - the cost of the hop is measured too: round trip of a thread request minus the time the module
 *   took in the thread (moving average);
 * - an operation is **short** when its time is below the threshold: the measured hop cost, but at
 *   least half of the per-turn budget and at most the budget.
 *   Short operations run inline, synchronously, in bounded batches: at most `budgetUs` of inline
 *   signing per event-loop turn, then the rest waits for the next turn (setImmediate, after I/O) or,
 *   when the sign threads are ready, goes to them at once (the second core);
 * - long operations go to the sign threads (or, until they are ready, to the libuv pool);
 * - with many callers at once (4 per sign thread; see signing.ts) short operations go to the
 *   threads too, so every core signs.
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
   * The threshold below which an operation counts as short, µs: the measured hop (an operation
   * that costs less than sending it away is not sent away), and at least half of the per-turn
   * budget (an operation that fits twice in a turn does not need another thread: the main
   * thread's latency for it is lower; with a quarter, RSA-2048 on SoftHSM (~0.45 ms) went to the
   * threads and one caller signed at 0.84 of the module's rate, inline 0.95), never more than the budget.
   */
  get thresholdUs(): number {
    return Math.min(Math.max(this.hopUs, this.budgetUs / 2), this.budgetUs);
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
