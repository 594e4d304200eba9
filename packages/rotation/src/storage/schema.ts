import type { Generated } from 'kysely';

/** Timestamps are milliseconds since the epoch (BIGINT on PostgreSQL, INTEGER on SQLite). */
export interface LogicalKeyTable {
  base_key_id: string;
  algorithm: string;
  /** JSON array of KeyUsage. */
  usages: string;
  backend: string;
  rotation_interval_ms: number | null;
  /** 1: every version is generated backup-eligible (KeySpec.backup). */
  backup: Generated<number>;
  /** Highest version number ever allocated (never reused, even for failed rotations). */
  last_version: number;
  created_at: number;
  created_by: string;
}

export interface KeyVersionTable {
  /** Key id in the backend: `<base>.v<N>`. */
  key_id: string;
  base_key_id: string;
  version: number;
  backend: string;
  key_ref: string;
  algorithm: string;
  usages: string;
  state: string;
  created_at: number;
  activated_at: number | null;
  deactivated_at: number | null;
  expires_at: number | null;
  state_changed_at: number;
  /** End of the overlap: a superseded version is not archived before this. */
  overlap_until: number | null;
  /** When a PendingDestruction version may be destroyed. */
  destroy_after: number | null;
  /** State before PendingDestruction (cancel goes back to it). */
  pre_destruction_state: string | null;
  /** Set once the version was Revoked or Compromised: it never verifies again. */
  revoked_at: number | null;
  predecessor_version: number | null;
  successor_version: number | null;
  usage_count: number;
  last_used_at: number | null;
}

export interface KeyStateHistoryTable {
  id: Generated<number>;
  key_id: string;
  base_key_id: string;
  version: number;
  from_state: string | null;
  to_state: string;
  at: number;
  actor: string;
  reason: string;
}

export interface RotationJournalTable {
  id: string;
  base_key_id: string;
  kind: string;
  from_version: number | null;
  to_version: number;
  key_id: string;
  /** intent → generated → registered → done (or failed). */
  step: string;
  actor: string;
  reason: string;
  owner: string;
  lease_until: number;
  started_at: number;
  updated_at: number;
  key_ref: string | null;
  error: string | null;
}

export interface TaskTable {
  id: string;
  kind: string;
  base_key_id: string;
  key_id: string | null;
  /** Makes scheduling idempotent: one task per dedupe key, ever. */
  dedupe_key: string;
  due_at: number;
  /** pending | running | done | failed | cancelled */
  status: string;
  attempts: number;
  last_error: string | null;
  claimed_by: string | null;
  lease_until: number | null;
  created_at: number;
  updated_at: number;
  completed_at: number | null;
}

export interface Database {
  logical_keys: LogicalKeyTable;
  key_versions: KeyVersionTable;
  key_state_history: KeyStateHistoryTable;
  rotations: RotationJournalTable;
  tasks: TaskTable;
}
