// Makes a throwaway SoftHSM token (its own config and token folder, random PINs) and runs the
// command given with SOFTHSM2_CONF, OLOCUS_EXAMPLE_TOKEN and OLOCUS_HSM_PIN set. The PINs travel
// in the environment only (never argv), and the folder is removed afterwards.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';

const command = process.argv.slice(2);
if (command.length === 0) {
  console.error('usage: node scripts/with-softhsm-token.mjs <command> [args...]');
  process.exit(2);
}
const candidates = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/local/lib/softhsm/libsofthsm2.so'];
const module = candidates.find((path) => existsSync(path));
if (!module) {
  console.error('SoftHSM is not installed: apt-get install softhsm2 (Debian/Ubuntu)');
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'olocus-example-token-'));
const exit = (code) => {
  rmSync(dir, { recursive: true, force: true });
  process.exit(code);
};
try {
  mkdirSync(join(dir, 'tokens'), { mode: 0o700 });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`, { mode: 0o600 });
  process.env.SOFTHSM2_CONF = conf;
  const label = 'olocus-example';
  const soPin = randomBytes(8).toString('hex');
  const pin = randomBytes(8).toString('hex');
  const p11 = new pkcs11js.PKCS11();
  p11.load(module);
  p11.C_Initialize();
  try {
    const slot = p11.C_GetSlotList(true).find((s) => !(p11.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED));
    p11.C_InitToken(slot, soPin, label.padEnd(32, ' '));
    const ready = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === label);
    const session = p11.C_OpenSession(ready, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p11.C_Login(session, pkcs11js.CKU_SO, soPin);
    p11.C_InitPIN(session, pin);
    p11.C_Logout(session);
    p11.C_CloseSession(session);
  } finally {
    p11.C_Finalize();
  }
  const run = spawnSync(command[0], command.slice(1), { stdio: 'inherit', env: { ...process.env, OLOCUS_EXAMPLE_TOKEN: label, OLOCUS_HSM_PIN: pin } });
  exit(run.status ?? 1);
} catch (error) {
  console.error(`could not make a SoftHSM token: ${error.message}`);
  exit(1);
}
