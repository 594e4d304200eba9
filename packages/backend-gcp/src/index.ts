export { GcpKmsBackend, GCP_BACKEND_TYPE, GCP_DURABILITY, LABELS, checkSignResponse, checkPublicKey, type GcpKmsBackendInit } from './backend.js';
export { backendFactories, gcpKmsBackendFactory } from './factory.js';
export {
  gcpOptionsSchema,
  parseGcpOptions,
  GCP_ALGORITHMS,
  DESTROY_SCHEDULED_LIMITS,
  type GcpKmsBackendOptions,
  type GcpKmsBackendOptionsInput,
} from './options.js';
export { GCP_ALGORITHM_OF, contractAlgorithm, gcpAlgorithm, ED25519_MAX_MESSAGE_BYTES } from './algorithms.js';
export { crc32c } from './crc32c.js';
export { mapGcpError, adcSearchDescription } from './errors.js';
