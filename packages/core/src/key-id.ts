import { HsmError } from './errors.js';

const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/**
 * Key ids become file names, CKA_LABELs and cloud key names, so they are restricted to a set
 * every backend accepts. The message names the offending value (ids are not secret).
 */
export function assertValidKeyId(id: unknown, field = 'id'): asserts id is string {
  if (typeof id !== 'string' || !KEY_ID.test(id)) {
    throw new HsmError(
      'InvalidArgument',
      `${field} ${JSON.stringify(id)} is not a valid key id: use 1-128 letters, digits, '.', '_', '-' or ':', starting with a letter or digit`,
      { details: { field } },
    );
  }
}

export function keyIdOf(key: string | { id: string }): string {
  return typeof key === 'string' ? key : key.id;
}
