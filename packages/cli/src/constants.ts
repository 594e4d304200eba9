/** Names shared by the command tree and the config code; no imports, so start-up stays light. */
export const DEFAULT_DIR = '.olocus';
export const CONFIG_FILE = 'config.json';
export const CONFIG_ENV = 'OLOCUS_HSM_CONFIG';
export const PASSPHRASE_ENV = 'OLOCUS_HSM_PASSPHRASE';
export const PIN_ENV = 'OLOCUS_HSM_PIN';
export const INIT_BACKENDS = ['software', 'pkcs11'] as const;
export const PKCS11_VENDORS = ['softhsm', 'luna', 'nshield', 'utimaco', 'cloudhsm', 'yubihsm'] as const;
export const SIGNATURE_FORMATS = ['der', 'raw'] as const;
export const ENCODINGS = ['binary', 'base64'] as const;
export const PUBLIC_KEY_FORMATS = ['pem', 'der', 'jwk'] as const;
