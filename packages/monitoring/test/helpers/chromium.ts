import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/**
 * Debian's Chromium driven by playwright-core (no browser download). Fails, never skips, when
 * it is missing. A fresh profile directory (playwright passes it as --user-data-dir) per launch.
 */
export async function launchChromium(): Promise<{ browser: BrowserContext; dispose: () => Promise<void> }> {
  if (!existsSync(CHROMIUM)) throw new Error(`the /status page test needs Debian's Chromium at ${CHROMIUM}: apt-get install chromium`);
  const profile = mkdtempSync(join(tmpdir(), 'olocus-monitoring-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    browser,
    dispose: async () => {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
