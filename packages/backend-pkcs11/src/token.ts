/**
 * Module start-up: which PKCS#11 library to load, which slot holds the configured token, and
 * which contract algorithms that token really does (mechanism probe).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { HsmError, isHsmError, KEY_ALGORITHMS, algorithmInfo, type KeyAlgorithm } from '@olocus/hsm-core';
import type { AsyncPkcs11 } from './module-thread.js';
import { CKF_GENERATE_KEY_PAIR, CKF_SIGN, CKF_TOKEN_INITIALIZED, CKF_TOKEN_PRESENT, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN } from './constants.js';
import { signPlanFor, type SignPlan } from './keys.js';
import type { Pkcs11Options } from './options.js';
import type { VendorProfile } from './vendors.js';

/** The token a backend instance works with. */
export interface SelectedToken {
  slot: Buffer;
  slotNumber: number;
  label: string;
  /** Trimmed; '' when the token reports none. */
  serial: string;
}

const ED25519_BITS = [255, 256];

export function trimLabel(label: string): string {
  return label.replace(/[\0 ]+$/, '');
}

export function slotNumberOf(slot: Buffer): number {
  return slot.length >= 8 ? Number(slot.readBigUInt64LE(0)) : slot.readUInt32LE(0);
}

/**
 * Where to look for the vendor's module: the profile's paths, then the same files under every
 * multiarch directory this machine has (/usr/lib/<triplet>/...), so that a profile written with
 * one architecture's path also finds the module on another.
 */
export function candidateLibraryPaths(vendor: VendorProfile, root = '/'): string[] {
  const listed = vendor.libraryPaths.map((p) => join(root, p));
  let triplets: string[] = [];
  try {
    triplets = readdirSync(join(root, 'usr/lib')).filter((d) => /^[a-z0-9_]+-[a-z0-9_]+-[a-z0-9_]+$/.test(d) && /linux/.test(d));
  } catch {
    // no /usr/lib (macOS with Homebrew, a container without it)
  }
  const multiarch = vendor.libraryPaths.flatMap((p) => {
    const rest = /^\/usr\/lib\/[a-z0-9_]+-[a-z0-9_]+-[a-z0-9_]+\/(.+)$/.exec(p)?.[1];
    return rest ? triplets.map((t) => join(root, 'usr/lib', t, rest)) : [];
  });
  return [...new Set([...listed, ...multiarch])];
}

/** The configured libraryPath, or the first existing candidate path of the vendor profile. */
export function findLibrary(options: Pkcs11Options, vendor: VendorProfile, root = '/'): string {
  if (options.libraryPath) return options.libraryPath;
  const candidates = candidateLibraryPaths(vendor, root);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new HsmError('InitializationFailed', `no PKCS#11 module found for vendor ${vendor.name}; tried ${candidates.join(', ')}; set libraryPath`, {
      details: { field: 'libraryPath', vendor: vendor.name },
    });
  }
  return found;
}

/** Finds the token by slotId and/or tokenLabel; SlotNotFound / TokenLabelMismatch name what was found instead. */
export async function selectToken(p11: AsyncPkcs11, options: Pick<Pkcs11Options, 'slotId' | 'tokenLabel'>): Promise<SelectedToken> {
  const { slotId, tokenLabel } = options;
  const slots = (await p11.C_GetSlotList(false)).map((slot) => ({ slot, id: slotNumberOf(slot) }));
  const tokenOf = async (slot: Buffer) => {
    const slotInfo = await p11.C_GetSlotInfo(slot);
    if (!(slotInfo.flags & CKF_TOKEN_PRESENT)) return undefined;
    const info = await p11.C_GetTokenInfo(slot);
    return { info, label: trimLabel(info.label), initialized: (info.flags & CKF_TOKEN_INITIALIZED) !== 0 };
  };
  const selected = (slot: Buffer, slotNumber: number, label: string, serial: string): SelectedToken => ({ slot, slotNumber, label, serial: trimLabel(serial) });
  if (slotId !== undefined) {
    const found = slots.find((s) => s.id === slotId);
    if (!found) {
      throw new HsmError('SlotNotFound', `slot ${slotId} does not exist; slots: ${slots.map((s) => s.id).join(', ') || '(none)'}`, { details: { field: 'slotId', slotId } });
    }
    const token = await tokenOf(found.slot);
    if (!token) throw new HsmError('SlotNotFound', `slot ${slotId} has no token`, { details: { field: 'slotId', slotId } });
    if (!token.initialized) throw new HsmError('SlotNotFound', `the token in slot ${slotId} is not initialised`, { details: { field: 'slotId', slotId } });
    if (tokenLabel !== undefined && token.label !== tokenLabel) {
      throw new HsmError('TokenLabelMismatch', `slot ${slotId} holds token '${token.label}', but tokenLabel is '${tokenLabel}'`, {
        details: { field: 'tokenLabel', slotId, wanted: tokenLabel, found: token.label },
      });
    }
    return selected(found.slot, found.id, token.label, token.info.serialNumber);
  }
  const tokens: Array<{ slot: Buffer; id: number; token: Awaited<ReturnType<typeof tokenOf>> }> = [];
  for (const s of slots) tokens.push({ ...s, token: await tokenOf(s.slot) });
  const initialized = tokens.filter((s) => s.token?.initialized);
  const match = initialized.find((s) => s.token!.label === tokenLabel);
  if (!match) {
    const labels = initialized.map((s) => `'${s.token!.label}'`);
    throw new HsmError('TokenLabelMismatch', `no token labelled '${tokenLabel}'; tokens found: ${labels.join(', ') || '(none)'}`, {
      details: { field: 'tokenLabel', wanted: tokenLabel, found: labels.join(', ') },
    });
  }
  return selected(match.slot, match.id, match.token!.label, match.token!.info.serialNumber);
}

/**
 * C_GetMechanismList / C_GetMechanismInfo: an algorithm is claimed only if its key-pair generation
 * and a sign mechanism exist with the right flags and key size. Returns the sign plan per algorithm.
 */
export async function probeAlgorithms(p11: AsyncPkcs11, slot: Buffer, vendor: VendorProfile): Promise<Map<KeyAlgorithm, SignPlan>> {
  const list = new Set(await p11.C_GetMechanismList(slot));
  // one round trip per mechanism on a remote module: read the ones that matter up front
  const known = new Map<number, { minKeySize: number; maxKeySize: number; flags: number } | undefined>();
  for (const m of list) {
    try {
      known.set(m, await p11.C_GetMechanismInfo(slot, m));
    } catch (error) {
      if (isHsmError(error, 'Timeout')) throw error;
      known.set(m, undefined);
    }
  }
  const infos = new Map<number, { minKeySize: number; maxKeySize: number; flags: number } | undefined>();
  const info = (m: number) => {
    if (!infos.has(m)) {
      infos.set(m, known.get(m));
    }
    return infos.get(m);
  };
  const fits = (i: { minKeySize: number; maxKeySize: number }, bits: number[]) => (i.minKeySize === 0 && i.maxKeySize === 0) || bits.some((b) => b >= i.minKeySize && b <= i.maxKeySize);
  const can = (m: number, flag: number, bits: number[]) => {
    const i = info(m);
    return !!i && (i.flags & flag) !== 0 && fits(i, bits);
  };
  const plans = new Map<KeyAlgorithm, SignPlan>();
  for (const algorithm of KEY_ALGORITHMS) {
    if (vendor.unsupportedAlgorithms.includes(algorithm)) continue;
    const a = algorithmInfo(algorithm);
    if (a.padding === 'PSS' && !vendor.allowedMechanisms) continue; // no durable PSS marker on this product
    const bits = a.family === 'EdDSA' ? ED25519_BITS : a.family === 'ECDSA' ? [a.curve === 'P-521' ? 521 : a.curve === 'P-384' ? 384 : 256] : [a.modulusBits!];
    const gen = a.family === 'EdDSA' ? CKM_EC_EDWARDS_KEY_PAIR_GEN : a.family === 'ECDSA' ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN;
    if (!can(gen, CKF_GENERATE_KEY_PAIR, bits)) continue;
    const plan = signPlanFor(algorithm, (m) => can(m, CKF_SIGN, bits));
    if (plan) plans.set(algorithm, plan);
  }
  return plans;
}
