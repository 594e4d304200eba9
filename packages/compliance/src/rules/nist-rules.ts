import { exists, finding, notApplicable, pass, PerKeyTally, plural, scanningRule } from './helpers.js';
import { loggedEventTypes } from './pci-rules.js';
import { claimsFipsValidation, fipsEvidenceOf } from './inputs.js';
import type { Finding, Rule } from './types.js';

/** Part D of COMPLIANCE-RULES.md: SOC 2 and NIST SP 800-53 (FISMA). */

export const SOC2_CC6_1: Rule = {
  id: 'SOC2-CC6.1',
  title: 'Evidence of key protection through generation, storage, use and destruction',
  frameworks: ['soc2'],
  severity: 'MED',
  source: 'AICPA TSC 2017 CC6.1 (points of focus: protects encryption keys)',
  category: 'governance',
  async evaluate(ctx) {
    let sawRecord = false;
    for await (const _ of ctx.records()) {
      sawRecord = true;
      break;
    }
    if (ctx.versions.length === 0 && !sawRecord) return [notApplicable(this, 'no keys in the inventory and no audit records in the period')];
    const out: Finding[] = [];
    const evidence: string[] = [];
    // Generation: a recorded creation (from = null) for every version.
    const unrecorded = ctx.versions.filter((e) => !e.history.some((h) => h.from === null));
    if (unrecorded.length > 0) {
      out.push(finding(this, 'violation', 'MED', `no recorded generation for ${plural(unrecorded.length, 'key version')} (${unrecorded.slice(0, 5).map((e) => e.version.keyId).join(', ')}${unrecorded.length > 5 ? ', …' : ''})`, 'Create keys through the rotation registry so each generation is recorded with its actor and reason.', { keyId: unrecorded[0]!.version.keyId, evidence: { phase: 'generation', versions: unrecorded.length } }));
    } else evidence.push(`generation recorded for ${plural(ctx.versions.length, 'version')}`);
    // Storage: module facts for every backend that holds a key.
    const backends = new Set(ctx.versions.filter(exists).map((e) => e.version.backend));
    const noFacts = [...backends].filter((b) => !ctx.moduleFor(b));
    if (noFacts.length > 0) {
      out.push(finding(this, 'violation', 'MED', `no module facts for backend(s) holding keys: ${noFacts.join(', ')}`, 'Pass every backend\'s info, FIPS status and capabilities to the report so key storage is evidenced.', { evidence: { phase: 'storage', backends: noFacts.join(',') } }));
    } else evidence.push(`storage described for ${plural(backends.size, 'backend')}`);
    // Use: signing and verification are logged and the log verifies.
    const { types } = loggedEventTypes(ctx);
    const verification = await ctx.verification();
    if (!types.has('key.sign') || !types.has('key.verify') || !verification.ok) {
      out.push(finding(this, 'violation', 'MED', !verification.ok ? `key use cannot be evidenced: the audit chain does not verify (${verification.message})` : 'key use is not logged (key.sign / key.verify missing from the logged event types)', 'Log every signature and verification in the tamper-evident audit log.', { evidence: { phase: 'use' } }));
    } else evidence.push('use logged in a verified audit chain');
    // Destruction: a policy with a waiting period, and recorded destructions.
    const policy = ctx.config.policy.destruction;
    const destroyedUnrecorded = ctx.versions.filter((e) => e.version.state === 'Destroyed' && !e.history.some((h) => h.to === 'Destroyed'));
    if (policy.waitingDays < ctx.config.destruction.minimumWaitDays || destroyedUnrecorded.length > 0) {
      out.push(finding(this, 'violation', 'MED', destroyedUnrecorded.length > 0 ? `${plural(destroyedUnrecorded.length, 'destroyed version')} without a recorded destruction` : `the destruction waiting period (${policy.waitingDays} days) is under the minimum`, 'Destroy keys only through the registry\'s scheduled destruction, which records each step.', { evidence: { phase: 'destruction' } }));
    } else evidence.push(`destruction after a ${policy.waitingDays}-day waiting period`);
    return out.length > 0 ? out : [pass(this, evidence.join('; '))];
  },
};

const RULE_AREAS = ['generation', 'storage', 'access', 'destruction'] as const;

export const NIST_SC_12: Rule = {
  id: 'NIST-SC-12',
  title: 'Defined rules for key generation, storage, access and destruction; backup against key loss',
  frameworks: ['fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-53 Rev 5 SC-12 and SC-12(1)',
  category: 'governance',
  async evaluate(ctx) {
    const rules = ctx.config.policy.keyManagementRules;
    const out: Finding[] = [];
    for (const area of RULE_AREAS) {
      if (!rules[area]) out.push(finding(this, 'violation', 'HIGH', `no documented rule for key ${area}`, `Document the key ${area} rule and reference it in policy.keyManagementRules.${area}.`, { evidence: { area } }));
    }
    const backup = ctx.config.policy.backup;
    if (!backup) out.push(finding(this, 'warning', 'LOW', 'SC-12(1): no key backup facts were given', 'State whether keys are backed up (policy.backup); for signing-only keys, document that a lost key is replaced by rotation.'));
    else if (!backup.exists) out.push(finding(this, 'violation', 'HIGH', 'SC-12(1): keys are not backed up: a lost key cannot be recovered', 'Back keys up under a wrapping key inside the HSM (or document the replacement procedure for signing-only keys).'));
    return out.length > 0 ? out : [pass(this, `documented rules: ${RULE_AREAS.map((a) => `${a} (${rules[a]})`).join(', ')}; keys backed up`)];
  },
};

export const NIST_SC_13: Rule = {
  id: 'NIST-SC-13',
  title: 'Cryptography runs in a FIPS-validated module where one is required',
  frameworks: ['fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-53 Rev 5 SC-13',
  category: 'confidentiality',
  async evaluate(ctx) {
    if (!ctx.config.policy.requireValidatedModule) return [notApplicable(this, 'the policy does not require a FIPS-validated module (policy.requireValidatedModule is false)')];
    const counts = new Map<string, number>();
    for (const e of ctx.versions) if (exists(e)) counts.set(e.version.backend, (counts.get(e.version.backend) ?? 0) + 1);
    for (const m of ctx.modules) if (!counts.has(m.backend)) counts.set(m.backend, 0);
    const out: Finding[] = [];
    for (const [backend, keys] of counts) {
      const m = ctx.moduleFor(backend);
      if (!m) {
        out.push(finding(this, 'warning', 'LOW', `no module facts for backend ${backend} (${plural(keys, 'key')}): whether it is FIPS-validated is unknown`, `Pass ${backend}'s module facts to the report.`, { keyId: backend }));
      } else if (!claimsFipsValidation(m.fips) || !m.fips.approvedMode) {
        const what = m.fips.standard === 'none' ? 'is not a FIPS-validated module' : !claimsFipsValidation(m.fips) ? 'has a FIPS validation that could not be established' : 'is not in its approved mode';
        out.push(finding(this, 'violation', 'HIGH', `backend ${backend} (${plural(keys, 'key')}) ${what}`, `Hold keys that need FIPS-validated cryptography in a validated module running in approved mode (${backend}: ${m.fips.notes.split('.')[0]}).`, { keyId: backend, evidence: { standard: m.fips.standard, approvedMode: m.fips.approvedMode, evidence: fipsEvidenceOf(m.fips), keys } }));
      }
    }
    return out.length > 0 ? out : [pass(this, `every backend holding keys is FIPS-validated and in approved mode (${[...counts.keys()].map((b) => { const m = ctx.moduleFor(b); return m ? `${b}: ${fipsEvidenceOf(m.fips)}` : b; }).join(', ') || 'none'})`)];
  },
};

export const NIST_AU_9: Rule = {
  id: 'NIST-AU-9',
  title: 'Audit information protected from change and deletion, with cryptographic integrity and tamper alerts',
  frameworks: ['fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-53 Rev 5 AU-9 and AU-9(3)',
  category: 'integrity',
  async evaluate(ctx) {
    const v = await ctx.verification();
    const s = ctx.audit.settings;
    const out: Finding[] = [];
    if (!v.ok) out.push(finding(this, 'violation', 'HIGH', `the audit chain does not verify: ${v.message}`, 'Investigate from the first bad record and restore a verified copy.', { evidence: { problem: v.problem ?? 'unknown', firstBadSeq: v.firstBadSeq ?? 0 } }));
    if (!s.checkpointsSigned) out.push(finding(this, 'violation', 'HIGH', 'AU-9(3): audit checkpoints are not signed', 'Sign checkpoints with an HSM key so the log head is anchored cryptographically.'));
    if (!s.alertsConfigured) out.push(finding(this, 'violation', 'HIGH', 'no alert is raised when tampering or an audit failure is detected', 'Configure an alert sink (onFailure / monitoring alerts) for the audit log.'));
    return out.length > 0 ? out : [pass(this, `hash chain verified (${plural(v.records, 'record')}), checkpoints signed, tamper alerts configured`)];
  },
};

export const NIST_AU_10: Rule = scanningRule({
  id: 'NIST-AU-10',
  title: 'Every action is bound to an authenticated actor',
  frameworks: ['fisma'],
  severity: 'MED',
  source: 'NIST SP 800-53 Rev 5 AU-10',
  category: 'integrity',
  scan(ctx) {
    const unauthenticated = new Set(ctx.config.audit.unauthenticatedActors);
    const tally = new PerKeyTally();
    let records = 0;
    return {
      visit: (r) => {
        records++;
        const actor = typeof r.actor === 'string' ? r.actor.trim() : '';
        if (unauthenticated.has(actor)) tally.add(actor === '' ? '(empty)' : actor, r, undefined);
      },
      finish: async () => {
        const out: Finding[] = [];
        for (const [actor, t] of tally) {
          out.push(finding(this, 'violation', 'MED', `${plural(t.count, 'action')} recorded with actor "${actor}", bound to no authenticated identity (first seq ${t.first.seq}, ${t.first.type})`, 'Authenticate callers and record their identity as the actor (service account, user, or OS user).', { time: t.first.time, evidence: { actor, records: t.count, firstSeq: t.first.seq } }));
        }
        return out.length > 0 ? out : [pass(this, `${plural(records, 'audit record')}, each bound to a named actor`)];
      },
    };
  },
});

export const NIST_AU_11: Rule = {
  id: 'NIST-AU-11',
  title: 'Audit records retained for the configured period',
  frameworks: ['fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-53 Rev 5 AU-11',
  category: 'availability',
  async evaluate(ctx) {
    const s = ctx.audit.settings;
    const required = ctx.config.retention.totalDays;
    if (s.retentionDays < required) {
      return [finding(this, 'violation', 'HIGH', `audit retention is ${s.retentionDays} days, under the configured ${required}`, `Set the audit log's retention.days to at least ${required}.`, { evidence: { retentionDays: s.retentionDays, requiredDays: required } })];
    }
    return [pass(this, `retention ${s.retentionDays} days (required ${required})`)];
  },
};

export const NIST_AU_5: Rule = {
  id: 'NIST-AU-5',
  title: 'Alert and fail closed when audit logging fails',
  frameworks: ['fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-53 Rev 5 AU-5',
  category: 'availability',
  async evaluate(ctx) {
    const s = ctx.audit.settings;
    if (!s.failClosed && !s.alertsConfigured) {
      return [finding(this, 'violation', 'HIGH', 'audit logging failures neither stop operations (fail-closed is off) nor raise an alert', 'Turn on failClosed (operations are refused when their record cannot be written) and configure an alert.')];
    }
    if (!s.alertsConfigured) return [finding(this, 'warning', 'LOW', 'audit logging fails closed but raises no alert', 'Configure an alert for audit failures so operators learn why operations are refused.')];
    if (!s.failClosed) return [finding(this, 'warning', 'LOW', 'audit logging failures raise an alert but operations continue unaudited (fail-closed is off)', 'Turn on failClosed where every operation must be audited.')];
    return [pass(this, 'audit logging fails closed and alerts on failure')];
  },
};

export const NIST_RULES: readonly Rule[] = [SOC2_CC6_1, NIST_SC_12, NIST_SC_13, NIST_AU_9, NIST_AU_10, NIST_AU_11, NIST_AU_5];
