import type { BackendContext, BackendFactory } from '@olocus/hsm-core';
import { AZURE_BACKEND_TYPE, AzureKeyVaultBackend } from './backend.js';
import { parseAzureOptions, type AzureBackendOptions } from './options.js';

/** The `azure-keyvault` factory: what core's BackendRegistry loads from this package. */
export const azureBackendFactory: BackendFactory<AzureBackendOptions> = {
  type: AZURE_BACKEND_TYPE,
  parseOptions: (raw: unknown) => parseAzureOptions(raw),
  create: (options: AzureBackendOptions, context: BackendContext) => new AzureKeyVaultBackend(options, { context }),
};

/** Read by core's registry: one factory per backend `type` this package provides. */
export const backendFactories: BackendFactory[] = [azureBackendFactory as BackendFactory];
