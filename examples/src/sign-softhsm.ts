// Sign on a PKCS#11 token (SoftHSM here; a Luna, nShield or CloudHSM the same way).
// Run: pnpm --filter @olocus/examples sign-softhsm   (makes a throwaway SoftHSM token first)
// With your own token: OLOCUS_EXAMPLE_TOKEN=<label> OLOCUS_HSM_PIN=<pin> node dist/sign-softhsm.js
import { HsmManager, encodeSignature } from '@olocus/hsm-core';

const tokenLabel = process.env.OLOCUS_EXAMPLE_TOKEN;
if (!tokenLabel) throw new Error('set OLOCUS_EXAMPLE_TOKEN to the token label (and OLOCUS_HSM_PIN to its user PIN)');

const hsm = new HsmManager({
  backend: {
    type: 'pkcs11',
    options: {
      vendor: 'softhsm', // finds the module where the vendor installs it; or give libraryPath
      ...(process.env.OLOCUS_EXAMPLE_MODULE ? { libraryPath: process.env.OLOCUS_EXAMPLE_MODULE } : {}),
      tokenLabel,
      pin: { env: 'OLOCUS_HSM_PIN' }, // or { file: '/run/secrets/hsm-pin' }; never in the config itself
    },
  },
});
await hsm.initialize();
try {
  const key = await hsm.generateKey({ id: `release-${Date.now()}`, algorithm: 'ECDSA_P256' });
  const message = Buffer.from('release v1.2.3');
  const signature = await hsm.sign(key, message);
  console.log(`key ${key.id} on ${key.instance}: ${key.ref}`);
  console.log(`signature (DER, base64): ${Buffer.from(encodeSignature(key.algorithm, signature, 'der')).toString('base64')}`);
  console.log(`verified: ${await hsm.verify(key, message, signature)}`);
  const fips = await hsm.fipsStatus();
  console.log(`FIPS: ${fips.standard} level ${fips.level} (${fips.evidence})`);
} finally {
  await hsm.close();
}
