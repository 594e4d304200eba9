import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { isHsmError, type HsmBackend } from '@olocus/hsm-core';
import {
  bundleErrorPart,
  createBundle,
  DEFAULT_BACKUP_SIGNER_KEY_ID,
  drillBundle,
  fingerprintOf,
  restoreBundle,
  runScheduledBackup,
  verifyBundle,
  writeFileAtomic,
  type CreateBundleResult,
  type DrillResult,
  type RestoreResult,
  type VerifiedBundle,
} from '@olocus/hsm-backup';
import { CliError, EXIT_NEGATIVE, fileError } from '../errors.js';
import { loadConfig, locateConfig, type LoadedConfig } from '../config.js';
import { auditOf, openManager } from '../manager.js';
import { actorOf, withRotation } from '../rotation.js';
import { checkOutputPath, terminalSafe } from '../io.js';
import { AUDIT_CHECKPOINT_KEY_ID, HEALTH_CANARY_KEY_ID } from '../internal-keys.js';
import { table } from './keys.js';
import type { CliContext } from '../context.js';

/**
 * `backup create|verify|restore|drill` over @olocus/hsm-backup.
 *
 * Which signer a bundle must carry (a valid signature alone proves nothing: anyone can sign a
 * manifest with a key of their own): `--signer sha256:<hex>`; else the fingerprints pinned in
 * `backup-signers.json` beside the config (written by the first `backup create`); else the
 * configured backend's own `olocus.backup-signer` key. After the loss of the installation, the
 * operator gives the fingerprint `backup create` printed (kept with the off-site copies).
 */

const SIGNERS_FILE = 'backup-signers.json';
const FINGERPRINT = /^sha256:[0-9a-f]{64}$/;

interface PinnedSigners {
  signers: Array<{ fingerprint: string; keyId: string; since: string }>;
}

function signersFile(configPath: string): string {
  return join(dirname(configPath), SIGNERS_FILE);
}

async function readPinned(configPath: string): Promise<PinnedSigners> {
  const file = signersFile(configPath);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { signers: [] };
    throw new CliError('IoError', `${file}: cannot read (${(error as NodeJS.ErrnoException).code})`, { cause: error });
  }
  try {
    const parsed = JSON.parse(text) as PinnedSigners;
    if (!Array.isArray(parsed.signers) || parsed.signers.some((s) => typeof s.fingerprint !== 'string' || !FINGERPRINT.test(s.fingerprint))) throw new Error('signers: an array of {fingerprint: "sha256:<hex>"}');
    return parsed;
  } catch (error) {
    throw new CliError('InvalidConfiguration', `${file}: not a backup signer list (${(error as Error).message})`, { cause: error });
  }
}

/** Adds the bundle signer to the installation's pinned signers (what verify and restore trust without --signer). */
export async function pinSigner(configPath: string, signer: { fingerprint: string; keyId: string }): Promise<boolean> {
  const pinned = await readPinned(configPath);
  if (pinned.signers.some((s) => s.fingerprint === signer.fingerprint)) return false;
  pinned.signers.push({ fingerprint: signer.fingerprint, keyId: signer.keyId, since: new Date().toISOString() });
  await writeFileAtomic(signersFile(configPath), JSON.stringify(pinned, null, 2) + '\n', 0o644);
  return true;
}

async function trustedSigners(given: string | undefined, configPaths: string[], backend?: HsmBackend): Promise<string[]> {
  if (given !== undefined) {
    if (!FINGERPRINT.test(given)) throw new CliError('InvalidArgument', `--signer: "${terminalSafe(given.slice(0, 80))}" is not a fingerprint (sha256: and 64 hex digits, as backup create prints)`);
    return [given];
  }
  const found = new Set<string>();
  for (const p of configPaths) for (const s of (await readPinned(p)).signers) found.add(s.fingerprint);
  if (backend) {
    try {
      found.add(fingerprintOf((await backend.getPublicKey(DEFAULT_BACKUP_SIGNER_KEY_ID)).spki));
    } catch (error) {
      if (!isHsmError(error, 'KeyNotFound')) throw error;
    }
  }
  if (found.size === 0) {
    throw new CliError(
      'InvalidArgument',
      `no backup signer is known for this installation (no ${SIGNERS_FILE} beside the config, no ${DEFAULT_BACKUP_SIGNER_KEY_ID} key): give --signer sha256:<hex> as backup create printed it`,
    );
  }
  return [...found];
}

/** A progress line on stderr at most once a second (and at the end), so long runs show life without flooding. */
function progressNote(ctx: CliContext, verb: string): (p: { done: number; total: number }) => void {
  let last = 0;
  return ({ done, total }) => {
    const now = Date.now();
    if (done !== total && now - last < 1000) return;
    last = now;
    ctx.note(`backup: ${verb} ${done}/${total}`);
  };
}

/** The same context reading another config (restore --into, drill --scratch-config); output and exit code stay the caller's. */
function withConfig(ctx: CliContext, config: string): CliContext {
  return Object.create(ctx, { globals: { value: { ...ctx.globals, config } } }) as CliContext;
}

function rawBackend(manager: { backend: HsmBackend }): HsmBackend {
  // The audit wrapper does not carry the optional `backup` capability; the CLI records the
  // backup operations itself.
  return auditOf(manager as never)?.backend ?? manager.backend;
}

function parseKeys(opts: { keys?: string; all?: boolean }): string[] | 'all' {
  if (opts.all && opts.keys !== undefined) throw new CliError('UsageError', 'give --keys or --all, not both');
  if (opts.all) return 'all';
  if (opts.keys === undefined) throw new CliError('UsageError', 'say which keys: --keys a,b (logical key ids or key ids) or --all');
  const ids = opts.keys.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (ids.length === 0) throw new CliError('InvalidArgument', '--keys: no key id given');
  return ids;
}

export async function create(ctx: CliContext, opts: { out: string; keys?: string; all?: boolean; actor?: string }): Promise<void> {
  const keys = parseKeys(opts);
  const out = await checkOutputPath(ctx, '--out', opts.out);
  if (out === '-') throw new CliError('InvalidArgument', '--out: a bundle is written to a file (atomically), not to standard output');
  const actor = actorOf(ctx, opts.actor);
  await withRotation(ctx, async ({ loaded, manager, rot }) => {
    const audit = auditOf(manager);
    const backend = rawBackend(manager);
    const checkpointKey = loaded.audit.enabled ? loaded.audit.checkpoint.keyId : undefined;
    const note = progressNote(ctx, 'exported');
    let result: CreateBundleResult;
    try {
      result = await createBundle(out, {
        backend,
        registry: rot.registry,
        ...(audit ? { audit: audit.log } : {}),
        keys,
        exclude: [AUDIT_CHECKPOINT_KEY_ID, HEALTH_CANARY_KEY_ID, ...(checkpointKey ? [checkpointKey] : [])],
        actor,
        onProgress: (p) => {
          if (p.phase === 'export') note(p);
        },
      });
    } catch (error) {
      await audit?.append({ type: 'admin.action', outcome: 'failure', actor, errorCode: isHsmError(error) ? error.code : 'Internal', details: { action: 'backup.create', file: out } });
      throw error;
    }
    const pinned = await pinSigner(loaded.path, result.signer);
    await audit?.append({
      type: 'admin.action',
      outcome: 'success',
      actor,
      details: {
        action: 'backup.create',
        file: out,
        sha256: result.sha256,
        keys: result.keys.length,
        logicalKeys: result.logicalKeys.length,
        ineligible: result.ineligible.map((i) => i.id).join(',') || null,
        signer: result.signer.fingerprint,
      },
    });
    if (keys !== 'all' && result.ineligible.length > 0) ctx.exitCode = EXIT_NEGATIVE;
    if (ctx.json) return ctx.printJson({ ...result, signerPinned: pinned });
    ctx.print(`backup written: ${out}`);
    ctx.print(`  ${result.keys.length} key(s), ${result.logicalKeys.length} logical key(s) with versions and history, ${result.bytes} bytes, sha256 ${result.sha256}`);
    if (result.audit) ctx.print(`  audit head: record ${result.audit.seq} (${result.audit.hash}), signed checkpoint included`);
    ctx.print(`  signed by ${result.signer.keyId} ${result.signer.fingerprint}${pinned ? ` (pinned in ${signersFile(loaded.path)})` : ''}; keep this fingerprint with the off-site copies: restore --signer needs it after a loss`);
    for (const k of result.keys) if (k.method === 'reference-only' || k.method === 'provider-backup') ctx.print(`  ${k.part}: ${k.method}: kept by the provider (relies on the provider's durability)`);
    for (const i of result.ineligible) ctx.print(`  cannot back up ${i.id}: ${i.reason}`);
    for (const n of result.notes) ctx.note(`backup: note: ${n}`);
  });
}

/** Opens the installation (audit log, backend) if there is one; verify works without it when --signer is given. */
async function withOptionalInstallation<T>(ctx: CliContext, fn: (inst: { loaded: LoadedConfig; backend: HsmBackend; append: (details: Record<string, string | number | boolean | null>, ok: boolean, actor?: string) => Promise<void> } | undefined) => Promise<T>): Promise<T> {
  let loaded: LoadedConfig;
  try {
    loaded = await loadConfig(ctx);
  } catch (error) {
    if ((error as CliError)?.code === 'ConfigNotFound') return fn(undefined);
    throw error;
  }
  const manager = await openManager(ctx, loaded);
  try {
    const audit = auditOf(manager);
    return await fn({
      loaded,
      backend: rawBackend(manager),
      append: async (details, ok, actor) => {
        await audit?.append({ type: 'admin.action', outcome: ok ? 'success' : 'failure', ...(actor ? { actor } : {}), details });
      },
    });
  } finally {
    await manager.close();
  }
}

function summary(v: VerifiedBundle): Record<string, unknown> {
  return {
    ok: true,
    format: v.manifest.format,
    createdAt: v.manifest.createdAt,
    createdBy: v.manifest.createdBy,
    source: v.manifest.source,
    signer: v.manifest.signer.fingerprint,
    sha256: v.sha256,
    bytes: v.bytes,
    keys: v.keys.map((k) => ({ id: k.id, baseKeyId: k.baseKeyId, version: k.version, method: k.method, algorithm: k.algorithm, fingerprint: k.fingerprint })),
    logicalKeys: v.registry.map((r) => ({ baseKeyId: r.baseKeyId, versions: r.versions.map((x) => ({ version: x['version'], state: x['state'] })) })),
    ineligible: v.manifest.ineligible,
    audit: v.audit ? { logName: v.audit.logName, seq: v.audit.head.seq, hash: v.audit.head.hash, checkpointKey: v.audit.checkpointFingerprint } : undefined,
  };
}

/** The bundle argument names a readable file (a missing one is an error, not an invalid bundle). */
async function bundleArgument(ctx: CliContext, given: string): Promise<string> {
  const file = resolve(ctx.cwd, given);
  const { stat } = await import('node:fs/promises');
  const info = await stat(file).catch((cause: unknown) => {
    throw fileError('FILE', file, cause);
  });
  if (info.isDirectory()) throw new CliError('InvalidArgument', `FILE: ${file} is a directory, not a backup bundle`);
  return file;
}

export async function verify(ctx: CliContext, opts: { file: string; signer?: string }): Promise<void> {
  const file = await bundleArgument(ctx, opts.file);
  await withOptionalInstallation(ctx, async (inst) => {
    if (!inst && opts.signer === undefined) {
      throw new CliError('ConfigNotFound', 'no installation config found to learn the backup signer from: give --signer sha256:<hex> (as backup create printed it), or --config');
    }
    const trusted = await trustedSigners(opts.signer, inst ? [inst.loaded.path] : [], inst?.backend);
    let verified: VerifiedBundle;
    try {
      verified = await verifyBundle(file, { trustedSigners: trusted });
    } catch (error) {
      const part = bundleErrorPart(error);
      if (!part || !isHsmError(error)) throw error;
      await inst?.append({ action: 'backup.verify', file, part, result: 'invalid' }, false);
      ctx.exitCode = EXIT_NEGATIVE;
      if (ctx.json) return ctx.printJson({ ok: false, part, code: error.code, message: error.message });
      ctx.print(`INVALID: ${error.message}`);
      return;
    }
    await inst?.append({ action: 'backup.verify', file, sha256: verified.sha256, result: 'valid', keys: verified.keys.length }, true);
    if (ctx.json) return ctx.printJson(summary(verified));
    ctx.print(`valid: ${file}`);
    ctx.print(`  ${verified.manifest.format}, created ${verified.manifest.createdAt} by ${terminalSafe(verified.manifest.createdBy)} from ${verified.manifest.source.backend} (${verified.manifest.source.instanceId})`);
    ctx.print(`  signer ${verified.manifest.signer.keyId} ${verified.manifest.signer.fingerprint}`);
    ctx.print(`  ${verified.keys.length} key(s), ${verified.registry.length} logical key(s)${verified.audit ? `, audit head at record ${verified.audit.head.seq}` : ''}`);
    for (const i of verified.manifest.ineligible) ctx.print(`  not in the bundle: ${i.id}: ${i.reason}`);
  });
}

export async function restore(ctx: CliContext, opts: { file: string; into: string; dryRun?: boolean; signer?: string; actor?: string }): Promise<void> {
  const file = await bundleArgument(ctx, opts.file);
  const actor = actorOf(ctx, opts.actor);
  const target = withConfig(ctx, opts.into);
  await withRotation(target, async ({ loaded, manager, rot }) => {
    const audit = auditOf(manager);
    const backend = rawBackend(manager);
    // the installation being restored into, and the one the command runs from (--config or ./.olocus), when they pin signers
    const configs = [loaded.path, locateConfig(ctx).path];
    const trusted = await trustedSigners(opts.signer, configs, backend);
    const note = progressNote(ctx, 'restored');
    let result: RestoreResult;
    try {
      result = await restoreBundle(file, {
        trustedSigners: trusted,
        backend,
        registry: rot.registry,
        dryRun: opts.dryRun === true,
        onProgress: (p) => {
          if (p.phase === 'import') note(p);
        },
      });
    } catch (error) {
      await audit?.append({ type: 'admin.action', outcome: 'failure', actor, errorCode: isHsmError(error) ? error.code : 'Internal', details: { action: 'backup.restore', file, part: bundleErrorPart(error) ?? null, dryRun: opts.dryRun === true } });
      throw error;
    }
    if (!result.dryRun) {
      for (const k of result.keys.filter((x) => x.action === 'imported')) {
        await audit?.append({ type: 'key.import', outcome: 'success', actor, keyId: k.id, ...(k.baseKeyId ? { baseKeyId: k.baseKeyId } : {}), ...(k.version ? { keyVersion: k.version } : {}), details: { from: 'backup', method: k.method, state: k.state ?? null, fingerprint: k.fingerprint } });
      }
    }
    await audit?.append({
      type: 'admin.action',
      outcome: 'success',
      actor,
      details: {
        action: 'backup.restore',
        file,
        sha256: result.bundle.sha256,
        dryRun: result.dryRun,
        imported: result.keys.filter((k) => k.action === 'imported').length,
        // the lost installation's audit chain position, so the new log links to the old one
        sourceAuditSeq: result.bundle.audit?.seq ?? null,
        sourceAuditHash: result.bundle.audit?.hash ?? null,
      },
    });
    rot.registry.invalidate();
    // the restored installation trusts the signer of the bundle it was restored from (older bundles verify there too)
    if (!result.dryRun) await pinSigner(loaded.path, { fingerprint: result.bundle.signer, keyId: result.bundle.signerKeyId });
    if (ctx.json) return ctx.printJson(result);
    ctx.print(`${result.dryRun ? 'dry run: would restore' : 'restored'} ${file} into ${loaded.path}`);
    ctx.print(
      table(
        ['KEY', 'VERSION', 'STATE', 'METHOD', 'ACTION'],
        result.keys.map((k) => [k.baseKeyId ?? k.id, k.version !== undefined ? `v${k.version}` : '-', k.state ?? '-', k.method, k.action === 'kept-by-provider' ? 'kept by the provider' : k.action]),
      ),
    );
    for (const r of result.registry) ctx.print(`registry ${r.baseKeyId}: ${r.action} (${r.versions.map((v) => `v${v.version} ${v.state}`).join(', ')})`);
    for (const i of result.ineligible) ctx.print(`not in the bundle: ${i.id}: ${i.reason}`);
  });
}

/** A scratch backend for the drill: the given config's, or for a software installation the same store settings in a temporary folder. */
async function openScratch(ctx: CliContext, opts: { scratchConfig?: string }, installation: LoadedConfig | undefined): Promise<{ backend: HsmBackend; close(): Promise<void> }> {
  if (opts.scratchConfig !== undefined) {
    const scratchCtx = withConfig(ctx, opts.scratchConfig);
    const loaded = await loadConfig(scratchCtx);
    const manager = await openManager(scratchCtx, { path: loaded.path, config: loaded.config });
    return { backend: manager.backend, close: () => manager.close() };
  }
  if (!installation || installation.config.backend.type !== 'software') {
    throw new CliError('InvalidArgument', `backup drill: a ${installation?.config.backend.type ?? 'non-software'} installation needs --scratch-config CONFIG (a scratch backend that can import the bundle's keys, e.g. a scratch SoftHSM token holding the backup KEK)`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'olocus-drill-'));
  const config = { ...installation.config, backend: { ...installation.config.backend, options: { ...installation.config.backend.options, directory: join(dir, 'keys') } } };
  try {
    const manager = await openManager(ctx, { path: installation.path, config }, { create: true });
    return {
      backend: manager.backend,
      close: async () => {
        try {
          await manager.close();
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

export async function drill(ctx: CliContext, opts: { file: string; scratchConfig?: string; signer?: string; actor?: string }): Promise<void> {
  const file = await bundleArgument(ctx, opts.file);
  const actor = actorOf(ctx, opts.actor);
  await withOptionalInstallation(ctx, async (inst) => {
    if (!inst && opts.signer === undefined) throw new CliError('ConfigNotFound', 'no installation config found to learn the backup signer from: give --signer sha256:<hex>, or --config');
    const trusted = await trustedSigners(opts.signer, inst ? [inst.loaded.path] : [], inst?.backend);
    const scratch = await openScratch(ctx, opts, inst?.loaded);
    let result: DrillResult;
    try {
      result = await drillBundle(file, { trustedSigners: trusted, scratch: scratch.backend, onProgress: progressNote(ctx, 'drilled') });
    } catch (error) {
      await inst?.append({ action: 'backup.drill', file, part: bundleErrorPart(error) ?? null, result: 'error' }, false, actor);
      throw error;
    } finally {
      await scratch.close();
    }
    const failed = result.rows.filter((r) => r.result === 'failed').length;
    await inst?.append({ action: 'backup.drill', file, sha256: result.bundle.sha256, result: result.ok ? 'pass' : 'fail', keys: result.rows.length, failed }, result.ok, actor);
    if (!result.ok) ctx.exitCode = EXIT_NEGATIVE;
    if (ctx.json) return ctx.printJson(result);
    ctx.print(table(['KEY', 'VERSION', 'RESULT', 'REASON'], result.rows.map((r) => [r.key.replace(/^key /, '').replace(/ v\d+$/, ''), r.version !== undefined ? `v${r.version}` : '-', r.result, r.reason])));
    const passed = result.rows.filter((r) => r.result === 'ok').length;
    const other = result.rows.length - passed - failed;
    ctx.print(
      result.ok
        ? `drill passed: ${passed} key(s) restored, signed and verified with their original public keys${other ? `; ${other} not restorable from this bundle (listed above)` : ''}`
        : `drill FAILED: ${failed} key(s) did not restore to the original key; ${passed} passed`,
    );
  });
}

function durationOf(flag: string, value: string, parse: (v: string) => number | undefined): number {
  const ms = parse(value);
  if (ms === undefined || !Number.isFinite(ms) || ms <= 0) throw new CliError('InvalidArgument', `${flag}: expected a duration such as 24h, 7d, 90m, got "${terminalSafe(value.slice(0, 40))}"`);
  return ms;
}

/** `backup schedule`: one run of the scheduled backup (see @olocus/hsm-backup runScheduledBackup). */
export async function schedule(ctx: CliContext, opts: { dir: string; every: string; keep: string; maxAge?: string; keys?: string; actor?: string }): Promise<void> {
  const { parseDuration } = await import('@olocus/hsm-rotation');
  const everyMs = durationOf('--every', opts.every, parseDuration);
  const maxAgeMs = opts.maxAge !== undefined ? durationOf('--max-age', opts.maxAge, parseDuration) : Math.round(everyMs * 1.5);
  if (!/^[1-9]\d{0,3}$/.test(opts.keep)) throw new CliError('InvalidArgument', `--keep: a number of bundles from 1 to 9999, got "${terminalSafe(opts.keep.slice(0, 40))}"`);
  const keys = opts.keys !== undefined ? parseKeys({ keys: opts.keys }) : 'all';
  const dir = resolve(ctx.cwd, opts.dir);
  const { stat } = await import('node:fs/promises');
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new CliError('FileNotFound', `--dir: ${dir} is not an existing folder; create it first`);
  const actor = actorOf(ctx, opts.actor);
  const { AlertManager, logSink } = await import('@olocus/hsm-monitoring');
  const log = (line: string): void => ctx.note(`olocus-hsm: ${line}`);
  const alerts = new AlertManager({ sinks: [logSink({ warn: log, info: log })], onSinkError: (error) => ctx.note(`olocus-hsm: alert sink failed: ${(error as Error)?.message ?? String(error)}`) });
  await withRotation(ctx, async ({ loaded, manager, rot }) => {
    const audit = auditOf(manager);
    const backend = rawBackend(manager);
    const trusted = await trustedSigners(undefined, [loaded.path], backend).catch(() => [] as string[]);
    const checkpointKey = loaded.audit.enabled ? loaded.audit.checkpoint.keyId : undefined;
    const result = await runScheduledBackup({
      dir,
      everyMs,
      keep: Number(opts.keep),
      maxAgeMs,
      alerts,
      trustedSigners: trusted,
      backend,
      registry: rot.registry,
      ...(audit ? { audit: audit.log } : {}),
      keys,
      exclude: [AUDIT_CHECKPOINT_KEY_ID, HEALTH_CANARY_KEY_ID, ...(checkpointKey ? [checkpointKey] : [])],
      actor,
    });
    if (result.created) await pinSigner(loaded.path, result.created.signer);
    await alerts.flush();
    await audit?.append({
      type: 'admin.action',
      outcome: result.freshness.ok ? 'success' : 'failure',
      actor,
      details: {
        action: 'backup.schedule',
        dir,
        created: result.created?.file ?? null,
        sha256: result.created?.sha256 ?? null,
        removed: result.retention.removed.length,
        fresh: result.freshness.ok,
      },
    });
    if (!result.freshness.ok) ctx.exitCode = EXIT_NEGATIVE;
    if (ctx.json) return ctx.printJson(result);
    ctx.print(result.created ? `backup written: ${result.created.file} (${result.created.keys.length} key(s), ${result.created.bytes} bytes)` : `no backup needed: ${result.skipped}`);
    for (const i of result.created?.ineligible ?? []) ctx.print(`  cannot back up ${i.id}: ${i.reason}`);
    for (const f of result.retention.removed) ctx.print(`removed (retention): ${f}`);
    for (const f of result.retention.invalid) ctx.print(`does not verify (kept as evidence, not counted): ${f}`);
    ctx.print(`${result.freshness.ok ? 'fresh' : 'STALE'}: ${result.freshness.summary}`);
  });
}
