import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { CliError, fileError, rememberSecret } from './errors.js';
import { DEFAULT_ROTATION_SECTION, parseRotationSection, resolveRotationPaths, type RotationSection } from './rotation-config.js';
import { DEFAULT_AUDIT_SECTION, parseAuditSection, resolveAuditPaths, type AuditSection } from './audit-config.js';
import type { CliContext } from './context.js';

import { CONFIG_ENV, CONFIG_FILE, DEFAULT_DIR, PASSPHRASE_ENV, PIN_ENV } from './constants.js';

export { CONFIG_FILE, DEFAULT_DIR };

export type SecretRef = { env: string } | { file: string };

export interface ConfigFile {
  backend: { type: string; options?: Record<string, unknown> };
  /** Key registry and rotation policy (see rotation-config.ts); not part of core's HsmManager config. */
  rotation?: unknown;
  /** The audit log (see audit-config.ts); not part of core's HsmManager config. */
  audit?: unknown;
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
 * Reads the config. With no config given and none at the default location, creates the embedded
 * default there (as `init` would). A config named explicitly must exist: a typo never silently
 * creates a new, empty key store.
 */
export async function loadConfig(ctx: CliContext): Promise<LoadedConfig> {
  const { path, explicit } = locateConfig(ctx);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code !== 'ENOENT') throw fileError('config', path, cause);
    if (explicit) {
      throw new CliError('ConfigNotFound', `config file not found: ${path} (create one with: olocus-hsm init --dir ${dirname(path)})`);
    }
    await initSoftware(ctx, { dir: dirname(path), force: false });
    text = await readFile(path, 'utf8');
  }
  const raw = parseConfigText(text, path);
  const rotation = resolveRotationPaths(parseRotationSection(raw.rotation, path), dirname(path));
  const audit = resolveAuditPaths(parseAuditSection(raw.audit, path), dirname(path));
  if (rotation.policy !== undefined) {
    // The policy is checked by the rotation package's own schema (a bad field is named).
    const { parsePolicy } = await import('@olocus/hsm-rotation');
    try {
      parsePolicy(rotation.policy, 'rotation.policy');
    } catch (error) {
      throw new CliError('InvalidConfiguration', `${path}: ${(error as Error).message}`, { cause: error });
    }
  }
  return { path, config: applyOverrides(ctx, resolveConfigPaths(raw, dirname(path)), path), rotation, audit };
}

/** What core's HsmManager accepts from the config file: everything but the CLI's `rotation` and `audit` sections. */
export function managerConfig(config: ConfigFile): Record<string, unknown> {
  const { rotation: _rotation, audit: _audit, ...rest } = config;
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
    options = { ...options, passphrase: { file: resolve(ctx.cwd, passphraseFile) } };
  }
  if (pinFile !== undefined) {
    if (type !== 'pkcs11') throw new CliError('InvalidArgument', `--pin-file applies to the pkcs11 backend; ${path} uses "${type}"`);
    options = { ...options, pin: { file: resolve(ctx.cwd, pinFile) } };
  }
  return { ...config, backend: { ...config.backend, options } };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

export interface InitResult {
  path: string;
  config: ConfigFile;
  /** Set when a development passphrase file was generated. */
  generatedPassphraseFile?: string;
  /** Files and folders this init created (removed again if the check fails). */
  createdPaths: string[];
}

/** Creates the config folder (0700) unless it exists; refuses an existing config without --force. */
async function prepareConfigDir(ctx: CliContext, opts: { dir: string; force: boolean }): Promise<{ dir: string; path: string; createdPaths: string[] }> {
  const dir = resolve(ctx.cwd, opts.dir);
  const path = join(dir, CONFIG_FILE);
  await ensureWritable(path, opts.force);
  const createdPaths: string[] = [];
  if (!(await exists(dir))) createdPaths.push(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return { dir, path, createdPaths };
}

async function ensureWritable(path: string, force: boolean): Promise<void> {
  if (!force && (await exists(path))) {
    throw new CliError('ConfigExists', `${path} already exists; pass --force to overwrite it`);
  }
}

/**
 * Prepares the software backend's config in `dir` (does not write config.json: call
 * `writeConfig` after the backend opened). Passphrase source: --passphrase-file when given, else
 * {env: OLOCUS_HSM_PASSPHRASE} when that variable is set, else a generated development passphrase in `<dir>/passphrase` (0600).
 */
export async function prepareSoftware(ctx: CliContext, opts: { dir: string; force: boolean }): Promise<InitResult> {
  const { dir, path, createdPaths } = await prepareConfigDir(ctx, opts);
  let passphrase: SecretRef;
  let generatedPassphraseFile: string | undefined;
  if (ctx.globals.passphraseFile !== undefined) {
    passphrase = { file: resolve(ctx.cwd, ctx.globals.passphraseFile) };
  } else if (ctx.env[PASSPHRASE_ENV]) {
    passphrase = { env: PASSPHRASE_ENV };
  } else {
    const file = join(dir, 'passphrase');
    passphrase = { file: 'passphrase' };
    generatedPassphraseFile = file;
    // An existing passphrase file is kept: keys sealed under it must stay readable.
    if (!(await exists(file))) {
      const value = randomBytes(32).toString('base64url');
      rememberSecret(value);
      await writeFile(file, value + '\n', { mode: 0o600, flag: 'wx' });
      await chmod(file, 0o600);
      createdPaths.push(file);
    }
  }
  const keys = join(dir, 'keys');
  if (!(await exists(keys))) createdPaths.push(keys);
  await mkdir(keys, { recursive: true, mode: 0o700 });
  const config: ConfigFile = { backend: { type: 'software', options: { directory: 'keys', passphrase } }, rotation: defaultRotation(), audit: defaultAudit() };
  const result: InitResult = { path, config, createdPaths };
  if (generatedPassphraseFile) result.generatedPassphraseFile = generatedPassphraseFile;
  return result;
}

export interface Pkcs11InitOptions {
  dir: string;
  force: boolean;
  module?: string;
  tokenLabel?: string;
  slot?: string;
  vendor?: string;
}

export async function preparePkcs11(ctx: CliContext, opts: Pkcs11InitOptions): Promise<InitResult> {
  if (!opts.module) throw new CliError('InvalidArgument', 'init --backend pkcs11 needs --module PATH (the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so)');
  if ((opts.tokenLabel === undefined) === (opts.slot === undefined)) {
    throw new CliError('InvalidArgument', 'init --backend pkcs11 needs exactly one of --token-label LABEL or --slot ID');
  }
  let slotId: number | undefined;
  if (opts.slot !== undefined) {
    slotId = Number(opts.slot);
    if (!/^\d+$/.test(opts.slot) || !Number.isSafeInteger(slotId)) {
      throw new CliError('InvalidArgument', `--slot: "${opts.slot}" is not a slot number (a non-negative integer)`);
    }
  }
  const { dir, path, createdPaths } = await prepareConfigDir(ctx, opts);
  const libraryPath = opts.module.includes('/') ? resolve(ctx.cwd, opts.module) : opts.module;
  const options: Record<string, unknown> = { libraryPath };
  if (opts.tokenLabel !== undefined) options.tokenLabel = opts.tokenLabel;
  if (slotId !== undefined) options.slotId = slotId;
  if (opts.vendor !== undefined) options.vendor = opts.vendor;
  options.pin = ctx.globals.pinFile !== undefined ? { file: resolve(ctx.cwd, ctx.globals.pinFile) } : { env: PIN_ENV };
  return { path, config: { backend: { type: 'pkcs11', options }, rotation: defaultRotation(), audit: defaultAudit() }, createdPaths };
}

/** The rotation section `init` writes: SQLite next to the config, emergency rotation off until enabled. */
function defaultRotation(): ConfigFile['rotation'] {
  return structuredClone(DEFAULT_ROTATION_SECTION) as unknown as ConfigFile['rotation'];
}

function defaultAudit(): ConfigFile['audit'] {
  return structuredClone(DEFAULT_AUDIT_SECTION) as unknown as ConfigFile['audit'];
}

export async function writeConfig(result: InitResult): Promise<void> {
  await writeFile(result.path, JSON.stringify(result.config, null, 2) + '\n', { mode: 0o600 });
}

/** Removes what a failed init created, newest first. */
export async function undoInit(result: InitResult): Promise<void> {
  for (const p of [...result.createdPaths].reverse()) await rm(p, { recursive: true, force: true });
}

export const DEV_NOTE =
  'note: development setup: a random passphrase was written to %s (mode 0600); for production set OLOCUS_HSM_PASSPHRASE or use --passphrase-file';

/**
 * `init` for the software backend, used by `init`, `demo` and the first command run without a
 * config: prepares the folder, opens the backend once (creating its key store and proving the
 * passphrase works), then writes config.json.
 */
export async function initSoftware(ctx: CliContext, opts: { dir: string; force: boolean }): Promise<InitResult> {
  const result = await prepareSoftware(ctx, opts);
  await checkAndWrite(ctx, result);
  if (result.generatedPassphraseFile) ctx.note(DEV_NOTE.replace('%s', result.generatedPassphraseFile));
  return result;
}

export async function checkAndWrite(ctx: CliContext, result: InitResult): Promise<void> {
  try {
    const { openManager } = await import('./manager.js');
    const manager = await openManager(ctx, { path: result.path, config: resolveConfigPaths(result.config, dirname(result.path)) });
    await manager.close();
    await writeConfig(result);
  } catch (error) {
    await undoInit(result);
    throw error;
  }
}
