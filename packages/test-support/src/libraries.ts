/**
 * Where the PKCS#11 modules the tests need live on this machine. Debian and Ubuntu put them under
 * the multiarch directory (/usr/lib/x86_64-linux-gnu, /usr/lib/aarch64-linux-gnu, ...), other
 * distributions under /usr/lib64 or /usr/local/lib, so nothing here names one architecture:
 * the multiarch triplets come from the machine (dpkg-architecture, gcc -print-multiarch, the
 * directories that exist), and `ldconfig -p` is asked last.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface SearchOptions {
  /** Filesystem root to search under (tests point it at a fake tree). Default '/'. */
  root?: string;
  /** Multiarch triplets to try first; default: asked from the machine. */
  triplets?: readonly string[];
  /** Whether to ask `ldconfig -p` when nothing is found on disk. Default true. */
  ldconfig?: boolean;
}

const LIB_DIRS = ['usr/lib', 'usr/local/lib', 'usr/lib64', 'lib', 'lib64', 'opt/homebrew/lib'];

function run(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8', timeout: 5_000 });
  return result.status === 0 ? result.stdout.trim() : '';
}

let machineTriplets: string[] | undefined;

/** The multiarch triplets of this machine, most specific first. */
export function multiarchTriplets(root = '/'): string[] {
  if (root === '/' && machineTriplets) return machineTriplets;
  const found = new Set<string>();
  if (root === '/') {
    for (const answer of [run('dpkg-architecture', ['-qDEB_HOST_MULTIARCH']), run('gcc', ['-print-multiarch'])]) if (answer) found.add(answer);
  }
  // whatever multiarch directories exist (a tree copied from another machine, a container without dpkg)
  try {
    for (const entry of readdirSync(join(root, 'usr/lib'))) if (/^[a-z0-9_]+-[a-z0-9_]+-[a-z0-9_]+$/.test(entry) && /linux|gnu/.test(entry)) found.add(entry);
  } catch {
    // no /usr/lib under root
  }
  const out = [...found];
  if (root === '/') machineTriplets = out;
  return out;
}

/**
 * The first existing `<libdir>/<subdir>/<file>` over the multiarch and plain library directories,
 * then `ldconfig -p`; undefined when the module is not installed.
 */
export function findPkcs11Module(file: string, subdirs: readonly string[], options: SearchOptions = {}): string | undefined {
  const root = options.root ?? '/';
  const triplets = options.triplets ?? multiarchTriplets(root);
  const dirs = [...triplets.flatMap((t) => [`usr/lib/${t}`, `lib/${t}`]), ...LIB_DIRS];
  for (const dir of dirs) {
    for (const sub of [...subdirs, '']) {
      const candidate = join(root, dir, sub, file);
      if (existsSync(candidate)) return candidate;
    }
  }
  if (options.ldconfig === false || root !== '/') return undefined;
  for (const line of run('ldconfig', ['-p']).split('\n')) {
    const match = /^\s*(\S+)\s.*=>\s*(\S+)$/.exec(line);
    if (match && match[1] === file && existsSync(match[2]!)) return match[2];
  }
  return undefined;
}

/** SoftHSM 2's module (package softhsm2). */
export const SOFTHSM_LIB = findPkcs11Module('libsofthsm2.so', ['softhsm', 'pkcs11']) ?? '';
/** OpenSC's logging proxy module (package opensc). */
export const SPY_LIB = findPkcs11Module('pkcs11-spy.so', ['pkcs11']) ?? '';
/** p11-kit's RPC client module (package p11-kit-modules). */
export const P11KIT_CLIENT_LIB = findPkcs11Module('p11-kit-client.so', ['pkcs11']) ?? '';
