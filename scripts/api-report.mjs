// Writes or checks the public API report of every package (API Extractor's .api.md files in
// packages/*/etc/), one per entry point in package.json "exports". Run after `pnpm build`.
//   node scripts/api-report.mjs           check: fails when a report is stale (CI)
//   node scripts/api-report.mjs --update  rewrite the reports after an intended API change
import { Extractor, ExtractorConfig } from '@microsoft/api-extractor';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const update = process.argv.includes('--update');
let failed = 0;

for (const folder of readdirSync(join(root, 'packages')).sort()) {
  const dir = join(root, 'packages', folder);
  const packageJsonFullPath = join(dir, 'package.json');
  if (!existsSync(packageJsonFullPath)) continue;
  const pkg = JSON.parse(readFileSync(packageJsonFullPath, 'utf8'));
  if (pkg.private) continue;
  for (const [subpath, target] of Object.entries(pkg.exports ?? {})) {
    const types = typeof target === 'object' ? target.types : undefined;
    if (!types) continue;
    const suffix = subpath === '.' ? '' : '-' + subpath.replace(/^\.\//, '').replace(/\W+/g, '-');
    const reportFileName = `${pkg.name.split('/').pop()}${suffix}.api.md`;
    mkdirSync(join(dir, 'etc'), { recursive: true });
    const config = ExtractorConfig.prepare({
      configObject: {
        projectFolder: dir,
        mainEntryPointFilePath: join(dir, types),
        compiler: { overrideTsconfig: { compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', lib: ['ES2023'], types: ['node'], skipLibCheck: true, strict: true } } },
        apiReport: { enabled: true, reportFileName, reportFolder: join(dir, 'etc'), reportTempFolder: join(dir, 'temp') },
        docModel: { enabled: false },
        dtsRollup: { enabled: false },
        tsdocMetadata: { enabled: false },
        messages: {
          extractorMessageReporting: {
            default: { logLevel: 'none' },
            'ae-forgotten-export': { logLevel: 'none' },
          },
          compilerMessageReporting: { default: { logLevel: 'warning' } },
          tsdocMessageReporting: { default: { logLevel: 'none' } },
        },
      },
      configObjectFullPath: join(dir, 'api-extractor.json'),
      packageJsonFullPath,
    });
    const result = Extractor.invoke(config, { localBuild: update, showVerboseMessages: false, messageCallback: (m) => {
      if (m.logLevel === 'warning' || m.logLevel === 'error') console.error(`${pkg.name}${subpath === '.' ? '' : subpath.slice(1)}: ${m.text}`);
      m.handled = true;
    } });
    const label = `${pkg.name}${subpath === '.' ? '' : subpath.slice(1)}`;
    if (result.apiReportChanged && !update) {
      failed++;
      console.error(`${label}: the public API changed and packages/${folder}/etc/${reportFileName} is stale — review the change, then run: node scripts/api-report.mjs --update`);
    } else if (!result.succeeded && !result.apiReportChanged) {
      failed++;
      console.error(`${label}: API Extractor failed (${result.errorCount} errors)`);
    } else {
      console.log(`${label}: ${result.apiReportChanged ? 'report updated' : 'report up to date'}`);
    }
  }
}
process.exit(failed ? 1 : 0);
