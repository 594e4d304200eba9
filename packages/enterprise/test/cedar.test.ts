import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CedarAuthorizer, readPolicyDirectory, type AuthorizationRequest, type OperationContext } from '../src/index.js';
import type { KeyOperation } from '../src/index.js';

const fixtures = join(import.meta.dirname, 'fixtures', 'policies');

function authorizer(): CedarAuthorizer {
  const a = new CedarAuthorizer();
  a.loadGlobal(readPolicyDirectory(join(fixtures, 'global')));
  a.loadApplication('payments', readPolicyDirectory(join(fixtures, 'payments')));
  a.loadApplication('hr', readPolicyDirectory(join(fixtures, 'hr')));
  return a;
}

type Principal = AuthorizationRequest['principal'];
const app = (id: string): Principal => ({ type: 'Application', id });
const caller = (id: string, groups: string[] = [], roles: string[] = []): Principal => ({ type: 'Caller', id, groups, roles });
const at = (hour: number) => new Date(Date.UTC(2026, 11, 2, hour, 30));

interface Case {
  name: string;
  principal: Principal;
  action: KeyOperation;
  application: string;
  tags?: Record<string, string>;
  context?: OperationContext;
  hour?: number;
  allow: boolean;
}

const CASES: Case[] = [
  { name: 'payments app signs its key', principal: app('payments'), action: 'sign', application: 'payments', allow: true },
  { name: 'payments app verifies with its key', principal: app('payments'), action: 'verify', application: 'payments', allow: true },
  { name: 'payments app may not rotate', principal: app('payments'), action: 'rotate', application: 'payments', allow: false },
  { name: 'payments app may not destroy', principal: app('payments'), action: 'destroy', application: 'payments', allow: false },
  { name: 'payments app may not back up', principal: app('payments'), action: 'backup', application: 'payments', allow: false },
  { name: 'payments app cannot sign an hr key', principal: app('payments'), action: 'sign', application: 'hr', tags: { env: 'prod' }, allow: false },
  { name: 'payments app, secret data: forbidden', principal: app('payments'), action: 'sign', application: 'payments', context: { classification: 'secret' }, allow: false },
  { name: 'payments app, internal data', principal: app('payments'), action: 'sign', application: 'payments', context: { classification: 'internal' }, allow: true },
  { name: 'restricted key from 10/8', principal: app('payments'), action: 'sign', application: 'payments', tags: { classification: 'restricted' }, context: { sourceAddress: '10.1.2.3' }, allow: true },
  { name: 'restricted key from outside', principal: app('payments'), action: 'sign', application: 'payments', tags: { classification: 'restricted' }, context: { sourceAddress: '192.168.1.1' }, allow: false },
  { name: 'restricted key, no address', principal: app('payments'), action: 'sign', application: 'payments', tags: { classification: 'restricted' }, allow: false },
  { name: 'restricted verify from outside', principal: app('payments'), action: 'verify', application: 'payments', tags: { classification: 'restricted' }, context: { sourceAddress: '8.8.8.8' }, allow: false },
  { name: 'team member signs an invoice at 09:30', principal: caller('alice', ['payments-team']), action: 'sign', application: 'payments', context: { purpose: 'invoice' }, hour: 9, allow: true },
  { name: 'team member signs an invoice at 17:30', principal: caller('alice', ['payments-team']), action: 'sign', application: 'payments', context: { purpose: 'invoice' }, hour: 17, allow: true },
  { name: 'team member at 18:30: outside hours', principal: caller('alice', ['payments-team']), action: 'sign', application: 'payments', context: { purpose: 'invoice' }, hour: 18, allow: false },
  { name: 'team member at 07:30: outside hours', principal: caller('alice', ['payments-team']), action: 'sign', application: 'payments', context: { purpose: 'invoice' }, hour: 7, allow: false },
  { name: 'team member, other purpose', principal: caller('alice', ['payments-team']), action: 'sign', application: 'payments', context: { purpose: 'refund' }, hour: 9, allow: false },
  { name: 'team member, no purpose', principal: caller('alice', ['payments-team']), action: 'sign', application: 'payments', hour: 9, allow: false },
  { name: 'outsider signs an invoice', principal: caller('mallory', ['marketing']), action: 'sign', application: 'payments', context: { purpose: 'invoice' }, hour: 9, allow: false },
  { name: 'team member signs hr key', principal: caller('alice', ['payments-team']), action: 'sign', application: 'hr', tags: { env: 'prod' }, context: { purpose: 'invoice' }, hour: 9, allow: false },
  { name: 'key admin rotates a payments key', principal: caller('bob', [], ['key-admin']), action: 'rotate', application: 'payments', allow: true },
  { name: 'non-admin rotates', principal: caller('carol', [], ['auditor']), action: 'rotate', application: 'payments', allow: false },
  { name: 'key admin rotates an hr key', principal: caller('bob', [], ['key-admin']), action: 'rotate', application: 'hr', allow: false },
  { name: 'officer destroys with ticket and 2 approvals', principal: caller('olga', ['security-officers']), action: 'destroy', application: 'hr', context: { ticketId: 'CHG-1', approvals: 2 }, allow: true },
  { name: 'officer destroys with 1 approval', principal: caller('olga', ['security-officers']), action: 'destroy', application: 'hr', context: { ticketId: 'CHG-1', approvals: 1 }, allow: false },
  { name: 'officer destroys without a ticket', principal: caller('olga', ['security-officers']), action: 'destroy', application: 'payments', context: { approvals: 3 }, allow: false },
  { name: 'ops destroys', principal: caller('oscar', ['ops']), action: 'destroy', application: 'payments', context: { ticketId: 'CHG-2', approvals: 2 }, allow: false },
  { name: 'ops exports a public key', principal: caller('oscar', ['ops']), action: 'export-public', application: 'hr', allow: true },
  { name: 'ops exports a restricted public key from outside', principal: caller('oscar', ['ops']), action: 'export-public', application: 'hr', tags: { classification: 'restricted' }, context: { sourceAddress: '172.16.0.1' }, allow: false },
  { name: 'ops signs', principal: caller('oscar', ['ops']), action: 'sign', application: 'payments', allow: false },
  { name: 'hr app signs a prod key', principal: app('hr'), action: 'sign', application: 'hr', tags: { env: 'prod' }, allow: true },
  { name: 'hr app signs a dev key', principal: app('hr'), action: 'sign', application: 'hr', tags: { env: 'dev' }, allow: false },
  { name: 'hr app signs an untagged key', principal: app('hr'), action: 'sign', application: 'hr', allow: false },
  { name: 'hr app verifies (no permit)', principal: app('hr'), action: 'verify', application: 'hr', tags: { env: 'prod' }, allow: false },
  { name: 'unknown app, no policies of its own', principal: app('ghost'), action: 'sign', application: 'ghost', allow: false },
  { name: 'ops exports a public key of an app with no own policies', principal: caller('oscar', ['ops']), action: 'export-public', application: 'ghost', allow: true },
  { name: 'malformed source address is a deny', principal: app('payments'), action: 'sign', application: 'payments', context: { sourceAddress: 'not-an-ip' }, allow: false },
];

describe('Cedar authorization', () => {
  const a = authorizer();
  it(`decides ${CASES.length} allow/deny cases as expected`, () => {
    expect(CASES.length).toBeGreaterThanOrEqual(30);
    const wrong: string[] = [];
    for (const c of CASES) {
      const decision = a.authorize({
        principal: c.principal,
        action: c.action,
        resource: { application: c.application, keyId: `${c.application}.v1`, algorithm: 'ECDSA_P256', version: 1, tags: c.tags ?? {} },
        context: c.context ?? {},
        at: at(c.hour ?? 12),
      });
      if (decision.allowed !== c.allow) wrong.push(`${c.name}: expected ${c.allow ? 'allow' : 'deny'}, got ${decision.allowed ? 'allow' : 'deny'} ${JSON.stringify(decision)}`);
      expect(decision.policyVersion).toMatch(/^global:[0-9a-f]{16}/);
      if (decision.allowed) expect(decision.determining.length).toBeGreaterThan(0);
    }
    expect(wrong).toEqual([]);
  });

  it('records which policies decided and the policy version', () => {
    const d = a.authorize({ principal: app('payments'), action: 'sign', resource: { application: 'payments', keyId: 'p.v1', algorithm: 'Ed25519', version: 1 }, context: { classification: 'secret' } });
    expect(d.allowed).toBe(false);
    expect(d.determining).toEqual(['global/10-guards.cedar#1']);
    expect(d.policyVersion).toMatch(/^global:[0-9a-f]{16}\/app:[0-9a-f]{16}$/);
    const before = d.policyVersion;
    a.loadApplication('payments', [{ file: 'payments/v2.cedar', text: 'permit (principal, action, resource in Olocus::Application::"payments");' }]);
    const after = a.authorize({ principal: app('x'), action: 'backup', resource: { application: 'payments', keyId: 'p.v1', algorithm: 'Ed25519', version: 1 } });
    expect(after.allowed).toBe(true);
    expect(after.policyVersion).not.toBe(before);
    expect(after.determining).toEqual(['payments/v2.cedar#0']);
  });

  it('names the file, line and column of a syntax error', () => {
    const text = 'permit (principal, action, resource);\n\npermit (principal, action resource);\n';
    expect(() => CedarAuthorizer.check([{ file: 'policies/bad.cedar', text }])).toThrow(/Cedar syntax error in policies\/bad\.cedar:3:\d+/);
  });

  it('names the file and line of a schema error (unknown attribute, unknown entity type, unknown action)', () => {
    const attr = 'permit (principal, action, resource)\nwhen {\n  resource.owner == "x"\n};\n';
    expect(() => CedarAuthorizer.check([{ file: 'p/attr.cedar', text: attr }])).toThrow(/Cedar schema error in p\/attr\.cedar:3:\d+/);
    const type = '// a comment\npermit (principal == Olocus::User::"u", action, resource);\n';
    expect(() => CedarAuthorizer.check([{ file: 'p/type.cedar', text: type }])).toThrow(/p\/type\.cedar:2:\d+/);
    const action = 'permit (principal, action == Olocus::Action::"encrypt", resource);';
    expect(() => CedarAuthorizer.check([{ file: 'p/action.cedar', text: action }])).toThrow(/p\/action\.cedar:1:\d+/);
    try {
      CedarAuthorizer.check([{ file: 'p/attr.cedar', text: attr }]);
    } catch (error) {
      expect(error).toMatchObject({ code: 'InvalidConfiguration', details: { file: 'p/attr.cedar', line: 3 } });
    }
  });

  it('a failed load leaves the previous policies in force', () => {
    const b = authorizer();
    const version = b.policyVersion('payments');
    expect(() => b.loadApplication('payments', [{ file: 'x.cedar', text: 'permit (' }])).toThrow(/x\.cedar/);
    expect(b.policyVersion('payments')).toBe(version);
    expect(b.authorize({ principal: app('payments'), action: 'sign', resource: { application: 'payments', keyId: 'k', algorithm: 'Ed25519', version: 1 } }).allowed).toBe(true);
  });

  it('caches a decision for an identical request under the same policy version only', () => {
    let t = 0;
    const c = new CedarAuthorizer({ decisionCacheMs: 1000, now: () => t });
    c.loadApplication('payments', [{ file: 'p.cedar', text: 'permit (principal == Olocus::Application::"payments", action, resource);' }]);
    const req = { principal: app('payments'), action: 'sign' as const, resource: { application: 'payments', keyId: 'p.v1', algorithm: 'Ed25519', version: 1 }, context: { purpose: 'x' }, at: at(10) };
    expect(c.authorize(req)).toMatchObject({ allowed: true });
    expect(c.authorize(req).cached).toBe(true);
    expect(c.authorize({ ...req, context: { purpose: 'y' } }).cached).toBeUndefined();
    expect(c.authorize({ ...req, at: at(11) }).cached).toBeUndefined();
    t = 1001;
    expect(c.authorize(req).cached).toBeUndefined();
    c.loadApplication('payments', [{ file: 'p.cedar', text: 'forbid (principal, action, resource);' }]);
    expect(c.authorize(req)).toMatchObject({ allowed: false });
    expect(c.authorize(req)).toMatchObject({ allowed: false, cached: true });
    const uncached = new CedarAuthorizer({ decisionCacheMs: 0 });
    uncached.loadApplication('payments', [{ file: 'p.cedar', text: 'permit (principal, action, resource);' }]);
    uncached.authorize(req);
    expect(uncached.authorize(req).cached).toBeUndefined();
  });
});
