import { KEY_ALGORITHMS } from '@olocus/hsm-core';
import { runConformanceSuite } from '@olocus/hsm-core/testing';
import { Pkcs11Backend } from '../src/index.js';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';

const token = createToken('conformance');

runConformanceSuite({
  name: 'pkcs11 on SoftHSM 2.6.1',
  createBackend: () => new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, sessionPool: { minSessions: 2, maxSessions: 4 } }, { pin: token.pin }),
  // SoftHSM 2.6.1 does every algorithm of the contract (measured with C_GetMechanismList/Info).
  expectedAlgorithms: KEY_ALGORITHMS,
  concurrency: 200,
});
