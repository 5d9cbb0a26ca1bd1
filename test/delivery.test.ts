import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { configSchema, type ConfigInput } from '../config/schema.ts';
import { createDeliverer, parseRemoteId } from '../gateway/delivery.ts';
import { createLocalDelivery } from '../gateway/local-delivery.ts';
import { createLogger } from '../gateway/log.ts';
import type { Deliverer, Envelope, EnvelopeRecipient } from '../queue/types.ts';
import { useDnsServer, type DnsServer } from './helpers/dns-server.ts';
import { testPki } from './helpers/pki.ts';
import {
  accept,
  delay,
  drop,
  reply,
  startSmtpSink,
  type SmtpSink,
  type SmtpSinkOptions,
} from './helpers/smtp-sink.ts';

const pki = testPki();
let dir: string;
let messagePath: string;
const message = Buffer.from(
  [
    'From: Dr Alice Martin <alice@courrier.test>',
    'To: Bob <bob@example.org>',
    'Subject: Compte rendu',
    'Message-ID: <m1@courrier.test>',
    'Date: Mon, 2 Feb 2026 10:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    'Bonjour,',
    '.leading dot must survive dot-stuffing',
    'Résultats en pièce jointe.',
    '',
  ].join('\r\n'),
);

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'courrier-delivery-'));
  messagePath = path.join(dir, 'message.eml');
  writeFileSync(messagePath, message);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function sink(opts: SmtpSinkOptions = {}): Promise<SmtpSink> {
  const s = await startSmtpSink(opts);
  cleanups.push(() => s.close());
  return s;
}

function deliverer(
  input: Partial<ConfigInput> & { routes?: NonNullable<ConfigInput['delivery']>['routes'] },
  extra: { client?: boolean; dns?: DnsServer; mxPort?: number; replyTimeout?: string } = {},
): Deliverer {
  const { routes, ...rest } = input;
  const config = configSchema.parse({
    hostname: 'courrier.test',
    localDomains: ['courrier.test'],
    ...rest,
    delivery: { routes: routes ?? {}, connectTimeout: '5s', replyTimeout: extra.replyTimeout ?? '10s' },
  });
  const d = createDeliverer({
    config,
    tls: extra.client
      ? { ca: pki.ca.certPem, cert: pki.client.certPem, key: pki.client.keyPem }
      : { ca: pki.ca.certPem },
    logger: createLogger('silent'),
    local: createLocalDelivery({
      mailboxesDir: path.join(dir, 'mailboxes'),
      isHosted: () => true,
      hostname: 'courrier.test',
    }),
    ...(extra.dns ? { dns: extra.dns.resolver() } : {}),
    ...(extra.mxPort ? { mxPort: extra.mxPort } : {}),
  });
  cleanups.push(() => d.close());
  return d;
}

/** A static route for example.org to the sink, verified as `localhost`. */
function routeTo(s: SmtpSink, tls: 'starttls' | 'implicit' = 'starttls') {
  return { 'example.org': { host: s.host, port: s.port, tls, tlsServername: 'localhost' } };
}

function envelope(recipients: EnvelopeRecipient[], over: Partial<Envelope> = {}): Envelope {
  return {
    id: `Q${Math.random().toString(36).slice(2, 10)}`,
    mailFrom: 'alice@courrier.test',
    recipients,
    receivedAt: Date.now(),
    size: message.length,
    source: { listener: 'submission', user: 'alice@courrier.test', tls: true },
    ...over,
  };
}

function request(recipients: EnvelopeRecipient[], over: Partial<Envelope> = {}) {
  return { envelope: envelope(recipients, over), messagePath, recipients };
}

describe('delivery over SMTP to a real next hop', () => {
  it('delivers under verified STARTTLS, streams the bytes unchanged and parses the remote queue id', async () => {
    const s = await sink();
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({
      address: 'bob@example.org',
      result: 'delivered',
      status: '2.0.0',
      remoteMta: '127.0.0.1',
    });
    const [m] = await s.waitForMessages(1);
    expect(o!.remoteId).toBe(m!.queueId);
    expect(o!.reply).toBe(`250 2.0.0 Ok: queued as ${m!.queueId}`);
    expect(m!.raw.equals(message)).toBe(true);
    expect(m).toMatchObject({
      mailFrom: 'alice@courrier.test',
      secure: true,
      servername: 'localhost',
      bodyType: '8bitmime',
    });
    expect(m!.rcptTo).toEqual([{ address: 'bob@example.org' }]);
  });

  it('defers a recipient the next hop answers with 4xx at RCPT', async () => {
    const s = await sink({ rcpt: () => reply(451, '4.7.1 Greylisted, come back later') });
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({
      result: 'defer',
      status: '4.7.1',
      category: 'policy',
      reply: '451 4.7.1 Greylisted, come back later',
    });
    expect(s.messages).toHaveLength(0);
  });

  it('reports mixed outcomes when one of two recipients gets 5xx at RCPT', async () => {
    const s = await sink({
      rcpt: (a) =>
        a.startsWith('nobody') ? reply(550, '5.1.1 <nobody@example.org>: user unknown') : accept(),
    });
    const d = deliverer({ routes: routeTo(s) });
    const out = await d.deliver(request([{ address: 'bob@example.org' }, { address: 'nobody@example.org' }]));
    expect(out[0]).toMatchObject({ address: 'bob@example.org', result: 'delivered' });
    expect(out[1]).toMatchObject({
      address: 'nobody@example.org',
      result: 'reject',
      status: '5.1.1',
      category: 'recipient',
      reply: '550 5.1.1 <nobody@example.org>: user unknown',
      remoteMta: '127.0.0.1',
    });
    const [m] = await s.waitForMessages(1);
    expect(m!.rcptTo.map((r) => r.address)).toEqual(['bob@example.org']);
  });

  it('applies a 5xx DATA reply to the accepted recipients and keeps the RCPT verdict of the others', async () => {
    const s = await sink({
      rcpt: (a) => (a.startsWith('busy') ? reply(452, '4.2.2 mailbox busy, try later') : accept()),
      data: () => reply(554, '5.6.0 message content rejected by policy'),
    });
    const d = deliverer({ routes: routeTo(s) });
    const out = await d.deliver(
      request([
        { address: 'bob@example.org' },
        { address: 'busy@example.org' },
        { address: 'carol@example.org' },
      ]),
    );
    expect(out.map((o) => [o.address, o.result, o.status])).toEqual([
      ['bob@example.org', 'reject', '5.6.0'],
      ['busy@example.org', 'defer', '4.2.2'],
      ['carol@example.org', 'reject', '5.6.0'],
    ]);
    expect(out[0]!.reply).toBe('554 5.6.0 message content rejected by policy');
    expect(s.transactions).toHaveLength(1);
    expect(s.transactions[0]!.outcome).toBe('rejected');
  });

  it('applies a MAIL FROM refusal to every recipient', async () => {
    const s = await sink({ mail: () => reply(553, '5.7.1 sender not allowed from your host') });
    const d = deliverer({ routes: routeTo(s) });
    const out = await d.deliver(request([{ address: 'bob@example.org' }, { address: 'carol@example.org' }]));
    expect(out.map((o) => [o.result, o.status, o.category])).toEqual([
      ['reject', '5.7.1', 'policy'],
      ['reject', '5.7.1', 'policy'],
    ]);
    expect(s.events.filter((e) => e.type === 'rcpt')).toEqual([]);
  });

  it('bounces a message larger than the SIZE the next hop announces, without sending it', async () => {
    const s = await sink({ size: 100 });
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({ result: 'reject', status: '5.3.4', category: 'message-size' });
    expect(s.events.filter((e) => e.type === 'data')).toEqual([]);
  });

  it('defers with a network status when the connection drops in the middle of DATA', async () => {
    const s = await sink({ data: () => drop(10) });
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({ result: 'defer', category: 'network', status: '4.4.2' });
    expect(s.transactions.map((t) => t.outcome)).toEqual(['dropped']);
    // Not silently sent again by the pool: the retry is the queue's decision.
    expect(s.events.filter((e) => e.type === 'data')).toHaveLength(1);
    expect(s.messages).toHaveLength(0);
  });

  it('defers with a network timeout when the DATA reply takes longer than replyTimeout', async () => {
    const s = await sink({ data: () => delay(3000, accept()) });
    const d = deliverer({ routes: routeTo(s) }, { replyTimeout: '1s' });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({ result: 'defer', category: 'network', status: '4.4.2' });
  });

  it('never sends in clear text to a next hop without STARTTLS (defer tls)', async () => {
    const s = await sink({ tls: 'none' });
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({ result: 'defer', category: 'tls', status: '4.7.5' });
    expect(o!.reply).toMatch(/STARTTLS/);
    expect(s.events.some((e) => e.type === 'connect')).toBe(true);
    expect(s.events.filter((e) => e.type === 'mail' || e.type === 'rcpt' || e.type === 'data')).toEqual([]);
  });

  it('refuses a next hop whose certificate comes from an unknown CA (defer tls)', async () => {
    const s = await sink({ cert: pki.untrustedServer });
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({ result: 'defer', category: 'tls', status: '4.7.5' });
    expect(o!.reply).toMatch(/not trusted/);
    expect(s.events.filter((e) => e.type === 'mail')).toEqual([]);
  });

  it('refuses a next hop whose certificate does not name it (defer tls)', async () => {
    const s = await sink();
    const d = deliverer({
      routes: { 'example.org': { host: s.host, port: s.port, tlsServername: 'mx.elsewhere.test' } },
    });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({ result: 'defer', category: 'tls', status: '4.7.5' });
    expect(s.events.filter((e) => e.type === 'mail')).toEqual([]);
  });

  it('delivers over implicit TLS (RFC 8314) when the route says so', async () => {
    const s = await sink({ tls: 'implicit' });
    const d = deliverer({ routes: routeTo(s, 'implicit') });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o!.result).toBe('delivered');
    expect((await s.waitForMessages(1))[0]!.secure).toBe(true);
  });

  it('sends the null sender as MAIL FROM:<>', async () => {
    const s = await sink();
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }], { mailFrom: '' }));
    expect(o!.result).toBe('delivered');
    const mail = s.events.find((e) => e.type === 'mail');
    expect(mail).toMatchObject({ address: '', secure: true });
    expect((await s.waitForMessages(1))[0]!.mailFrom).toBe('');
  });

  it('passes NOTIFY, ORCPT, RET and ENVID on when the next hop advertises DSN, one transaction per (NOTIFY, ORCPT)', async () => {
    const s = await sink();
    const d = deliverer({ routes: routeTo(s) });
    const out = await d.deliver(
      request(
        [
          { address: 'bob@example.org', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;Bob@Example.org' },
          { address: 'carol@example.org', notify: 'NEVER' },
          { address: 'dan@example.org', notify: 'NEVER' },
        ],
        { ret: 'HDRS', envid: 'env-42' },
      ),
    );
    expect(out.map((o) => [o.result, o.dsnPassedOn])).toEqual([
      ['delivered', true],
      ['delivered', true],
      ['delivered', true],
    ]);
    const msgs = await s.waitForMessages(2);
    const bob = msgs.find((m) => m.rcptTo[0]!.address === 'bob@example.org')!;
    expect(bob.rcptTo).toEqual([
      { address: 'bob@example.org', notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;Bob@Example.org' },
    ]);
    expect(bob).toMatchObject({ ret: 'HDRS', envid: 'env-42' });
    const never = msgs.find((m) => m.rcptTo[0]!.address !== 'bob@example.org')!;
    expect(never.rcptTo).toEqual([
      { address: 'carol@example.org', notify: ['NEVER'] },
      { address: 'dan@example.org', notify: ['NEVER'] },
    ]);
  });

  it('does not pass DSN parameters to a next hop without DSN, and says so (dsnPassedOn false)', async () => {
    const s = await sink({ dsn: false });
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(
      request([{ address: 'bob@example.org', notify: ['SUCCESS'], orcpt: 'rfc822;bob@example.org' }], {
        ret: 'FULL',
        envid: 'x',
      }),
    );
    expect(o).toMatchObject({ result: 'delivered', dsnPassedOn: false });
    const [m] = await s.waitForMessages(1);
    expect(m!.rcptTo).toEqual([{ address: 'bob@example.org' }]);
    expect(m!.ret).toBeUndefined();
  });

  it('presents our client certificate to a next hop that requires mutual TLS', async () => {
    const s = await sink({ requireClientCert: true });
    const d = deliverer({ routes: routeTo(s) }, { client: true });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o!.result).toBe('delivered');
    const [m] = await s.waitForMessages(1);
    expect(m!.clientCert).toEqual({
      subjectCN: 'client.courrier.test',
      issuerCN: 'Courrier Test CA',
      authorized: true,
    });
  });

  it('defers (tls) when a next hop requires a client certificate and we have none', async () => {
    const s = await sink({ requireClientCert: true });
    const d = deliverer({ routes: routeTo(s) });
    const [o] = await d.deliver(request([{ address: 'bob@example.org' }]));
    expect(o).toMatchObject({ result: 'defer', category: 'tls', status: '4.7.5' });
    expect(s.events.filter((e) => e.type === 'mail')).toEqual([]);
  });

  it('delivers local domains into the Maildir and the rest over SMTP in the same request', async () => {
    const s = await sink();
    const d = deliverer({ routes: routeTo(s) });
    const out = await d.deliver(
      request([{ address: 'carla@courrier.test' }, { address: 'bob@example.org' }]),
    );
    expect(out[0]).toMatchObject({ address: 'carla@courrier.test', result: 'delivered', local: true });
    expect(out[1]).toMatchObject({ address: 'bob@example.org', result: 'delivered', remoteMta: '127.0.0.1' });
  });
});

describe('routing through DNS (a real resolver asking a local DNS server)', () => {
  const dns = useDnsServer({
    // mx1 has the better preference but nothing listens on 127.0.0.2 at the sink's port.
    'example.test': {
      MX: [
        { preference: 20, exchange: 'mx2.example.test' },
        { preference: 10, exchange: 'mx1.example.test' },
      ],
    },
    'mx1.example.test': { A: ['127.0.0.2'] },
    'mx2.example.test': { A: ['127.0.0.1'] },
    'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
    'broken.test': { rcode: 'SERVFAIL' },
  });

  it('falls back to the next MX when the first refuses the connection', async () => {
    const s = await sink({ cert: pki.issueServer(['mx2.example.test']) });
    const d = deliverer({}, { dns, mxPort: s.port });
    const [o] = await d.deliver(request([{ address: 'bob@example.test' }]));
    expect(o).toMatchObject({ result: 'delivered', remoteMta: 'mx2.example.test' });
    const [m] = await s.waitForMessages(1);
    // The certificate was checked against the MX name, not the address we connected to.
    expect(m!.servername).toBe('mx2.example.test');
    expect(dns.queries).toContain('MX example.test');
  });

  it('does not try a failed MX again for the next transaction of the same message', async () => {
    const s = await sink({ cert: pki.issueServer(['mx2.example.test']) });
    // mx1 (127.0.0.2, same port) answers but offers no STARTTLS: a failure before the transaction.
    const mx1 = await sink({ host: '127.0.0.2', port: s.port, tls: 'none' });
    const d = deliverer({}, { dns, mxPort: s.port });
    const out = await d.deliver(
      request([
        { address: 'bob@example.test', notify: ['FAILURE'] },
        { address: 'carol@example.test', notify: 'NEVER' },
      ]),
    );
    expect(out.map((o) => [o.result, o.remoteMta])).toEqual([
      ['delivered', 'mx2.example.test'],
      ['delivered', 'mx2.example.test'],
    ]);
    expect(await s.waitForMessages(2)).toHaveLength(2);
    expect(mx1.events.filter((e) => e.type === 'connect')).toHaveLength(1);
  });

  it('defers with a network status when no MX host answers', async () => {
    const s = await sink({ cert: pki.issueServer(['mx2.example.test']) });
    const port = s.port;
    await s.close();
    const d = deliverer({}, { dns, mxPort: port });
    const [o] = await d.deliver(request([{ address: 'bob@example.test' }]));
    expect(o).toMatchObject({ result: 'defer', category: 'network', status: '4.4.1' });
  });

  it('bounces a domain with a null MX (RFC 7505) and defers on SERVFAIL', async () => {
    const d = deliverer({}, { dns });
    const out = await d.deliver(request([{ address: 'a@nullmx.test' }, { address: 'b@broken.test' }]));
    expect(out[0]).toMatchObject({ result: 'reject', status: '5.1.10', category: 'dns' });
    expect(out[1]).toMatchObject({ result: 'defer', status: '4.4.3', category: 'dns' });
  });
});

describe('parseRemoteId', () => {
  it.each([
    ['250 2.0.0 Ok: queued as 4F1B2C3D4E', '4F1B2C3D4E'],
    ['250 OK id=1tXyZa-000ABC-12', '1tXyZa-000ABC-12'],
    ['250 Message Queued (18f0a2b3c4d000abcd)', '18f0a2b3c4d000abcd'],
    ['250 2.0.0 x8K1abc123456 Message accepted for delivery', 'x8K1abc123456'],
    ['250 2.0.0 OK  1717171717 a1si1234567wrs.123 - gsmtp', 'a1si1234567wrs.123'],
    ['250 2.0.0 OK <AB12CD@host.prod.outlook.com> [Hostname=X]', '<AB12CD@host.prod.outlook.com>'],
    ['250 OK: message queued', undefined],
  ])('%s → %s', (r, id) => {
    expect(parseRemoteId(r)).toBe(id);
  });
});
