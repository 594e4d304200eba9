import type { AuditRecord } from '../audit/types.js';
import { algorithmFacts } from './algorithm-facts.js';
import { finding, pass, PerKeyTally, plural, recordKey, scanningRule } from './helpers.js';
import type { Finding, Rule } from './types.js';

/** Part E of COMPLIANCE-RULES.md: Common Criteria (CC:2022 Part 2 SFRs; HSM protection profile EN 419 221-5). */

const CC = ['common-criteria'] as const;

export const FCS_CKM_1: Rule = scanningRule({
  id: 'FCS_CKM.1',
  title: 'Key generation with a named algorithm, size and standard',
  frameworks: CC,
  severity: 'MED',
  source: 'CC:2022 Part 2 FCS_CKM.1; EN 419 221-5',
  category: 'governance',
  scan(ctx) {
    const out: Finding[] = [];
    for (const e of ctx.versions) {
      const f = algorithmFacts(e.version.algorithm);
      if (!f.recognised || f.sizeBits === undefined || !f.standard) {
        out.push(finding(this, 'violation', 'MED', `${e.version.keyId}'s generation algorithm "${e.version.algorithm}" does not name a recognised algorithm, size and standard`, 'Generate keys only with the library\'s named algorithms (KeyAlgorithm), whose size and standard are known.', { keyId: e.version.keyId }));
      }
    }
    const tally = new PerKeyTally<string>();
    return {
      types: ['key.generate'],
      visit: (r) => {
        if (r.outcome !== 'success') return;
        const f = r.algorithm ? algorithmFacts(r.algorithm) : undefined;
        if (!f || !f.recognised || f.sizeBits === undefined) tally.add(recordKey(r), r, r.algorithm ?? '(none)');
      },
      finish: async () => {
        for (const [key, t] of tally) {
          out.push(finding(this, 'violation', 'MED', `key generation of ${key} recorded with algorithm ${t.extra} (seq ${t.first.seq}): no recognised algorithm and size`, 'Record the algorithm of every generation.', { keyId: key, time: t.first.time, evidence: { firstSeq: t.first.seq } }));
        }
        return out.length > 0 ? out : [pass(this, `${plural(ctx.versions.length, 'key version')}, each generated with a named algorithm, size and standard`)];
      },
    };
  },
});

export const FCS_CKM_4: Rule = {
  id: 'FCS_CKM.4',
  title: 'Key destruction by a named method',
  frameworks: CC,
  severity: 'MED',
  source: 'CC:2022 Part 2 FCS_CKM.4 (FCS_CKM.6 in CC:2022); EN 419 221-5',
  category: 'confidentiality',
  async evaluate(ctx) {
    const methods = ctx.config.policy.destruction.methods;
    const backends = new Map<string, number>();
    for (const e of ctx.versions) backends.set(e.version.backend, (backends.get(e.version.backend) ?? 0) + 1);
    const out: Finding[] = [];
    for (const [backend, count] of backends) {
      if (!methods[backend]) out.push(finding(this, 'violation', 'MED', `no key destruction method is named for backend ${backend} (${plural(count, 'version')})`, `Name ${backend}'s destruction method in policy.destruction.methods.${backend} (e.g. the vendor's zeroisation per its security policy).`, { keyId: backend }));
    }
    return out.length > 0 ? out : [pass(this, `destruction method named for every backend: ${[...backends.keys()].map((b) => b).join(', ') || 'none'}`)];
  },
};

export const FCS_COP_1: Rule = scanningRule({
  id: 'FCS_COP.1',
  title: 'Each cryptographic operation names its algorithm, size and standard',
  frameworks: CC,
  severity: 'MED',
  source: 'CC:2022 Part 2 FCS_COP.1',
  category: 'integrity',
  scan() {
    const tally = new PerKeyTally<string>();
    let ops = 0;
    return {
      types: ['key.sign', 'key.verify'],
      visit: (r) => {
        ops++;
        const f = r.algorithm ? algorithmFacts(r.algorithm) : undefined;
        if (!f || !f.recognised || f.sizeBits === undefined) tally.add(recordKey(r), r, r.algorithm ?? '(none)');
      },
      finish: async () => {
        const out: Finding[] = [];
        for (const [key, t] of tally) {
          out.push(finding(this, 'violation', 'MED', `${plural(t.count, 'operation')} with ${key} recorded without a recognised algorithm (${t.extra}; first seq ${t.first.seq}, ${t.first.type})`, 'Record the algorithm of every signature and verification (sign through a handle, or let the auditor resolve the key).', { keyId: key, time: t.first.time, evidence: { operations: t.count, firstSeq: t.first.seq } }));
        }
        return out.length > 0 ? out : [pass(this, `${plural(ops, 'signature operation')} in the period, each naming its algorithm`)];
      },
    };
  },
});

const MANAGEMENT_TYPES = ['key.generate', 'key.rotate', 'key.state', 'key.destroy', 'key.import'] as const;
const SECRET_NAME = /secret|password|passphrase|^pin$|pin[-_]?code|private[-_]?key|master[-_]?key|api[-_]?key|token/i;

function secretFields(r: AuditRecord): string[] {
  return Object.entries(r.details ?? {})
    .filter(([k, v]) => SECRET_NAME.test(k) && typeof v === 'string' && v.length > 0 && !/^sha(256|384|512):/i.test(v))
    .map(([k]) => k);
}

export const FAU_GEN: Rule = scanningRule({
  id: 'FAU_GEN',
  title: 'Key-management events audited with key attributes, never secret values',
  frameworks: CC,
  severity: 'HIGH',
  source: 'CC:2022 Part 2 FAU_GEN.1 / FAU_GEN.2; EN 419 221-5',
  category: 'integrity',
  scan() {
    const noKey = new PerKeyTally();
    const secrets = new PerKeyTally<string>();
    const outcomes = { success: 0, failure: 0 };
    return {
      visit: (r) => {
        const fields = secretFields(r);
        if (fields.length > 0) secrets.add(r.type, r, fields.join(', '));
        if (!(MANAGEMENT_TYPES as readonly string[]).includes(r.type)) return;
        if (r.outcome === 'success' || r.outcome === 'failure') outcomes[r.outcome]++;
        if (!r.keyId && !r.baseKeyId) noKey.add(r.type, r, undefined);
      },
      finish: async () => {
        const out: Finding[] = [];
        for (const [type, t] of secrets) {
          out.push(finding(this, 'violation', 'HIGH', `${plural(t.count, `${type} record`)} carry what look like secret values in details (${t.extra}; first seq ${t.first.seq})`, 'Never put secrets in audit details: record digests or identifiers; rotate any credential that was logged.', { time: t.first.time, evidence: { records: t.count, firstSeq: t.first.seq, fields: t.extra } }));
        }
        for (const [type, t] of noKey) {
          out.push(finding(this, 'violation', 'MED', `${plural(t.count, `${type} record`)} without the key's identity (first seq ${t.first.seq})`, 'Record the key id (and logical key and version) in every key-management record.', { time: t.first.time, evidence: { records: t.count, firstSeq: t.first.seq } }));
        }
        return out.length > 0 ? out : [pass(this, `key-management events recorded with key attributes (${outcomes.success} successes, ${outcomes.failure} failures in the period); no secret values`)];
      },
    };
  },
});

export const CC_RULES: readonly Rule[] = [FCS_CKM_1, FCS_CKM_4, FCS_COP_1, FAU_GEN];
