import { existsSync } from 'node:fs';
import { algorithmInfo, decodeSignature, encodeSignature, isHsmError, jwsAlgorithm, type HsmKeyHandle, type HsmManager, type KeyAlgorithm, type MessageInput, type SignatureFormat } from '@olocus/hsm-core';
import type { RotationContext } from '@olocus/hsm-rotation';
import { lookupSqliteRegistry, parseVersionKeyId, VERIFYING_STATES } from '@olocus/hsm-rotation/lite';
import { checkOutputPath, decodeBase64, echo, formatBytes, openInput, readInputLimited, SIGNATURE_READ_LIMIT, toBase64, toBase64Url, writeOutput } from '../io.js';
import { CliError, EXIT_NEGATIVE } from '../errors.js';
import { jwsHeader, jwsSigningInput, parseCompactJws, type ParsedJws } from '../jws.js';
import type { KeyTarget } from '../rotation.js';
import { loadConfig, type LoadedConfig } from '../config.js';
import { openManager } from '../manager.js';
import type { CliContext } from '../context.js';

type Encoding = 'binary' | 'base64';
type OutputFormat = 'signature' | 'jws';

/**
 * An attached JWS holds the whole payload (base64url) in the token, so it is built and checked
 * in memory; larger messages use a detached JWS (`--detached`), which streams like a plain signature.
 */
export const ATTACHED_JWS_LIMIT = 64 * 1024 * 1024;

interface SignOptions {
  key: string;
  in: string;
  out: string;
  signatureFormat: SignatureFormat;
  encoding: Encoding;
  format?: OutputFormat;
  detached?: boolean;
}

/**
 * A one-shot `sign` or `verify` makes one signature (two with the audit checkpoint) and exits: a
 * local PKCS#11 module then signs on the calling thread. Sign threads exist to overlap many
 * signatures; starting them, and the hop to them and back, costs more than the signature itself
 * (issue 12). Whatever the config sets explicitly is kept.
 */
export function oneShotBackend(loaded: LoadedConfig): LoadedConfig {
  const backend = loaded.config.backend;
  if (backend.type !== 'pkcs11') return loaded;
  const options = { ...backend.options };
  if (options['signThreads'] === undefined) options['signThreads'] = 0;
  if (options['dispatch'] === undefined) options['dispatch'] = 'inline';
  return { ...loaded, config: { ...loaded.config, backend: { ...backend, options } } };
}

/**
 * As rotation.ts's withManagerAndRegistry, with the backend tuned for one operation: the
 * registry is opened only when it can hold `keyName` (a SQLite file that does not exist yet holds
 * none and is not created here; one that, read-only, is current and holds no logical key or
 * version of that name is not opened either, so a plain key never loads the rotation package).
 */
async function withOneShot<T>(ctx: CliContext, keyName: string, fn: (manager: HsmManager, rot: RotationContext | undefined) => Promise<T>): Promise<T> {
  const loaded = oneShotBackend(await loadConfig(ctx));
  const manager = await openManager(ctx, loaded);
  try {
    const storage = loaded.rotation.storage;
    const present = storage.kind === 'postgres' || (storage.path !== ':memory:' && existsSync(storage.path));
    if (!present) return await fn(manager, undefined);
    if (storage.kind === 'sqlite' && lookupSqliteRegistry(storage.path, keyName) === 'none') return await fn(manager, undefined);
    const { openRotationFor } = await import('../rotation.js');
    const rot = await openRotationFor(ctx, loaded, manager, { reconcile: false });
    try {
      return await fn(manager, rot);
    } finally {
      await rot.close();
    }
  } finally {
    await manager.close();
  }
}

/** rotation.ts's classifyKey, loaded only when there is a registry to ask. */
async function classify(rot: RotationContext | undefined, name: string): Promise<KeyTarget> {
  return rot ? (await import('../rotation.js')).classifyKey(rot, name) : { kind: 'backend' };
}

/** What signs: a backend key (handle), or a logical key whose Active version signs. */
type Signer = { kind: 'backend'; handle: HsmKeyHandle } | { kind: 'logical'; base: string; name: string; expectKeyId?: string; rot: RotationContext };

async function signerFor(manager: HsmManager, rot: RotationContext | undefined, name: string): Promise<Signer> {
  const target = await classify(rot, name);
  // The key reference (id or backend reference such as a pkcs11: URI) goes to the backend unchanged.
  if (target.kind === 'backend') return { kind: 'backend', handle: await manager.getKey(name) };
  const base = target.kind === 'logical' ? target.baseKeyId : target.version.baseKeyId;
  if (target.kind === 'version' && target.version.state !== 'Active') {
    throw new CliError('PolicyViolation', `--key ${echo(name)} is version ${target.version.version} of logical key "${base}" and is ${target.version.state}: only the Active version signs (use --key ${base})`);
  }
  return { kind: 'logical', base, name, rot: rot!, ...(target.kind === 'version' ? { expectKeyId: target.version.keyId } : {}) };
}

interface Signed {
  raw: Uint8Array;
  algorithm: KeyAlgorithm;
  /** What the user named (a logical key, or the backend key's id). */
  key: string;
  ref: string;
  keyId: string;
  /** Logical keys: the version that signed. */
  logical?: { keyId: string; version: number; signedAt: Date };
}

/**
 * Signs `message` with the signer. For a logical key the registry resolves the Active version
 * (LC-PROTECT); `expectKeyId` (a JWS `kid` written before signing, or a version named by the
 * user) must be the version that signed, or the signature is refused as made by another key.
 */
async function signWithKey(manager: HsmManager, signer: Signer, message: MessageInput, expectKeyId?: string): Promise<Signed> {
  if (signer.kind === 'backend') {
    const h = signer.handle;
    return { raw: await manager.sign(h, message), algorithm: h.algorithm, key: h.id, keyId: h.id, ref: h.ref };
  }
  // Dated by core: the moment the registry confirmed the version Active (issue 18), which
  // `verify --signed-at` always resolves to this version.
  const { signature, version, signedAt } = await manager.signWithLogicalKey(signer.base, message);
  const keyId = typeof version.key === 'string' ? version.key : version.key.id;
  const expected = expectKeyId ?? signer.expectKeyId;
  if (expected !== undefined && keyId !== expected) {
    throw new CliError('Conflict', `${expected} stopped being the Active version of "${signer.base}" while signing (${keyId} is now); sign again`);
  }
  const v = await signer.rot.registry.getKeyVersion(keyId);
  return { raw: signature, algorithm: version.algorithm, key: signer.expectKeyId ? signer.name : signer.base, keyId, ref: v.keyRef, logical: { keyId, version: version.version, signedAt } };
}

/**
 * Core refuses a streamed message it would have to hold whole beyond its limit (Ed25519 cannot
 * be hashed in pieces; several candidate versions read the message twice): say which flag and
 * file, the limit, and what to do instead.
 */
function messageTooLarge(error: unknown, flag: string, name: string, what: 'sign' | 'verify', algorithm?: KeyAlgorithm): unknown {
  const e = error as { name?: string; code?: string; details?: Record<string, unknown> };
  if (e?.name !== 'HsmError' || e.code !== 'InvalidArgument' || e.details?.['field'] !== 'data') return error;
  const limit = typeof e.details['limit'] === 'number' ? formatBytes(e.details['limit']) : 'the limit';
  const advice =
    what === 'sign' || algorithm === 'Ed25519'
      ? 'Ed25519 (PureEdDSA) needs the whole message at once: sign a digest of the file, or use an ECDSA or RSA key, which hash it as it is read'
      : 'checking it against several versions holds it in memory: give --signed-at (the signedAt that sign printed) so that one version streams it';
  return new CliError('InvalidArgument', `${flag} ${echo(name)}: the message is larger than ${limit}, the most that can be held in memory here; ${advice}`, { cause: error });
}

/** The backend id and algorithm that will sign, known before signing (a JWS header names them). */
async function expectedSigner(signer: Signer): Promise<{ keyId: string; algorithm: KeyAlgorithm }> {
  if (signer.kind === 'backend') return { keyId: signer.handle.id, algorithm: signer.handle.algorithm };
  const active = await signer.rot.registry.getActiveKeyUncached(signer.base);
  return { keyId: active.keyId, algorithm: active.algorithm };
}

export async function sign(ctx: CliContext, opts: SignOptions): Promise<void> {
  const format: OutputFormat = opts.format ?? 'signature';
  if (format === 'jws' && (opts.signatureFormat === 'raw' || opts.encoding === 'base64')) {
    throw new CliError('UsageError', '--format jws: a JWS has its own encoding (base64url, ECDSA as r||s); leave out --signature-format and --encoding');
  }
  if (format !== 'jws' && opts.detached) throw new CliError('UsageError', '--detached applies to --format jws');
  // The output is checked before the key is used, so a typo costs no signature and no audit record.
  await checkOutputPath(ctx, '--out', opts.out);
  const attached = format === 'jws' && !opts.detached;
  // An attached JWS embeds the payload: read whole (bounded). Everything else streams.
  const payload = attached ? await readInputLimited(ctx, '--in', opts.in, ATTACHED_JWS_LIMIT, 'message of an attached JWS (use --detached for larger ones)') : undefined;
  const input = payload ? undefined : await openInput(ctx, '--in', opts.in);
  try {
    await withOneShot(ctx, opts.key, async (manager, rot) => {
      const signer = await signerFor(manager, rot, opts.key);
      const signWith = (m: HsmManager, sg: Signer, message: MessageInput, expect?: string): Promise<Signed> =>
        signWithKey(m, sg, message, expect).catch((error: unknown) => {
          throw messageTooLarge(error, '--in', input?.name ?? opts.in, 'sign');
        });
      let data: Uint8Array | string;
      let signed: Signed;
      let shownFormat: string;
      let jws: string | undefined;
      let signature: Uint8Array | undefined;
      if (format === 'jws') {
        const expected = await expectedSigner(signer);
        const header = jwsHeader(expected.algorithm, expected.keyId);
        if (payload) {
          const encodedPayload = toBase64Url(payload);
          signed = await signWith(manager, signer, new Uint8Array(Buffer.from(`${header}.${encodedPayload}`, 'ascii')), expected.keyId);
          jws = `${header}.${encodedPayload}.${toBase64Url(signed.raw)}`;
        } else {
          signed = await signWith(manager, signer, jwsSigningInput(header, input!.chunks), expected.keyId);
          jws = `${header}..${toBase64Url(signed.raw)}`;
        }
        data = jws + '\n';
        shownFormat = `JWS ${jwsAlgorithm(signed.algorithm)}${attached ? '' : ', detached'}`;
      } else {
        signed = await signWith(manager, signer, input!.chunks);
        signature = encodeSignature(signed.algorithm, signed.raw, opts.signatureFormat);
        data = opts.encoding === 'base64' ? toBase64(signature) + '\n' : signature;
        shownFormat = formatOf(signed.algorithm, opts.signatureFormat);
      }
      const bytes = payload ? payload.length : input!.bytesRead();
      const which = signed.logical ? { keyId: signed.logical.keyId, version: signed.logical.version, signedAt: signed.logical.signedAt.toISOString() } : {};
      if (ctx.json) {
        const out = opts.out === '-' ? undefined : await writeOutput(ctx, '--out', opts.out, data);
        const body =
          format === 'jws'
            ? { format: 'jws', detached: !attached, jws, alg: jwsAlgorithm(signed.algorithm), kid: signed.keyId }
            : { signatureFormat: formatOf(signed.algorithm, opts.signatureFormat), encoding: opts.encoding, signature: toBase64(signature!) };
        return ctx.printJson({ key: signed.key, ...which, ref: signed.ref, algorithm: signed.algorithm, ...body, bytes, out });
      }
      await writeOutput(ctx, '--out', opts.out, data);
      if (opts.out !== '-') {
        const by = signed.logical ? `${signed.key} version ${signed.logical.version} (${signed.logical.keyId}, ${signed.algorithm}, ${shownFormat})` : `${signed.key} (${signed.algorithm}, ${shownFormat})`;
        const size = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
        ctx.note(`signed ${bytes} bytes with ${by}: ${format === 'jws' ? `${size}-byte JWS` : `${size}-byte signature`} in ${opts.out}`);
        if (signed.logical) ctx.note(`signedAt ${signed.logical.signedAt.toISOString()} (verify --signed-at ${signed.logical.signedAt.toISOString()} checks it against this version only)`);
      }
    });
  } finally {
    await input?.close();
  }
}

/** The signature form as a person reads it: ECDSA DER or raw, Ed25519 raw, RSA PKCS#1 v1.5 or PSS. */
function formatOf(algorithm: KeyAlgorithm, requested: SignatureFormat): string {
  const info = algorithmInfo(algorithm);
  if (info.family === 'ECDSA') return requested;
  if (info.family === 'EdDSA') return 'raw';
  return info.padding === 'PSS' ? 'PSS, salt 32' : 'PKCS#1 v1.5';
}

interface VerifyOptions {
  key: string;
  in: string;
  signature?: string;
  signatureFormat: SignatureFormat;
  encoding: Encoding;
  signedAt?: string;
  format?: OutputFormat;
}

function parseSignedAt(value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(t)) {
    throw new CliError('InvalidArgument', `--signed-at: "${echo(value)}" is not an ISO 8601 time (e.g. the signedAt that sign printed, 2026-01-31T12:00:00.000Z)`);
  }
  return new Date(t);
}

/** The signature to check, read before any key is used. */
type Evidence = { kind: 'signature'; encoded: Uint8Array } | { kind: 'jws'; jws: ParsedJws; attached: boolean; what: string };

async function readEvidence(ctx: CliContext, opts: VerifyOptions): Promise<Evidence> {
  if (opts.format === 'jws') {
    if (opts.signature === undefined) {
      const text = Buffer.from(await readInputLimited(ctx, '--in', opts.in, ATTACHED_JWS_LIMIT, 'JWS with its payload attached')).toString('latin1');
      const jws = parseCompactJws(text, `--in ${echo(opts.in)}`);
      if (jws.encodedPayload === '') throw new CliError('InvalidArgument', `--in ${echo(opts.in)} is a detached JWS (no payload): give the payload as --in and the JWS as --signature`);
      return { kind: 'jws', jws, attached: true, what: `--in ${echo(opts.in)}` };
    }
    const text = Buffer.from(await readInputLimited(ctx, '--signature', opts.signature, SIGNATURE_READ_LIMIT, 'detached JWS')).toString('latin1');
    const jws = parseCompactJws(text, `--signature ${echo(opts.signature)}`);
    if (jws.encodedPayload !== '') {
      throw new CliError('InvalidArgument', `--signature ${echo(opts.signature)} is a JWS with its payload attached: verify it alone with --format jws --in ${echo(opts.signature)} (no --signature)`);
    }
    return { kind: 'jws', jws, attached: false, what: `--signature ${echo(opts.signature)}` };
  }
  if (opts.signature === undefined) throw new CliError('UsageError', "required option '--signature <file>' not specified (only an attached JWS, --format jws, is verified without it)");
  const file = await readInputLimited(ctx, '--signature', opts.signature, SIGNATURE_READ_LIMIT, 'signature');
  const encoded = opts.encoding === 'base64' ? decodeBase64(Buffer.from(file).toString('latin1'), `--signature ${echo(opts.signature)}`) : file;
  return { kind: 'signature', encoded };
}

/** A key named by --key, as verification sees it. */
interface VerifyTarget {
  key: string;
  algorithm: KeyAlgorithm;
  target: KeyTarget;
  handle?: HsmKeyHandle;
  ref?: string;
  /** The key versions a JWS `kid` may name for this key. */
  kidMatches(kid: string): boolean;
}

async function verifyTarget(manager: HsmManager, rot: RotationContext | undefined, name: string): Promise<VerifyTarget> {
  const target = await classify(rot, name);
  if (target.kind === 'backend') {
    const handle = await manager.getKey(name);
    return { key: handle.id, algorithm: handle.algorithm, target, handle, ref: handle.ref, kidMatches: (kid) => kid === handle.id || kid === handle.ref };
  }
  if (target.kind === 'version') {
    const v = target.version;
    return { key: name, algorithm: v.algorithm, target, ref: v.keyRef, kidMatches: (kid) => kid === v.keyId };
  }
  const algorithm = (await rot!.registry.getLogicalKey(target.baseKeyId)).algorithm;
  return { key: target.baseKeyId, algorithm, target, kidMatches: (kid) => parseVersionKeyId(kid)?.baseKeyId === target.baseKeyId };
}

export async function verify(ctx: CliContext, opts: VerifyOptions): Promise<void> {
  const signedAt = parseSignedAt(opts.signedAt);
  const evidence = await readEvidence(ctx, opts);
  // The message streams (no size limit for a single candidate version); an attached JWS carries it.
  const input = evidence.kind === 'jws' && evidence.attached ? undefined : await openInput(ctx, '--in', opts.in);
  try {
    await withOneShot(ctx, opts.key, async (manager, rot) => {
      const k = await verifyTarget(manager, rot, opts.key);
      const info = algorithmInfo(k.algorithm);
      let reason: string | undefined;
      let raw: Uint8Array | undefined;
      let message: MessageInput | undefined;
      if (evidence.kind === 'jws') {
        const { header } = evidence.jws;
        const expected = jwsAlgorithm(k.algorithm);
        // The header's alg is checked against the key, never used to choose how to verify (alg confusion).
        if (header.alg !== expected) reason = `the JWS header says alg ${echo(header.alg)}, but ${k.key} is ${k.algorithm} (${expected})`;
        else if (header.kid !== undefined && !k.kidMatches(header.kid)) reason = `the JWS header's kid ${echo(header.kid)} is not a version of ${k.key}`;
        raw = evidence.jws.signature;
        message = evidence.attached
          ? new Uint8Array(Buffer.from(`${evidence.jws.encodedHeader}.${evidence.jws.encodedPayload}`, 'ascii'))
          : jwsSigningInput(evidence.jws.encodedHeader, input!.chunks);
      } else {
        try {
          raw = decodeSignature(k.algorithm, evidence.encoded, opts.signatureFormat);
        } catch (error) {
          // A malformed signature is an invalid one (exit 1), with the reason.
          if (!isHsmError(error, 'InvalidSignatureEncoding')) throw error;
          reason = error.message;
        }
        message = input!.chunks;
      }
      if (!reason && raw && raw.length !== info.signatureBytes) {
        reason = `signature is ${raw.length} bytes; ${k.algorithm} signatures are ${info.signatureBytes} bytes${info.family === 'ECDSA' && opts.signatureFormat === 'raw' ? ' (raw r||s)' : ''}`;
      }
      let valid = false;
      let matched: { keyId: string; version: number } | undefined;
      if (!reason && raw && message) {
        const r = await check(ctx, manager, k, message, raw, signedAt).catch((error: unknown) => {
          throw messageTooLarge(error, '--in', input?.name ?? opts.in, 'verify', k.algorithm);
        });
        valid = r.valid;
        matched = r.matched;
        reason = r.reason;
      }
      if (!valid) ctx.exitCode = EXIT_NEGATIVE;
      const which = { ...(matched ? { keyId: matched.keyId, version: matched.version } : {}), ...(signedAt ? { signedAt: signedAt.toISOString() } : {}) };
      const ref = matched && rot ? (await rot.registry.getKeyVersion(matched.keyId)).keyRef : k.ref;
      if (ctx.json) {
        return ctx.printJson({ valid, key: k.key, ...which, ...(ref ? { ref } : {}), algorithm: k.algorithm, ...(evidence.kind === 'jws' ? { format: 'jws', detached: !evidence.attached } : {}), ...(reason ? { reason } : {}) });
      }
      const label = matched ? `${k.key} version ${matched.version}, ${matched.keyId}, ${k.algorithm}` : `${k.key}, ${k.algorithm}`;
      if (valid) ctx.print(`Verified OK (${label}${evidence.kind === 'jws' ? ', JWS' : ''})`);
      else ctx.note(`olocus-hsm: SignatureInvalid: ${reason} (${label})`);
    });
  } finally {
    await input?.close();
  }
}

/** Verifies with the key the user named: a backend key, one version, or a logical key's versions. */
async function check(
  ctx: CliContext,
  manager: HsmManager,
  k: VerifyTarget,
  message: MessageInput,
  raw: Uint8Array,
  signedAt: Date | undefined,
): Promise<{ valid: boolean; matched?: { keyId: string; version: number }; reason?: string }> {
  const t = k.target;
  if (t.kind === 'backend') {
    if (signedAt) ctx.note(`note: --signed-at applies to logical keys; ${echo(k.key)} is a backend key, verified as it is`);
    const valid = await manager.verify(k.handle!, message, raw);
    return valid ? { valid } : { valid, reason: 'the signature does not match the message and key' };
  }
  if (t.kind === 'version') {
    // A version named directly verifies while its state allows (never once revoked or compromised).
    const v = t.version;
    const matched = { keyId: v.keyId, version: v.version };
    if (!(VERIFYING_STATES as readonly string[]).includes(v.state) || v.revokedAt) {
      return { valid: false, matched, reason: `${v.keyId} is ${v.state}${v.revokedAt ? ' (revoked or compromised once)' : ''}: it verifies nothing` };
    }
    const valid = await manager.verify(v.keyId, message, raw);
    return valid ? { valid, matched } : { valid, matched, reason: 'the signature does not match the message and key' };
  }
  // A logical key: with --signed-at, the version Active then (LC-PROCESS); without, every version
  // never compromised or revoked — a signature that verifies under one was made while it was Active.
  let result: Awaited<ReturnType<HsmManager['verifyWithLogicalKeyDetailed']>>;
  try {
    result = await manager.verifyWithLogicalKeyDetailed(t.baseKeyId, message, raw, signedAt);
  } catch (error) {
    if (!isHsmError(error, 'KeyNotFound')) throw error;
    return { valid: false, reason: error.message };
  }
  if (result.valid && result.version) {
    const keyId = typeof result.version.key === 'string' ? result.version.key : result.version.key.id;
    return { valid: true, matched: { keyId, version: result.version.version } };
  }
  return {
    valid: false,
    reason: signedAt
      ? `the signature does not match the message under the version of ${t.baseKeyId} that was Active at ${signedAt.toISOString()}`
      : `the signature does not match the message under any version of ${t.baseKeyId} that may verify (never revoked or compromised; a signature by a compromised version is checked only with --signed-at)`,
  };
}

