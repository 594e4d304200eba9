import { readFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN } from './helpers.js';

/** Every module bin.js loads before a command runs: its static import graph inside dist/. */
function staticGraph(file: string, seen = new Map<string, string[]>()): Map<string, string[]> {
  if (seen.has(file)) return seen;
  const text = readFileSync(file, 'utf8');
  // Static imports only: `import ... from "x"` and `import "x"`, not `import("x")`.
  const specifiers = [...text.matchAll(/^\s*(?:import|export)\s+(?:[^"'();]*?\s+from\s+)?["']([^"']+)["'];?/gm)].map((m) => m[1]!);
  seen.set(file, specifiers);
  for (const s of specifiers) if (s.startsWith('./')) staticGraph(join(dirname(file), s), seen);
  return seen;
}

describe('start-up', () => {
  it('bin.js loads no backend, no core and nothing heavy before a command needs it', () => {
    const graph = staticGraph(BIN);
    const external = [...graph.values()].flat().filter((s) => !s.startsWith('./'));
    expect(external.length).toBeGreaterThan(0);
    for (const s of external) expect(s === 'commander' || isBuiltin(s), `bin.js statically imports ${s}`).toBe(true);
  });
});
