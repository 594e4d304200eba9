import { describe, expect, it } from 'vitest';
import { HsmError, importKeys, type ExportedKey, type HsmKeyHandle, type ImportKeysResult, type KeyBackupCapability } from '../src/index.js';

const exportedKey = (id: string): ExportedKey => ({ method: 'wrapped', id, algorithm: 'ECDSA_P256', usages: ['sign', 'verify'], publicKeySpki: new Uint8Array([1]), parameters: {} });
const handleOf = (id: string): HsmKeyHandle => ({ id, ref: `ref:${id}`, algorithm: 'ECDSA_P256', usages: ['sign', 'verify'], backend: 'test', instance: 'i', state: 'enabled', metadata: {} });

/** A capability with importKey only, refusing the ids in `refuse` (with a plain Error for 'boom'). */
function perKey(refuse: Set<string>, seen: string[]): KeyBackupCapability {
  return {
    method: 'wrapped',
    exportKey: () => Promise.reject(new Error('not used')),
    importKey: async (exported) => {
      seen.push(exported.id);
      if (exported.id === 'boom') throw new Error('disk on fire');
      if (refuse.has(exported.id)) throw new HsmError('KeyAlreadyExists', `key ${exported.id} exists`);
      return handleOf(exported.id);
    },
  };
}

describe('importKeys', () => {
  it('falls back to importKey one key at a time, stops at the first failure and names its position', async () => {
    const seen: string[] = [];
    const result = await importKeys(perKey(new Set(['b']), seen), ['a', 'b', 'c'].map(exportedKey));
    expect(result.imported.map((h) => h.id)).toEqual(['a']);
    expect(result.failed?.index).toBe(1);
    expect(result.failed?.error.code).toBe('KeyAlreadyExists');
    expect(seen).toEqual(['a', 'b']); // 'c' was not attempted
  });

  it('a failure that is not an HsmError comes back typed, with its message, and the batch stops there', async () => {
    const result = await importKeys(perKey(new Set(), []), ['a', 'boom', 'c'].map(exportedKey));
    expect(result.imported.map((h) => h.id)).toEqual(['a']);
    expect(result.failed?.error).toBeInstanceOf(HsmError);
    expect(result.failed?.error.code).toBe('Internal');
    expect(result.failed?.error.message).toContain('disk on fire');
  });

  it('an aborted signal stops before the next key', async () => {
    const controller = new AbortController();
    const seen: string[] = [];
    const capability = perKey(new Set(), seen);
    const importKey = capability.importKey;
    capability.importKey = async (exported, options) => {
      const handle = await importKey(exported, options);
      controller.abort();
      return handle;
    };
    const result = await importKeys(capability, ['a', 'b'].map(exportedKey), { signal: controller.signal });
    expect(result.imported.map((h) => h.id)).toEqual(['a']);
    expect(result.failed?.index).toBe(1);
    expect(seen).toEqual(['a']);
  });

  it("uses the capability's own batch import when it has one", async () => {
    const batch: ImportKeysResult = { imported: [handleOf('x')] };
    const capability: KeyBackupCapability = { ...perKey(new Set(), []), importKeys: async (exported) => (exported.length === 2 ? batch : { imported: [] }) };
    expect(await importKeys(capability, ['x', 'y'].map(exportedKey))).toBe(batch);
  });
});
