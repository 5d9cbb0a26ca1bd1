import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { processMessage, type ProcessDeps } from '../queue/process-message.ts';
import { openSpool, type Spool } from '../queue/spool.ts';
import type {
  Deliverer,
  DeliveryOutcome,
  DeliveryRequest,
  DsnRecipientReport,
  Envelope,
  EnvelopeRecipient,
  Notifier,
} from '../queue/types.ts';
import { createLogger } from '../gateway/log.ts';

/**
 * The worker's decisions, step by step, with a clock we move by hand. The deliverer here is a
 * scripted implementation of the Deliverer contract (the real one is tested against real SMTP
 * servers in delivery.test.ts and end to end in pipeline.test.ts).
 */
type Script = (rcpt: EnvelopeRecipient, attempt: number) => Omit<DeliveryOutcome, 'address'>;

let dir: string;
let spool: Spool;
let clock: number;
let requests: DeliveryRequest[];
let reports: Array<{ envelope: Envelope; reports: DsnRecipientReport[] }>;
let script: Script;

const HOUR = 3_600_000;
const retry = {
  firstDelay: 5 * 60_000,
  maxDelay: 4 * HOUR,
  giveUpAfter: 5 * 24 * HOUR,
  delayWarningAfter: 4 * HOUR,
};

const deliverer: Deliverer = {
  async deliver(req) {
    requests.push(req);
    const attempt = requests.length;
    return req.recipients.map((r) => ({ address: r.address, ...script(r, attempt) }));
  },
  async close() {},
};
const notifier: Notifier = {
  async report(envelope, _path, rs) {
    reports.push({ envelope, reports: rs });
  },
};

function deps(): ProcessDeps {
  return { spool, deliverer, notifier, retry, logger: createLogger('silent'), now: () => clock };
}

const ok = {
  result: 'delivered',
  reply: '250 2.0.0 Ok: queued as ABC',
  status: '2.0.0',
  remoteId: 'ABC',
} as const;
const later = { result: 'defer', reply: '451 4.7.1 try later', status: '4.7.1', category: 'policy' } as const;
const unknown = {
  result: 'reject',
  reply: '550 5.1.1 no such user',
  status: '5.1.1',
  category: 'recipient',
} as const;

async function enqueue(recipients: EnvelopeRecipient[], mailFrom = 'alice@courrier.test'): Promise<string> {
  const id = spool.newId();
  await spool.store(
    { id, mailFrom, recipients, receivedAt: clock, source: { listener: 'submission' } },
    Buffer.from('Subject: x\r\n\r\nhello\r\n'),
  );
  return id;
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'courrier-pm-'));
  spool = await openSpool(dir);
  clock = Date.UTC(2026, 10, 23, 8, 0, 0);
  requests = [];
  reports = [];
  script = () => ok;
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('processMessage', () => {
  it('delivers, finishes and keeps a tracking record with the remote id', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }]);
    const r = await processMessage(id, deps());
    expect(r).toEqual({ finished: true });
    expect(spool.listQueued()).toEqual([]);
    const done = spool.readFinished(id)!;
    expect(done.state.recipients[0]).toMatchObject({ state: 'delivered', remoteId: 'ABC', attempts: 1 });
    expect(reports).toEqual([]);
  });

  it('defers with the documented doubling schedule, then delivers', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }]);
    script = (_r, attempt) => (attempt < 4 ? later : ok);
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await processMessage(id, deps());
      expect(r.finished).toBe(false);
      delays.push(r.nextAttemptAt! - clock);
      expect(spool.readState(id)!.recipients[0]).toMatchObject({
        state: 'deferred',
        lastReply: '451 4.7.1 try later',
      });
      clock = r.nextAttemptAt!;
    }
    expect(delays).toEqual([5 * 60_000, 10 * 60_000, 20 * 60_000]);
    expect((await processMessage(id, deps())).finished).toBe(true);
    expect(spool.readFinished(id)!.state.recipients[0]!.attempts).toBe(4);
  });

  it('bounces a permanent failure at once with a DSN carrying the remote reply', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }, { address: 'nobody@example.org' }]);
    script = (r) => (r.address.startsWith('nobody') ? unknown : ok);
    expect((await processMessage(id, deps())).finished).toBe(true);
    expect(reports).toHaveLength(1);
    expect(reports[0]!.reports).toEqual([
      expect.objectContaining({
        recipient: { address: 'nobody@example.org' },
        action: 'failed',
        status: '5.1.1',
        diagnostic: '550 5.1.1 no such user',
      }),
    ]);
    const rcpts = spool.readFinished(id)!.state.recipients;
    expect(rcpts.map((r) => r.state)).toEqual(['delivered', 'bounced']);
  });

  it('gives up after giveUpAfter, sends one delay warning on the way, and bounces', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }]);
    script = () => later;
    let r = await processMessage(id, deps());
    let attempts = 1;
    while (!r.finished) {
      clock = r.nextAttemptAt!;
      r = await processMessage(id, deps());
      attempts++;
      expect(attempts).toBeLessThan(60);
    }
    const kinds = reports.flatMap((x) => x.reports.map((y) => y.action));
    expect(kinds).toEqual(['delayed', 'failed']);
    const delayed = reports[0]!.reports[0]!;
    expect(delayed.willRetryUntil).toBe(Date.UTC(2026, 10, 23, 8) + retry.giveUpAfter);
    const failed = reports[1]!.reports[0]!;
    expect(failed.status).toBe('5.7.1');
    expect(failed.diagnostic).toMatch(/451 4\.7\.1 try later \(gave up after 120 h\)/);
    // The last attempt happened at the give-up time itself.
    expect(clock).toBe(Date.UTC(2026, 10, 23, 8) + retry.giveUpAfter);
  });

  it('retries only what was in flight when the process died, flagged as possibly duplicated', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }, { address: 'carol@example.org' }]);
    const envelope = spool.readEnvelope(id)!;
    spool.writeState({
      id,
      attempt: 1,
      recipients: [
        { address: 'bob@example.org', state: 'delivered', attempts: 1, remoteId: 'X1', reported: true },
        { address: 'carol@example.org', state: 'inflight', attempts: 1 },
      ],
      updatedAt: clock,
    });
    await processMessage(id, deps());
    expect(requests).toHaveLength(1);
    expect(requests[0]!.recipients).toEqual([envelope.recipients[1]]);
    const carol = spool.readFinished(id)!.state.recipients[1]!;
    expect(carol).toMatchObject({ state: 'delivered', uncertain: true, attempts: 2 });
  });

  it('queues a DSN that was owed when the process died before sending it', async () => {
    const id = await enqueue([{ address: 'nobody@example.org' }]);
    spool.writeState({
      id,
      attempt: 1,
      recipients: [
        { address: 'nobody@example.org', state: 'bounced', attempts: 1, status: '5.1.1', reported: false },
      ],
      updatedAt: clock,
    });
    expect((await processMessage(id, deps())).finished).toBe(true);
    expect(requests).toHaveLength(0);
    expect(reports.map((r) => r.reports[0]!.action)).toEqual(['failed']);
  });

  it('asks for a success DSN only when NOTIFY=SUCCESS and the next hop did not take it', async () => {
    const id = await enqueue([
      { address: 'a@example.org', notify: ['SUCCESS'] },
      { address: 'b@example.org', notify: ['SUCCESS'] },
      { address: 'c@example.org' },
    ]);
    script = (r) => (r.address.startsWith('a') ? { ...ok, dsnPassedOn: true } : ok);
    await processMessage(id, deps());
    expect(reports.flatMap((x) => x.reports.map((y) => [y.recipient.address, y.action]))).toEqual([
      ['b@example.org', 'relayed'],
    ]);
  });

  it('does nothing while held, and purges without delivering', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }]);
    spool.writeControl(id, { held: true });
    expect(await processMessage(id, deps())).toEqual({ finished: false, held: true });
    expect(requests).toHaveLength(0);
    spool.writeControl(id, { purge: true, by: 'admin' });
    expect((await processMessage(id, deps())).finished).toBe(true);
    expect(requests).toHaveLength(0);
    expect(spool.readFinished(id)).toMatchObject({ reason: 'purged' });
    expect(spool.readFinished(id)!.state.recipients[0]!.state).toBe('purged');
  });

  it('treats a deliverer exception as a deferral, never a loss', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }]);
    script = () => {
      throw new Error('bug');
    };
    const r = await processMessage(id, deps());
    expect(r.finished).toBe(false);
    expect(spool.readState(id)!.recipients[0]).toMatchObject({ state: 'deferred', status: '4.3.0' });
  });

  it('finds nothing to do for a job whose message already finished', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }]);
    await processMessage(id, deps());
    expect(await processMessage(id, deps())).toEqual({ finished: true });
    expect(requests).toHaveLength(1);
  });

  it('honours a purge asked for while an attempt was running', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }]);
    script = () => {
      spool.writeControl(id, { purge: true, by: 'admin' });
      return later;
    };
    expect((await processMessage(id, deps())).finished).toBe(true);
    expect(spool.readFinished(id)).toMatchObject({ reason: 'purged' });
  });

  it('attempts again at once when a retry was asked for during an attempt', async () => {
    const id = await enqueue([{ address: 'bob@example.org' }]);
    script = () => {
      spool.writeControl(id, { retryNow: true });
      return later;
    };
    const r = await processMessage(id, deps());
    expect(r.nextAttemptAt).toBe(clock);
    expect(spool.readControl(id).retryNow).toBeUndefined();
  });
});
