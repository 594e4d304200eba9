import { HsmError, readSecret, type SecretSource } from '@olocus/hsm-core';
import { CliError } from './errors.js';

/**
 * Secrets the CLI reads itself: passphrases at `init`, connection strings, and the PIN or
 * passphrase a backend asks for. Values never appear in a message: errors name the variable,
 * the file or the flag.
 */

/** The shortest passphrase `init` accepts for a new software key store. */
export const PASSPHRASE_MIN_LENGTH = 12;

/**
 * core's `readSecret`, except that a variable that is set but empty says so: "is not set" sends
 * an operator looking for a missing export when the value is what is wrong.
 */
export async function readCliSecret(source: SecretSource, field: string, env: Record<string, string | undefined>): Promise<string> {
  if ('env' in source && env[source.env] === '') {
    throw new HsmError('InvalidConfiguration', `${field}: environment variable ${source.env} is set but empty; give it the secret's value (or unset it and use a {"file": ...} source)`, {
      details: { field, env: source.env },
    });
  }
  return readSecret(source, field, env);
}

/** At least PASSPHRASE_MIN_LENGTH characters; `from` names where it came from (never the value). */
export function assertPassphraseStrength(value: string, from: string): void {
  if (Array.from(value).length < PASSPHRASE_MIN_LENGTH) {
    throw new CliError(
      'InvalidArgument',
      `the passphrase from ${from} is shorter than ${PASSPHRASE_MIN_LENGTH} characters; init requires at least ${PASSPHRASE_MIN_LENGTH} (it is the only protection of the key files at rest)`,
    );
  }
}

/** A terminal on both sides: only then may the CLI ask for a secret. */
export function canPrompt(input: NodeJS.ReadStream | undefined, output: NodeJS.WriteStream): input is NodeJS.ReadStream {
  return input?.isTTY === true && output.isTTY === true && typeof input.setRawMode === 'function';
}

export interface SecretPrompter {
  /** Writes `question` and reads one line without echo. */
  ask(question: string): Promise<string>;
  close(): void;
}

/**
 * Reads lines from a terminal in raw mode (nothing is echoed). Characters typed ahead of a
 * question are kept for it, so "passphrase, Enter, passphrase, Enter" typed quickly still works.
 * Ctrl-C and Ctrl-D abort with an error.
 */
export function createPrompter(input: NodeJS.ReadStream, output: NodeJS.WriteStream): SecretPrompter {
  let buffer = '';
  let waiting: { resolve: (line: string) => void; reject: (error: Error) => void } | undefined;
  let failure: Error | undefined;
  const wasRaw = input.isRaw === true;
  const settle = (): void => {
    if (!waiting) return;
    if (failure) {
      const w = waiting;
      waiting = undefined;
      w.reject(failure);
      return;
    }
    const end = buffer.search(/[\r\n]/);
    if (end === -1) return;
    const line = buffer.slice(0, end);
    let rest = buffer.slice(end + 1);
    if (buffer[end] === '\r' && rest.startsWith('\n')) rest = rest.slice(1);
    buffer = rest;
    const w = waiting;
    waiting = undefined;
    output.write('\n');
    w.resolve(line);
  };
  const onData = (chunk: Buffer | string): void => {
    for (const ch of typeof chunk === 'string' ? chunk : chunk.toString('utf8')) {
      if (ch === '\u0003' || ch === '\u0004') {
        failure = new CliError('InvalidArgument', 'no passphrase entered (input ended or was interrupted)');
      } else if (ch === '\u007f' || ch === '\b') {
        buffer = Array.from(buffer).slice(0, -1).join('');
      } else {
        buffer += ch;
      }
    }
    settle();
  };
  input.setRawMode(true);
  input.on('data', onData);
  input.resume();
  return {
    ask(question) {
      output.write(question);
      return new Promise((resolve, reject) => {
        waiting = { resolve, reject };
        settle();
      });
    },
    close() {
      input.off('data', onData);
      input.setRawMode(wasRaw);
      input.pause();
    },
  };
}

/** Asks twice; the two must match. */
export async function promptNewPassphrase(input: NodeJS.ReadStream, output: NodeJS.WriteStream): Promise<string> {
  const prompter = createPrompter(input, output);
  try {
    const first = await prompter.ask(`passphrase for the new key store (at least ${PASSPHRASE_MIN_LENGTH} characters): `);
    const second = await prompter.ask('the same passphrase again: ');
    if (first !== second) throw new CliError('InvalidArgument', 'the two passphrases differ; run olocus-hsm init again');
    return first;
  } finally {
    prompter.close();
  }
}

/** Asks once (a command whose config names an unset variable, on a terminal). */
export async function promptSecret(input: NodeJS.ReadStream, output: NodeJS.WriteStream, question: string): Promise<string> {
  const prompter = createPrompter(input, output);
  try {
    return await prompter.ask(question);
  } finally {
    prompter.close();
  }
}
