import { cryptoperiodDays, type ResolvedComplianceConfig } from './config.js';
import { DAY_MS, detail, finding, HOUR_MS, iso, pass, PerKeyTally, plural, recordKey, scanningRule, signatureTime } from './helpers.js';
import type { KeyLifecycleState } from './inputs.js';
import type { Finding, Rule, RuleContext, VersionEntry } from './types.js';

/** Part B of COMPLIANCE-RULES.md: lifecycle and cryptoperiods (NIST SP 800-57 Part 1 Rev 5, KMIP). */

const SIGN_USE = (e: VersionEntry): boolean => e.version.usages.length === 0 || e.version.usages.includes('sign');

/**
 * End of a signing version's cryptoperiod: activation (else creation) + the policy's
 * cryptoperiod for its algorithm, or its protect-stop date when earlier. Undefined when the
 * policy defines no cryptoperiod for the key type (PCI-3.7.4 reports that).
 */
export function cryptoperiodEnd(entry: VersionEntry, config: ResolvedComplianceConfig): { end: Date; days: number } | undefined {
  const days = cryptoperiodDays(config, entry.version.algorithm);
  if (days === null) return undefined;
  const start = (entry.version.activatedAt ?? entry.version.createdAt).getTime();
  let end = start + days * DAY_MS;
  if (entry.version.expiresAt && entry.version.expiresAt.getTime() < end) end = entry.version.expiresAt.getTime();
  return { end: new Date(end), days };
}

/** When a version entered `state` (its last recorded entry into it; falls back to stateChangedAt when it is in it now). */
export function enteredAt(entry: VersionEntry, state: KeyLifecycleState): Date | undefined {
  for (let i = entry.history.length - 1; i >= 0; i--) {
    const h = entry.history[i]!;
    if (h.to === state && h.at instanceof Date && !Number.isNaN(h.at.getTime())) return h.at;
  }
  return entry.version.state === state ? entry.version.stateChangedAt : undefined;
}

/** When a version first became Active (history, else activatedAt). */
export function activationTime(entry: VersionEntry): Date | undefined {
  for (const h of entry.history) if (h.to === 'Active' && h.at instanceof Date && !Number.isNaN(h.at.getTime())) return h.at;
  return entry.version.activatedAt;
}

function siblings(ctx: RuleContext, entry: VersionEntry): VersionEntry[] {
  return ctx.versions.filter((e) => e.version.baseKeyId === entry.version.baseKeyId && e !== entry);
}

/** A later version of the same logical key that became Active by `deadline` (undefined = any time). */
export function successorBy(ctx: RuleContext, entry: VersionEntry, deadline?: Date): VersionEntry | undefined {
  return siblings(ctx, entry).find((s) => {
    if (s.version.version <= entry.version.version) return false;
    const at = activationTime(s);
    if (!at) return false;
    return deadline === undefined || at.getTime() <= deadline.getTime();
  });
}

/** Words in a recorded reason that say the key was (suspected) compromised. */
const COMPROMISE_REASON = /compromis|emergency|leak|stolen|exposed/i;

/**
 * When a version was taken out of use because of a (suspected) compromise: it entered
 * Compromised, or it was Revoked by an emergency rotation (rotation's `emergencyState` may be
 * Revoked) — recognised by a successor that became Active in the same instant (the rotation's
 * one transaction) or by a reason that says so. A plain revocation (`keys revoke`) is not a
 * compromise: see revokedWithoutCompromiseAt.
 */
export function compromisedAt(entry: VersionEntry, ctx?: Pick<RuleContext, 'versions'>): Date | undefined {
  if (entry.version.state === 'Compromised' || entry.history.some((h) => h.to === 'Compromised')) return enteredAt(entry, 'Compromised') ?? entry.version.revokedAt;
  const revoked = entry.history.find((h) => h.to === 'Revoked' && (h.from === 'Active' || h.from === 'Suspended'));
  if (!revoked?.at) return undefined;
  if (revoked.reason !== undefined && COMPROMISE_REASON.test(revoked.reason)) return revoked.at;
  const at = revoked.at.getTime();
  const replacedAtOnce = ctx?.versions.some(
    (s) => s.version.baseKeyId === entry.version.baseKeyId && s.version.version > entry.version.version && activationTime(s)?.getTime() === at,
  );
  return replacedAtOnce ? revoked.at : undefined;
}

/** When a version was revoked for a reason other than compromise (a plain `keys revoke`); undefined otherwise. */
export function revokedWithoutCompromiseAt(entry: VersionEntry, ctx?: Pick<RuleContext, 'versions'>): Date | undefined {
  if (compromisedAt(entry, ctx)) return undefined;
  return enteredAt(entry, 'Revoked');
}

export const LC_PROTECT: Rule = scanningRule({
  id: 'LC-PROTECT',
  title: 'Only an Active version signs, and never after its protect-stop date',
  frameworks: ['fips-140-2', 'fips-140-3', 'common-criteria', 'pci-dss', 'soc2', 'fisma'],
  severity: 'CRIT',
  source: 'NIST SP 800-57 Part 1 Rev 5 §5.3 (originator-usage period), §7.2',
  category: 'integrity',
  scan(ctx) {
    const notActive = new PerKeyTally<string>();
    const expired = new PerKeyTally<string>();
    let checked = 0;
    let unknown = 0;
    return {
      types: ['key.sign'],
      visit: (r) => {
        if (r.outcome !== 'success') return;
        const entry = ctx.findVersion(r.keyId, r.baseKeyId, r.keyVersion);
        if (!entry) {
          unknown++;
          return;
        }
        checked++;
        const t = signatureTime(r);
        const state = ctx.stateAt(entry, t);
        if (state !== 'Active') notActive.add(entry.version.keyId, r, state ?? 'not yet created');
        else if (entry.version.expiresAt && t.getTime() > entry.version.expiresAt.getTime()) expired.add(entry.version.keyId, r, iso(entry.version.expiresAt));
      },
      finish: async () => {
        const out: Finding[] = [];
        for (const [key, t] of notActive) {
          out.push(
            finding(this, 'violation', 'CRIT', `${plural(t.count, 'signature')} by ${key} while it was ${t.extra}, not Active (first at ${t.first.time}, seq ${t.first.seq})`, `Find the caller that signs with ${key} directly and make it sign through the logical key (the registry resolves the Active version); treat those signatures as invalid.`, {
              keyId: key,
              time: t.first.time,
              evidence: { signatures: t.count, firstSeq: t.first.seq, state: t.extra },
            }),
          );
        }
        for (const [key, t] of expired) {
          out.push(
            finding(this, 'violation', 'CRIT', `${plural(t.count, 'signature')} by ${key} after its protect-stop date ${t.extra} (first at ${t.first.time}, seq ${t.first.seq})`, `Rotate the logical key of ${key}; backends must refuse signing after expiresAt (KeyExpired).`, {
              keyId: key,
              time: t.first.time,
              evidence: { signatures: t.count, firstSeq: t.first.seq, expiresAt: t.extra },
            }),
          );
        }
        return out.length > 0 ? out : [pass(this, `${plural(checked, 'signature')} of inventory keys in the period, all by Active versions inside their protect window${unknown > 0 ? ` (${unknown} by keys outside the inventory, not checked)` : ''}`)];
      },
    };
  },
});

const VERIFY_CRIT: ReadonlySet<string> = new Set(['PreActivation', 'Destroyed', 'not yet created']);
const VERIFY_HIGH: ReadonlySet<string> = new Set(['Suspended', 'Compromised', 'Revoked', 'PendingDestruction']);

export const LC_PROCESS: Rule = scanningRule({
  id: 'LC-PROCESS',
  title: 'Verification only with versions allowed to verify',
  frameworks: ['common-criteria', 'pci-dss', 'soc2', 'fisma'],
  severity: 'CRIT',
  source: 'NIST SP 800-57 Part 1 Rev 5 §5.3 (recipient-usage period), §7.2',
  category: 'integrity',
  scan(ctx) {
    const crit = new PerKeyTally<string>();
    const high = new PerKeyTally<string>();
    const overridden = new PerKeyTally<string>();
    const legacy = new PerKeyTally<string>();
    let checked = 0;
    return {
      types: ['key.verify'],
      visit: (r) => {
        if (r.outcome !== 'success') return;
        const entry = ctx.findVersion(r.keyId, r.baseKeyId, r.keyVersion);
        if (!entry) return;
        checked++;
        const state = ctx.stateAt(entry, new Date(r.time)) ?? 'not yet created';
        const override = r.details?.['override'] === true || detail(r, 'overrideBy') !== '';
        if (VERIFY_CRIT.has(state)) crit.add(entry.version.keyId, r, state);
        else if (VERIFY_HIGH.has(state)) (override ? overridden : high).add(entry.version.keyId, r, state);
        else if (state !== 'Active') legacy.add(entry.version.keyId, r, state);
      },
      finish: async () => {
        const out: Finding[] = [];
        for (const [key, t] of crit) {
          out.push(
            finding(this, 'violation', 'CRIT', `${plural(t.count, 'verification')} with ${key} while it was ${t.extra} (first at ${t.first.time}, seq ${t.first.seq})`, `Verification must refuse ${t.extra} versions; find the verifier that bypasses the registry and treat those results as invalid.`, {
              keyId: key,
              time: t.first.time,
              evidence: { verifications: t.count, firstSeq: t.first.seq, state: t.extra },
            }),
          );
        }
        for (const [key, t] of high) {
          out.push(
            finding(this, 'violation', 'HIGH', `${plural(t.count, 'verification')} with ${key} while it was ${t.extra}, without an audited override (first at ${t.first.time}, seq ${t.first.seq})`, `Verify with ${t.extra} versions only through an audited override (details.override / overrideBy), or not at all.`, {
              keyId: key,
              time: t.first.time,
              evidence: { verifications: t.count, firstSeq: t.first.seq, state: t.extra },
            }),
          );
        }
        for (const [key, t] of overridden) {
          out.push(finding(this, 'info', 'INFO', `${plural(t.count, 'verification')} with ${t.extra} version ${key} under an audited override (first seq ${t.first.seq})`, 'Review the overrides: each should name its approver and reason.', { keyId: key, time: t.first.time, evidence: { verifications: t.count, firstSeq: t.first.seq } }));
        }
        if (legacy.size > 0) {
          let total = 0;
          for (const [, t] of legacy) total += t.count;
          out.push(finding(this, 'info', 'INFO', `${plural(total, 'verification')} with ${plural(legacy.size, 'deactivated version')} (Superseded/Archived): allowed and logged`, 'Nothing to do while those signatures must stay verifiable; archive versions no longer needed.', { evidence: { verifications: total, versions: legacy.size } }));
        }
        if (out.every((f) => f.status === 'info')) out.push(pass(this, `${plural(checked, 'verification')} of inventory keys in the period, none with a version that may not verify`));
        return out;
      },
    };
  },
});

export const LC_CP_SIG: Rule = scanningRule({
  id: 'LC-CP-SIG',
  title: 'Private signature keys are not used past their cryptoperiod',
  frameworks: ['fips-140-2', 'fips-140-3', 'pci-dss', 'soc2', 'fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-57 Part 1 Rev 5 §5.3.6 (Table 1: private signature key 1–3 years)',
  category: 'confidentiality',
  scan(ctx) {
    const warnMs = ctx.config.policy.cryptoperiod.warnDays * DAY_MS;
    const out: Finding[] = [];
    const ends = new Map<string, Date>();
    let checked = 0;
    for (const e of ctx.versions) {
      if (!SIGN_USE(e)) continue;
      const cp = cryptoperiodEnd(e, ctx.config);
      if (!cp) continue;
      ends.set(e.version.keyId, cp.end);
      if (e.version.state !== 'Active') continue;
      checked++;
      const remaining = cp.end.getTime() - ctx.now.getTime();
      const ev = { cryptoperiodDays: cp.days, cryptoperiodEnd: iso(cp.end), algorithm: e.version.algorithm };
      if (remaining < 0) {
        out.push(finding(this, 'violation', 'HIGH', `${e.version.keyId} is still Active ${Math.floor(-remaining / DAY_MS)} days past its cryptoperiod (ended ${iso(cp.end)})`, `Rotate ${e.version.baseKeyId} now and set a rotation interval shorter than the cryptoperiod.`, { keyId: e.version.keyId, time: iso(cp.end), evidence: ev }));
      } else if (remaining <= warnMs) {
        out.push(finding(this, 'warning', 'LOW', `${e.version.keyId}'s cryptoperiod ends in ${Math.ceil(remaining / DAY_MS)} days (${iso(cp.end)})`, `Rotate ${e.version.baseKeyId} before ${iso(cp.end)}.`, { keyId: e.version.keyId, time: iso(cp.end), evidence: ev }));
      }
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
          out.push(
            finding(this, 'violation', 'HIGH', `${plural(t.count, 'signature')} by ${key} after its cryptoperiod ended ${iso(t.extra)} (first at ${t.first.time}, seq ${t.first.seq})`, `Rotate the logical key of ${key}; signatures past the cryptoperiod should be re-made with the current version.`, {
              keyId: key,
              time: t.first.time,
              evidence: { signatures: t.count, firstSeq: t.first.seq, cryptoperiodEnd: iso(t.extra) },
            }),
          );
        }
        return out.length > 0 ? out : [pass(this, `${plural(checked, 'Active signing version')} checked: each has more than ${ctx.config.policy.cryptoperiod.warnDays} days of its cryptoperiod left; no signature after a cryptoperiod ended`)];
      },
    };
  },
});

export const LC_DESTROY_ACTIVE: Rule = scanningRule({
  id: 'LC-DESTROY-ACTIVE',
  title: 'Destruction of an Active key is refused',
  frameworks: ['fips-140-2', 'fips-140-3', 'common-criteria', 'pci-dss', 'soc2', 'fisma'],
  severity: 'CRIT',
  source: 'NIST SP 800-57 Part 1 Rev 5 §7.1 (no Active → Destroyed transition); KMIP 2.1 §3.31',
  category: 'confidentiality',
  scan(ctx) {
    const out: Finding[] = [];
    let refused = 0;
    return {
      types: ['key.destroy', 'key.state'],
      visit: (r) => {
        let fromActive: boolean;
        if (r.type === 'key.destroy') {
          const entry = ctx.findVersion(r.keyId, r.baseKeyId, r.keyVersion);
          if (!entry) return;
          fromActive = ctx.stateAt(entry, new Date(Date.parse(r.time) - 1)) === 'Active';
        } else {
          const to = detail(r, 'to');
          fromActive = detail(r, 'from') === 'Active' && (to === 'Destroyed' || to === 'PendingDestruction');
        }
        if (!fromActive) return;
        if (r.outcome === 'failure') {
          refused++;
          return;
        }
        out.push(
          finding(this, 'violation', 'CRIT', `destroy of ${recordKey(r)} while it was Active was carried out (${r.type}, seq ${r.seq}, by ${r.actor || '(no actor)'})`, `Destruction must be refused for Active versions: rotate (Active → Superseded), then schedule destruction with a waiting period.`, {
            keyId: recordKey(r),
            time: r.time,
            evidence: { seq: r.seq, actor: r.actor },
          }),
        );
      },
      finish: async () => {
        const { from, to } = ctx.period;
        for (const e of ctx.versions) {
          for (const h of e.history) {
            if (h.from !== 'Active' || (h.to !== 'Destroyed' && h.to !== 'PendingDestruction') || !h.at) continue;
            if (h.at.getTime() < from.getTime() || h.at.getTime() >= to.getTime()) continue;
            out.push(finding(this, 'violation', 'CRIT', `${e.version.keyId} went from Active straight to ${h.to} (registry history, by ${h.actor ?? '(no actor)'})`, 'Destruction must be refused for Active versions: rotate first, then schedule destruction.', { keyId: e.version.keyId, time: iso(h.at) }));
          }
        }
        if (refused > 0) out.push(finding(this, 'info', 'INFO', `${plural(refused, 'destroy request')} for Active keys refused, as required`, 'Check who asked: a destroy request for an Active key may be an error or an attack.', { evidence: { refused } }));
        if (out.every((f) => f.status === 'info')) out.push(pass(this, 'no Active key was destroyed or scheduled for destruction in the period'));
        return out;
      },
    };
  },
});

export const LC_PENDING: Rule = {
  id: 'LC-PENDING',
  title: 'Destruction waits for the policy period and can be cancelled',
  frameworks: ['common-criteria', 'pci-dss', 'soc2', 'fisma'],
  severity: 'MED',
  source: 'NIST SP 800-57 Part 1 Rev 5 §8.3.4; AWS KMS / Cloud KMS scheduled deletion (7–30 days)',
  category: 'availability',
  async evaluate(ctx) {
    const policy = ctx.config.policy.destruction;
    const min = ctx.config.destruction.minimumWaitDays;
    const out: Finding[] = [];
    if (policy.waitingDays < min) {
      out.push(finding(this, 'violation', 'MED', `the destruction waiting period is ${policy.waitingDays} days, under the minimum of ${min}`, `Set the waiting period (rotation policy destructionDelay) to at least ${min} days; 30 is the default.`, { evidence: { waitingDays: policy.waitingDays, minimumDays: min } }));
    }
    if (!policy.cancellable) out.push(finding(this, 'violation', 'MED', 'a scheduled destruction cannot be cancelled', 'Allow cancelling a scheduled destruction (PendingDestruction → Archived/Superseded) during the waiting period.'));
    const waitMs = policy.waitingDays * DAY_MS;
    const TOLERANCE = 1000;
    for (const e of ctx.versions) {
      if (e.version.state === 'PendingDestruction' && e.version.destroyAfter) {
        const since = enteredAt(e, 'PendingDestruction') ?? e.version.stateChangedAt;
        const wait = e.version.destroyAfter.getTime() - since.getTime();
        if (wait + TOLERANCE < waitMs) {
          out.push(finding(this, 'violation', 'MED', `${e.version.keyId} is scheduled for destruction after ${(wait / DAY_MS).toFixed(1)} days, shorter than the policy's ${policy.waitingDays}`, `Reschedule ${e.version.keyId}'s destruction to at least ${policy.waitingDays} days after it was requested.`, { keyId: e.version.keyId, time: iso(e.version.destroyAfter) }));
        }
      }
      for (let i = 0; i < e.history.length; i++) {
        const h = e.history[i]!;
        if (h.to !== 'Destroyed' || !h.at) continue;
        if (h.at.getTime() < ctx.period.from.getTime() || h.at.getTime() >= ctx.period.to.getTime()) continue;
        const prev = e.history[i - 1];
        if (!prev || prev.to !== 'PendingDestruction' || !prev.at) {
          out.push(finding(this, 'violation', 'MED', `${e.version.keyId} was destroyed without a recorded waiting period (from ${h.from ?? 'nothing'})`, 'Destroy only through PendingDestruction with the policy waiting period.', { keyId: e.version.keyId, time: iso(h.at) }));
        } else if (h.at.getTime() - prev.at.getTime() + TOLERANCE < waitMs) {
          out.push(finding(this, 'violation', 'MED', `${e.version.keyId} was destroyed ${((h.at.getTime() - prev.at.getTime()) / DAY_MS).toFixed(1)} days after destruction was scheduled, before the policy's ${policy.waitingDays} days`, 'Destroy only after the waiting period has run out.', { keyId: e.version.keyId, time: iso(h.at) }));
        }
      }
    }
    return out.length > 0 ? out : [pass(this, `waiting period ${policy.waitingDays} days (minimum ${min}), cancellable; no version scheduled or destroyed early`)];
  },
};

export const LC_EMERG: Rule = {
  id: 'LC-EMERG',
  title: 'A compromised key has an Active successor within the policy time',
  frameworks: ['pci-dss', 'soc2', 'fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-57 Part 1 Rev 5 §5.5 (compromise recovery); PCI DSS v4.0.1 3.7.5',
  category: 'confidentiality',
  async evaluate(ctx) {
    const hours = ctx.config.policy.emergencySuccessorHours;
    const out: Finding[] = [];
    let compromised = 0;
    const revoked: string[] = [];
    for (const e of ctx.versions) {
      const at = compromisedAt(e, ctx);
      if (!at) {
        if (revokedWithoutCompromiseAt(e, ctx)) revoked.push(e.version.keyId);
        continue;
      }
      compromised++;
      const deadline = new Date(at.getTime() + hours * HOUR_MS);
      if (successorBy(ctx, e, deadline)) continue;
      if (ctx.now.getTime() <= deadline.getTime()) {
        out.push(finding(this, 'warning', 'LOW', `${e.version.keyId} was compromised at ${iso(at)} and ${e.version.baseKeyId} has no Active successor yet (deadline ${iso(deadline)})`, `Rotate ${e.version.baseKeyId} (emergency rotation) before ${iso(deadline)}.`, { keyId: e.version.keyId, time: iso(at) }));
      } else {
        const late = successorBy(ctx, e);
        out.push(
          finding(this, 'violation', 'HIGH', `${e.version.keyId} was compromised at ${iso(at)} and ${e.version.baseKeyId} ${late ? `got its successor only at ${iso(activationTime(late)!)}` : 'still has no Active successor'}, past the ${hours} h limit`, `Rotate ${e.version.baseKeyId} now (emergency rotation) and review why it took longer than ${hours} h.`, {
            keyId: e.version.keyId,
            time: iso(at),
            evidence: { deadline: iso(deadline), successorHours: hours },
          }),
        );
      }
    }
    const revokedNote = revoked.length === 0 ? '' : `; ${plural(revoked.length, 'version')} revoked without a recorded compromise (${revoked.slice(0, 5).join(', ')}${revoked.length > 5 ? ', …' : ''})`;
    return out.length > 0 ? out : [pass(this, (compromised === 0 ? 'no compromised key' : `${plural(compromised, 'compromised version')}, each replaced by an Active successor within ${hours} h`) + revokedNote)];
  },
};

export const LC_PRIMARY: Rule = {
  id: 'LC-PRIMARY',
  title: 'At most one Active signing version per logical key',
  frameworks: ['pci-dss', 'soc2', 'fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-57 Part 1 Rev 5 §7.2 (one key for one purpose); design: registry invariant',
  category: 'integrity',
  async evaluate(ctx) {
    const out: Finding[] = [];
    const reported = new Set<string>();
    for (const key of ctx.keys) {
      const active = key.versions.filter((v) => v.state === 'Active' && (v.usages.length === 0 || v.usages.includes('sign')));
      if (active.length > 1) {
        reported.add(key.baseKeyId);
        out.push(finding(this, 'violation', 'HIGH', `${key.baseKeyId} has ${active.length} Active versions (${active.map((v) => v.keyId).join(', ')})`, `Supersede all but the newest Active version of ${key.baseKeyId}; only one version may sign.`, { keyId: key.baseKeyId, evidence: { active: active.length } }));
      }
    }
    // Overlapping Active windows inside the period, from the recorded history.
    const from = ctx.period.from.getTime();
    const to = ctx.period.to.getTime();
    const byBase = new Map<string, { keyId: string; start: number; end: number }[]>();
    for (const e of ctx.versions) {
      if (reported.has(e.version.baseKeyId) || !SIGN_USE(e)) continue;
      let start: number | undefined;
      const push = (end: number) => {
        const s = Math.max(start!, from);
        const en = Math.min(end, to);
        if (s < en) {
          const list = byBase.get(e.version.baseKeyId) ?? [];
          list.push({ keyId: e.version.keyId, start: s, end: en });
          byBase.set(e.version.baseKeyId, list);
        }
        start = undefined;
      };
      for (const h of e.history) {
        if (!h.at) continue;
        const t = h.at.getTime();
        if (h.to === 'Active' && start === undefined) start = t;
        else if (h.to !== 'Active' && start !== undefined) push(t);
      }
      if (start !== undefined) push(Number.POSITIVE_INFINITY);
    }
    for (const [base, windows] of byBase) {
      windows.sort((a, b) => a.start - b.start);
      for (let i = 1; i < windows.length; i++) {
        const prev = windows[i - 1]!;
        const cur = windows[i]!;
        if (cur.start < prev.end) {
          out.push(finding(this, 'violation', 'HIGH', `${base} had two Active versions at once: ${prev.keyId} and ${cur.keyId} from ${new Date(cur.start).toISOString()}`, `Make rotation supersede the old version in the same transaction that activates the new one (${base}).`, { keyId: base, time: new Date(cur.start).toISOString() }));
          break;
        }
      }
    }
    return out.length > 0 ? out : [pass(this, `${plural(ctx.keys.length, 'logical key')}, each with at most one Active version now and during the period`)];
  },
};

export const LC_RECORD: Rule = scanningRule({
  id: 'LC-RECORD',
  title: 'Every state change is recorded with time, actor and reason',
  frameworks: ['common-criteria', 'pci-dss', 'soc2', 'fisma'],
  severity: 'HIGH',
  source: 'NIST SP 800-57 Part 2 Rev 1 §6.4; SP 800-130 §6.5 (key metadata: state transitions)',
  category: 'integrity',
  scan(ctx) {
    const out: Finding[] = [];
    const unauthenticated = new Set(ctx.config.audit.unauthenticatedActors);
    let changes = 0;
    for (const e of ctx.versions) {
      const missing = { time: 0, actor: 0, reason: 0 };
      let first: string | undefined;
      for (const h of e.history) {
        changes++;
        const noTime = !(h.at instanceof Date) || Number.isNaN(h.at.getTime());
        const noActor = !h.actor || h.actor.trim() === '' || unauthenticated.has(h.actor.trim());
        const noReason = !h.reason || h.reason.trim() === '';
        if (noTime) missing.time++;
        if (noActor) missing.actor++;
        if (noReason) missing.reason++;
        if ((noTime || noActor || noReason) && first === undefined && !noTime) first = iso(h.at!);
      }
      const fields = (Object.keys(missing) as (keyof typeof missing)[]).filter((k) => missing[k] > 0);
      if (fields.length > 0) {
        out.push(
          finding(this, 'violation', 'HIGH', `${e.version.keyId}: state changes recorded without ${fields.map((f) => `${f} (${missing[f]})`).join(', ')}`, 'Record every state change through the registry with an authenticated actor and a reason (ChangeContext).', {
            keyId: e.version.keyId,
            time: first,
            evidence: { missingTime: missing.time, missingActor: missing.actor, missingReason: missing.reason },
          }),
        );
      }
      if (e.history.length === 0) {
        out.push(finding(this, 'violation', 'HIGH', `${e.version.keyId} (${e.version.state}) has no recorded state change at all`, 'Register versions through the registry so their creation and every change is recorded.', { keyId: e.version.keyId }));
      } else {
        const last = e.history[e.history.length - 1]!;
        if (last.to !== e.version.state) {
          out.push(finding(this, 'violation', 'HIGH', `${e.version.keyId} is ${e.version.state} but its last recorded change is to ${last.to}: a state change was not recorded`, 'Find how the state was changed outside the registry and record the change.', { keyId: e.version.keyId, time: iso(e.version.stateChangedAt) }));
        }
      }
    }
    const badRecords = new PerKeyTally<string>();
    return {
      types: ['key.state'],
      visit: (r) => {
        const noActor = !r.actor || unauthenticated.has(r.actor.trim());
        const noReason = !r.reason || r.reason.trim() === '';
        if (noActor || noReason) badRecords.add(recordKey(r), r, [noActor ? 'actor' : '', noReason ? 'reason' : ''].filter(Boolean).join(' and '));
      },
      finish: async () => {
        for (const [key, t] of badRecords) {
          out.push(finding(this, 'violation', 'HIGH', `${plural(t.count, 'key.state audit record')} for ${key} without ${t.extra} (first seq ${t.first.seq})`, 'Give every state change an authenticated actor and a reason.', { keyId: key, time: t.first.time, evidence: { records: t.count, firstSeq: t.first.seq } }));
        }
        return out.length > 0 ? out : [pass(this, `${plural(changes, 'recorded state change')}, each with time, actor and reason; every version's state matches its last record`)];
      },
    };
  },
});

export const LIFECYCLE_RULES: readonly Rule[] = [LC_PROTECT, LC_PROCESS, LC_CP_SIG, LC_DESTROY_ACTIVE, LC_PENDING, LC_EMERG, LC_PRIMARY, LC_RECORD];
