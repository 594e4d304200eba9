import { randomBytes } from 'node:crypto';
import { createHistogram, monitorEventLoopDelay, performance } from 'node:perf_hooks';

/**
 * The signing benchmark loop, shared by `olocus-hsm bench` and the repository's benchmark
 * scripts. It only needs a `sign(data)` function, so it measures a backend, an HsmManager or
 * anything layered on top of them the same way.
 */

export interface BenchLevelResult {
  concurrency: number;
  /** Signatures completed. */
  operations: number;
  errors: number;
  /** Wall time the level ran, in ms. */
  durationMs: number;
  signsPerSecond: number;
  latencyMs: { p50: number; p99: number; mean: number; max: number };
  /**
   * p99 of the event-loop delay while the level ran (perf_hooks.monitorEventLoopDelay), in ms:
   * how long other work in the process would wait behind the signing load.
   */
  eventLoopDelayP99Ms: number;
  /** First error seen, if any (message only). */
  firstError?: string;
}

export interface BenchProgress {
  concurrency: number;
  elapsedMs: number;
  durationMs: number;
  operations: number;
  errors: number;
  /** Signatures per second over the level so far. */
  signsPerSecond: number;
}

export interface SignBenchmarkOptions {
  /** Signs one message; the result is ignored. */
  sign: (data: Uint8Array) => Promise<unknown>;
  /** Concurrency levels, run one after another (default [1, 2, 4, 16]). */
  concurrency?: number[];
  /** Time per level in ms (default 5000). */
  durationMs?: number;
  /** Message signed each time (default 64 random bytes). */
  message?: Uint8Array;
  /** Called about once a second while a level runs. */
  onProgress?: (progress: BenchProgress) => void;
  /** Called when a level ends. */
  onLevel?: (result: BenchLevelResult) => void;
  /** Stops the run early: the current level ends and reports what it measured. */
  signal?: AbortSignal;
}

export interface SignBenchmarkResult {
  levels: BenchLevelResult[];
}

const LOOP_RESOLUTION_MS = 5;
const ns = (ms: number) => Math.max(1, Math.round(ms * 1e6));
const ms = (nanos: number) => Math.round((nanos / 1e6) * 1000) / 1000;

/** Runs `concurrency` workers that sign in a loop for `durationMs`. */
export async function runSignLevel(options: Omit<SignBenchmarkOptions, 'concurrency' | 'onLevel'> & { concurrency: number }): Promise<BenchLevelResult> {
  const { sign, concurrency, onProgress, signal } = options;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
  const durationMs = options.durationMs ?? 5000;
  const message = options.message ?? new Uint8Array(randomBytes(64));
  const latency = createHistogram();
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  let operations = 0;
  let errors = 0;
  let firstError: string | undefined;
  const start = performance.now();
  const end = start + durationMs;
  const timer = onProgress
    ? setInterval(() => {
        const elapsedMs = performance.now() - start;
        onProgress({ concurrency, elapsedMs, durationMs, operations, errors, signsPerSecond: operations / (elapsedMs / 1000) });
      }, 1000)
    : undefined;
  timer?.unref();
  loop.enable();
  // Each worker gives the event loop a turn between calls, as a server does between requests:
  // a backend that signs synchronously then shows up as event-loop delay instead of starving
  // the timers (progress, abort, the delay monitor itself).
  const turn = () => new Promise<void>((r) => setImmediate(r));
  const worker = async () => {
    while (!signal?.aborted && performance.now() < end) {
      await turn();
      const t0 = performance.now();
      try {
        await sign(message);
        latency.record(ns(performance.now() - t0));
        operations++;
      } catch (error) {
        errors++;
        firstError ??= (error as Error)?.message ?? String(error);
        // A failing backend is not a benchmark: stop this level after a burst of errors.
        if (errors >= 100 && errors > operations) break;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    loop.disable();
    if (timer) clearInterval(timer);
  }
  const elapsed = performance.now() - start;
  const result: BenchLevelResult = {
    concurrency,
    operations,
    errors,
    durationMs: Math.round(elapsed),
    signsPerSecond: Math.round((operations / (elapsed / 1000)) * 10) / 10,
    latencyMs: operations
      ? { p50: ms(latency.percentile(50)), p99: ms(latency.percentile(99)), mean: ms(latency.mean), max: ms(latency.max) }
      : { p50: 0, p99: 0, mean: 0, max: 0 },
    // No sample at all means the loop never turned during the level.
    // The histogram records the timer's interval: the delay is what exceeds the resolution.
    eventLoopDelayP99Ms: loop.count > 0 ? ms(Math.max(0, loop.percentile(99) - LOOP_RESOLUTION_MS * 1e6)) : Math.round(elapsed * 1000) / 1000,
  };
  if (firstError !== undefined) result.firstError = firstError;
  return result;
}

/** Runs every concurrency level in turn. */
export async function runSignBenchmark(options: SignBenchmarkOptions): Promise<SignBenchmarkResult> {
  const levels: BenchLevelResult[] = [];
  const message = options.message ?? new Uint8Array(randomBytes(64));
  for (const concurrency of options.concurrency ?? [1, 2, 4, 16]) {
    if (options.signal?.aborted) break;
    const result = await runSignLevel({ ...options, message, concurrency });
    levels.push(result);
    options.onLevel?.(result);
  }
  return { levels };
}

/** Parses "1,2,4,16" (the --concurrency flag). */
export function parseConcurrencyList(text: string): number[] {
  const parts = text.split(',').map((s) => s.trim());
  const values = parts.map(Number);
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p)) || values.some((v) => v < 1 || v > 4096)) {
    throw new RangeError(`"${text}" is not a comma-separated list of concurrency levels (integers 1-4096, e.g. 1,2,4,16)`);
  }
  return values;
}
