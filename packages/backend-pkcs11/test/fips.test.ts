/**
 * FIPS status from measurement: the device's own C_GetInfo / C_GetTokenInfo must match the vendor
 * profile, and validation facts come only from the operator's attestation (evidence 'attested').
 */
import { describe, expect, it } from 'vitest';
import { HsmError } from '@olocus/hsm-core';
import { Pkcs11Backend, fipsStatusOf, pkcs11BackendFactory, vendorProfiles, type ModuleIdentity } from '../src/index.js';
import { SOFTHSM_LIB, createToken } from '@olocus/hsm-test-support';

const token = createToken('fips');
const attestation = { standard: 'FIPS 140-2', level: 3, certificate: '4962', certificateStatus: 'active', approvedMode: true, statedBy: 'security team' } as const;

async function statusOf(options: Record<string, unknown>) {
  const backend = new Pkcs11Backend({ libraryPath: SOFTHSM_LIB, tokenLabel: token.label, signThreads: 0, ...options }, { pin: token.pin });
  await backend.initialize();
  try {
    return { fips: await backend.fipsStatus(), capabilities: await backend.capabilities(), info: await backend.info() };
  } finally {
    await backend.close();
  }
}

describe('on SoftHSM (measured)', () => {
  it('the softhsm profile reports standard none, level 0, nothing attested, no findings', async () => {
    const { fips, capabilities } = await statusOf({});
    expect(fips).toMatchObject({ standard: 'none', level: 0, approvedMode: false, evidence: 'none' });
    expect(fips.findings).toBeUndefined();
    expect(fips.notes).toContain('SoftHSM project');
    expect(capabilities.hardwareBacked).toBe(false);
  });

  it("vendor 'luna' on a SoftHSM token: unknown, level 0, evidence none, a finding naming both, and no hardware backing", async () => {
    const { fips, capabilities } = await statusOf({ vendor: 'luna' });
    expect(fips).toMatchObject({ standard: 'unknown', level: 0, approvedMode: false, evidence: 'none' });
    expect(fips.certificate).toBeUndefined();
    expect(fips.findings).toHaveLength(1);
    expect(fips.findings![0]).toContain('luna');
    expect(fips.findings![0]).toContain('SoftHSM project');
    expect(capabilities.hardwareBacked).toBe(false);
  });

  it('an attestation does not make a mismatched device, or SoftHSM, FIPS validated', async () => {
    const luna = await statusOf({ vendor: 'luna', attestation });
    expect(luna.fips).toMatchObject({ standard: 'unknown', level: 0, approvedMode: false, evidence: 'none' });
    expect(luna.fips.findings!.join(' ')).toContain('attestation');
    const soft = await statusOf({ attestation });
    expect(soft.fips).toMatchObject({ standard: 'none', level: 0, approvedMode: false, evidence: 'none' });
    expect(soft.fips.findings!.join(' ')).toContain('attestation was not applied');
  });
});

describe('a device that matches its hardware profile (identity as a Luna would report it)', () => {
  const luna: ModuleIdentity = {
    tokenManufacturer: 'Safenet, Inc.',
    tokenModel: 'LunaSA 7.8.4',
    firmwareVersion: '7.8',
    hardwareVersion: '0.0',
    libraryManufacturer: 'Safenet, Inc.',
    libraryDescription: 'Chrystoki',
  };

  it('without an attestation: unknown (PKCS#11 cannot read a validation), with a finding', () => {
    const status = fipsStatusOf(vendorProfiles.luna, luna, undefined);
    expect(status).toMatchObject({ standard: 'unknown', level: 0, approvedMode: false, evidence: 'none' });
    expect(status.findings![0]).toContain('no attestation');
  });

  it("with an attestation: the attested facts, evidence 'attested' (never 'measured')", () => {
    const status = fipsStatusOf(vendorProfiles.luna, luna, attestation);
    expect(status).toMatchObject({ standard: 'FIPS 140-2', level: 3, approvedMode: true, evidence: 'attested', certificate: '4962', certificateStatus: 'active' });
    expect(status.notes).toContain('attestation');
    expect(status.notes).toContain('security team');
  });
});

describe('the attestation section', () => {
  it.each([
    [{ standard: 'FIPS 140-2', level: 5, approvedMode: true }, 'attestation.level'],
    [{ standard: 'FIPS 140', level: 3, approvedMode: true }, 'attestation.standard'],
    [{ standard: 'FIPS 140-3', level: 3 }, 'attestation.approvedMode'],
    [{ standard: 'FIPS 140-3', level: 3, approvedMode: false, certificate: 'see the audit report' }, 'attestation.certificate'],
  ])('rejects %j naming %s', (raw, field) => {
    let caught: unknown;
    try {
      pkcs11BackendFactory.parseOptions({ tokenLabel: 't', attestation: raw });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(HsmError);
    expect((caught as HsmError).code).toBe('InvalidConfiguration');
    expect((caught as HsmError).message).toContain(field);
  });
});
