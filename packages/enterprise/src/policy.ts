import { z } from 'zod';
import { HsmError, KEY_ALGORITHMS, isHsmError, parseWithSchema, type KeyAlgorithm } from '@olocus/hsm-core';
import type { HsmPool } from './pool.js';

/** What a caller may ask to do with an application key (Cedar actions use the same names). */
export const KEY_OPERATIONS = ['sign', 'verify', 'rotate', 'destroy', 'export-public', 'backup'] as const;
export type KeyOperation = (typeof KEY_OPERATIONS)[number];

const DURATION = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function durationMs(text: string): number {
  const match = DURATION.exec(text);
  if (!match) throw new HsmError('InvalidArgument', `duration ${JSON.stringify(text)} must be a number and a unit (ms, s, m, h, d), e.g. 90d`, { details: { field: 'duration' } });
  return Number(match[1]) * UNIT_MS[match[2]!]!;
}

const duration = z.string().regex(DURATION, 'must be a number and a unit (ms, s, m, h, d), e.g. 90d');
const algorithm = z.enum(KEY_ALGORITHMS as unknown as [KeyAlgorithm, ...KeyAlgorithm[]]);
const rate = z
  .object({
    /** Operations allowed per `per`. */
    limit: z.number().int().min(1).max(1_000_000),
    per: duration.default('1s'),
    /** Most operations allowed at once after a quiet spell (default: `limit`). */
    burst: z.number().int().min(1).max(1_000_000).optional(),
  })
  .strict();
const HHMM = /^([01]\d|2[0-3]):[0-5]\d$/;
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

export const keyPolicySchema = z
  .object({
    /** The algorithm the application key is generated with. */
    algorithm,
    /** Algorithms the policy admits (default: just `algorithm`). */
    allowedAlgorithms: z.array(algorithm).min(1).optional(),
    allowedOperations: z.array(z.enum(KEY_OPERATIONS)).min(1).default(['sign', 'verify', 'export-public']),
    rotationInterval: duration.optional(),
    /** Versions kept (the registry's retention). */
    maxVersions: z.number().int().min(1).max(100).optional(),
    /** Signatures one version may make before it must be rotated. */
    maxUsesPerVersion: z.number().int().min(1).optional(),
    minFipsLevel: z.number().int().min(0).max(4).default(0),
    /** How a FIPS level must be known to count (a provider's claim cannot be checked by the client). */
    fipsEvidence: z.array(z.enum(['measured', 'attested', 'provider-claim'])).min(1).default(['measured', 'attested']),
    hardwareRequired: z.boolean().default(false),
    backupRequired: z.boolean().default(false),
    maxMessageBytes: z.number().int().min(1).optional(),
    /** Members that must hold the key (a replication group when more than 1). */
    replicas: z.number().int().min(1).max(16).default(1),
    zones: z.array(z.string().min(1)).min(1).optional(),
    /** Allowed values of a member's `region` tag. */
    regions: z.array(z.string().min(1)).min(1).optional(),
    rateLimits: z.object({ perKey: rate.optional(), perCaller: rate.optional() }).strict().optional(),
    /** UTC windows in which the key may be used; absent = always. */
    timeWindows: z
      .array(
        z
          .object({
            days: z.array(z.enum(DAYS)).min(1).default([...DAYS]),
            start: z.string().regex(HHMM, 'must be HH:MM (UTC)'),
            end: z.string().regex(HHMM, 'must be HH:MM (UTC)'),
          })
          .strict(),
      )
      .min(1)
      .optional(),
    /** M of N approvers for operations that need dual control. */
    dualControl: z
      .object({
        approvers: z.array(z.string().min(1)).min(2),
        required: z.number().int().min(2),
        operations: z.array(z.enum(['destroy', 'emergency-rotation', 'backup'])).min(1).default(['destroy', 'emergency-rotation']),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.allowedAlgorithms && !p.allowedAlgorithms.includes(p.algorithm)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['algorithm'], message: `${p.algorithm} is not in allowedAlgorithms` });
    }
    if (p.dualControl && p.dualControl.required > new Set(p.dualControl.approvers).size) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['dualControl', 'required'], message: 'must not exceed the number of distinct approvers' });
    }
    if (p.backupRequired && !p.allowedOperations.includes('backup')) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['allowedOperations'], message: "must include 'backup' when backupRequired is true" });
    }
  });

export type KeyPolicyInput = z.input<typeof keyPolicySchema>;
export type KeyPolicy = z.output<typeof keyPolicySchema> & { allowedAlgorithms: KeyAlgorithm[] };

/** Parses a policy (InvalidConfiguration naming the field) and fills its defaults. */
export function parseKeyPolicy(raw: unknown, where = 'policy'): KeyPolicy {
  const parsed = parseWithSchema(keyPolicySchema, raw, where);
  return { ...parsed, allowedAlgorithms: parsed.allowedAlgorithms ?? [parsed.algorithm] };
}

export interface KeyRequest {
  algorithm?: KeyAlgorithm;
  operation?: KeyOperation;
  messageBytes?: number;
  at?: Date;
}

function violation(rule: string, message: string, details: Record<string, string | number | boolean> = {}): HsmError {
  return new HsmError('PolicyViolation', `${message} (policy rule ${rule})`, { details: { rule, ...details } });
}

/**
 * Refuses what the policy forbids, naming the rule: an algorithm outside `allowedAlgorithms`, an
 * operation outside `allowedOperations`, a message above `maxMessageBytes`, a time outside
 * `timeWindows`.
 */
export function validatePolicy(policy: KeyPolicy, request: KeyRequest): void {
  if (request.algorithm !== undefined && !policy.allowedAlgorithms.includes(request.algorithm)) {
    throw violation('allowedAlgorithms', `${request.algorithm} is not allowed; allowed: ${policy.allowedAlgorithms.join(', ')}`, { algorithm: request.algorithm });
  }
  if (request.operation !== undefined && !policy.allowedOperations.includes(request.operation)) {
    throw violation('allowedOperations', `${request.operation} is not allowed; allowed: ${policy.allowedOperations.join(', ')}`, { operation: request.operation });
  }
  if (request.messageBytes !== undefined && policy.maxMessageBytes !== undefined && request.messageBytes > policy.maxMessageBytes) {
    throw violation('maxMessageBytes', `the message is ${request.messageBytes} bytes; at most ${policy.maxMessageBytes} are allowed`, { limit: policy.maxMessageBytes });
  }
  if (request.at !== undefined && policy.timeWindows && !inWindow(policy.timeWindows, request.at)) {
    const windows = policy.timeWindows.map((w) => `${w.days.join(',')} ${w.start}-${w.end}`).join('; ');
    throw violation('timeWindows', `${request.at.toISOString()} is outside the allowed windows (UTC: ${windows})`);
  }
}

function inWindow(windows: NonNullable<KeyPolicy['timeWindows']>, at: Date): boolean {
  const day = DAYS[at.getUTCDay()]!;
  const previousDay = DAYS[(at.getUTCDay() + 6) % 7]!;
  const minute = at.getUTCHours() * 60 + at.getUTCMinutes();
  const toMinutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));
  return windows.some((w) => {
    const start = toMinutes(w.start);
    const end = toMinutes(w.end);
    if (start <= end) return w.days.includes(day) && minute >= start && minute < end;
    // a window like sat 22:00-02:00 crosses midnight: its early hours are the next day's
    return (w.days.includes(day) && minute >= start) || (w.days.includes(previousDay) && minute < end);
  });
}

export interface MemberAssessment {
  member: string;
  /** The rules the member fails (empty when it satisfies the policy). */
  unmet: string[];
  fipsLevel?: number;
  fipsEvidence?: string;
}

/**
 * The members that satisfy `policy` for a key of its algorithm: the algorithm as measured by
 * `capabilities()`, FIPS level with acceptable evidence, hardware, zone, region. Refuses with
 * PolicyViolation naming every member's unmet rules when fewer than `policy.replicas` qualify.
 */
export async function selectMembersForPolicy(pool: HsmPool, policy: KeyPolicy): Promise<{ members: string[]; assessments: MemberAssessment[] }> {
  const status = new Map(pool.status().map((s) => [s.name, s]));
  const assessments = await Promise.all(
    pool.memberNames().map(async (name): Promise<MemberAssessment> => {
      const s = status.get(name)!;
      const backend = pool.backendOf(name);
      const unmet: string[] = [];
      if (s.reason !== undefined) return { member: name, unmet: [`available (${s.reason})`] };
      try {
        const [caps, fips] = await Promise.all([backend.capabilities(), backend.fipsStatus()]);
        if (!caps.algorithms.includes(policy.algorithm)) unmet.push(`algorithm (${policy.algorithm} not among ${caps.algorithms.join(', ') || 'none'})`);
        const evidenceOk = fips.evidence !== 'none' && (policy.fipsEvidence as string[]).includes(fips.evidence);
        if (policy.minFipsLevel > 0 && (fips.level < policy.minFipsLevel || !evidenceOk)) {
          unmet.push(`minFipsLevel (needs ${policy.minFipsLevel} by ${policy.fipsEvidence.join('/')}; member is level ${fips.level} by ${fips.evidence})`);
        }
        if (policy.hardwareRequired && !caps.hardwareBacked) unmet.push('hardwareRequired (keys are not in a hardware boundary)');
        if (policy.zones && !policy.zones.includes(s.zone ?? '')) unmet.push(`zones (member zone ${s.zone ?? 'unset'} not in ${policy.zones.join(', ')})`);
        if (policy.regions && !policy.regions.includes(s.tags.region ?? '')) unmet.push(`regions (member region ${s.tags.region ?? 'unset'} not in ${policy.regions.join(', ')})`);
        return { member: name, unmet, fipsLevel: fips.level, fipsEvidence: fips.evidence };
      } catch (error) {
        return { member: name, unmet: [`available (${isHsmError(error) ? error.code : 'error'} while reading capabilities)`] };
      }
    }),
  );
  const members = assessments.filter((a) => a.unmet.length === 0).map((a) => a.member);
  // the heaviest members first: they are meant to take most of the work
  members.sort((a, b) => (status.get(b)!.weight - status.get(a)!.weight) || a.localeCompare(b));
  if (members.length < policy.replicas) {
    const rules = [...new Set(assessments.flatMap((a) => a.unmet.map((u) => u.split(' ')[0]!)))];
    throw new HsmError(
      'PolicyViolation',
      `${members.length === 0 ? 'no pool member satisfies' : `only ${members.length} pool member(s) satisfy`} the key policy (needs ${policy.replicas}): ${assessments
        .filter((a) => a.unmet.length > 0)
        .map((a) => `${a.member} fails ${a.unmet.join(', ')}`)
        .join('; ')}`,
      { details: { rule: rules.join(','), satisfied: members.length, required: policy.replicas } },
    );
  }
  return { members: members.slice(0, policy.replicas), assessments };
}
