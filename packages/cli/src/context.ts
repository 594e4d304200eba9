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
  /** Standard input: a terminal here lets `init` ask for the passphrase. */
  readonly stdin?: NodeJS.ReadStream;
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
    // Created on first use only: most commands never read standard input.
    get stdin() {
      return process.stdin;
    },
    stdout,
    stderr,
    exitCode: 0,
    // Data output is written as it is: secrets are kept out of it where it is made, and
    // scrubbing it would corrupt signatures, ids and JSON that merely contain a short PIN.
    print(line = '') {
      if (!this.json) stdout.write(line + '\n');
    },
    printJson(value) {
      stdout.write(JSON.stringify(value, jsonReplacer, 2) + '\n');
    },
    note(line) {
      stderr.write(line + '\n');
    },
  };
}

/** Dates as ISO strings, byte arrays as base64, bigints as strings. */
export function jsonReplacer(this: unknown, _key: string, value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  if (typeof value === 'bigint') return value.toString();
  return value;
}
