// Initialises a SoftHSM token in the slot-less config given by SOFTHSM2_CONF.
// Label from argv; SO PIN and user PIN from BENCH_SO_PIN / BENCH_PIN (never argv).
import { PKCS11 } from 'pkcs11js';

const [modulePath, label] = process.argv.slice(2);
const p11 = new PKCS11();
p11.load(modulePath);
p11.C_Initialize({ flags: 2 });
const slot = p11.C_GetSlotList(true).find((s) => !(p11.C_GetTokenInfo(s).flags & 0x400 /* CKF_TOKEN_INITIALIZED */));
p11.C_InitToken(slot, process.env.BENCH_SO_PIN, label.padEnd(32));
const session = p11.C_OpenSession(slot, 4 | 2);
p11.C_Login(session, 0 /* CKU_SO */, process.env.BENCH_SO_PIN);
p11.C_InitPIN(session, process.env.BENCH_PIN);
p11.C_Logout(session);
p11.C_CloseSession(session);
p11.C_Finalize();
