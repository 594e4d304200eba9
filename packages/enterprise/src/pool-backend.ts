import {
  HsmError,
  isHsmError,
  type Capabilities,
  type FipsStatus,
  type HealthStatus,
  type HsmBackend,
  type HsmInfo,
  type HsmKeyHandle,
  type KeyAlgorithm,
  type KeyPage,
  type KeyRef,
  type KeySpec,
  type ListKeysOptions,
  type PublicKeyInfo,
  type SignOptions,
} from '@olocus/hsm-core';
import type { HsmPool } from './pool.js';

/**
 * Generates a key on a set of members so that each holds the same key material under `spec.id`
 * (a replication group). For PKCS#11 tokens see `Pkcs11Replicator`; vendor clusters do it by
 * themselves and need only `generateKeyPair` on one member.
 */
export type GroupGenerator = (spec: KeySpec, members: readonly string[], pool: HsmPool) => Promise<void>;

/**
 * The pool seen as one backend, so that the rotation registry (which generates and destroys
 * through one `HsmBackend`) can manage keys that live on several members. Where a new key goes is
 * asked of `placement` (the enterprise manager answers from the application's policy).
 */
export class PoolBackend implements HsmBackend {
  readonly type = 'pool';
  readonly instanceId: string;

  constructor(
    readonly pool: HsmPool,
    private readonly placement: (spec: KeySpec) => Promise<string[]>,
    private readonly groupGenerator?: GroupGenerator,
    name = 'default',
  ) {
    this.instanceId = `pool:${name}`;
  }

  initialize(): Promise<void> {
    return this.pool.initialize();
  }
  close(): Promise<void> {
    return this.pool.close();
  }

  async info(): Promise<HsmInfo> {
    return { backend: this.type, description: `HSM pool of ${this.pool.memberNames().length} members (${this.pool.memberNames().join(', ')})` };
  }

  /** What every member can do (a key may be placed on any of them). */
  async capabilities(): Promise<Capabilities> {
    const all = await Promise.all(this.pool.memberNames().map((m) => this.pool.backendOf(m).capabilities()));
    const algorithms = all.reduce<KeyAlgorithm[]>((acc, c) => acc.filter((a) => c.algorithms.includes(a)), [...(all[0]?.algorithms ?? [])]);
    return { algorithms, persistentKeys: all.every((c) => c.persistentKeys), hardwareBacked: all.every((c) => c.hardwareBacked), remoteVerify: false };
  }

  /** The weakest member's status: a key may be on any of them. */
  async fipsStatus(): Promise<FipsStatus> {
    const all = await Promise.all(this.pool.memberNames().map((m) => this.pool.backendOf(m).fipsStatus()));
    const weakest = all.reduce((a, b) => (b.level < a.level ? b : a));
    return { ...weakest, notes: `weakest of ${all.length} pool members: ${weakest.notes}` };
  }

  async healthCheck(): Promise<HealthStatus> {
    const members = this.pool.status();
    const up = members.filter((m) => m.reason === undefined);
    return {
      healthy: up.length > 0,
      latencyMs: 0,
      message: `${up.length} of ${members.length} pool members take work${up.length < members.length ? `; down: ${members.filter((m) => m.reason !== undefined).map((m) => `${m.name} (${m.reason})`).join(', ')}` : ''}`,
    };
  }

  private idOf(key: KeyRef): string {
    const raw = typeof key === 'string' ? key : key.ref;
    return raw.startsWith('pool:') ? raw.slice(raw.indexOf('/') + 1) : raw;
  }

  private async ensurePlaced(id: string): Promise<void> {
    if (!this.pool.placementOf(id)) await this.pool.discover(id);
  }

  private handle(inner: HsmKeyHandle, members: string[]): HsmKeyHandle {
    return { ...inner, ref: `${this.instanceId}/${inner.id}`, backend: this.type, instance: this.instanceId, metadata: { ...inner.metadata, members: members.join(',') } };
  }

  async generateKeyPair(spec: KeySpec): Promise<HsmKeyHandle> {
    const members = await this.placement(spec);
    if (members.length > 1) {
      if (!this.groupGenerator) {
        throw new HsmError('PolicyViolation', `key ${spec.id} must live on ${members.length} members (policy rule replicas) but the pool has no group generator configured`, { details: { rule: 'replicas' } });
      }
      await this.groupGenerator(spec, members, this.pool);
      this.pool.place(spec.id, members);
      return this.handle(await this.pool.backendOf(members[0]!).getKey(spec.id), members);
    }
    return this.handle(await this.pool.generateOn(members[0]!, spec), members);
  }

  async getKey(key: KeyRef): Promise<HsmKeyHandle> {
    const id = this.idOf(key);
    await this.ensurePlaced(id);
    const { result } = await this.pool.run(id, (b) => b.getKey(id));
    return this.handle(result, this.pool.placementOf(id)!.members);
  }

  async getPublicKey(key: KeyRef): Promise<PublicKeyInfo> {
    const id = this.idOf(key);
    await this.ensurePlaced(id);
    return this.pool.getPublicKey(id);
  }

  async sign(key: KeyRef, data: Uint8Array, options?: SignOptions): Promise<Uint8Array> {
    const id = this.idOf(key);
    await this.ensurePlaced(id);
    return (await this.pool.sign(id, data, options)).signature;
  }

  async verify(key: KeyRef, data: Uint8Array, signature: Uint8Array, options?: SignOptions): Promise<boolean> {
    const id = this.idOf(key);
    await this.ensurePlaced(id);
    return this.pool.verify(id, data, signature, options);
  }

  async listKeys(options?: ListKeysOptions): Promise<KeyPage> {
    const seen = new Map<string, HsmKeyHandle>();
    for (const name of this.pool.memberNames()) {
      try {
        const page = await this.pool.backendOf(name).listKeys({ ...(options?.prefix !== undefined ? { prefix: options.prefix } : {}), limit: 1000 });
        for (const k of page.keys) if (!seen.has(k.id)) seen.set(k.id, this.handle(k, [name]));
      } catch (error) {
        if (!isHsmError(error)) throw error;
      }
    }
    const keys = [...seen.values()].sort((a, b) => a.id.localeCompare(b.id)).slice(0, options?.limit ?? 100);
    return { keys };
  }

  async destroyKey(key: KeyRef): Promise<void> {
    const id = this.idOf(key);
    await this.ensurePlaced(id);
    await this.pool.destroyEverywhere(id);
  }
}
