export { backendFactories, pkcs11BackendFactory } from './factory.js';
export { Pkcs11Backend, slotNumberOf, type Pkcs11BackendInit, type Pkcs11Metrics } from './backend.js';
export type { Pkcs11Session } from './objects.js';
export { pkcs11OptionsSchema, sessionPoolSchema, attestationSchema, parsePkcs11Options, type FipsAttestation, type Pkcs11Options, type Pkcs11OptionsInput, type SessionPoolOptions } from './options.js';
export { fipsStatusOf, profileMismatch, type ModuleIdentity } from './fips.js';
export { vendorProfiles, getVendorProfile, VENDOR_NAMES, type VendorName, type VendorProfile } from './vendors.js';
export { parsePkcs11Uri, formatPkcs11Uri, type Pkcs11Uri } from './uri.js';
export { classifyReturnValue, classificationTable, returnValueName, type FailureClass } from './classify.js';
export { ckaIdFor } from './keys.js';
