import { BackendRegistry, HsmManager, type BackendContext } from '@olocus/hsm-core';
import { CliError, rememberSecret } from './errors.js';
import type { CliContext } from './context.js';
import type { ConfigFile, LoadedConfig } from './config.js';
import type { AuditSection } from './audit-config.js';
import type { CliAudit } from './audit.js';

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

/**
 * The CLI's manager: when the config audits, every key operation goes through the audit log
 * (results only after their records are durable), and closing the manager closes the log.
 */
export class CliManager extends HsmManager {
  audit: CliAudit | undefined;

  override async close(): Promise<void> {
    // The log first: its final checkpoint is signed by the backend, which must still be open.
    const audit = this.audit;
    this.audit = undefined;
    try {
      await audit?.close();
    } finally {
      await super.close();
    }
  }
}

/** The audit log a command's manager writes to, if the config audits. */
export function auditOf(manager: HsmManager): CliAudit | undefined {
  return manager instanceof CliManager ? manager.audit : undefined;
}

/** Builds and initialises the manager for a loaded config. Errors name the config file. */
export async function openManager(ctx: CliContext, loaded: { path: string; config: ConfigFile; audit?: AuditSection }): Promise<CliManager> {
  const registry = new CliRegistry({ importer: (s) => import(s), env: ctx.env });
  const { managerConfig } = await import('./config.js');
  let audit: CliAudit | undefined;
  if (loaded.audit?.enabled) {
    const [{ openCliAudit }, { actorOf }] = await Promise.all([import('./audit.js'), import('./rotation.js')]);
    audit = await openCliAudit(ctx, loaded.audit, loaded.path, actorOf(ctx, ctx.globals.actor));
  }
  let manager: CliManager;
  try {
    // Core's config is strict: it gets `backend` (and `publicKeyCacheSize`), never the CLI's `rotation` or `audit` sections.
    manager = new CliManager(managerConfig(loaded.config), { registry, ...(audit ? { auditor: audit.auditor } : {}) });
    manager.audit = audit;
  } catch (error) {
    await audit?.close();
    throw inFile(error, loaded.path);
  }
  try {
    await manager.initialize();
  } catch (error) {
    // A wrong PIN or passphrase is an invalid access attempt (PCI-10.2): recorded by code and
    // message, which never hold the secret.
    await audit?.recordFailure({ backend: loaded.config.backend.type, operation: 'open' }, error).catch(() => undefined);
    await audit?.close().catch(() => undefined);
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
