/**
 * Fresh SoftHSM tokens per test file (vitest runs each file in its own process). PINs never
 * reach a command line: tokens are initialised with C_InitToken / C_InitPIN through pkcs11js.
 * Adapted from packages/backend-pkcs11/test/helpers/softhsm.ts.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';
import { afterAll } from 'vitest';

export const SOFTHSM_LIB = '/usr/lib/softhsm/libsofthsm2.so';
export const P11KIT_CLIENT_LIB = '/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so';
const INSTALL = 'apt-get install softhsm2 p11-kit';

/** Fails (never skips) when a tool the tests need is missing. */
export function requireTools(): void {
  const missing: string[] = [];
  if (spawnSync('sh', ['-c', 'command -v p11-kit']).status !== 0) missing.push('p11-kit');
  for (const lib of [SOFTHSM_LIB, P11KIT_CLIENT_LIB]) if (!existsSync(lib)) missing.push(lib);
  if (missing.length > 0) throw new Error(`the p11-kit fault test needs SoftHSM and p11-kit; missing: ${missing.join(', ')}. Install them: ${INSTALL}`);
}

let dir: string | undefined;

/** The per-process SoftHSM configuration (SOFTHSM2_CONF is read by C_Initialize, also by p11-kit server). */
export function softHsmDir(): string {
  if (dir) return dir;
  requireTools();
  dir = mkdtempSync(join(tmpdir(), 'olocus-monitoring-softhsm-'));
  const tokenDir = join(dir, 'tokens');
  mkdirSync(tokenDir);
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env.SOFTHSM2_CONF = conf;
  const created = dir;
  afterAll(() => rmSync(created, { recursive: true, force: true }));
  return dir;
}

export interface TestToken {
  label: string;
  pin: string;
}

/** Initialises a new token in SoftHSM's free slot with random SO and user PINs. */
export function createToken(label: string): TestToken {
  softHsmDir();
  const soPin = randomBytes(8).toString('hex');
  const pin = randomBytes(8).toString('hex');
  const p11 = new pkcs11js.PKCS11();
  p11.load(SOFTHSM_LIB);
  p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const free = p11.C_GetSlotList(true).find((s) => !(p11.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED));
    if (!free) throw new Error('SoftHSM has no free slot');
    p11.C_InitToken(free, soPin, label.padEnd(32, ' '));
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === label);
    if (!slot) throw new Error(`token ${label} not found after C_InitToken`);
    const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      p11.C_Login(session, pkcs11js.CKU_SO, soPin);
      p11.C_InitPIN(session, pin);
      p11.C_Logout(session);
    } finally {
      p11.C_CloseSession(session);
    }
  } finally {
    p11.C_Finalize();
    p11.close();
  }
  return { label, pin };
}
