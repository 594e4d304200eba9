import { describe, expect, it } from 'vitest';
import { isSqliteBusy, retryWhile } from '../src/index.js';

const busy = () => Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });

describe('retryWhile', () => {
  it('tries again while the error is accepted, and returns the first success', async () => {
    let tries = 0;
    const value = await retryWhile(
      () => {
        if (++tries < 4) throw busy();
        return 'done';
      },
      isSqliteBusy,
      { timeoutMs: 5_000 },
    );
    expect(value).toBe('done');
    expect(tries).toBe(4);
  });

  it('throws at once an error it does not accept, and the last error once the time is up', async () => {
    let tries = 0;
    const other = new Error('disk I/O error');
    await expect(
      retryWhile(
        () => {
          tries++;
          throw other;
        },
        isSqliteBusy,
        { timeoutMs: 5_000 },
      ),
    ).rejects.toBe(other);
    expect(tries).toBe(1);

    const started = Date.now();
    await expect(retryWhile(() => Promise.reject(busy()), isSqliteBusy, { timeoutMs: 60, firstDelayMs: 5, maxDelayMs: 10 })).rejects.toMatchObject({ code: 'SQLITE_BUSY' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(60);
  });

  it('recognises SQLITE_BUSY and nothing else', () => {
    expect(isSqliteBusy(busy())).toBe(true);
    expect(isSqliteBusy(Object.assign(new Error('x'), { code: 'SQLITE_LOCKED' }))).toBe(false);
    expect(isSqliteBusy(null)).toBe(false);
  });
});
