import { HsmError, type HealthStatus, type HsmBackend, type KeyRef, type SignOptions } from '@olocus/hsm-core';
import { MemoryBackend, MemoryKeyStore } from '@olocus/hsm-core/testing';

/**
 * A memory backend whose device can be "unplugged": while down, key operations fail with a
 * retryable DeviceUnavailable and the health check reports unhealthy, like a network HSM whose
 * server died.
 */
export class FlakyBackend extends MemoryBackend {
  down = false;
  /** Fails the next N signatures with this error, then behaves. */
  failNext: { count: number; error: () => unknown } | undefined;
  signCalls = 0;
  delayMs = 0;

  constructor(readonly keyStore: MemoryKeyStore = new MemoryKeyStore()) {
    super({ store: keyStore });
  }

  override async sign(key: KeyRef, data: Uint8Array, options?: SignOptions): Promise<Uint8Array> {
    this.signCalls++;
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.down) throw new HsmError('DeviceUnavailable', `device ${this.keyStore.name} unreachable`, { retryable: true });
    if (this.failNext && this.failNext.count > 0) {
      this.failNext.count--;
      throw this.failNext.error();
    }
    return super.sign(key, data, options);
  }

  override async healthCheck(): Promise<HealthStatus> {
    if (this.down) return { healthy: false, latencyMs: 0, message: 'device unreachable' };
    return super.healthCheck();
  }
}

/** Copies a key's material from one memory store to others (what replication does on HSMs). */
export function replicateMemoryKey(keyId: string, from: MemoryKeyStore, to: MemoryKeyStore[]): void {
  const entry = from.keys.get(keyId);
  if (!entry) throw new Error(`no key ${keyId} in ${from.name}`);
  for (const store of to) {
    store.keys.set(keyId, {
      ...entry,
      handle: { ...entry.handle, ref: `memory:${store.name}/${keyId}`, instance: `memory:${store.name}` },
    });
  }
}

export async function initialized<T extends HsmBackend>(backend: T): Promise<T> {
  await backend.initialize();
  return backend;
}
