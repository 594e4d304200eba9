import { performance } from 'node:perf_hooks';
import { publicKeyObject, verifyLocally, type KeyAlgorithm } from '@olocus/hsm-core';
import type { KeyObject } from 'node:crypto';
import { checkpointBody, detailsTextOk, recordHash, type RecordLike } from './jcs.js';
import type { AuditCheckpoint, AuditVerifyResult } from './types.js';

export interface ChainInput {
  logName: string;
  /** Where the chain starts: seq 0 / zero hash, or the prune anchor. */
  anchor: { seq: number; hash: string };
  /** Records after the anchor in seq order, in pages. */
  pages: AsyncIterator<RecordLike[]>;
  /** Checkpoints in the order they were written. */
  checkpoints: AuditCheckpoint[];
  publicKey?: Uint8Array | KeyObject;
  /**
   * After checkpoint-key rotations: the keys in the order they took over (the first with
   * `rotationSeq` 0). Replaces `publicKey`. A checkpoint is verified with the key its keyId names;
   * keys never go back, the old key signs the first checkpoint covering the rotation record and
   * nothing after it, and the new key signs only checkpoints after the rotation record.
   */
  keys?: Array<{ keyId: string; key: KeyObject; rotationSeq: number }>;
  /** The head the store claims (seq), when it keeps one apart from the records. */
  headSeq?: number;
  /**
   * A faster check of the records (parallel threads): resolves with the count and last seq when
   * everything holds, undefined when something does not (the walk below then names it).
   */
  parallel?: (checkpointHashes: Map<number, string>) => Promise<{ records: number; lastSeq: number } | undefined>;
}

/** How far either side of a broken record the verifier looks for the seq it really belongs at. */
const WINDOW = 1000;

type Problem = NonNullable<AuditVerifyResult['problem']>;

function fail(problem: Problem, seq: number, message: string, records: number, checkpoints: number, started: number): AuditVerifyResult {
  return { ok: false, records, checkpoints, firstBadSeq: seq, problem, message, durationMs: performance.now() - started };
}

function selfOk(r: RecordLike): boolean {
  return recordHash(r) === r.hash && (typeof r.details !== 'string' || detailsTextOk(r.details));
}

function genuineFor(r: RecordLike, seq: number): boolean {
  return recordHash({ ...r, seq }) === r.hash && (typeof r.details !== 'string' || detailsTextOk(r.details));
}

/**
 * Walks the chain from its anchor: every record's hash is recomputed from its canonical form
 * and its predecessor's hash; the first record that fails is named and classified. Then the
 * checkpoints: sizes never decrease, signatures verify with `publicKey`, each checkpointed
 * size still holds the checkpointed hash, and no checkpoint claims more records than remain.
 */
export async function verifyChain(input: ChainInput): Promise<AuditVerifyResult> {
  const started = performance.now();
  const cps = input.checkpoints;
  let records = 0;
  const done = (problem: Problem, seq: number, message: string) => fail(problem, seq, message, records, cps.length, started);

  // checkpoints: monotonic sizes, then signatures
  for (let i = 1; i < cps.length; i++) {
    if (cps[i]!.size < cps[i - 1]!.size) {
      return done('checkpoint-shrank', cps[i]!.size, `checkpoint ${i + 1} claims size ${cps[i]!.size}, less than the ${cps[i - 1]!.size} of the checkpoint before it: a checkpoint's size never decreases`);
    }
  }
  let signaturesChecked = false;
  const sigOk = (cp: AuditCheckpoint, key: KeyObject): boolean => {
    if (!cp.signature) return false;
    try {
      return verifyLocally(cp.algorithm as KeyAlgorithm, key, Buffer.from(checkpointBody(cp.logName, cp.size, cp.headHash)), Buffer.from(cp.signature, 'base64'));
    } catch {
      return false;
    }
  };
  if (input.keys && input.keys.length > 0) {
    const keys = input.keys;
    let epoch = 0;
    // the size of the old key's checkpoint that covers each rotation: the old key's last word
    const closedAt: Array<number | undefined> = keys.map(() => undefined);
    for (const cp of cps) {
      const i = keys.findIndex((k) => k.keyId === cp.keyId);
      if (i < 0) return done('bad-checkpoint-signature', cp.size, `checkpoint at size ${cp.size} names key ${cp.keyId}, which is not a checkpoint key of this log (keys: ${keys.map((k) => k.keyId).join(', ')})`);
      if (i < epoch) return done('bad-checkpoint-signature', cp.size, `checkpoint at size ${cp.size} is signed by ${cp.keyId}, a checkpoint key retired before it`);
      if (i > 0 && cp.size <= keys[i]!.rotationSeq) return done('bad-checkpoint-signature', cp.size, `checkpoint at size ${cp.size} is signed by ${cp.keyId}, which took over only after record ${keys[i]!.rotationSeq}`);
      if (i > 0 && closedAt[i - 1] === undefined) return done('bad-checkpoint-signature', cp.size, `the rotation to ${cp.keyId} at record ${keys[i]!.rotationSeq} is not covered by a checkpoint of the previous key ${keys[i - 1]!.keyId}`);
      if (closedAt[i] !== undefined) return done('bad-checkpoint-signature', cp.size, `checkpoint at size ${cp.size} is signed by ${cp.keyId} after it handed over to ${keys[i + 1]!.keyId}`);
      epoch = i;
      if (!sigOk(cp, keys[i]!.key)) return done('bad-checkpoint-signature', cp.size, `checkpoint at size ${cp.size} ${cp.signature ? `has a signature that does not verify with checkpoint key ${cp.keyId}` : 'is not signed'}`);
      if (i + 1 < keys.length && cp.size >= keys[i + 1]!.rotationSeq) closedAt[i] = cp.size;
    }
    signaturesChecked = true;
  } else if (input.publicKey) {
    const key = input.publicKey instanceof Uint8Array ? publicKeyObject(input.publicKey) : input.publicKey;
    for (const cp of cps) {
      let ok = false;
      if (cp.signature) {
        try {
          ok = verifyLocally(cp.algorithm as KeyAlgorithm, key, Buffer.from(checkpointBody(cp.logName, cp.size, cp.headHash)), Buffer.from(cp.signature, 'base64'));
        } catch {
          ok = false;
        }
      }
      if (!ok) return done('bad-checkpoint-signature', cp.size, `checkpoint at size ${cp.size} ${cp.signature ? 'has a signature that does not verify with the checkpoint key' : 'is not signed'}`);
    }
    signaturesChecked = true;
  }
  const cpHash = new Map<number, string>();
  let maxCp = 0;
  for (const cp of cps) {
    cpHash.set(cp.size, cp.headHash);
    if (cp.size > maxCp) maxCp = cp.size;
  }

  // the anchor of a pruned log must be a checkpointed (signed) head
  const anchor = input.anchor;
  if (anchor.seq > 0) {
    const at = cpHash.get(anchor.seq);
    if (at !== undefined && at !== anchor.hash) return done('gap', anchor.seq + 1, `the prune anchor (seq ${anchor.seq}) does not match the checkpoint at that size`);
  }

  let prevSeq = anchor.seq;
  let prevHash = anchor.hash;
  let prevRecord: RecordLike | undefined;
  let page: RecordLike[] | undefined;
  let pageNo = 0;
  const fast = input.parallel ? await input.parallel(cpHash) : undefined;
  if (fast) {
    records = fast.records;
    prevSeq = fast.lastSeq;
  }
  for (; !fast; ) {
    const next = await input.pages.next();
    if (next.done) break;
    page = next.value;
    if (++pageNo % 4 === 0) await new Promise<void>((r) => setImmediate(r));
    for (let i = 0; i < page.length; i++) {
      const r = page[i]!;
      const expected = prevSeq + 1;
      if (r.seq !== expected) {
        if (r.seq > expected) return done('deleted', expected, `record ${expected} is missing: the next record present is ${r.seq} (deleted records)`);
        return done('inserted', r.seq, `record ${r.seq} appears again after ${prevSeq} (inserted record)`);
      }
      const self = selfOk(r);
      if (self && r.prevHash === prevHash) {
        const c = cpHash.get(r.seq);
        if (c !== undefined && c !== r.hash) return done('truncated', r.seq, `record ${r.seq} is not the record checkpointed at size ${r.seq}: the log was truncated and rewritten from there`);
        records++;
        prevSeq = r.seq;
        prevHash = r.hash!;
        prevRecord = r;
        continue;
      }
      // classify the break
      if (self) return done('inserted', r.seq, `record ${r.seq} is well-formed but does not follow record ${prevSeq} (inserted record)`);
      let genuine: number | undefined;
      for (let d = 1; d <= WINDOW && genuine === undefined; d++) {
        if (genuineFor(r, r.seq + d)) genuine = r.seq + d;
        else if (r.seq - d >= 1 && genuineFor(r, r.seq - d)) genuine = r.seq - d;
      }
      if (genuine === undefined) return done('edited', r.seq, `record ${r.seq} was altered: its hash does not match its content`);
      if (genuine === r.seq - 1 && prevRecord && prevRecord.prevHash === r.prevHash) {
        return done('inserted', r.seq - 1, `record ${r.seq - 1} was inserted: the record now at ${r.seq} was written as ${r.seq - 1}`);
      }
      if (genuine === r.seq + 1) {
        // a renumbered deletion, unless the record written at r.seq sits further on (a swap)
        const ahead = page.slice(i + 1, i + 1 + WINDOW);
        while (ahead.length < WINDOW) {
          const more = await input.pages.next();
          if (more.done) break;
          ahead.push(...more.value);
        }
        if (ahead.some((x) => genuineFor(x, r.seq))) return done('reordered', r.seq, `record ${r.seq} is out of order: it was written as record ${genuine}`);
        return done('deleted', r.seq, `record ${r.seq} was deleted: the record now at ${r.seq} was written as ${genuine}`);
      }
      return done('reordered', r.seq, `record ${r.seq} is out of order: it was written as record ${genuine}`);
    }
  }
  if (maxCp > prevSeq) return done('truncated', prevSeq + 1, `the log ends at record ${prevSeq} but a checkpoint covers ${maxCp} records: the tail was truncated`);
  if (input.headSeq !== undefined && input.headSeq > prevSeq) return done('truncated', prevSeq + 1, `the log ends at record ${prevSeq} but its head says ${input.headSeq}: the tail was truncated`);
  const note = cps.length === 0 ? 'no checkpoints' : signaturesChecked ? `${cps.length} checkpoints, signatures valid` : `${cps.length} checkpoints (signatures not checked: no public key)`;
  return {
    ok: true,
    records,
    checkpoints: cps.length,
    message: `chain intact: ${records} records${anchor.seq > 0 ? ` after the prune anchor at ${anchor.seq}` : ''}, ${note}`,
    durationMs: performance.now() - started,
  };
}
