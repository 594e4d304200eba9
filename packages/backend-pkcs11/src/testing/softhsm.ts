/**
 * Fresh SoftHSM tokens per test file (vitest runs each file in its own process: pool 'forks').
 * PINs never reach a command line: tokens are initialised with C_InitToken / C_InitPIN through
 * pkcs11js, and pkcs11-tool gets the PIN with `--pin env:VAR`.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { CKF_RW_SESSION, CKF_SERIAL_SESSION, CKF_TOKEN_INITIALIZED, CKU_SO, CKU_USER } from '../constants.js';
import { acquireModule, releaseModule } from '../module.js';

export const SOFTHSM_LIB = '/usr/lib/softhsm/libsofthsm2.so';
export const SPY_LIB = '/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so';
export const P11KIT_CLIENT_LIB = '/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so';
const INSTALL = 'apt-get install softhsm2 opensc p11-kit';

/** Fails (never skips) when a tool the tests need is missing. */
export function requireTools(): void {
  const missing: string[] = [];
  for (const tool of ['softhsm2-util', 'pkcs11-tool', 'p11-kit', 'openssl']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) missing.push(tool);
  }
  for (const lib of [SOFTHSM_LIB, SPY_LIB, P11KIT_CLIENT_LIB]) if (!existsSync(lib)) missing.push(lib);
  if (missing.length > 0) {
    throw new Error(`the PKCS#11 tests need SoftHSM, OpenSC and p11-kit; missing: ${missing.join(', ')}. Install them: ${INSTALL} (openssl: apt-get install openssl)`);
  }
}

export interface SoftHsmEnv {
  dir: string;
  tokenDir: string;
  conf: string;
}

let env: SoftHsmEnv | undefined;

/** The per-process SoftHSM configuration (SOFTHSM2_CONF is read once, by C_Initialize). */
export function softHsmEnv(): SoftHsmEnv {
  if (env) return env;
  requireTools();
  const dir = mkdtempSync(join(tmpdir(), 'olocus-softhsm-'));
  const tokenDir = join(dir, 'tokens');
  execFileSync('mkdir', ['-p', tokenDir]);
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env.SOFTHSM2_CONF = conf;
  env = { dir, tokenDir, conf };
  // token files hold test keys only; removed when the file's tests end (the fork may not see 'exit')
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return env;
}

export interface TestToken {
  label: string;
  pin: string;
  soPin: string;
  /** The token's directory inside the tokendir (delete it to pull the token from under the library). */
  path: string;
}

/** Initialises a new token in SoftHSM's free slot, with random SO and user PINs. */
export function createToken(label: string): TestToken {
  const { tokenDir } = softHsmEnv();
  const before = new Set(readdirSync(tokenDir));
  const soPin = randomBytes(8).toString('hex');
  const pin = randomBytes(8).toString('hex');
  const mod = acquireModule(SOFTHSM_LIB);
  try {
    const p11 = mod.p11;
    const free = p11.C_GetSlotList(true).find((s) => !(p11.C_GetTokenInfo(s).flags & CKF_TOKEN_INITIALIZED));
    if (!free) throw new Error('SoftHSM has no free slot');
    p11.C_InitToken(free, soPin, label.padEnd(32, ' '));
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === label);
    if (!slot) throw new Error(`token ${label} not found after C_InitToken`);
    const session = p11.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    try {
      p11.C_Login(session, CKU_SO, soPin);
      p11.C_InitPIN(session, pin);
      p11.C_Logout(session);
    } finally {
      p11.C_CloseSession(session);
    }
  } finally {
    releaseModule(mod);
  }
  const created = readdirSync(tokenDir).filter((d) => !before.has(d));
  return { label, pin, soPin, path: join(tokenDir, created[0] ?? '') };
}

/** Runs a tool with the PIN in an environment variable (never in argv). */
export function runTool(command: string, args: string[], extraEnv: Record<string, string> = {}): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, ...extraEnv }, timeout: 60_000 });
  if (result.error) throw result.error;
  return result;
}

export { CKU_USER };
