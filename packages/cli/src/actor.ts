import { userInfo } from 'node:os';
import { CliError } from './errors.js';
import type { CliContext } from './context.js';

/** Who makes a change: `--actor NAME`, else the OS user. */
export function actorOf(ctx: CliContext, given?: string): string {
  if (given !== undefined) {
    if (given.trim() === '') throw new CliError('InvalidArgument', '--actor: must not be empty');
    return given;
  }
  try {
    const name = userInfo().username;
    if (name) return name;
  } catch {
    // No passwd entry (some containers): fall back below.
  }
  return ctx.env['USER'] || ctx.env['LOGNAME'] || `uid:${process.getuid?.() ?? 'unknown'}`;
}
