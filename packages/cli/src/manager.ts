import { BackendRegistry, HsmManager, type BackendContext } from '@olocus/hsm-core';
import { CliError, rememberSecret } from './errors.js';
import type { CliContext } from './context.js';
import type { ConfigFile, LoadedConfig } from './config.js';

/**
 * A registry that remembers every secret it hands to a backend, so that no line the CLI prints
 * can contain one (see `redact`). Backend packages load with a plain `import()`: the CLI depends
 * on the backends it ships.
 */
class CliRegistry extends BackendRegistry {
  override context(): BackendContext {
    const base = super.context();
    return {
      ...base,
      readSecret: async (source, field) => {
        const value = await base.readSecret(source, field);
        rememberSecret(value);
        return value;
      },
    };
  }
}

/** Builds and initialises the manager for a loaded config. Errors name the config file. */
export async function openManager(ctx: CliContext, loaded: { path: string; config: ConfigFile }): Promise<HsmManager> {
  const registry = new CliRegistry({ importer: (s) => import(s), env: ctx.env });
  const { managerConfig } = await import('./config.js');
  let manager: HsmManager;
  try {
    // Core's config is strict: it gets `backend` (and `publicKeyCacheSize`), never the CLI's `rotation` section.
    manager = new HsmManager(managerConfig(loaded.config), { registry });
  } catch (error) {
    throw inFile(error, loaded.path);
  }
  try {
    await manager.initialize();
  } catch (error) {
    throw inFile(error, loaded.path);
  }
  return manager;
}

/** Config problems say which file they are in. */
export function inFile(error: unknown, path: string): unknown {
  const e = error as { name?: string; code?: string; message?: string };
  if (e?.name === 'HsmError' && (e.code === 'InvalidConfiguration' || e.code === 'UnknownBackend') && !e.message?.includes(path)) {
    return new CliError(e.code, `${path}: ${e.message}`, { cause: error });
  }
  return error;
}

/** Loads the config and opens the manager; runs `fn`; always closes. */
export async function withManager<T>(ctx: CliContext, fn: (manager: HsmManager) => Promise<T>): Promise<T> {
  const { loadConfig } = await import('./config.js');
  const loaded = await loadConfig(ctx);
  const manager = await openManager(ctx, loaded);
  try {
    return await fn(manager);
  } finally {
    await manager.close();
  }
}
