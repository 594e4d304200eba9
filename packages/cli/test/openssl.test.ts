import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, run, tempDir } from './helpers.js';

/**
 * End to end with the real openssl binary as the independent checker: keys made and
 * signatures written by the CLI verify with `openssl`, and the CLI's own `verify` agrees.
 */

let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  const probe = await run('openssl', ['version'], { cwd: '/' }).catch((e: Error) => ({ code: -1, stdout: '', stderr: e.message }));
  if (probe.code !== 0) throw new Error(`openssl is needed for this test (apt-get install openssl): ${probe.stderr}`);
  ({ dir, cleanup } = await tempDir());
  const init = await cli(['init'], { cwd: dir });
  expect(init.code, init.stderr).toBe(0);
  await writeFile(join(dir, 'msg'), 'the message OpenSSL checks\n');
  await writeFile(join(dir, 'tampered'), 'the message OpenSSL checks!\n');
});

afterAll(async () => {
  await cleanup?.();
});

const cases = [
  {
    algorithm: 'ECDSA_P256',
    openssl: ['dgst', '-sha256', '-verify', 'pub.pem', '-signature', 'sig.der', 'msg'],
    sig: 'sig.der',
    says: 'Verified OK',
  },
  {
    algorithm: 'Ed25519',
    openssl: ['pkeyutl', '-verify', '-pubin', '-inkey', 'pub.pem', '-rawin', '-in', 'msg', '-sigfile', 'sig'],
    sig: 'sig',
    says: 'Signature Verified Successfully', // pkeyutl's wording for "Verified OK"
  },
  {
    algorithm: 'RSA_PSS_2048',
    openssl: ['dgst', '-sha256', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32', '-verify', 'pub.pem', '-signature', 'sig', 'msg'],
    sig: 'sig',
    says: 'Verified OK',
  },
];

describe.each(cases)('$algorithm: CLI signature verified by openssl', ({ algorithm, openssl, sig, says }) => {
  it('keys create, sign, export-public, openssl verify, CLI verify, tamper', async () => {
    const id = `ossl-${algorithm.toLowerCase().replace(/_/g, '-')}`;
    const created = await cli(['keys', 'create', '--id', id, '--algorithm', algorithm], { cwd: dir });
    expect(created.code, created.stderr).toBe(0);

    const signed = await cli(['sign', '--key', id, '--in', 'msg', '--out', sig], { cwd: dir });
    expect(signed.code, signed.stderr).toBe(0);

    const exported = await cli(['keys', 'export-public', '--id', id, '--format', 'pem', '--out', 'pub.pem'], { cwd: dir });
    expect(exported.code, exported.stderr).toBe(0);
    expect(await readFile(join(dir, 'pub.pem'), 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);

    const checked = await run('openssl', openssl, { cwd: dir });
    expect(checked.stdout + checked.stderr).toContain(says);
    expect(checked.code).toBe(0);

    const ours = await cli(['verify', '--key', id, '--in', 'msg', '--signature', sig], { cwd: dir });
    expect(ours.code, ours.stderr).toBe(0);
    expect(ours.stdout).toContain('Verified OK');

    const tampered = await cli(['verify', '--key', id, '--in', 'tampered', '--signature', sig], { cwd: dir });
    expect(tampered.code).toBe(1);
    expect(tampered.stdout).toBe('');
    expect(tampered.stderr.trim().split('\n')).toHaveLength(1);

    const opensslTampered = await run('openssl', openssl.map((a) => (a === 'msg' ? 'tampered' : a)), { cwd: dir });
    expect(opensslTampered.code).not.toBe(0);
  });
});

describe('signature formats and encodings', () => {
  it('ECDSA raw r||s and base64 round-trip through sign and verify; stdin and stdout work', async () => {
    const id = 'formats-p384';
    expect((await cli(['keys', 'create', '--id', id, '--algorithm', 'ECDSA_P384'], { cwd: dir })).code).toBe(0);
    const raw = await cli(['sign', '--key', id, '--in', '-', '--out', '-', '--signature-format', 'raw'], { cwd: dir, input: 'from stdin' });
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdoutBytes.length).toBe(96);
    await writeFile(join(dir, 'stdin-msg'), 'from stdin');
    await writeFile(join(dir, 'sig.raw'), raw.stdoutBytes);
    const ok = await cli(['verify', '--key', id, '--in', 'stdin-msg', '--signature', 'sig.raw', '--signature-format', 'raw'], { cwd: dir });
    expect(ok.code, ok.stderr).toBe(0);

    const b64 = await cli(['sign', '--key', id, '--in', 'msg', '--out', 'sig.b64', '--encoding', 'base64'], { cwd: dir });
    expect(b64.code, b64.stderr).toBe(0);
    const text = await readFile(join(dir, 'sig.b64'), 'utf8');
    expect(text).toMatch(/^[A-Za-z0-9+/]+=*\n$/);
    await writeFile(join(dir, 'sig384.der'), Buffer.from(text, 'base64'));
    expect((await cli(['keys', 'export-public', '--id', id, '--format', 'pem', '--out', 'pub384.pem'], { cwd: dir })).code).toBe(0);
    const checked = await run('openssl', ['dgst', '-sha384', '-verify', 'pub384.pem', '-signature', 'sig384.der', 'msg'], { cwd: dir });
    expect(checked.stdout).toContain('Verified OK');
    const ours = await cli(['verify', '--key', id, '--in', 'msg', '--signature', 'sig.b64', '--encoding', 'base64'], { cwd: dir });
    expect(ours.code, ours.stderr).toBe(0);
  });

  it('exports DER and JWK public keys that match the PEM', async () => {
    const id = 'ossl-ecdsa-p256';
    const der = await cli(['keys', 'export-public', '--id', id, '--format', 'der'], { cwd: dir });
    expect(der.code, der.stderr).toBe(0);
    await writeFile(join(dir, 'pub.der'), der.stdoutBytes);
    const converted = await run('openssl', ['pkey', '-pubin', '-inform', 'DER', '-in', 'pub.der', '-outform', 'PEM'], { cwd: dir });
    expect(converted.code, converted.stderr).toBe(0);
    const pem = await cli(['keys', 'export-public', '--id', id, '--format', 'pem'], { cwd: dir });
    expect(converted.stdout).toBe(pem.stdout);
    const jwk = await cli(['keys', 'export-public', '--id', id, '--format', 'jwk'], { cwd: dir });
    expect(JSON.parse(jwk.stdout)).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256' });
  });
});
