import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { messageStatus } from '../gateway/admin.ts';
import { startApp, type App } from '../gateway/app.ts';
import { testConfig, useTestTls, waitFor, type TestEnv } from './helpers/gateway-fixture.ts';
import { testPki } from './helpers/pki.ts';
import { makeMessage, RawSmtpClient } from './helpers/smtp-client.ts';
import { accept, reply, startSmtpSink, type SmtpSink } from './helpers/smtp-sink.ts';

/**
 * Redis is an index of the spool, not its keeper: a Redis of our own is restarted with nothing in
 * it while messages wait for a retry, and every one of them is still delivered.
 */
const PASSWORD = 'redis wipe test password';
const SENDER = 'alice@courrier.test';
const COUNT = 30;
let env: TestEnv;
let app: App;
let sink: SmtpSink;
let redis: ChildProcess | undefined;
let redisPort: number;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

async function startRedis(): Promise<void> {
  // No persistence at all: a restart comes back empty, like a Redis that lost its data.
  redis = spawn(
    'redis-server',
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const s = net.connect(redisPort, '127.0.0.1', () => {
          s.end();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
    10_000,
    'redis-server to listen',
  );
}

async function stopRedis(): Promise<void> {
  const r = redis;
  redis = undefined;
  if (!r || r.exitCode !== null) return;
  const exited = new Promise((resolve) => r.once('exit', resolve));
  r.kill('SIGKILL');
  await exited;
}

beforeAll(async () => {
  redisPort = await freePort();
  await startRedis();
  sink = await startSmtpSink({ rcpt: () => reply(451, '4.3.0 not now') });
  env = testConfig({
    redis: { url: `redis://127.0.0.1:${redisPort}` },
    delivery: {
      routes: { '*': { host: '127.0.0.1', port: sink.port, tlsServername: 'localhost' } },
      retry: { firstDelay: '2s', maxDelay: '2s' },
    },
    queue: { lockDuration: '2s' },
  });
  useTestTls(env);
  app = await startApp(env.config, { logger: env.logger });
  await app.mailboxes.add(SENDER, { password: PASSWORD });
});

afterAll(async () => {
  await app?.stop();
  await sink?.close();
  await stopRedis();
  env?.cleanup();
});

describe('Redis loses its data', () => {
  it('delivers every queued message after Redis comes back empty', async () => {
    await waitFor(() => app.queue.isReady(), 10_000, 'queue connection');
    const { client } = await RawSmtpClient.connect({
      port: app.port('submission'),
      ca: testPki().ca.certPem,
    });
    await client.startTls();
    expect((await client.authPlain(SENDER, PASSWORD)).code).toBe(235);
    const ids: string[] = [];
    for (let i = 0; i < COUNT; i++) {
      expect((await client.command(`MAIL FROM:<${SENDER}>`)).code).toBe(250);
      expect((await client.command(`RCPT TO:<bob${i}@example.org>`)).code).toBe(250);
      const r = await client.data(
        makeMessage({ from: SENDER, to: `bob${i}@example.org`, messageId: `wipe-${i}@test` }),
      );
      expect(r.code).toBe(250);
      ids.push(/queued as ([0-9a-z]+)/.exec(r.text)![1]!);
    }
    await client.quit();
    // Every message has been tried once and now waits in Redis as a delayed job.
    await waitFor(
      () => ids.every((id) => messageStatus(app.spool, id).recipients[0]!.state === 'deferred'),
      20_000,
      'first attempts',
    );

    await stopRedis();
    await startRedis();
    sink.script.rcpt = () => accept();

    await waitFor(
      () => ids.every((id) => messageStatus(app.spool, id).status === 'finished'),
      40_000,
      'every message delivered after the wipe',
    );
    const delivered = new Map<string, number>();
    for (const m of sink.messages) {
      const mid = /^Message-ID: <(wipe-\d+)@test>/im.exec(m.raw.toString())?.[1];
      if (mid) delivered.set(mid, (delivered.get(mid) ?? 0) + 1);
    }
    expect(delivered.size).toBe(COUNT);
    expect([...delivered.values()].every((c) => c === 1)).toBe(true);
    expect(ids.every((id) => messageStatus(app.spool, id).recipients[0]!.state === 'delivered')).toBe(true);
  });
});
