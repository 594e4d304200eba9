import { algorithmInfo, type KeyAlgorithm, type KeyUsage } from '@olocus/hsm-core';
import type { Attribute } from 'pkcs11js';
import {
  CKA_ALLOWED_MECHANISMS,
  CKA_CLASS,
  CKA_DECRYPT,
  CKA_DERIVE,
  CKA_EC_PARAMS,
  CKA_ENCRYPT,
  CKA_END_DATE,
  CKA_EXTRACTABLE,
  CKA_ID,
  CKA_KEY_TYPE,
  CKA_LABEL,
  CKA_MODIFIABLE,
  CKA_MODULUS_BITS,
  CKA_PRIVATE,
  CKA_PUBLIC_EXPONENT,
  CKA_SENSITIVE,
  CKA_SIGN,
  CKA_SIGN_RECOVER,
  CKA_START_DATE,
  CKA_TOKEN,
  CKA_UNWRAP,
  CKA_VERIFY,
  CKA_VERIFY_RECOVER,
  CKA_WRAP,
  CKA_WRAP_WITH_TRUSTED,
  CKK_EC,
  CKK_EC_EDWARDS,
  CKK_RSA,
  CKM_EC_EDWARDS_KEY_PAIR_GEN,
  CKM_EC_KEY_PAIR_GEN,
  CKM_RSA_PKCS_KEY_PAIR_GEN,
  CKM_RSA_PKCS_PSS,
  CKM_SHA256_RSA_PKCS_PSS,
  CKO_PRIVATE_KEY,
  CKO_PUBLIC_KEY,
} from './constants.js';
import { EC_PARAMS, ED25519_PARAMS_OID, ED25519_PARAMS_PRINTABLE, ulongArray } from './keys.js';
import { ckDate } from './metadata.js';
import type { VendorProfile } from './vendors.js';

export interface KeyPairTemplates {
  mechanism: { mechanism: number };
  publicTemplate: Attribute[];
  privateTemplate: Attribute[];
}

/**
 * One key, one purpose: every capability other than signing/verifying is set false explicitly,
 * because token defaults differ (SoftHSM defaults CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE,
 * CKA_SIGN_RECOVER, CKA_ENCRYPT, CKA_WRAP, CKA_VERIFY_RECOVER and CKA_MODIFIABLE to true), and
 * neither half can be modified afterwards (so CKA_END_DATE cannot be moved).
 *
 * `backup`: the private key is CKA_EXTRACTABLE, but only together with CKA_WRAP_WITH_TRUSTED, so
 * the token lets it out only wrapped under a CKA_TRUSTED key (which only the SO can mark). Without
 * it the key is never extractable, and PKCS#11 cannot make it extractable later (CKA_EXTRACTABLE
 * may only go from true to false): backup is decided at generation.
 */
export function keyPairTemplates(
  vendor: VendorProfile,
  spec: { algorithm: KeyAlgorithm; id: string; ckaId: Buffer; usages: readonly KeyUsage[]; createdAt: Date; expiresAt: Date | undefined; backup?: boolean | undefined },
): KeyPairTemplates {
  const info = algorithmInfo(spec.algorithm);
  const common: Attribute[] = [
    { type: CKA_TOKEN, value: true },
    { type: CKA_ID, value: spec.ckaId },
    { type: CKA_LABEL, value: spec.id },
    { type: CKA_MODIFIABLE, value: false },
  ];
  if (vendor.keyDates) {
    common.push({ type: CKA_START_DATE, value: ckDate(spec.createdAt) });
    if (spec.expiresAt) common.push({ type: CKA_END_DATE, value: ckDate(spec.expiresAt) });
  }
  const keyType = info.family === 'RSA' ? CKK_RSA : info.family === 'ECDSA' ? CKK_EC : CKK_EC_EDWARDS;
  const publicTemplate: Attribute[] = [
    { type: CKA_CLASS, value: CKO_PUBLIC_KEY },
    { type: CKA_KEY_TYPE, value: keyType },
    ...common,
    { type: CKA_PRIVATE, value: false },
    { type: CKA_VERIFY, value: spec.usages.includes('verify') },
    { type: CKA_ENCRYPT, value: false },
    { type: CKA_WRAP, value: false },
    { type: CKA_VERIFY_RECOVER, value: false },
  ];
  const privateTemplate: Attribute[] = [
    { type: CKA_CLASS, value: CKO_PRIVATE_KEY },
    { type: CKA_KEY_TYPE, value: keyType },
    ...common,
    { type: CKA_PRIVATE, value: true },
    { type: CKA_SENSITIVE, value: true },
    ...(spec.backup
      ? [
          { type: CKA_EXTRACTABLE, value: true },
          { type: CKA_WRAP_WITH_TRUSTED, value: true },
        ]
      : [{ type: CKA_EXTRACTABLE, value: false }]),
    { type: CKA_SIGN, value: spec.usages.includes('sign') },
    { type: CKA_DECRYPT, value: false },
    { type: CKA_UNWRAP, value: false },
    { type: CKA_DERIVE, value: false },
    { type: CKA_SIGN_RECOVER, value: false },
  ];
  let mechanism: number;
  if (info.family === 'RSA') {
    mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
    publicTemplate.push({ type: CKA_MODULUS_BITS, value: info.modulusBits! }, { type: CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) });
    // The durable PSS marker, enforced by the token: this key signs with PSS only.
    if (info.padding === 'PSS') privateTemplate.push({ type: CKA_ALLOWED_MECHANISMS, value: ulongArray([CKM_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS]) });
  } else if (info.family === 'ECDSA') {
    mechanism = CKM_EC_KEY_PAIR_GEN;
    publicTemplate.push({ type: CKA_EC_PARAMS, value: Buffer.from(EC_PARAMS[info.curve as 'P-256' | 'P-384' | 'P-521'], 'hex') });
  } else {
    mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
    publicTemplate.push({ type: CKA_EC_PARAMS, value: Buffer.from(vendor.edwardsParams === 'oid' ? ED25519_PARAMS_OID : ED25519_PARAMS_PRINTABLE, 'hex') });
  }
  return { mechanism: { mechanism }, publicTemplate, privateTemplate };
}
