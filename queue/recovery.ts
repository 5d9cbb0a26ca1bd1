import type { DeliveryQueue } from './delivery-queue.ts';
import type { Spool } from './spool.ts';
import type { QueueLogger } from './process-message.ts';

export interface RecoveryReport {
  /** Messages whose job was (re)added; a job that already existed is left as it is. */
  checked: number;
  held: number;
  tmpRemoved: number;
  /** Messages whose spool files could not be read or whose job could not be added. */
  failed: number;
}

/** tmp/ files older than this belong to SMTP sessions that died mid-DATA (no 250 was given). */
const STALE_TMP_MS = 60 * 60_000;

/**
 * Makes Redis agree with the spool: every committed message that is not held gets a job, due at
 * its recorded next attempt. Run at start-up, whenever the Redis connection comes back (Redis may
 * have restarted empty) and periodically. Adding a job that exists is a no-op in BullMQ (same job
 * id), and a job for a message that finished meanwhile finds nothing to do, so this is idempotent.
 */
export async function recoverSpool(opts: {
  spool: Spool;
  queue: DeliveryQueue;
  logger: QueueLogger;
  now?: () => number;
  /** Messages being delivered by this process (skipped). */
  isActive?: (id: string) => boolean;
  /** Files in tmp/ older than this are leftovers of dead sessions (default 1 h). */
  staleTmpMs?: number;
}): Promise<RecoveryReport> {
  const now = opts.now ?? Date.now;
  const report: RecoveryReport = { checked: 0, held: 0, tmpRemoved: 0, failed: 0 };
  report.tmpRemoved = await opts.spool.cleanTmp(opts.staleTmpMs ?? STALE_TMP_MS);
  for (const id of opts.spool.listQueued()) {
    if (opts.isActive?.(id)) continue; // its job is running here: nothing to recover
    try {
      if (opts.spool.readControl(id).held) {
        report.held++;
        continue;
      }
      const state = opts.spool.readState(id);
      const delay = state?.nextAttemptAt ? state.nextAttemptAt - now() : 0;
      await opts.queue.enqueue(id, delay);
      report.checked++;
    } catch (err) {
      // One damaged message must not keep the others from being recovered.
      report.failed++;
      opts.logger.error({ queueId: id, err }, 'cannot recover this message; the others go on');
    }
  }
  opts.logger.info({ ...report }, 'spool recovery done');
  return report;
}
