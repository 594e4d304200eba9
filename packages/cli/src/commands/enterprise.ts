import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { isHsmError } from '@olocus/hsm-core';
import type { AuditLog } from '@olocus/hsm-compliance';
import type { StorageConfigInput } from '@olocus/hsm-rotation';
import {
  CedarAuthorizer,
  KEY_OPERATIONS,
  loadPolicies,
  openEnterprise,
  parseKeyPolicy,
  enterpriseConfigSchema,
  type AuthorizationRequest,
  type CallContext,
  type DualControlOperation,
  type EnterpriseContext,
  type KeyOperation,
  type MemberStatus,
  type PolicyStore,
} from '@olocus/hsm-enterprise';
import { parseWithSchema } from '@olocus/hsm-core';
import { actorOf } from '../actor.js';
import { loadConfig, type LoadedConfig } from '../config.js';
import type { CliContext } from '../context.js';
import { CliError, fileError, rememberConnectionString } from '../errors.js';
import { checkOutputPath, readInputLimited, toBase64, writeOutput } from '../io.js';
import { readCliSecret } from '../secrets.js';

/**
 * `app create|sign|show`, `policy validate|test`, `pool status`, `approve`: the enterprise key
 * manager (@olocus/hsm-enterprise) from the command line. Each function takes the parsed options;
 * the command table wires them. The `enterprise` section of the config describes the pool, the
 * policy directories and the state file; the registry and the audit log are the config's own.
 */

/** What a command runs against; injectable so tests and other front ends can supply their own. */
export interface EnterpriseScope {
  enterprise: EnterpriseContext;
  actor: string;
  /** The installation's audit log (its head and a signed checkpoint go into a backup bundle). */
  audit?: AuditLog;
  /** The config file (backup signers are pinned beside it). */
  configPath?: string;
}

export type EnterpriseOpener = (ctx: CliContext) => Promise<EnterpriseScope & { close(): Promise<void> }>;

const MAX_SIGN_INPUT = 64 * 1024 * 1024;

async function rotationStorage(ctx: CliContext, loaded: LoadedConfig): Promise<StorageConfigInput> {
  const storage = loaded.rotation.storage;
  if (storage.kind === 'sqlite') return storage;
  const connectionString = await readCliSecret(storage.connectionString, 'rotation.storage.connectionString', ctx.env);
  rememberConnectionString(connectionString);
  return { ...storage, connectionString };
}

/** Opens the enterprise manager from the config file (pool, registry, audit log, policies, state). */
export const openFromConfig: EnterpriseOpener = async (ctx) => {
  const loaded = await loadConfig(ctx);
  const section = loaded.config.enterprise;
  if (section === undefined) {
    throw new CliError('InvalidConfiguration', `${loaded.path} has no "enterprise" section; add one with "pool": {"members": [{"name", "backend": {"type", "options"}, "weight", "zone", "tags"}]} (see the @olocus/hsm-enterprise README)`);
  }
  const actor = actorOf(ctx);
  if (!loaded.audit.enabled) {
    throw new CliError('InvalidConfiguration', `the enterprise commands record every decision in the audit log, which ${loaded.path} turns off ("audit": {"enabled": false}); enable it`);
  }
  // The installation itself is opened (not only its audit log): the log's checkpoints are signed
  // with the installation's checkpoint key, which a backup bundle's audit head needs.
  const { openManager } = await import('../manager.js');
  const installation = await openManager(ctx, loaded);
  const audit = installation.audit;
  if (!audit) {
    await installation.close();
    throw new CliError('InvalidConfiguration', `the audit log of ${loaded.path} did not open`);
  }
  try {
    const enterprise = await openEnterprise({
      config: section,
      baseDir: dirname(loaded.path),
      storage: await rotationStorage(ctx, loaded),
      ...(loaded.rotation.policy ? { rotationPolicy: loaded.rotation.policy } : {}),
      audit: { append: (event) => audit.log.append(event) },
    });
    return {
      enterprise,
      actor,
      audit: audit.log,
      configPath: loaded.path,
      async close() {
        try {
          await enterprise.close();
        } finally {
          await installation.close();
        }
      },
    };
  } catch (error) {
    await installation.close();
    throw error;
  }
};

async function withEnterprise<T>(ctx: CliContext, open: EnterpriseOpener, fn: (scope: EnterpriseScope) => Promise<T>): Promise<T> {
  const scope = await open(ctx);
  try {
    return await fn(scope);
  } finally {
    await scope.close();
  }
}

/** `KEY=VALUE` pairs (repeatable `--context`, `--tag`) into an object; refuses a malformed pair by flag. */
export function parsePairs(flag: string, pairs: readonly string[] = []): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CliError('UsageError', `${flag} ${JSON.stringify(pair.slice(0, 64))} must be KEY=VALUE`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

const CONTEXT_KEYS = ['purpose', 'classification', 'ticketId', 'sourceAddress', 'approvals'] as const;

/**
 * The call's OperationContext from `--context` pairs. `principal` names who asks:
 * `app:ID`, `caller:ID`; `groups` and `roles` are comma-separated.
 */
export function parseCallContext(pairs: readonly string[] = [], defaultPrincipal: string): CallContext {
  const raw = parsePairs('--context', pairs);
  const principal = parsePrincipal(raw.principal ?? defaultPrincipal, raw.groups, raw.roles);
  const context: CallContext = { principal };
  for (const [k, v] of Object.entries(raw)) {
    if (k === 'principal' || k === 'groups' || k === 'roles') continue;
    if (!(CONTEXT_KEYS as readonly string[]).includes(k)) throw new CliError('UsageError', `--context ${k}: unknown key; known: principal, groups, roles, ${CONTEXT_KEYS.join(', ')}`);
    if (k === 'approvals') {
      if (!/^\d{1,3}$/.test(v)) throw new CliError('UsageError', '--context approvals must be a whole number');
      context.approvals = Number(v);
    } else {
      (context as unknown as Record<string, string>)[k] = v;
    }
  }
  return context;
}

export function parsePrincipal(text: string, groups?: string, roles?: string): AuthorizationRequest['principal'] {
  const m = /^(app|application|caller):(.+)$/i.exec(text);
  if (!m) throw new CliError('UsageError', `principal ${JSON.stringify(text.slice(0, 64))} must be app:ID or caller:ID`);
  const list = (s?: string) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : []);
  return m[1]!.toLowerCase() === 'caller' ? { type: 'Caller', id: m[2]!, groups: list(groups), roles: list(roles) } : { type: 'Application', id: m[2]!, groups: list(groups) };
}

async function readText(flag: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    throw fileError(flag, path, cause);
  }
}

// ---------------------------------------------------------------- app

export async function appCreate(ctx: CliContext, opts: { app: string; policy: string; tag?: string[] }, open: EnterpriseOpener = openFromConfig): Promise<void> {
  const text = await readText('--policy', opts.policy);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new CliError('InvalidArgument', `--policy ${opts.policy} is not JSON (a key policy is a JSON object; see policy validate)`);
  }
  const tags = parsePairs('--tag', opts.tag);
  await withEnterprise(ctx, open, async (scope) => {
    const { enterprise, actor } = scope;
    const app = await enterprise.manager.generateApplicationKey(opts.app, raw, { actor, tags });
    await enterprise.saveState();
    const active = await enterprise.rotation.registry.getActiveKey(opts.app);
    const backup = app.policy.backupRequired ? await initialBackup(ctx, scope, opts.app) : undefined;
    if (ctx.json) return ctx.printJson({ app: opts.app, keyId: active.keyId, version: active.version, algorithm: app.policy.algorithm, members: app.members, tags: app.tags, actor, ...(backup ? { backup } : {}) });
    ctx.print(`created ${opts.app}: ${active.keyId} (${app.policy.algorithm}) on ${app.members.join(', ')}; actor ${actor}`);
    if (backup && 'file' in backup) ctx.print(`  backed up as its policy requires: ${backup.file} (sha256 ${backup.sha256})`);
    else if (backup) ctx.note(`olocus-hsm: ${opts.app}'s policy requires a backup, not made yet: ${backup.pending}`);
  });
}

export async function appSign(ctx: CliContext, opts: { app: string; in: string; out: string; context?: string[] }, open: EnterpriseOpener = openFromConfig): Promise<void> {
  const out = await checkOutputPath(ctx, '--out', opts.out);
  const data = await readInputLimited(ctx, '--in', opts.in, MAX_SIGN_INPUT);
  await withEnterprise(ctx, open, async ({ enterprise, actor }) => {
    const context = parseCallContext(opts.context, `caller:${actor}`);
    const result = await enterprise.manager.signWithPolicyEnforcement(opts.app, data, context);
    await writeOutput(ctx, '--out', out, result.signature);
    if (ctx.json) {
      return ctx.printJson({
        app: opts.app,
        keyId: result.keyId,
        version: result.version,
        algorithm: result.algorithm,
        signedAt: result.signedAt,
        member: result.member,
        signature: toBase64(result.signature),
        decision: result.decision,
      });
    }
    ctx.print(`signed with ${result.keyId} (${result.algorithm}) on ${result.member}; policy ${result.decision.policyVersion}; allowed by ${result.decision.determining.join(', ')}`);
  });
}

export async function appShow(ctx: CliContext, opts: { app: string }, open: EnterpriseOpener = openFromConfig): Promise<void> {
  await withEnterprise(ctx, open, async ({ enterprise }) => {
    const app = enterprise.manager.application(opts.app);
    const versions = await enterprise.rotation.registry.getKeyVersions(opts.app);
    const info = {
      app: app.appId,
      members: app.members,
      tags: app.tags,
      createdAt: app.createdAt,
      createdBy: app.createdBy,
      policy: app.policy,
      policyVersion: enterprise.authorizer.policyVersion(app.appId),
      versions: versions.map((v) => ({ keyId: v.keyId, version: v.version, state: v.state, usageCount: v.usageCount })),
    };
    if (ctx.json) return ctx.printJson(info);
    ctx.print(`${app.appId}: ${app.policy.algorithm} on ${app.members.join(', ')}; created ${app.createdAt.toISOString()} by ${app.createdBy}`);
    ctx.print(`policy version ${info.policyVersion}; operations ${app.policy.allowedOperations.join(', ')}; min FIPS level ${app.policy.minFipsLevel}`);
    for (const v of info.versions) ctx.print(`  ${v.keyId}  ${v.state}  ${v.usageCount} signatures`);
  });
}

// ---------------------------------------------------------------- policy

/** Validates a key policy (JSON) or a Cedar policy file (`.cedar`); needs no config. */
export async function policyValidate(ctx: CliContext, opts: { file: string }): Promise<void> {
  const text = await readText('FILE', opts.file);
  if (opts.file.endsWith('.cedar')) {
    const policies = CedarAuthorizer.check([{ file: opts.file, text }]);
    const count = Object.keys(policies).length;
    if (ctx.json) return ctx.printJson({ file: opts.file, kind: 'cedar', valid: true, policies: count });
    return ctx.print(`${opts.file}: ${count} Cedar ${count === 1 ? 'policy' : 'policies'}, valid against the schema`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new CliError('InvalidArgument', `${opts.file} is neither a .cedar file nor JSON`);
  }
  const policy = parseKeyPolicy(raw, opts.file);
  if (ctx.json) return ctx.printJson({ file: opts.file, kind: 'key-policy', valid: true, policy });
  ctx.print(`${opts.file}: key policy valid (${policy.algorithm}, operations ${policy.allowedOperations.join(', ')})`);
}

/**
 * Explains a Cedar decision: which policies permitted or forbade, or that none applied (default
 * deny). `--resource APP[/KEYID]`; tags with `--context tag.NAME=VALUE`.
 */
export async function policyTest(
  ctx: CliContext,
  opts: { principal: string; action: string; resource: string; context?: string[]; algorithm?: string },
  loadAuthorizer: (ctx: CliContext) => Promise<CedarAuthorizer> = authorizerFromConfig,
): Promise<void> {
  if (!(KEY_OPERATIONS as readonly string[]).includes(opts.action)) throw new CliError('UsageError', `--action must be one of ${KEY_OPERATIONS.join(', ')}`);
  const [application, keyId] = opts.resource.split('/', 2) as [string, string | undefined];
  const pairs = parsePairs('--context', opts.context);
  const tags: Record<string, string> = {};
  const rest: string[] = [];
  for (const [k, v] of Object.entries(pairs)) {
    if (k.startsWith('tag.')) tags[k.slice(4)] = v;
    else rest.push(`${k}=${v}`);
  }
  const context = parseCallContext([...rest, `principal=${opts.principal}`], opts.principal);
  const authorizer = await loadAuthorizer(ctx);
  const { principal, ...operationContext } = context;
  const version = keyId ? Number(/\.v(\d+)$/.exec(keyId)?.[1] ?? 1) : 1;
  const decision = authorizer.authorize({
    principal,
    action: opts.action as KeyOperation,
    resource: { application, keyId: keyId ?? `${application}.v1`, algorithm: opts.algorithm ?? 'ECDSA_P256', version, tags },
    context: operationContext,
  });
  // a deny exits 1 in both forms, so a script can test the decision without parsing it
  if (!decision.allowed) ctx.exitCode = 1;
  if (ctx.json) return ctx.printJson({ decision: decision.allowed ? 'allow' : 'deny', determining: decision.determining, errors: decision.errors, policyVersion: decision.policyVersion });
  const why = decision.determining.length > 0 ? `${decision.allowed ? 'permitted' : 'forbidden'} by ${decision.determining.join(', ')}` : decision.errors.length > 0 ? `request refused: ${decision.errors.join('; ')}` : 'no policy permits it (default deny)';
  ctx.print(`${decision.allowed ? 'ALLOW' : 'DENY'}: ${why} (policy version ${decision.policyVersion})`);
}

async function authorizerFromConfig(ctx: CliContext): Promise<CedarAuthorizer> {
  const loaded = await loadConfig(ctx);
  const section = parseWithSchema(enterpriseConfigSchema, loaded.config.enterprise ?? {}, 'enterprise');
  const authorizer = new CedarAuthorizer();
  loadPolicies(authorizer, section.policies, dirname(loaded.path));
  if (section.policies.registry) {
    const { PolicyStore, policyStoreStorage } = await import('@olocus/hsm-enterprise');
    const store = await PolicyStore.open(policyStoreStorage(await rotationStorage(ctx, loaded)));
    try {
      await store.loadInto(authorizer);
    } finally {
      await store.close();
    }
  }
  return authorizer;
}

// ---------------------------------------------------------------- pool, approvals

export function formatMember(m: MemberStatus): string {
  const state = m.reason === undefined ? 'up' : `DOWN (${m.reason})`;
  return `${m.name.padEnd(12)} ${m.type.padEnd(8)} w=${String(m.weight).padEnd(4)} zone=${(m.zone ?? '-').padEnd(8)} ${state}; circuit ${m.circuit}, ${m.outstanding} in flight, ${m.succeeded} ok / ${m.failed} failed, ${m.recoveries} recoveries`;
}

export async function poolStatus(ctx: CliContext, _opts: Record<string, never> = {}, open: EnterpriseOpener = openFromConfig): Promise<void> {
  await withEnterprise(ctx, open, async ({ enterprise }) => {
    await enterprise.pool.checkHealth();
    const members = enterprise.pool.status();
    const drift = await enterprise.manager.drift();
    if (ctx.json) return ctx.printJson({ members, drift });
    for (const m of members) ctx.print(formatMember(m));
    const problems = drift.missing.length + drift.extra.length + drift.mismatched.length;
    if (problems === 0 && drift.unreachable.length === 0) ctx.print('drift: none (every registry version is on each member of its placement, replicas identical)');
    for (const d of drift.missing) ctx.print(`drift: ${d.keyId} missing on ${d.member}`);
    for (const d of drift.extra) ctx.print(`drift: ${d.keyId} on ${d.member} is not placed there`);
    for (const d of drift.mismatched) ctx.print(`drift: ${d.keyId} on ${d.member} is a different key than on ${d.reference}`);
    for (const d of drift.unreachable) ctx.print(`drift: could not check ${d.member}: ${d.reason}`);
    if (problems > 0) ctx.exitCode = 1;
  });
}

/** `approve REQUEST`: adds the actor's approval; `--execute` runs the operation once enough approvers agreed. */
export async function approve(ctx: CliContext, opts: { request: string; execute?: boolean }, open: EnterpriseOpener = openFromConfig): Promise<void> {
  await withEnterprise(ctx, open, async ({ enterprise, actor }) => {
    const request = await enterprise.manager.approve(opts.request, actor);
    await enterprise.saveState();
    let executed = false;
    const ready = new Set(request.approvers).size >= request.required;
    if (request.operation === 'backup') {
      // the backup itself spends the approvals: it needs an output file
      if (ready) ctx.note(`${request.id} is approved: back up with olocus-hsm app backup --app ${request.appId} --request ${request.id} --out FILE`);
    } else if (opts.execute && ready) {
      await enterprise.manager.execute(request.id, actor);
      await enterprise.saveState();
      executed = true;
    }
    if (ctx.json) return ctx.printJson({ request: request.id, operation: request.operation, app: request.appId, approvers: request.approvers, required: request.required, executed });
    ctx.print(`${actor} approved ${request.operation} of ${request.keyId ?? request.appId}: ${request.approvers.length} of ${request.required} distinct approvals${executed ? '; executed' : ''}`);
  });
}

/** `app request`: opens a dual-control request that `approve` collects approvals for. */
export async function requestOperation(
  ctx: CliContext,
  opts: { app: string; operation: DualControlOperation; reason: string; keyId?: string },
  open: EnterpriseOpener = openFromConfig,
): Promise<void> {
  const operations: readonly DualControlOperation[] = ['destroy', 'emergency-rotation', 'backup'];
  if (!operations.includes(opts.operation)) throw new CliError('UsageError', `--operation must be one of ${operations.join(', ')}`);
  if (opts.operation === 'destroy' && !opts.keyId) throw new CliError('UsageError', '--key-id: a destroy request names the version to destroy (APP.vN)');
  await withEnterprise(ctx, open, async ({ enterprise, actor }) => {
    const request = enterprise.manager.requestOperation(opts.app, opts.operation, { requestedBy: actor, reason: opts.reason, ...(opts.keyId ? { keyId: opts.keyId } : {}) });
    await enterprise.saveState();
    if (ctx.json) return ctx.printJson(request);
    ctx.print(`request ${request.id}: ${request.operation} of ${request.keyId ?? request.appId} needs ${request.required} of ${request.eligible.join(', ')}: olocus-hsm approve ${request.id}`);
  });
}

/** HsmErrors from the enterprise package keep their code; anything else passes through. */
export function isEnterpriseRefusal(error: unknown): boolean {
  return isHsmError(error, 'PermissionDenied') || isHsmError(error, 'PolicyViolation');
}

/**
 * `app backup --app APP --out FILE [--request ID]`: a backup bundle of the application's key
 * versions, exported from a member of its placement, with the registry rows and the audit head.
 * An application whose policy puts backup under dual control needs an approved request
 * (`app request --operation backup`), which the written bundle uses up.
 */
export async function appBackup(ctx: CliContext, opts: { app: string; out: string; request?: string }, open: EnterpriseOpener = openFromConfig): Promise<void> {
  const out = await checkOutputPath(ctx, '--out', opts.out);
  if (out === '-') throw new CliError('InvalidArgument', '--out: a bundle is written to a file (atomically), not to standard output');
  await withEnterprise(ctx, open, async (scope) => {
    const written = await writeAppBackup(ctx, scope, opts.app, out, opts.request);
    const { result, member, spent, pinned } = written;
    if (result.ineligible.length > 0) ctx.exitCode = 1;
    if (ctx.json) return ctx.printJson({ ...result, app: opts.app, member, approvals: spent.map((r) => ({ request: r.id, approvers: r.approvers })), signerPinned: pinned });
    ctx.print(`backup written: ${out} (${result.keys.length} key version(s) of ${opts.app} from ${member}, sha256 ${result.sha256})`);
    for (const r of spent) ctx.print(`  under dual control: request ${r.id} approved by ${[...new Set(r.approvers)].join(', ')} (now used)`);
    ctx.print(`  signed by ${result.signer.keyId} ${result.signer.fingerprint}${pinned ? ' (pinned)' : ''}`);
    for (const i of result.ineligible) ctx.print(`  cannot back up ${i.id}: ${i.reason}`);
  });
}

/**
 * The backup a key policy with `backupRequired` asks for at creation: written into
 * `enterprise.backup.directory` when one is configured and the policy does not put backups under
 * dual control; otherwise what is missing is said (the approvals, or a directory).
 */
async function initialBackup(ctx: CliContext, scope: EnterpriseScope, appId: string): Promise<{ file: string; sha256: string } | { pending: string }> {
  const dir = scope.enterprise.backupDirectory;
  const policy = scope.enterprise.manager.application(appId).policy;
  if (policy.dualControl?.operations.includes('backup')) {
    return { pending: `backups of ${appId} are under dual control: olocus-hsm app request --app ${appId} --operation backup --reason ..., then app backup --request ID` };
  }
  if (!dir) return { pending: `set enterprise.backup.directory to have it written at creation, or run olocus-hsm app backup --app ${appId} --out FILE` };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${appId}-${new Date().toISOString().replace(/[:.]/g, '-')}.olocus-backup`);
  const { result } = await writeAppBackup(ctx, scope, appId, file);
  return { file, sha256: result.sha256 };
}

/** One application's bundle, exported from a member of its placement that can export (an up one first), through the dual-control gate. */
async function writeAppBackup(ctx: CliContext, { enterprise, actor, audit, configPath }: EnterpriseScope, appId: string, out: string, requestId?: string) {
  const { createBundle } = await import('@olocus/hsm-backup');
  const { pinSigner } = await import('./backup.js');
  const app = enterprise.manager.application(appId);
  const status = new Map(enterprise.pool.status().map((m) => [m.name, m]));
  const candidates = app.members.filter((name) => enterprise.pool.backendOf(name).backup !== undefined);
  if (candidates.length === 0) {
    throw new CliError('InvalidArgument', `${appId} lives on ${app.members.join(', ')}, none of which can export keys for a backup (their backends have no backup capability)`);
  }
  const member = candidates.find((name) => status.get(name)?.reason === undefined) ?? candidates[0]!;
  const gate = enterprise.manager.backupGate({ actor, ...(requestId ? { requestId } : {}) });
  const result = await createBundle(out, {
    backend: enterprise.pool.backendOf(member),
    registry: enterprise.rotation.registry,
    ...(audit ? { audit } : {}),
    keys: [appId],
    actor,
    authorize: gate.authorize,
    onProgress: (p) => {
      if (p.phase === 'export' && p.done === p.total) ctx.note(`backup: exported ${p.done}/${p.total} from ${member}`);
    },
  });
  const spent = await gate.complete({ file: out, sha256: result.sha256 });
  await enterprise.saveState();
  const pinned = configPath ? await pinSigner(configPath, result.signer) : false;
  return { result, member, spent, pinned };
}

// ---------------------------------------------------------------- policies in the registry database

type RecordChange = (details: Record<string, string | number | boolean | null>) => Promise<void>;

/** Opens the registry's policy table; a change is an audit record (when the installation keeps a log). */
async function withPolicyStore<T>(ctx: CliContext, fn: (store: PolicyStore, actor: string, record: RecordChange) => Promise<T>): Promise<T> {
  const loaded = await loadConfig(ctx);
  const actor = actorOf(ctx);
  const { PolicyStore, policyStoreStorage } = await import('@olocus/hsm-enterprise');
  const store = await PolicyStore.open(policyStoreStorage(await rotationStorage(ctx, loaded)));
  const { openCliAudit } = await import('../audit.js');
  const audit = loaded.audit.enabled ? await openCliAudit(ctx, loaded.audit, loaded.path, actor) : undefined;
  try {
    return await fn(store, actor, async (details) => {
      await audit?.append({ type: 'admin.action', outcome: 'success', actor, details });
    });
  } finally {
    await store.close();
    await audit?.close();
  }
}

/** `policy put FILE --scope global|APP --name NAME`: a new version of a Cedar policy in the registry database (checked first). */
export async function policyPut(ctx: CliContext, opts: { file: string; scope: string; name: string }): Promise<void> {
  const text = await readText('FILE', opts.file);
  await withPolicyStore(ctx, async (store, actor, record) => {
    const stored = await store.put(opts.scope, opts.name, text, actor);
    await record({ action: 'policy.put', scope: stored.scope, name: stored.name, version: stored.version, sha256: createHash('sha256').update(text).digest('hex') });
    if (ctx.json) return ctx.printJson({ scope: stored.scope, name: stored.name, version: stored.version, createdBy: stored.createdBy, createdAt: stored.createdAt });
    ctx.print(`policy ${stored.scope}/${stored.name} is at version ${stored.version} (by ${stored.createdBy}); it applies to processes opened from now on, with enterprise.policies.registry: true`);
  });
}

/** `policy remove --scope S --name N`: out of the current set (a tombstone version; the history stays). */
export async function policyRemove(ctx: CliContext, opts: { scope: string; name: string }): Promise<void> {
  await withPolicyStore(ctx, async (store, actor, record) => {
    const stored = await store.remove(opts.scope, opts.name, actor);
    await record({ action: 'policy.remove', scope: stored.scope, name: stored.name, version: stored.version });
    if (ctx.json) return ctx.printJson({ scope: stored.scope, name: stored.name, version: stored.version, removed: true });
    ctx.print(`policy ${stored.scope}/${stored.name} removed at version ${stored.version}`);
  });
}

/** `policy list [--scope S --name N]`: the current policies, or one policy's every version. */
export async function policyList(ctx: CliContext, opts: { scope?: string; name?: string }): Promise<void> {
  if ((opts.scope === undefined) !== (opts.name === undefined)) throw new CliError('UsageError', 'give --scope and --name together (one policy\'s history), or neither (the current set)');
  await withPolicyStore(ctx, async (store) => {
    const rows = opts.scope !== undefined ? await store.history(opts.scope, opts.name!) : await store.current();
    if (ctx.json) return ctx.printJson({ policies: rows });
    if (rows.length === 0) return ctx.print(opts.scope !== undefined ? `no policy ${opts.scope}/${opts.name} in the registry` : 'no policies in the registry');
    for (const p of rows) ctx.print(`${p.scope}/${p.name}  v${p.version}  ${p.createdAt.toISOString()}  ${p.createdBy}${p.text === null ? '  (removed)' : ''}`);
  });
}
