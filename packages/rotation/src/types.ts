import type { KeyAlgorithm, KeyUsage } from '@olocus/hsm-core';
import type { KeyState } from './states.js';

/** One version of a logical key, as the registry records it. */
export interface KeyVersion {
  /** Key id in the backend: `<baseKeyId>.v<version>`. */
  keyId: string;
  baseKeyId: string;
  version: number;
  /** Backend `type` holding the key. */
  backend: string;
  /** The backend's stable reference (PKCS#11 URI, KMS ARN...). */
  keyRef: string;
  algorithm: KeyAlgorithm;
  usages: KeyUsage[];
  state: KeyState;
  createdAt: Date;
  /** Start of the signing window (first activation). */
  activatedAt?: Date;
  /** End of the signing window (left Active); signatures dated before it verify. */
  deactivatedAt?: Date;
  /** Protect-stop date (activation + cryptoperiod): no signing after it. */
  expiresAt?: Date;
  stateChangedAt: Date;
  /** A superseded version stays in the verification set, and is not archived, until then. */
  overlapUntil?: Date;
  /** PendingDestruction: when destruction may happen. */
  destroyAfter?: Date;
  /** Set when the version was Revoked or Compromised: it never verifies again. */
  revokedAt?: Date;
  predecessorVersion?: number;
  successorVersion?: number;
  usageCount: number;
  lastUsedAt?: Date;
}

export interface LogicalKey {
  baseKeyId: string;
  algorithm: KeyAlgorithm;
  usages: KeyUsage[];
  backend: string;
  /** Per-key rotation interval; undefined = rotate on demand only. */
  rotationIntervalMs?: number;
  /** Every version is generated backup-eligible (`KeySpec.backup`); absent = not. */
  backup?: true;
  /** Highest version number allocated so far. */
  lastVersion: number;
  createdAt: Date;
  createdBy: string;
}

/** One recorded state change (LC-RECORD). `from` is null for the creation of a version. */
export interface StateChange {
  keyId: string;
  baseKeyId: string;
  version: number;
  from: KeyState | null;
  to: KeyState;
  at: Date;
  actor: string;
  reason: string;
}

export interface ListVersionsOptions {
  baseKeyId?: string;
  state?: KeyState | KeyState[];
  algorithm?: KeyAlgorithm;
  backend?: string;
  /** Page size: default 100, at most 1000. */
  limit?: number;
  /** Opaque cursor from a previous page. */
  cursor?: string;
}

export interface VersionPage {
  versions: KeyVersion[];
  nextCursor?: string;
}

export interface ListLogicalKeysOptions {
  prefix?: string;
  limit?: number;
  cursor?: string;
}

export interface LogicalKeyPage {
  keys: LogicalKey[];
  nextCursor?: string;
}
