/** The version id convention in the backend: `<base>.v<N>`, findable by prefix. */
export function versionKeyId(baseKeyId: string, version: number): string {
  return `${baseKeyId}.v${version}`;
}

const VERSION_ID = /^(.+)\.v([1-9][0-9]{0,8})$/;

/** Splits `<base>.v<N>`; undefined when the id does not follow the convention. */
export function parseVersionKeyId(keyId: string): { baseKeyId: string; version: number } | undefined {
  const m = VERSION_ID.exec(keyId);
  return m ? { baseKeyId: m[1]!, version: Number(m[2]) } : undefined;
}
