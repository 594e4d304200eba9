import type { BackendFactory } from '@olocus/hsm-core';
import { AwsKmsBackend } from './kms-backend.js';
import { parseAwsKmsOptions, type AwsKmsOptions } from './kms-options.js';

export const awsKmsBackendFactory: BackendFactory<AwsKmsOptions> = {
  type: 'aws-kms',
  parseOptions: (raw: unknown) => parseAwsKmsOptions(raw),
  create: (options: AwsKmsOptions) => new AwsKmsBackend(options),
};

/** Read by core's registry: one factory per backend `type` this package provides. */
export const backendFactories: BackendFactory[] = [awsKmsBackendFactory as BackendFactory];
