import type { ZodError, ZodType, ZodTypeDef } from 'zod';
import { HsmError } from './errors.js';

/**
 * Parses `raw` with a zod schema; a failure becomes HsmError('InvalidConfiguration') whose
 * message names each bad field by its path and says why. Values are not echoed: a config
 * field could hold something secret.
 */
export function parseWithSchema<T>(schema: ZodType<T, ZodTypeDef, unknown>, raw: unknown, where: string): T {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  throw new HsmError('InvalidConfiguration', `invalid ${where}: ${describeZodError(result.error, where)}`, {
    details: { field: fieldPath(result.error.issues[0]?.path ?? [], where) },
  });
}

export function describeZodError(error: ZodError, prefix = ''): string {
  return error.issues
    .map((issue) => `${fieldPath(issue.path, prefix)}: ${issue.message}`)
    .join('; ');
}

function fieldPath(path: readonly (string | number)[], prefix: string): string {
  const joined = path.map((p) => (typeof p === 'number' ? `[${p}]` : p)).join('.').replace(/\.\[/g, '[');
  return joined === '' ? prefix || '(root)' : prefix ? `${prefix}.${joined}` : joined;
}
