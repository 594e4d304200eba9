import { algorithmInfo, isKeyAlgorithm } from '@olocus/hsm-core';

/**
 * Reads an algorithm name — a core KeyAlgorithm, or whatever another source wrote
 * ("RSA_1024", "ECDSA_secp256k1", "ES256K", "sha1WithRSAEncryption", "ML-DSA-65", "AES-256") —
 * into the facts the rules compare: family, size, curve, padding, hash, security strength
 * (SP 800-57 Part 1 Table 2) and the standard that specifies it.
 */
export interface AlgorithmFacts {
  name: string;
  family: 'RSA' | 'ECDSA' | 'EdDSA' | 'ML-DSA' | 'SLH-DSA' | 'AES' | 'HMAC' | 'unknown';
  /** True for core KeyAlgorithms and names whose family and size were recognised. */
  recognised: boolean;
  modulusBits?: number;
  /** 'P-256' etc. for the NIST curves; other curve names as written ('secp256k1', 'brainpoolP256r1'); undefined when not found. */
  curve?: string;
  padding?: 'PKCS1v15' | 'PSS' | 'OAEP';
  hash?: 'SHA-1' | 'SHA-224' | 'SHA-256' | 'SHA-384' | 'SHA-512';
  /** Key size in bits (RSA modulus, curve order size, AES key). */
  sizeBits?: number;
  securityBits?: number;
  /** The standard that specifies the algorithm (Common Criteria FCS_CKM.1 / FCS_COP.1). */
  standard?: string;
  /** Broken by a cryptographically relevant quantum computer (RSA, ECDSA, EdDSA). */
  quantumVulnerable: boolean;
}

const CURVE_BITS: Record<string, number> = { 'P-192': 192, 'P-224': 224, 'P-256': 256, 'P-384': 384, 'P-521': 521, secp256k1: 256 };

export function rsaSecurityBits(bits: number): number {
  if (bits >= 15360) return 256;
  if (bits >= 7680) return 192;
  if (bits >= 4096) return 152;
  if (bits >= 3072) return 128;
  if (bits >= 2048) return 112;
  if (bits >= 1024) return 80;
  return 0;
}

function curveOf(name: string): string | undefined {
  const n = name.toLowerCase();
  if (/secp256k1|es256k/.test(n)) return 'secp256k1';
  const brainpool = /brainpoolp(\d{3})[rt]1/.exec(n);
  if (brainpool) return `brainpoolP${brainpool[1]}r1`;
  if (/secp192r1|prime192v1/.test(n)) return 'P-192';
  if (/secp224r1/.test(n)) return 'P-224';
  if (/secp256r1|prime256v1/.test(n)) return 'P-256';
  if (/secp384r1/.test(n)) return 'P-384';
  if (/secp521r1/.test(n)) return 'P-521';
  const p = /(?:^|[^a-z0-9])p[-_]?(192|224|256|384|521)(?![0-9])|(?:ecdsa|ec)[-_]?p?(192|224|256|384|521)(?![0-9])/.exec(n);
  if (p) return `P-${p[1] ?? p[2]}`;
  const es = /^es(256|384|512)$/.exec(n);
  if (es) return es[1] === '512' ? 'P-521' : `P-${es[1]}`;
  return undefined;
}

function hashOf(name: string): AlgorithmFacts['hash'] {
  const m = /sha-?(1|224|256|384|512)(?![0-9])/i.exec(name);
  if (!m) return undefined;
  return `SHA-${m[1]}` as AlgorithmFacts['hash'];
}

/** True when a name (or a free-text value) names SHA-1 (ALG-SHA1). */
export function mentionsSha1(value: string): boolean {
  return /sha-?1(?![0-9])/i.test(value);
}

export function algorithmFacts(name: string): AlgorithmFacts {
  if (isKeyAlgorithm(name)) {
    const info = algorithmInfo(name);
    if (info.family === 'RSA') {
      return {
        name,
        family: 'RSA',
        recognised: true,
        modulusBits: info.modulusBits!,
        sizeBits: info.modulusBits!,
        padding: info.padding!,
        hash: info.hash!,
        securityBits: info.securityBits,
        standard: `FIPS 186-5 §5 (RSA ${info.padding === 'PSS' ? 'RSASSA-PSS' : 'RSASSA-PKCS1-v1_5'}, RFC 8017)`,
        quantumVulnerable: true,
      };
    }
    if (info.family === 'ECDSA') {
      return {
        name,
        family: 'ECDSA',
        recognised: true,
        curve: info.curve!,
        sizeBits: CURVE_BITS[info.curve!]!,
        hash: info.hash!,
        securityBits: info.securityBits,
        standard: `FIPS 186-5 §6 (ECDSA), SP 800-186 (${info.curve})`,
        quantumVulnerable: true,
      };
    }
    return { name, family: 'EdDSA', recognised: true, curve: 'Ed25519', sizeBits: 255, securityBits: 128, standard: 'FIPS 186-5 §7 (EdDSA, Ed25519; RFC 8032)', quantumVulnerable: true };
  }
  const lower = name.toLowerCase();
  const hash = hashOf(name);
  const withoutHash = name.replace(/sha-?(1|224|256|384|512)(?![0-9])/gi, '');
  if (/ml-?dsa/.test(lower)) {
    const m = /(44|65|87)/.exec(withoutHash);
    const securityBits = m ? ({ '44': 128, '65': 192, '87': 256 } as Record<string, number>)[m[1]!] : undefined;
    return { name, family: 'ML-DSA', recognised: m !== null, ...(securityBits ? { securityBits } : {}), standard: 'FIPS 204 (ML-DSA)', quantumVulnerable: false };
  }
  if (/slh-?dsa|sphincs/.test(lower)) {
    const m = /(128|192|256)/.exec(withoutHash);
    return { name, family: 'SLH-DSA', recognised: m !== null, ...(m ? { securityBits: Number(m[1]) } : {}), standard: 'FIPS 205 (SLH-DSA)', quantumVulnerable: false };
  }
  if (/^ed25519|^ed448|eddsa/.test(lower)) {
    const ed448 = lower.includes('448');
    return {
      name,
      family: 'EdDSA',
      recognised: ed448 || lower.includes('25519'),
      curve: ed448 ? 'Ed448' : lower.includes('25519') ? 'Ed25519' : undefined,
      ...(ed448 ? { sizeBits: 448, securityBits: 224 } : lower.includes('25519') ? { sizeBits: 255, securityBits: 128 } : {}),
      standard: 'FIPS 186-5 §7 (EdDSA; RFC 8032)',
      quantumVulnerable: true,
    } as AlgorithmFacts;
  }
  if (/aes/.test(lower)) {
    const m = /(128|192|256)/.exec(withoutHash);
    return { name, family: 'AES', recognised: m !== null, ...(m ? { sizeBits: Number(m[1]), securityBits: Number(m[1]) } : {}), standard: 'FIPS 197 (AES), SP 800-38F (key wrap)', quantumVulnerable: false };
  }
  if (/hmac/.test(lower)) {
    return { name, family: 'HMAC', recognised: hash !== undefined, ...(hash ? { hash } : {}), standard: 'FIPS 198-1 (HMAC)', quantumVulnerable: false };
  }
  if (/rsa/.test(lower)) {
    const m = /(\d{3,5})/.exec(withoutHash);
    const bits = m ? Number(m[1]) : undefined;
    const padding = /pss/.test(lower) ? 'PSS' : /oaep/.test(lower) ? 'OAEP' : /pkcs1|v1[._]?5|withrsa|rsassa/.test(lower) || bits !== undefined ? 'PKCS1v15' : undefined;
    return {
      name,
      family: 'RSA',
      recognised: bits !== undefined,
      ...(bits !== undefined ? { modulusBits: bits, sizeBits: bits, securityBits: rsaSecurityBits(bits) } : {}),
      ...(padding ? { padding } : {}),
      ...(hash ? { hash } : {}),
      standard: padding === 'OAEP' ? 'SP 800-56B Rev 2 (RSA-OAEP key transport)' : 'FIPS 186-5 §5 (RSA)',
      quantumVulnerable: true,
    } as AlgorithmFacts;
  }
  if (/ecdsa|^ec[-_]|^es\d|secp|prime\d|brainpool|^p-?\d{3}|ecc/.test(lower)) {
    const curve = curveOf(name);
    const sizeBits = curve ? (CURVE_BITS[curve] ?? (/(\d{3})/.exec(curve) ? Number(/(\d{3})/.exec(curve)![1]) : undefined)) : undefined;
    return {
      name,
      family: 'ECDSA',
      recognised: curve !== undefined,
      ...(curve ? { curve } : {}),
      ...(sizeBits ? { sizeBits, securityBits: Math.min(256, Math.floor(sizeBits / 2)) } : {}),
      ...(hash ? { hash } : {}),
      standard: curve && /^P-/.test(curve) ? `FIPS 186-5 §6 (ECDSA), SP 800-186 (${curve})` : 'ECDSA on a curve outside SP 800-186',
      quantumVulnerable: true,
    } as AlgorithmFacts;
  }
  return { name, family: 'unknown', recognised: false, ...(hash ? { hash } : {}), quantumVulnerable: false };
}
