import { describe, expect, it } from 'vitest';
import { parseConcurrencyList, runSignBenchmark } from '../src/bench.js';

describe('runSignBenchmark (the loop the bench command and the repository scripts share)', () => {
  it('runs each level, counts operations and errors, reports latency percentiles', async () => {
    let calls = 0;
    const progress: number[] = [];
    const result = await runSignBenchmark({
      sign: async () => {
        calls++;
        await new Promise((r) => setImmediate(r));
        if (calls % 50 === 0) throw new Error('flaky');
      },
      concurrency: [1, 3],
      durationMs: 1100,
      onProgress: (p) => progress.push(p.concurrency),
    });
    expect(result.levels.map((l) => l.concurrency)).toEqual([1, 3]);
    const total = result.levels.reduce((n, l) => n + l.operations + l.errors, 0);
    expect(total).toBe(calls);
    for (const l of result.levels) {
      expect(l.operations).toBeGreaterThan(0);
      expect(l.errors).toBeGreaterThan(0);
      expect(l.firstError).toBe('flaky');
      expect(l.latencyMs.p99).toBeGreaterThanOrEqual(l.latencyMs.p50);
      expect(l.latencyMs.max).toBeGreaterThanOrEqual(l.latencyMs.p99);
      expect(l.signsPerSecond).toBeGreaterThan(0);
      expect(l.eventLoopDelayP99Ms).toBeGreaterThanOrEqual(0);
    }
    expect(progress).toContain(1);
    expect(progress).toContain(3);
  });

  it('stops a level whose every call fails', async () => {
    const result = await runSignBenchmark({ sign: () => Promise.reject(new Error('device gone')), concurrency: [2], durationMs: 60_000 });
    expect(result.levels[0]).toMatchObject({ operations: 0, firstError: 'device gone' });
    expect(result.levels[0]!.errors).toBeGreaterThanOrEqual(100);
  });

  it('stops early on abort', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const result = await runSignBenchmark({ sign: () => new Promise((r) => setTimeout(r, 1)), concurrency: [1, 2, 4], durationMs: 60_000, signal: controller.signal });
    expect(result.levels.length).toBe(1);
  });

  it('parses concurrency lists', () => {
    expect(parseConcurrencyList('1,2,4,16')).toEqual([1, 2, 4, 16]);
    expect(parseConcurrencyList(' 8 ')).toEqual([8]);
    for (const bad of ['', '0', '1,,2', 'a', '-1', '1.5']) expect(() => parseConcurrencyList(bad)).toThrow(/concurrency/);
  });
});
