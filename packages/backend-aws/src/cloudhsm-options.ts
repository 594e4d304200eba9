import { parseWithSchema } from '@olocus/hsm-core';
import { z } from 'zod';
import { awsRetrySchema } from './kms-options.js';

export const awsCloudHsmOptionsSchema = z
  .object({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'must be an AWS region such as eu-west-1'),
    /** The CloudHSM cluster (`cluster-` + 11 characters on AWS). */
    clusterId: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'must be a CloudHSM cluster id such as cluster-abcdefghijk'),
    /** Another endpoint for the CloudHSM v2 control-plane API (VPC endpoint, or an emulator in tests). */
    endpoint: z.string().url().optional(),
    /** A profile of the shared config files; credentials are never part of the config. */
    profile: z.string().min(1).max(128).optional(),
    /** Control-plane calls only (DescribeClusters, DescribeBackups). */
    requestTimeoutMs: z.number().int().min(100).max(120_000).default(5_000),
    retry: awsRetrySchema.default({}),
    /**
     * The options of @olocus/hsm-backend-pkcs11 for the CloudHSM PKCS#11 library: `libraryPath`
     * (default /opt/cloudhsm/lib/libcloudhsm_pkcs11.so), `tokenLabel` (default "hsm1"), `pin`
     * (`{ env }` or `{ file }` holding `user:password`), session pool... The vendor is `cloudhsm`.
     */
    pkcs11: z.record(z.unknown()).default({}),
  })
  .strict()
  .superRefine((o, ctx) => {
    const vendor = o.pkcs11.vendor;
    if (vendor !== undefined && vendor !== 'cloudhsm') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['pkcs11', 'vendor'], message: `must be "cloudhsm" (or absent) for the aws-cloudhsm backend, not ${JSON.stringify(vendor)}` });
    }
  });

export type AwsCloudHsmOptions = z.infer<typeof awsCloudHsmOptionsSchema>;
export type AwsCloudHsmOptionsInput = z.input<typeof awsCloudHsmOptionsSchema>;

export function parseAwsCloudHsmOptions(raw: unknown): AwsCloudHsmOptions {
  return parseWithSchema(awsCloudHsmOptionsSchema, raw ?? {}, 'backend.options');
}
