import { KEY_ALGORITHMS } from '@olocus/hsm-core';
import { runConformanceSuite } from '@olocus/hsm-core/testing';
import { Pkcs11Backend } from '../src/index.js';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';

// the suite runs once per signing path (adaptive dispatch forced each way), each on its own token
for (const dispatch of ['inline', 'threads'] as const) {
  const token = createToken(`conformance-${dispatch}`);
  runConformanceSuite({
    name: `pkcs11 on SoftHSM 2.6.1, dispatch ${dispatch}`,
    createBackend: () => new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, dispatch, sessionPool: { minSessions: 2, maxSessions: 4 } }, { pin: token.pin }),
    // SoftHSM 2.6.1 does every algorithm of the contract (measured with C_GetMechanismList/Info).
    expectedAlgorithms: KEY_ALGORITHMS,
    concurrency: 200,
  });
}
