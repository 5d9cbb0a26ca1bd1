import type { DeliveryQueue } from '../queue/delivery-queue.ts';
import { initialState, isFinal } from '../queue/process-message.ts';
import { isQueueId, type Spool } from '../queue/spool.ts';
import type { Envelope, MessageState, RecipientStatus } from '../queue/types.ts';

/**
 * Queue control for admins (`courrier queue ...`, `courrier message status`). Works on the spool
 * (the truth) and tells Redis what changed; safe while gateways are running: the worker reads the
 * control file before and after every attempt.
 */

export interface MessageStatus {
  id: string;
  /** queued: waiting or deferred; held: stopped by an admin; finished: every recipient final. */
  status: 'queued' | 'held' | 'finished' | 'purged' | 'unreadable';
  mailFrom: string;
  receivedAt: string;
  size: number;
  attempts: number;
  nextAttemptAt?: string;
  recipients: RecipientStatus[];
  /** Why the spool files could not be read (status `unreadable`). */
  problem?: string;
}

export class AdminError extends Error {
  override readonly name = 'AdminError';
}

function iso(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : new Date(ms).toISOString();
}

function summarise(envelope: Envelope, state: MessageState, status: MessageStatus['status']): MessageStatus {
  return {
    id: envelope.id,
    status,
    mailFrom: envelope.mailFrom || '<>',
    receivedAt: new Date(envelope.receivedAt).toISOString(),
    size: envelope.size,
    attempts: state.attempt,
    ...(state.nextAttemptAt ? { nextAttemptAt: iso(state.nextAttemptAt) } : {}),
    recipients: state.recipients,
  };
}

function requireId(id: string): string {
  if (!isQueueId(id)) throw new AdminError(`not a queue id: ${JSON.stringify(id)}`);
  return id;
}

/** Per-recipient status of a queued or finished message. */
export function messageStatus(spool: Spool, id: string): MessageStatus {
  requireId(id);
  const envelope = spool.readEnvelope(id);
  if (envelope) {
    const state = spool.readState(id) ?? initialState(envelope, envelope.receivedAt);
    return summarise(envelope, state, spool.readControl(id).held ? 'held' : 'queued');
  }
  const done = spool.readFinished(id);
  if (done) return summarise(done.envelope, done.state, done.reason === 'purged' ? 'purged' : 'finished');
  throw new AdminError(`no message ${id} in the queue or in the tracking records`);
}

/** Every message still in the queue, oldest first. */
export function listQueue(spool: Spool): MessageStatus[] {
  const out: MessageStatus[] = [];
  for (const id of spool.listQueued()) {
    try {
      out.push(messageStatus(spool, id));
    } catch (err) {
      // Finished between listing and reading: not in the queue any more.
      if (err instanceof AdminError) continue;
      // A damaged spool file: show the message rather than hide the whole queue.
      out.push({
        id,
        status: 'unreadable',
        mailFrom: '',
        receivedAt: '',
        size: 0,
        attempts: 0,
        recipients: [],
        problem: err instanceof Error ? err.message : String(err),
      });
    }
  }
  return out;
}

function requireQueued(spool: Spool, id: string): Envelope {
  const envelope = spool.readEnvelope(requireId(id));
  if (!envelope) throw new AdminError(`message ${id} is not in the queue`);
  return envelope;
}

/** Stops delivery attempts of a message until it is released. */
export async function holdMessage(spool: Spool, queue: DeliveryQueue, id: string, by: string): Promise<void> {
  requireQueued(spool, id);
  spool.writeControl(id, { ...spool.readControl(id), held: true, by, at: Date.now() });
  // A waiting or delayed job goes away now; a running one finishes its attempt and stops.
  const job = await queue.queue.getJob(id);
  if (job && !(await job.isActive())) await job.remove();
}

/** Lets a held message be delivered again, at once. */
export async function releaseMessage(
  spool: Spool,
  queue: DeliveryQueue,
  id: string,
  by: string,
): Promise<void> {
  requireQueued(spool, id);
  const { held: _held, ...rest } = spool.readControl(id);
  spool.writeControl(id, { ...rest, by, at: Date.now() });
  await retryMessage(spool, queue, id);
}

/** Attempts a queued (deferred) message now instead of at its scheduled time. */
export async function retryMessage(spool: Spool, queue: DeliveryQueue, id: string): Promise<void> {
  requireQueued(spool, id);
  if (spool.readControl(id).held) throw new AdminError(`message ${id} is held: release it instead`);
  const job = await queue.queue.getJob(id);
  if (job && (await job.isDelayed())) {
    await job.promote();
    return;
  }
  if (job && (await job.isActive())) {
    // An attempt is running: ask for another one as soon as it ends.
    spool.writeControl(id, { ...spool.readControl(id), retryNow: true });
    return;
  }
  if (!job) await queue.enqueue(id);
}

/**
 * Deletes a queued message without delivering it further. The tracking record stays (status
 * `purged`); no DSN is sent: the admin is expected to tell the sender if needed.
 */
export async function purgeMessage(
  spool: Spool,
  queue: DeliveryQueue,
  id: string,
  by: string,
): Promise<void> {
  const envelope = requireQueued(spool, id);
  spool.writeControl(id, { ...spool.readControl(id), purge: true, by, at: Date.now() });
  const job = await queue.queue.getJob(id);
  if (job && (await job.isActive())) return; // the worker sees the flag when its attempt ends
  if (job) await job.remove();
  const state = spool.readState(id) ?? initialState(envelope, Date.now());
  for (const r of state.recipients) if (!isFinal(r)) r.state = 'purged';
  spool.finish({ id, envelope, state, finishedAt: Date.now(), reason: 'purged' });
}
