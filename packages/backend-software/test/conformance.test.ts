import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { KEY_ALGORITHMS } from '@olocus/hsm-core';
import { runConformanceSuite } from '@olocus/hsm-core/testing';
import { SoftwareBackend } from '../src/index.js';

const directory = mkdtempSync(join(tmpdir(), 'olocus-sw-conformance-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

runConformanceSuite({
  name: 'software',
  // Each call is a new instance over the same directory, as the persistence test requires.
  createBackend: () => new SoftwareBackend({ directory, scrypt: { N: 2 ** 15 } }, { passphrase: 'conformance passphrase' }),
  expectedAlgorithms: KEY_ALGORITHMS,
});
