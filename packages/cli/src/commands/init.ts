import { CliError } from '../errors.js';
import { checkAndWrite, preparePkcs11, prepareSoftware, type InitResult } from '../store.js';
import type { CliContext } from '../context.js';

export interface InitOptions {
  dir: string;
  backend?: 'software' | 'pkcs11';
  force?: boolean;
  module?: string;
  tokenLabel?: string;
  slot?: string;
  vendor?: string;
}

/** The flags that only a PKCS#11 config uses, as the user typed them. */
function pkcs11Flags(opts: InitOptions): string[] {
  const flags: string[] = [];
  if (opts.module !== undefined) flags.push('--module');
  if (opts.tokenLabel !== undefined) flags.push('--token-label');
  if (opts.slot !== undefined) flags.push('--slot');
  if (opts.vendor !== undefined) flags.push('--vendor');
  return flags;
}

/**
 * The backend `init` sets up. PKCS#11 flags without --backend mean PKCS#11 (writing a software
 * config and dropping them would leave the operator with the wrong store); with an explicit
 * `--backend software` they are refused by name.
 */
export function initBackend(opts: InitOptions): 'software' | 'pkcs11' {
  const flags = pkcs11Flags(opts);
  // --backend has no commander default, so it is set only when typed
  const explicit = opts.backend;
  if (explicit === 'software' && flags.length > 0) {
    throw new CliError('InvalidArgument', `${flags.join(', ')} ${flags.length === 1 ? 'applies' : 'apply'} to --backend pkcs11, not to --backend software; drop ${flags.length === 1 ? 'it' : 'them'} or use --backend pkcs11`);
  }
  if (explicit) return explicit;
  return flags.length > 0 ? 'pkcs11' : 'software';
}

export async function init(ctx: CliContext, opts: InitOptions): Promise<void> {
  const force = opts.force === true;
  const backend = initBackend(opts);
  let result: InitResult;
  if (backend === 'pkcs11') {
    if (opts.backend !== 'pkcs11') ctx.note(`note: ${pkcs11Flags(opts).join(', ')} given: writing a PKCS#11 config (--backend pkcs11)`);
    result = await preparePkcs11(ctx, { ...opts, force });
  } else {
    if (ctx.globals.pinFile !== undefined) throw new CliError('InvalidArgument', '--pin-file applies to --backend pkcs11; the software backend takes OLOCUS_HSM_PASSPHRASE or --passphrase-file PATH');
    result = await prepareSoftware(ctx, { dir: opts.dir, force });
  }
  // Opens the backend once before writing: a config that cannot work is not written.
  await checkAndWrite(ctx, result);
  if (result.env) {
    ctx.note(
      'note: the config reads the passphrase from OLOCUS_HSM_PASSPHRASE (it is not stored anywhere): set that variable or give --passphrase-file for later commands; on a terminal they ask for it',
    );
  }
  if (ctx.json) {
    ctx.printJson({ config: result.path, backend: result.config.backend });
    return;
  }
  ctx.print(`wrote ${result.path} (backend ${result.config.backend.type}${result.passphraseFrom ? `, passphrase from ${result.passphraseFrom}` : ''})`);
}
