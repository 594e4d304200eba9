import { algorithmInfo, decodeSignature, encodeSignature, isHsmError, type HsmKeyHandle, type SignatureFormat } from '@olocus/hsm-core';
import { decodeBase64, readInput, toBase64, writeOutput } from '../io.js';
import { withManager } from '../manager.js';
import { EXIT_NEGATIVE } from '../errors.js';
import type { CliContext } from '../context.js';

type Encoding = 'binary' | 'base64';

interface SignOptions {
  key: string;
  in: string;
  out: string;
  signatureFormat: SignatureFormat;
  encoding: Encoding;
}

export async function sign(ctx: CliContext, opts: SignOptions): Promise<void> {
  const message = await readInput(ctx, '--in', opts.in);
  await withManager(ctx, async (manager) => {
    // The key reference (id or backend reference such as a pkcs11: URI) goes to the backend unchanged.
    const handle = await manager.getKey(opts.key);
    const raw = await manager.sign(handle, message);
    const signature = encodeSignature(handle.algorithm, raw, opts.signatureFormat);
    const format = formatOf(handle, opts.signatureFormat);
    const data = opts.encoding === 'base64' ? toBase64(signature) + '\n' : signature;
    if (ctx.json) {
      const out = opts.out === '-' ? undefined : await writeOutput(ctx, '--out', opts.out, data);
      return ctx.printJson({ key: handle.id, ref: handle.ref, algorithm: handle.algorithm, signatureFormat: format, encoding: opts.encoding, signature: toBase64(signature), out });
    }
    await writeOutput(ctx, '--out', opts.out, data);
    if (opts.out !== '-') ctx.note(`signed ${message.length} bytes with ${handle.id} (${handle.algorithm}, ${format}): ${signature.length}-byte signature in ${opts.out}`);
  });
}

/** The format a signature is actually in: only ECDSA has a DER form. */
function formatOf(handle: HsmKeyHandle, requested: SignatureFormat): string {
  const family = algorithmInfo(handle.algorithm).family;
  if (family === 'ECDSA') return requested;
  return family === 'EdDSA' ? 'raw' : 'pkcs1';
}

interface VerifyOptions {
  key: string;
  in: string;
  signature: string;
  signatureFormat: SignatureFormat;
  encoding: Encoding;
}

export async function verify(ctx: CliContext, opts: VerifyOptions): Promise<void> {
  const message = await readInput(ctx, '--in', opts.in);
  const file = await readInput(ctx, '--signature', opts.signature);
  const encoded = opts.encoding === 'base64' ? decodeBase64(Buffer.from(file).toString('latin1'), `--signature ${opts.signature}`) : file;
  await withManager(ctx, async (manager) => {
    const handle = await manager.getKey(opts.key);
    const info = algorithmInfo(handle.algorithm);
    let reason: string | undefined;
    let valid = false;
    let raw: Uint8Array | undefined;
    try {
      raw = decodeSignature(handle.algorithm, encoded, opts.signatureFormat);
    } catch (error) {
      // A malformed signature is an invalid one (exit 1), with the reason.
      if (!isHsmError(error, 'InvalidSignatureEncoding')) throw error;
      reason = error.message;
    }
    if (raw) {
      if (raw.length !== info.signatureBytes) {
        reason = `signature is ${raw.length} bytes; ${handle.algorithm} signatures are ${info.signatureBytes} bytes${info.family === 'ECDSA' && opts.signatureFormat === 'raw' ? ' (raw r||s)' : ''}`;
      } else {
        valid = await manager.verify(handle, message, raw);
        if (!valid) reason = 'the signature does not match the message and key';
      }
    }
    if (!valid) ctx.exitCode = EXIT_NEGATIVE;
    if (ctx.json) {
      return ctx.printJson({ valid, key: handle.id, ref: handle.ref, algorithm: handle.algorithm, ...(reason ? { reason } : {}) });
    }
    if (valid) ctx.print(`Verified OK (${handle.id}, ${handle.algorithm})`);
    else ctx.note(`olocus-hsm: SignatureInvalid: ${reason} (${handle.id}, ${handle.algorithm})`);
  });
}
