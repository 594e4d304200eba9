import type { RawSql } from './helpers.js';

/** Inserts a logical key and one version in `state` straight into the tables (no backend). */
export async function seedVersion(raw: RawSql, base: string, version: number, state: string, at: number, extra: { destroyAfter?: number; activatedAt?: number | null } = {}): Promise<string> {
  await raw.exec(
    `insert into logical_keys (base_key_id, algorithm, usages, backend, rotation_interval_ms, last_version, created_at, created_by)
     values (?, 'Ed25519', '["sign","verify"]', 'software', null, ?, ?, 'seed')
     on conflict (base_key_id) do update set last_version = excluded.last_version`,
    [base, version, at],
  );
  const keyId = `${base}.v${version}`;
  const activated = extra.activatedAt === undefined ? (state === 'PreActivation' ? null : at) : extra.activatedAt;
  await raw.exec(
    `insert into key_versions (key_id, base_key_id, version, backend, key_ref, algorithm, usages, state, created_at, activated_at,
       deactivated_at, expires_at, state_changed_at, overlap_until, destroy_after, pre_destruction_state, revoked_at,
       predecessor_version, successor_version, usage_count, last_used_at)
     values (?, ?, ?, 'software', ?, 'Ed25519', '["sign","verify"]', ?, ?, ?, null, null, ?, null, ?, null, null, null, null, 0, null)`,
    [keyId, base, version, `software:${keyId}`, state, at, activated, at, state === 'PendingDestruction' ? (extra.destroyAfter ?? at) : null],
  );
  return keyId;
}
