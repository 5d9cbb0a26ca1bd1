import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCertificate, type KeyAndCert } from '../crypto/dev-pki.ts';
import { openMailboxStore, type MailboxStore } from '../directory/mailbox-store.ts';
import { AuthThrottle, startIngress, stopIngress, type Listener } from '../gateway/smtp-ingress.ts';
import { openDeliveryQueue, type DeliveryQueue } from '../queue/delivery-queue.ts';
import { openSpool, type Spool } from '../queue/spool.ts';
import { dropRedisPrefix, testConfig, waitFor, type TestEnv } from './helpers/gateway-fixture.ts';
import { testPki, type TestPki } from './helpers/pki.ts';
import { makeMessage, RawSmtpClient, type SmtpReply } from './helpers/smtp-client.ts';

const PASSWORD = 'correct horse battery staple';
let env: TestEnv;
let pki: TestPki;
let spool: Spool;
let queue: DeliveryQueue;
let mailboxes: MailboxStore;
let listeners: Listener[];
const port = (kind: Listener['kind']) => listeners.find((l) => l.kind === kind)!.port;

beforeAll(async () => {
  env = testConfig({ smtp: { maxMessageSize: '64KB' } });
  pki = testPki();
  spool = await openSpool(path.join(env.dir, 'spool'));
  queue = openDeliveryQueue({ redisUrl: env.config.redis.url, prefix: env.prefix });
  await waitFor(() => queue.isReady(), 5000, 'redis');
  mailboxes = openMailboxStore(path.join(env.dir, 'directory.sqlite'));
  await mailboxes.add('alice@courrier.test', { password: PASSWORD });
  await mailboxes.add('bob@courrier.test');
  listeners = await startIngress({
    config: env.config,
    tls: { key: pki.server.keyPem, cert: `${pki.server.certPem}${pki.ca.certPem}`, ca: pki.ca.certPem },
    spool,
    queue,
    mailboxes,
    logger: env.logger,
  });
});

afterAll(async () => {
  await stopIngress(listeners);
  await queue.close();
  mailboxes.close();
  await dropRedisPrefix(env.config.redis.url, env.prefix);
  env.cleanup();
});

async function submission(auth = true): Promise<RawSmtpClient> {
  const { client, greeting } = await RawSmtpClient.connect({ port: port('submission'), ca: pki.ca.certPem });
  expect(greeting.code).toBe(220);
  await client.startTls();
  if (auth) expect((await client.authPlain('alice@courrier.test', PASSWORD)).code).toBe(235);
  return client;
}

async function relay(cert?: KeyAndCert): Promise<RawSmtpClient> {
  const { client } = await RawSmtpClient.connect({
    port: port('relay'),
    ca: pki.ca.certPem,
    ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}),
  });
  return client;
}

describe('submission listener', () => {
  it('refuses AUTH before STARTTLS', async () => {
    const { client } = await RawSmtpClient.connect({ port: port('submission'), ca: pki.ca.certPem });
    expect((await client.command('EHLO client.test')).code).toBe(250);
    // smtp-server still lists AUTH before TLS, but refuses to use it (RFC 8314 §3).
    const r = await client.authPlain('alice@courrier.test', PASSWORD);
    expect([r.code, r.enhanced]).toEqual([538, '5.7.0']);
    await client.quit();
  });

  it('answers a wrong password with 535 5.7.8', async () => {
    const client = await submission(false);
    const r = await client.authPlain('alice@courrier.test', 'wrong password here');
    expect([r.code, r.enhanced]).toEqual([535, '5.7.8']);
    await client.quit();
  });

  it('requires authentication before MAIL', async () => {
    const client = await submission(false);
    const r = await client.command('MAIL FROM:<alice@courrier.test>');
    expect(r.code).toBe(530);
    expect(r.enhanced).toBe('5.7.0');
    await client.quit();
  });

  it('lets a mailbox send only as itself: 550 5.7.1', async () => {
    const client = await submission();
    const other = await client.command('MAIL FROM:<bob@courrier.test>');
    expect([other.code, other.enhanced]).toEqual([550, '5.7.1']);
    const nul = await client.command('MAIL FROM:<>');
    expect([nul.code, nul.enhanced]).toEqual([550, '5.7.1']);
    const own = await client.command('MAIL FROM:<Alice@COURRIER.test>');
    expect(own.code).toBe(250);
    await client.quit();
  });

  it('answers 550 5.1.1 for an unknown local mailbox', async () => {
    const client = await submission();
    await client.command('MAIL FROM:<alice@courrier.test>');
    const r = await client.command('RCPT TO:<nobody@courrier.test>');
    expect([r.code, r.enhanced]).toEqual([550, '5.1.1']);
    await client.quit();
  });

  it('accepts, spools durably and queues a job carrying only the id, with DSN parameters', async () => {
    const client = await submission();
    expect((await client.command('MAIL FROM:<alice@courrier.test> RET=HDRS ENVID=abc+2Bdef')).code).toBe(250);
    expect(
      (
        await client.command(
          'RCPT TO:<bob@courrier.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40courrier.test',
        )
      ).code,
    ).toBe(250);
    expect((await client.command('RCPT TO:<carol@Example.ORG> NOTIFY=NEVER')).code).toBe(250);
    const body = makeMessage({ from: 'alice@courrier.test', to: 'bob@courrier.test' });
    const r = await client.data(body);
    expect(r.code).toBe(250);
    expect(r.enhanced).toBe('2.6.0');
    const id = /queued as ([0-9a-z]+)/.exec(r.text)![1]!;
    await client.quit();

    const envelope = spool.readEnvelope(id)!;
    expect(envelope.mailFrom).toBe('alice@courrier.test');
    expect(envelope.ret).toBe('HDRS');
    expect(envelope.envid).toBe('abc+def');
    expect(envelope.recipients).toEqual([
      { address: 'bob@courrier.test', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;bob@courrier.test' },
      { address: 'carol@example.org', notify: 'NEVER' },
    ]);
    expect(envelope.source).toMatchObject({ listener: 'submission', user: 'alice@courrier.test', tls: true });
    const stored = fs.readFileSync(spool.messagePath(id), 'utf8');
    expect(stored.startsWith('Received: from client.test')).toBe(true);
    expect(stored).toMatch(/with ESMTPSA id /);
    expect(stored.endsWith(body)).toBe(true);
    expect(envelope.size).toBe(Buffer.byteLength(stored));

    const job = await queue.queue.getJob(id);
    expect(job?.data).toEqual({ id });
  });

  it('refuses an oversized message with 552 5.3.4 and keeps nothing', async () => {
    const before = spool.listQueued().length;
    const client = await submission();
    await client.command('MAIL FROM:<alice@courrier.test>');
    await client.command('RCPT TO:<bob@courrier.test>');
    const r = await client.data(
      makeMessage({ from: 'alice@courrier.test', to: 'bob@courrier.test', bodySize: 100_000 }),
    );
    expect([r.code, r.enhanced]).toEqual([552, '5.3.4']);
    await client.quit();
    expect(spool.listQueued().length).toBe(before);
    expect(fs.readdirSync(path.join(env.dir, 'spool', 'tmp'))).toEqual([]);
  });

  it('stores no more than the size limit of an oversized message while reading it', async () => {
    const client = await submission();
    await client.command('MAIL FROM:<alice@courrier.test>');
    await client.command('RCPT TO:<bob@courrier.test>');
    expect((await client.command('DATA')).code).toBe(354);
    const tmpDir = path.join(env.dir, 'spool', 'tmp');
    let largest = 0;
    const watch = setInterval(() => {
      for (const f of fs.readdirSync(tmpDir)) {
        const st = fs.statSync(path.join(tmpDir, f), { throwIfNoEntry: false });
        if (st) largest = Math.max(largest, st.size);
      }
    }, 2);
    const line = `${'x'.repeat(998)}\r\n`;
    for (let i = 0; i < 4000; i++) await client.write(line); // 4 MB against a 64 KB limit
    const r = await client.sendBody('');
    clearInterval(watch);
    expect([r.code, r.enhanced]).toEqual([552, '5.3.4']);
    expect(largest).toBeLessThan(2 * 65536);
    await client.quit();
  });

  it('keeps no file open and nothing in the spool when the client disconnects mid-DATA', async () => {
    const fds = () => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 3; i++) {
      const client = await submission();
      await client.command('MAIL FROM:<alice@courrier.test>');
      await client.command('RCPT TO:<bob@courrier.test>');
      expect((await client.command('DATA')).code).toBe(354);
      await client.write('Subject: cut\r\n\r\npart of a letter\r\n');
      await new Promise((r) => setTimeout(r, 50));
      client.destroy();
    }
    await waitFor(() => fs.readdirSync(path.join(env.dir, 'spool', 'tmp')).length === 0, 5000, 'tmp cleared');
    await waitFor(() => fds() <= before, 5000, 'file descriptors released');
  });

  it.each([
    ['bare LF', 'Subject: x\r\n\r\nline one\nline two\r\n'],
    ['bare CR', 'Subject: x\r\n\r\nline one\rline two\r\n'],
    ['smuggled end of data', 'Subject: x\r\n\r\nhello\n.\r\nMAIL FROM:<evil@example.org>\r\n'],
  ])('refuses %s in DATA with 554 5.6.0', async (_name, body) => {
    const before = spool.listQueued().length;
    const client = await submission();
    await client.command('MAIL FROM:<alice@courrier.test>');
    await client.command('RCPT TO:<bob@courrier.test>');
    const r = await client.data(body, { raw: true });
    expect([r.code, r.enhanced]).toEqual([554, '5.6.0']);
    // The session is still in a sane state: the next command is answered.
    expect((await client.command('NOOP')).code).toBe(250);
    await client.quit();
    expect(spool.listQueued().length).toBe(before);
  });
});

describe('relay listener', () => {
  it('refuses a peer without a client certificate', async () => {
    const client = await relay();
    const tlsFailedOrRefused = await client
      .startTls()
      .then(() => client.command('MAIL FROM:<x@peer.test>'))
      .then((r) => r.code)
      .catch(() => 'closed');
    expect(tlsFailedOrRefused === 'closed' || tlsFailedOrRefused === 530).toBe(true);
    client.destroy();
  });

  it('refuses a client certificate from an unknown CA at the TLS handshake', async () => {
    const rogue = issueCertificate(pki.unknownCa, {
      commonName: 'mx.rogue.test',
      usage: 'client',
      keyType: 'ec-p256',
    });
    const client = await relay(rogue);
    await expect(client.startTls().then(() => client.command('MAIL FROM:<x@rogue.test>'))).rejects.toThrow();
    client.destroy();
  });

  it('requires STARTTLS before MAIL', async () => {
    const client = await relay();
    await client.command('EHLO peer.test');
    const r = await client.command('MAIL FROM:<x@peer.test>');
    expect([r.code, r.enhanced]).toEqual([530, '5.7.0']);
    await client.quit();
  });

  it('accepts mail for local mailboxes only from a trusted peer: no open relay', async () => {
    const peer = pki.issueClient('mx.peer.test');
    const client = await relay(peer);
    await client.startTls('mx.peer.test');
    expect((await client.command('MAIL FROM:<doctor@peer.test>')).code).toBe(250);
    const outside = await client.command('RCPT TO:<someone@elsewhere.test>');
    expect([outside.code, outside.enhanced]).toEqual([550, '5.7.1']);
    expect((await client.command('RCPT TO:<bob@courrier.test>')).code).toBe(250);
    const r = await client.data(makeMessage({ from: 'doctor@peer.test', to: 'bob@courrier.test' }));
    expect(r.code).toBe(250);
    await client.quit();
  });
});

describe('when Redis is unreachable', () => {
  it('answers 451 4.3.0 at once and stores nothing', async () => {
    const down = testConfig({ smtp: { relay: { enabled: false } } });
    // Nothing listens on port 1: the connection is refused at once.
    const deadQueue = openDeliveryQueue({ redisUrl: 'redis://127.0.0.1:1', prefix: down.prefix });
    const deadSpool = await openSpool(path.join(down.dir, 'spool'));
    const ls = await startIngress({
      config: down.config,
      tls: { key: pki.server.keyPem, cert: pki.server.certPem, ca: pki.ca.certPem },
      spool: deadSpool,
      queue: deadQueue,
      mailboxes,
      logger: down.logger,
    });
    try {
      const { client } = await RawSmtpClient.connect({ port: ls[0]!.port, ca: pki.ca.certPem });
      await client.startTls();
      expect((await client.authPlain('alice@courrier.test', PASSWORD)).code).toBe(235);
      const started = Date.now();
      const r = await client.command('MAIL FROM:<alice@courrier.test>');
      expect([r.code, r.enhanced]).toEqual([451, '4.3.0']);
      expect(Date.now() - started).toBeLessThan(2000);
      await client.quit();
      expect(deadSpool.listQueued()).toEqual([]);
    } finally {
      await stopIngress(ls);
      await deadQueue.close();
      down.cleanup();
    }
  });
});

describe('authentication throttle', () => {
  it('answers 454 4.7.0 without checking passwords after 10 failures from one address', async () => {
    const throttle = new AuthThrottle(10, 60_000);
    for (let i = 0; i < 9; i++) throttle.fail('192.0.2.1', 1000);
    expect(throttle.blocked('192.0.2.1', 1000)).toBe(false);
    throttle.fail('192.0.2.1', 1000);
    expect(throttle.blocked('192.0.2.1', 1000)).toBe(true);
    expect(throttle.blocked('192.0.2.2', 1000)).toBe(false);
    expect(throttle.blocked('192.0.2.1', 1000 + 60_001)).toBe(false);
  });

  it('is enforced on the wire', async () => {
    const client = await submission(false);
    let last: SmtpReply = { code: 0, text: '' };
    for (let i = 0; i < 11; i++) last = await client.authPlain('alice@courrier.test', `wrong password ${i}`);
    expect([last.code, last.enhanced]).toEqual([454, '4.7.0']);
    // Even the right password is refused while the address is throttled.
    const right = await client.authPlain('alice@courrier.test', PASSWORD);
    expect(right.code).toBe(454);
    await client.quit();
  });
});
