import fs from 'node:fs';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { holdMessage, messageStatus, purgeMessage, releaseMessage } from '../gateway/admin.ts';
import { startApp, type App } from '../gateway/app.ts';
import { dropRedisPrefix, testConfig, useTestTls, waitFor, type TestEnv } from './helpers/gateway-fixture.ts';
import { testPki } from './helpers/pki.ts';
import { makeMessage, RawSmtpClient } from './helpers/smtp-client.ts';
import { accept, drop, reply, startSmtpSink, type SmtpSink } from './helpers/smtp-sink.ts';

/**
 * The whole spine in one process: submission → spool → BullMQ → delivery to a scripted next hop
 * on loopback (real SMTP, verified TLS) → tracking and DSNs, which reach the sender's local
 * mailbox and are parsed back.
 */
const PASSWORD = 'pipeline test password';
const SENDER = 'alice@courrier.test';
let env: TestEnv;
let app: App;
let sink: SmtpSink;

beforeAll(async () => {
  sink = await startSmtpSink({});
  env = testConfig({
    delivery: {
      routes: { '*': { host: '127.0.0.1', port: sink.port, tlsServername: 'localhost' } },
      retry: { firstDelay: '1s', maxDelay: '2s', giveUpAfter: '6s', delayWarningAfter: '2s' },
    },
  });
  useTestTls(env);
  app = await startApp(env.config, { logger: env.logger });
  await app.mailboxes.add(SENDER, { password: PASSWORD });
});

afterAll(async () => {
  await app?.stop();
  await sink?.close();
  await dropRedisPrefix(env.config.redis.url, env.prefix);
  env.cleanup();
});

beforeEach(() => {
  sink.reset();
  sink.script.rcpt = () => accept();
  sink.script.data = () => accept();
});

async function submit(to: string[], opts: { params?: string; rcptParams?: string; messageId?: string } = {}) {
  const { client } = await RawSmtpClient.connect({ port: app.port('submission'), ca: testPki().ca.certPem });
  await client.startTls();
  expect((await client.authPlain(SENDER, PASSWORD)).code).toBe(235);
  expect((await client.command(`MAIL FROM:<${SENDER}>${opts.params ? ` ${opts.params}` : ''}`)).code).toBe(
    250,
  );
  for (const t of to) {
    expect((await client.command(`RCPT TO:<${t}>${opts.rcptParams ? ` ${opts.rcptParams}` : ''}`)).code).toBe(
      250,
    );
  }
  const r = await client.data(
    makeMessage({ from: SENDER, to: to[0]!, subject: 'Lettre de liaison', ...opts }),
  );
  expect(r.code).toBe(250);
  await client.quit();
  return /queued as ([0-9a-z]+)/.exec(r.text)![1]!;
}

function finished(id: string) {
  return () => {
    const s = messageStatus(app.spool, id);
    return s.status === 'finished' ? s : undefined;
  };
}

/** DSNs land in the sender's local mailbox; returns them parsed, oldest first. */
async function senderMailbox() {
  const dir = path.join(app.paths.mailboxesDir, 'courrier.test', 'alice', 'new');
  if (!fs.existsSync(dir)) return [];
  const files = fs.readdirSync(dir).sort();
  return Promise.all(
    files.map(async (f) => {
      const raw = fs.readFileSync(path.join(dir, f));
      return Object.assign(await simpleParser(raw), { raw: raw.toString('utf8') });
    }),
  );
}

/** The message/delivery-status part, read from the raw DSN (mailparser folds it into the text). */
function dsnFields(dsn: { raw: string }): string {
  const boundary = /boundary="?([^";\r\n]+)"?/i.exec(dsn.raw)?.[1];
  const part = dsn.raw
    .split(`--${boundary}`)
    .find((p) => /^Content-Type: message\/delivery-status/im.test(p));
  return (part ?? '').replace(/\r\n/g, '\n');
}

describe('pipeline', () => {
  it('delivers over verified TLS and tracks the remote queue id', async () => {
    sink.script.data = () => accept('2.0.0 Ok: queued as REMOTE42');
    const id = await submit(['bob@example.org', 'carol@example.org']);
    const s = await waitFor(finished(id), 20_000, 'delivery');
    expect(s.recipients.map((r) => [r.address, r.state, r.remoteId])).toEqual([
      ['bob@example.org', 'delivered', 'REMOTE42'],
      ['carol@example.org', 'delivered', 'REMOTE42'],
    ]);
    expect(sink.messages).toHaveLength(1);
    const m = sink.messages[0]!;
    expect(m.secure).toBe(true);
    expect(m.mailFrom).toBe(SENDER);
    expect(m.rcptTo.map((r) => r.address)).toEqual(['bob@example.org', 'carol@example.org']);
    expect(m.raw.toString()).toMatch(new RegExp(`with ESMTPSA id ${id};`));
  });

  it('retries a 4xx, then delivers', async () => {
    let calls = 0;
    sink.script.rcpt = () => (++calls < 3 ? reply(451, '4.7.1 greylisted, try later') : accept());
    const id = await submit(['bob@example.org']);
    const s = await waitFor(finished(id), 20_000, 'retry then success');
    expect(s.recipients[0]).toMatchObject({ state: 'delivered', attempts: 3 });
    expect(s.attempts).toBe(3);
  });

  it('retries after the next hop drops the connection mid-DATA, then delivers once', async () => {
    let calls = 0;
    sink.script.data = () => (++calls === 1 ? drop(100) : accept());
    const id = await submit(['bob@example.org']);
    const s = await waitFor(finished(id), 20_000, 'drop then success');
    expect(s.recipients[0]).toMatchObject({ state: 'delivered', attempts: 2 });
    expect(sink.messages).toHaveLength(1);
  });

  it('bounces a 5xx at once with an RFC 3464 report carrying the remote reply', async () => {
    const before = (await senderMailbox()).length;
    sink.script.rcpt = (a) =>
      a.startsWith('nobody') ? reply(550, '5.1.1 <nobody@example.org>: user unknown') : accept();
    const id = await submit(['nobody@example.org', 'bob@example.org'], {
      params: 'RET=HDRS ENVID=env-123',
      rcptParams: 'ORCPT=rfc822;original+40example.org',
    });
    const s = await waitFor(finished(id), 20_000, 'bounce');
    expect(s.recipients.map((r) => r.state)).toEqual(['bounced', 'delivered']);
    const mails = await waitFor(async () => {
      const m = await senderMailbox();
      return m.length > before ? m : undefined;
    });
    const dsn = mails.at(-1)!;
    expect(dsn.headers.get('content-type')).toMatchObject({
      value: 'multipart/report',
      params: { 'report-type': 'delivery-status' },
    });
    expect(dsn.headers.get('auto-submitted')).toBe('auto-replied');
    expect(dsn.subject).not.toMatch(/Lettre/); // never quotes the patient's subject
    const fields = dsnFields(dsn);
    expect(fields).toMatch(/^Original-Envelope-Id: env-123$/m);
    expect(fields).toMatch(/^Final-Recipient: rfc822; ?nobody@example\.org$/m);
    expect(fields).toMatch(/^Original-Recipient: rfc822; ?original@example\.org$/m);
    expect(fields).toMatch(/^Action: failed$/m);
    expect(fields).toMatch(/^Status: 5\.1\.1$/m);
    expect(fields).toMatch(/^Diagnostic-Code: smtp; ?550 5\.1\.1 <nobody@example\.org>: user unknown$/m);
    expect(fields).not.toMatch(/bob@example\.org/);
    // RET=HDRS: headers only, no body.
    expect(dsn.attachments.some((a) => a.contentType === 'text/rfc822-headers')).toBe(true);
    expect(dsn.attachments.some((a) => a.contentType === 'message/rfc822')).toBe(false);
  });

  it('keeps retrying a 4xx, warns of the delay, then gives up and bounces', async () => {
    const before = (await senderMailbox()).length;
    sink.script.rcpt = () => reply(452, '4.2.2 mailbox full');
    const id = await submit(['full@example.org']);
    const s = await waitFor(finished(id), 30_000, 'give up');
    expect(s.recipients[0]!.state).toBe('bounced');
    expect(s.recipients[0]!.attempts).toBeGreaterThanOrEqual(3);
    const mails = (
      await waitFor(async () => {
        const m = await senderMailbox();
        return m.length >= before + 2 ? m : undefined;
      })
    ).slice(before);
    const actions = mails.map((m) => /^Action: (\w+)$/m.exec(dsnFields(m))?.[1]);
    expect(actions).toEqual(['delayed', 'failed']);
    expect(dsnFields(mails[0]!)).toMatch(/^Will-Retry-Until: /m);
    expect(dsnFields(mails[1]!)).toMatch(/^Diagnostic-Code: smtp; ?452 4\.2\.2 mailbox full/m);
  });

  it('sends no DSN for NOTIFY=NEVER', async () => {
    const before = (await senderMailbox()).length;
    sink.script.rcpt = () => reply(550, '5.1.1 user unknown');
    const id = await submit(['nobody@example.org'], { rcptParams: 'NOTIFY=NEVER' });
    await waitFor(finished(id), 20_000, 'bounce');
    await new Promise((r) => setTimeout(r, 500));
    expect((await senderMailbox()).length).toBe(before);
  });

  it('never bounces a bounce: a failing message from the null sender just ends', async () => {
    const queued = app.spool.listQueued().length;
    sink.script.rcpt = () => reply(550, '5.1.1 user unknown');
    const id = app.spool.newId();
    await app.spool.store(
      {
        id,
        mailFrom: '',
        recipients: [{ address: 'nobody@example.org' }],
        receivedAt: Date.now(),
        source: { listener: 'internal' },
      },
      Buffer.from('From: MAILER-DAEMON@gw\r\nSubject: x\r\n\r\nreport\r\n'),
    );
    await app.queue.enqueue(id);
    await waitFor(finished(id), 20_000, 'null sender failure');
    await new Promise((r) => setTimeout(r, 500));
    expect(app.spool.listQueued().length).toBe(queued);
  });

  it('holds, releases and purges on the admin’s word', async () => {
    sink.script.rcpt = () => reply(451, '4.3.0 later');
    const id = await submit(['later@example.org']);
    await waitFor(() => messageStatus(app.spool, id).recipients[0]!.state === 'deferred', 20_000, 'deferral');
    await holdMessage(app.spool, app.queue, id, 'test');
    expect(messageStatus(app.spool, id).status).toBe('held');
    const attempts = messageStatus(app.spool, id).attempts;
    await new Promise((r) => setTimeout(r, 2500));
    expect(messageStatus(app.spool, id).attempts).toBe(attempts);
    sink.script.rcpt = () => accept();
    await releaseMessage(app.spool, app.queue, id, 'test');
    await waitFor(finished(id), 20_000, 'delivery after release');

    sink.script.rcpt = () => reply(451, '4.3.0 later');
    const other = await submit(['later@example.org']);
    await waitFor(
      () => messageStatus(app.spool, other).recipients[0]!.state === 'deferred',
      20_000,
      'deferral',
    );
    await purgeMessage(app.spool, app.queue, other, 'test');
    const purged = await waitFor(() => {
      const s = messageStatus(app.spool, other);
      return s.status === 'purged' ? s : undefined;
    });
    expect(purged.recipients[0]!.state).toBe('purged');
  });
});
