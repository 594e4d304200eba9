import type { AuditEventType, AuditReader, AuditRecord, AuditVerifyResult } from '../audit/types.js';
import type { ResolvedComplianceConfig } from './config.js';
import type { InventoryLogicalKey, ModuleFacts } from './inputs.js';
import type { Framework, RuleContext, StateAt, VersionEntry } from './types.js';

export interface RuleContextInput {
  now: Date;
  period: { from: Date; to: Date };
  framework: Framework;
  requiredLevel?: 1 | 2 | 3 | 4;
  config: ResolvedComplianceConfig;
  keys: InventoryLogicalKey[];
  modules: ModuleFacts[];
  audit: AuditReader;
  /** Runs the audit chain verification (default: audit.verify()). */
  verify?: () => Promise<AuditVerifyResult>;
}

function timeOf(d: Date | undefined): number {
  return d instanceof Date ? d.getTime() : Number.NaN;
}

/** Builds the context every rule evaluates against (indexes the inventory; memoizes the chain verification). */
export function createRuleContext(input: RuleContextInput): RuleContext {
  const versions: VersionEntry[] = [];
  const byKeyId = new Map<string, VersionEntry>();
  for (const key of input.keys) {
    for (const version of key.versions) {
      const own = key.history.filter((h) => h.keyId === version.keyId || (h.baseKeyId === version.baseKeyId && h.version === version.version));
      // Dated entries in time order (stable for ties); entries without a valid time keep their order, after them.
      const history = [...own.filter((h) => !Number.isNaN(timeOf(h.at))).sort((a, b) => timeOf(a.at) - timeOf(b.at)), ...own.filter((h) => Number.isNaN(timeOf(h.at)))];
      const entry: VersionEntry = { version, key, history };
      versions.push(entry);
      byKeyId.set(version.keyId, entry);
    }
  }
  const modules = new Map(input.modules.map((m) => [m.backend, m]));
  const from = input.period.from.getTime();
  const to = input.period.to.getTime();
  let verification: Promise<AuditVerifyResult> | undefined;
  const prefixes = input.config.audit.automatedActorPrefixes;

  return {
    now: input.now,
    period: input.period,
    framework: input.framework,
    requiredLevel: input.requiredLevel ?? input.config.fips.requiredLevel,
    config: input.config,
    keys: input.keys,
    versions,
    modules: input.modules,
    audit: input.audit,
    findVersion(keyId, baseKeyId, version) {
      if (keyId !== undefined) {
        const hit = byKeyId.get(keyId);
        if (hit) return hit;
      }
      if (baseKeyId !== undefined && version !== undefined) return byKeyId.get(`${baseKeyId}.v${version}`) ?? versions.find((e) => e.version.baseKeyId === baseKeyId && e.version.version === version);
      return undefined;
    },
    stateAt(entry, time): StateAt {
      const t = time.getTime();
      const dated = entry.history.filter((h) => !Number.isNaN(timeOf(h.at)));
      if (dated.length > 0) {
        let state: StateAt;
        for (const h of dated) {
          if (timeOf(h.at) <= t) state = h.to;
          else break;
        }
        return state;
      }
      // No recorded history: infer from the version's dates.
      const v = entry.version;
      if (t < v.createdAt.getTime()) return undefined;
      if (t >= v.stateChangedAt.getTime()) return v.state;
      if (v.activatedAt) {
        if (t < v.activatedAt.getTime()) return 'PreActivation';
        if (!v.deactivatedAt || t < v.deactivatedAt.getTime()) return 'Active';
      }
      return v.state;
    },
    moduleFor(backend) {
      return backend === undefined ? undefined : modules.get(backend);
    },
    records(types?: readonly AuditEventType[]): AsyncIterable<AuditRecord> {
      const audit = input.audit;
      return {
        async *[Symbol.asyncIterator]() {
          const query = { from: input.period.from, to: input.period.to, ...(types && types.length > 0 ? { types: [...types] } : {}) };
          for await (const r of audit.iterate(query)) {
            // The period is half-open [from, to); a store that treats `to` as inclusive is trimmed here.
            const t = Date.parse(r.time);
            if (!(t >= from && t < to)) continue;
            if (types && types.length > 0 && !types.includes(r.type)) continue;
            yield r;
          }
        },
      };
    },
    isAutomatedActor(actor) {
      return typeof actor === 'string' && prefixes.some((p) => actor.startsWith(p));
    },
    verification() {
      verification ??= (input.verify ?? (() => input.audit.verify()))();
      return verification;
    },
  };
}
