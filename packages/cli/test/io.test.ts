import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

/**
 * The output helper every command writes through (src/io.ts), exercised directly: a failure
 * or a terminating signal while a file is being written leaves neither the file nor a `*.tmp`.
 * The module is bundled with the repository's esbuild so that a separate process can be
 * signalled while it holds a temporary file.
 */

const ESBUILD = fileURLToPath(new URL('../../../node_modules/.bin/esbuild', import.meta.url));
const IO_SOURCE = fileURLToPath(new URL('../src/io.ts', import.meta.url));

let dir: string;
let cleanup: () => Promise<void>;
let ioModule: string;

beforeAll(async () => {
  if (!existsSync(ESBUILD)) throw new Error(`${ESBUILD} is missing: run pnpm install at the repository root (esbuild comes with tsup)`);
  ({ dir, cleanup } = await tempDir('olocus-cli-io-'));
  ioModule = join(dir, 'io.mjs');
  const built = spawnSync(ESBUILD, [IO_SOURCE, '--bundle', '--platform=node', '--format=esm', `--outfile=${ioModule}`, '--log-level=error'], { encoding: 'utf8' });
  expect(built.status, built.stderr).toBe(0);
});
afterAll(async () => cleanup?.());

const tmpFiles = async (folder: string): Promise<string[]> => (await readdir(folder)).filter((f) => f.endsWith('.tmp'));

describe('outputs are written whole or not at all', () => {
  it('a failure while writing removes the temporary file and leaves no output', async () => {
    const io = (await import(ioModule)) as typeof import('../src/io.js');
    const ctx = { cwd: dir, stdout: process.stdout } as never;
    await expect(
      io.writeStreaming(ctx, '--out', 'failed.jsonl', async (stream) => {
        stream.write('half a line');
        throw new Error('the producer failed');
      }),
    ).rejects.toThrow('the producer failed');
    expect(existsSync(join(dir, 'failed.jsonl'))).toBe(false);
    expect(await tmpFiles(dir)).toEqual([]);

    const { path } = await io.writeStreaming(ctx, '--out', 'ok.jsonl', async (stream) => void stream.write('{"a":1}\n'), { mode: 0o600 });
    expect(await readFile(path, 'utf8')).toBe('{"a":1}\n');
    expect(((await stat(path)).mode & 0o777).toString(8)).toBe('600');
    expect(await tmpFiles(dir)).toEqual([]);
  });

  it('SIGTERM or SIGINT while a file is being written removes the temporary file; the signal still ends the process', async () => {
    const script = join(dir, 'writer.mjs');
    await writeFile(
      script,
      `import { openOutput } from ${JSON.stringify(ioModule)};
const sink = await openOutput({ cwd: process.argv[2], stdout: process.stdout }, '--out', 'report.json', { mode: 0o600 });
sink.stream.write('partial report');
process.stdout.write('ready\\n');
setInterval(() => {}, 1000);
`,
    );
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const child = spawn(process.execPath, [script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      // The temporary file exists while the output is open: the test looks at the real path.
      expect((await tmpFiles(dir)).length).toBe(1);
      const closed = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, s) => resolve(s)));
      child.kill(signal);
      expect(await closed).toBe(signal);
      expect(await tmpFiles(dir)).toEqual([]);
      expect(existsSync(join(dir, 'report.json'))).toBe(false);
    }
  }, 30_000);
});

describe('terminal safety', () => {
  it('escapes control characters in a value; keeps the lines of a composed text; shortens long values', async () => {
    const io = (await import(ioModule)) as typeof import('../src/io.js');
    expect(io.terminalSafe('a\u001b[31mb\nc\u202ed')).toBe('a\\e[31mb\\nc\\u{202e}d');
    expect(io.terminalSafeLine('row 1\nrow\u001b[2J 2')).toBe('row 1\nrow\\e[2J 2');
    expect(io.echo('x'.repeat(10_000))).toBe(`${'x'.repeat(64)}…(10000 chars)`);
  });
});
