import { KEY_ALGORITHMS, parseWithSchema, type KeyAlgorithm } from '@olocus/hsm-core';
import { z } from 'zod';

/** Every algorithm of the contract has an AWS KMS key spec (Ed25519 since KMS added ECC_NIST_EDWARDS25519). */
export const KMS_ALGORITHMS: readonly KeyAlgorithm[] = KEY_ALGORITHMS;

export const awsRetrySchema = z
  .object({
    /** Total time a call may spend retrying throttling and network failures, first attempt included. */
    totalTimeMs: z.number().int().min(0).max(600_000).default(10_000),
    /** First backoff; doubles per attempt, with full jitter. */
    baseDelayMs: z.number().int().min(1).max(10_000).default(50),
    maxDelayMs: z.number().int().min(1).max(60_000).default(2_000),
  })
  .strict();

export const awsKmsOptionsSchema = z
  .object({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'must be an AWS region such as eu-west-1'),
    /** Another endpoint (VPC endpoint, FIPS endpoint, or an emulator in tests). */
    endpoint: z.string().url().optional(),
    /** A profile of the shared config files; credentials are never part of the config. */
    profile: z.string().min(1).max(128).optional(),
    /**
     * The account the keys live in, for the instance identity. When absent it is read from the
     * ARNs ListAliases returns (AWS lists its managed aliases in every account).
     */
    accountId: z.string().regex(/^\d{12}$/, 'must be a 12-digit AWS account id').optional(),
    /** Aliases are `alias/<aliasPrefix><encoded id>`. */
    aliasPrefix: z
      .string()
      .regex(/^[A-Za-z0-9/_-]{1,64}\/$/, "must be letters, digits, '/', '_' or '-' and end with '/'")
      .refine((p) => !p.startsWith('aws/'), "must not start with 'aws/' (reserved by AWS)")
      .default('olocus/'),
    maxConcurrency: z.number().int().min(1).max(1024).default(64),
    /** One HTTP attempt; a call as a whole is bounded by retry.totalTimeMs. */
    requestTimeoutMs: z.number().int().min(100).max(120_000).default(5_000),
    /** CreateKey alone: RSA-4096 generation may take longer than a signature. Never retried after a timeout. */
    keyCreationTimeoutMs: z.number().int().min(100).max(600_000).default(60_000),
    deletionWindowDays: z.number().int().min(7).max(30).default(30),
    retry: awsRetrySchema.default({}),
    /** The algorithms this account and region offer (Ed25519 is not in every region). */
    algorithms: z
      .array(z.enum(KEY_ALGORITHMS as unknown as [KeyAlgorithm, ...KeyAlgorithm[]]))
      .min(1)
      .optional(),
    /** How long a resolved key (ARN, algorithm, tags) is reused before DescribeKey is asked again. */
    keyCacheTtlMs: z.number().int().min(0).max(3_600_000).default(60_000),
    /**
     * Keys tagged by this library but left without an alias (a crash between CreateKey and
     * CreateAlias) younger than this are left alone: another process may be creating them now.
     */
    orphanGraceMs: z.number().int().min(0).max(86_400_000).default(600_000),
  })
  .strict();

export type AwsKmsOptions = z.infer<typeof awsKmsOptionsSchema>;
export type AwsKmsOptionsInput = z.input<typeof awsKmsOptionsSchema>;

export function parseAwsKmsOptions(raw: unknown): AwsKmsOptions {
  return parseWithSchema(awsKmsOptionsSchema, raw ?? {}, 'backend.options');
}
