/**
 * The security officer's backup KEK ceremony, from the command line: `backup kek create` makes the
 * AES-256 KEK on the backup token, `backup kek enroll` carries it to another token (production,
 * or a fresh token replacing a lost one) without it ever being in clear outside a token. The work
 * is backend-pkcs11's (createBackupKek / enrollBackupKek); this file reads the SO PINs from the
 * environment or files (never argv, which `ps` shows) and finds the module.
 */
import type { SecretSource } from '@olocus/hsm-core';
import { CliError } from '../errors.js';
import { loadConfig } from '../config.js';
import { readCliSecret } from '../secrets.js';
import type { CliContext } from '../context.js';

export interface KekCreateOptions {
  token: string;
  module?: string;
  label?: string;
  soPinEnv?: string;
  soPinFile?: string;
}

export interface KekEnrollOptions {
  from: string;
  to: string;
  module?: string;
  label?: string;
  fromSoPinEnv?: string;
  fromSoPinFile?: string;
  toSoPinEnv?: string;
  toSoPinFile?: string;
  toPinEnv?: string;
  toPinFile?: string;
  exportOnly?: boolean;
}

/** An SO PIN (or user PIN) named by an environment variable or a file, exactly one of them. */
function sourceOf(env: string | undefined, file: string | undefined, flag: string, required: boolean): SecretSource | undefined {
  if (env !== undefined && file !== undefined) throw new CliError('InvalidArgument', `give --${flag}-env or --${flag}-file, not both`);
  if (env !== undefined) return { env };
  if (file !== undefined) return { file };
  if (required) throw new CliError('InvalidArgument', `--${flag}-env VAR or --${flag}-file FILE is required (a PIN is never taken on the command line)`);
  return undefined;
}

/** --module, else the libraryPath of the config's PKCS#11 backend. */
async function modulePath(ctx: CliContext, given: string | undefined): Promise<string> {
  if (given) return given;
  try {
    const { config } = await loadConfig(ctx);
    const options = config.backend.options as { libraryPath?: unknown } | undefined;
    if (config.backend.type === 'pkcs11' && typeof options?.libraryPath === 'string') return options.libraryPath;
  } catch {
    // no usable config: the message below says what to give
  }
  throw new CliError('InvalidArgument', '--module PATH is required (the PKCS#11 library), unless the config is a pkcs11 backend with a libraryPath');
}

async function ceremony(): Promise<typeof import('@olocus/hsm-backend-pkcs11')> {
  try {
    return await import('@olocus/hsm-backend-pkcs11');
  } catch (cause) {
    throw new CliError('BackendNotInstalled', 'the backup KEK ceremony needs @olocus/hsm-backend-pkcs11 (npm install @olocus/hsm-backend-pkcs11)', { cause });
  }
}

export async function kekCreate(ctx: CliContext, opts: KekCreateOptions): Promise<void> {
  const soPin = await readCliSecret(sourceOf(opts.soPinEnv, opts.soPinFile, 'so-pin', true)!, 'SO PIN', ctx.env);
  const libraryPath = await modulePath(ctx, opts.module);
  const { createBackupKek } = await ceremony();
  const result = await createBackupKek({ libraryPath, tokenLabel: opts.token, soPin, ...(opts.label ? { label: opts.label } : {}) });
  if (ctx.json) return ctx.printJson({ kek: result });
  ctx.print(`backup KEK '${result.label}' created on token '${opts.token}' (check value ${result.checkValue}); enroll it on each token that exports or restores keys: olocus-hsm backup kek enroll --from ${opts.token} --to TOKEN ...`);
}

export async function kekEnroll(ctx: CliContext, opts: KekEnrollOptions): Promise<void> {
  const fromSo = await readCliSecret(sourceOf(opts.fromSoPinEnv, opts.fromSoPinFile, 'from-so-pin', true)!, 'SO PIN of --from', ctx.env);
  const toSo = await readCliSecret(sourceOf(opts.toSoPinEnv, opts.toSoPinFile, 'to-so-pin', true)!, 'SO PIN of --to', ctx.env);
  const userSource = sourceOf(opts.toPinEnv, opts.toPinFile, 'to-pin', false);
  if (opts.exportOnly && userSource) throw new CliError('InvalidArgument', '--export-only gives the token nothing that may unwrap: it takes no --to-pin');
  if (!opts.exportOnly && !userSource) {
    throw new CliError(
      'InvalidArgument',
      "--to-pin-env VAR (or --to-pin-file) is required to let --to restore keys: the token's user makes the private, unwrap-only half of the KEK. A token that only exports keys: --export-only",
    );
  }
  const userPin = userSource ? await readCliSecret(userSource, 'user PIN of --to', ctx.env) : undefined;
  const libraryPath = await modulePath(ctx, opts.module);
  const { enrollBackupKek } = await ceremony();
  const result = await enrollBackupKek({
    libraryPath,
    from: { tokenLabel: opts.from, soPin: fromSo },
    to: { tokenLabel: opts.to, soPin: toSo, ...(userPin !== undefined ? { userPin } : { unwrap: false }) },
    ...(opts.label ? { label: opts.label } : {}),
  });
  if (ctx.json) return ctx.printJson({ enrolled: result });
  ctx.print(`backup KEK enrolled on token '${opts.to}' from '${opts.from}' (check value ${result.checkValue}; ${opts.exportOnly ? 'export only: nothing on it may unwrap' : 'it may export and restore keys'})`);
}
