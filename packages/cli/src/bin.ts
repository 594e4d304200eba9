#!/usr/bin/env node
import { main } from './main.js';

/** Exits once stdout and stderr are flushed, even if a backend left a handle open. */
function exit(code: number): void {
  process.exitCode = code;
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

main(process.argv).then(exit, (error: unknown) => {
  process.stderr.write(`olocus-hsm: Internal: ${(error as Error)?.message ?? String(error)}\n`);
  exit(2);
});
