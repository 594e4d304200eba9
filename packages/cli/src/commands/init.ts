import { checkAndWrite, DEV_NOTE, preparePkcs11, prepareSoftware, type InitResult } from '../config.js';
import type { CliContext } from '../context.js';

export interface InitOptions {
  dir: string;
  backend: 'software' | 'pkcs11';
  force?: boolean;
  module?: string;
  tokenLabel?: string;
  slot?: string;
  vendor?: string;
}

export async function init(ctx: CliContext, opts: InitOptions): Promise<void> {
  const force = opts.force === true;
  let result: InitResult;
  if (opts.backend === 'pkcs11') {
    result = await preparePkcs11(ctx, { ...opts, force });
  } else {
    result = await prepareSoftware(ctx, { dir: opts.dir, force });
  }
  // Opens the backend once before writing: a config that cannot work is not written.
  await checkAndWrite(ctx, result);
  if (result.generatedPassphraseFile) ctx.note(DEV_NOTE.replace('%s', result.generatedPassphraseFile));
  if (ctx.json) {
    ctx.printJson({ config: result.path, backend: result.config.backend, passphraseFile: result.generatedPassphraseFile });
    return;
  }
  ctx.print(`wrote ${result.path} (backend ${result.config.backend.type})`);
}
