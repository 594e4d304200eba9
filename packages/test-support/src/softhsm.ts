/**
 * Fresh SoftHSM tokens per test file (vitest runs each file in its own process: pool 'forks').
 * PINs never reach a command line: tokens are initialised with C_InitToken / C_InitPIN through
 * pkcs11js, and pkcs11-tool gets the PIN with `--pin env:VAR`.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PKCS11 } from 'pkcs11js';
import { afterAll } from 'vitest';
import { P11KIT_CLIENT_LIB, SOFTHSM_LIB, SPY_LIB } from './libraries.js';

const CKF_OS_LOCKING_OK = 0x2;
const CKF_RW_SESSION = 0x2;
const CKF_SERIAL_SESSION = 0x4;
const CKF_TOKEN_INITIALIZED = 0x400;
const CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191;
export const CKU_SO = 0;
export const CKU_USER = 1;

const INSTALL = 'apt-get install softhsm2 opensc p11-kit p11-kit-modules';

/** Fails (never skips) when a tool the tests need is missing. */
export function requireTools(): void {
  const missing: string[] = [];
  for (const tool of ['softhsm2-util', 'pkcs11-tool', 'p11-kit', 'openssl']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) missing.push(tool);
  }
  for (const [name, path] of [
    ['libsofthsm2.so', SOFTHSM_LIB],
    ['pkcs11-spy.so', SPY_LIB],
    ['p11-kit-client.so', P11KIT_CLIENT_LIB],
  ] as const) {
    if (!path) missing.push(`${name} (searched the multiarch and library directories and ldconfig -p)`);
  }
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

/**
 * Runs `fn` with SoftHSM initialised. PKCS#11 state is per process: when a backend in this
 * process has already initialised the module (CKR_CRYPTOKI_ALREADY_INITIALIZED) it is used as is
 * and left initialised; otherwise it is initialised for `fn` and finalised after it.
 */
function withSoftHsm<R>(fn: (p11: PKCS11) => R): R {
  const { PKCS11 } = createRequire(import.meta.url)('pkcs11js') as typeof import('pkcs11js');
  const p11 = new PKCS11();
  p11.load(SOFTHSM_LIB);
  let initializedHere = true;
  try {
    p11.C_Initialize({ flags: CKF_OS_LOCKING_OK });
  } catch (error) {
    if ((error as { code?: unknown }).code !== CKR_CRYPTOKI_ALREADY_INITIALIZED) throw error;
    initializedHere = false;
  }
  try {
    return fn(p11);
  } finally {
    if (initializedHere) p11.C_Finalize();
  }
}

/** Initialises a new token in SoftHSM's free slot, with random SO and user PINs. */
export function createToken(label: string): TestToken {
  const { tokenDir } = softHsmEnv();
  const before = new Set(readdirSync(tokenDir));
  const soPin = randomBytes(8).toString('hex');
  const pin = randomBytes(8).toString('hex');
  withSoftHsm((p11) => {
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
  });
  const created = readdirSync(tokenDir).filter((d) => !before.has(d));
  return { label, pin, soPin, path: join(tokenDir, created[0] ?? '') };
}

/** Runs a tool with the PIN in an environment variable (never in argv). */
export function runTool(command: string, args: string[], extraEnv: Record<string, string> = {}): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, ...extraEnv }, timeout: 60_000 });
  if (result.error) throw result.error;
  return result;
}
