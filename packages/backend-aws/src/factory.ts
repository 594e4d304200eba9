import type { BackendContext, BackendFactory } from '@olocus/hsm-core';
import { AwsKmsBackend } from './kms-backend.js';
import { parseAwsKmsOptions, type AwsKmsOptions } from './kms-options.js';
import { AwsCloudHsmBackend } from './cloudhsm-backend.js';
import { parseAwsCloudHsmOptions, type AwsCloudHsmOptions } from './cloudhsm-options.js';

export const awsKmsBackendFactory: BackendFactory<AwsKmsOptions> = {
  type: 'aws-kms',
  parseOptions: (raw: unknown) => parseAwsKmsOptions(raw),
  create: (options: AwsKmsOptions) => new AwsKmsBackend(options),
};

export const awsCloudHsmBackendFactory: BackendFactory<AwsCloudHsmOptions> = {
  type: 'aws-cloudhsm',
  parseOptions: (raw: unknown) => parseAwsCloudHsmOptions(raw),
  create: (options: AwsCloudHsmOptions, context: BackendContext) => new AwsCloudHsmBackend(options, { readSecret: context.readSecret }),
};

/** Read by core's registry: one factory per backend `type` this package provides. */
export const backendFactories: BackendFactory[] = [awsKmsBackendFactory as BackendFactory, awsCloudHsmBackendFactory as BackendFactory];
