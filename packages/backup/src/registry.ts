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
  for (const [k, v] of Object.entries(row)) out[k] = v === undefined ? null : typeof v === 'bigint' ? Number(v) : (v as string | number | boolean | null);
  return out;
}

export async function readRegistryRows(registry: KeyRegistry, baseKeyId: string): Promise<RegistryPart> {
  const db = registry.store.db;
  const logical = await db.selectFrom('logical_keys').selectAll().where('base_key_id', '=', baseKeyId).executeTakeFirst();
  if (!logical) throw new Error(`logical key ${baseKeyId} vanished while it was read`);
  const versions = await db.selectFrom('key_versions').selectAll().where('base_key_id', '=', baseKeyId).orderBy('version').execute();
  const history = await db.selectFrom('key_state_history').selectAll().where('base_key_id', '=', baseKeyId).orderBy('id').execute();
  // the store's own row ids are not part of a key's history (the target allocates its own)
  return { baseKeyId, logicalKey: plain(logical), versions: versions.map(plain), history: history.map(({ id: _id, ...h }) => plain(h)) };
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
  // Rows go back column for column, whatever columns the store has (a later migration's column,
  // e.g. logical_keys.backup, comes back as it was); only the backend reference of a version is the
  // restored key's. The history's own ids are the target store's to allocate.
  await registry.store.tx(async (trx) => {
    await trx.insertInto('logical_keys').values(part.logicalKey as never).execute();
    for (const v of part.versions) {
      const ref = refs.get(String(v['key_id']));
      await trx
        .insertInto('key_versions')
        .values({ ...v, ...(ref ? { key_ref: ref.ref, backend: ref.backend } : {}) } as never)
        .execute();
    }
    for (const h of part.history) {
      const { id: _id, ...row } = h;
      await trx.insertInto('key_state_history').values(row as never).execute();
    }
  });
  registry.invalidate(part.baseKeyId);
}

/** Points a restored version at the backend reference its key has now (the restored token's, not the lost one's). */
export async function updateVersionRef(registry: KeyRegistry, keyId: string, ref: { ref: string; backend: string }): Promise<void> {
  await registry.store.db.updateTable('key_versions').set({ key_ref: ref.ref, backend: ref.backend }).where('key_id', '=', keyId).execute();
}
