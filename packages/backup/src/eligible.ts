import type { HsmBackend, KeySpec } from '@olocus/hsm-core';

/**
 * The backend with every key it generates made backup-eligible (`KeySpec.backup: true`) unless the
 * caller said `backup: false`. Backup is decided at generation (a PKCS#11 key made non-extractable
 * can never become extractable), and the rotation manager generates versions without a `backup`
 * field: an installation whose policy is "every key is backed up" hands this view to rotation so
 * that each new version can be exported. Every other member is the backend's own.
 */
export function withBackupByDefault(backend: HsmBackend): HsmBackend {
  return new Proxy(backend, {
    get(target, property) {
      if (property === 'generateKeyPair') return (spec: KeySpec) => target.generateKeyPair({ ...spec, backup: spec.backup ?? true });
      // read with the target as receiver: class getters over private fields (instanceId) reject a proxy as `this`
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
