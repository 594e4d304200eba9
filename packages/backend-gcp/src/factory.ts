import type { BackendContext, BackendFactory } from '@olocus/hsm-core';
import { GCP_BACKEND_TYPE, GcpKmsBackend } from './backend.js';
import { parseGcpOptions, type GcpKmsBackendOptions } from './options.js';

/** The `gcp-kms` backend factory: what core's BackendRegistry loads from this package. */
export const gcpKmsBackendFactory: BackendFactory<GcpKmsBackendOptions> = {
  type: GCP_BACKEND_TYPE,
  parseOptions: (raw: unknown) => parseGcpOptions(raw),
  create: (options: GcpKmsBackendOptions, context: BackendContext) => new GcpKmsBackend(options, { env: context.env }),
};

/** Read by core's registry: one factory per backend `type` this package provides. */
export const backendFactories: BackendFactory[] = [gcpKmsBackendFactory as BackendFactory];
