import type { Attribute, PKCS11 } from 'pkcs11js';
import { classifyReturnValue, returnValueOf } from './classify.js';

/** A pooled PKCS#11 session. `generation` is the module generation it was opened in. */
export interface Pkcs11Session {
  readonly handle: Buffer;
  readonly generation: number;
}

/** C_FindObjectsInit / C_FindObjects(max) / C_FindObjectsFinal. */
export function find(p11: PKCS11, session: Pkcs11Session, template: Attribute[], max: number): Buffer[] {
  p11.C_FindObjectsInit(session.handle, template);
  try {
    return p11.C_FindObjects(session.handle, max);
  } finally {
    try {
      p11.C_FindObjectsFinal(session.handle);
    } catch {
      // the first error (if any) is the one that matters
    }
  }
}

/** Every object matching the template, in batches of 100. */
export function findAll(p11: PKCS11, session: Pkcs11Session, template: Attribute[]): Buffer[] {
  p11.C_FindObjectsInit(session.handle, template);
  const out: Buffer[] = [];
  try {
    for (;;) {
      const batch = p11.C_FindObjects(session.handle, 100);
      out.push(...batch);
      if (batch.length < 100) break;
    }
  } finally {
    try {
      p11.C_FindObjectsFinal(session.handle);
    } catch {
      // see find()
    }
  }
  return out;
}

/** Reads one attribute that may be absent or unreadable (empty dates trip pkcs11js, some modules lack the type). */
export function optionalAttribute<T>(p11: PKCS11, session: Buffer, object: Buffer, type: number, read: (value: Buffer) => T): T | undefined {
  try {
    const value = p11.C_GetAttributeValue(session, object, [{ type }])[0]?.value;
    return value && value.length > 0 ? read(value) : undefined;
  } catch (error) {
    const cls = classifyReturnValue(error);
    if (returnValueOf(error) !== undefined && cls !== 'caller') throw error; // session/device problems are real
    return undefined;
  }
}
