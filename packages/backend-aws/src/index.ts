export { backendFactories, awsKmsBackendFactory, awsCloudHsmBackendFactory } from './factory.js';
export { AwsCloudHsmBackend, type AwsCloudHsmBackendInit, type ClusterView, type ClusterBackup } from './cloudhsm-backend.js';
export { awsCloudHsmOptionsSchema, parseAwsCloudHsmOptions, type AwsCloudHsmOptions, type AwsCloudHsmOptionsInput } from './cloudhsm-options.js';
export { AwsKmsBackend, KMS_DURABILITY, KMS_RAW_MESSAGE_LIMIT, TAG_ID, TAG_ALGORITHM, TAG_EXPIRES, TAG_LABEL_PREFIX, type AwsKmsBackendInit } from './kms-backend.js';
export { awsKmsOptionsSchema, awsRetrySchema, parseAwsKmsOptions, KMS_ALGORITHMS, type AwsKmsOptions, type AwsKmsOptionsInput } from './kms-options.js';
export { mapAwsError, retryClassOf, credentialSources, type AwsErrorContext, type RetryClass } from './errors.js';
export { Semaphore } from './semaphore.js';
