import { describe, expect, it } from 'vitest';
import { awsBackendConfig, awsInitFlags } from '../src/init-aws.js';

describe('init --backend aws-kms / aws-cloudhsm', () => {
  it('builds the aws-kms section from the flags, with no secret in it', () => {
    expect(awsBackendConfig({ backend: 'aws-kms', region: 'eu-west-1', endpoint: 'https://kms.eu-west-1.amazonaws.com/', profile: 'prod', maxConcurrency: '32', deletionWindowDays: '7' })).toEqual({
      type: 'aws-kms',
      options: { region: 'eu-west-1', endpoint: 'https://kms.eu-west-1.amazonaws.com', profile: 'prod', maxConcurrency: 32, deletionWindowDays: 7 },
    });
    expect(awsBackendConfig({ region: 'us-east-1' })).toEqual({ type: 'aws-kms', options: { region: 'us-east-1' } });
  });

  it('builds the aws-cloudhsm section with a PKCS#11 part whose PIN is only a source', () => {
    expect(awsBackendConfig({ backend: 'aws-cloudhsm', region: 'eu-west-1', clusterId: 'cluster-abcdefghijk', module: '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so', pinEnv: 'CU_PIN' })).toEqual({
      type: 'aws-cloudhsm',
      options: { region: 'eu-west-1', clusterId: 'cluster-abcdefghijk', pkcs11: { libraryPath: '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so', pin: { env: 'CU_PIN' } } },
    });
    const byFile = awsBackendConfig({ backend: 'aws-cloudhsm', region: 'eu-west-1', clusterId: 'cluster-abcdefghijk', module: '/m.so', pinFile: '/run/secrets/cu' });
    expect((byFile.options.pkcs11 as { pin: unknown }).pin).toEqual({ file: '/run/secrets/cu' });
  });

  it('names the flag that is missing or wrong', () => {
    expect(() => awsBackendConfig({ backend: 'aws-kms' })).toThrow(/--region is required/);
    expect(() => awsBackendConfig({ region: 'Europe' })).toThrow(/--region must be an AWS region/);
    expect(() => awsBackendConfig({ region: 'eu-west-1', deletionWindowDays: '3' })).toThrow(/--deletion-window-days must be an integer from 7 to 30/);
    expect(() => awsBackendConfig({ region: 'eu-west-1', endpoint: 'not a url' })).toThrow(/--endpoint is not a URL/);
    expect(() => awsBackendConfig({ region: 'eu-west-1', clusterId: 'cluster-x' })).toThrow(/--cluster-id applies to --backend aws-cloudhsm/);
    expect(() => awsBackendConfig({ backend: 'aws-cloudhsm', region: 'eu-west-1', module: '/m.so' })).toThrow(/--cluster-id is required/);
    expect(() => awsBackendConfig({ backend: 'aws-cloudhsm', region: 'eu-west-1', clusterId: 'cluster-a' })).toThrow(/--module is required/);
    expect(() => awsBackendConfig({ backend: 'aws-cloudhsm', region: 'eu-west-1', clusterId: 'cluster-a', module: '/m.so', pinEnv: 'user:password' })).toThrow(/--pin-env must be an environment variable name/);
    expect(() => awsBackendConfig({ backend: 'aws-cloudhsm', region: 'eu-west-1', clusterId: 'cluster-a', module: '/m.so', accountId: '111122223333' })).toThrow(/--account-id applies to --backend aws-kms/);
  });

  it('declares its flags without colliding with the PKCS#11 ones it reuses', () => {
    const names = awsInitFlags.map((f) => f.flags.split(' ')[0]);
    expect(new Set(names).size).toBe(names.length);
    for (const reused of ['--module', '--token-label', '--pin-file', '--backend']) expect(names).not.toContain(reused);
  });
});
