/**
 * Runs `attempt` again while it fails with an error `shouldRetry` accepts and `timeoutMs` has not
 * passed since the first try, waiting between tries a jittered delay that doubles from
 * `firstDelayMs` up to `maxDelayMs`. The waits are timers, never a blocked thread: the storages use
 * it for SQLite answering SQLITE_BUSY while another process holds the lock (their synchronous
 * driver's own busy wait would stop the event loop). The last error is thrown as it was.
 */
export async function retryWhile<T>(
  attempt: () => T | Promise<T>,
  shouldRetry: (error: unknown) => boolean,
  options: { timeoutMs: number; firstDelayMs?: number; maxDelayMs?: number },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  const maxDelayMs = options.maxDelayMs ?? 100;
  for (let delay = options.firstDelayMs ?? 1; ; delay = Math.min(delay * 2, maxDelayMs)) {
    try {
      return await attempt();
    } catch (error) {
      if (!shouldRetry(error) || Date.now() >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random())));
    }
  }
}

/** The error better-sqlite3 (and so SQLite) raises when another connection holds the lock it needs. */
export function isSqliteBusy(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === 'SQLITE_BUSY';
}
