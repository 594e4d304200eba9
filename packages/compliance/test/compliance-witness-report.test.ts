import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { describe, expect, it } from 'vitest';
import { ComplianceManager, renderJson, renderMarkdown, staticInventory } from '../src/index.js';
import { hsmModule, softwareModule } from './fixtures-compliance/builders.js';
import { GOLDEN_CONFIG, GOLDEN_FROM, GOLDEN_NOW, GOLDEN_TO, goldenKeys, goldenRecords } from './fixtures-compliance/golden-fixture.js';
import { defaultSettings, MemoryAuditReader } from './fixtures-compliance/memory-audit.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const SCHEMA = join(dirname(fileURLToPath(import.meta.url)), '..', 'schema', 'report.schema.json');

/** A rolled-back log found by its witness (issue 18 item 6) reaches the compliance report: named, with the witnesses, schema-valid, integrity 0. */
describe('a witnessed rollback in the compliance report', () => {
  it('auditIntegrity carries problem rollback and the witnesses consulted; the JSON validates', async () => {
    const reader = new MemoryAuditReader(goldenRecords(), defaultSettings(), {
      ok: false,
      problem: 'rollback',
      firstBadSeq: 13,
      message: 'ROLLBACK: the log ends at record 12, but file /mnt/w/audit.witness witnessed a checkpoint of 20 records',
      witnesses: [
        { witness: 'file /mnt/w/audit.witness', kind: 'file', status: 'consulted', size: 20, headHash: 'ab'.repeat(32), time: '2026-05-01T00:00:00.000Z' },
        { witness: 'syslog udp://127.0.0.1:514', kind: 'syslog', status: 'write-only', message: 'receives checkpoints but cannot be asked for them' },
      ],
      witnessed: { size: 20, headHash: 'ab'.repeat(32), time: '2026-05-01T00:00:00.000Z', witness: 'file /mnt/w/audit.witness' },
    });
    const manager = new ComplianceManager({ audit: reader, inventory: staticInventory(goldenKeys(), 'golden fixture'), modules: [hsmModule('pkcs11', { evidence: 'attested' }), softwareModule()], config: GOLDEN_CONFIG, clock: () => GOLDEN_NOW });
    const report = await manager.generateComplianceReport({ framework: 'pci-dss', from: GOLDEN_FROM, to: GOLDEN_TO });
    expect(report.auditIntegrity).toMatchObject({
      ok: false,
      problem: 'rollback',
      firstBadSeq: 13,
      witnesses: [
        { witness: 'file /mnt/w/audit.witness', kind: 'file', status: 'consulted', size: 20 },
        { witness: 'syslog udp://127.0.0.1:514', kind: 'syslog', status: 'write-only' },
      ],
    });
    expect(report.scores.integrity.value).toBe(0);
    const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
    addFormats(ajv);
    const validate = ajv.compile(JSON.parse(readFileSync(SCHEMA, 'utf8')) as Record<string, unknown>);
    expect(validate(JSON.parse(renderJson(report))), JSON.stringify(validate.errors)).toBe(true);
    expect(renderMarkdown(report)).toContain('rollback at seq 13');
  });
});
