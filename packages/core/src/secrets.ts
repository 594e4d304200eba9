import { readFile, stat } from 'node:fs/promises';
import { HsmError } from './errors.js';
import type { SecretSource } from './types.js';

/**
 * Reads a secret from an environment variable or a file. Errors name the variable or the
 * path and the config field, never the value. One trailing newline is removed from files
 * (what `echo` leaves), nothing else.
 */
export async function readSecret(source: SecretSource, field: string, env: Record<string, string | undefined> = process.env): Promise<string> {
  if ('env' in source) {
    const value = env[source.env];
    if (value === undefined || value === '') {
      throw new HsmError('InvalidConfiguration', `${field}: environment variable ${source.env} is not set`, { details: { field, env: source.env } });
    }
    return value;
  }
  let text: string;
  try {
    const info = await stat(source.file);
    if (!info.isFile()) throw new Error('not a regular file');
    text = await readFile(source.file, 'utf8');
  } catch (cause) {
    const reason = (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
    throw new HsmError('InvalidConfiguration', `${field}: cannot read secret file ${source.file} (${reason})`, { details: { field, file: source.file } });
  }
  const value = text.replace(/\r?\n$/, '');
  if (value === '') throw new HsmError('InvalidConfiguration', `${field}: secret file ${source.file} is empty`, { details: { field, file: source.file } });
  return value;
}
