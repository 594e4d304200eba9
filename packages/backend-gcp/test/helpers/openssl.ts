import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { algorithmInfo, ecdsaRawToDer, type KeyAlgorithm } from '@olocus/hsm-core';

/** Verifies a library-format signature with the openssl command line, from the exported PEM. */
export function opensslVerify(algorithm: KeyAlgorithm, pem: string, data: Uint8Array, signature: Uint8Array): boolean {
  const probe = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) throw new Error('openssl is not on PATH: install it (apt-get install openssl)');
  const dir = mkdtempSync(join(tmpdir(), 'olocus-gcp-openssl-'));
  try {
    const info = algorithmInfo(algorithm);
    writeFileSync(join(dir, 'pub.pem'), pem);
    writeFileSync(join(dir, 'data.bin'), data);
    writeFileSync(join(dir, 'sig.bin'), info.family === 'ECDSA' ? ecdsaRawToDer(signature) : signature);
    let args: string[];
    if (info.family === 'EdDSA') {
      args = ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-rawin', '-in', 'data.bin', '-sigfile', 'sig.bin'];
    } else {
      const digest = info.hash === 'SHA-384' ? '-sha384' : info.hash === 'SHA-512' ? '-sha512' : '-sha256';
      args = ['dgst', digest, '-verify', 'pub.pem', '-signature', 'sig.bin'];
      if (info.padding === 'PSS') args.push('-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:digest');
      args.push('data.bin');
    }
    const result = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    return result.status === 0 && /Verified OK|Signature Verified Successfully/i.test(result.stdout + result.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
