import { isHsmError, type HsmKeyHandle } from '@olocus/hsm-core';
import { parseConcurrencyList, runSignBenchmark, type BenchProgress, type SignBenchmarkResult } from '../bench.js';
import { CliError } from '../errors.js';
import { withManager } from '../manager.js';
import { parseAlgorithm, table } from './keys.js';
import type { CliContext } from '../context.js';

interface BenchOptions {
  algorithm: string;
  concurrency: string;
  duration: string;
  keepKey?: boolean;
}

export async function bench(ctx: CliContext, opts: BenchOptions): Promise<void> {
  const algorithm = parseAlgorithm(opts.algorithm);
  let concurrency: number[];
  try {
    concurrency = parseConcurrencyList(opts.concurrency);
  } catch (error) {
    throw new CliError('InvalidArgument', `--concurrency: ${(error as Error).message}`);
  }
  const seconds = Number(opts.duration);
  if (!/^\d+(\.\d+)?$/.test(opts.duration) || !(seconds > 0) || seconds > 3600) {
    throw new CliError('InvalidArgument', `--duration: "${opts.duration}" is not a number of seconds (greater than 0, at most 3600)`);
  }
  const id = `olocus-bench-${algorithm}`;
  await withManager(ctx, async (manager) => {
    let handle: HsmKeyHandle;
    let reused = true;
    try {
      handle = await manager.getKey(id);
    } catch (error) {
      if (!isHsmError(error, 'KeyNotFound')) throw error;
      ctx.note(`creating bench key ${id} (${algorithm})...`);
      handle = await manager.generateKey({ id, algorithm });
      reused = false;
    }
    if (handle.algorithm !== algorithm) {
      throw new CliError('InvalidArgument', `key ${id} exists with algorithm ${handle.algorithm}, not ${algorithm}; destroy it (olocus-hsm keys destroy --id ${id})`);
    }
    const info = await manager.info();
    const tty = ctx.stderr.isTTY === true;
    const render = (p: BenchProgress) => {
      const line = `bench ${algorithm} c=${p.concurrency} ${(p.elapsedMs / 1000).toFixed(0)}/${(p.durationMs / 1000).toFixed(0)} s: ${p.operations} signs, ${p.signsPerSecond.toFixed(0)}/s${p.errors ? `, ${p.errors} errors` : ''}`;
      if (tty) ctx.stderr.write(`\r\x1b[2K${line}`);
      else ctx.note(line);
    };
    let result: SignBenchmarkResult;
    try {
      result = await runSignBenchmark({
        sign: (data) => manager.sign(handle, data),
        concurrency,
        durationMs: seconds * 1000,
        onProgress: render,
        onLevel: (level) => {
          if (tty) ctx.stderr.write('\r\x1b[2K');
          ctx.note(`bench ${algorithm} c=${level.concurrency}: ${level.signsPerSecond} sign/s, p50 ${level.latencyMs.p50} ms, p99 ${level.latencyMs.p99} ms`);
        },
      });
    } finally {
      if (!opts.keepKey) await manager.destroyKey(handle);
    }
    const failed = result.levels.find((l) => l.operations === 0 && l.errors > 0);
    if (failed) throw new CliError('SigningFailed', `every signature failed at concurrency ${failed.concurrency}: ${failed.firstError}`);
    if (ctx.json) {
      return ctx.printJson({ backend: info.backend, description: info.description, algorithm, key: id, keyReused: reused, keyKept: opts.keepKey === true, durationSeconds: seconds, levels: result.levels });
    }
    ctx.print(`${info.description} - ${algorithm}, ${seconds} s per level${reused ? ' (existing key)' : ''}`);
    ctx.print(
      table(
        ['CONCURRENCY', 'SIGN/S', 'P50 MS', 'P99 MS', 'LOOP P99 MS', 'ERRORS'],
        result.levels.map((l) => [String(l.concurrency), l.signsPerSecond.toFixed(1), l.latencyMs.p50.toFixed(3), l.latencyMs.p99.toFixed(3), l.eventLoopDelayP99Ms.toFixed(3), String(l.errors)]),
      ),
    );
  });
}
