import { mkdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { CliError } from '../errors.js';
import { checkAndWrite, masterKeyForInit, preparePkcs11, prepareSoftware, type InitResult } from '../store.js';
import { CONFIG_FILE } from '../constants.js';
import { DEFAULT_ROTATION_SECTION } from '../rotation-config.js';
import { DEFAULT_AUDIT_SECTION } from '../audit-config.js';
import { PRIVATE_DIR_MODE, restrictMode } from '../files.js';
import { CLOUD_INIT_BACKENDS, mergedCloudInitFlags, type CloudInitBackend } from '../init-flags.js';
import type { ConfigFile } from '../config.js';
import type { CliContext } from '../context.js';

export interface InitOptions {
  dir: string;
  backend?: 'software' | 'pkcs11' | CloudInitBackend;
  force?: boolean;
  module?: string;
  tokenLabel?: string;
  slot?: string;
  vendor?: string;
  /** software: the new store's master key from this file / environment variable, instead of a passphrase. */
  masterKeyFile?: string;
  masterKeyEnv?: string;
  /** The cloud flags (--region, --vault-url, --key-ring, ...), by commander attribute name. */
  [cloudFlag: string]: unknown;
}

/** The flags that only a PKCS#11 config uses, as the user typed them. */
function pkcs11Flags(opts: InitOptions): string[] {
  const flags: string[] = [];
  if (opts.module !== undefined) flags.push('--module');
  if (opts.tokenLabel !== undefined) flags.push('--token-label');
  if (opts.slot !== undefined) flags.push('--slot');
  if (opts.vendor !== undefined) flags.push('--vendor');
  return flags;
}

/**
 * The backend `init` sets up. PKCS#11 flags without --backend mean PKCS#11 (writing a software
 * config and dropping them would leave the operator with the wrong store); with an explicit
 * `--backend software` they are refused by name.
 */
export function initBackend(opts: InitOptions): 'software' | 'pkcs11' | CloudInitBackend {
  const flags = pkcs11Flags(opts);
  // --backend has no commander default, so it is set only when typed
  const explicit = opts.backend;
  checkCloudFlags(opts, explicit);
  if (isCloud(explicit)) {
    // aws-cloudhsm reaches its HSMs through PKCS#11 and takes --module and --token-label; no other cloud does.
    const foreign = explicit === 'aws-cloudhsm' ? flags.filter((f) => f === '--slot' || f === '--vendor') : flags;
    if (foreign.length > 0) throw new CliError('InvalidArgument', `${foreign.join(', ')} ${foreign.length === 1 ? 'applies' : 'apply'} to --backend pkcs11${explicit === 'aws-cloudhsm' ? '' : ' (and --module, --token-label to aws-cloudhsm)'}, not to --backend ${explicit}; drop ${foreign.length === 1 ? 'it' : 'them'}`);
    return explicit;
  }
  if (explicit === 'software' && flags.length > 0) {
    throw new CliError('InvalidArgument', `${flags.join(', ')} ${flags.length === 1 ? 'applies' : 'apply'} to --backend pkcs11, not to --backend software; drop ${flags.length === 1 ? 'it' : 'them'} or use --backend pkcs11`);
  }
  if (explicit) return explicit;
  return flags.length > 0 ? 'pkcs11' : 'software';
}

function isCloud(backend: string | undefined): backend is CloudInitBackend {
  return (CLOUD_INIT_BACKENDS as readonly string[]).includes(backend ?? '');
}

/**
 * A cloud flag given for a backend that does not take it is refused by name (rather than
 * dropped: the operator meant something by it), and so is one given without --backend: the
 * flags alone do not always say which cloud (--max-concurrency is everyone's).
 */
function checkCloudFlags(opts: InitOptions, backend: InitOptions['backend']): void {
  for (const flag of mergedCloudInitFlags()) {
    if (opts[flag.attribute] === undefined) continue;
    if (backend === undefined) {
      throw new CliError('InvalidArgument', `${flag.long} applies to --backend ${flag.backends.join(' or ')}: give --backend too`);
    }
    if (!(flag.backends as string[]).includes(backend)) {
      throw new CliError('InvalidArgument', `${flag.long} applies to --backend ${flag.backends.join(' or ')}, not to --backend ${backend}; drop it`);
    }
  }
}

/** Builds the backend section with the cloud package's builder; only the CLI's thin init-<cloud> module loads here, never the SDK. */
async function cloudBackendSection(ctx: CliContext, backend: CloudInitBackend, opts: InitOptions): Promise<ConfigFile['backend']> {
  // The builders read flags by commander's attribute names; paths become absolute here, since a
  // config is later read from any working directory.
  const flags: Record<string, unknown> = { ...opts, backend };
  delete flags['dir'];
  delete flags['force'];
  if (typeof opts.module === 'string' && opts.module.includes('/')) flags['module'] = resolve(ctx.cwd, opts.module);
  if (ctx.globals.pinFile !== undefined) flags['pinFile'] = resolve(ctx.cwd, ctx.globals.pinFile);
  if (backend === 'aws-kms' || backend === 'aws-cloudhsm') return (await import('../init-aws.js')).awsBackendConfig(flags);
  if (backend === 'azure-keyvault') return (await import('../init-azure.js')).azureBackendConfig(flags);
  return (await import('../init-gcp.js')).gcpBackendConfig(flags);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** A cloud config: no key directory (the keys live in the cloud), the default rotation and audit sections beside it. */
async function prepareCloud(ctx: CliContext, backend: CloudInitBackend, opts: InitOptions & { force: boolean }): Promise<InitResult> {
  if (ctx.globals.passphraseFile !== undefined) throw new CliError('InvalidArgument', `--passphrase-file applies to the software backend; --backend ${backend} keeps its keys in the cloud and takes its credentials from the provider's default chain`);
  if (ctx.globals.pinFile !== undefined && backend !== 'aws-cloudhsm') throw new CliError('InvalidArgument', `--pin-file applies to --backend pkcs11 and aws-cloudhsm, not to --backend ${backend}`);
  // The flags first: a refused one leaves nothing behind.
  const section = await cloudBackendSection(ctx, backend, opts);
  const dir = resolve(ctx.cwd, opts.dir);
  const path = join(dir, CONFIG_FILE);
  if (!opts.force && (await exists(path))) throw new CliError('ConfigExists', `${path} already exists; pass --force to overwrite it`);
  const createdPaths: string[] = [];
  if (!(await exists(dir))) createdPaths.push(dir);
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  await restrictMode(dir, PRIVATE_DIR_MODE);
  const config: ConfigFile = {
    backend: section,
    rotation: structuredClone(DEFAULT_ROTATION_SECTION) as unknown as ConfigFile['rotation'],
    audit: structuredClone(DEFAULT_AUDIT_SECTION) as unknown as ConfigFile['audit'],
  };
  return { path, config, createdPaths };
}

/**
 * An existing key store protected the other way (a passphrase store under --master-key-file, a
 * master-key store without it) is refused by the backend in terms of the config's fields; init
 * adds which flags to give instead.
 */
function withSecretFlagHint(error: unknown, masterKeyGiven: boolean): unknown {
  const field = masterKeyGiven ? 'backend.options.masterKey' : 'backend.options.passphrase';
  for (let e: unknown = error, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const h = e as { name?: unknown; code?: unknown; details?: Record<string, unknown> };
    if (h.name === 'HsmError' && h.code === 'InvalidConfiguration' && h.details?.['field'] === field && typeof h.details['directory'] === 'string') {
      const hint = masterKeyGiven
        ? 'init: that store opens with its passphrase, so give OLOCUS_HSM_PASSPHRASE or --passphrase-file PATH instead of a master key flag'
        : 'init: that store opens with its master key, so give --master-key-file PATH or --master-key-env NAME';
      return new CliError('InvalidConfiguration', `${(error as Error).message}; ${hint}`, { cause: error });
    }
  }
  return error;
}

/** The master key flags given, as typed. */
function masterKeyFlags(opts: InitOptions): string[] {
  return [...(opts.masterKeyFile !== undefined ? ['--master-key-file'] : []), ...(opts.masterKeyEnv !== undefined ? ['--master-key-env'] : [])];
}

export async function init(ctx: CliContext, opts: InitOptions): Promise<void> {
  const force = opts.force === true;
  const backend = initBackend(opts);
  const masterKey = masterKeyFlags(opts);
  // Refused before anything is created or opened (a token, a cloud endpoint).
  if (backend !== 'software' && masterKey.length > 0) {
    throw new CliError('InvalidArgument', `${masterKey.join(', ')} ${masterKey.length === 1 ? 'applies' : 'apply'} to the software backend, not to --backend ${backend}; drop ${masterKey.length === 1 ? 'it' : 'them'}`);
  }
  let result: InitResult;
  if (isCloud(backend)) {
    result = await prepareCloud(ctx, backend, { ...opts, force });
  } else if (backend === 'pkcs11') {
    if (opts.backend !== 'pkcs11') ctx.note(`note: ${pkcs11Flags(opts).join(', ')} given: writing a PKCS#11 config (--backend pkcs11)`);
    result = await preparePkcs11(ctx, { ...opts, force });
  } else {
    if (ctx.globals.pinFile !== undefined) throw new CliError('InvalidArgument', '--pin-file applies to --backend pkcs11; the software backend takes OLOCUS_HSM_PASSPHRASE or --passphrase-file PATH');
    const secret = await masterKeyForInit(ctx, opts);
    result = await prepareSoftware(ctx, { dir: opts.dir, force, ...(secret ? { passphrase: secret } : {}) });
  }
  // Opens the backend once before writing: a config that cannot work is not written.
  await checkAndWrite(ctx, result).catch((error: unknown) => {
    throw backend === 'software' ? withSecretFlagHint(error, masterKey.length > 0) : error;
  });
  if (result.env) {
    ctx.note(
      'note: the config reads the passphrase from OLOCUS_HSM_PASSPHRASE (it is not stored anywhere): set that variable or give --passphrase-file for later commands; on a terminal they ask for it',
    );
  }
  if (ctx.json) {
    ctx.printJson({ config: result.path, backend: result.config.backend });
    return;
  }
  const secretName = result.secretKind === 'masterKey' ? 'master key' : 'passphrase';
  ctx.print(`wrote ${result.path} (backend ${result.config.backend.type}${result.passphraseFrom ? `, ${secretName} from ${result.passphraseFrom}` : ''})`);
}
