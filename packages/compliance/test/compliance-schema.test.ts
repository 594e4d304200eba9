import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { beforeAll, describe, expect, it } from 'vitest';
import { renderJson, type ComplianceReport } from '../src/report/index.js';
import { GOLDEN_FROM, GOLDEN_TO, goldenManager } from './fixtures-compliance/golden-fixture.js';

const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

function validator() {
  // Resolved through the package's own export map, as a consumer would: @olocus/hsm-compliance/report.schema.json.
  const require = createRequire(join(PACKAGE_DIR, 'package.json'));
  const schemaPath = require.resolve('@olocus/hsm-compliance/report.schema.json');
  expect(schemaPath).toBe(join(PACKAGE_DIR, 'schema', 'report.schema.json'));
  const schema = JSON.parse(readFileSync(schemaPath, 'utf8')) as Record<string, unknown>;
  expect(schema['$schema']).toBe('https://json-schema.org/draft/2020-12/schema');
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
  addFormats(ajv);
  return ajv.compile(schema);
}

describe('report JSON schema (draft 2020-12)', () => {
  let validate: ReturnType<typeof validator>;
  const reports: Record<string, ComplianceReport> = {};
  beforeAll(async () => {
    validate = validator();
    for (const framework of ['pci-dss', 'common-criteria', 'fips-140-3', 'fisma', 'soc2', 'fips-140-2'] as const) {
      const { manager } = goldenManager();
      reports[framework] = await manager.generateComplianceReport({ framework, from: GOLDEN_FROM, to: GOLDEN_TO, ...(framework.startsWith('fips') ? { level: 3 as const } : {}) });
    }
  });

  it('every framework\'s rendered JSON validates', () => {
    for (const [framework, report] of Object.entries(reports)) {
      const ok = validate(JSON.parse(renderJson(report)));
      expect({ framework, errors: validate.errors ?? null }).toEqual({ framework, errors: null });
      expect(ok).toBe(true);
    }
    expect(reports['common-criteria']!.commonCriteria?.keys.length).toBeGreaterThan(0);
  });

  it('invalid reports fail validation, naming the place', () => {
    const base = JSON.parse(renderJson(reports['pci-dss']!)) as Record<string, any>;
    const cases: [string, (r: Record<string, any>) => void, string][] = [
      ['score above 100', (r) => (r.scores.integrity.value = 150), '/scores/integrity/value'],
      ['unknown severity', (r) => (r.violations[0].severity = 'SEVERE'), '/violations/0/severity'],
      ['a pass in the violations list', (r) => (r.violations[0].status = 'pass'), '/violations/0/status'],
      ['missing metadata', (r) => delete r.metadata, ''],
      ['not a date-time', (r) => (r.metadata.generatedAt = 'yesterday'), '/metadata/generatedAt'],
      ['extra property', (r) => (r.summary.secret = 'x'), '/summary'],
      ['negative count', (r) => (r.metrics.totals.signs = -1), '/metrics/totals/signs'],
    ];
    for (const [name, mutate, path] of cases) {
      const copy = structuredClone(base);
      mutate(copy);
      expect(validate(copy), name).toBe(false);
      expect(validate.errors!.some((e) => e.instancePath === path), `${name}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
  });
});
