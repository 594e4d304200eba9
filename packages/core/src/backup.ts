import { toHsmError } from './errors.js';
import type { ExportedKey, ImportKeysResult, KeyBackupCapability } from './types.js';
import { throwIfAborted } from './validate.js';

/**
 * Restores `exported` in order through the capability's batch import when it has one, else one
 * importKey at a time; either way it stops at the first key that fails and says which.
 */
export async function importKeys(capability: KeyBackupCapability, exported: readonly ExportedKey[], options: { signal?: AbortSignal } = {}): Promise<ImportKeysResult> {
  if (capability.importKeys) return capability.importKeys(exported, options);
  const result: ImportKeysResult = { imported: [] };
  for (let index = 0; index < exported.length; index++) {
    try {
      throwIfAborted(options.signal);
      result.imported.push(await capability.importKey(exported[index]!, options.signal ? { signal: options.signal } : undefined));
    } catch (error) {
      result.failed = { index, error: toHsmError(error, 'Internal', `importing key ${exported[index]?.id ?? index}: ${error instanceof Error ? error.message : String(error)}`) };
      break;
    }
  }
  return result;
}
