/**
 * Test helpers for code that runs against a real SoftHSM token: PKCS#11 module discovery, a
 * per-process SoftHSM config, tokens initialised through pkcs11js (PINs never on a command line),
 * and `p11-kit server` as a network-HSM stand-in that a test can kill and restart.
 * Private to this repository (never published). Needs vitest (cleanup runs in afterAll).
 */
export { SOFTHSM_LIB, SPY_LIB, P11KIT_CLIENT_LIB, findPkcs11Module, multiarchTriplets, type SearchOptions } from './libraries.js';
export { requireTools, softHsmEnv, createToken, runTool, CKU_SO, CKU_USER, type SoftHsmEnv, type TestToken } from './softhsm.js';
export { P11KitServer } from './p11kit.js';
