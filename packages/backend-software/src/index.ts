export { SoftwareBackend, SOFTWARE_BACKEND_TYPE, REF_PREFIX, type SoftwareBackendInit } from './backend.js';
export { backendFactories, softwareBackendFactory } from './factory.js';
export {
  softwareOptionsSchema,
  scryptOptionsSchema,
  parseSoftwareOptions,
  DEFAULT_PASSPHRASE_ENV,
  MASTER_KEY_BYTES,
  type SoftwareBackendOptions,
  type SoftwareBackendOptionsInput,
} from './options.js';
export { STORE_FILE, KEY_FILE_SUFFIX, FORMAT_VERSION, keyFileName, canonicalJson } from './format.js';
