export { runSignBenchmark, runSignLevel, parseConcurrencyList } from './bench.js';
export type { BenchLevelResult, BenchProgress, SignBenchmarkOptions, SignBenchmarkResult } from './bench.js';
export { main, buildProgram, cliVersion } from './main.js';
