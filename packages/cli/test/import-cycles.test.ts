import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The CLI's modules import one another without a cycle: the config is read first and everything
 * else depends on it, never back. Static, type-only and dynamic (`import('./x.js')`) imports all
 * count: a lazy import still ties the two modules' designs together.
 */

const SRC = fileURLToPath(new URL('../src', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [path] : [];
  });
}

const IMPORT = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[^'"`;]*?\sfrom\s+)?['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** Local imports of each file, as absolute .ts paths. */
export function importGraph(files: string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1');
    const targets = new Set<string>();
    for (const m of text.matchAll(IMPORT)) {
      const spec = (m[1] ?? m[2])!;
      targets.add(resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
    }
    graph.set(file, [...targets].filter((t) => graph.has(t) || files.includes(t)));
  }
  return graph;
}

/** Every cycle, each as the list of files on it (Tarjan's strongly connected components). */
export function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    indices.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!indices.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, indices.get(w)!));
    }
    if (low.get(v) === indices.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component);
    }
  };
  for (const v of graph.keys()) if (!indices.has(v)) visit(v);
  return found;
}

describe('module structure', () => {
  it('has no import cycle among the CLI sources', () => {
    const graph = importGraph(sourceFiles(SRC));
    expect(graph.size).toBeGreaterThan(20);
    const found = cycles(graph).map((c) => c.map((f) => relative(SRC, f)).sort());
    expect(found, `import cycles: ${JSON.stringify(found)}`).toEqual([]);
  });

  it('the checker finds a cycle, including one closed by a dynamic import', () => {
    const graph = new Map([
      ['/a.ts', ['/b.ts']],
      ['/b.ts', ['/c.ts']],
      ['/c.ts', ['/a.ts']],
      ['/d.ts', ['/a.ts']],
    ]);
    expect(cycles(graph).map((c) => c.sort())).toEqual([['/a.ts', '/b.ts', '/c.ts']]);
    IMPORT.lastIndex = 0;
    const text = "import type { X } from './x.js';\nconst { y } = await import('./y.js');\nexport { z } from './z.js';";
    expect([...text.matchAll(IMPORT)].map((m) => m[1] ?? m[2])).toEqual(['./x.js', './y.js', './z.js']);
  });

  it('config.ts imports none of audit, manager, rotation, store', () => {
    const graph = importGraph(sourceFiles(SRC));
    const deps = (graph.get(join(SRC, 'config.ts')) ?? []).map((f) => relative(SRC, f));
    for (const later of ['audit.ts', 'manager.ts', 'rotation.ts', 'store.ts']) expect(deps).not.toContain(later);
  });
});
