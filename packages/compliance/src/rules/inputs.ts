import type { Capabilities, FipsStatus, HsmInfo, KeyUsage } from '@olocus/hsm-core';

/**
 * What the rules evaluate besides the audit log: the key inventory (logical keys, their
 * versions and recorded state changes) and the facts of each module. The inventory is a
 * snapshot: it is small (one row per key version) and read once per evaluation; the audit log
 * is streamed.
 */

/** Key version states (COMPLIANCE-RULES.md "States"; the same list as @olocus/hsm-rotation's KEY_STATES). */
export const KEY_LIFECYCLE_STATES = [
  'PreActivation',
  'Active',
  'Suspended',
  'Superseded',
  'Revoked',
  'Compromised',
  'Archived',
  'PendingDestruction',
  'Destroyed',
] as const;
export type KeyLifecycleState = (typeof KEY_LIFECYCLE_STATES)[number];

/** One version of a logical key. */
export interface InventoryKeyVersion {
  /** Key id in the backend (`<baseKeyId>.v<version>` for registry keys). */
  keyId: string;
  baseKeyId: string;
  version: number;
  /** Algorithm name: a core KeyAlgorithm, or any other string a source reports (ALG-CURVE checks those). */
  algorithm: string;
  /** Backend `type` holding the key. */
  backend: string;
  state: KeyLifecycleState;
  usages: KeyUsage[];
  createdAt: Date;
  /** Start of the signing window. */
  activatedAt?: Date;
  /** End of the signing window (left Active). */
  deactivatedAt?: Date;
  /** Protect-stop date: no signing after it. */
  expiresAt?: Date;
  stateChangedAt: Date;
  /** PendingDestruction: when destruction may happen. */
  destroyAfter?: Date;
  revokedAt?: Date;
  usageCount?: number;
  lastUsedAt?: Date;
}

/** One recorded state change. Fields are optional here because LC-RECORD checks that they are present. */
export interface InventoryStateChange {
  keyId: string;
  baseKeyId: string;
  version: number;
  /** null for the creation of a version. */
  from: KeyLifecycleState | null;
  to: KeyLifecycleState;
  at?: Date;
  actor?: string;
  reason?: string;
}

export interface InventoryLogicalKey {
  baseKeyId: string;
  algorithm: string;
  backend: string;
  usages: KeyUsage[];
  /** Scheduled rotation interval; undefined = rotated on demand only. */
  rotationIntervalMs?: number;
  createdAt: Date;
  createdBy?: string;
  /** Versions, oldest first. */
  versions: InventoryKeyVersion[];
  /** State changes of every version, oldest first. */
  history: InventoryStateChange[];
}

/** The key inventory the rules read. */
export interface KeyInventory {
  /** Where the inventory comes from (shown in reports), e.g. "rotation registry". */
  readonly source: string;
  logicalKeys(): Promise<InventoryLogicalKey[]>;
}

/** Facts of one module (backend instance), as its `info()`, `fipsStatus()` and `capabilities()` report them. */
export interface ModuleFacts {
  /** Backend `type` (matches InventoryKeyVersion.backend and AuditRecord.backend). */
  backend: string;
  info: HsmInfo;
  fips: FipsStatus;
  capabilities: Capabilities;
}

// ------------------------------------------------------------------ registry adapter

/** The parts of @olocus/hsm-rotation's KeyVersion the inventory reads. */
export interface RegistryKeyVersionLike {
  keyId: string;
  baseKeyId: string;
  version: number;
  backend: string;
  algorithm: string;
  usages: KeyUsage[];
  state: KeyLifecycleState;
  createdAt: Date;
  activatedAt?: Date;
  deactivatedAt?: Date;
  expiresAt?: Date;
  stateChangedAt: Date;
  destroyAfter?: Date;
  revokedAt?: Date;
  usageCount: number;
  lastUsedAt?: Date;
}

export interface RegistryLogicalKeyLike {
  baseKeyId: string;
  algorithm: string;
  usages: KeyUsage[];
  backend: string;
  rotationIntervalMs?: number;
  createdAt: Date;
  createdBy: string;
}

export interface RegistryStateChangeLike {
  keyId: string;
  baseKeyId: string;
  version: number;
  from: KeyLifecycleState | null;
  to: KeyLifecycleState;
  at: Date;
  actor: string;
  reason: string;
}

/**
 * The read methods of @olocus/hsm-rotation's KeyRegistry the inventory uses. Structural, so
 * this package does not depend on rotation at run time; a test assigns a real KeyRegistry to
 * it, so the compiler proves they still match.
 */
export interface RegistryLike {
  listLogicalKeys(options?: { limit?: number; cursor?: string }): Promise<{ keys: RegistryLogicalKeyLike[]; nextCursor?: string }>;
  getKeyVersions(baseKeyId: string): Promise<RegistryKeyVersionLike[]>;
  getHistory(keyIdOrBase: string): Promise<RegistryStateChangeLike[]>;
}

function copyVersion(v: RegistryKeyVersionLike): InventoryKeyVersion {
  const out: InventoryKeyVersion = {
    keyId: v.keyId,
    baseKeyId: v.baseKeyId,
    version: v.version,
    algorithm: v.algorithm,
    backend: v.backend,
    state: v.state,
    usages: [...v.usages],
    createdAt: v.createdAt,
    stateChangedAt: v.stateChangedAt,
    usageCount: v.usageCount,
  };
  if (v.activatedAt) out.activatedAt = v.activatedAt;
  if (v.deactivatedAt) out.deactivatedAt = v.deactivatedAt;
  if (v.expiresAt) out.expiresAt = v.expiresAt;
  if (v.destroyAfter) out.destroyAfter = v.destroyAfter;
  if (v.revokedAt) out.revokedAt = v.revokedAt;
  if (v.lastUsedAt) out.lastUsedAt = v.lastUsedAt;
  return out;
}

/** The rotation registry as a KeyInventory: every logical key, its versions and its history (pages of 500). */
export function inventoryFromRegistry(registry: RegistryLike): KeyInventory {
  return {
    source: 'rotation registry',
    async logicalKeys() {
      const out: InventoryLogicalKey[] = [];
      let cursor: string | undefined;
      do {
        const page = await registry.listLogicalKeys({ limit: 500, ...(cursor !== undefined ? { cursor } : {}) });
        for (const k of page.keys) {
          const [versions, history] = await Promise.all([registry.getKeyVersions(k.baseKeyId), registry.getHistory(k.baseKeyId)]);
          out.push({
            baseKeyId: k.baseKeyId,
            algorithm: k.algorithm,
            backend: k.backend,
            usages: [...k.usages],
            ...(k.rotationIntervalMs !== undefined ? { rotationIntervalMs: k.rotationIntervalMs } : {}),
            createdAt: k.createdAt,
            createdBy: k.createdBy,
            versions: versions.map(copyVersion),
            history: history.map((h) => ({ keyId: h.keyId, baseKeyId: h.baseKeyId, version: h.version, from: h.from, to: h.to, at: h.at, actor: h.actor, reason: h.reason })),
          });
        }
        cursor = page.nextCursor;
      } while (cursor !== undefined);
      return out;
    },
  };
}

/** A fixed inventory (tests, imports from another system). */
export function staticInventory(keys: InventoryLogicalKey[], source = 'static inventory'): KeyInventory {
  return {
    source,
    async logicalKeys() {
      return keys;
    },
  };
}

/** No keys: for deployments without a rotation registry (only the audit log and module facts are checked). */
export function emptyInventory(): KeyInventory {
  return staticInventory([], 'none (no rotation registry)');
}

// ------------------------------------------------------------------ FIPS evidence

/** How a module's FIPS facts are known (core's FipsStatus.evidence). */
export const FIPS_EVIDENCE = ['measured', 'attested', 'provider-claim', 'none'] as const;
export type FipsEvidenceBasis = (typeof FIPS_EVIDENCE)[number];

/** Words for people: what each evidence basis means, for reports. */
export const FIPS_EVIDENCE_TEXT: Readonly<Record<FipsEvidenceBasis, string>> = {
  measured: 'measured (read from the device, matching a validated module)',
  attested: "attested (the operator's statement in the config, not measured)",
  'provider-claim': "provider claim (the cloud provider's documentation, not measured)",
  none: 'none (no evidence of validation)',
};

/**
 * The evidence basis of a module's FIPS facts. Facts from a backend built before core v2 carry
 * none: they are never taken as measured.
 */
export function fipsEvidenceOf(fips: FipsStatus): FipsEvidenceBasis {
  const e = (fips as { evidence?: unknown }).evidence;
  return typeof e === 'string' && (FIPS_EVIDENCE as readonly string[]).includes(e) ? (e as FipsEvidenceBasis) : 'none';
}

/** Contradictions the backend found while establishing its FIPS status (core's FipsStatus.findings). */
export function fipsFindingsOf(fips: FipsStatus): string[] {
  const f = (fips as { findings?: unknown }).findings;
  return Array.isArray(f) ? f.filter((x): x is string => typeof x === 'string' && x.trim() !== '') : [];
}

/** The module claims a FIPS 140 validation (its standard is neither 'none' nor 'unknown'). */
export function claimsFipsValidation(fips: FipsStatus): boolean {
  const s = fips.standard as string;
  return s !== 'none' && s !== 'unknown';
}
