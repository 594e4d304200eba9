import type { Attribute } from 'pkcs11js';
import type { AsyncPkcs11 } from './module-thread.js';
import { classifyReturnValue, returnValueOf } from './classify.js';

/** A pooled PKCS#11 session. `generation` is the module generation it was opened in. */
export interface Pkcs11Session {
  readonly handle: Buffer;
  readonly generation: number;
}

/** C_FindObjectsInit / C_FindObjects(max) / C_FindObjectsFinal (one round trip on a remote module). */
export function find(p11: AsyncPkcs11, session: Pkcs11Session, template: Attribute[], max: number): Promise<Buffer[]> {
  return p11.find(session.handle, template, max);
}

/** Every object matching the template, in batches of 100. */
export function findAll(p11: AsyncPkcs11, session: Pkcs11Session, template: Attribute[]): Promise<Buffer[]> {
  return p11.find(session.handle, template, 0);
}

/** Reads one attribute that may be absent or unreadable (empty dates trip pkcs11js, some modules lack the type). */
export async function optionalAttribute<T>(p11: AsyncPkcs11, session: Buffer, object: Buffer, type: number, read: (value: Buffer) => T): Promise<T | undefined> {
  try {
    const value = (await p11.C_GetAttributeValue(session, object, [{ type }]))[0]?.value;
    return value && value.length > 0 ? read(value) : undefined;
  } catch (error) {
    const cls = classifyReturnValue(error);
    if (returnValueOf(error) !== undefined && cls !== 'caller') throw error; // session/device problems are real
    return undefined;
  }
}
