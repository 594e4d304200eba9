export { AzureKeyVaultBackend, AZURE_BACKEND_TYPE, AZURE_BACKUP_FORMAT, AZURE_RESTORE_SCOPE, SUPPORTED_ALGORITHMS, TAGS, type AzureBackendInit } from './backend.js';
export { backendFactories, azureBackendFactory } from './factory.js';
export { azureOptionsSchema, parseAzureOptions, isManagedHsmUrl, SERVICE_VERSIONS, type AzureBackendOptions, type AzureBackendOptionsInput } from './options.js';
export { mapAzureError, type FailureContext } from './errors.js';
