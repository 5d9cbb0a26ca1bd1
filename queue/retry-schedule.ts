import type { Config } from '../config/schema.ts';

/**
 * When a deferred recipient is tried again, when we give up, and when the sender hears that
 * the message is late. Pure functions of the `delivery.retry` config (all times in ms).
 *
 * The shape is Postfix's (minimal_backoff_time doubling up to maximal_backoff_time, bounce after
 * maximal_queue_lifetime); docs/retry.md shows the default schedule with cumulative times, the
 * way zone-mta documents DEFAULT_DEFER_TIMES. test/retry-schedule.test.ts keeps the two in sync.
 */
export type RetryConfig = Config['delivery']['retry'];

/**
 * Delay before the next attempt after `attempt` attempts have failed (1 = the first delivery
 * attempt failed): firstDelay, then doubling, capped at maxDelay.
 */
export function nextAttemptDelay(attempt: number, retry: RetryConfig): number {
  if (!Number.isInteger(attempt) || attempt < 1) {
    throw new RangeError(`attempt must be a positive integer, got ${attempt}`);
  }
  // 2 ** 40 already exceeds any sane maxDelay; capping the exponent keeps the number finite.
  const factor = 2 ** Math.min(attempt - 1, 40);
  return Math.min(retry.firstDelay * factor, retry.maxDelay);
}

/** When the message expires: a temporary failure at or after this time becomes a bounce. */
export function expiresAt(receivedAt: number, retry: RetryConfig): number {
  return receivedAt + retry.giveUpAfter;
}

/**
 * When to try again after `attempt` failed attempts, or null when the message has expired and
 * the temporary failure must now be reported as permanent (RFC 3464 action `failed`). The last
 * retry is pulled in to the expiry time itself, so the final attempt happens right at give-up.
 */
export function nextAttemptAt(
  opts: { attempt: number; now: number; receivedAt: number },
  retry: RetryConfig,
): number | null {
  const expiry = expiresAt(opts.receivedAt, retry);
  if (opts.now >= expiry) return null;
  return Math.min(opts.now + nextAttemptDelay(opts.attempt, retry), expiry);
}

/**
 * Whether a delay warning (RFC 3464 action `delayed`) is due for a recipient that just failed
 * temporarily: the message has waited at least delayWarningAfter, is not yet expired (then it
 * bounces instead), and no warning was sent before (one warning per recipient, like Postfix).
 */
export function shouldSendDelayWarning(
  opts: { receivedAt: number; now: number; alreadyNotified: boolean },
  retry: RetryConfig,
): boolean {
  if (opts.alreadyNotified) return false;
  if (retry.delayWarningAfter <= 0) return false;
  if (opts.now >= expiresAt(opts.receivedAt, retry)) return false;
  return opts.now - opts.receivedAt >= retry.delayWarningAfter;
}

export interface ScheduledAttempt {
  /** 1 is the first delivery attempt, made when the message arrives. */
  attempt: number;
  /** Wait after the previous attempt (0 for the first). */
  delay: number;
  /** Time since arrival. */
  cumulative: number;
  /** This attempt comes after delayWarningAfter: if it fails, the sender gets a delay DSN. */
  delayWarning: boolean;
  /** The attempt made at the give-up time: if it fails temporarily, the message bounces. */
  final: boolean;
}

/**
 * Every attempt a recipient that keeps failing temporarily gets, from arrival to give-up.
 * The delay warning is flagged on the first attempt at or after delayWarningAfter.
 */
export function retrySchedule(retry: RetryConfig): ScheduledAttempt[] {
  const receivedAt = 0;
  const rows: ScheduledAttempt[] = [];
  let now = receivedAt;
  let warned = false;
  for (let attempt = 1; ; attempt++) {
    const final = now >= expiresAt(receivedAt, retry);
    const delayWarning =
      !warned && shouldSendDelayWarning({ receivedAt, now, alreadyNotified: false }, retry);
    if (delayWarning) warned = true;
    const previous = rows[rows.length - 1];
    rows.push({
      attempt,
      delay: previous ? now - previous.cumulative : 0,
      cumulative: now,
      delayWarning,
      final,
    });
    const next = nextAttemptAt({ attempt, now, receivedAt }, retry);
    if (next === null) break;
    now = next;
    // A schedule longer than this is a configuration mistake (e.g. firstDelay 1s, giveUp 1y).
    if (attempt > 10_000) throw new RangeError('retry schedule has more than 10000 attempts');
  }
  return rows;
}

/** `90s` → "1m 30s", `5d` → "5d": the largest units first, zero parts left out. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  const units: Array<[string, number]> = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
    ['ms', 1],
  ];
  const parts: string[] = [];
  let rest = ms;
  for (const [name, size] of units) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      parts.push(`${n}${name}`);
      rest -= n * size;
    }
  }
  return parts.join(' ');
}

/** The schedule as a Markdown table (docs/retry.md embeds the one for the default config). */
export function renderRetrySchedule(retry: RetryConfig): string {
  const lines = ['| attempt | wait before | time since arrival | note |', '| ---: | ---: | ---: | --- |'];
  for (const row of retrySchedule(retry)) {
    const notes: string[] = [];
    if (row.attempt === 1) notes.push('on arrival');
    if (row.delayWarning) notes.push('fails → delay DSN (NOTIFY=DELAY)');
    if (row.final) notes.push('fails → bounce (give up)');
    lines.push(
      `| ${row.attempt} | ${row.attempt === 1 ? '–' : formatDuration(row.delay)} | ${formatDuration(row.cumulative)} | ${notes.join('; ')} |`,
    );
  }
  return lines.join('\n');
}
