import { algorithmInfo, decodeSignature, encodeSignature, isHsmError, type HsmManager, type KeyAlgorithm, type SignatureFormat } from '@olocus/hsm-core';
import { VERIFYING_STATES, type KeyVersion, type RotationContext } from '@olocus/hsm-rotation';
import { decodeBase64, readInput, toBase64, writeOutput } from '../io.js';
import { CliError, EXIT_NEGATIVE } from '../errors.js';
import { classifyKey, withManagerAndRegistry } from '../rotation.js';
import type { CliContext } from '../context.js';

type Encoding = 'binary' | 'base64';

interface SignOptions {
  key: string;
  in: string;
  out: string;
  signatureFormat: SignatureFormat;
  encoding: Encoding;
}

interface Signed {
  raw: Uint8Array;
  algorithm: KeyAlgorithm;
  /** What the user named (a logical key, or the backend key's id). */
  key: string;
  ref: string;
  /** Logical keys: the version that signed. */
  logical?: { keyId: string; version: number; signedAt: Date };
}

async function signWith(manager: HsmManager, rot: RotationContext | undefined, name: string, message: Uint8Array): Promise<Signed> {
  const target = await classifyKey(rot, name);
  if (target.kind === 'backend') {
    // The key reference (id or backend reference such as a pkcs11: URI) goes to the backend unchanged.
    const handle = await manager.getKey(name);
    return { raw: await manager.sign(handle, message), algorithm: handle.algorithm, key: handle.id, ref: handle.ref };
  }
  const base = target.kind === 'logical' ? target.baseKeyId : target.version.baseKeyId;
  if (target.kind === 'version' && target.version.state !== 'Active') {
    throw new CliError('PolicyViolation', `${name} is version ${target.version.version} of logical key "${base}" and is ${target.version.state}: only the Active version signs (use --key ${base})`);
  }
  // Signing by logical key: the registry resolves the Active version (LC-PROTECT: not after its protect-stop date).
  const signedAt = new Date();
  const { signature, version } = await manager.signWithLogicalKey(base, message);
  const keyId = typeof version.key === 'string' ? version.key : version.key.id;
  if (target.kind === 'version' && keyId !== target.version.keyId) {
    throw new CliError('Conflict', `${name} stopped being the Active version of "${base}" while signing; sign again with --key ${base}`);
  }
  const v = await rot!.registry.getKeyVersion(keyId);
  return { raw: signature, algorithm: version.algorithm, key: target.kind === 'logical' ? base : name, ref: v.keyRef, logical: { keyId, version: version.version, signedAt } };
}

export async function sign(ctx: CliContext, opts: SignOptions): Promise<void> {
  const message = await readInput(ctx, '--in', opts.in);
  await withManagerAndRegistry(ctx, async (manager, rot) => {
    const signed = await signWith(manager, rot, opts.key, message);
    const signature = encodeSignature(signed.algorithm, signed.raw, opts.signatureFormat);
    const format = formatOf(signed.algorithm, opts.signatureFormat);
    const data = opts.encoding === 'base64' ? toBase64(signature) + '\n' : signature;
    const which = signed.logical ? { keyId: signed.logical.keyId, version: signed.logical.version, signedAt: signed.logical.signedAt.toISOString() } : {};
    if (ctx.json) {
      const out = opts.out === '-' ? undefined : await writeOutput(ctx, '--out', opts.out, data);
      return ctx.printJson({ key: signed.key, ...which, ref: signed.ref, algorithm: signed.algorithm, signatureFormat: format, encoding: opts.encoding, signature: toBase64(signature), out });
    }
    await writeOutput(ctx, '--out', opts.out, data);
    if (opts.out !== '-') {
      const by = signed.logical ? `${signed.key} version ${signed.logical.version} (${signed.logical.keyId}, ${signed.algorithm}, ${format}) at ${signed.logical.signedAt.toISOString()}` : `${signed.key} (${signed.algorithm}, ${format})`;
      ctx.note(`signed ${message.length} bytes with ${by}: ${signature.length}-byte signature in ${opts.out}`);
    }
  });
}

/** The format a signature is actually in: only ECDSA has a DER form. */
function formatOf(algorithm: KeyAlgorithm, requested: SignatureFormat): string {
  const family = algorithmInfo(algorithm).family;
  if (family === 'ECDSA') return requested;
  return family === 'EdDSA' ? 'raw' : 'pkcs1';
}

interface VerifyOptions {
  key: string;
  in: string;
  signature: string;
  signatureFormat: SignatureFormat;
  encoding: Encoding;
  signedAt?: string;
}

function parseSignedAt(value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(t)) {
    throw new CliError('InvalidArgument', `--signed-at: "${value}" is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)`);
  }
  return new Date(t);
}

/** The key a verification uses, or why there is none (an invalid signature, exit 1). */
interface VerifyKey {
  key: string;
  algorithm: KeyAlgorithm;
  backendKey?: string;
  ref?: string;
  logical?: { keyId?: string; version?: number; signedAt: Date };
  refused?: string;
}

async function verifyKeyFor(ctx: CliContext, manager: HsmManager, rot: RotationContext | undefined, name: string, signedAt: Date | undefined): Promise<VerifyKey> {
  const target = await classifyKey(rot, name);
  if (target.kind === 'backend') {
    if (signedAt) ctx.note(`note: --signed-at applies to logical keys; ${name} is a backend key, verified as it is`);
    const handle = await manager.getKey(name);
    return { key: handle.id, algorithm: handle.algorithm, backendKey: handle.id, ref: handle.ref };
  }
  if (target.kind === 'version') {
    // A version named directly: it verifies while its state allows (never once revoked or compromised).
    const v = target.version;
    const base: VerifyKey = { key: name, algorithm: v.algorithm, ref: v.keyRef, logical: { keyId: v.keyId, version: v.version, signedAt: signedAt ?? new Date() } };
    if (!(VERIFYING_STATES as readonly string[]).includes(v.state) || v.revokedAt) return { ...base, refused: `${v.keyId} is ${v.state}${v.revokedAt ? ' (revoked or compromised once)' : ''}: it verifies nothing` };
    return { ...base, backendKey: v.keyId };
  }
  // A logical key: the version that was Active at the signature time (LC-PROCESS).
  const at = signedAt ?? new Date();
  let v: KeyVersion;
  try {
    v = await rot!.registry.getKeyForVerification(target.baseKeyId, at);
  } catch (error) {
    if (!isHsmError(error, 'KeyNotFound')) throw error;
    const algorithm = (await rot!.registry.getLogicalKey(target.baseKeyId)).algorithm;
    return { key: target.baseKeyId, algorithm, logical: { signedAt: at }, refused: error.message };
  }
  return { key: target.baseKeyId, algorithm: v.algorithm, backendKey: v.keyId, ref: v.keyRef, logical: { keyId: v.keyId, version: v.version, signedAt: at } };
}

export async function verify(ctx: CliContext, opts: VerifyOptions): Promise<void> {
  const signedAt = parseSignedAt(opts.signedAt);
  const message = await readInput(ctx, '--in', opts.in);
  const file = await readInput(ctx, '--signature', opts.signature);
  const encoded = opts.encoding === 'base64' ? decodeBase64(Buffer.from(file).toString('latin1'), `--signature ${opts.signature}`) : file;
  await withManagerAndRegistry(ctx, async (manager, rot) => {
    const k = await verifyKeyFor(ctx, manager, rot, opts.key, signedAt);
    const info = algorithmInfo(k.algorithm);
    let reason: string | undefined = k.refused;
    let valid = false;
    let raw: Uint8Array | undefined;
    if (k.backendKey) {
      try {
        raw = decodeSignature(k.algorithm, encoded, opts.signatureFormat);
      } catch (error) {
        // A malformed signature is an invalid one (exit 1), with the reason.
        if (!isHsmError(error, 'InvalidSignatureEncoding')) throw error;
        reason = error.message;
      }
    }
    if (raw && k.backendKey) {
      if (raw.length !== info.signatureBytes) {
        reason = `signature is ${raw.length} bytes; ${k.algorithm} signatures are ${info.signatureBytes} bytes${info.family === 'ECDSA' && opts.signatureFormat === 'raw' ? ' (raw r||s)' : ''}`;
      } else {
        valid = await manager.verify(k.backendKey, message, raw);
        if (!valid) {
          reason = 'the signature does not match the message and key';
          if (k.logical?.version !== undefined && k.logical.version > 1 && !signedAt) {
            reason += ` (checked against version ${k.logical.version}, Active now; a signature made before a rotation needs --signed-at TIME)`;
          }
        }
      }
    }
    if (!valid) ctx.exitCode = EXIT_NEGATIVE;
    const which = k.logical ? { ...(k.logical.keyId ? { keyId: k.logical.keyId, version: k.logical.version } : {}), signedAt: k.logical.signedAt.toISOString() } : {};
    if (ctx.json) {
      return ctx.printJson({ valid, key: k.key, ...which, ...(k.ref ? { ref: k.ref } : {}), algorithm: k.algorithm, ...(reason ? { reason } : {}) });
    }
    const label = k.logical?.keyId ? `${k.key} version ${k.logical.version}, ${k.logical.keyId}, ${k.algorithm}` : `${k.key}, ${k.algorithm}`;
    if (valid) ctx.print(`Verified OK (${label})`);
    else ctx.note(`olocus-hsm: SignatureInvalid: ${reason} (${label})`);
  });
}
