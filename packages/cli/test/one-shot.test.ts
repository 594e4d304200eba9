import { describe, expect, it } from 'vitest';
import { oneShotBackend } from '../src/commands/sign.js';
import type { LoadedConfig } from '../src/config.js';

function loaded(backend: LoadedConfig['config']['backend']): LoadedConfig {
  return { path: '/x/config.json', config: { backend }, rotation: { storage: { kind: 'sqlite', path: '/x/rotation.db' } }, audit: {} } as unknown as LoadedConfig;
}

describe('one-shot sign/verify backend tuning (issue 12)', () => {
  it('a PKCS#11 backend signs on the calling thread: no sign threads for one signature', () => {
    const tuned = oneShotBackend(loaded({ type: 'pkcs11', options: { libraryPath: '/m.so', tokenLabel: 't' } }));
    expect(tuned.config.backend.options).toEqual({ libraryPath: '/m.so', tokenLabel: 't', signThreads: 0, dispatch: 'inline' });
  });

  it('keeps what the config says explicitly, and does not change the loaded config it was given', () => {
    const original = loaded({ type: 'pkcs11', options: { libraryPath: '/m.so', tokenLabel: 't', signThreads: 4, dispatch: 'threads' } });
    const tuned = oneShotBackend(original);
    expect(tuned.config.backend.options).toMatchObject({ signThreads: 4, dispatch: 'threads' });
    const plain = loaded({ type: 'pkcs11', options: { libraryPath: '/m.so', tokenLabel: 't' } });
    oneShotBackend(plain);
    expect(plain.config.backend.options).toEqual({ libraryPath: '/m.so', tokenLabel: 't' });
  });

  it('other backends are left alone (their option schemas are strict)', () => {
    for (const type of ['software', 'aws-kms', 'gcp-kms', 'azure-keyvault']) {
      const l = loaded({ type, options: { directory: '/k' } });
      expect(oneShotBackend(l)).toBe(l);
    }
  });
});
