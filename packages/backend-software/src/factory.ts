import type { BackendContext, BackendFactory } from '@olocus/hsm-core';
import { SOFTWARE_BACKEND_TYPE, SoftwareBackend } from './backend.js';
import { parseSoftwareOptions, type SoftwareBackendOptions } from './options.js';

/** The `software` backend factory: what core's BackendRegistry loads from this package. */
export const softwareBackendFactory: BackendFactory<SoftwareBackendOptions> = {
  type: SOFTWARE_BACKEND_TYPE,
  parseOptions: (raw: unknown) => parseSoftwareOptions(raw),
  create: (options: SoftwareBackendOptions, context: BackendContext) => new SoftwareBackend(options, { context }),
};

/** Read by core's registry: one factory per backend `type` this package provides. */
export const backendFactories: BackendFactory[] = [softwareBackendFactory as BackendFactory];
