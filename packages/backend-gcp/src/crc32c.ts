import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/**
 * CRC32C (Castagnoli) as Cloud KMS computes it for `digestCrc32c`, `signatureCrc32c` and
 * `pemCrc32c`: one implementation, from a maintained native package.
 */
export function crc32c(data: Uint8Array | string): number {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return nativeCrc32c(bytes) >>> 0;
}

/**
 * Reads an Int64Value as the client library decodes it (a number, a decimal string or a
 * protobufjs Long), or undefined when the field is absent.
 */
export function int64Value(field: { value?: unknown } | null | undefined): number | undefined {
  if (field === null || field === undefined) return undefined;
  const value = field.value;
  if (value === null || value === undefined) return 0;
  if (typeof value === 'number') return value;
  if (typeof value === 'string') return Number(value);
  if (typeof value === 'object' && typeof (value as { toString?: unknown }).toString === 'function') return Number(String(value));
  return undefined;
}
