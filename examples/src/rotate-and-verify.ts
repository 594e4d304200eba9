// Rotate a logical key and keep verifying what its older versions signed.
// Run: pnpm --filter @olocus/examples rotate-and-verify
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openRotation } from '@olocus/hsm-rotation';

process.env.OLOCUS_HSM_PASSPHRASE ??= randomBytes(24).toString('base64url');
const dir = mkdtempSync(join(tmpdir(), 'olocus-example-'));

const rotation = await openRotation({
  storage: { kind: 'sqlite', path: join(dir, 'rotation.db') }, // PostgreSQL for several nodes
  backend: { type: 'software', options: { directory: join(dir, 'keys'), passphrase: { env: 'OLOCUS_HSM_PASSPHRASE' } } },
});
const hsm = rotation.hsm!;
try {
  const who = { actor: 'example@olocus', reason: 'example rotation' };
  await rotation.manager.createKey('payments', 'ECDSA_P256', who);
  const message = Buffer.from('transfer 100 EUR');
  const before = await hsm.signWithLogicalKey('payments', message);
  console.log(`signed with ${before.version.baseKeyId} v${before.version.version}`);

  await rotation.manager.rotateKey('payments', who);
  const after = await hsm.signWithLogicalKey('payments', message);
  console.log(`after rotation, signing uses v${after.version.version}`);

  // No signature time needed: a version never revoked or compromised only signed while Active.
  const old = await hsm.verifyWithLogicalKeyDetailed('payments', message, before.signature);
  console.log(`old signature verified: ${old.valid} (by v${old.version?.version})`);
  const fresh = await hsm.verifyWithLogicalKeyDetailed('payments', message, after.signature);
  console.log(`new signature verified: ${fresh.valid} (by v${fresh.version?.version})`);
  const { versions } = await rotation.registry.listKeyVersions({ baseKeyId: 'payments' });
  for (const version of versions) console.log(`v${version.version}: ${version.state}`);
} finally {
  await rotation.close();
}
