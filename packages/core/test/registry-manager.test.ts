import { generateKeyPairSync, sign as nodeSign, type KeyObject } from 'node:crypto';
import { mkdtemp, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  BackendRegistry,
  HsmError,
  HsmManager,
  parseWithSchema,
  readSecret,
  type BackendFactory,
  type HsmBackend,
  type HsmKeyHandle,
  type KeyRef,
} from '../src/index.js';

/**
 * A minimal in-memory Ed25519 backend: enough to exercise the registry and the manager's
 * caching. Real backends are tested against the conformance suite in their own packages.
 */
function memoryFactory(counters: { verify: number; getPublicKey: number }): BackendFactory<{ label: string }> {
  return {
    type: 'memory',
    parseOptions: (raw) => parseWithSchema(z.object({ label: z.string() }).strict(), raw, 'backend.options'),
    create: (options) => {
      const keys = new Map<string, { handle: HsmKeyHandle; privateKey: KeyObject; publicKey: KeyObject }>();
      const find = (ref: KeyRef) => {
        const k = typeof ref === 'string' ? keys.get(ref) : [...keys.values()].find((entry) => entry.handle.ref === ref.ref);
        if (!k) throw new HsmError('KeyNotFound', `no key ${typeof ref === 'string' ? ref : ref.id}`);
        return k;
      };
      const backend: HsmBackend = {
        type: 'memory',
        instanceId: 'memory-1',
        initialize: async () => undefined,
        close: async () => undefined,
        info: async () => ({ backend: 'memory', description: options.label }),
        capabilities: async () => ({ algorithms: ['Ed25519'], persistentKeys: false, hardwareBacked: false, remoteVerify: false }),
        fipsStatus: async () => ({ standard: 'none', level: 0, approvedMode: false, evidence: 'none', notes: 'test' }),
        generateKeyPair: async (spec) => {
          const pair = generateKeyPairSync('ed25519');
          const handle: HsmKeyHandle = { id: spec.id, ref: `memory:${spec.id}`, algorithm: 'Ed25519', usages: ['sign', 'verify'], createdAt: new Date(), backend: 'memory', instance: 'memory-1', metadata: {} };
          keys.set(spec.id, { handle, ...pair });
          return handle;
        },
        getKey: async (ref) => find(ref).handle,
        getPublicKey: async (ref) => {
          counters.getPublicKey++;
          return { algorithm: 'Ed25519', spki: find(ref).publicKey.export({ format: 'der', type: 'spki' }) };
        },
        sign: async (ref, data) => nodeSign(null, data, find(ref).privateKey),
        verify: async () => {
          counters.verify++;
          return false;
        },
        listKeys: async () => ({ keys: [...keys.values()].map((k) => k.handle) }),
        destroyKey: async (ref) => {
          find(ref);
          keys.delete(typeof ref === 'string' ? ref : ref.id);
        },
        healthCheck: async () => ({ healthy: true, latencyMs: 0, message: 'ok' }),
      };
      return backend;
    },
  };
}

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<HsmError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(HsmError);
    return e as HsmError;
  }
  throw new Error('expected a rejection');
}

describe('BackendRegistry', () => {
  it('names the package to install when a backend package is missing', async () => {
    const error = await rejection(new BackendRegistry().create({ type: 'acme-hsm', package: '@acme/olocus-backend-not-installed' }));
    expect(error.code).toBe('BackendNotInstalled');
    expect(error.message).toContain('@acme/olocus-backend-not-installed');
    const builtin = await rejection(
      new BackendRegistry({
        importer: async (specifier) => {
          throw Object.assign(new Error(`Cannot find package '${specifier}'`), { code: 'ERR_MODULE_NOT_FOUND' });
        },
      }).create({ type: 'pkcs11' }),
    );
    expect(builtin.code).toBe('BackendNotInstalled');
    expect(builtin.message).toContain('pnpm add @olocus/hsm-backend-pkcs11');
  });

  it('lists only backend packages that exist among the built-in types', () => {
    expect(new BackendRegistry().types()).toEqual(['aws-cloudhsm', 'aws-kms', 'azure-keyvault', 'gcp-kms', 'pkcs11', 'software']);
  });

  it('loads a third-party backend named by package in the config', async () => {
    const imported: string[] = [];
    const registry = new BackendRegistry({
      importer: async (specifier) => {
        imported.push(specifier);
        return { backendFactories: [memoryFactory({ verify: 0, getPublicKey: 0 })].map((f) => ({ ...f, type: 'acme-hsm' })) };
      },
    });
    const manager = new HsmManager({ backend: { type: 'acme-hsm', package: '@acme/olocus-backend', options: { label: 'acme' } } }, { registry });
    await manager.initialize();
    expect(imported).toEqual(['@acme/olocus-backend']);
    expect((await manager.info()).description).toBe('acme');
    await manager.close();
    // a package may not take over a built-in type, and a package name is checked
    expect((await rejection(registry.create({ type: 'pkcs11', package: '@acme/evil' }))).code).toBe('InvalidConfiguration');
    expect((await rejection(registry.create({ type: 'acme-two', package: '../../etc/passwd' }))).code).toBe('InvalidConfiguration');
  });

  it('lists the known types for an unknown one', async () => {
    const error = await rejection(new BackendRegistry().create({ type: 'quantum' }));
    expect(error.code).toBe('UnknownBackend');
    expect(error.message).toMatch(/unknown backend type "quantum".*pkcs11.*software/);
  });

  it('loads a package through the importer and uses its backendFactories export', async () => {
    const counters = { verify: 0, getPublicKey: 0 };
    const imported: string[] = [];
    const registry = new BackendRegistry({
      importer: async (name) => {
        imported.push(name);
        return { backendFactories: [memoryFactory(counters)] };
      },
    }).registerPackage('memory', '@acme/hsm-memory');
    const backend = await registry.create({ type: 'memory', options: { label: 'x' } });
    expect(imported).toEqual(['@acme/hsm-memory']);
    expect((await backend.info()).description).toBe('x');
  });

  it('reports a package without backendFactories, and bad options by field', async () => {
    const broken = new BackendRegistry({ importer: async () => ({}) }).registerPackage('memory', '@acme/hsm-memory');
    expect((await rejection(broken.create({ type: 'memory' }))).message).toContain('does not export backendFactories');
    const registry = new BackendRegistry().register(memoryFactory({ verify: 0, getPublicKey: 0 }));
    const error = await rejection(registry.create({ type: 'memory', options: { label: 3 } }));
    expect(error.code).toBe('InvalidConfiguration');
    expect(error.message).toContain('backend.options.label');
    expect(() => registry.register({ ...memoryFactory({ verify: 0, getPublicKey: 0 }), type: 'Bad Type' })).toThrow(/lower-case/);
  });
});

describe('HsmManager', () => {
  it('validates config and names the field', () => {
    expect(() => new HsmManager({})).toThrow(/backend: is required|backend: Required/);
    expect(() => new HsmManager({ backend: { type: '' } })).toThrow(/backend\.type: must not be empty/);
    expect(() => new HsmManager({ backend: { type: 'x', colour: 1 } })).toThrow(/Unrecognized key.*colour/);
    expect(() => new HsmManager({ backend: { type: 'x' }, publicKeyCacheSize: -1 })).toThrow(/publicKeyCacheSize/);
  });

  it('refuses use before initialize and after close', async () => {
    const registry = new BackendRegistry().register(memoryFactory({ verify: 0, getPublicKey: 0 }));
    const manager = new HsmManager({ backend: { type: 'memory', options: { label: 'a' } } }, { registry });
    expect((await rejection(() => manager.listKeys())).code).toBe('NotInitialized');
    await manager.initialize();
    await manager.close();
    expect((await rejection(() => manager.listKeys())).code).toBe('Closed');
  });

  it('verifies locally with a cached public key and drops it when the key is destroyed', async () => {
    const counters = { verify: 0, getPublicKey: 0 };
    const registry = new BackendRegistry().register(memoryFactory(counters));
    const manager = new HsmManager({ backend: { type: 'memory', options: { label: 'a' } } }, { registry });
    await manager.initialize();
    await manager.generateKey({ id: 'k1', algorithm: 'Ed25519' });
    const data = Buffer.from('payload');
    const sig = await manager.sign('k1', data);
    for (let i = 0; i < 10; i++) expect(await manager.verify('k1', data, sig)).toBe(true);
    expect(await manager.verify('k1', Buffer.from('other'), sig)).toBe(false);
    expect(counters.verify).toBe(0);
    expect(counters.getPublicKey).toBe(1);
    await manager.destroyKey('k1');
    expect((await rejection(manager.verify('k1', data, sig))).code).toBe('KeyNotFound');
    await manager.close();
  });
});

describe('readSecret', () => {
  it('reads env and file secrets and names the source, never the value', async () => {
    expect(await readSecret({ env: 'S' }, 'pin', { S: 'hunter2' })).toBe('hunter2');
    const missing = await rejection(readSecret({ env: 'NOPE' }, 'backend.options.pin', {}));
    expect(missing.message).toBe('backend.options.pin: environment variable NOPE is not set');
    const dir = await mkdtemp(join(tmpdir(), 'secret-'));
    const file = join(dir, 'pin');
    await writeFile(file, 'correct horse\n');
    await chmod(file, 0o600);
    expect(await readSecret({ file }, 'pin')).toBe('correct horse');
    await writeFile(file, '');
    expect((await rejection(readSecret({ file }, 'pin'))).message).toContain('is empty');
    expect((await rejection(readSecret({ file: join(dir, 'absent') }, 'pin'))).message).toMatch(/cannot read secret file .*absent \(ENOENT\)/);
  });
});
