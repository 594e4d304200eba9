import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { CliError, EXIT_NEGATIVE, fileError } from '../errors.js';
import { checkOutputPath, echo, openOutput, writeTo, type OutputSink } from '../io.js';
import type { CliManager } from '../manager.js';
import { withManagerAndRegistry } from '../rotation.js';
import { parseDateOption, requireAudit } from './audit.js';
import type { CliContext } from '../context.js';

/** `compliance report`: evaluates a framework's rules over a period and writes a signed report. */

const FORMATS = ['json', 'md', 'html'] as const;
type Format = (typeof FORMATS)[number];
const DAY_MS = 86_400_000;

export interface ReportOptions {
  framework?: string;
  from?: string;
  to?: string;
  format?: string;
  out?: string;
  level?: string;
}

/** Writes one sink whole; on any failure its temporary file is removed. */
async function fill(sink: OutputSink, data: string | Uint8Array): Promise<void> {
  await new Promise<void>((ok, fail) => sink.stream.write(data, (error) => (error ? fail(error) : ok())));
}

export async function report(ctx: CliContext, opts: ReportOptions): Promise<void> {
  const compliance = await import('@olocus/hsm-compliance');
  const frameworks = compliance.FRAMEWORKS as readonly string[];
  if (!opts.framework) throw new CliError('InvalidArgument', `--framework is required: one of ${frameworks.join(', ')}`);
  if (!frameworks.includes(opts.framework)) throw new CliError('InvalidArgument', `--framework: "${echo(opts.framework)}" is not one of ${frameworks.join(', ')}`);
  const format = (opts.format ?? 'html') as Format;
  if (!FORMATS.includes(format)) throw new CliError('InvalidArgument', `--format: "${echo(opts.format ?? '')}" is not one of ${FORMATS.join(', ')}`);
  const to = parseDateOption(opts.to, '--to') ?? new Date();
  const from = parseDateOption(opts.from, '--from') ?? new Date(to.getTime() - 30 * DAY_MS);
  if (from >= to) throw new CliError('InvalidArgument', `--from ${from.toISOString()} must be before --to ${to.toISOString()}`);
  let level: 1 | 2 | 3 | 4 | undefined;
  if (opts.level !== undefined) {
    const n = Number(opts.level);
    if (![1, 2, 3, 4].includes(n)) throw new CliError('InvalidArgument', `--level: "${echo(opts.level)}" must be 1, 2, 3 or 4 (FIPS 140 security level)`);
    if (!opts.framework.startsWith('fips-')) throw new CliError('InvalidArgument', '--level applies to the fips-140-2 and fips-140-3 frameworks');
    level = n as 1 | 2 | 3 | 4;
  }
  // `--out -` is standard output, like no --out (a signature needs a file beside the report).
  const toFile = opts.out !== undefined && opts.out !== '-';
  if (toFile) {
    const out = await checkOutputPath(ctx, '--out', opts.out!);
    await checkOutputPath(ctx, '--out', `${out}.sig.json`);
  }
  await withManagerAndRegistry(ctx, async (m, rot) => {
    const manager = m as CliManager;
    const audit = requireAudit(manager);
    await audit.append({ type: 'audit.access', outcome: 'success', details: { action: 'compliance-report', framework: opts.framework!, from: from.toISOString(), to: to.toISOString() } });
    await audit.flush();
    const [info, fips, capabilities] = await Promise.all([manager.info(), manager.fipsStatus(), manager.capabilities()]);
    const inventory = rot ? compliance.inventoryFromRegistry(rot.registry) : compliance.emptyInventory();
    const checker = new compliance.ComplianceManager({
      audit: audit.log,
      inventory,
      modules: [{ backend: manager.backend.type, info, fips, capabilities }],
      auditPublicKey: async () => (await manager.getPublicKey(audit.section.checkpoint.keyId)).spki,
    });
    const result = await checker.generateComplianceReport({ framework: opts.framework as never, from, to, ...(level ? { level } : {}) });
    const text = format === 'json' ? compliance.renderJson(result) : format === 'md' ? compliance.renderMarkdown(result) : compliance.renderHtml(result);
    const bytes = new TextEncoder().encode(text);
    const signature = await compliance.signReport(bytes, audit.checkpointSigner());
    const summary = {
      framework: opts.framework,
      from: from.toISOString(),
      to: to.toISOString(),
      format,
      status: result.summary.status,
      scores: result.scores,
      violations: result.violations.length,
      bySeverity: result.summary.violationsBySeverity,
    };
    if (toFile) {
      // Both files carry audit data (0600); both are written to temporary files first and renamed
      // only when both are complete, so a failure leaves neither a half report nor a stray *.tmp.
      const report = await openOutput(ctx, '--out', opts.out!, { mode: 0o600 });
      let sig: OutputSink | undefined;
      try {
        sig = await openOutput(ctx, '--out', `${report.path}.sig.json`, { mode: 0o600 });
        await fill(report, bytes);
        await fill(sig, JSON.stringify(signature, null, 2) + '\n');
        await report.commit();
        await sig.commit();
      } catch (error) {
        await report.abort();
        await sig?.abort();
        throw error;
      }
      const out = report.path;
      const sigPath = sig.path;
      if (ctx.json) return ctx.printJson({ report: { ...summary, path: out, signature: sigPath } });
      ctx.print(`wrote ${out} (${format}) and its detached signature ${sigPath}`);
      ctx.print(`${opts.framework}: ${result.summary.status}; ${result.violations.length} violation(s); scores: availability ${result.scores.availability.value}, integrity ${result.scores.integrity.value}, confidentiality ${result.scores.confidentiality.value}`);
      return;
    }
    if (ctx.json && format !== 'json') throw new CliError('InvalidArgument', '--json without --out prints the report itself: use --format json, or give --out FILE');
    // Without --out the report goes to stdout as it is; the signature goes nowhere, so say so.
    await writeTo(ctx.stdout, text.endsWith('\n') ? text : text + '\n');
    ctx.note(`olocus-hsm: ${opts.out === '-' ? '--out -' : 'no --out given'}: the report was printed unsigned (give --out FILE for FILE and FILE.sig.json)`);
  });
}

/** `compliance verify-report`: the report's bytes against its detached signature and the audit key. */
export async function verifyReport(ctx: CliContext, opts: { report?: string; signature?: string }): Promise<void> {
  if (!opts.report) throw new CliError('InvalidArgument', '--report FILE is required (a report written by compliance report --out FILE)');
  const reportPath = resolve(ctx.cwd, opts.report);
  const sigPath = resolve(ctx.cwd, opts.signature ?? `${opts.report}.sig.json`);
  const [bytes, sigText] = await Promise.all([
    readFile(reportPath).catch((cause) => {
      throw fileError('--report', reportPath, cause);
    }),
    readFile(sigPath, 'utf8').catch((cause) => {
      throw fileError(opts.signature ? '--signature' : '--signature (default REPORT.sig.json)', sigPath, cause);
    }),
  ]);
  let doc: unknown;
  try {
    doc = JSON.parse(sigText);
  } catch (cause) {
    throw new CliError('InvalidArgument', `--signature ${sigPath}: not a signature document (${(cause as Error).message}); give the FILE.sig.json that compliance report --out FILE wrote`);
  }
  const compliance = await import('@olocus/hsm-compliance');
  await withManagerAndRegistry(ctx, async (m) => {
    const manager = m as CliManager;
    const audit = requireAudit(manager);
    // The public key comes from the backend, not from the signature document beside the report.
    const { spki } = await manager.getPublicKey(audit.section.checkpoint.keyId);
    const result = await compliance.verifyReportSignature(new Uint8Array(bytes), doc as never, spki);
    if (!result.valid) ctx.exitCode = EXIT_NEGATIVE;
    if (ctx.json) return ctx.printJson({ report: reportPath, signature: sigPath, ...result });
    if (result.valid) ctx.print(`valid: ${reportPath} is as signed by ${audit.section.checkpoint.keyId}`);
    else ctx.note(`olocus-hsm: ALTERED: ${reportPath}: ${result.message}`);
  });
}
