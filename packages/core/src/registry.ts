import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { HsmError } from './errors.js';
import { readSecret } from './secrets.js';
import type { BackendContext, BackendFactory, HsmBackend } from './types.js';

/**
 * Backend types this project ships, and the package that provides each. Only packages that
 * exist are listed; any other type names its package in config (`BackendConfig.package`).
 */
export const BUILTIN_BACKENDS: Readonly<Record<string, string>> = Object.freeze({
  software: '@olocus/hsm-backend-software',
  pkcs11: '@olocus/hsm-backend-pkcs11',
  'aws-kms': '@olocus/hsm-backend-aws',
  'aws-cloudhsm': '@olocus/hsm-backend-aws',
  'azure-keyvault': '@olocus/hsm-backend-azure',
  'gcp-kms': '@olocus/hsm-backend-gcp',
});

const PACKAGE_NAME = /^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;

/** What a backend package exports: `backendFactories`, one per `type` it provides. */
export interface BackendModule {
  backendFactories: readonly BackendFactory[];
}

export type ModuleImporter = (specifier: string) => Promise<unknown>;

export interface BackendRegistryOptions {
  /**
   * Loads a backend package. The default tries a plain `import()` and then resolves the package
   * from `searchPaths`, because with pnpm's strict layout a package installed by the application
   * is not visible from inside @olocus/hsm-core. Applications that bundle may pass `(s) => import(s)`.
   */
  importer?: ModuleImporter;
  /** Directories to resolve backend packages from. Default: the current working directory. */
  searchPaths?: string[];
  env?: Record<string, string | undefined>;
}

export interface BackendConfig {
  type: string;
  /** The npm package that provides `type`, for a backend core does not know (`@acme/olocus-backend`). */
  package?: string | undefined;
  options?: unknown;
}

/**
 * Maps a backend `type` from config to its factory. Built-in types load their package on first
 * use (so an application installs only what it uses); third parties call `register`.
 */
export class BackendRegistry {
  private readonly factories = new Map<string, BackendFactory>();
  private readonly packages = new Map<string, string>(Object.entries(BUILTIN_BACKENDS));
  private readonly importer: ModuleImporter;
  private readonly env: Record<string, string | undefined>;

  constructor(options: BackendRegistryOptions = {}) {
    this.env = options.env ?? process.env;
    this.importer = options.importer ?? defaultImporter(options.searchPaths ?? [process.cwd()]);
  }

  /** Registers a factory directly (tests, third-party or in-house backends). */
  register(factory: BackendFactory): this {
    if (!/^[a-z0-9][a-z0-9-]*$/.test(factory.type)) {
      throw new HsmError('InvalidArgument', `backend type "${factory.type}" must be lower-case letters, digits and dashes`);
    }
    this.factories.set(factory.type, factory as BackendFactory);
    return this;
  }

  /** Declares that `type` is provided by `packageName` (loaded on first use). */
  registerPackage(type: string, packageName: string): this {
    if (!/^[a-z0-9][a-z0-9-]*$/.test(type)) {
      throw new HsmError('InvalidConfiguration', `backend type "${type}" must be lower-case letters, digits and dashes`, { details: { field: 'backend.type' } });
    }
    if (!PACKAGE_NAME.test(packageName)) {
      throw new HsmError('InvalidConfiguration', `backend.package ${JSON.stringify(packageName.slice(0, 100))} is not an npm package name`, { details: { field: 'backend.package' } });
    }
    const known = this.packages.get(type);
    if (known !== undefined && known !== packageName && BUILTIN_BACKENDS[type] === known) {
      throw new HsmError('InvalidConfiguration', `backend type "${type}" is provided by ${known}; choose another type name for ${packageName}`, {
        details: { field: 'backend.package' },
      });
    }
    this.packages.set(type, packageName);
    return this;
  }

  /** Every type known, loaded or not. */
  types(): string[] {
    return [...new Set([...this.factories.keys(), ...this.packages.keys()])].sort();
  }

  async factory(type: string): Promise<BackendFactory> {
    const known = this.factories.get(type);
    if (known) return known;
    const packageName = this.packages.get(type);
    if (!packageName) {
      throw new HsmError(
        'UnknownBackend',
        `unknown backend type "${type}"; known types: ${this.types().join(', ')}. A third-party backend names its package in the config: { "type": "${type}", "package": "<npm package>" }`,
        { details: { field: 'backend.type', type } },
      );
    }
    let loaded: unknown;
    try {
      loaded = await this.importer(packageName);
    } catch (cause) {
      if (isModuleNotFound(cause, packageName)) {
        throw new HsmError('BackendNotInstalled', `backend type "${type}" needs the package ${packageName}; install it (pnpm add ${packageName})`, {
          cause,
          details: { type, package: packageName },
        });
      }
      throw new HsmError('InitializationFailed', `backend package ${packageName} failed to load: ${(cause as Error).message}`, { cause, details: { type, package: packageName } });
    }
    const factories = (loaded as Partial<BackendModule>).backendFactories;
    if (!Array.isArray(factories)) {
      throw new HsmError('InitializationFailed', `package ${packageName} does not export backendFactories`, { details: { package: packageName } });
    }
    for (const f of factories) if (!this.factories.has(f.type)) this.factories.set(f.type, f);
    const factory = this.factories.get(type);
    if (!factory) throw new HsmError('UnknownBackend', `package ${packageName} does not provide backend type "${type}"`, { details: { type, package: packageName } });
    return factory;
  }

  /** Validates the options and builds an uninitialised backend. */
  async create(config: BackendConfig): Promise<HsmBackend> {
    if (config.package !== undefined && !this.factories.has(config.type)) this.registerPackage(config.type, config.package);
    const factory = await this.factory(config.type);
    const options = factory.parseOptions(config.options ?? {});
    return factory.create(options, this.context());
  }

  context(): BackendContext {
    const env = this.env;
    return { env, readSecret: (source, field) => readSecret(source, field, env) };
  }
}

function defaultImporter(searchPaths: string[]): ModuleImporter {
  return async (specifier) => {
    try {
      return await import(specifier);
    } catch (error) {
      if (!isModuleNotFound(error, specifier)) throw error;
      for (const dir of searchPaths) {
        let resolved: string;
        try {
          resolved = createRequire(join(dir, 'noop.js')).resolve(specifier);
        } catch {
          continue;
        }
        return import(pathToFileURL(resolved).href);
      }
      throw error;
    }
  };
}

function isModuleNotFound(error: unknown, specifier: string): boolean {
  const e = error as NodeJS.ErrnoException;
  return (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') && String(e.message).includes(specifier);
}
