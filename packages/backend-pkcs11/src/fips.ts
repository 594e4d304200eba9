import type { FipsStatus } from '@olocus/hsm-core';
import type { AsyncPkcs11 } from './module-thread.js';
import type { FipsAttestation } from './options.js';
import type { VendorProfile } from './vendors.js';

/** What the module and token say about themselves (C_GetInfo, C_GetTokenInfo). */
export interface ModuleIdentity {
  tokenManufacturer: string;
  tokenModel: string;
  firmwareVersion: string;
  hardwareVersion: string;
  libraryManufacturer: string;
  libraryDescription: string;
}

const trim = (text: string) => text.replace(/[\0 ]+$/, '');
const version = (v: { major: number; minor: number }) => `${v.major}.${v.minor}`;

export async function measureIdentity(p11: AsyncPkcs11, slot: Buffer): Promise<ModuleIdentity> {
  const token = await p11.C_GetTokenInfo(slot);
  const module = await p11.C_GetInfo();
  return {
    tokenManufacturer: trim(token.manufacturerID),
    tokenModel: trim(token.model),
    firmwareVersion: version(token.firmwareVersion),
    hardwareVersion: version(token.hardwareVersion),
    libraryManufacturer: trim(module.manufacturerID),
    libraryDescription: trim(module.libraryDescription),
  };
}

function describe(identity: ModuleIdentity): string {
  return `token manufacturer "${identity.tokenManufacturer}", model "${identity.tokenModel}", firmware ${identity.firmwareVersion}, library "${identity.libraryManufacturer}"`;
}

/** Why the profile does not describe the device that answered, or undefined when it does. */
export function profileMismatch(vendor: VendorProfile, identity: ModuleIdentity): string | undefined {
  const manufacturer = vendor.identity.manufacturer.test(identity.tokenManufacturer) || vendor.identity.manufacturer.test(identity.libraryManufacturer);
  const model = !vendor.identity.model || vendor.identity.model.test(identity.tokenModel);
  if (manufacturer && model) return undefined;
  return `the vendor profile says ${vendor.name} (${vendor.displayName}) but the device reports ${describe(identity)}`;
}

/**
 * The FIPS status from measurement and the operator's attestation, never from the profile alone:
 * - the device does not match the profile → 'unknown', level 0, evidence 'none', a finding naming the mismatch
 *   (an attestation for a device that is not the one configured is not believed either);
 * - SoftHSM, measured → 'none' (a software token has no validation; an attestation is a finding);
 * - a hardware profile that matches: PKCS#11 cannot read a validation, approved mode or level, so
 *   without an attestation the status is 'unknown'; with one it is the attestation, evidence 'attested'.
 */
export function fipsStatusOf(vendor: VendorProfile, identity: ModuleIdentity, attestation: FipsAttestation | undefined): FipsStatus {
  const measured = `Measured: ${describe(identity)}.`;
  const mismatch = profileMismatch(vendor, identity);
  if (mismatch) {
    const findings = [mismatch];
    if (attestation) findings.push('the attestation section was not applied because the device is not the one the profile names');
    return { standard: 'unknown', level: 0, approvedMode: false, evidence: 'none', findings, notes: `${measured} The configured vendor profile does not match this device, so no FIPS claim can be made; fix "vendor" or "libraryPath".` };
  }
  if (vendor.documentedFips.standard === 'none') {
    const status: FipsStatus = { standard: 'none', level: 0, approvedMode: false, evidence: 'none', notes: `${measured} ${vendor.documentedFips.notes}` };
    if (attestation) status.findings = [`an attestation claims ${attestation.standard} level ${attestation.level}, but the device is ${vendor.displayName}, which has no FIPS 140 validation; the attestation was not applied`];
    return status;
  }
  if (!attestation) {
    return {
      standard: 'unknown',
      level: 0,
      approvedMode: false,
      evidence: 'none',
      findings: [`${vendor.displayName} identified, but PKCS#11 cannot read a FIPS validation or approved mode from the device and no attestation section is configured`],
      notes: `${measured} ${vendor.documentedFips.notes}`,
    };
  }
  const status: FipsStatus = {
    standard: attestation.standard,
    level: attestation.level,
    approvedMode: attestation.approvedMode,
    evidence: 'attested',
    notes: `${measured} Standard, level${attestation.certificate ? ', certificate' : ''} and approved mode are the operator's attestation${attestation.statedBy ? ` (${attestation.statedBy})` : ''}, not read from the device.`,
  };
  if (attestation.certificate !== undefined) status.certificate = attestation.certificate;
  status.certificateStatus = attestation.certificateStatus ?? 'unknown';
  if (attestation.eddsaValidated !== undefined) status.eddsaValidated = attestation.eddsaValidated;
  return status;
}
