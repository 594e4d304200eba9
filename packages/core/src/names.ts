import { HsmError } from './errors.js';
import { assertValidKeyId } from './key-id.js';
import { describeValue } from './validate.js';

/**
 * One mapping from Olocus key ids (`[A-Za-z0-9][A-Za-z0-9._:-]{0,127}`) to a provider's key-name
 * alphabet, used by every backend whose provider restricts names.
 *
 * The rule: letters and digits the provider allows stay as they are. Every other character, and
 * the escape character itself, becomes the escape character followed by one digit:
 * `-` → 0, `.` → 1, `_` → 2, `:` → 3. For providers that ignore case, an upper-case letter
 * becomes the escape character followed by the letter in lower case. Because every escape is the
 * escape character plus exactly one character, the mapping is a prefix code: deterministic,
 * reversible, and two ids never map to one name. A name the rule cannot produce decodes to
 * `undefined`, which is how keys made outside the library are told apart.
 */
export interface NameCodecOptions {
  /** The characters a provider name may hold, as a one-character class (`/[A-Za-z0-9-]/`). */
  allowed: RegExp;
  /** One allowed, non-alphanumeric character that starts every escape. */
  escape: string;
  /** The provider treats `A` and `a` as the same name. */
  caseInsensitive?: boolean;
  /** Longest name the provider accepts, prefix included. */
  maxLength: number;
  /** Put in front of every name (must itself be allowed); names without it decode to undefined. */
  prefix?: string;
}

export interface NameCodec {
  encode(id: string): string;
  decode(name: string): string | undefined;
  /** Longest name this codec may produce. */
  readonly maxLength: number;
}

const SPECIAL_CODES: Readonly<Record<string, string>> = { '-': '0', '.': '1', _: '2', ':': '3' };
const CODE_SPECIALS: Readonly<Record<string, string>> = Object.fromEntries(Object.entries(SPECIAL_CODES).map(([c, d]) => [d, c]));

export function createNameCodec(options: NameCodecOptions): NameCodec {
  const { escape: escapeChar, maxLength } = options;
  const prefix = options.prefix ?? '';
  const allowed = new RegExp(`^${options.allowed.source}$`, options.allowed.flags.replace('g', ''));
  if (escapeChar.length !== 1 || !allowed.test(escapeChar) || /[A-Za-z0-9]/.test(escapeChar)) {
    throw new HsmError('InvalidArgument', `the escape character ${describeValue(escapeChar)} must be one allowed, non-alphanumeric character`);
  }
  for (const c of prefix) if (!allowed.test(c)) throw new HsmError('InvalidArgument', `the name prefix ${describeValue(prefix)} holds a character the provider does not allow`);

  const encodeChar = (c: string): string => {
    if (c === escapeChar || !allowed.test(c)) {
      const code = SPECIAL_CODES[c];
      if (code === undefined) throw new HsmError('InvalidArgument', `character ${describeValue(c)} cannot be mapped`);
      return escapeChar + code;
    }
    if (options.caseInsensitive && c >= 'A' && c <= 'Z') return escapeChar + c.toLowerCase();
    return c;
  };

  return {
    maxLength,
    encode(id: string): string {
      assertValidKeyId(id);
      let name = prefix;
      for (const c of id) name += encodeChar(c);
      if (name.length > maxLength) {
        throw new HsmError('InvalidArgument', `key id ${describeValue(id)} maps to a ${name.length}-character name; this provider allows at most ${maxLength} (use a shorter id)`, {
          details: { field: 'id', limit: maxLength },
        });
      }
      return name;
    },
    decode(name: string): string | undefined {
      if (!name.startsWith(prefix) || name.length > maxLength) return undefined;
      let id = '';
      for (let i = prefix.length; i < name.length; i++) {
        const c = name[i]!;
        if (c !== escapeChar) {
          if (!allowed.test(c)) return undefined;
          if (options.caseInsensitive && c >= 'A' && c <= 'Z') return undefined;
          id += c;
          continue;
        }
        const next = name[++i];
        if (next === undefined) return undefined;
        const special = CODE_SPECIALS[next];
        if (special !== undefined) {
          // an allowed, non-escape character is never escaped: such a name was not made here
          if (special !== escapeChar && allowed.test(special)) return undefined;
          id += special;
        } else if (options.caseInsensitive && next >= 'a' && next <= 'z') {
          id += next.toUpperCase();
        } else {
          return undefined;
        }
      }
      try {
        assertValidKeyId(id);
      } catch {
        return undefined;
      }
      return id;
    },
  };
}

/** The providers' rules, as documented by each (see DESIGN.md "Cloud facts"). */
export const NAME_CODECS = Object.freeze({
  /** Azure Key Vault key names: `[0-9a-zA-Z-]{1,127}`, compared without case. */
  azureKeyVault: createNameCodec({ allowed: /[A-Za-z0-9-]/, escape: '-', caseInsensitive: true, maxLength: 127 }),
  /** Cloud KMS CryptoKey ids: `[a-zA-Z0-9_-]{1,63}`. */
  gcpCryptoKey: createNameCodec({ allowed: /[A-Za-z0-9_-]/, escape: '_', maxLength: 63 }),
  /** AWS KMS alias names after `alias/`: `[a-zA-Z0-9/_-]`, 256 characters in all. */
  awsAlias: createNameCodec({ allowed: /[A-Za-z0-9/_-]/, escape: '_', maxLength: 250 }),
});
