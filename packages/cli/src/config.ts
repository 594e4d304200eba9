import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { CliError, fileError } from './errors.js';
import { parseRotationSection, resolveRotationPaths, type RotationSection } from './rotation-config.js';
import { parseAuditSection, resolveAuditPaths, type AuditSection } from './audit-config.js';
import type { CliContext } from './context.js';
import { CONFIG_ENV, CONFIG_FILE, DEFAULT_DIR } from './constants.js';

/**
 * Reading the config comes first: every other module (audit, manager, rotation, init) depends on
 * this one and it depends on none of them, so there is no import cycle to untangle.
 */

export { CONFIG_FILE, DEFAULT_DIR };

export type SecretRef = { env: string } | { file: string };

export interface ConfigFile {
  backend: { type: string; options?: Record<string, unknown> };
  /** Key registry and rotation policy (see rotation-config.ts); not part of core's HsmManager config. */
  rotation?: unknown;
  /** The audit log (see audit-config.ts); not part of core's HsmManager config. */
  audit?: unknown;
  /** The enterprise pool, policies and state (@olocus/hsm-enterprise's `enterpriseConfigSchema`); not part of core's HsmManager config. */
  enterprise?: unknown;
  [key: string]: unknown;
}

export interface LoadedConfig {
  /** Absolute path of the file the config came from. */
  path: string;
  /** The config with relative paths resolved and command-line secret sources applied. */
  config: ConfigFile;
  /** The validated `rotation` section (the default when absent), paths resolved. */
  rotation: RotationSection;
  /** The validated `audit` section (the default when absent: on, fail closed, `<config dir>/audit.db`). */
  audit: AuditSection;
}

/** Where the config is: --config, then $OLOCUS_HSM_CONFIG, then ./.olocus/config.json. */
export function locateConfig(ctx: CliContext): { path: string; explicit: boolean } {
  const given = ctx.globals.config ?? (ctx.env[CONFIG_ENV] || undefined);
  if (given) return { path: resolve(ctx.cwd, given), explicit: true };
  return { path: resolve(ctx.cwd, DEFAULT_DIR, CONFIG_FILE), explicit: false };
}

/**
 * Reads the config. Nothing here creates a key store: only `olocus-hsm init` does (with a
 * passphrase the operator chose), so a missing config is an error that says to run it. A config
 * named explicitly must exist too: a typo never silently stands for an empty key store.
 */
export async function loadConfig(ctx: CliContext): Promise<LoadedConfig> {
  const { path, explicit } = locateConfig(ctx);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') throw fileError('config', path, cause);
    if (explicit) {
      throw new CliError('ConfigNotFound', `config file not found: ${path} (create a key store there with: olocus-hsm init --dir ${dirname(path)})`);
    }
    throw new CliError(
      'ConfigNotFound',
      `no config at ${path}: run "olocus-hsm init" first to create a key store (or name a config with --config PATH or ${CONFIG_ENV})`,
    );
  }
  const raw = parseConfigText(text, path);
  const rotation = resolveRotationPaths(parseRotationSection(raw.rotation, path), dirname(path));
  const audit = resolveAuditPaths(parseAuditSection(raw.audit, path), dirname(path));
  if (rotation.policy !== undefined) {
    // The policy is checked by the rotation package's own schema (a bad field is named).
    const { parsePolicy } = await import('@olocus/hsm-rotation/lite');
    try {
      parsePolicy(rotation.policy, 'rotation.policy');
    } catch (error) {
      throw new CliError('InvalidConfiguration', `${path}: ${(error as Error).message}`, { cause: error });
    }
  }
  return { path, config: applyOverrides(ctx, resolveConfigPaths(raw, dirname(path)), path), rotation, audit };
}

/** What core's HsmManager accepts from the config file: everything but the CLI's `rotation`, `audit` and `enterprise` sections. */
export function managerConfig(config: ConfigFile): Record<string, unknown> {
  const { rotation: _rotation, audit: _audit, enterprise: _enterprise, ...rest } = config;
  return rest;
}

export function parseConfigText(text: string, path: string): ConfigFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new CliError('InvalidConfiguration', `${path}: not valid JSON (${(cause as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CliError('InvalidConfiguration', `${path}: the config must be a JSON object with a "backend" field`);
  }
  const backend = (raw as { backend?: unknown }).backend;
  if (typeof backend !== 'object' || backend === null || Array.isArray(backend)) {
    throw new CliError('InvalidConfiguration', `${path}: field "backend" must be an object like {"type": "software", "options": {...}}`);
  }
  const type = (backend as { type?: unknown }).type;
  if (typeof type !== 'string' || type === '') {
    throw new CliError('InvalidConfiguration', `${path}: field "backend.type" must be a backend type such as "software" or "pkcs11"`);
  }
  const options = (backend as { options?: unknown }).options;
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options))) {
    throw new CliError('InvalidConfiguration', `${path}: field "backend.options" must be an object`);
  }
  return raw as ConfigFile;
}

/** Option fields that hold file-system paths, resolved against the config file's folder. */
const PATH_FIELDS = ['directory', 'libraryPath'];

/**
 * Relative paths in a config are relative to the config file's folder: `directory`,
 * `libraryPath` (only when it contains a slash: a bare library name is left to the dynamic
 * loader's search path) and every secret source `{ "file": ... }`.
 */
export function resolveConfigPaths(config: ConfigFile, base: string): ConfigFile {
  const options = config.backend.options;
  if (!options) return config;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options)) {
    if (PATH_FIELDS.includes(key) && typeof value === 'string' && value !== '' && !isAbsolute(value)) {
      out[key] = key === 'libraryPath' && !value.includes('/') ? value : resolve(base, value);
    } else if (isFileSource(value) && !isAbsolute(value.file)) {
      out[key] = { ...value, file: resolve(base, value.file) };
    } else {
      out[key] = value;
    }
  }
  return { ...config, backend: { ...config.backend, options: out } };
}

function isFileSource(value: unknown): value is { file: string } {
  return typeof value === 'object' && value !== null && typeof (value as { file?: unknown }).file === 'string' && Object.keys(value).length === 1;
}

/** --passphrase-file and --pin-file replace the config's secret source for this run. */
function applyOverrides(ctx: CliContext, config: ConfigFile, path: string): ConfigFile {
  const { passphraseFile, pinFile } = ctx.globals;
  const type = config.backend.type;
  let options = config.backend.options ?? {};
  if (passphraseFile !== undefined) {
    if (type !== 'software') throw new CliError('InvalidArgument', `--passphrase-file applies to the software backend; ${path} uses "${type}"`);
    if (options['masterKey'] !== undefined) {
      throw new CliError('InvalidArgument', `--passphrase-file: the key store of ${path} is opened by a master key (backend.options.masterKey), not a passphrase; drop --passphrase-file`);
    }
    options = { ...options, passphrase: { file: resolve(ctx.cwd, passphraseFile) } };
  }
  if (pinFile !== undefined) {
    if (type !== 'pkcs11') throw new CliError('InvalidArgument', `--pin-file applies to the pkcs11 backend; ${path} uses "${type}"`);
    options = { ...options, pin: { file: resolve(ctx.cwd, pinFile) } };
  }
  return { ...config, backend: { ...config.backend, options } };
}

/** Config problems say which file they are in. */
export function inFile(error: unknown, path: string): unknown {
  const e = error as { name?: string; code?: string; message?: string };
  if (e?.name === 'HsmError' && (e.code === 'InvalidConfiguration' || e.code === 'UnknownBackend') && !e.message?.includes(path)) {
    return new CliError(e.code, `${path}: ${e.message}`, { cause: error });
  }
  return error;
}
