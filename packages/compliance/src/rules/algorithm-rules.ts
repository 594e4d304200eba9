import type { AuditEventType, AuditRecord } from '../audit/types.js';
import { algorithmFacts, mentionsSha1 } from './algorithm-facts.js';
import { cutoff, type ResolvedComplianceConfig } from './config.js';
import { canSign, exists, finding, notApplicable, pass, PerKeyTally, plural, recordKey, scanningRule, signatureTime } from './helpers.js';
import type { Finding, Rule, Severity } from './types.js';
import { claimsFipsValidation, fipsEvidenceOf, fipsFindingsOf } from './inputs.js';

/** Part A of COMPLIANCE-RULES.md: algorithms and modules (FIPS 140-3, SP 800-131A, FIPS 186-5, SP 800-186). */

const ALL = ['fips-140-2', 'fips-140-3', 'common-criteria', 'pci-dss', 'soc2', 'fisma'] as const;

/** Audit record types that name an algorithm. */
const ALGORITHM_RECORD_TYPES: readonly AuditEventType[] = ['key.generate', 'key.sign', 'key.verify', 'key.access', 'key.import', 'key.rotate'];

export const ALG_RSA_MIN: Rule = scanningRule({
  id: 'ALG-RSA-MIN',
  title: 'RSA signature generation needs a modulus of at least 2048 bits',
  frameworks: ALL,
  severity: 'CRIT',
  source: 'NIST SP 800-131A Rev 2 §3 (Table 2); FIPS 186-5 §5.1',
  category: 'integrity',
  scan(ctx) {
    const min = ctx.config.algorithms.rsaMinBits;
    const out: Finding[] = [];
    let checked = 0;
    for (const e of ctx.versions) {
      if (!canSign(e)) continue;
      checked++;
      const f = algorithmFacts(e.version.algorithm);
      if (f.family === 'RSA' && f.modulusBits !== undefined && f.modulusBits < min) {
        out.push(
          finding(this, 'violation', 'CRIT', `${e.version.keyId} is an RSA-${f.modulusBits} key that may sign (state ${e.version.state}); signature generation needs at least ${min} bits`, `Stop signing with ${e.version.keyId}: rotate ${e.version.baseKeyId} to RSA-3072 or ECDSA P-256/P-384 and revoke this version.`, {
            keyId: e.version.keyId,
            evidence: { algorithm: e.version.algorithm, modulusBits: f.modulusBits, state: e.version.state },
          }),
        );
      }
    }
    const tally = new PerKeyTally<number>();
    return {
      types: ['key.sign'],
      visit: (r) => {
        if (r.outcome !== 'success' || !r.algorithm) return;
        const f = algorithmFacts(r.algorithm);
        if (f.family === 'RSA' && f.modulusBits !== undefined && f.modulusBits < min) tally.add(recordKey(r), r, f.modulusBits);
      },
      finish: () => {
        for (const [key, t] of tally) {
          out.push(
            finding(this, 'violation', 'CRIT', `${plural(t.count, 'signature')} made with RSA-${t.extra} key ${key} in the period (first at ${t.first.time}, seq ${t.first.seq})`, `Re-sign what ${key} signed with an approved key (RSA ≥ ${min} bits or ECDSA) and retire the key.`, {
              keyId: key,
              time: t.first.time,
              evidence: { signatures: t.count, firstSeq: t.first.seq, algorithm: t.first.algorithm },
            }),
          );
        }
        return out.length > 0 ? out : [pass(this, `no signing-capable RSA key under ${min} bits (${plural(checked, 'signing-capable version')} checked) and no such signature in the period`)];
      },
    };
  },
});

function alg112Severity(now: Date, config: ResolvedComplianceConfig): Severity {
  return now.getTime() > cutoff(config.dates.alg112AllowedUntil).getTime() ? 'HIGH' : 'INFO';
}

function is112(securityBits: number | undefined): boolean {
  return securityBits !== undefined && securityBits >= 112 && securityBits < 128;
}

export const ALG_112: Rule = scanningRule({
  id: 'ALG-112',
  title: '112-bit protection (RSA-2048, P-224) is allowed only until the configured date',
  frameworks: ['fips-140-2', 'fips-140-3', 'pci-dss', 'fisma'],
  severity: 'HIGH',
  severityAt: alg112Severity,
  source: 'NIST SP 800-131A Rev 3 (draft) §3; SP 800-57 Part 1 Rev 5 §5.6.3',
  category: 'integrity',
  scan(ctx) {
    const until = ctx.config.dates.alg112AllowedUntil;
    const limit = cutoff(until).getTime();
    const severity = alg112Severity(ctx.now, ctx.config);
    const out: Finding[] = [];
    for (const e of ctx.versions) {
      if (!canSign(e)) continue;
      const f = algorithmFacts(e.version.algorithm);
      if (!is112(f.securityBits)) continue;
      const remediation = `Rotate ${e.version.baseKeyId} to a 128-bit algorithm (RSA-3072, ECDSA P-256) ${severity === 'INFO' ? `before ${until}` : 'now'}.`;
      const evidence = { algorithm: e.version.algorithm, securityBits: 112, allowedUntil: until };
      out.push(
        severity === 'INFO'
          ? finding(this, 'info', 'INFO', `${e.version.keyId} (${e.version.algorithm}) protects at 112-bit strength: allowed until ${until}`, remediation, { keyId: e.version.keyId, evidence })
          : finding(this, 'violation', 'HIGH', `${e.version.keyId} (${e.version.algorithm}) protects at 112-bit strength after ${until}`, remediation, { keyId: e.version.keyId, evidence }),
      );
    }
    const tally = new PerKeyTally();
    return {
      types: ['key.sign'],
      visit: (r) => {
        if (r.outcome !== 'success' || !r.algorithm || signatureTime(r).getTime() <= limit) return;
        if (is112(algorithmFacts(r.algorithm).securityBits)) tally.add(recordKey(r), r, undefined);
      },
      finish: () => {
        for (const [key, t] of tally) {
          out.push(
            finding(this, 'violation', 'HIGH', `${plural(t.count, 'signature')} at 112-bit strength made with ${key} after ${until} (first at ${t.first.time}, seq ${t.first.seq})`, `Rotate the logical key of ${key} to RSA-3072 or ECDSA P-256 and re-sign long-lived data.`, {
              keyId: key,
              time: t.first.time,
              evidence: { signatures: t.count, firstSeq: t.first.seq, algorithm: t.first.algorithm },
            }),
          );
        }
        return out.length > 0 ? out : [pass(this, 'no signing-capable key at 112-bit strength and no 112-bit signature after the allowed date')];
      },
    };
  },
});

function pqSeverity(now: Date, config: ResolvedComplianceConfig, securityBits: number | undefined): Severity {
  const t = now.getTime();
  if (t > cutoff(config.dates.pqDisallowedAfter).getTime()) return 'CRIT';
  if (securityBits !== undefined && securityBits < 128 && t > cutoff(config.dates.pqDeprecated112After).getTime()) return 'HIGH';
  return 'INFO';
}

export const ALG_PQ: Rule = {
  id: 'ALG-PQ',
  title: 'Quantum-vulnerable signatures (RSA, ECDSA, EdDSA) must migrate to ML-DSA',
  frameworks: ['fips-140-2', 'fips-140-3', 'fisma'],
  severity: 'CRIT',
  severityAt: (now, config) => pqSeverity(now, config, 112),
  source: 'NIST IR 8547 (initial public draft) §4; FIPS 204 (ML-DSA)',
  category: 'integrity',
  async evaluate(ctx) {
    const { pqDeprecated112After, pqDisallowedAfter } = ctx.config.dates;
    const out: Finding[] = [];
    for (const e of ctx.versions) {
      if (!canSign(e)) continue;
      const f = algorithmFacts(e.version.algorithm);
      if (!f.quantumVulnerable) continue;
      const severity = pqSeverity(ctx.now, ctx.config, f.securityBits);
      const evidence = { algorithm: e.version.algorithm, deprecated112After: pqDeprecated112After, disallowedAfter: pqDisallowedAfter };
      const remediation = `Plan the migration of ${e.version.baseKeyId} to ML-DSA (FIPS 204) ${severity === 'INFO' ? `before ${f.securityBits !== undefined && f.securityBits < 128 ? pqDeprecated112After : pqDisallowedAfter}` : 'now'}; keep verifying old signatures with the classical key.`;
      if (severity === 'INFO') {
        out.push(finding(this, 'info', 'INFO', `${e.version.keyId} (${e.version.algorithm}) is quantum-vulnerable: ${f.securityBits !== undefined && f.securityBits < 128 ? `deprecated after ${pqDeprecated112After}` : `disallowed after ${pqDisallowedAfter}`} (NIST IR 8547 draft)`, remediation, { keyId: e.version.keyId, evidence }));
      } else {
        out.push(finding(this, 'violation', severity, `${e.version.keyId} (${e.version.algorithm}) is quantum-vulnerable and ${severity === 'CRIT' ? `disallowed after ${pqDisallowedAfter}` : `deprecated at 112-bit strength after ${pqDeprecated112After}`}`, remediation, { keyId: e.version.keyId, evidence }));
      }
    }
    return out.length > 0 ? out : [pass(this, 'no signing-capable quantum-vulnerable key')];
  },
};

export const ALG_CURVE: Rule = scanningRule({
  id: 'ALG-CURVE',
  title: 'ECDSA only on P-224, P-256, P-384 or P-521',
  frameworks: ['fips-140-2', 'fips-140-3', 'common-criteria', 'pci-dss', 'fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-186 §3.2; FIPS 186-5 §6.1.1',
  category: 'integrity',
  scan(ctx) {
    const approved = new Set(ctx.config.algorithms.approvedCurves);
    const bad = (algorithm: string): string | undefined => {
      const f = algorithmFacts(algorithm);
      if (f.family !== 'ECDSA') return undefined;
      if (f.curve === undefined) return 'an unrecognised curve';
      return approved.has(f.curve) ? undefined : `curve ${f.curve}`;
    };
    const out: Finding[] = [];
    for (const e of ctx.versions) {
      if (!exists(e)) continue;
      const why = bad(e.version.algorithm);
      if (why) {
        out.push(
          finding(this, 'violation', 'HIGH', `${e.version.keyId} is an ECDSA key on ${why} (${e.version.algorithm}), outside ${[...approved].join('/')}`, `Replace ${e.version.baseKeyId} with a key on an approved curve (ECDSA P-256 or P-384) and destroy this version once nothing verifies with it.`, {
            keyId: e.version.keyId,
            evidence: { algorithm: e.version.algorithm, state: e.version.state },
          }),
        );
      }
    }
    const tally = new PerKeyTally<string>();
    return {
      types: ALGORITHM_RECORD_TYPES,
      visit: (r) => {
        if (!r.algorithm) return;
        const why = bad(r.algorithm);
        if (why) tally.add(`${recordKey(r)}\u0000${r.algorithm}`, r, why);
      },
      finish: () => {
        for (const [k, t] of tally) {
          const key = k.split('\u0000')[0]!;
          out.push(
            finding(this, 'violation', 'HIGH', `${plural(t.count, 'operation')} (${t.first.type} first) used ECDSA on ${t.extra} (${t.first.algorithm}) with ${key} (first at ${t.first.time}, seq ${t.first.seq})`, `Stop using ${key}; move its users to an ECDSA P-256/P-384 key.`, {
              keyId: key,
              time: t.first.time,
              evidence: { operations: t.count, firstSeq: t.first.seq, algorithm: t.first.algorithm ?? '' },
            }),
          );
        }
        return out.length > 0 ? out : [pass(this, `every ECDSA key and operation uses ${[...approved].join(', ')}`)];
      },
    };
  },
});

export const ALG_EDDSA: Rule = {
  id: 'ALG-EDDSA',
  title: "EdDSA keys on a module whose certificate lists EdDSA",
  frameworks: ['fips-140-2', 'fips-140-3', 'fisma'],
  severity: 'INFO',
  source: 'FIPS 186-5 §7 (EdDSA approved 2023-02-03); CMVP certificate algorithm list',
  category: 'governance',
  async evaluate(ctx) {
    const approvedFrom = ctx.config.dates.eddsaApprovedFrom;
    // cutoff() is the end of the given day; EdDSA is approved from its start.
    const approvedSince = new Date(cutoff(approvedFrom).getTime() - 86_400_000 + 1);
    const byBackend = new Map<string, string[]>();
    let edKeys = 0;
    for (const e of ctx.versions) {
      if (!exists(e) || algorithmFacts(e.version.algorithm).family !== 'EdDSA') continue;
      edKeys++;
      const m = ctx.moduleFor(e.version.backend);
      if (m?.fips.eddsaValidated === true) continue;
      const list = byBackend.get(e.version.backend) ?? [];
      list.push(e.version.keyId);
      byBackend.set(e.version.backend, list);
    }
    if (edKeys === 0) return [pass(this, 'no EdDSA key')];
    const notYet = ctx.now.getTime() < approvedSince.getTime();
    const out: Finding[] = [];
    for (const [backend, keys] of byBackend) {
      const m = ctx.moduleFor(backend);
      const why = !m ? 'no module facts were given for it' : m.fips.eddsaValidated === false ? "its certificate's algorithm list has no EdDSA" : 'whether its certificate lists EdDSA is not known';
      out.push(
        finding(this, 'info', 'INFO', `${plural(keys.length, 'EdDSA key')} on backend ${backend} (${keys.slice(0, 5).join(', ')}${keys.length > 5 ? ', …' : ''}): ${why}${notYet ? `; EdDSA is approved only from ${approvedFrom}` : ''}`, `Use a module whose CMVP certificate lists EdDSA (FIPS 186-5) for ${backend}'s Ed25519 keys, or ECDSA P-256 where a validated EdDSA implementation is required.`, {
          keyId: keys[0],
          evidence: { backend, keys: keys.length },
        }),
      );
    }
    return out.length > 0 ? out : [pass(this, `${plural(edKeys, 'EdDSA key')}, all on modules whose certificate lists EdDSA`)];
  },
};

function sha1Indicated(r: AuditRecord): boolean {
  if (r.algorithm && mentionsSha1(r.algorithm)) return true;
  for (const [k, v] of Object.entries(r.details ?? {})) {
    if (typeof v === 'string' && /hash|digest|alg|signature|mechanism/i.test(k) && mentionsSha1(v)) return true;
  }
  return false;
}

export const ALG_SHA1: Rule = scanningRule({
  id: 'ALG-SHA1',
  title: 'No SHA-1 in signature generation (verifying old SHA-1 signatures is LOW)',
  frameworks: ALL,
  severity: 'CRIT',
  source: 'NIST SP 800-131A Rev 2 §9 (Table 8)',
  category: 'integrity',
  scan(ctx) {
    const out: Finding[] = [];
    for (const e of ctx.versions) {
      if (!canSign(e)) continue;
      if (algorithmFacts(e.version.algorithm).hash === 'SHA-1') {
        out.push(finding(this, 'violation', 'CRIT', `${e.version.keyId} signs with SHA-1 (${e.version.algorithm})`, `Rotate ${e.version.baseKeyId} to an algorithm with SHA-256 or stronger.`, { keyId: e.version.keyId, evidence: { algorithm: e.version.algorithm } }));
      }
    }
    const signs = new PerKeyTally();
    const verifies = new PerKeyTally();
    return {
      types: ['key.sign', 'key.verify'],
      visit: (r) => {
        if (r.outcome !== 'success' || !sha1Indicated(r)) return;
        (r.type === 'key.sign' ? signs : verifies).add(recordKey(r), r, undefined);
      },
      finish: () => {
        for (const [key, t] of signs) {
          out.push(
            finding(this, 'violation', 'CRIT', `${plural(t.count, 'signature')} generated with SHA-1 by ${key} (first at ${t.first.time}, seq ${t.first.seq})`, `Stop SHA-1 signature generation with ${key}; re-sign with SHA-256 or stronger.`, {
              keyId: key,
              time: t.first.time,
              evidence: { signatures: t.count, firstSeq: t.first.seq },
            }),
          );
        }
        for (const [key, t] of verifies) {
          out.push(
            finding(this, 'violation', 'LOW', `${plural(t.count, 'verification')} of SHA-1 signatures with ${key} (first at ${t.first.time}, seq ${t.first.seq}): legacy use`, `Re-sign the data ${key} verifies with SHA-256 or stronger, then stop accepting SHA-1 signatures.`, {
              keyId: key,
              time: t.first.time,
              evidence: { verifications: t.count, firstSeq: t.first.seq },
            }),
          );
        }
        return out.length > 0 ? out : [pass(this, "no SHA-1 in signing keys or in the period's signatures and verifications")];
      },
    };
  },
});

export const ALG_PAD: Rule = {
  id: 'ALG-PAD',
  title: 'RSA padding: PKCS#1 v1.5 and PSS are both approved; PSS is preferred',
  frameworks: ['fips-140-2', 'fips-140-3', 'fisma'],
  severity: 'INFO',
  source: 'FIPS 186-5 §5.4; RFC 8017 §8',
  category: 'governance',
  async evaluate(ctx) {
    const out: Finding[] = [];
    for (const e of ctx.versions) {
      if (!canSign(e)) continue;
      const f = algorithmFacts(e.version.algorithm);
      if (f.family === 'RSA' && f.padding === 'PKCS1v15') {
        out.push(finding(this, 'info', 'INFO', `${e.version.keyId} signs with RSASSA-PKCS1-v1_5 (${e.version.algorithm}): approved; RSASSA-PSS has a security proof`, `Consider RSA_PSS_${f.modulusBits ?? 3072} for ${e.version.baseKeyId}'s next version where verifiers support PSS.`, { keyId: e.version.keyId, evidence: { algorithm: e.version.algorithm } }));
      }
    }
    return out.length > 0 ? out : [pass(this, 'no signing-capable RSA PKCS#1 v1.5 key')];
  },
};

export const ALG_KEK: Rule = {
  id: 'ALG-KEK',
  title: 'A key-wrapping key is at least as strong as the keys it wraps',
  frameworks: ['fips-140-2', 'fips-140-3', 'pci-dss', 'fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-57 Part 1 Rev 5 §6.2.1.3; SP 800-38F',
  category: 'confidentiality',
  async evaluate(ctx) {
    const backup = ctx.config.policy.backup;
    if (!backup) return [notApplicable(this, 'no key backup facts given (policy.backup)')];
    if (!backup.exists) return [notApplicable(this, 'keys are not backed up (policy.backup.exists is false): nothing is wrapped')];
    if (!backup.kekAlgorithm) return [finding(this, 'warning', 'LOW', 'keys are backed up but the key-wrapping key algorithm is not stated', 'Set policy.backup.kekAlgorithm (e.g. "AES-256") so the wrapping strength can be checked.')];
    const kek = algorithmFacts(backup.kekAlgorithm);
    if (kek.securityBits === undefined) return [finding(this, 'warning', 'LOW', `the strength of key-wrapping algorithm ${backup.kekAlgorithm} is not known`, 'Name the key-wrapping key as e.g. "AES-256" or "RSA-OAEP-3072".', { evidence: { kekAlgorithm: backup.kekAlgorithm } })];
    const scope = backup.baseKeyIds ? new Set(backup.baseKeyIds) : undefined;
    const out: Finding[] = [];
    let covered = 0;
    for (const e of ctx.versions) {
      if (!exists(e) || (scope && !scope.has(e.version.baseKeyId))) continue;
      covered++;
      const bits = algorithmFacts(e.version.algorithm).securityBits;
      if (bits !== undefined && bits > kek.securityBits) {
        out.push(
          finding(this, 'violation', 'HIGH', `${e.version.keyId} (${e.version.algorithm}, ${bits}-bit) is backed up under a weaker key-wrapping key ${backup.kekAlgorithm} (${kek.securityBits}-bit)`, `Wrap backups with a key of at least ${bits}-bit strength (AES-256 covers every algorithm here).`, {
            keyId: e.version.keyId,
            evidence: { keyBits: bits, kekBits: kek.securityBits, kekAlgorithm: backup.kekAlgorithm },
          }),
        );
      }
    }
    return out.length > 0 ? out : [pass(this, `key-wrapping key ${backup.kekAlgorithm} (${kek.securityBits}-bit) is at least as strong as the ${plural(covered, 'backed-up version')}`)];
  },
};

export const ALGORITHM_RULES: readonly Rule[] = [ALG_RSA_MIN, ALG_112, ALG_PQ, ALG_CURVE, ALG_EDDSA, ALG_SHA1, ALG_PAD, ALG_KEK];

// ------------------------------------------------------------------ modules

function mod1402Severity(now: Date, config: ResolvedComplianceConfig): Severity {
  return now.getTime() > cutoff(config.dates.fips1402HistoricalAfter).getTime() ? 'HIGH' : 'MED';
}

export const MOD_140_2: Rule = {
  id: 'MOD-140-2',
  title: 'A module holding only a FIPS 140-2 certificate',
  frameworks: ['fips-140-2', 'fips-140-3', 'pci-dss', 'fisma'],
  severity: 'HIGH',
  severityAt: mod1402Severity,
  source: 'CMVP FIPS 140-3 transition (FIPS 140-2 certificates move to the historical list on 2026-09-21)',
  category: 'governance',
  async evaluate(ctx) {
    if (ctx.modules.length === 0) return [notApplicable(this, 'no module facts given')];
    const date = ctx.config.dates.fips1402HistoricalAfter;
    const severity = mod1402Severity(ctx.now, ctx.config);
    const out: Finding[] = [];
    for (const m of ctx.modules) {
      if (m.fips.standard !== 'FIPS 140-2') continue;
      out.push(
        finding(this, 'violation', severity, `backend ${m.backend} (${m.info.description}) holds only a FIPS 140-2 certificate${m.fips.certificate ? ` (#${m.fips.certificate})` : ''}: ${severity === 'MED' ? `it moves to the historical list after ${date}` : `historical since ${date}`}`, `Move ${m.backend}'s keys to a module with a FIPS 140-3 certificate ${severity === 'MED' ? `before ${date}` : 'now'}.`, {
          keyId: m.backend,
          evidence: { backend: m.backend, standard: m.fips.standard, level: m.fips.level, historicalAfter: date },
        }),
      );
    }
    return out.length > 0 ? out : [pass(this, `no module relies on a FIPS 140-2 certificate (${ctx.modules.map((m) => `${m.backend}: ${m.fips.standard}`).join(', ')})`)];
  },
};

export const MOD_STATUS: Rule = {
  id: 'MOD-STATUS',
  title: 'A validated module runs in its approved mode with an active certificate, on stated evidence',
  frameworks: ['fips-140-2', 'fips-140-3', 'pci-dss', 'fisma'],
  severity: 'HIGH',
  source: 'FIPS 140-3 §7.11 (approved mode); CMVP certificate status',
  category: 'governance',
  async evaluate(ctx) {
    if (ctx.modules.length === 0) return [notApplicable(this, 'no module facts given')];
    const out: Finding[] = [];
    for (const m of ctx.modules) {
      const evidence = fipsEvidenceOf(m.fips);
      const contradictions = fipsFindingsOf(m.fips);
      const standard = m.fips.standard as string;
      if (standard === 'unknown') {
        // The backend could not establish what the module is: a claim it cannot back is no claim.
        out.push(
          finding(this, 'violation', 'HIGH', `backend ${m.backend}'s FIPS 140 validation could not be established${contradictions.length > 0 ? `: ${contradictions.join('; ')}` : ''}`, `Make ${m.backend}'s profile match the module it reports (manufacturer, model, firmware), or record the module's certificate in the config's FIPS attestation section.`, {
            keyId: m.backend,
            evidence: { backend: m.backend, standard, evidence },
          }),
        );
        continue;
      }
      for (const c of contradictions) {
        out.push(finding(this, 'violation', 'MED', `backend ${m.backend}: ${c}`, `Resolve the contradiction in ${m.backend}'s FIPS facts before relying on them.`, { keyId: m.backend, evidence: { backend: m.backend, standard, evidence } }));
      }
      if (!claimsFipsValidation(m.fips)) continue;
      const ev = { backend: m.backend, standard, certificate: m.fips.certificate, certificateStatus: m.fips.certificateStatus ?? 'unknown', approvedMode: m.fips.approvedMode, evidence };
      if (evidence === 'none') {
        out.push(finding(this, 'warning', 'LOW', `backend ${m.backend} claims ${standard} but states no evidence for it (neither measured, attested nor a provider claim)`, `Upgrade ${m.backend}'s backend package, or record the module's certificate in the config's FIPS attestation section.`, { keyId: m.backend, evidence: ev }));
      }
      if (!m.fips.approvedMode) out.push(finding(this, 'violation', 'HIGH', `backend ${m.backend} is not running in its approved (FIPS) mode${evidence === 'attested' ? ' (per the operator\'s attestation)' : ''}`, `Configure ${m.backend} for its approved mode (see its security policy) and restart it; where the mode cannot be read from the module, attest it in the config's FIPS attestation section.`, { keyId: m.backend, evidence: ev }));
      if (m.fips.certificateStatus === 'historical' || m.fips.certificateStatus === 'revoked') {
        out.push(finding(this, 'violation', 'HIGH', `backend ${m.backend}'s certificate${m.fips.certificate ? ` #${m.fips.certificate}` : ''} is ${m.fips.certificateStatus}`, `Move ${m.backend}'s keys to a module with an active certificate.`, { keyId: m.backend, evidence: ev }));
      } else if (m.fips.certificateStatus === undefined || m.fips.certificateStatus === 'unknown') {
        out.push(finding(this, 'warning', 'LOW', `backend ${m.backend}'s certificate status is not known`, `Check ${m.backend}'s certificate on the CMVP list and record it (fips.certificateStatus).`, { keyId: m.backend, evidence: ev }));
      }
    }
    if (out.length > 0) return out;
    const validated = ctx.modules.filter((m) => claimsFipsValidation(m.fips));
    return [
      validated.length === 0
        ? notApplicable(this, 'no module claims a FIPS 140 certificate (see MOD-LEVEL / NIST-SC-13)')
        : pass(this, `${plural(validated.length, 'validated module')} in approved mode with an active certificate (${validated.map((m) => `${m.backend}: ${fipsEvidenceOf(m.fips)}`).join(', ')})`),
    ];
  },
};

export const MOD_LEVEL: Rule = {
  id: 'MOD-LEVEL',
  title: 'Every module is FIPS 140 validated at the required security level',
  frameworks: ['fips-140-2', 'fips-140-3'],
  severity: 'HIGH',
  source: 'FIPS 140-3 §7 (security levels 1–4); ISO/IEC 19790:2012',
  category: 'confidentiality',
  async evaluate(ctx) {
    if (ctx.modules.length === 0) return [notApplicable(this, 'no module facts given')];
    const level = ctx.requiredLevel;
    const out: Finding[] = [];
    for (const m of ctx.modules) {
      const ev = { backend: m.backend, standard: m.fips.standard, level: m.fips.level, requiredLevel: level };
      if ((m.fips.standard as string) === 'unknown') {
        out.push(finding(this, 'violation', 'HIGH', `backend ${m.backend} (${m.info.description}): whether it is FIPS 140 validated could not be established`, `Hold ${ctx.framework} keys in a module whose validation at level ${level} or higher is measured or attested.`, { keyId: m.backend, evidence: { ...ev, evidence: fipsEvidenceOf(m.fips) } }));
      } else if (m.fips.standard === 'none') {
        out.push(finding(this, 'violation', 'HIGH', `backend ${m.backend} (${m.info.description}) is not a FIPS 140 validated module`, `Hold ${ctx.framework} keys in a module validated at level ${level} or higher (a PKCS#11 HSM or cloud HSM).`, { keyId: m.backend, evidence: ev }));
      } else if (m.fips.level < level) {
        out.push(finding(this, 'violation', 'HIGH', `backend ${m.backend} is validated at level ${m.fips.level}, below the required level ${level}`, `Use a module validated at level ${level} or higher for these keys.`, { keyId: m.backend, evidence: ev }));
      }
    }
    return out.length > 0 ? out : [pass(this, `every module is validated at level ${level} or higher`)];
  },
};

export const MODULE_RULES: readonly Rule[] = [MOD_140_2, MOD_STATUS, MOD_LEVEL];
