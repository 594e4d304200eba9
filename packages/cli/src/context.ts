import { redact } from './errors.js';

/** Options every command accepts (defined on the program). */
export interface GlobalOptions {
  config?: string;
  json?: boolean;
  passphraseFile?: string;
  pinFile?: string;
  /** `--actor` of the commands that take it (optsWithGlobals merges it in): who the audit log names. */
  actor?: string;
}

/** What a command needs from its surroundings; injectable so commands stay testable. */
export interface CliContext {
  readonly globals: GlobalOptions;
  readonly json: boolean;
  readonly cwd: string;
  readonly env: Record<string, string | undefined>;
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
  /** A human line on stdout (nothing in --json mode). */
  print(line?: string): void;
  /** The machine result on stdout: one JSON document (only in --json mode). */
  printJson(value: unknown): void;
  /** A note or progress line on stderr (both modes: stdout stays machine-readable). */
  note(line: string): void;
  /** Exit code the command asks for (default 0). */
  exitCode: number;
}

export function createContext(globals: GlobalOptions): CliContext {
  const stdout = process.stdout;
  const stderr = process.stderr;
  return {
    globals,
    json: globals.json === true,
    cwd: process.cwd(),
    env: process.env,
    stdout,
    stderr,
    exitCode: 0,
    print(line = '') {
      if (!this.json) stdout.write(redact(line) + '\n');
    },
    printJson(value) {
      stdout.write(redact(JSON.stringify(value, jsonReplacer, 2)) + '\n');
    },
    note(line) {
      stderr.write(redact(line) + '\n');
    },
  };
}

/** Dates as ISO strings, byte arrays as base64, bigints as strings. */
export function jsonReplacer(this: unknown, _key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  if (typeof value === 'bigint') return value.toString();
  return value;
}
