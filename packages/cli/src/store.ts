import { chmod, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { CliError, rememberSecret } from './errors.js';
import { CONFIG_FILE, PASSPHRASE_ENV, PIN_ENV } from './constants.js';
import { resolveConfigPaths, type ConfigFile, type SecretRef } from './config.js';
import { DEFAULT_ROTATION_SECTION } from './rotation-config.js';
import { DEFAULT_AUDIT_SECTION } from './audit-config.js';
import { openManager } from './manager.js';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, restrictMode } from './files.js';
import { assertPassphraseStrength, canPrompt, PASSPHRASE_MIN_LENGTH, promptNewPassphrase, readCliSecret } from './secrets.js';
import type { CliContext } from './context.js';

/**
 * Creating a store: only `init` (and `demo`, in its own folder) does it. The passphrase comes
 * from OLOCUS_HSM_PASSPHRASE, --passphrase-file or a prompt on a terminal, and is never written
 * next to the keys: a passphrase beside the files it seals protects nothing.
 */

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
  /** Files and folders this init created (removed again if the check fails). */
  createdPaths: string[];
  /** Variables the check runs with but that are not written anywhere (a passphrase typed at the prompt). */
  env?: Record<string, string>;
  /** Where the passphrase (or master key) came from, for the closing note: a flag or variable name, never the value. */
  passphraseFrom?: string;
  /** What protects a new software store: a passphrase (the default) or a master key. */
  secretKind?: InitPassphrase['kind'];
}

/** Creates the config folder (0700) unless it exists; refuses an existing config without --force. */
async function prepareConfigDir(ctx: CliContext, opts: { dir: string; force: boolean }): Promise<{ dir: string; path: string; createdPaths: string[] }> {
  const dir = resolve(ctx.cwd, opts.dir);
  const path = join(dir, CONFIG_FILE);
  if (!opts.force && (await exists(path))) {
    throw new CliError('ConfigExists', `${path} already exists; pass --force to overwrite it`);
  }
  const createdPaths: string[] = [];
  if (!(await exists(dir))) createdPaths.push(dir);
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  await restrictMode(dir, PRIVATE_DIR_MODE);
  return { dir, path, createdPaths };
}

export interface InitPassphrase {
  /** A passphrase (stretched with scrypt; the default) or a master key of 32 random bytes (HKDF): `backend.options.passphrase` or `.masterKey`. */
  kind?: 'passphrase' | 'masterKey';
  /** What the config records: a file or a variable, never the value. */
  source: SecretRef;
  /** Set when the value exists only in this process (typed at the prompt). */
  env?: Record<string, string>;
  from: string;
}

/**
 * The passphrase of a new store, in order: --passphrase-file, OLOCUS_HSM_PASSPHRASE, a prompt on
 * a terminal (asked twice). At least PASSPHRASE_MIN_LENGTH characters. Without any of them, an
 * error that says how to give one.
 */
export async function passphraseForInit(ctx: CliContext, command = 'init'): Promise<InitPassphrase> {
  if (ctx.globals.passphraseFile !== undefined) {
    const file = resolve(ctx.cwd, ctx.globals.passphraseFile);
    const value = await readCliSecret({ file }, '--passphrase-file', ctx.env).catch((error: unknown) => {
      throw new CliError('InvalidArgument', (error as Error).message, { cause: error });
    });
    assertPassphraseStrength(value, `--passphrase-file ${file}`);
    return { source: { file }, from: `--passphrase-file ${file}` };
  }
  const fromEnv = ctx.env[PASSPHRASE_ENV];
  if (fromEnv !== undefined) {
    if (fromEnv === '') {
      throw new CliError('InvalidArgument', `${PASSPHRASE_ENV} is set but empty; give it the passphrase (at least ${PASSPHRASE_MIN_LENGTH} characters), or unset it and use --passphrase-file PATH`);
    }
    assertPassphraseStrength(fromEnv, PASSPHRASE_ENV);
    return { source: { env: PASSPHRASE_ENV }, from: PASSPHRASE_ENV };
  }
  if (canPrompt(ctx.stdin, ctx.stderr)) {
    const value = await promptNewPassphrase(ctx.stdin, ctx.stderr);
    assertPassphraseStrength(value, 'the prompt');
    return { source: { env: PASSPHRASE_ENV }, env: { [PASSPHRASE_ENV]: value }, from: 'the prompt' };
  }
  throw new CliError(
    'InvalidArgument',
    `${command} needs a passphrase for the new key store (at least ${PASSPHRASE_MIN_LENGTH} characters): set ${PASSPHRASE_ENV}, give --passphrase-file PATH, or run it on a terminal to be asked. It is never written next to the keys.`,
  );
}

/** What `init --master-key-file PATH` or `--master-key-env NAME` names (commander's attribute names). */
export interface MasterKeyFlags {
  masterKeyFile?: string;
  masterKeyEnv?: string;
}

/** A portable environment variable name: what --master-key-env takes (never the key itself). */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The master key source of a new store, from --master-key-file or --master-key-env; undefined
 * when neither is given. Only its presence is checked here (a missing file or an unset variable
 * leaves nothing behind); its shape is the backend's to check when `checkAndWrite` opens the
 * store, and that error names the file or variable and says how to make a key.
 */
export async function masterKeyForInit(ctx: CliContext, flags: MasterKeyFlags): Promise<InitPassphrase | undefined> {
  const { masterKeyFile, masterKeyEnv } = flags;
  if (masterKeyFile === undefined && masterKeyEnv === undefined) return undefined;
  if (masterKeyFile !== undefined && masterKeyEnv !== undefined) {
    throw new CliError('InvalidArgument', '--master-key-file and --master-key-env: give one of them (the one source of the master key)');
  }
  const flag = masterKeyFile !== undefined ? '--master-key-file' : '--master-key-env';
  if (ctx.globals.passphraseFile !== undefined) {
    throw new CliError('InvalidArgument', `${flag} and --passphrase-file: a store is protected by a master key or by a passphrase, not both; give one of them`);
  }
  if (masterKeyFile !== undefined) {
    const file = resolve(ctx.cwd, masterKeyFile);
    const value = await readCliSecret({ file }, '--master-key-file', ctx.env).catch((error: unknown) => {
      throw new CliError('InvalidArgument', (error as Error).message, { cause: error });
    });
    rememberSecret(value);
    rememberSecret(value.trim());
    const mode = (await stat(file)).mode & 0o777;
    if ((mode & 0o077) !== 0) ctx.note(`olocus-hsm: warning: --master-key-file ${file} can be read by other users (mode ${mode.toString(8).padStart(4, '0')}): chmod 600 it`);
    return { kind: 'masterKey', source: { file }, from: `--master-key-file ${file}` };
  }
  const name = masterKeyEnv!;
  // A 44-character base64 key always ends in '=': the key itself given by mistake is refused here, and never repeated.
  if (!ENV_NAME.test(name)) {
    throw new CliError('InvalidArgument', '--master-key-env takes the name of an environment variable (letters, digits and _, not starting with a digit), not the key itself');
  }
  const value = ctx.env[name];
  if (value === undefined) {
    throw new CliError('InvalidArgument', `--master-key-env ${name}: environment variable ${name} is not set; init opens the new store once, so set it to the master key now (e.g. from \`openssl rand -base64 32\`)`);
  }
  if (value.trim() === '') {
    throw new CliError('InvalidArgument', `--master-key-env ${name}: environment variable ${name} is set but empty; give it the master key (32 random bytes in base64, e.g. from \`openssl rand -base64 32\`)`);
  }
  rememberSecret(value);
  rememberSecret(value.trim());
  return { kind: 'masterKey', source: { env: name }, from: `$${name}` };
}

/**
 * Prepares the software backend's config in `dir` (does not write config.json: `checkAndWrite`
 * does, after the backend opened).
 */
export async function prepareSoftware(ctx: CliContext, opts: { dir: string; force: boolean; passphrase?: InitPassphrase }): Promise<InitResult> {
  // The passphrase first: a refused or missing one leaves nothing behind.
  const passphrase = opts.passphrase ?? (await passphraseForInit(ctx));
  const { dir, path, createdPaths } = await prepareConfigDir(ctx, opts);
  const keys = join(dir, 'keys');
  if (!(await exists(keys))) createdPaths.push(keys);
  await mkdir(keys, { recursive: true, mode: PRIVATE_DIR_MODE });
  await restrictMode(keys, PRIVATE_DIR_MODE);
  const kind = passphrase.kind ?? 'passphrase';
  const options = kind === 'masterKey' ? { directory: 'keys', masterKey: passphrase.source } : { directory: 'keys', passphrase: passphrase.source };
  const config: ConfigFile = { backend: { type: 'software', options }, rotation: defaultRotation(), audit: defaultAudit() };
  return { path, config, createdPaths, passphraseFrom: passphrase.from, secretKind: kind, ...(passphrase.env ? { env: passphrase.env } : {}) };
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
  if (ctx.globals.passphraseFile !== undefined) throw new CliError('InvalidArgument', '--passphrase-file applies to the software backend; a PKCS#11 token takes --pin-file PATH or OLOCUS_HSM_PIN');
  const { path, createdPaths } = await prepareConfigDir(ctx, opts);
  const libraryPath = opts.module.includes('/') ? resolve(ctx.cwd, opts.module) : opts.module;
  const options: Record<string, unknown> = { libraryPath };
  if (opts.tokenLabel !== undefined) options['tokenLabel'] = opts.tokenLabel;
  if (slotId !== undefined) options['slotId'] = slotId;
  if (opts.vendor !== undefined) options['vendor'] = opts.vendor;
  options['pin'] = ctx.globals.pinFile !== undefined ? { file: resolve(ctx.cwd, ctx.globals.pinFile) } : { env: PIN_ENV };
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
  await writeFile(result.path, JSON.stringify(result.config, null, 2) + '\n', { mode: PRIVATE_FILE_MODE });
  // --force over an existing file keeps that file's mode: narrow it.
  await chmod(result.path, PRIVATE_FILE_MODE);
}

/** Removes what a failed init created, newest first. */
export async function undoInit(result: InitResult): Promise<void> {
  for (const p of [...result.createdPaths].reverse()) await rm(p, { recursive: true, force: true });
}

/**
 * Opens the backend once with the new config (creating the key store, proving the passphrase or
 * PIN), then writes config.json (audit.db and rotation.db are made by the first command that
 * needs them, mode 0600). A config that cannot
 * work is not written, and what this init created is removed.
 */
export async function checkAndWrite(ctx: CliContext, result: InitResult): Promise<void> {
  const checkCtx: CliContext = result.env ? { ...ctx, env: { ...ctx.env, ...result.env } } : ctx;
  try {
    const manager = await openManager(checkCtx, { path: result.path, config: resolveConfigPaths(result.config, dirname(result.path)) }, { create: true });
    await manager.close();
    await writeConfig(result);
  } catch (error) {
    await undoInit(result);
    throw error;
  }
}

/** `init` for the software backend (also `demo` in its own folder): prepare, check, write. */
export async function initSoftware(ctx: CliContext, opts: { dir: string; force: boolean; passphrase?: InitPassphrase }): Promise<InitResult> {
  const result = await prepareSoftware(ctx, opts);
  await checkAndWrite(ctx, result);
  return result;
}
