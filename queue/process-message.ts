import type { Spool } from './spool.ts';
import type {
  Deliverer,
  DeliveryOutcome,
  DsnRecipientReport,
  Envelope,
  EnvelopeRecipient,
  MessageControl,
  MessageState,
  Notifier,
  RecipientStatus,
} from './types.ts';
import { nextAttemptDelay } from './retry-schedule.ts';

/** Retry policy in ms (config `delivery.retry`). */
export interface RetryPolicy {
  firstDelay: number;
  maxDelay: number;
  giveUpAfter: number;
  delayWarningAfter: number;
}

/** The logging surface the queue needs (pino's Logger fits). */
export interface QueueLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
  child(bindings: object): QueueLogger;
}

export interface ProcessDeps {
  spool: Spool;
  deliverer: Deliverer;
  notifier: Notifier;
  retry: RetryPolicy;
  logger: QueueLogger;
  now: () => number;
}

export interface ProcessResult {
  /** Set when recipients remain deferred: run the job again then. */
  nextAttemptAt?: number;
  /** The message left the queue (every recipient final, or purged). */
  finished: boolean;
  /** Held by an admin: no further attempt until released. */
  held?: boolean;
}

const FINAL = new Set(['delivered', 'bounced', 'purged']);

export function isFinal(r: RecipientStatus): boolean {
  return FINAL.has(r.state);
}

export function initialState(envelope: Envelope, now: number): MessageState {
  return {
    id: envelope.id,
    attempt: 0,
    recipients: envelope.recipients.map((r) => ({ address: r.address, state: 'queued', attempts: 0 })),
    updatedAt: now,
  };
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

function envelopeRecipient(envelope: Envelope, address: string): EnvelopeRecipient {
  return envelope.recipients.find((r) => r.address === address) ?? { address };
}

/**
 * One run of a message's job: deliver to every recipient not yet final, record each outcome in
 * the spool as soon as it is known, queue DSNs, and say when to try again. Safe to run again after
 * a crash at any point: recipients already delivered are never attempted again; a recipient whose
 * delivery was in flight when the process died is attempted again and flagged `uncertain` (the
 * next hop may have it already: RFC 1047; at least once beats never for a patient's letter).
 */
export async function processMessage(id: string, deps: ProcessDeps): Promise<ProcessResult> {
  const { spool, logger: log, now } = deps;
  const envelope = spool.readEnvelope(id);
  if (!envelope) {
    // Finished meanwhile (a duplicate job) or purged: nothing to do.
    log.debug({}, 'no queued message for this job');
    return { finished: true };
  }
  let state = spool.readState(id) ?? initialState(envelope, now());
  const control = spool.readControl(id);

  if (control.purge) return finishPurged(envelope, state, control, deps);

  // A previous run died in the middle of a delivery.
  for (const r of state.recipients) {
    if (r.state === 'inflight') {
      r.state = 'queued';
      r.uncertain = true;
      log.warn(
        { rcptDomain: domainOf(r.address) },
        'delivery was interrupted; retrying (possible duplicate)',
      );
    }
  }

  if (control.retryNow) {
    // Asked for while an earlier run was going on: this run is that attempt.
    const { retryNow: _retryNow, ...rest } = control;
    spool.writeControl(id, rest);
  }

  // Reports owed from a previous run that died before queuing them.
  await sendFinalReports(envelope, state, deps);

  if (control.held) {
    spool.writeState(state);
    return { finished: false, held: true };
  }

  const pending = state.recipients.filter((r) => !isFinal(r));
  if (pending.length > 0) {
    state = await attempt(envelope, state, pending, deps);
  }

  if (state.recipients.every(isFinal)) {
    await sendFinalReports(envelope, state, deps);
    finish(spool, envelope, state, now(), 'final');
    log.info(
      {
        delivered: state.recipients.filter((r) => r.state === 'delivered').length,
        bounced: state.recipients.filter((r) => r.state === 'bounced').length,
      },
      'message finished',
    );
    return { finished: true };
  }

  await maybeSendDelayWarning(envelope, state, deps);
  // An admin may have acted while this attempt ran.
  const after = spool.readControl(id);
  if (after.purge) return finishPurged(envelope, state, after, deps);
  if (after.held) return { finished: false, held: true };
  if (after.retryNow) {
    const { retryNow: _retryNow, ...rest } = after;
    spool.writeControl(id, rest);
    return { finished: false, nextAttemptAt: now() };
  }
  return { finished: false, nextAttemptAt: state.nextAttemptAt };
}

async function attempt(
  envelope: Envelope,
  state: MessageState,
  pending: RecipientStatus[],
  deps: ProcessDeps,
): Promise<MessageState> {
  const { spool, deliverer, retry, logger: log, now } = deps;
  const startedAt = now();
  state.attempt += 1;
  for (const r of pending) {
    r.state = 'inflight';
    r.attempts += 1;
    r.lastAttemptAt = startedAt;
  }
  state.updatedAt = startedAt;
  // Recorded before the first byte goes out, so a crash is known to have interrupted this attempt.
  spool.writeState(state);

  let outcomes: DeliveryOutcome[];
  try {
    outcomes = await deliverer.deliver({
      envelope,
      messagePath: spool.messagePath(envelope.id),
      recipients: pending.map((r) => envelopeRecipient(envelope, r.address)),
    });
  } catch (err) {
    // The deliverer reports remote failures as outcomes; an exception is our own fault.
    log.error({ err }, 'deliverer failed');
    outcomes = pending.map((r) => ({
      address: r.address,
      result: 'defer',
      reply: 'local error in delivery, will retry',
      status: '4.3.0',
      category: 'other',
    }));
  }

  const finishedAt = now();
  const expiresAt = envelope.receivedAt + retry.giveUpAfter;
  const byAddress = new Map(outcomes.map((o) => [o.address, o]));
  for (const r of pending) {
    const o = byAddress.get(r.address) ?? {
      address: r.address,
      result: 'defer' as const,
      reply: 'no outcome reported for this recipient',
      status: '4.3.0',
    };
    r.lastReply = o.reply;
    r.status = o.status;
    r.remoteMta = o.remoteMta;
    if (o.result === 'delivered') {
      r.state = 'delivered';
      r.remoteId = o.remoteId;
      r.finishedAt = finishedAt;
      // Success DSNs: we report `delivered` for local mailboxes and `relayed` when the next hop
      // did not take the NOTIFY parameter; otherwise the next hop reports itself.
      r.reported = !wantsSuccessReport(envelope, r.address) || o.dsnPassedOn === true;
      r.local = o.local === true;
    } else if (o.result === 'reject' || finishedAt >= expiresAt) {
      r.state = 'bounced';
      r.finishedAt = finishedAt;
      r.reported = false;
      if (o.result !== 'reject') {
        r.lastReply = `${o.reply} (gave up after ${Math.round(retry.giveUpAfter / 3_600_000)} h)`;
      }
    } else {
      r.state = 'deferred';
    }
    log.info(
      {
        rcptDomain: domainOf(r.address),
        result: o.result,
        status: o.status,
        category: o.category,
        remoteMta: o.remoteMta,
        attempt: state.attempt,
        ms: finishedAt - startedAt,
      },
      'delivery attempt',
    );
  }

  if (pending.some((r) => r.state === 'deferred')) {
    const delay = nextAttemptDelay(state.attempt, retry);
    // The last attempt happens at the give-up time, then the message bounces if still deferred.
    state.nextAttemptAt = Math.min(finishedAt + delay, Math.max(expiresAt, finishedAt + 1000));
  } else {
    delete state.nextAttemptAt;
  }
  state.updatedAt = finishedAt;
  spool.writeState(state);
  return state;
}

function notifyOf(envelope: Envelope, address: string): EnvelopeRecipient['notify'] {
  return envelopeRecipient(envelope, address).notify;
}

function wantsSuccessReport(envelope: Envelope, address: string): boolean {
  const notify = notifyOf(envelope, address);
  return Array.isArray(notify) && notify.includes('SUCCESS');
}

async function sendFinalReports(envelope: Envelope, state: MessageState, deps: ProcessDeps): Promise<void> {
  const owed = state.recipients.filter((r) => isFinal(r) && r.state !== 'purged' && r.reported === false);
  if (owed.length === 0) return;
  const reports: DsnRecipientReport[] = owed.map((r) => ({
    recipient: envelopeRecipient(envelope, r.address),
    action: r.state === 'bounced' ? 'failed' : r.local ? 'delivered' : 'relayed',
    status: r.state === 'bounced' ? toPermanentStatus(r.status) : '2.0.0',
    remoteMta: r.remoteMta,
    diagnostic: r.lastReply,
    lastAttemptAt: r.lastAttemptAt,
  }));
  // A DSN queued twice (crash between these two lines) is better than one never queued.
  await deps.notifier.report(envelope, deps.spool.messagePath(envelope.id), reports);
  for (const r of owed) r.reported = true;
  state.updatedAt = deps.now();
  deps.spool.writeState(state);
}

/** A failed DSN carries a 5.x.x status; a deferral that expired keeps its detail (4.4.1 → 5.4.1). */
function toPermanentStatus(status: string | undefined): string {
  if (!status) return '5.0.0';
  return status.startsWith('4.') ? `5.${status.slice(2)}` : status;
}

async function maybeSendDelayWarning(
  envelope: Envelope,
  state: MessageState,
  deps: ProcessDeps,
): Promise<void> {
  const { retry, now } = deps;
  if (now() - envelope.receivedAt < retry.delayWarningAfter) return;
  const due = state.recipients.filter((r) => r.state === 'deferred' && !r.delayNotified);
  if (due.length === 0) return;
  const willRetryUntil = envelope.receivedAt + retry.giveUpAfter;
  await deps.notifier.report(
    envelope,
    deps.spool.messagePath(envelope.id),
    due.map((r) => ({
      recipient: envelopeRecipient(envelope, r.address),
      action: 'delayed',
      status: r.status ?? '4.0.0',
      remoteMta: r.remoteMta,
      diagnostic: r.lastReply,
      lastAttemptAt: r.lastAttemptAt,
      willRetryUntil,
    })),
  );
  for (const r of due) r.delayNotified = true;
  state.updatedAt = now();
  deps.spool.writeState(state);
}

/** An admin's purge: the recipients not final yet end as `purged`, and so does the message. */
function finishPurged(
  envelope: Envelope,
  state: MessageState,
  control: MessageControl,
  deps: ProcessDeps,
): ProcessResult {
  for (const r of state.recipients) if (!isFinal(r)) r.state = 'purged';
  finish(deps.spool, envelope, state, deps.now(), 'purged');
  deps.logger.info({ by: control.by }, 'message purged by an admin');
  return { finished: true };
}

function finish(
  spool: Spool,
  envelope: Envelope,
  state: MessageState,
  at: number,
  reason: 'final' | 'purged',
): void {
  state.updatedAt = at;
  spool.finish({ id: envelope.id, envelope, state, finishedAt: at, reason });
}
