import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../config/schema.ts';
import { renderReplyRules } from '../gateway/bounce-rules.ts';
import {
  expiresAt,
  formatDuration,
  nextAttemptAt,
  nextAttemptDelay,
  renderRetrySchedule,
  retrySchedule,
  shouldSendDelayWarning,
} from '../queue/retry-schedule.ts';

const retry = configSchema.parse({}).delivery.retry;
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

describe('retry schedule (defaults: 5m doubling to 4h, give up after 5d, warn after 4h)', () => {
  it('reads the defaults from the config schema', () => {
    expect(retry).toEqual({
      firstDelay: 5 * MIN,
      maxDelay: 4 * HOUR,
      giveUpAfter: 5 * DAY,
      delayWarningAfter: 4 * HOUR,
    });
  });

  it('doubles from firstDelay and caps at maxDelay', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 50, 5000].map((n) => nextAttemptDelay(n, retry) / MIN)).toEqual([
      5, 10, 20, 40, 80, 160, 240, 240, 240, 240,
    ]);
  });

  it('refuses attempt numbers that are not positive integers', () => {
    expect(() => nextAttemptDelay(0, retry)).toThrow(RangeError);
    expect(() => nextAttemptDelay(1.5, retry)).toThrow(RangeError);
  });

  it('expires giveUpAfter after arrival and pulls the last attempt in to that time', () => {
    const receivedAt = Date.parse('2026-02-02T10:00:00Z');
    expect(expiresAt(receivedAt, retry)).toBe(receivedAt + 5 * DAY);
    expect(nextAttemptAt({ attempt: 1, now: receivedAt, receivedAt }, retry)).toBe(receivedAt + 5 * MIN);
    const late = receivedAt + 5 * DAY - HOUR;
    expect(nextAttemptAt({ attempt: 30, now: late, receivedAt }, retry)).toBe(receivedAt + 5 * DAY);
    expect(nextAttemptAt({ attempt: 31, now: receivedAt + 5 * DAY, receivedAt }, retry)).toBeNull();
  });

  it('sends one delay warning, after delayWarningAfter, never once expired', () => {
    const receivedAt = 0;
    const warn = (now: number, alreadyNotified = false) =>
      shouldSendDelayWarning({ receivedAt, now, alreadyNotified }, retry);
    expect(warn(4 * HOUR - 1)).toBe(false);
    expect(warn(4 * HOUR)).toBe(true);
    expect(warn(5 * HOUR, true)).toBe(false);
    expect(warn(5 * DAY)).toBe(false);
    expect(
      shouldSendDelayWarning(
        { receivedAt, now: DAY, alreadyNotified: false },
        { ...retry, delayWarningAfter: 0 },
      ),
    ).toBe(false);
  });

  it('lists every attempt with cumulative times, the warning and the give-up', () => {
    const rows = retrySchedule(retry);
    expect(rows.slice(0, 8).map((r) => r.cumulative / MIN)).toEqual([0, 5, 15, 35, 75, 155, 315, 555]);
    expect(rows.filter((r) => r.delayWarning).map((r) => r.cumulative)).toEqual([5 * HOUR + 15 * MIN]);
    const last = rows[rows.length - 1]!;
    expect(last).toMatchObject({ attempt: 36, cumulative: 5 * DAY, final: true });
    expect(rows.filter((r) => r.final)).toHaveLength(1);
    for (let i = 1; i < rows.length; i++) {
      expect(rows[i]!.cumulative - rows[i - 1]!.cumulative).toBe(rows[i]!.delay);
      expect(rows[i]!.delay).toBeLessThanOrEqual(retry.maxDelay);
    }
  });

  it('follows a custom config', () => {
    const rows = retrySchedule({
      firstDelay: MIN,
      maxDelay: 2 * MIN,
      giveUpAfter: 5 * MIN,
      delayWarningAfter: 2 * MIN,
    });
    expect(rows.map((r) => [r.cumulative / MIN, r.delayWarning, r.final])).toEqual([
      [0, false, false],
      [1, false, false],
      [3, true, false],
      [5, false, true],
    ]);
  });

  it('formats durations', () => {
    expect([0, 90_000, 5 * DAY, 26 * HOUR + 15 * MIN, 1500].map(formatDuration)).toEqual([
      '0',
      '1m 30s',
      '5d',
      '1d 2h 15m',
      '1s 500ms',
    ]);
  });
});

describe('docs/retry.md', () => {
  const doc = readFileSync(new URL('../docs/retry.md', import.meta.url), 'utf8');
  const between = (name: string) => {
    const m = new RegExp(`<!-- ${name}:begin -->\\n([\\s\\S]*?)\\n<!-- ${name}:end -->`).exec(doc);
    if (!m) throw new Error(`docs/retry.md has no ${name} block`);
    return m[1]!;
  };
  it('shows the default schedule the code computes', () => {
    expect(between('schedule')).toBe(renderRetrySchedule(retry));
  });
  it('shows the classification rules the code applies', () => {
    expect(between('rules')).toBe(renderReplyRules());
  });
});
