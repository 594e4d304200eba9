import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { decodeSignature, encodeSignature, exportPublicKey, KEY_ALGORITHMS, type HsmKeyHandle, type HsmManager, type KeyAlgorithm } from '@olocus/hsm-core';
import type { RotationContext } from '@olocus/hsm-rotation';
import { CONFIG_FILE, DEFAULT_DIR, loadConfig, type LoadedConfig } from '../config.js';
import { EXIT_NEGATIVE } from '../errors.js';
import { toBase64 } from '../io.js';
import { auditOf, openManager } from '../manager.js';
import { openRotationFor } from '../rotation.js';
import { actorOf } from '../actor.js';
import { initSoftware, passphraseForInit, type InitPassphrase } from '../store.js';
import { table } from './keys.js';
import type { CliContext } from '../context.js';

/** One algorithm's trip through the demo. */
export interface DemoKey {
  algorithm: KeyAlgorithm;
  id: string;
  ref?: string;
  createMs?: number | undefined;
  signMs?: number | undefined;
  /** The signature as `sign` writes it (DER for ECDSA), base64. */
  signature?: string;
  signatureBytes?: number;
  verified?: boolean;
  tamperedRejected?: boolean;
  publicKeyPem?: string;
}

/** The rotation steps' trip: one logical key rotated from v1 to v2. */
export interface DemoRotation {
  /** The logical key (Ed25519). */
  key: string;
  actor: string;
  reason: string;
  /** Made with v1 before the rotation (raw Ed25519 signature, base64). */
  oldSignature?: { version: number; keyId: string; signedAt: string; signature: string; verifiedBySigningTime?: boolean };
  /** Made after the rotation. */
  newSignature?: { version: number; keyId: string; signedAt: string; signature: string; verified?: boolean };
  activeVersion?: number;
  /** The history row of the change: v1 Active -> Superseded. */
  change?: { at: string; version: number; from: string | null; to: string; actor: string; reason: string };
  /** What happened to the key at the end (--dir without --keep). */
  cleanup?: string;
}

export interface DemoState {
  ctx: CliContext;
  /** Working directory; the embedded default lives in `<dir>/.olocus`. */
  dir: string;
  configPath: string;
  loaded?: LoadedConfig;
  manager?: HsmManager;
  /** The key registry (opened by the rotation step). */
  rotation?: RotationContext;
  message: Uint8Array;
  keys: DemoKey[];
  rotationDemo: DemoRotation;
  /** What the audit step found. */
  audit?: DemoAudit;
  /** The passphrase of a store the demo creates (a throwaway one lives only in this process). */
  passphrase?: InitPassphrase;
}

/** The audit step's findings. */
export interface DemoAudit {
  records: number;
  checkpoints: number;
  chainOk: boolean;
  message: string;
  signRecords: number;
  verifyRecords: number;
  rotationRecords: number;
  /** The sign records name the message by its SHA-256 digest, never by its bytes. */
  messageDigest: string;
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
      const passphrase = state.passphrase ?? (await passphraseForInit(state.ctx, 'demo --dir'));
      await initSoftware(state.ctx, { dir: join(state.dir, DEFAULT_DIR), force: false, passphrase });
      return { ok: true, detail: `wrote ${state.configPath}${state.passphrase ? ' (throwaway store: its passphrase lives only in this process)' : ''}` };
    },
  },
  {
    id: 'open',
    title: 'open the backend',
    async run(state) {
      state.loaded = await loadConfig(state.ctx);
      state.manager = await openManager(state.ctx, state.loaded);
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
  {
    id: 'rotate',
    title: 'rotate a logical key; the new version signs',
    async run(state) {
      const m = manager(state);
      if (!state.loaded) throw new Error('the config is not loaded (the open step did not run)');
      state.rotation = await openRotationFor(state.ctx, state.loaded, m, { reconcile: true });
      const rot = state.rotation;
      const r = state.rotationDemo;
      await rot.manager.createKey(r.key, 'Ed25519', { actor: r.actor, reason: 'olocus-hsm demo: create a logical key' });
      const signedAt = new Date();
      const first = await m.signWithLogicalKey(r.key, state.message);
      r.oldSignature = { version: first.version.version, keyId: keyIdOf(first.version.key), signedAt: signedAt.toISOString(), signature: toBase64(first.signature) };
      // The rotation must come after the signing time (millisecond clock): v1's window ends at the rotation.
      while (Date.now() <= signedAt.getTime()) await new Promise((ok) => setTimeout(ok, 2));
      const rotated = await rot.manager.rotateKey(r.key, { actor: r.actor, reason: r.reason });
      const newAt = new Date();
      const second = await m.signWithLogicalKey(r.key, state.message);
      r.newSignature = { version: second.version.version, keyId: keyIdOf(second.version.key), signedAt: newAt.toISOString(), signature: toBase64(second.signature) };
      const ok = first.version.version === 1 && rotated.current.version === 2 && second.version.version === 2;
      return { ok, detail: `${r.key}: v${first.version.version} -> v${rotated.current.version} by ${r.actor}; the next signature used v${second.version.version} (${r.newSignature.keyId})` };
    },
  },
  {
    id: 'rotation-checks',
    title: 'the old signature verifies by its signing time; the new version is Active; the history has the change',
    async run(state) {
      const m = manager(state);
      const rot = state.rotation;
      const r = state.rotationDemo;
      if (!rot || !r.oldSignature || !r.newSignature) throw new Error('the rotate step did not run');
      const bytes = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'));
      r.oldSignature.verifiedBySigningTime = await m.verifyWithLogicalKey(r.key, state.message, bytes(r.oldSignature.signature), new Date(r.oldSignature.signedAt));
      r.newSignature.verified = await m.verifyWithLogicalKey(r.key, state.message, bytes(r.newSignature.signature), new Date());
      r.activeVersion = (await rot.registry.getActiveKeyUncached(r.key)).version;
      const change = (await rot.registry.getHistory(r.key)).find((c) => c.version === 1 && c.from === 'Active' && c.to === 'Superseded');
      if (change) r.change = { at: change.at.toISOString(), version: change.version, from: change.from, to: change.to, actor: change.actor, reason: change.reason };
      const problems: string[] = [];
      if (!r.oldSignature.verifiedBySigningTime) problems.push('the v1 signature did not verify at its signing time');
      if (!r.newSignature.verified) problems.push('the v2 signature did not verify');
      if (r.activeVersion !== 2) problems.push(`v${r.activeVersion} is Active, not v2`);
      if (!change || change.actor !== r.actor || change.reason !== r.reason) problems.push('the history has no v1 Active -> Superseded change with the actor and reason');
      if (problems.length > 0) return { ok: false, detail: problems.join('; ') };
      return { ok: true, detail: `v1 signature of ${r.oldSignature.signedAt} verified; v2 Active; history: ${r.change!.at} v1 Active -> Superseded, actor ${r.change!.actor}, reason "${r.change!.reason}"` };
    },
  },
  {
    id: 'audit-check',
    title: 'the audit log holds every operation; its hash chain verifies against a signed checkpoint',
    async run(state) {
      const m = manager(state);
      const audit = auditOf(m);
      if (!audit) return { ok: false, detail: 'auditing is off in the config (audit.enabled is false)' };
      await audit.flush();
      await audit.log.checkpoint();
      const { spki } = await m.getPublicKey(audit.section.checkpoint.keyId);
      const result = await audit.log.verify({ publicKey: spki });
      const digest = `sha256:${createHash('sha256').update(state.message).digest('hex')}`;
      const demoKeys = new Set([...state.keys.map((k) => k.id), ...[1, 2].map((v) => `${state.rotationDemo.key}.v${v}`)]);
      const found = { sign: 0, verify: 0, rotate: 0, digestOk: 0 };
      for await (const record of audit.log.iterate({ types: ['key.sign', 'key.verify', 'key.rotate'] })) {
        if (!record.keyId || !demoKeys.has(record.keyId)) continue;
        if (record.type === 'key.sign') {
          found.sign++;
          if (record.dataDigest === digest) found.digestOk++;
        } else if (record.type === 'key.verify') found.verify++;
        else found.rotate++;
      }
      state.audit = {
        records: result.records,
        checkpoints: result.checkpoints,
        chainOk: result.ok,
        message: result.message,
        signRecords: found.sign,
        verifyRecords: found.verify,
        rotationRecords: found.rotate,
        messageDigest: digest,
      };
      const problems: string[] = [];
      if (!result.ok) problems.push(`audit verify: ${result.message}`);
      if (result.checkpoints === 0) problems.push('no signed checkpoint');
      // One signature per key, two by the logical key (v1 and v2).
      if (found.sign < state.keys.length + 2) problems.push(`${found.sign} sign records, expected at least ${state.keys.length + 2}`);
      if (found.digestOk < found.sign) problems.push('a sign record does not carry the message digest');
      if (found.rotate < 1) problems.push('the rotation is not in the audit log');
      if (problems.length > 0) return { ok: false, detail: problems.join('; ') };
      return {
        ok: true,
        detail: `${result.records} records, ${result.checkpoints} signed checkpoint(s), chain intact; ${found.sign} signatures, ${found.verify} verifications and ${found.rotate} rotation recorded (data by digest only)`,
      };
    },
  },
];

/** Names the throwaway store's passphrase in its config; set only in the demo's own environment. */
const DEMO_PASSPHRASE_ENV = 'OLOCUS_HSM_DEMO_PASSPHRASE';

function keyIdOf(key: string | { id: string }): string {
  return typeof key === 'string' ? key : key.id;
}

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
  // The demo works on its own folder, whatever --config or $OLOCUS_HSM_CONFIG say. A throwaway
  // store gets a random passphrase that exists only in this process (the config names a variable
  // that only the demo's own environment holds); a store in --dir needs a real one, as init does.
  let env = ctx.env;
  let passphrase: InitPassphrase | undefined;
  if (temporary) {
    env = { ...ctx.env, [DEMO_PASSPHRASE_ENV]: randomBytes(32).toString('base64url') };
    passphrase = { source: { env: DEMO_PASSPHRASE_ENV }, from: 'memory (throwaway store)' };
  }
  const demoCtx: CliContext = { ...ctx, env, globals: { ...ctx.globals, config: configPath }, cwd: dir };
  const run = randomBytes(2).toString('hex');
  const state: DemoState = {
    ctx: demoCtx,
    dir,
    configPath,
    message: new TextEncoder().encode(`Olocus HSM demo ${new Date().toISOString()}: sign me, verify me, tamper with me.`),
    keys: KEY_ALGORITHMS.map((algorithm) => ({ algorithm, id: `demo-${run}-${algorithm.toLowerCase().replace(/_/g, '-')}` })),
    rotationDemo: { key: `demo-${run}-rotation`, actor: actorOf(ctx), reason: 'olocus-hsm demo: scheduled key rotation' },
    ...(passphrase ? { passphrase } : {}),
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
    ctx.printJson({ ok, dir, kept, configPath, message: new TextDecoder().decode(state.message), steps, keys: state.keys.map(round), rotation: state.rotationDemo, audit: state.audit });
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
  const r = state.rotationDemo;
  if (r.change) {
    ctx.print(`rotation:  ${r.key} v1 -> v${r.activeVersion} (Active) at ${r.change.at} by ${r.change.actor}: "${r.change.reason}"`);
    ctx.print(`           the v1 signature of ${r.oldSignature?.signedAt} ${r.oldSignature?.verifiedBySigningTime ? 'still verifies' : 'did NOT verify'} by its signing time`);
  }
  if (r.cleanup) ctx.print(`           ${r.cleanup}`);
  if (state.audit) ctx.print(`audit:     ${state.audit.records} records, ${state.audit.checkpoints} signed checkpoint(s), chain ${state.audit.chainOk ? 'intact' : 'BROKEN'}`);
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
  const rot = state.rotation;
  if (rot && !keep && !temporary) {
    // A logical key's versions are not destroyed at once (LC-PENDING): they are revoked and
    // scheduled for destruction after policy.destructionDelay (olocus-hsm rotation run).
    const r = state.rotationDemo;
    const ctx = { actor: r.actor, reason: 'olocus-hsm demo: clean-up' };
    try {
      for (const v of await rot.registry.getKeyVersions(r.key)) {
        if (v.state === 'Active' || v.state === 'Superseded' || v.state === 'Suspended') await rot.manager.revokeKey(v.keyId, ctx);
        await rot.manager.scheduleDestruction(v.keyId, ctx);
      }
      r.cleanup = `${r.key}: every version revoked and scheduled for destruction after the policy's destructionDelay (olocus-hsm rotation run destroys them)`;
    } catch (error) {
      if (!(error instanceof Error && /unknown logical key/.test(error.message))) r.cleanup = `${r.key}: clean-up failed: ${(error as Error).message}`;
    }
  }
  await rot?.close();
  await m?.close();
  if (temporary && !keep) await rm(state.dir, { recursive: true, force: true });
}
