import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Spool } from './spool.ts';
import type { Deliverer, Notifier } from './types.ts';
import { processMessage, type RetryPolicy, type QueueLogger } from './process-message.ts';

/** The BullMQ queue name; keys are `<prefix>:deliver:*`. */
export const DELIVERY_QUEUE = 'deliver';

/** Job data: a reference to the spool, never message bytes or envelopes (they stay on disk). */
export interface DeliveryJobData {
  id: string;
  /** Consecutive attempts that failed on our side (not the next hop's). */
  internalErrors?: number;
}

export interface QueueConnectionOptions {
  redisUrl: string;
  prefix: string;
}

/**
 * The producer side: used by SMTP ingress, the CLI and recovery. Its Redis connection fails fast
 * (`enableOfflineQueue: false`, BullMQ "going to production"): while Redis is down, `enqueue`
 * rejects at once and the SMTP client gets a 451 instead of waiting.
 */
export interface DeliveryQueue {
  readonly queue: Queue<DeliveryJobData>;
  readonly connection: Redis;
  /** Adds the job of message `id` (a no-op if it already has one). */
  enqueue(id: string, delayMs?: number): Promise<void>;
  /** True when Redis answers. */
  isReady(): boolean;
  close(): Promise<void>;
}

export function openDeliveryQueue(opts: QueueConnectionOptions): DeliveryQueue {
  const connection = new Redis(opts.redisUrl, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    // Keep reconnecting forever, at most every 2 s: Redis coming back must be noticed quickly.
    retryStrategy: (times) => Math.min(times * 200, 2000),
    lazyConnect: false,
  });
  // Connection errors are reported through isReady()/enqueue failures; don't crash on 'error'.
  connection.on('error', () => {});
  const queue = new Queue<DeliveryJobData>(DELIVERY_QUEUE, { connection, prefix: opts.prefix });
  queue.on('error', () => {});
  return {
    queue,
    connection,
    async enqueue(id, delayMs = 0) {
      await queue.add(
        'deliver',
        { id },
        {
          jobId: id,
          delay: Math.max(0, Math.round(delayMs)),
          removeOnComplete: true,
          removeOnFail: true,
        },
      );
    },
    isReady: () => connection.status === 'ready',
    async close() {
      await queue.close();
      connection.disconnect();
    },
  };
}

export interface DeliveryWorkerOptions extends QueueConnectionOptions {
  spool: Spool;
  deliverer: Deliverer;
  notifier: Notifier;
  retry: RetryPolicy;
  concurrency: number;
  /** ms: a job of a dead worker is taken over after this long. */
  lockDuration: number;
  logger: QueueLogger;
  hostname: string;
  now?: () => number;
}

export interface DeliveryWorker {
  readonly worker: Worker<DeliveryJobData>;
  /** Is this message being delivered by this process right now? */
  isActive(id: string): boolean;
  /** Waits for running deliveries to finish, then disconnects. */
  close(): Promise<void>;
}

/** A bug or a spool read error must not lose the job: try again in a minute... */
const RETRY_AFTER_UNEXPECTED_ERROR_MS = 60_000;
/** ...ten times, then hold the message for an admin. */
const MAX_INTERNAL_ERRORS = 10;

export function startDeliveryWorker(opts: DeliveryWorkerOptions): DeliveryWorker {
  const connection = new Redis(opts.redisUrl, {
    // Required by BullMQ for its blocking connection.
    maxRetriesPerRequest: null,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  connection.on('error', () => {});
  const now = opts.now ?? Date.now;

  // Messages being delivered by this process. A second job for one of them (Redis came back empty
  // and recovery queued it again while the first run goes on) must wait, not deliver in parallel.
  const active = new Set<string>();

  const processor = async (job: Job<DeliveryJobData>, token?: string): Promise<void> => {
    const id = job.data.id;
    const log = opts.logger.child({ queueId: id, job: job.id });
    if (active.has(id) || !opts.spool.tryLock(id)) {
      log.debug({}, 'message is being delivered elsewhere; job postponed');
      await job.moveToDelayed(now() + opts.lockDuration, token);
      throw new DelayedError();
    }
    active.add(id);
    let nextAttemptAt: number | undefined;
    try {
      ({ nextAttemptAt } = await processMessage(id, {
        spool: opts.spool,
        deliverer: opts.deliverer,
        notifier: opts.notifier,
        retry: opts.retry,
        logger: log,
        now,
      }));
    } catch (err) {
      const failures = (job.data.internalErrors ?? 0) + 1;
      if (failures >= MAX_INTERNAL_ERRORS) {
        // Not a delivery problem but ours (corrupt spool file, a bug): stop and show it to the
        // admin (`courrier queue list` shows it held) instead of looping forever.
        log.error(
          { err, failures },
          'delivery keeps failing on an internal error; message held for an admin',
        );
        opts.spool.writeControl(id, { held: true, by: 'courrier: repeated internal errors', at: now() });
        return;
      }
      log.error({ err, failures }, 'delivery attempt failed unexpectedly; retrying in 60 s');
      await job.updateData({ ...job.data, internalErrors: failures });
      nextAttemptAt = now() + RETRY_AFTER_UNEXPECTED_ERROR_MS;
    } finally {
      active.delete(id);
      opts.spool.unlock(id);
    }
    if (nextAttemptAt !== undefined) {
      await job.moveToDelayed(nextAttemptAt, token);
      throw new DelayedError();
    }
  };

  const worker = new Worker<DeliveryJobData>(DELIVERY_QUEUE, processor, {
    connection,
    prefix: opts.prefix,
    concurrency: opts.concurrency,
    lockDuration: opts.lockDuration,
    // The spool, not BullMQ, decides whether a message is done: a job that stalled because its
    // process was killed is simply run again (the state file tells what was already delivered).
    maxStalledCount: 1_000_000,
    // Look for jobs of dead workers as often as a lock lasts (BullMQ's default is every 30 s).
    stalledInterval: Math.min(opts.lockDuration, 30_000),
    autorun: true,
  });
  worker.on('error', (err) => opts.logger.warn({ err: { message: err.message } }, 'queue worker error'));
  return {
    worker,
    isActive: (id) => active.has(id),
    async close() {
      await worker.close();
      connection.disconnect();
    },
  };
}
