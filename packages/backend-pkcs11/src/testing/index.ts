/**
 * Test helpers for code that runs against a real SoftHSM token: a per-process SoftHSM config,
 * tokens initialised through pkcs11js (PINs never on a command line), and `p11-kit server` as a
 * network-HSM stand-in that a test can kill and restart. Needs vitest (cleanup runs in afterAll).
 */
export { SOFTHSM_LIB, SPY_LIB, P11KIT_CLIENT_LIB, requireTools, softHsmEnv, createToken, runTool, CKU_USER, type SoftHsmEnv, type TestToken } from './softhsm.js';
export { P11KitServer } from './p11kit.js';
