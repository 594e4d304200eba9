/**
 * Who may do what with application keys, in Cedar. Policies are loaded from files, checked
 * against the schema at load (an error names the file, line and column), preparsed once per
 * application (the global policies plus that application's own), and evaluated with
 * `statefulIsAuthorized`: decision cost grows with the set's size, so no caller ever pays for
 * every application's policies.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { HsmError } from '@olocus/hsm-core';
import type * as CedarWasm from '@cedar-policy/cedar-wasm/nodejs';
import type { KeyOperation } from './policy.js';

type Cedar = typeof CedarWasm;
let cedar: Cedar | undefined;

/** The Node build of cedar-wasm (its default export is the bundler build, which Node cannot load). */
function cedarWasm(): Cedar {
  cedar ??= createRequire(import.meta.url)('@cedar-policy/cedar-wasm/nodejs') as Cedar;
  return cedar;
}

export const CEDAR_NAMESPACE = 'Olocus';

/**
 * The schema every policy is validated against. Principals are callers (people, services) and
 * applications, both members of groups; resources are application keys, members of their
 * application, with free tags; the context is the call's OperationContext.
 */
export const CEDAR_SCHEMA = `namespace ${CEDAR_NAMESPACE} {
  entity Group in [Group];
  entity Caller in [Group] { roles: Set<String> };
  entity Application in [Group];
  entity Key in [Application] { application: String, algorithm: String, version: Long } tags String;
  type OperationContext = {
    purpose?: String,
    classification?: String,
    ticketId?: String,
    sourceAddress?: ipaddr,
    approvals?: Long,
    hour: Long,
  };
  action "sign", "verify", "rotate", "destroy", "export-public", "backup"
    appliesTo { principal: [Caller, Application], resource: [Key], context: OperationContext };
}
`;

export interface PolicySource {
  /** Shown in errors and decisions: a path or a database row name. */
  file: string;
  text: string;
}

export interface OperationContext {
  purpose?: string;
  classification?: string;
  ticketId?: string;
  /** An IPv4/IPv6 address; policies compare it with `isInRange(ip("10.0.0.0/8"))`. */
  sourceAddress?: string;
  /** Distinct approvals collected for this operation (dual control). */
  approvals?: number;
}

export interface AuthorizationRequest {
  principal: { type: 'Caller' | 'Application'; id: string; groups?: string[]; roles?: string[] };
  action: KeyOperation;
  resource: { application: string; keyId: string; algorithm: string; version: number; tags?: Record<string, string> };
  context?: OperationContext;
  at?: Date;
}

export interface CedarDecision {
  allowed: boolean;
  /** Policies (file#n) that determined the decision; empty for a default deny. */
  determining: string[];
  errors: string[];
  /** The version of the policy set that decided (global and application parts). */
  policyVersion: string;
  /** Microseconds spent deciding. */
  micros: number;
  /** Served from the decision cache (same request, same policy version, within its TTL). */
  cached?: boolean;
}

export interface CedarAuthorizerOptions {
  /**
   * How long an identical request (principal, groups, roles, action, resource, tags, context,
   * hour) keeps its decision under the same policy version, in ms (default 1000; 0 = never
   * cached). A policy load changes the version and so misses every cached entry.
   */
  decisionCacheMs?: number;
  /** Most cached decisions (default 10000); the oldest go first. */
  decisionCacheSize?: number;
  now?: () => number;
}

function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let last = -1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      last = i;
    }
  }
  return { line, column: offset - last };
}

interface CedarError {
  message: string;
  help?: string | null;
  sourceLocations?: Array<{ start: number }>;
}

function policyError(source: PolicySource, kind: string, errors: CedarError[]): HsmError {
  const first = errors[0];
  const at = first?.sourceLocations?.[0] ? lineAndColumn(source.text, first.sourceLocations[0].start) : undefined;
  const where = at ? `${source.file}:${at.line}:${at.column}` : source.file;
  const rest = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
  return new HsmError('InvalidConfiguration', `${kind} in ${where}: ${first?.message ?? 'unknown error'}${first?.help ? ` (${first.help})` : ''}${rest}`, {
    details: { file: source.file, ...(at ? { line: at.line, column: at.column } : {}) },
  });
}

function versionOf(sources: readonly PolicySource[]): string {
  const hash = createHash('sha256');
  for (const s of [...sources].sort((a, b) => a.file.localeCompare(b.file))) hash.update(`${s.file}\0${s.text}\0`);
  return hash.digest('hex').slice(0, 16);
}

/** Reads every `*.cedar` file of a directory, in name order. */
export function readPolicyDirectory(dir: string): PolicySource[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.cedar') && statSync(join(dir, n)).isFile());
  } catch (cause) {
    throw new HsmError('InvalidConfiguration', `cannot read the policy directory ${dir}: ${(cause as Error).message}`, { cause, details: { file: dir } });
  }
  return names.sort().map((n) => ({ file: join(dir, n), text: readFileSync(join(dir, n), 'utf8') }));
}

interface LoadedSet {
  /** id → policy text */
  policies: Record<string, string>;
  version: string;
  sources: readonly PolicySource[];
}

/**
 * The loaded policies: a global set and one set per application, each file parsed and validated
 * against {@link CEDAR_SCHEMA}. Loading again (a new version) replaces the sets atomically.
 */
export class CedarAuthorizer {
  private global: LoadedSet = { policies: {}, version: versionOf([]), sources: [] };
  private readonly applications = new Map<string, LoadedSet>();
  /** preparsed set id per application ('' = global only), rebuilt when either part changes */
  private readonly preparsed = new Map<string, string>();
  private generation = 0;
  private schemaName: string;
  private readonly cacheMs: number;
  private readonly cacheSize: number;
  private readonly now: () => number;
  private readonly cache = new Map<string, { decision: CedarDecision; expires: number }>();

  constructor(options: CedarAuthorizerOptions = {}) {
    this.cacheMs = options.decisionCacheMs ?? 1000;
    this.cacheSize = options.decisionCacheSize ?? 10_000;
    this.now = options.now ?? (() => performance.now());
    const answer = cedarWasm().preparseSchema(`olocus-${process.pid}`, CEDAR_SCHEMA);
    if (answer.type !== 'success') throw new HsmError('Internal', `the built-in Cedar schema does not parse: ${answer.errors[0]?.message}`);
    this.schemaName = `olocus-${process.pid}`;
  }

  /** Parses and validates policy files; throws InvalidConfiguration naming the file and line. */
  static check(sources: readonly PolicySource[]): Record<string, string> {
    const c = cedarWasm();
    const out: Record<string, string> = {};
    for (const source of sources) {
      const parsed = c.checkParsePolicySet({ staticPolicies: source.text });
      if (parsed.type !== 'success') throw policyError(source, 'Cedar syntax error', parsed.errors);
      const validation = c.validate({ schema: CEDAR_SCHEMA, policies: { staticPolicies: source.text }, validationSettings: { mode: 'strict' } });
      if (validation.type !== 'success') throw policyError(source, 'Cedar error', validation.errors);
      if (validation.validationErrors.length > 0) throw policyError(source, 'Cedar schema error', validation.validationErrors.map((e) => e.error));
      const parts = c.policySetTextToParts(source.text);
      if (parts.type !== 'success') throw policyError(source, 'Cedar syntax error', parts.errors);
      if (parts.policy_templates.length > 0) throw new HsmError('InvalidConfiguration', `${source.file}: policy templates are not supported; write static policies`, { details: { file: source.file } });
      for (const [i, text] of parts.policies.entries()) out[`${basename(source.file)}#${i}`] = text;
    }
    return out;
  }

  loadGlobal(sources: readonly PolicySource[]): string {
    this.global = { policies: CedarAuthorizer.check(sources), version: versionOf(sources), sources: [...sources] };
    this.invalidate();
    return this.global.version;
  }

  loadApplication(appId: string, sources: readonly PolicySource[]): string {
    const set = { policies: CedarAuthorizer.check(sources), version: versionOf(sources), sources: [...sources] };
    this.applications.set(appId, set);
    this.preparsed.delete(appId);
    return set.version;
  }

  /** The global policies loaded now (to add to them: `loadGlobal([...globalSources(), ...more])`). */
  globalSources(): readonly PolicySource[] {
    return this.global.sources;
  }

  /** An application's own policies loaded now. */
  applicationSources(appId: string): readonly PolicySource[] {
    return this.applications.get(appId)?.sources ?? [];
  }

  /** The version a decision for `appId` would record. */
  policyVersion(appId: string): string {
    const app = this.applications.get(appId);
    return `global:${this.global.version}${app ? `/app:${app.version}` : ''}`;
  }

  private invalidate(): void {
    this.generation++;
    this.preparsed.clear();
  }

  private setFor(appId: string): string {
    const key = this.applications.has(appId) ? appId : '';
    const known = this.preparsed.get(key);
    if (known) return known;
    const id = `g${this.generation}:${key}:${this.applications.get(key)?.version ?? ''}`;
    const policies: Record<string, string> = {};
    for (const [pid, text] of Object.entries(this.global.policies)) policies[`global/${pid}`] = text;
    if (key) for (const [pid, text] of Object.entries(this.applications.get(key)!.policies)) policies[`${key}/${pid}`] = text;
    const answer = cedarWasm().preparsePolicySet(id, { staticPolicies: policies });
    if (answer.type !== 'success') throw new HsmError('Internal', `preparsing the policies of ${key || 'the global set'} failed: ${answer.errors[0]?.message}`);
    this.preparsed.set(key, id);
    return id;
  }

  /** Default deny: allowed only when a permit applies and no forbid does. */
  authorize(request: AuthorizationRequest): CedarDecision {
    if (this.cacheMs <= 0) return this.evaluate(request);
    const started = performance.now();
    const policyVersion = this.policyVersion(request.resource.application);
    const hour = (request.at ?? new Date()).getUTCHours();
    // everything the decision depends on: the request, the hour the context carries, the policies
    const key = JSON.stringify([policyVersion, hour, request.principal, request.action, request.resource, request.context ?? {}]);
    const now = this.now();
    const hit = this.cache.get(key);
    if (hit && hit.expires > now) return { ...hit.decision, cached: true, micros: Math.round((performance.now() - started) * 1000) };
    const decision = this.evaluate(request);
    if (hit) this.cache.delete(key);
    else if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { decision, expires: now + this.cacheMs });
    return decision;
  }

  private evaluate(request: AuthorizationRequest): CedarDecision {
    const started = performance.now();
    const policyVersion = this.policyVersion(request.resource.application);
    const setId = this.setFor(request.resource.application);
    const ns = CEDAR_NAMESPACE;
    const principal = { type: `${ns}::${request.principal.type}`, id: request.principal.id };
    const app = { type: `${ns}::Application`, id: request.resource.application };
    const resource = { type: `${ns}::Key`, id: request.resource.keyId };
    const context: Record<string, CedarWasm.CedarValueJson> = { hour: (request.at ?? new Date()).getUTCHours() };
    const c = request.context ?? {};
    if (c.purpose !== undefined) context.purpose = c.purpose;
    if (c.classification !== undefined) context.classification = c.classification;
    if (c.ticketId !== undefined) context.ticketId = c.ticketId;
    if (c.approvals !== undefined) context.approvals = c.approvals;
    if (c.sourceAddress !== undefined) context.sourceAddress = { __extn: { fn: 'ip', arg: c.sourceAddress } };
    const groups = (request.principal.groups ?? []).map((g) => ({ type: `${ns}::Group`, id: g }));
    const entities: CedarWasm.EntityJson[] = [
      {
        uid: principal,
        attrs: request.principal.type === 'Caller' ? { roles: request.principal.roles ?? [] } : {},
        parents: groups,
      },
      ...groups.map((g) => ({ uid: g, attrs: {}, parents: [] })),
      {
        uid: resource,
        attrs: { application: request.resource.application, algorithm: request.resource.algorithm, version: request.resource.version },
        parents: [app],
        tags: { ...(request.resource.tags ?? {}) },
      },
    ];
    if (!(request.principal.type === 'Application' && request.principal.id === request.resource.application)) entities.push({ uid: app, attrs: {}, parents: [] });
    const answer = cedarWasm().statefulIsAuthorized({
      principal,
      action: { type: `${ns}::Action`, id: request.action },
      resource,
      context,
      entities,
      preparsedPolicySetId: setId,
      preparsedSchemaName: this.schemaName,
      validateRequest: true,
    });
    const micros = Math.round((performance.now() - started) * 1000);
    if (answer.type !== 'success') {
      // a request the schema refuses (a malformed address...) is a deny that says why
      return { allowed: false, determining: [], errors: answer.errors.map((e) => e.message), policyVersion, micros };
    }
    const { decision, diagnostics } = answer.response;
    return {
      allowed: decision === 'allow',
      determining: diagnostics.reason,
      errors: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`),
      policyVersion,
      micros,
    };
  }
}
