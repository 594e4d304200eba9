import { randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NAME_CODECS, createNameCodec, isHsmError } from '../src/index.js';

const ALPHABET = 'abcXYZ019._:-';
function randomId(): string {
  const first = 'aZ9';
  let id = first[randomInt(first.length)]!;
  const length = randomInt(0, 12);
  for (let i = 0; i < length; i++) id += ALPHABET[randomInt(ALPHABET.length)];
  return id;
}

const NEAR_COLLISIONS = ['a.b', 'a_b', 'a-b', 'a:b', 'a0b', 'a1b', 'a2b', 'a3b', 'a--b', 'a-0b', 'A.b', 'a.B', 'AB', 'ab', 'Ab', 'aB', 'k1.v2', 'k1-v2', 'k1_v2', 'k1v2', 'x.v1', 'x-v1'];

describe('name codecs: one reversible, collision-free mapping per provider alphabet', () => {
  for (const [provider, codec] of Object.entries(NAME_CODECS)) {
    it(`${provider}: near-collisions round-trip and never share a name`, () => {
      const names = new Map<string, string>();
      for (const id of NEAR_COLLISIONS) {
        const name = codec.encode(id);
        expect(codec.decode(name)).toBe(id);
        const key = provider === 'azureKeyVault' ? name.toLowerCase() : name;
        expect(names.get(key), `${id} and ${names.get(key)} both map to ${name}`).toBeUndefined();
        names.set(key, id);
      }
    });

    it(`${provider}: 5,000 random ids round-trip, names use only the provider's characters`, () => {
      const seen = new Map<string, string>();
      const allowed = provider === 'azureKeyVault' ? /^[0-9a-z-]+$/ : provider === 'gcpCryptoKey' ? /^[A-Za-z0-9_-]+$/ : /^[A-Za-z0-9/_-]+$/;
      for (let i = 0; i < 5000; i++) {
        const id = randomId();
        const name = codec.encode(id);
        expect(name).toMatch(allowed);
        expect(codec.decode(name)).toBe(id);
        const key = provider === 'azureKeyVault' ? name.toLowerCase() : name;
        const previous = seen.get(key);
        if (previous !== undefined) expect(previous).toBe(id);
        seen.set(key, id);
      }
    });
  }

  it('leaves plain ids readable and decodes foreign names to undefined', () => {
    expect(NAME_CODECS.gcpCryptoKey.encode('payments-2026')).toBe('payments-2026');
    expect(NAME_CODECS.gcpCryptoKey.encode('payments.v2')).toBe('payments_1v2');
    expect(NAME_CODECS.azureKeyVault.encode('Payments.v2')).toBe('-payments-1v2');
    expect(NAME_CODECS.gcpCryptoKey.decode('made_by_terraform')).toBeUndefined();
    expect(NAME_CODECS.azureKeyVault.decode('MyKey')).toBeUndefined();
    expect(NAME_CODECS.azureKeyVault.decode('trailing-')).toBeUndefined();
  });

  it('refuses an id whose name would be too long, naming the limit', () => {
    let error: unknown;
    try {
      NAME_CODECS.gcpCryptoKey.encode('a.'.repeat(30));
    } catch (e) {
      error = e;
    }
    expect(isHsmError(error, 'InvalidArgument')).toBe(true);
    expect((error as Error).message).toContain('at most 63');
  });

  it('takes a prefix, and names without it are not ours', () => {
    const codec = createNameCodec({ allowed: /[A-Za-z0-9/_-]/, escape: '_', maxLength: 250, prefix: 'olocus/' });
    expect(codec.encode('k.v1')).toBe('olocus/k_1v1');
    expect(codec.decode('olocus/k_1v1')).toBe('k.v1');
    expect(codec.decode('other/k')).toBeUndefined();
  });
});
