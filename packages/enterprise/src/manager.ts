import { createHash, randomUUID } from 'node:crypto';
import { HsmError, isHsmError, type KeyAlgorithm, type KeySpec } from '@olocus/hsm-core';
import type { RotationContext } from '@olocus/hsm-rotation';
import type { CedarAuthorizer, AuthorizationRequest, CedarDecision, OperationContext } from './cedar.js';
import { durationMs, parseKeyPolicy, selectMembersForPolicy, validatePolicy, type KeyOperation, type KeyPolicy } from './policy.js';
import { PoolBackend, type GroupGenerator } from './pool-backend.js';
import type { DriftReport, HsmPool, KeyPlacement } from './pool.js';
import { TokenBuckets } from './rate-limit.js';
import type { RateLimiter } from './rate-limit-pg.js';

/**
 * What the manager writes for every decision. Shaped like @olocus/hsm-compliance's
 * `AuditEventInput`, so an `AuditLog` is a sink as it is (`{ append }`).
 */
export interface EnterpriseAuditEvent {
  type: 'key.generate' | 'key.sign' | 'key.rotate' | 'key.destroy' | 'security.event' | 'admin.action';
  actor: string;
  outcome: 'success' | 'failure';
  keyId?: string;
  baseKeyId?: string;
  keyVersion?: number;
  algorithm?: string;
  dataDigest?: string;
  details?: Record<string, string | number | boolean | null>;
}

export interface AuditSink {
  /** Resolves once the record is durable; a rejection withholds the operation's result. */
  append(event: EnterpriseAuditEvent): Promise<unknown>;
}

export type Principal = AuthorizationRequest['principal'];

export interface CallContext extends OperationContext {
  principal: Principal;
}

export interface ApplicationRecord {
  appId: string;
  policy: KeyPolicy;
  /** Resource tags Cedar policies see (`resource.getTag("env")`). */
  tags: Record<string, string>;
  members: string[];
  createdAt: Date;
  createdBy: string;
}

export interface DecisionMetadata {
  decision: 'allow' | 'deny';
  policyVersion: string;
  /** Cedar policies that decided (file#n). */
  determining: string[];
  /** For a deny: the rule that refused (`cedar`, `rateLimits.perKey`, `allowedOperations`...). */
  rule?: string;
  reason?: string;
  cedarMicros: number;
  /** The Cedar decision came from the decision cache. */
  cached?: boolean;
}

export interface EnforcedSignature {
  signature: Uint8Array;
  keyId: string;
  baseKeyId: string;
  version: number;
  algorithm: KeyAlgorithm;
  /** The time the signature is dated by (when the registry confirmed the version Active). */
  signedAt: Date;
  member: string;
  decision: DecisionMetadata;
}

export interface EnterpriseKeyManagerOptions {
  pool: HsmPool;
  /** Opened on `manager.backend` (see `EnterpriseKeyManager.open`), so generation lands on the pool. */
  rotation: RotationContext;
  authorizer: CedarAuthorizer;
  audit: AuditSink;
  /** Token buckets (default: in this process; `PostgresTokenBuckets` shares them across nodes). */
  rateLimiter?: RateLimiter;
  now?: () => Date;
}

export type DualControlOperation = 'destroy' | 'emergency-rotation' | 'backup';

export interface ApprovalRequest {
  id: string;
  appId: string;
  operation: DualControlOperation;
  /** destroy: the version to destroy. */
  keyId?: string;
  requestedBy: string;
  reason: string;
  required: number;
  eligible: string[];
  approvers: string[];
  state: 'pending' | 'executed';
}

/** See `EnterpriseKeyManager.backupGate`. */
export interface BackupGate {
  /** Refuses (and records the refusal) a key this backup may not include; pass it as `createBundle({ authorize })`. */
  authorize(key: { id: string; baseKeyId?: string; version?: number }): Promise<void>;
  /** After the bundle is written: the approval requests it used are spent, and recorded with their approvers. */
  complete(bundle: { file: string; sha256: string }): Promise<ApprovalRequest[]>;
}

export interface EnterpriseState {
  applications: Array<Omit<ApplicationRecord, 'createdAt' | 'policy'> & { createdAt: string; policy: unknown }>;
  approvals: ApprovalRequest[];
}

function digest(data: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

function principalName(p: Principal): string {
  return `${p.type === 'Caller' ? 'caller' : 'app'}:${p.id}`;
}

/**
 * Application keys under policy: generated on pool members that satisfy the key policy,
 * versioned by the rotation registry, used only after Cedar and the policy's limits allow it,
 * every decision written to the audit sink before the caller hears of it.
 */
export class EnterpriseKeyManager {
  readonly pool: HsmPool;
  readonly rotation: RotationContext;
  readonly authorizer: CedarAuthorizer;
  private readonly audit: AuditSink;
  private readonly now: () => Date;
  private readonly apps = new Map<string, ApplicationRecord>();
  private readonly buckets: RateLimiter;
  /** Signatures per key version, seeded from the registry's usage count on first use. */
  private readonly usage = new Map<string, number>();
  private readonly approvals = new Map<string, ApprovalRequest>();

  constructor(options: EnterpriseKeyManagerOptions) {
    this.pool = options.pool;
    this.rotation = options.rotation;
    this.authorizer = options.authorizer;
    this.audit = options.audit;
    this.now = options.now ?? (() => new Date());
    this.buckets = options.rateLimiter ?? new TokenBuckets();
  }

  /**
   * The pool as the one backend the rotation registry generates on: `openRotation({ backend })`
   * with it. A key's placement comes from its application's policy (`generateApplicationKey`).
   */
  static poolBackend(pool: HsmPool, placement: () => EnterpriseKeyManager | undefined, groupGenerator?: GroupGenerator): PoolBackend {
    return new PoolBackend(
      pool,
      async (spec: KeySpec) => {
        const manager = placement();
        if (!manager) throw new HsmError('NotInitialized', 'the enterprise manager is not open yet');
        return manager.placementFor(spec);
      },
      groupGenerator,
    );
  }

  private placementFor(spec: KeySpec): string[] {
    const base = spec.id.replace(/\.v\d+$/, '');
    const app = this.apps.get(base);
    if (!app) throw new HsmError('KeyNotFound', `no application ${base}: create it with generateApplicationKey`, { details: { appId: base } });
    return app.members;
  }

  application(appId: string): ApplicationRecord {
    const app = this.apps.get(appId);
    if (!app) throw new HsmError('KeyNotFound', `no application ${JSON.stringify(appId)}; create it first (olocus-hsm app create ${appId} --policy FILE)`, { details: { appId } });
    return app;
  }

  applications(): ApplicationRecord[] {
    return [...this.apps.values()];
  }

  /**
   * Validates the policy, places the key on members that satisfy it, registers it with the
   * rotation registry (rotation scheduled from the policy's interval) and records the decision.
   */
  async generateApplicationKey(appId: string, policyInput: unknown, options: { actor: string; tags?: Record<string, string> }): Promise<ApplicationRecord> {
    const policy = parseKeyPolicy(policyInput, `policy of ${appId}`);
    validatePolicy(policy, { algorithm: policy.algorithm });
    if (this.apps.has(appId)) throw new HsmError('KeyAlreadyExists', `application ${appId} already has a key`, { details: { appId } });
    const { members } = await selectMembersForPolicy(this.pool, policy);
    const record: ApplicationRecord = { appId, policy, tags: { ...(options.tags ?? {}) }, members, createdAt: this.now(), createdBy: options.actor };
    this.apps.set(appId, record);
    try {
      const version = await this.rotation.manager.createKey(appId, policy.algorithm, {
        actor: options.actor,
        reason: `application key for ${appId} under its key policy`,
        rotationInterval: policy.rotationInterval ? durationMs(policy.rotationInterval) : null,
        // decided at generation: a key made non-extractable can never be backed up later
        ...(policy.backupRequired ? { backup: true } : {}),
      });
      await this.audit.append({
        type: 'key.generate',
        actor: options.actor,
        outcome: 'success',
        keyId: version.keyId,
        baseKeyId: appId,
        keyVersion: version.version,
        algorithm: policy.algorithm,
        details: {
          members: members.join(','),
          minFipsLevel: policy.minFipsLevel,
          hardwareRequired: policy.hardwareRequired,
          backupRequired: policy.backupRequired,
          // every version is generated backup-eligible; the bundle itself is written by `olocus-hsm backup`
          backupEligible: policy.backupRequired,
        },
      });
    } catch (error) {
      this.apps.delete(appId);
      throw error;
    }
    return record;
  }

  /** Restores an application record (from the CLI's state file) without generating anything. */
  adoptApplication(record: Omit<ApplicationRecord, 'policy'> & { policy: unknown }): void {
    const policy = parseKeyPolicy(record.policy, `policy of ${record.appId}`);
    this.apps.set(record.appId, { ...record, policy });
  }

  private deny(rule: string, reason: string, policyVersion: string, determining: string[] = [], micros = 0): DecisionMetadata {
    return { decision: 'deny', rule, reason, policyVersion, determining, cedarMicros: micros };
  }

  /**
   * Decides whether `context.principal` may do `operation` on the application's active key. Order:
   * the key policy's fixed rules, Cedar, then rate limits (a call refused earlier does not use up
   * a token).
   */
  async authorize(
    appId: string,
    operation: KeyOperation,
    context: CallContext,
    extra: { messageBytes?: number; version?: { keyId: string; version: number; algorithm: string } } = {},
  ): Promise<DecisionMetadata> {
    const app = this.application(appId);
    const at = this.now();
    try {
      validatePolicy(app.policy, { operation, ...(extra.messageBytes !== undefined ? { messageBytes: extra.messageBytes } : {}), at });
    } catch (error) {
      if (!isHsmError(error, 'PolicyViolation')) throw error;
      return this.deny(String(error.details.rule), error.message, this.authorizer.policyVersion(appId));
    }
    const version = extra.version ?? (await this.activeVersion(appId));
    if (operation === 'sign' && app.policy.maxUsesPerVersion !== undefined) {
      const used = this.usage.get(version.keyId) ?? (await this.usageOf(version.keyId));
      if (used >= app.policy.maxUsesPerVersion) {
        return this.deny('maxUsesPerVersion', `${version.keyId} made ${used} signatures, the most the policy allows per version; rotate ${appId}`, this.authorizer.policyVersion(appId));
      }
    }
    const decision: CedarDecision = this.authorizer.authorize({
      principal: context.principal,
      action: operation,
      resource: { application: appId, keyId: version.keyId, algorithm: version.algorithm, version: version.version, tags: app.tags },
      context,
      at,
    });
    if (!decision.allowed) {
      const why = decision.determining.length > 0 ? `forbidden by ${decision.determining.join(', ')}` : decision.errors.length > 0 ? `request refused: ${decision.errors[0]}` : 'no policy permits it (default deny)';
      return this.deny('cedar', `${principalName(context.principal)} may not ${operation} with ${appId}: ${why}`, decision.policyVersion, decision.determining, decision.micros);
    }
    const limits = app.policy.rateLimits;
    if (limits?.perKey || limits?.perCaller) {
      const entries: Array<readonly [string, { limit: number; perMs: number; burst?: number }]> = [];
      const spec = (r: { limit: number; per: string; burst?: number | undefined }) => ({ limit: r.limit, perMs: durationMs(r.per), ...(r.burst !== undefined ? { burst: r.burst } : {}) });
      if (limits.perKey) entries.push([`key:${appId}`, spec(limits.perKey)]);
      if (limits.perCaller) entries.push([`caller:${appId}:${principalName(context.principal)}`, spec(limits.perCaller)]);
      const taken = this.buckets.takeAll(entries);
      // in-process buckets answer at once: no promise to wait for on the signing path
      if (!(typeof taken === 'boolean' ? taken : await taken)) {
        return this.deny('rateLimits', `rate limit reached for ${appId} (${limits.perKey ? `per key ${limits.perKey.limit}/${limits.perKey.per}` : ''}${limits.perKey && limits.perCaller ? ', ' : ''}${limits.perCaller ? `per caller ${limits.perCaller.limit}/${limits.perCaller.per}` : ''})`, decision.policyVersion, decision.determining, decision.micros);
      }
    }
    return { decision: 'allow', policyVersion: decision.policyVersion, determining: decision.determining, cedarMicros: decision.micros, ...(decision.cached ? { cached: true } : {}) };
  }

  private async activeVersion(appId: string): Promise<{ keyId: string; version: number; algorithm: KeyAlgorithm; confirmedActiveAt?: Date }> {
    const resolved = await this.rotation.registry.resolveForSigning(appId);
    const keyId = `${appId}.v${resolved.version}`;
    return { keyId, version: resolved.version, algorithm: resolved.algorithm, ...(resolved.confirmedActiveAt ? { confirmedActiveAt: resolved.confirmedActiveAt } : {}) };
  }

  private async usageOf(keyId: string): Promise<number> {
    let used = this.usage.get(keyId);
    if (used === undefined) {
      used = (await this.rotation.registry.getKeyVersion(keyId)).usageCount;
      this.usage.set(keyId, used);
    }
    return used;
  }

  private refusal(appId: string, decision: DecisionMetadata): HsmError {
    const code = decision.rule === 'cedar' ? 'PermissionDenied' : 'PolicyViolation';
    return new HsmError(code, decision.reason ?? 'refused', { details: { appId, rule: decision.rule, policyVersion: decision.policyVersion } });
  }

  /**
   * Resolves the application's active key, authorizes (key policy, Cedar, rate limits), signs on
   * the pool and records usage. Allow and deny are both audit records, durable before the caller
   * gets the signature or the refusal; a denied call never reaches an HSM.
   */
  async signWithPolicyEnforcement(appId: string, data: Uint8Array, context: CallContext): Promise<EnforcedSignature> {
    const version = await this.activeVersion(appId);
    const decision = await this.authorize(appId, 'sign', context, { messageBytes: data.length, version });
    const base: EnterpriseAuditEvent = {
      type: 'key.sign',
      actor: principalName(context.principal),
      outcome: 'failure',
      keyId: version.keyId,
      baseKeyId: appId,
      keyVersion: version.version,
      algorithm: version.algorithm,
      dataDigest: digest(data),
      // only what the call had: every absent field cost the audit log's validation and
      // canonical JSON on each signature (a tenth of the enforced path's own CPU, profiled)
      details: {
        decision: decision.decision,
        policyVersion: decision.policyVersion,
        ...(decision.determining.length > 0 ? { determining: decision.determining.join(',') } : {}),
        ...(decision.cached ? { decisionCached: true } : {}),
        ...(context.purpose !== undefined ? { purpose: context.purpose } : {}),
        ...(context.classification !== undefined ? { classification: context.classification } : {}),
        ...(context.ticketId !== undefined ? { ticketId: context.ticketId } : {}),
        ...(context.sourceAddress !== undefined ? { sourceAddress: context.sourceAddress } : {}),
      },
    };
    if (decision.decision === 'deny') {
      await this.audit.append({ ...base, details: { ...base.details, ...(decision.rule !== undefined ? { rule: decision.rule } : {}), ...(decision.reason !== undefined ? { reason: decision.reason } : {}) } });
      throw this.refusal(appId, decision);
    }
    let signed: { signature: Uint8Array; member: string; retriedFrom: string[] };
    // a process that did not generate the key learns its placement from the application record
    if (!this.pool.placementOf(version.keyId)) this.pool.place(version.keyId, this.application(appId).members);
    try {
      signed = await this.pool.sign(version.keyId, data, context.purpose ? { purpose: context.purpose } : {});
    } catch (error) {
      await this.audit
        .append({ ...base, details: { ...base.details, error: isHsmError(error) ? error.code : 'Internal' } })
        .catch(() => undefined);
      throw error;
    }
    const used = this.usage.get(version.keyId);
    this.usage.set(version.keyId, (used ?? (await this.usageOf(version.keyId))) + 1);
    this.rotation.registry.recordUsage({ baseKeyId: appId, version: version.version, key: version.keyId, algorithm: version.algorithm });
    await this.audit.append({ ...base, outcome: 'success', details: { ...base.details, member: signed.member, ...(signed.retriedFrom.length > 0 ? { retriedFrom: signed.retriedFrom.join(',') } : {}) } });
    return {
      signature: signed.signature,
      keyId: version.keyId,
      baseKeyId: appId,
      version: version.version,
      algorithm: version.algorithm,
      signedAt: version.confirmedActiveAt ?? this.now(),
      member: signed.member,
      decision,
    };
  }

  /**
   * Drift between the registry and the members: every version the registry still holds (not
   * Destroyed) should be on each member of its application's placement.
   */
  async drift(): Promise<DriftReport> {
    const expected: KeyPlacement[] = [];
    for (const app of this.apps.values()) {
      for (const v of await this.rotation.registry.getKeyVersions(app.appId)) {
        if (v.state !== 'Destroyed') expected.push({ keyId: v.keyId, members: app.members });
      }
    }
    return this.pool.drift(expected);
  }

  // ---------------------------------------------------------------- dual control

  /** Opens a request for an operation that the application's policy puts under dual control. */
  requestOperation(appId: string, operation: DualControlOperation, options: { requestedBy: string; reason: string; keyId?: string }): ApprovalRequest {
    const app = this.application(appId);
    const dual = app.policy.dualControl;
    if (!dual?.operations.includes(operation)) {
      throw new HsmError('InvalidArgument', `${operation} of ${appId} is not under dual control in its policy (policy.dualControl.operations); run it directly`, { details: { field: 'operation' } });
    }
    const request: ApprovalRequest = {
      id: randomUUID(),
      appId,
      operation,
      ...(options.keyId !== undefined ? { keyId: options.keyId } : {}),
      requestedBy: options.requestedBy,
      reason: options.reason,
      required: dual.required,
      eligible: [...new Set(dual.approvers)],
      approvers: [],
      state: 'pending',
    };
    this.approvals.set(request.id, request);
    return request;
  }

  /** Applications and open approval requests, as JSON-safe data (the CLI keeps them in a state file). */
  exportState(): EnterpriseState {
    return {
      applications: [...this.apps.values()].map((a) => ({ ...a, createdAt: a.createdAt.toISOString() })),
      approvals: [...this.approvals.values()].map((r) => ({ ...r, approvers: [...r.approvers], eligible: [...r.eligible] })),
    };
  }

  importState(state: EnterpriseState): void {
    for (const a of state.applications ?? []) this.adoptApplication({ ...a, createdAt: new Date(a.createdAt) });
    for (const r of state.approvals ?? []) this.approvals.set(r.id, { ...r });
  }

  approvalRequest(id: string): ApprovalRequest {
    const request = this.approvals.get(id);
    if (!request) throw new HsmError('KeyNotFound', `no approval request ${JSON.stringify(id)}`, { details: { field: 'request' } });
    return request;
  }

  /** Adds an approval; the same approver twice counts once, and nobody approves their own request. */
  async approve(id: string, approver: string): Promise<ApprovalRequest> {
    const request = this.approvalRequest(id);
    if (request.state !== 'pending') throw new HsmError('IllegalStateTransition', `request ${id} was already executed`, { details: { field: 'request' } });
    if (!request.eligible.includes(approver)) {
      throw new HsmError('PermissionDenied', `${approver} is not an approver for ${request.appId} (policy.dualControl.approvers: ${request.eligible.join(', ')})`, { details: { field: 'approver' } });
    }
    if (approver === request.requestedBy) throw new HsmError('PermissionDenied', `${approver} requested this operation and cannot also approve it`, { details: { field: 'approver' } });
    if (!request.approvers.includes(approver)) request.approvers.push(approver);
    await this.audit.append({ type: 'admin.action', actor: approver, outcome: 'success', baseKeyId: request.appId, details: { action: 'approve', request: id, operation: request.operation, approvals: request.approvers.length, required: request.required } });
    return request;
  }

  /**
   * Runs an approved operation. Fewer distinct approvers than required: PermissionDenied (and a
   * failure record). The record of the operation carries the approvers, which the PCI dual-control
   * rule reads.
   */
  async execute(id: string, actor: string): Promise<ApprovalRequest> {
    const request = this.approvalRequest(id);
    const approvers = [...new Set(request.approvers)];
    const type = request.operation === 'destroy' ? 'key.destroy' : request.operation === 'emergency-rotation' ? 'key.rotate' : 'admin.action';
    const base = { type, actor, baseKeyId: request.appId, ...(request.keyId ? { keyId: request.keyId } : {}) } as const;
    const details = { approvers: approvers.join(','), required: request.required, request: id, operation: request.operation, reason: request.reason };
    if (request.state !== 'pending') throw new HsmError('IllegalStateTransition', `request ${id} was already executed`, { details: { field: 'request' } });
    if (request.operation === 'backup') {
      // a backup needs somewhere to write the bundle: the approved request is handed to the backup
      throw new HsmError('InvalidArgument', `request ${id} is a backup: it is carried out by the backup itself, which uses up the approvals (olocus-hsm app backup --app ${request.appId} --request ${id} --out FILE; in code, backupGate({ requestId }) with @olocus/hsm-backup's createBundle)`, {
        details: { field: 'request' },
      });
    }
    if (approvers.length < request.required) {
      await this.audit.append({ ...base, outcome: 'failure', details: { ...details, refused: `dual control: ${approvers.length} of ${request.required} distinct approvals` } });
      throw new HsmError('PermissionDenied', `${request.operation} of ${request.keyId ?? request.appId} needs ${request.required} distinct approvers; it has ${approvers.length} (${approvers.join(', ') || 'none'}): olocus-hsm approve ${id}`, {
        details: { request: id, approvals: approvers.length, required: request.required },
      });
    }
    const reason = `${request.reason} (approved by ${approvers.join(', ')})`;
    if (request.operation === 'destroy') {
      const keyId = request.keyId;
      if (!keyId) throw new HsmError('InvalidArgument', 'a destroy request names the version to destroy (keyId)', { details: { field: 'keyId' } });
      // the registry's own rules apply: never the Active version, and a waiting period (LC-PENDING)
      await this.rotation.manager.scheduleDestruction(keyId, { actor, reason });
    } else {
      await this.rotation.manager.emergencyRotateKey(request.appId, { actor, reason });
    }
    request.state = 'executed';
    await this.audit.append({ ...base, outcome: 'success', details });
    return request;
  }
  /**
   * Dual control for backups: the gate a backup passes every key through (`authorize`, given to
   * @olocus/hsm-backup's `createBundle`), then `complete` once the bundle is written. A key of an
   * application whose policy does not allow `backup` is refused (PolicyViolation); one whose policy
   * puts backup under dual control needs `requestId`, a backup request for that application with
   * enough distinct approvers. The request is used up only by a completed backup, so a backup that
   * fails halfway can be run again under the same approvals. Keys that belong to no application
   * are not the enterprise manager's to govern and pass.
   */
  backupGate(options: { actor: string; requestId?: string }): BackupGate {
    const used = new Map<string, ApprovalRequest>();
    const refuse = async (appId: string, error: HsmError): Promise<never> => {
      await this.audit.append({
        type: 'admin.action',
        actor: options.actor,
        outcome: 'failure',
        baseKeyId: appId,
        details: { action: 'backup', request: options.requestId ?? null, refused: error.message, errorCode: error.code },
      });
      throw error;
    };
    return {
      authorize: async (key) => {
        const appId = key.baseKeyId ?? key.id.replace(/\.v\d+$/, '');
        const app = this.apps.get(appId);
        if (!app) return;
        if (!app.policy.allowedOperations.includes('backup')) {
          return refuse(appId, new HsmError('PolicyViolation', `the key policy of ${appId} does not allow backup (policy.allowedOperations: ${app.policy.allowedOperations.join(', ')})`, { details: { appId, rule: 'allowedOperations' } }));
        }
        const dual = app.policy.dualControl;
        if (!dual?.operations.includes('backup')) return;
        const how = `open a request (olocus-hsm app request --app ${appId} --operation backup --reason ...), have ${dual.required} of ${dual.approvers.join(', ')} approve it, then back up with --request ID`;
        if (!options.requestId) {
          return refuse(appId, new HsmError('PermissionDenied', `backup of ${appId} is under dual control (policy.dualControl): ${how}`, { details: { appId, rule: 'dualControl' } }));
        }
        const request = this.approvals.get(options.requestId);
        if (!request || request.operation !== 'backup' || request.appId !== appId) {
          return refuse(appId, new HsmError('PermissionDenied', `request ${options.requestId} is not a backup request for ${appId}: ${how}`, { details: { appId, rule: 'dualControl', request: options.requestId } }));
        }
        if (request.state !== 'pending') {
          return refuse(appId, new HsmError('PermissionDenied', `request ${request.id} was already used by a backup; approvals count for one backup: ${how}`, { details: { appId, rule: 'dualControl', request: request.id } }));
        }
        const approvers = [...new Set(request.approvers)];
        if (approvers.length < request.required) {
          return refuse(
            appId,
            new HsmError('PermissionDenied', `backup of ${appId} needs ${request.required} distinct approvers; request ${request.id} has ${approvers.length} (${approvers.join(', ') || 'none'}): olocus-hsm approve ${request.id}`, {
              details: { appId, rule: 'dualControl', request: request.id, approvals: approvers.length, required: request.required },
            }),
          );
        }
        used.set(request.id, request);
      },
      complete: async (bundle) => {
        for (const request of used.values()) {
          request.state = 'executed';
          await this.audit.append({
            type: 'admin.action',
            actor: options.actor,
            outcome: 'success',
            baseKeyId: request.appId,
            details: {
              action: 'backup',
              operation: 'backup',
              approvers: [...new Set(request.approvers)].join(','),
              required: request.required,
              request: request.id,
              reason: request.reason,
              file: bundle.file,
              sha256: bundle.sha256,
            },
          });
        }
        return [...used.values()];
      },
    };
  }
}
