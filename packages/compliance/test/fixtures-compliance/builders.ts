import type { AuditRecord, AuditSettings, AuditVerifyResult } from '../../src/audit/types.js';
import {
  createRuleContext,
  resolveComplianceConfig,
  type ComplianceConfigInput,
  type Finding,
  type Framework,
  type InventoryKeyVersion,
  type InventoryLogicalKey,
  type InventoryStateChange,
  type KeyLifecycleState,
  type ModuleFacts,
  type Rule,
} from '../../src/rules/index.js';
import { MemoryAuditReader, defaultSettings } from './memory-audit.js';

export const DAY = 86_400_000;
export const HOUR = 3_600_000;

export interface VersionPlan {
  n: number;
  /** States in order with the time each was entered; the first is the creation. */
  path: [KeyLifecycleState, string][];
  extra?: Partial<InventoryKeyVersion>;
  /** Overrides for the recorded history entries (same index as path). */
  historyOverride?: Record<number, Partial<InventoryStateChange>>;
  usages?: ('sign' | 'verify')[];
}

/** A logical key whose versions follow the given state paths; history recorded with actor and reason. */
export function keyWith(base: string, algorithm: string, backend: string, plans: VersionPlan[], extra: Partial<InventoryLogicalKey> = {}): InventoryLogicalKey {
  const versions: InventoryKeyVersion[] = [];
  const history: InventoryStateChange[] = [];
  for (const p of plans) {
    const keyId = `${base}.v${p.n}`;
    const times = p.path.map(([, t]) => new Date(t));
    const activeIdx = p.path.findIndex(([s]) => s === 'Active');
    const leftIdx = activeIdx >= 0 ? p.path.findIndex(([s], i) => i > activeIdx && s !== 'Active') : -1;
    const revokedIdx = p.path.findIndex(([s]) => s === 'Revoked' || s === 'Compromised');
    const v: InventoryKeyVersion = {
      keyId,
      baseKeyId: base,
      version: p.n,
      algorithm,
      backend,
      state: p.path[p.path.length - 1]![0],
      usages: p.usages ?? ['sign', 'verify'],
      createdAt: times[0]!,
      stateChangedAt: times[times.length - 1]!,
      usageCount: 0,
      ...(activeIdx >= 0 ? { activatedAt: times[activeIdx]! } : {}),
      ...(leftIdx >= 0 ? { deactivatedAt: times[leftIdx]! } : {}),
      ...(revokedIdx >= 0 ? { revokedAt: times[revokedIdx]! } : {}),
      ...p.extra,
    };
    versions.push(v);
    p.path.forEach(([state, t], i) => {
      history.push({ keyId, baseKeyId: base, version: p.n, from: i === 0 ? null : p.path[i - 1]![0], to: state, at: new Date(t), actor: 'alice@example.com', reason: `test: ${state}`, ...p.historyOverride?.[i] });
    });
  }
  return { baseKeyId: base, algorithm, backend, usages: ['sign', 'verify'], createdAt: versions[0]?.createdAt ?? new Date(0), createdBy: 'alice@example.com', versions, history, ...extra };
}

/** One Active version created and activated at `at`. */
export function activeKey(base: string, algorithm: string, backend = 'pkcs11', at = '2026-01-01T00:00:00Z', extra: Partial<InventoryKeyVersion> = {}): InventoryLogicalKey {
  return keyWith(base, algorithm, backend, [{ n: 1, path: [['Active', at]], extra }], { rotationIntervalMs: 90 * DAY });
}

export function hsmModule(backend = 'pkcs11', fips: Partial<ModuleFacts['fips']> = {}, caps: Partial<ModuleFacts['capabilities']> = {}): ModuleFacts {
  return {
    backend,
    info: { backend, description: `Example HSM (${backend})`, manufacturer: 'Example HSM Corp', model: 'X-1', firmwareVersion: '3.2.1' },
    fips: { standard: 'FIPS 140-3', level: 3, approvedMode: true, certificate: '4321', certificateStatus: 'active', eddsaValidated: true, notes: 'Validated module in approved mode.', evidence: 'measured', ...fips },
    capabilities: { algorithms: ['ECDSA_P256', 'ECDSA_P384', 'RSA_3072', 'Ed25519'], persistentKeys: true, hardwareBacked: true, remoteVerify: false, ...caps },
  };
}

export function softwareModule(): ModuleFacts {
  return {
    backend: 'software',
    info: { backend: 'software', description: 'In-process software keys (node:crypto), sealed at rest' },
    fips: { standard: 'none', level: 0, approvedMode: false, notes: 'The software backend is not a FIPS 140 validated cryptographic module.', evidence: 'none' },
    capabilities: { algorithms: ['Ed25519', 'ECDSA_P256', 'RSA_2048'], persistentKeys: true, hardwareBacked: false, remoteVerify: false },
  };
}

export interface RunOptions {
  now: string;
  from?: string;
  to?: string;
  keys?: InventoryLogicalKey[];
  modules?: ModuleFacts[];
  records?: AuditRecord[];
  settings?: Partial<AuditSettings>;
  verification?: Partial<AuditVerifyResult>;
  config?: ComplianceConfigInput;
  framework?: Framework;
  level?: 1 | 2 | 3 | 4;
}

/** Evaluates one rule against the given inputs with a fixed clock (period default: the 30 days up to now). */
export async function runRule(rule: Rule, o: RunOptions): Promise<Finding[]> {
  const now = new Date(o.now);
  const reader = new MemoryAuditReader(o.records ?? [], defaultSettings(o.settings), o.verification);
  const ctx = createRuleContext({
    now,
    period: { from: new Date(o.from ?? now.getTime() - 30 * DAY), to: new Date(o.to ?? now.getTime() + 1) },
    framework: o.framework ?? rule.frameworks[0]!,
    ...(o.level ? { requiredLevel: o.level } : {}),
    config: resolveComplianceConfig(o.config ?? {}),
    keys: o.keys ?? [],
    modules: o.modules ?? [hsmModule()],
    audit: reader,
  });
  const findings = await rule.evaluate(ctx);
  for (const q of reader.queries) {
    if (!q.from || !q.to) throw new Error(`rule ${rule.id} read the audit log without a period: ${JSON.stringify(q)}`);
  }
  return findings;
}

export const violations = (f: Finding[]) => f.filter((x) => x.status === 'violation');
export const onlyPass = (f: Finding[]) => f.length > 0 && f.every((x) => x.status === 'pass');
