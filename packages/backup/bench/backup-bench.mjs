// Backup and restore of N P-256 keys on SoftHSM through @olocus/hsm-backup (bundle create with
// the PKCS#11 backend's `wrapped` export, restore into a fresh token that holds the same KEK),
// against the raw C_WrapKey / C_UnwrapKey calls (pkcs11js directly, same tokens, same KEK,
// CKM_AES_KEY_WRAP_PAD) measured in the same run.
//   pnpm --filter @olocus/hsm-backup build && node packages/backup/bench/backup-bench.mjs [--keys 1000]
// Prints a table and one JSON line. Needs SoftHSM 2 (apt-get install softhsm2). The tokens live in
// a temporary directory removed at the end; PINs are random and never leave this process.
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const argKeys = process.argv.indexOf('--keys');
const N = argKeys > 0 ? Number(process.argv[argKeys + 1]) : 1000;
const LIB = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((p) => existsSync(p));
if (!LIB) throw new Error('SoftHSM 2 is needed: apt-get install -y softhsm2');

const work = mkdtempSync(join(tmpdir(), 'olocus-backup-bench-'));
mkdirSync(join(work, 'tokens'));
writeFileSync(join(work, 'softhsm2.conf'), `directories.tokendir = ${join(work, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
process.env.SOFTHSM2_CONF = join(work, 'softhsm2.conf');

const { Pkcs11Backend, createBackupKek, enrollBackupKek } = await import('@olocus/hsm-backend-pkcs11');
const { createBundle, restoreBundle } = await import('../dist/index.js');
const pkcs11js = createRequire(createRequire(import.meta.url).resolve('@olocus/hsm-backend-pkcs11'))('pkcs11js');

const p11 = new pkcs11js.PKCS11();
p11.load(LIB);
try {
  p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
} catch (error) {
  if (!/ALREADY_INITIALIZED/.test(String(error?.message))) throw error;
}
const slotOf = (label) => p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.replace(/[\0 ]+$/, '') === label);
function initToken(label) {
  const soPin = randomBytes(8).toString('hex');
  const pin = randomBytes(8).toString('hex');
  const free = p11.C_GetSlotList(true).find((s) => !(p11.C_GetTokenInfo(s).flags & pkcs11js.CKF_TOKEN_INITIALIZED));
  p11.C_InitToken(free, soPin, label.padEnd(32, ' '));
  const session = p11.C_OpenSession(slotOf(label), pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  p11.C_Login(session, pkcs11js.CKU_SO, soPin);
  p11.C_InitPIN(session, pin);
  p11.C_Logout(session);
  p11.C_CloseSession(session);
  return { label, pin, soPin };
}
const so = (t) => ({ tokenLabel: t.label, soPin: t.soPin });
const backendOn = (t) => new Pkcs11Backend({ libraryPath: LIB, tokenLabel: t.label }, { pin: t.pin });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const B = initToken('bench-backup');
const A = initToken('bench-prod');
const C = initToken('bench-restore');
const D = initToken('bench-raw');
await createBackupKek({ libraryPath: LIB, ...so(B) });
await enrollBackupKek({ libraryPath: LIB, from: so(B), to: { ...so(A), unwrap: false } }); // production exports only
for (const t of [C, D]) await enrollBackupKek({ libraryPath: LIB, from: so(B), to: { ...so(t), userPin: t.pin } });

const a = backendOn(A);
await a.initialize();
let t0 = performance.now();
for (let i = 0; i < N; i++) await a.generateKeyPair({ id: `k${String(i).padStart(5, '0')}`, algorithm: 'ECDSA_P256', backup: true });
const generateMs = performance.now() - t0;

const file = join(work, 'bench.olb');
t0 = performance.now();
const created = await createBundle(file, { backend: a, keys: 'all', actor: 'bench' });
const createMs = performance.now() - t0;
const bytes = statSync(file).size;
if (created.keys.length !== N) throw new Error(`expected ${N} keys in the bundle, got ${created.keys.length} (${created.ineligible.map((i) => i.reason).join('; ')})`);

// raw: C_WrapKey of the same private keys under the same KEK, on a session of this process
function session(t) {
  const s = p11.C_OpenSession(slotOf(t.label), pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  try {
    p11.C_Login(s, pkcs11js.CKU_USER, t.pin);
  } catch (error) {
    // PKCS#11 login is per application: the backend of this process is logged in already
    if (!/ALREADY_LOGGED_IN/.test(String(error?.message))) throw error;
  }
  return s;
}
function find(s, template, max) {
  p11.C_FindObjectsInit(s, template);
  const out = p11.C_FindObjects(s, max);
  p11.C_FindObjectsFinal(s);
  return out;
}
const mech = { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD };
const sa = session(A);
const [kekA] = find(sa, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_LABEL, value: 'olocus-backup-kek' }, { type: pkcs11js.CKA_WRAP, value: true }], 1);
const privates = find(sa, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_EXTRACTABLE, value: true }], N + 10);
const wrapped = [];
const wrapTimes = [];
t0 = performance.now();
for (const key of privates.slice(0, N)) {
  const t = performance.now();
  wrapped.push(Buffer.from(p11.C_WrapKey(sa, mech, kekA, key, Buffer.alloc(4096))));
  wrapTimes.push(performance.now() - t);
}
const rawWrapMs = performance.now() - t0;

// where the time of an export goes: the backend's exportKey alone, and a raw C_FindObjects by
// CKA_ID (the look-up every per-key call starts with) on the same token
const sample = Math.min(50, N);
const ids = Array.from({ length: sample }, (_, i) => `k${String(Math.floor((i * N) / sample)).padStart(5, '0')}`);
t0 = performance.now();
for (const id of ids) await a.backup.exportKey(id);
const exportKeyMs = (performance.now() - t0) / sample;
t0 = performance.now();
for (const id of ids) find(sa, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_ID, value: Buffer.from(id) }], 1);
const rawFindMs = (performance.now() - t0) / sample;

const c = backendOn(C);
await c.initialize();
t0 = performance.now();
const restored = await restoreBundle(file, { backend: c, trustedSigners: [created.signer.fingerprint] });
const restoreMs = performance.now() - t0;
if (restored.keys.filter((k) => k.action === 'imported').length !== N) throw new Error('not every key was imported');

// raw: C_UnwrapKey of the same blobs under the same KEK on token D (a private EC key object, as the backend makes)
const sd = session(D);
// the half that may unwrap (enrolled with the user PIN), not the trusted wrap-only half
const [kekD] = find(sd, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }, { type: pkcs11js.CKA_LABEL, value: 'olocus-backup-kek' }, { type: pkcs11js.CKA_UNWRAP, value: true }], 1);
const unwrapTimes = [];
t0 = performance.now();
for (let i = 0; i < wrapped.length; i++) {
  const t = performance.now();
  p11.C_UnwrapKey(sd, mech, kekD, wrapped[i], [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_EC },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_SIGN, value: true },
    { type: pkcs11js.CKA_ID, value: Buffer.from(`raw-${i}`) },
  ]);
  unwrapTimes.push(performance.now() - t);
}
const rawUnwrapMs = performance.now() - t0;
p11.C_CloseSession(sa);
p11.C_CloseSession(sd);
await a.close();
await c.close();
rmSync(work, { recursive: true, force: true });

const perKey = (ms) => ms / N;
const rows = [
  ['backup create (export + bundle + sign + atomic write)', createMs, perKey(createMs), perKey(rawWrapMs), perKey(createMs) / perKey(rawWrapMs)],
  ['backup restore (verify + unwrap + public object + sign proof + metadata)', restoreMs, perKey(restoreMs), perKey(rawUnwrapMs), perKey(restoreMs) / perKey(rawUnwrapMs)],
];
console.log(`SoftHSM ${LIB}, ${N} P-256 keys; key generation ${(generateMs / 1000).toFixed(1)} s (not counted); bundle ${bytes} bytes (${(bytes / N).toFixed(0)} bytes/key)`);
console.log('| operation | total s | ms/key | raw ms/key | ratio |');
console.log('| --- | --- | --- | --- | --- |');
for (const [name, total, per, raw, ratio] of rows) console.log(`| ${name} | ${(total / 1000).toFixed(2)} | ${per.toFixed(2)} | ${raw.toFixed(3)} | ${ratio.toFixed(1)}× |`);
console.log(`raw C_WrapKey median ${median(wrapTimes).toFixed(3)} ms, raw C_UnwrapKey median ${median(unwrapTimes).toFixed(3)} ms`);
console.log(`with ${N} keys on the token: backend exportKey alone ${exportKeyMs.toFixed(2)} ms/key; raw C_FindObjects by CKA_ID ${rawFindMs.toFixed(2)} ms/key`);
console.log(JSON.stringify({ keys: N, bytes, createMs, restoreMs, rawWrapMs, rawUnwrapMs, generateMs, exportKeyMs, rawFindMs }));
