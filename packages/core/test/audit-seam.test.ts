import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { generateKeyPairSync, sign as nodeSign, type KeyObject } from 'node:crypto';
import {
  BackendRegistry,
  HsmError,
  HsmManager,
  auditedBackend,
  parseWithSchema,
  type BackendFactory,
  type HsmBackend,
  type HsmKeyHandle,
  type KeyRef,
  type KeyVersionResolver,
  type OperationAuditor,
  type OperationEvent,
} from '../src/index.js';

/** In-memory Ed25519 backend (the seam under test is core's; real backends run the conformance suite). */
function memoryFactory(): BackendFactory<Record<string, never>> {
  return {
    type: 'memory',
    parseOptions: (raw) => parseWithSchema(z.object({}).strict(), raw ?? {}, 'backend.options'),
    create: () => {
      const keys = new Map<string, { handle: HsmKeyHandle; privateKey: KeyObject; publicKey: KeyObject }>();
      const find = (ref: KeyRef) => {
        const k = typeof ref === 'string' ? keys.get(ref) : [...keys.values()].find((entry) => entry.handle.ref === ref.ref);
        if (!k) throw new HsmError('KeyNotFound', `no key ${typeof ref === 'string' ? ref : ref.id}`);
        return k;
      };
      const backend: HsmBackend & { metrics(): unknown } = {
        type: 'memory',
        instanceId: 'memory-1',
        initialize: async () => undefined,
        close: async () => undefined,
        info: async () => ({ backend: 'memory', description: 'm' }),
        capabilities: async () => ({ algorithms: ['Ed25519'], persistentKeys: false, hardwareBacked: false, remoteVerify: false }),
        fipsStatus: async () => ({ standard: 'none', level: 0, approvedMode: false, evidence: 'none', notes: 'test' }),
        generateKeyPair: async (spec) => {
          const pair = generateKeyPairSync('ed25519');
          const handle: HsmKeyHandle = { id: spec.id, ref: `memory:${spec.id}`, algorithm: 'Ed25519', usages: ['sign', 'verify'], createdAt: new Date(), backend: 'memory', instance: 'memory-1', metadata: {} };
          keys.set(spec.id, { handle, ...pair });
          return handle;
        },
        getKey: async (ref) => find(ref).handle,
        getPublicKey: async (ref) => ({ algorithm: 'Ed25519', spki: find(ref).publicKey.export({ format: 'der', type: 'spki' }) }),
        sign: async (ref, data) => nodeSign(null, data, find(ref).privateKey),
        verify: async () => false,
        listKeys: async () => ({ keys: [...keys.values()].map((k) => k.handle) }),
        destroyKey: async (ref) => void keys.delete(find(ref).handle.id),
        healthCheck: async () => ({ healthy: true, latencyMs: 0, message: 'ok' }),
        metrics: () => ({ pool: { size: 1, inUse: 0, waiting: 0, max: 1 } }),
      };
      return backend;
    },
  };
}

class RecordingAuditor implements OperationAuditor {
  readonly events: OperationEvent[] = [];
  failWith: Error | undefined;
  async record(event: OperationEvent): Promise<void> {
    if (this.failWith) throw this.failWith;
    this.events.push(event);
  }
}

async function open(auditor: OperationAuditor, resolver?: KeyVersionResolver): Promise<HsmManager> {
  const manager = new HsmManager({ backend: { type: 'memory' } }, { registry: new BackendRegistry().register(memoryFactory()), auditor, ...(resolver ? { resolver } : {}) });
  await manager.initialize();
  return manager;
}

describe('HsmManager with an auditor', () => {
  it('reports generate, sign and a locally done verify, each once, with outcome and data', async () => {
    const auditor = new RecordingAuditor();
    const manager = await open(auditor);
    const key = await manager.generateKey({ id: 'k1', algorithm: 'Ed25519' });
    const data = Buffer.from('payload');
    const signature = await manager.sign(key, data);
    expect(await manager.verify('k1', data, signature)).toBe(true);
    expect(await manager.verify('k1', Buffer.from('other'), signature)).toBe(false);
    expect(auditor.events.map((e) => [e.operation, e.outcome, e.keyId])).toEqual([
      ['generateKey', 'success', 'k1'],
      ['sign', 'success', 'k1'],
      ['verify', 'success', 'k1'],
      ['verify', 'success', 'k1'],
    ]);
    const verifies = auditor.events.filter((e) => e.operation === 'verify');
    expect(verifies.map((e) => [e.valid, e.verifiedLocally, e.algorithm])).toEqual([
      [true, true, 'Ed25519'],
      [false, true, 'Ed25519'],
    ]);
    expect(Buffer.from(auditor.events[1]!.data!).toString()).toBe('payload');
    await manager.close();
  });

  it('withholds the signature when the auditor rejects (fail closed)', async () => {
    const auditor = new RecordingAuditor();
    const manager = await open(auditor);
    const key = await manager.generateKey({ id: 'k1', algorithm: 'Ed25519' });
    auditor.failWith = new HsmError('PolicyViolation', 'audit store down');
    await expect(manager.sign(key, Buffer.from('x'))).rejects.toMatchObject({ code: 'PolicyViolation' });
    await manager.close();
  });

  it('reports a failed operation with its error and keeps the original error for the caller', async () => {
    const auditor = new RecordingAuditor();
    const manager = await open(auditor);
    await expect(manager.sign('missing', Buffer.from('x'))).rejects.toMatchObject({ code: 'KeyNotFound' });
    expect(auditor.events).toHaveLength(1);
    expect(auditor.events[0]).toMatchObject({ operation: 'sign', outcome: 'failure', keyId: 'missing' });
    expect((auditor.events[0]!.error as HsmError).code).toBe('KeyNotFound');
    await manager.close();
  });

  it('reports logical-key signing with the version used, and audits direct backend use (the rotation path)', async () => {
    const auditor = new RecordingAuditor();
    const resolver: KeyVersionResolver = {
      resolveForSigning: async (base) => ({ baseKeyId: base, version: 2, key: `${base}.v2`, algorithm: 'Ed25519' }),
      resolveForVerification: async (base) => ({ baseKeyId: base, version: 2, key: `${base}.v2`, algorithm: 'Ed25519' }),
    };
    const manager = await open(auditor, resolver);
    await manager.backend.generateKeyPair({ id: 'pay.v2', algorithm: 'Ed25519' });
    const { signature } = await manager.signWithLogicalKey('pay', Buffer.from('d'));
    expect(await manager.verifyWithLogicalKey('pay', Buffer.from('d'), signature, new Date())).toBe(true);
    expect(auditor.events.map((e) => [e.operation, e.keyId, e.logicalKey?.version])).toEqual([
      ['generateKey', 'pay.v2', undefined],
      ['sign', 'pay.v2', 2],
      ['verify', 'pay.v2', 2],
    ]);
    await manager.close();
  });

  it('auditedBackend passes metrics() and non-key calls through without records', async () => {
    const auditor = new RecordingAuditor();
    const inner = await memoryFactory().create({}, { env: {}, readSecret: async () => '' });
    const wrapped = auditedBackend(inner, auditor) as HsmBackend & { metrics(): unknown };
    expect(wrapped.metrics()).toEqual({ pool: { size: 1, inUse: 0, waiting: 0, max: 1 } });
    await wrapped.info();
    await wrapped.healthCheck();
    expect(auditor.events).toHaveLength(0);
  });
});

describe('OperationAuditor.attach', () => {
  it('receives the unaudited backend once, before the manager is ready; its failure fails initialize', async () => {
    const auditor = new RecordingAuditor() as RecordingAuditor & { attach(b: HsmBackend): Promise<void> };
    const attached: HsmBackend[] = [];
    auditor.attach = async (b) => {
      attached.push(b);
      await b.generateKeyPair({ id: 'checkpoint-key', algorithm: 'Ed25519' });
    };
    const manager = await open(auditor);
    expect(attached).toHaveLength(1);
    expect(auditor.events).toHaveLength(0); // the attach-time key generation is not an audited operation
    expect((await manager.listKeys()).keys.map((k) => k.id)).toEqual(['checkpoint-key']);
    await manager.close();

    const failing = new RecordingAuditor() as RecordingAuditor & { attach(): Promise<void> };
    failing.attach = async () => {
      throw new HsmError('DeviceUnavailable', 'audit store unreachable');
    };
    const m2 = new HsmManager({ backend: { type: 'memory' } }, { registry: new BackendRegistry().register(memoryFactory()), auditor: failing });
    await expect(m2.initialize()).rejects.toMatchObject({ code: 'DeviceUnavailable' });
  });
});
