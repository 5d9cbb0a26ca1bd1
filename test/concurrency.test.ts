import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { messageStatus } from '../gateway/admin.ts';
import { startApp, type App } from '../gateway/app.ts';
import type { Deliverer } from '../queue/types.ts';
import { dropRedisPrefix, testConfig, useTestTls, waitFor, type TestEnv } from './helpers/gateway-fixture.ts';

/**
 * One delivery run per message at a time, even when Redis comes back empty in the middle of a
 * delivery and recovery queues the message again. The deliverer is a slow implementation of the
 * Deliverer contract that counts how many runs overlap.
 */
let env: TestEnv;
let app: App;
let running = 0;
let maxRunning = 0;
let calls = 0;
let release: () => void = () => {};

const slowDeliverer: Deliverer = {
  async deliver(req) {
    calls++;
    running++;
    maxRunning = Math.max(maxRunning, running);
    await new Promise<void>((r) => (release = r));
    running--;
    return req.recipients.map((r) => ({
      address: r.address,
      result: 'delivered' as const,
      reply: '250 2.0.0 ok',
      status: '2.0.0',
    }));
  },
  async close() {},
};

beforeAll(async () => {
  env = testConfig({
    smtp: { submission: { enabled: false }, relay: { enabled: false } },
    queue: { lockDuration: '2s' },
  });
  useTestTls(env);
  app = await startApp(env.config, { logger: env.logger, deliverer: slowDeliverer });
});

afterAll(async () => {
  release();
  await app?.stop();
  await dropRedisPrefix(env.config.redis.url, env.prefix);
  env.cleanup();
});

describe('one delivery run per message', () => {
  it('does not deliver twice when recovery re-queues a message whose delivery is running', async () => {
    await waitFor(() => app.queue.isReady(), 10_000, 'redis');
    const id = app.spool.newId();
    await app.spool.store(
      {
        id,
        mailFrom: 'a@courrier.test',
        recipients: [{ address: 'b@example.org' }],
        receivedAt: Date.now(),
        source: { listener: 'internal' },
      },
      Buffer.from('Subject: x\r\n\r\nx\r\n'),
    );
    await app.queue.enqueue(id);
    await waitFor(() => calls === 1, 10_000, 'the first delivery to start');
    // Redis loses everything while the delivery runs; recovery queues the message again.
    await dropRedisPrefix(env.config.redis.url, env.prefix);
    await app.recover();
    await app.queue.enqueue(id); // as a recovery in another process would
    await new Promise((r) => setTimeout(r, 1500));
    expect(maxRunning).toBe(1);
    release();
    await waitFor(() => messageStatus(app.spool, id).status === 'finished', 20_000, 'delivery');
    await new Promise((r) => setTimeout(r, 2500)); // the postponed job runs and finds nothing to do
    expect(calls).toBe(1);
    expect(messageStatus(app.spool, id).recipients[0]).toMatchObject({ state: 'delivered' });
    expect(messageStatus(app.spool, id).recipients[0]!.uncertain).toBeUndefined();
  });
});
