import type { KeyRegistry } from '@olocus/hsm-rotation';
import type { RegistryPart, Row } from './format.js';

/**
 * The registry's rows are read and written through the rotation package's public `Store`
 * (`registry.store.db`, its typed schema): a restore must bring back every column as it was
 * (revocation time, overlap end, state before a scheduled destruction...), which the registry's
 * state-machine methods cannot set directly — and must not, since a restore is not a transition.
 */

function plain(row: object): Row {
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) out[k] = v === undefined ? null : typeof v === 'bigint' ? Number(v) : (v as string | number | null);
  return out;
}

export async function readRegistryRows(registry: KeyRegistry, baseKeyId: string): Promise<RegistryPart> {
  const db = registry.store.db;
  const logical = await db.selectFrom('logical_keys').selectAll().where('base_key_id', '=', baseKeyId).executeTakeFirst();
  if (!logical) throw new Error(`logical key ${baseKeyId} vanished while it was read`);
  const versions = await db.selectFrom('key_versions').selectAll().where('base_key_id', '=', baseKeyId).orderBy('version').execute();
  const history = await db
    .selectFrom('key_state_history')
    .select(['key_id', 'base_key_id', 'version', 'from_state', 'to_state', 'at', 'actor', 'reason'])
    .where('base_key_id', '=', baseKeyId)
    .orderBy('id')
    .execute();
  return { baseKeyId, logicalKey: plain(logical), versions: versions.map(plain), history: history.map(plain) };
}

/** The target registry's rows of a logical key, or undefined when it has none. */
export async function existingRows(registry: KeyRegistry, baseKeyId: string): Promise<RegistryPart | undefined> {
  if (!(await registry.hasLogicalKey(baseKeyId))) return undefined;
  return readRegistryRows(registry, baseKeyId);
}

/**
 * Inserts a logical key with its versions and history in one transaction: either the whole key
 * is in the registry or none of it (a kill -9 half way through leaves nothing to undo).
 * `refs` gives the backend reference each restored version now has.
 */
export async function insertRegistryRows(registry: KeyRegistry, part: RegistryPart, refs: Map<string, { ref: string; backend: string }>): Promise<void> {
  await registry.store.tx(async (trx) => {
    const l = part.logicalKey;
    await trx
      .insertInto('logical_keys')
      .values({
        base_key_id: String(l['base_key_id']),
        algorithm: String(l['algorithm']),
        usages: String(l['usages']),
        backend: String(l['backend']),
        rotation_interval_ms: l['rotation_interval_ms'] === null ? null : Number(l['rotation_interval_ms']),
        last_version: Number(l['last_version']),
        created_at: Number(l['created_at']),
        created_by: String(l['created_by']),
      })
      .execute();
    for (const v of part.versions) {
      const keyId = String(v['key_id']);
      const ref = refs.get(keyId);
      const num = (k: string): number | null => (v[k] === null || v[k] === undefined ? null : Number(v[k]));
      const str = (k: string): string | null => (v[k] === null || v[k] === undefined ? null : String(v[k]));
      await trx
        .insertInto('key_versions')
        .values({
          key_id: keyId,
          base_key_id: String(v['base_key_id']),
          version: Number(v['version']),
          backend: ref?.backend ?? String(v['backend']),
          key_ref: ref?.ref ?? String(v['key_ref']),
          algorithm: String(v['algorithm']),
          usages: String(v['usages']),
          state: String(v['state']),
          created_at: Number(v['created_at']),
          activated_at: num('activated_at'),
          deactivated_at: num('deactivated_at'),
          expires_at: num('expires_at'),
          state_changed_at: Number(v['state_changed_at']),
          overlap_until: num('overlap_until'),
          destroy_after: num('destroy_after'),
          pre_destruction_state: str('pre_destruction_state'),
          revoked_at: num('revoked_at'),
          predecessor_version: num('predecessor_version'),
          successor_version: num('successor_version'),
          usage_count: Number(v['usage_count'] ?? 0),
          last_used_at: num('last_used_at'),
        })
        .execute();
    }
    for (const h of part.history) {
      await trx
        .insertInto('key_state_history')
        .values({
          key_id: String(h['key_id']),
          base_key_id: String(h['base_key_id']),
          version: Number(h['version']),
          from_state: h['from_state'] === null ? null : String(h['from_state']),
          to_state: String(h['to_state']),
          at: Number(h['at']),
          actor: String(h['actor']),
          reason: String(h['reason']),
        })
        .execute();
    }
  });
  registry.invalidate(part.baseKeyId);
}

/** Points a restored version at the backend reference its key has now (the restored token's, not the lost one's). */
export async function updateVersionRef(registry: KeyRegistry, keyId: string, ref: { ref: string; backend: string }): Promise<void> {
  await registry.store.db.updateTable('key_versions').set({ key_ref: ref.ref, backend: ref.backend }).where('key_id', '=', keyId).execute();
}
