import { describe, expect, it } from 'vitest';
import { mapAwsError, retryClassOf } from '../src/index.js';

// Pure: the mapping table of the README, for error shapes as the AWS SDK v3 raises them.
const context = { operation: 'Sign', service: 'AWS KMS', subject: 'payments', fallback: 'SigningFailed' as const };
const awsError = (name: string, message = 'x', status = 400) => Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status, requestId: 'req-1' } });

describe('AWS error mapping', () => {
  it.each([
    ['NotFoundException', 'KeyNotFound', false],
    ['DisabledException', 'KeyDisabled', false],
    ['KMSInvalidStateException', 'KeyDisabled', false],
    ['AccessDeniedException', 'PermissionDenied', false],
    ['UnrecognizedClientException', 'AuthenticationFailed', false],
    ['InvalidSignatureException', 'AuthenticationFailed', false],
    ['ExpiredTokenException', 'AuthenticationFailed', false],
    ['ThrottlingException', 'DeviceUnavailable', true],
    ['LimitExceededException', 'DeviceUnavailable', true],
    ['KMSInternalException', 'DeviceUnavailable', true],
    ['DependencyTimeoutException', 'DeviceUnavailable', true],
    ['ValidationException', 'InvalidArgument', false],
    ['InvalidKeyUsageException', 'InvalidArgument', false],
    ['AlreadyExistsException', 'KeyAlreadyExists', false],
    ['SomethingNewException', 'SigningFailed', false],
  ] as const)('%s → %s (retryable %s)', (name, code, retryable) => {
    const error = mapAwsError(awsError(name), context);
    expect(error.code).toBe(code);
    expect(error.retryable).toBe(retryable);
    expect(error.details.awsError).toBe(name);
    expect(error.details.requestId).toBe('req-1');
  });

  it('says when a key is pending deletion', () => {
    const error = mapAwsError(awsError('KMSInvalidStateException', 'arn:aws:kms:eu-west-1:1:key/abc is pending deletion.'), context);
    expect(error.details.state).toBe('pending-deletion');
    expect(error.message).toMatch(/pending deletion/);
  });

  it('maps network failures and timeouts to a retryable DeviceUnavailable', () => {
    for (const failure of [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), Object.assign(new Error('t'), { name: 'TimeoutError' }), Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })]) {
      expect(retryClassOf(failure)).toBe('transient');
      const error = mapAwsError(failure, context);
      expect(error.code).toBe('DeviceUnavailable');
      expect(error.retryable).toBe(true);
    }
    expect(retryClassOf(awsError('ThrottlingException'))).toBe('throttled');
    expect(retryClassOf(awsError('Whatever', 'x', 429))).toBe('throttled');
    expect(retryClassOf(awsError('NotFoundException'))).toBe('final');
  });

  it('names where the SDK looked for credentials, and never repeats a key from an AWS message', () => {
    const missing = mapAwsError(Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), context);
    expect(missing.code).toBe('AuthenticationFailed');
    expect(missing.message).toMatch(/AWS_ACCESS_KEY_ID.*AWS_WEB_IDENTITY_TOKEN_FILE.*AWS_CONTAINER_CREDENTIALS/s);
    const leaky = mapAwsError(awsError('ValidationException', 'bad request from AKIAIOSFODNN7EXAMPLE with wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYEXAMPLE'), context);
    expect(leaky.message).not.toContain('AKIAIOSFODNN7EXAMPLE');
    expect(leaky.message).not.toContain('wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYEXAMPLE');
  });
});
