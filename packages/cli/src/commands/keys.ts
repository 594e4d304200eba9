import { createHash } from 'node:crypto';
import { assertValidKeyId, exportPublicKey, isKeyAlgorithm, KEY_ALGORITHMS, type HsmKeyHandle, type KeyAlgorithm } from '@olocus/hsm-core';
import { CliError } from '../errors.js';
import { toBase64, writeOutput } from '../io.js';
import { withManager } from '../manager.js';
import type { CliContext } from '../context.js';

export function parseAlgorithm(value: string, flag = '--algorithm'): KeyAlgorithm {
  if (isKeyAlgorithm(value)) return value;
  throw new CliError('InvalidArgument', `${flag}: unknown algorithm "${value}"; use one of: ${KEY_ALGORITHMS.join(', ')}`);
}

/** A handle as printed by --json. */
export function handleJson(handle: HsmKeyHandle): Record<string, unknown> {
  return {
    id: handle.id,
    ref: handle.ref,
    algorithm: handle.algorithm,
    usages: handle.usages,
    createdAt: handle.createdAt,
    expiresAt: handle.expiresAt,
    backend: handle.backend,
    metadata: handle.metadata,
  };
}

function spkiFingerprint(spki: Uint8Array): string {
  return 'SHA256:' + createHash('sha256').update(spki).digest('base64').replace(/=+$/, '');
}

export async function create(ctx: CliContext, opts: { id: string; algorithm: string }): Promise<void> {
  const algorithm = parseAlgorithm(opts.algorithm);
  assertValidKeyId(opts.id, '--id');
  await withManager(ctx, async (manager) => {
    const handle = await manager.generateKey({ id: opts.id, algorithm });
    if (ctx.json) return ctx.printJson({ key: handleJson(handle) });
    ctx.print(`created ${handle.id} (${handle.algorithm}) ref ${handle.ref}`);
  });
}

export async function list(ctx: CliContext, opts: { prefix?: string }): Promise<void> {
  await withManager(ctx, async (manager) => {
    const keys: HsmKeyHandle[] = [];
    let cursor: string | undefined;
    do {
      const page = await manager.listKeys({ prefix: opts.prefix, limit: 1000, cursor });
      keys.push(...page.keys);
      cursor = page.nextCursor;
    } while (cursor);
    if (ctx.json) return ctx.printJson({ keys: keys.map(handleJson) });
    if (keys.length === 0) return ctx.print('no keys');
    ctx.print(table(['ID', 'ALGORITHM', 'CREATED', 'REF'], keys.map((k) => [k.id, k.algorithm, new Date(k.createdAt).toISOString(), k.ref])));
  });
}

export async function show(ctx: CliContext, opts: { id: string }): Promise<void> {
  await withManager(ctx, async (manager) => {
    const handle = await manager.getKey(opts.id);
    const pub = await manager.getPublicKey(handle);
    const fingerprint = spkiFingerprint(pub.spki);
    if (ctx.json) return ctx.printJson({ key: { ...handleJson(handle), publicKeyFingerprint: fingerprint } });
    const rows: [string, string][] = [
      ['id', handle.id],
      ['ref', handle.ref],
      ['algorithm', handle.algorithm],
      ['usages', handle.usages.join(', ')],
      ['created', new Date(handle.createdAt).toISOString()],
      ...(handle.expiresAt ? ([['expires', new Date(handle.expiresAt).toISOString()]] as [string, string][]) : []),
      ['backend', handle.backend],
      ['public key', fingerprint],
      ...Object.entries(handle.metadata).map(([k, v]) => [k, v] as [string, string]),
    ];
    const width = Math.max(...rows.map((r) => r[0].length));
    for (const [k, v] of rows) ctx.print(`${k.padEnd(width)}  ${v}`);
  });
}

export async function exportPublic(ctx: CliContext, opts: { id: string; format: 'pem' | 'der' | 'jwk'; out?: string }): Promise<void> {
  await withManager(ctx, async (manager) => {
    const info = await manager.getPublicKey(opts.id);
    let data: Uint8Array | string;
    let jsonValue: unknown;
    if (opts.format === 'der') {
      data = exportPublicKey(info, 'der');
      jsonValue = toBase64(data);
    } else if (opts.format === 'pem') {
      data = exportPublicKey(info, 'pem');
      jsonValue = data;
    } else {
      jsonValue = exportPublicKey(info, 'jwk');
      data = JSON.stringify(jsonValue, null, 2) + '\n';
    }
    if (opts.out !== undefined && opts.out !== '-') {
      const path = await writeOutput(ctx, '--out', opts.out, data);
      if (ctx.json) return ctx.printJson({ id: opts.id, algorithm: info.algorithm, format: opts.format, out: path });
      return ctx.print(`wrote ${opts.format} public key of ${opts.id} to ${path}`);
    }
    if (ctx.json) return ctx.printJson({ id: opts.id, algorithm: info.algorithm, format: opts.format, publicKey: jsonValue });
    await writeOutput(ctx, '--out', '-', data);
  });
}

export async function destroy(ctx: CliContext, opts: { id: string }): Promise<void> {
  await withManager(ctx, async (manager) => {
    await manager.destroyKey(opts.id);
    if (ctx.json) return ctx.printJson({ destroyed: opts.id });
    ctx.print(`destroyed ${opts.id}`);
  });
}

/** A plain text table, columns padded to their widest cell. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}
