import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { decodeSignature, encodeSignature, exportPublicKey, KEY_ALGORITHMS, type HsmKeyHandle, type HsmManager, type KeyAlgorithm } from '@olocus/hsm-core';
import { CONFIG_FILE, DEFAULT_DIR, initSoftware, loadConfig } from '../config.js';
import { EXIT_NEGATIVE } from '../errors.js';
import { toBase64 } from '../io.js';
import { openManager } from '../manager.js';
import { table } from './keys.js';
import type { CliContext } from '../context.js';

/** One algorithm's trip through the demo. */
export interface DemoKey {
  algorithm: KeyAlgorithm;
  id: string;
  ref?: string;
  createMs?: number;
  signMs?: number;
  /** The signature as `sign` writes it (DER for ECDSA), base64. */
  signature?: string;
  signatureBytes?: number;
  verified?: boolean;
  tamperedRejected?: boolean;
  publicKeyPem?: string;
}

export interface DemoState {
  ctx: CliContext;
  /** Working directory; the embedded default lives in `<dir>/.olocus`. */
  dir: string;
  configPath: string;
  manager?: HsmManager;
  message: Uint8Array;
  keys: DemoKey[];
}

export interface DemoStepResult {
  id: string;
  title: string;
  ok: boolean;
  ms: number;
  detail: string;
}

/**
 * A demo step. Steps run in order; each returns a one-line detail or throws. A step that
 * finds a check failing returns `{ ok: false }`. New steps (rotation, audit) append to DEMO_STEPS.
 */
export interface DemoStep {
  id: string;
  title: string;
  run(state: DemoState): Promise<{ ok: boolean; detail: string }>;
}

function manager(state: DemoState): HsmManager {
  if (!state.manager) throw new Error('the backend is not open (the open step did not run)');
  return state.manager;
}

/** Shows progress on stderr: an updating line on a TTY, a line per item otherwise. */
function progress(ctx: CliContext, label: string): () => void {
  const started = performance.now();
  if (!ctx.stderr.isTTY) {
    ctx.note(`  ${label}...`);
    return () => {};
  }
  const draw = () => ctx.stderr.write(`\r\x1b[2K  ${label}... ${((performance.now() - started) / 1000).toFixed(1)} s`);
  draw();
  const timer = setInterval(draw, 100);
  return () => {
    clearInterval(timer);
    ctx.stderr.write('\r\x1b[2K');
  };
}

export const DEMO_STEPS: DemoStep[] = [
  {
    id: 'init',
    title: 'initialise the embedded default (software backend)',
    async run(state) {
      const exists = await stat(state.configPath).then(
        () => true,
        () => false,
      );
      if (exists) return { ok: true, detail: `using existing ${state.configPath}` };
      await initSoftware(state.ctx, { dir: join(state.dir, DEFAULT_DIR), force: false });
      return { ok: true, detail: `wrote ${state.configPath}` };
    },
  },
  {
    id: 'open',
    title: 'open the backend',
    async run(state) {
      state.manager = await openManager(state.ctx, await loadConfig(state.ctx));
      const info = await state.manager.info();
      return { ok: true, detail: info.description };
    },
  },
  {
    id: 'create-keys',
    title: 'create a key of each algorithm',
    async run(state) {
      const m = manager(state);
      for (const [i, key] of state.keys.entries()) {
        const done = progress(state.ctx, `creating ${key.algorithm} key (${i + 1}/${state.keys.length})`);
        const t0 = performance.now();
        try {
          const handle = await m.generateKey({ id: key.id, algorithm: key.algorithm, labels: { purpose: 'olocus-hsm demo' } });
          key.ref = handle.ref;
        } finally {
          done();
        }
        key.createMs = performance.now() - t0;
      }
      return { ok: true, detail: `${state.keys.length} keys: ${state.keys.map((k) => k.algorithm).join(', ')}` };
    },
  },
  {
    id: 'sign',
    title: 'sign a message with each key',
    async run(state) {
      const m = manager(state);
      for (const key of state.keys) {
        const handle = await m.getKey(key.id);
        const t0 = performance.now();
        const raw = await m.sign(handle, state.message);
        key.signMs = performance.now() - t0;
        const encoded = encodeSignature(handle.algorithm, raw, 'der');
        key.signature = toBase64(encoded);
        key.signatureBytes = encoded.length;
      }
      return { ok: true, detail: `${state.message.length}-byte message, ${state.keys.length} signatures (ECDSA as DER)` };
    },
  },
  {
    id: 'verify',
    title: 'verify each signature',
    async run(state) {
      const m = manager(state);
      for (const key of state.keys) key.verified = await m.verify(key.id, state.message, rawOf(key, await m.getKey(key.id)));
      const bad = state.keys.filter((k) => !k.verified);
      return { ok: bad.length === 0, detail: bad.length === 0 ? 'every signature verified' : `did not verify: ${bad.map((k) => k.algorithm).join(', ')}` };
    },
  },
  {
    id: 'public-keys',
    title: 'export each public key (PEM)',
    async run(state) {
      const m = manager(state);
      for (const key of state.keys) key.publicKeyPem = exportPublicKey(await m.getPublicKey(key.id), 'pem');
      return { ok: true, detail: `${state.keys.length} SubjectPublicKeyInfo PEMs` };
    },
  },
  {
    id: 'tamper',
    title: 'a modified message does not verify',
    async run(state) {
      const m = manager(state);
      const tampered = Uint8Array.from(state.message);
      tampered[0] = tampered[0]! ^ 0x01;
      for (const key of state.keys) key.tamperedRejected = !(await m.verify(key.id, tampered, rawOf(key, await m.getKey(key.id))));
      const bad = state.keys.filter((k) => !k.tamperedRejected);
      return { ok: bad.length === 0, detail: bad.length === 0 ? 'every tampered message was rejected' : `tampered message ACCEPTED by: ${bad.map((k) => k.algorithm).join(', ')}` };
    },
  },
];

/** The signature back in the library's raw form: the demo keeps what `sign` writes (DER for ECDSA), as `verify` reads it. */
function rawOf(key: DemoKey, handle: HsmKeyHandle): Uint8Array {
  return decodeSignature(handle.algorithm, new Uint8Array(Buffer.from(key.signature ?? '', 'base64')), 'der');
}

function shortPem(pem: string): string {
  const body = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return `${body.slice(0, 24)}...${body.slice(-12)}`;
}

export async function demo(ctx: CliContext, opts: { dir?: string; keep?: boolean }): Promise<void> {
  const temporary = opts.dir === undefined;
  const dir = temporary ? await mkdtemp(join(tmpdir(), 'olocus-hsm-demo-')) : resolve(ctx.cwd, opts.dir!);
  const configPath = join(dir, DEFAULT_DIR, CONFIG_FILE);
  // The demo works on its own folder, whatever --config or $OLOCUS_HSM_CONFIG say.
  const demoCtx: CliContext = { ...ctx, globals: { ...ctx.globals, config: configPath }, cwd: dir };
  const run = randomBytes(2).toString('hex');
  const state: DemoState = {
    ctx: demoCtx,
    dir,
    configPath,
    message: new TextEncoder().encode(`Olocus HSM demo ${new Date().toISOString()}: sign me, verify me, tamper with me.`),
    keys: KEY_ALGORITHMS.map((algorithm) => ({ algorithm, id: `demo-${run}-${algorithm.toLowerCase().replace(/_/g, '-')}` })),
  };
  const steps: DemoStepResult[] = [];
  if (!ctx.json) ctx.print(`olocus-hsm demo in ${dir}`);
  try {
    for (const step of DEMO_STEPS) {
      const t0 = performance.now();
      ctx.note(`[${steps.length + 1}/${DEMO_STEPS.length}] ${step.title}`);
      const { ok, detail } = await step.run(state);
      steps.push({ id: step.id, title: step.title, ok, ms: Math.round(performance.now() - t0), detail });
    }
  } finally {
    await cleanup(state, temporary, opts.keep === true);
  }
  const ok = steps.every((s) => s.ok);
  if (!ok) ctx.exitCode = EXIT_NEGATIVE;
  const kept = opts.keep === true || !temporary;
  if (ctx.json) {
    ctx.printJson({ ok, dir, kept, configPath, message: new TextDecoder().decode(state.message), steps, keys: state.keys.map(round) });
    return;
  }
  ctx.print();
  ctx.print(
    table(
      ['ALGORITHM', 'KEY ID', 'CREATE MS', 'SIGN MS', 'SIG BYTES', 'VERIFIED', 'TAMPER REJECTED', 'PUBLIC KEY (PEM, shortened)'],
      state.keys.map((k) => [
        k.algorithm,
        k.id,
        k.createMs?.toFixed(1) ?? '-',
        k.signMs?.toFixed(2) ?? '-',
        String(k.signatureBytes ?? '-'),
        k.verified === undefined ? '-' : k.verified ? 'yes' : 'NO',
        k.tamperedRejected === undefined ? '-' : k.tamperedRejected ? 'yes' : 'NO',
        k.publicKeyPem ? shortPem(k.publicKeyPem) : '-',
      ]),
    ),
  );
  const shown = state.keys.find((k) => k.verified);
  if (shown) {
    ctx.print();
    ctx.print(`message:   ${JSON.stringify(new TextDecoder().decode(state.message))}`);
    ctx.print(`signature: ${shown.signature} (${shown.algorithm}, base64, verified)`);
  }
  ctx.print();
  for (const s of steps) ctx.print(`${s.ok ? 'ok  ' : 'FAIL'} ${s.title}: ${s.detail} (${s.ms} ms)`);
  ctx.print();
  ctx.print(ok ? 'demo passed: every signature verified and every tampered message was rejected' : 'demo FAILED: see the steps above');
  ctx.print(temporary && !opts.keep ? 'the temporary directory was removed (pass --keep to keep it)' : `kept: ${dir}`);
}

function round(k: DemoKey): DemoKey {
  return { ...k, createMs: k.createMs && Math.round(k.createMs * 10) / 10, signMs: k.signMs && Math.round(k.signMs * 100) / 100 };
}

async function cleanup(state: DemoState, temporary: boolean, keep: boolean): Promise<void> {
  const m = state.manager;
  if (m && !keep && !temporary) {
    for (const key of state.keys) if (key.ref) await m.destroyKey(key.id).catch(() => {});
  }
  await m?.close();
  if (temporary && !keep) await rm(state.dir, { recursive: true, force: true });
}
