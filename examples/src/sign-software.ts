// Sign and verify with the embedded default: keys sealed at rest in a folder, no hardware needed.
// Run: pnpm --filter @olocus/examples sign-software
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { HsmManager, encodeSignature, exportPublicKey } from '@olocus/hsm-core';

// The store's passphrase comes from the environment, never from the config. A throwaway one
// keeps this example self-contained; an application sets OLOCUS_HSM_PASSPHRASE itself.
process.env.OLOCUS_HSM_PASSPHRASE ??= randomBytes(24).toString('base64url');
const directory = process.env.OLOCUS_EXAMPLE_STORE ?? mkdtempSync(join(tmpdir(), 'olocus-example-'));

const hsm = new HsmManager({
  backend: { type: 'software', options: { directory, passphrase: { env: 'OLOCUS_HSM_PASSPHRASE' } } },
});
await hsm.initialize();
try {
  const key = await hsm.generateKey({ id: 'invoices-2026', algorithm: 'ECDSA_P256' });
  const message = Buffer.from('invoice #42');
  const signature = await hsm.sign(key, message); // raw r||s, the library's format
  const der = encodeSignature(key.algorithm, signature, 'der'); // what OpenSSL expects
  console.log(`key ${key.id} (${key.algorithm}) in ${key.instance}`);
  console.log(`signature (DER, base64): ${Buffer.from(der).toString('base64')}`);
  console.log(`verified: ${await hsm.verify(key, message, signature)}`); // locally, cached public key
  console.log(`tampered verified: ${await hsm.verify(key, Buffer.from('invoice #43'), signature)}`);
  console.log(exportPublicKey(await hsm.getPublicKey(key), 'pem'));
} finally {
  await hsm.close();
}
