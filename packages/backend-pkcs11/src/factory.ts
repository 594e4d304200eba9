import type { BackendContext, BackendFactory } from '@olocus/hsm-core';
import { Pkcs11Backend } from './backend.js';
import { parsePkcs11Options, type Pkcs11Options } from './options.js';

/** The `pkcs11` backend type, as core's BackendRegistry loads it. */
export const pkcs11BackendFactory: BackendFactory<Pkcs11Options> = {
  type: 'pkcs11',
  parseOptions: (raw: unknown) => parsePkcs11Options(raw),
  create: (options: Pkcs11Options, context: BackendContext) => new Pkcs11Backend(options, { readSecret: context.readSecret }),
};

export const backendFactories: readonly BackendFactory[] = [pkcs11BackendFactory as BackendFactory];
