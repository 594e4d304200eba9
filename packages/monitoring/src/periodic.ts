/**
 * Runs `task` now and then `intervalMs` after each run ends (never two at once), on unref'd
 * timers so a monitor never keeps a process alive. Shared by HealthMonitor and CryptoperiodWatch.
 */
export class PeriodicRunner {
  private timer: NodeJS.Timeout | undefined;
  private started = false;

  constructor(
    private readonly task: () => Promise<unknown>,
    private readonly intervalMs: number,
    private readonly onError: (error: unknown) => void = () => undefined,
  ) {}

  get isRunning(): boolean {
    return this.started;
  }

  /** Idempotent. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const tick = (): void => {
      this.task()
        .catch((error: unknown) => this.onError(error))
        .finally(() => {
          if (!this.started) return;
          this.timer = setTimeout(tick, this.intervalMs);
          this.timer.unref();
        });
    };
    tick();
  }

  /** No further runs; a run in progress is the owner's to await. */
  stop(): void {
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
