import { AUDIT_EVENT_TYPES, type AuditEventType, type AuditRecord } from '../audit/types.js';
import { cryptoperiodDays } from './config.js';
import { approverSet, canSign, DAY_MS, detail, exists, finding, iso, pass, PerKeyTally, plural, recordKey, scanningRule, signatureTime } from './helpers.js';
import { compromisedAt, cryptoperiodEnd, successorBy } from './lifecycle-rules.js';
import type { Finding, Rule, RuleContext } from './types.js';

/** Part C of COMPLIANCE-RULES.md: PCI DSS v4.0.1. */

const PCI = ['pci-dss'] as const;

export const PCI_3_6_1_2: Rule = scanningRule({
  id: 'PCI-3.6.1.2',
  title: 'Private keys exist only inside an HSM (or wrapped)',
  frameworks: PCI,
  severity: 'CRIT',
  source: 'PCI DSS v4.0.1 Requirement 3.6.1.2',
  category: 'confidentiality',
  scan(ctx) {
    const out: Finding[] = [];
    const unknownBackends = new Map<string, number>();
    const inventoryIds = new Set<string>();
    let hardware = 0;
    for (const e of ctx.versions) {
      inventoryIds.add(e.version.keyId);
      if (!exists(e)) continue;
      const m = ctx.moduleFor(e.version.backend);
      if (!m) {
        unknownBackends.set(e.version.backend, (unknownBackends.get(e.version.backend) ?? 0) + 1);
        continue;
      }
      if (m.capabilities.hardwareBacked) {
        hardware++;
        continue;
      }
      out.push(
        finding(this, 'violation', 'CRIT', `private key ${e.version.keyId} (${e.version.state}) is held by backend ${e.version.backend}, which is not hardware-backed`, `Move ${e.version.baseKeyId} to an HSM backend (pkcs11, CloudHSM, Managed HSM, Cloud KMS HSM): rotate into it, then destroy the software versions.`, {
          keyId: e.version.keyId,
          evidence: { backend: e.version.backend, state: e.version.state },
        }),
      );
    }
    // Keys the audit log shows being created or used outside the inventory (standalone backend keys).
    const seen = new Map<string, AuditRecord>();
    return {
      types: ['key.generate', 'key.sign', 'key.destroy'],
      visit: (r) => {
        if (r.outcome !== 'success' || !r.keyId || inventoryIds.has(r.keyId)) return;
        const id = `${r.backend ?? ''}\u0000${r.keyId}`;
        if (r.type === 'key.destroy') seen.delete(id);
        else if (!seen.has(id)) seen.set(id, r);
      },
      finish: async () => {
        for (const r of seen.values()) {
          const m = ctx.moduleFor(r.backend);
          if (!m || m.capabilities.hardwareBacked) continue;
          out.push(
            finding(this, 'violation', 'CRIT', `private key ${r.keyId} (outside the inventory, seen in the audit log: ${r.type} at seq ${r.seq}) is held by backend ${r.backend}, which is not hardware-backed`, `Move ${r.keyId} into an HSM backend, or destroy it if it is not needed.`, {
              keyId: r.keyId,
              time: r.time,
              evidence: { backend: r.backend ?? '', seq: r.seq },
            }),
          );
        }
        for (const [backend, count] of unknownBackends) {
          out.push(finding(this, 'warning', 'LOW', `${plural(count, 'private key')} on backend ${backend}, for which no module facts were given: whether it is hardware-backed is unknown`, `Pass ${backend}'s module facts (info, fipsStatus, capabilities) to the compliance manager.`, { keyId: backend }));
        }
        return out.length > 0 ? out : [pass(this, `${plural(hardware, 'private key')}, all inside hardware-backed modules`)];
      },
    };
  },
});

export const PCI_3_7_4: Rule = scanningRule({
  id: 'PCI-3.7.4',
  title: 'Every key type has a defined cryptoperiod and no key is used beyond it',
  frameworks: PCI,
  severity: 'HIGH',
  source: 'PCI DSS v4.0.1 Requirement 3.7.4',
  category: 'confidentiality',
  scan(ctx) {
    const out: Finding[] = [];
    const undefinedTypes = new Map<string, number>();
    const ends = new Map<string, Date>();
    for (const e of ctx.versions) {
      if (!exists(e)) continue;
      if (cryptoperiodDays(ctx.config, e.version.algorithm) === null) {
        undefinedTypes.set(e.version.algorithm, (undefinedTypes.get(e.version.algorithm) ?? 0) + 1);
        continue;
      }
      const cp = cryptoperiodEnd(e, ctx.config)!;
      ends.set(e.version.keyId, cp.end);
      if (e.version.state === 'Active' && cp.end.getTime() < ctx.now.getTime()) {
        out.push(finding(this, 'violation', 'HIGH', `${e.version.keyId} is Active beyond its cryptoperiod (ended ${iso(cp.end)})`, `Retire ${e.version.keyId}: rotate ${e.version.baseKeyId}.`, { keyId: e.version.keyId, time: iso(cp.end), evidence: { cryptoperiodDays: cp.days } }));
      }
    }
    for (const [algorithm, count] of undefinedTypes) {
      out.push(finding(this, 'violation', 'HIGH', `key type ${algorithm} has no defined cryptoperiod (${plural(count, 'version')})`, `Define a cryptoperiod for ${algorithm} (policy.cryptoperiod.signingDays or byAlgorithm).`, { evidence: { algorithm, versions: count } }));
    }
    const late = new PerKeyTally<Date>();
    return {
      types: ['key.sign'],
      visit: (r) => {
        if (r.outcome !== 'success') return;
        const entry = ctx.findVersion(r.keyId, r.baseKeyId, r.keyVersion);
        const end = entry ? ends.get(entry.version.keyId) : undefined;
        if (entry && end && signatureTime(r).getTime() > end.getTime()) late.add(entry.version.keyId, r, end);
      },
      finish: async () => {
        for (const [key, t] of late) {
          out.push(finding(this, 'violation', 'HIGH', `${plural(t.count, 'signature')} by ${key} after its cryptoperiod ended ${iso(t.extra)} (first seq ${t.first.seq})`, `Retire ${key} at the end of its cryptoperiod.`, { keyId: key, time: t.first.time, evidence: { signatures: t.count, firstSeq: t.first.seq } }));
        }
        return out.length > 0 ? out : [pass(this, 'every key type in use has a defined cryptoperiod; no key used beyond it')];
      },
    };
  },
});

export const PCI_3_7_5: Rule = {
  id: 'PCI-3.7.5',
  title: 'Keys are retired or replaced at the end of their cryptoperiod and on suspected compromise',
  frameworks: PCI,
  severity: 'HIGH',
  source: 'PCI DSS v4.0.1 Requirement 3.7.5',
  category: 'confidentiality',
  async evaluate(ctx) {
    const out: Finding[] = [];
    for (const e of ctx.versions) {
      if (e.version.state === 'Active' && canSign(e)) {
        const cp = cryptoperiodEnd(e, ctx.config);
        if (cp && cp.end.getTime() < ctx.now.getTime() && !successorBy(ctx, e)) {
          out.push(finding(this, 'violation', 'HIGH', `${e.version.keyId} reached the end of its cryptoperiod (${iso(cp.end)}) and was not replaced`, `Rotate ${e.version.baseKeyId} and give it a rotation interval shorter than the cryptoperiod.`, { keyId: e.version.keyId, time: iso(cp.end) }));
        }
      }
      const compromised = compromisedAt(e, ctx);
      if (compromised && !successorBy(ctx, e)) {
        out.push(finding(this, 'violation', 'HIGH', `${e.version.keyId} was revoked as compromised at ${iso(compromised)} and ${e.version.baseKeyId} was not replaced`, `Rotate ${e.version.baseKeyId} (emergency rotation).`, { keyId: e.version.keyId, time: iso(compromised) }));
      }
    }
    for (const k of ctx.keys) {
      if (k.rotationIntervalMs === undefined && k.versions.some((v) => v.state === 'Active')) {
        out.push(finding(this, 'warning', 'LOW', `${k.baseKeyId} has no rotation schedule: replacement at the end of the cryptoperiod depends on a manual rotation`, `Give ${k.baseKeyId} a rotation interval (rotation policy rotationInterval or createKey's rotationIntervalMs).`, { keyId: k.baseKeyId }));
      }
    }
    return out.length > 0 ? out : [pass(this, 'every key past its cryptoperiod or compromised has been replaced; every logical key has a rotation schedule')];
  },
};

type ManualOperation = 'destroy' | 'emergencyRotation' | 'restore';

function manualOperation(r: AuditRecord, ctx: RuleContext): ManualOperation | undefined {
  if (r.outcome !== 'success') return undefined;
  const action = (detail(r, 'action') || detail(r, 'operation')).toLowerCase();
  if (/restore/.test(action) || (r.type === 'key.import' && detail(r, 'source').toLowerCase() === 'backup')) return 'restore';
  if (ctx.isAutomatedActor(r.actor)) return undefined;
  if (r.type === 'key.destroy') {
    // Destroying a version whose destruction was scheduled carries out the decision made (and
    // approved) when it was scheduled; a destroy of anything else is itself the manual decision.
    const entry = ctx.findVersion(r.keyId, r.baseKeyId, r.keyVersion);
    if (entry && ctx.stateAt(entry, new Date(Date.parse(r.time) - 1)) === 'PendingDestruction') return undefined;
    return 'destroy';
  }
  if (r.type === 'key.state' && detail(r, 'to') === 'PendingDestruction') return 'destroy';
  if (r.type === 'key.rotate' && detail(r, 'kind') === 'emergency') return 'emergencyRotation';
  if (r.type === 'admin.action' && /emergency/.test(action)) return 'emergencyRotation';
  return undefined;
}

const OPERATION_NAMES: Record<ManualOperation, string> = { destroy: 'key destruction', emergencyRotation: 'emergency rotation', restore: 'key restore from backup' };

export const PCI_3_7_6: Rule = scanningRule({
  id: 'PCI-3.7.6',
  title: 'Manual key operations under dual control (two distinct approvers)',
  frameworks: PCI,
  severity: 'HIGH',
  source: 'PCI DSS v4.0.1 Requirement 3.7.6',
  category: 'confidentiality',
  scan(ctx) {
    const out: Finding[] = [];
    const policy = ctx.config.policy.dualControl;
    for (const op of ['destroy', 'emergencyRotation', 'restore'] as const) {
      if (policy[op] < 2) {
        out.push(finding(this, 'violation', 'HIGH', `the policy requires ${plural(policy[op], 'approver')} for ${OPERATION_NAMES[op]}: dual control needs two`, `Set policy.dualControl.${op} to 2 or more and enforce it in the operation's workflow.`, { evidence: { operation: op, approvers: policy[op] } }));
      }
    }
    let manual = 0;
    return {
      types: ['key.destroy', 'key.state', 'key.rotate', 'key.import', 'admin.action'],
      visit: (r) => {
        const op = manualOperation(r, ctx);
        if (!op) return;
        manual++;
        const required = Math.max(2, policy[op]);
        const approvers = approverSet(r);
        if (approvers.size < required) {
          out.push(
            finding(this, 'violation', 'HIGH', `${OPERATION_NAMES[op]} of ${recordKey(r)} by ${r.actor || '(no actor)'} (seq ${r.seq}) has ${approvers.size === 0 ? 'no recorded approver' : `only ${plural(approvers.size, 'distinct approver')}`}; ${required} are required`, `Require ${required} distinct approvers for ${OPERATION_NAMES[op]} and record them in the audit record (details.approvers).`, {
              keyId: recordKey(r),
              time: r.time,
              evidence: { seq: r.seq, operation: op, approvers: approvers.size, required },
            }),
          );
        }
      },
      finish: async () => {
        return out.length > 0 ? out : [pass(this, `dual control required by policy; ${plural(manual, 'manual key operation')} in the period, each with enough distinct approvers`)];
      },
    };
  },
});

export const PCI_3_7_7: Rule = scanningRule({
  id: 'PCI-3.7.7',
  title: 'Key replacement and import only as an authorised operation with a fingerprint check',
  frameworks: PCI,
  severity: 'HIGH',
  source: 'PCI DSS v4.0.1 Requirement 3.7.7',
  category: 'confidentiality',
  scan(ctx) {
    const out: Finding[] = [];
    const unauthenticated = new Set(ctx.config.audit.unauthenticatedActors);
    let checked = 0;
    return {
      types: ['key.import', 'key.rotate', 'admin.action'],
      visit: (r) => {
        if (r.outcome !== 'success') return;
        const action = detail(r, 'action').toLowerCase();
        const isImport = r.type === 'key.import' || (r.type === 'key.rotate' && (r.details?.['imported'] === true || ['import', 'replace'].includes(detail(r, 'kind')))) || (r.type === 'admin.action' && /replace|import/.test(action) && !/restore/.test(action));
        if (!isImport) return;
        checked++;
        const authorised = !unauthenticated.has((r.actor ?? '').trim()) && (r.details?.['authorized'] === true || detail(r, 'authorizedBy') !== '' || approverSet(r).size > 0);
        const fingerprint = detail(r, 'fingerprint') !== '' && r.details?.['fingerprintVerified'] !== false;
        if (!authorised || !fingerprint) {
          const missing = [authorised ? '' : 'an authorisation (details.authorizedBy / approvers)', fingerprint ? '' : 'a verified fingerprint (details.fingerprint)'].filter(Boolean).join(' and ');
          out.push(finding(this, 'violation', 'HIGH', `${r.type === 'key.import' ? 'import' : 'replacement'} of ${recordKey(r)} (seq ${r.seq}) without ${missing}`, 'Import or replace keys only through an approved change that records who authorised it and the key fingerprint checked against the source.', { keyId: recordKey(r), time: r.time, evidence: { seq: r.seq } }));
        }
      },
      finish: async () => {
        return out.length > 0 ? out : [pass(this, `${plural(checked, 'key import or replacement', 'key imports or replacements')} in the period, each authorised and fingerprint-checked`)];
      },
    };
  },
});

/** PCI DSS 10.2.1.x event classes and the audit types that record them (every type of a class must be logged). */
export const PCI_EVENT_CLASSES: readonly { id: string; name: string; types: readonly AuditEventType[] }[] = [
  { id: '10.2.1.1', name: 'key access', types: ['key.access', 'key.sign', 'key.verify'] },
  { id: '10.2.1.2', name: 'administrative actions', types: ['admin.action', 'config.change'] },
  { id: '10.2.1.3', name: 'audit-log access', types: ['audit.access'] },
  { id: '10.2.1.4', name: 'invalid access attempts', types: ['auth.failure'] },
  { id: '10.2.1.5', name: 'credential changes', types: ['auth.credential-change'] },
  { id: '10.2.1.6', name: 'audit log start and stop', types: ['audit.start', 'audit.stop'] },
  { id: '10.2.1.7', name: 'key creation and deletion', types: ['key.generate', 'key.destroy'] },
];

/** The event types the deployment logs: config, else the reader's settings when it states them, else every type. */
export function loggedEventTypes(ctx: RuleContext): { types: ReadonlySet<AuditEventType>; source: string } {
  if (ctx.config.audit.loggedEventTypes) return { types: new Set(ctx.config.audit.loggedEventTypes), source: 'config.audit.loggedEventTypes' };
  const stated = (ctx.audit.settings as unknown as { loggedEventTypes?: unknown }).loggedEventTypes;
  if (Array.isArray(stated)) return { types: new Set(stated as AuditEventType[]), source: 'audit settings' };
  return { types: new Set(AUDIT_EVENT_TYPES), source: 'the library audit log (records every event type)' };
}

export const PCI_10_2: Rule = {
  id: 'PCI-10.2',
  title: 'Audit logs capture every required event class',
  frameworks: PCI,
  severity: 'HIGH',
  source: 'PCI DSS v4.0.1 Requirement 10.2.1 (10.2.1.1–10.2.1.7)',
  category: 'integrity',
  async evaluate(ctx) {
    const { types: logged, source } = loggedEventTypes(ctx);
    const out: Finding[] = [];
    const observedClasses: string[] = [];
    for (const c of PCI_EVENT_CLASSES) {
      const missing = c.types.filter((t) => !logged.has(t));
      if (missing.length > 0) {
        out.push(finding(this, 'violation', 'HIGH', `${c.name} (${c.id}) is not logged: ${missing.join(', ')} missing from ${source}`, `Record ${missing.join(', ')} events in the audit log (wire the auditor and the CLI/rotation events to it).`, { evidence: { class: c.id, missing: missing.join(',') } }));
        continue;
      }
      let observed = false;
      for await (const _ of ctx.records(c.types)) {
        observed = true;
        break;
      }
      if (observed) observedClasses.push(c.name);
      else out.push(finding(this, 'info', 'INFO', `${c.name} (${c.id}) is logged but had no event in the period`, 'Nothing to do if none happened; otherwise check that these events reach the audit log.', { evidence: { class: c.id } }));
    }
    if (out.every((f) => f.status === 'info')) out.push(pass(this, `every PCI DSS 10.2.1 event class is logged (${source}); observed in the period: ${observedClasses.join(', ') || 'none'}`));
    return out;
  },
};

const KEY_TYPES: ReadonlySet<string> = new Set(['key.generate', 'key.sign', 'key.verify', 'key.access', 'key.rotate', 'key.state', 'key.destroy', 'key.import']);

export const PCI_10_2_2: Rule = scanningRule({
  id: 'PCI-10.2.2',
  title: 'Every audit record has actor, event type, time, outcome, origin and affected key',
  frameworks: PCI,
  severity: 'HIGH',
  source: 'PCI DSS v4.0.1 Requirement 10.2.2',
  category: 'integrity',
  scan(ctx) {
    const unauthenticated = new Set(ctx.config.audit.unauthenticatedActors);
    const types = new Set<string>(AUDIT_EVENT_TYPES);
    const missing = new PerKeyTally();
    let records = 0;
    return {
      visit: (r) => {
        records++;
        if (typeof r.actor !== 'string' || unauthenticated.has(r.actor.trim())) missing.add('actor', r, undefined);
        if (!types.has(r.type)) missing.add('event type', r, undefined);
        if (r.outcome !== 'success' && r.outcome !== 'failure') missing.add('success/failure', r, undefined);
        if (typeof r.origin !== 'string' || r.origin.trim() === '') missing.add('origin', r, undefined);
        if (KEY_TYPES.has(r.type) && !r.keyId && !r.baseKeyId) missing.add('affected key', r, undefined);
      },
      finish: async () => {
        const out: Finding[] = [];
        for (const [field, t] of missing) {
          out.push(
            finding(this, 'violation', 'HIGH', `${plural(t.count, 'audit record')} without ${field === 'actor' ? 'an identified actor' : `a valid ${field}`} (first seq ${t.first.seq}, ${t.first.type})`, field === 'actor' ? 'Give every caller an authenticated identity and pass it as the audit actor; "unknown" is not an actor.' : `Record the ${field} in every audit record.`, {
              time: t.first.time,
              evidence: { field, records: t.count, firstSeq: t.first.seq },
            }),
          );
        }
        return out.length > 0 ? out : [pass(this, `${plural(records, 'audit record')} in the period, each with actor, type, time, outcome, origin and key where applicable`)];
      },
    };
  },
});

export const PCI_10_3: Rule = {
  id: 'PCI-10.3',
  title: 'Audit records cannot be modified without detection',
  frameworks: PCI,
  severity: 'HIGH',
  source: 'PCI DSS v4.0.1 Requirements 10.3.2 and 10.3.4',
  category: 'integrity',
  async evaluate(ctx) {
    const v = await ctx.verification();
    const out: Finding[] = [];
    if (!v.ok) {
      out.push(finding(this, 'violation', 'HIGH', `the audit chain does not verify: ${v.message}`, 'Investigate the tampering from the first bad record; restore the log from a verified export and keep the checkpoints.', { evidence: { problem: v.problem ?? 'unknown', firstBadSeq: v.firstBadSeq ?? 0, records: v.records } }));
    }
    if (!ctx.audit.settings.checkpointsSigned) {
      out.push(finding(this, 'violation', 'HIGH', 'audit checkpoints are not signed: truncating the tail of the log goes undetected', 'Configure a checkpoint signer (an HSM key) for the audit log.'));
    }
    return out.length > 0 ? out : [pass(this, `hash chain of ${plural(v.records, 'record')} verified with ${plural(v.checkpoints, 'signed checkpoint')}`)];
  },
};

export const PCI_10_5_1: Rule = scanningRule({
  id: 'PCI-10.5.1',
  title: 'Audit history kept 12 months, 3 months immediately available',
  frameworks: PCI,
  severity: 'HIGH',
  source: 'PCI DSS v4.0.1 Requirement 10.5.1',
  category: 'availability',
  scan(ctx) {
    const s = ctx.audit.settings;
    const { totalDays, hotDays } = ctx.config.retention;
    const out: Finding[] = [];
    if (s.retentionDays < totalDays) out.push(finding(this, 'violation', 'HIGH', `audit retention is ${s.retentionDays} days, under the required ${totalDays}`, `Set the audit log's retention.days to at least ${totalDays}.`, { evidence: { retentionDays: s.retentionDays, requiredDays: totalDays } }));
    if (s.hotDays < hotDays) out.push(finding(this, 'violation', 'HIGH', `only ${s.hotDays} days of audit history are immediately available, under the required ${hotDays}`, `Set the audit log's retention.hotDays to at least ${hotDays}.`, { evidence: { hotDays: s.hotDays, requiredDays: hotDays } }));
    return {
      types: ['audit.prune'],
      visit: (r) => {
        const before = detail(r, 'before') || detail(r, 'cutoff');
        const t = Date.parse(before);
        if (!Number.isNaN(t) && t > Date.parse(r.time) - totalDays * DAY_MS + 1000) {
          out.push(finding(this, 'violation', 'HIGH', `the audit log was pruned at ${r.time} up to ${before}, less than ${totalDays} days back (seq ${r.seq})`, `Never prune records younger than ${totalDays} days.`, { time: r.time, evidence: { seq: r.seq } }));
        }
      },
      finish: async () => {
        const oldest = await ctx.audit.oldestRecordTime();
        return out.length > 0 ? out : [pass(this, `retention ${s.retentionDays} days (${s.hotDays} immediately available); oldest record ${oldest ? iso(oldest) : 'none'}`)];
      },
    };
  },
});

export const PCI_RULES: readonly Rule[] = [PCI_3_6_1_2, PCI_3_7_4, PCI_3_7_5, PCI_3_7_6, PCI_3_7_7, PCI_10_2, PCI_10_2_2, PCI_10_3, PCI_10_5_1];
