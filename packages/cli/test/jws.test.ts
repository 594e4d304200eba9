import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { compactVerify, flattenedVerify, importJWK, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, cli, lines, tempDir, type RunResult } from './helpers.js';

/**
 * `sign --format jws` makes a compact JWS (RFC 7515) that an independent JOSE library (`jose`)
 * verifies with the key exported as a JWK; `verify --format jws` takes it back, attached or
 * detached. And after a rotation, a signature made before it verifies without --signed-at,
 * saying which version matched.
 */

const env = cleanEnv({ OLOCUS_HSM_PASSPHRASE: 'jws-test-passphrase-31be07' });
let dir: string;
let cleanup: () => Promise<void>;
const MESSAGE = 'JOSE interop: olocus-jws-payload-0c4d\n';

async function ok(args: string[]): Promise<RunResult> {
  const r = await cli(args, { cwd: dir, env });
  expect(r.code, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
}
async function json<T>(args: string[], code = 0): Promise<T> {
  const r = await cli([...args, '--json'], { cwd: dir, env });
  expect(r.code, `${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(code);
  return JSON.parse(r.stdout) as T;
}

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('olocus-cli-jws-'));
  await ok(['init']);
  await writeFile(join(dir, 'msg'), MESSAGE);
}, 60_000);
afterAll(async () => cleanup?.());

const CASES = [
  ['Ed25519', 'EdDSA'],
  ['ECDSA_P256', 'ES256'],
  ['ECDSA_P384', 'ES384'],
  ['ECDSA_P521', 'ES512'],
  ['RSA_2048', 'RS256'],
  ['RSA_PSS_2048', 'PS256'],
] as const;

describe('sign --format jws: jose verifies it with the exported JWK', () => {
  for (const [algorithm, alg] of CASES) {
    it(`${algorithm} → ${alg}, kid = the version that signed, attached and detached`, async () => {
      const id = `jws-${algorithm.toLowerCase().replaceAll('_', '-')}`;
      await ok(['keys', 'create', '--id', id, '--algorithm', algorithm]);
      await ok(['sign', '--key', id, '--in', 'msg', '--out', `${id}.jws`, '--format', 'jws']);
      await ok(['sign', '--key', id, '--in', 'msg', '--out', `${id}.detached.jws`, '--format', 'jws', '--detached']);
      const jwk = JSON.parse((await ok(['keys', 'export-public', '--id', id, '--format', 'jwk'])).stdout) as JWK;
      const key = await importJWK(jwk, alg);

      const token = (await readFile(join(dir, `${id}.jws`), 'utf8')).trim();
      const { payload, protectedHeader } = await compactVerify(token, key, { algorithms: [alg] });
      expect(Buffer.from(payload).toString('utf8')).toBe(MESSAGE);
      expect(protectedHeader).toEqual({ alg, kid: `${id}.v1` });

      // RFC 7515 Appendix F: the detached form has an empty payload part; the payload is the file.
      const [h, empty, s] = (await readFile(join(dir, `${id}.detached.jws`), 'utf8')).trim().split('.');
      expect(empty).toBe('');
      const flat = await flattenedVerify({ protected: h!, payload: Buffer.from(MESSAGE).toString('base64url'), signature: s! }, key, { algorithms: [alg] });
      expect(flat.protectedHeader).toEqual({ alg, kid: `${id}.v1` });

      // And back through the CLI.
      expect(await json<{ valid: boolean; version: number; format: string }>(['verify', '--key', id, '--in', `${id}.jws`, '--format', 'jws'])).toMatchObject({ valid: true, version: 1, format: 'jws' });
      expect(await json<{ valid: boolean; detached: boolean }>(['verify', '--key', id, '--in', 'msg', '--signature', `${id}.detached.jws`, '--format', 'jws'])).toMatchObject({ valid: true, detached: true });
    }, 120_000);
  }

  it('a JWS with another message, another alg or a foreign kid is invalid (exit 1) with the reason', async () => {
    const id = 'jws-ecdsa-p256';
    await writeFile(join(dir, 'other'), 'not the message');
    const wrong = await json<{ valid: boolean; reason: string }>(['verify', '--key', id, '--in', 'other', '--signature', `${id}.detached.jws`, '--format', 'jws'], 1);
    expect(wrong.valid).toBe(false);
    const [, payload, signature] = (await readFile(join(dir, `${id}.jws`), 'utf8')).trim().split('.');
    const forged = (header: object) => `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${payload}.${signature}`;
    await writeFile(join(dir, 'alg.jws'), forged({ alg: 'HS256', kid: `${id}.v1` }));
    const alg = await json<{ valid: boolean; reason: string }>(['verify', '--key', id, '--in', 'alg.jws', '--format', 'jws'], 1);
    expect(alg.reason).toContain('HS256');
    await writeFile(join(dir, 'kid.jws'), forged({ alg: 'ES256', kid: 'someone-else.v1' }));
    const kid = await json<{ valid: boolean; reason: string }>(['verify', '--key', id, '--in', 'kid.jws', '--format', 'jws'], 1);
    expect(kid.reason).toContain('someone-else.v1');
  }, 60_000);
});

describe('verify after a rotation needs no --signed-at', () => {
  it('a v1 signature verifies after the rotation and names v1 (text and --json); --signed-at still works', async () => {
    await ok(['keys', 'create', '--id', 'rot', '--algorithm', 'ECDSA_P256']);
    const signed = await json<{ signedAt: string; keyId: string }>(['sign', '--key', 'rot', '--in', 'msg', '--out', 'v1.sig']);
    expect(signed.keyId).toBe('rot.v1');
    await ok(['sign', '--key', 'rot', '--in', 'msg', '--out', 'v1.jws', '--format', 'jws']);
    await ok(['keys', 'rotate', '--id', 'rot', '--reason', 'quarterly']);

    expect(await json<{ valid: boolean; keyId: string; version: number }>(['verify', '--key', 'rot', '--in', 'msg', '--signature', 'v1.sig'])).toMatchObject({ valid: true, keyId: 'rot.v1', version: 1 });
    const text = await ok(['verify', '--key', 'rot', '--in', 'msg', '--signature', 'v1.sig']);
    expect(lines(text.stdout)[0]).toBe('Verified OK (rot version 1, rot.v1, ECDSA_P256)');
    expect(await json<{ valid: boolean; version: number }>(['verify', '--key', 'rot', '--in', 'v1.jws', '--format', 'jws'])).toMatchObject({ valid: true, version: 1 });
    expect(await json<{ valid: boolean; version: number }>(['verify', '--key', 'rot', '--in', 'msg', '--signature', 'v1.sig', '--signed-at', signed.signedAt])).toMatchObject({ valid: true, version: 1 });

    // A new signature is made by v2 and verifies as v2.
    await ok(['sign', '--key', 'rot', '--in', 'msg', '--out', 'v2.sig']);
    expect(await json<{ valid: boolean; version: number }>(['verify', '--key', 'rot', '--in', 'msg', '--signature', 'v2.sig'])).toMatchObject({ valid: true, version: 2 });

    // A revoked version verifies nothing, with or without a time.
    await ok(['keys', 'revoke', '--id', 'rot', '--version', '1', '--reason', 'retired']);
    const revoked = await json<{ valid: boolean; reason: string }>(['verify', '--key', 'rot', '--in', 'msg', '--signature', 'v1.sig'], 1);
    expect(revoked.valid).toBe(false);
    expect(revoked.reason).toContain('rot');
  }, 120_000);
});
