import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { simpleParser, type ParsedMail } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildDsn,
  createNotifier,
  RETURN_FULL_DEFAULT_LIMIT,
  rfc5322Date,
  wantsReport,
} from '../gateway/dsn.ts';
import type { DsnRecipientReport, Envelope } from '../queue/types.ts';

let dir: string;
let small: string;
let large: string;
let huge: string;
const SUBJECT = 'Compte rendu opératoire de M. Dupont';
const headers = [
  'From: Dr Alice Martin <alice@courrier.test>',
  'To: Dr Bob <bob@example.org>',
  `Subject: ${SUBJECT}`,
  'Message-ID: <orig-1@courrier.test>',
  'Date: Mon, 2 Feb 2026 10:00:00 +0000',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=us-ascii',
  '',
  '',
].join('\r\n');
const body = 'Patient: Jean Dupont, ne le 01/01/1950.\r\n';

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'courrier-dsn-'));
  small = path.join(dir, 'small.eml');
  writeFileSync(small, headers + body);
  large = path.join(dir, 'large.eml');
  writeFileSync(large, headers + 'x'.repeat(RETURN_FULL_DEFAULT_LIMIT) + '\r\n');
  huge = path.join(dir, 'huge.eml');
  writeFileSync(huge, headers + `${'y'.repeat(998)}\r\n`.repeat(10_600));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const arrival = new Date('2026-02-02T10:00:05Z');
const now = new Date('2026-02-02T10:30:00Z');

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    id: 'Q1',
    mailFrom: 'alice@courrier.test',
    recipients: [{ address: 'bob@example.org' }, { address: 'carol@example.net' }],
    receivedAt: arrival.getTime(),
    size: 100,
    source: { listener: 'submission', user: 'alice@courrier.test' },
    ...over,
  };
}

const failedBob: DsnRecipientReport = {
  recipient: { address: 'bob@example.org', orcpt: 'rfc822;Bob@Example.org' },
  action: 'failed',
  status: '5.1.1',
  remoteMta: 'mx.example.org',
  diagnostic:
    '550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in local recipient table',
  lastAttemptAt: Date.parse('2026-02-02T10:29:00Z'),
};
const delayedCarol: DsnRecipientReport = {
  recipient: { address: 'carol@example.net' },
  action: 'delayed',
  status: '4.4.1',
  remoteMta: 'mx.example.net',
  diagnostic: '421 4.4.1 cannot connect to mx.example.net: ECONNREFUSED',
  lastAttemptAt: Date.parse('2026-02-02T10:29:30Z'),
  willRetryUntil: Date.parse('2026-02-07T10:00:05Z'),
};

/** Splits a message/delivery-status body into field maps (per-message first, then one per recipient). */
function statusGroups(text: string): Array<Record<string, string>> {
  return text
    .replace(/\r\n[ \t]+/g, ' ')
    .split(/\r?\n\r?\n/)
    .filter((b) => b.trim())
    .map((block) => {
      const fields: Record<string, string> = {};
      for (const line of block.split(/\r?\n/).filter((l) => l.length > 0)) {
        const i = line.indexOf(':');
        fields[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      return fields;
    });
}

/** The MIME parts of a multipart body, split at the boundary mailparser read from Content-Type. */
function mimeParts(raw: Buffer, boundary: string): Array<{ headers: string; body: string }> {
  const text = raw.toString('utf8');
  const sections = text.split(`\r\n--${boundary}`);
  // sections[0] is the header + preamble; the last one starts with `--` (the close delimiter).
  return sections.slice(1, -1).map((section) => {
    const part = section.replace(/^\r\n/, '');
    const end = part.indexOf('\r\n\r\n');
    return { headers: part.slice(0, end), body: part.slice(end + 4) };
  });
}

/**
 * Parses a DSN with mailparser (headers, text part, returned content as its attachment). mailparser
 * folds a message/delivery-status part into `text`, so that part's fields are read from the MIME
 * part at the boundary mailparser found.
 */
async function parse(dsn: Buffer): Promise<{
  mail: ParsedMail;
  status: Array<Record<string, string>>;
  returned: { type: string; text: string };
  parts: Array<{ headers: string; body: string }>;
}> {
  const mail = await simpleParser(dsn, { skipHtmlToText: true, checksumAlgo: 'sha256' });
  const ct = mail.headers.get('content-type') as { value: string; params: Record<string, string> };
  const boundary = ct.params.boundary;
  if (!boundary) throw new Error('no boundary');
  const parts = mimeParts(dsn, boundary);
  const statusPart = parts.find((p) => /^Content-Type: message\/delivery-status/im.test(p.headers));
  const returned = mail.attachments.find(
    (a) => a.contentType === 'message/rfc822' || a.contentType === 'text/rfc822-headers',
  );
  if (!statusPart || !returned)
    throw new Error(`missing parts: ${parts.map((p) => p.headers.split('\r\n')[0]).join(', ')}`);
  return {
    mail,
    status: statusGroups(statusPart.body),
    returned: { type: returned.contentType, text: returned.content.toString('utf8') },
    parts,
  };
}

describe('buildDsn (RFC 3464)', () => {
  it('builds a failure/delay report with every field, parsed back with mailparser', async () => {
    const dsn = await buildDsn({
      reportingMta: 'courrier.test',
      envelope: envelope({ envid: 'ENV-77', ret: 'HDRS' }),
      messagePath: small,
      reports: [failedBob, delayedCarol],
      arrivalDate: arrival,
      now,
    });
    // Wire format: CRLF only, no line over 998 characters (RFC 5322 §2.1.1).
    expect(dsn.toString('latin1')).not.toMatch(/[^\r]\n/);
    expect(
      dsn
        .toString('latin1')
        .split('\r\n')
        .every((l) => l.length <= 998),
    ).toBe(true);

    const { mail, status, returned, parts } = await parse(dsn);
    expect(parts.map((p) => p.headers.split('\r\n')[0])).toEqual([
      'Content-Type: text/plain; charset=us-ascii',
      'Content-Type: message/delivery-status',
      'Content-Type: text/rfc822-headers',
    ]);
    expect(mail.from?.value).toEqual([
      { address: 'MAILER-DAEMON@courrier.test', name: 'Mail Delivery System' },
    ]);
    expect(mail.to && !Array.isArray(mail.to) && mail.to.value[0]!.address).toBe('alice@courrier.test');
    expect(mail.subject).toBe('Delivery Status Notification (Failure)');
    expect(mail.headers.get('auto-submitted')).toBe('auto-replied');
    expect(mail.messageId).toMatch(/^<dsn\.[a-z0-9]+\.[0-9a-f]{16}@courrier\.test>$/);
    expect(mail.date?.toISOString()).toBe(now.toISOString());
    const ct = mail.headers.get('content-type') as { value: string; params: Record<string, string> };
    expect(ct.value).toBe('multipart/report');
    expect(ct.params['report-type']).toBe('delivery-status');

    // (1) human-readable: recipients, status, remote reply; never the subject or the body.
    expect(mail.text).toContain('<bob@example.org>: delivery failed, status 5.1.1 (mx.example.org)');
    expect(mail.text).toContain('User unknown in local recipient table');
    expect(mail.text).toContain('<carol@example.net>: not delivered yet, status 4.4.1');
    expect(mail.text).not.toContain('Compte rendu');
    expect(mail.text).not.toContain('Dupont');

    // (2) machine-readable
    expect(status).toHaveLength(3);
    expect(status[0]).toEqual({
      'reporting-mta': 'dns; courrier.test',
      'original-envelope-id': 'ENV-77',
      'arrival-date': 'Mon, 2 Feb 2026 10:00:05 +0000',
    });
    expect(status[1]).toEqual({
      'original-recipient': 'rfc822;Bob@Example.org',
      'final-recipient': 'rfc822;bob@example.org',
      action: 'failed',
      status: '5.1.1',
      'remote-mta': 'dns; mx.example.org',
      'diagnostic-code': `smtp; ${failedBob.diagnostic}`,
      'last-attempt-date': 'Mon, 2 Feb 2026 10:29:00 +0000',
    });
    expect(status[2]).toEqual({
      'final-recipient': 'rfc822;carol@example.net',
      action: 'delayed',
      status: '4.4.1',
      'remote-mta': 'dns; mx.example.net',
      'diagnostic-code': `smtp; ${delayedCarol.diagnostic}`,
      'last-attempt-date': 'Mon, 2 Feb 2026 10:29:30 +0000',
      'will-retry-until': 'Sat, 7 Feb 2026 10:00:05 +0000',
    });

    // (3) RET=HDRS: the headers only, never the body.
    expect(returned.type).toBe('text/rfc822-headers');
    expect(returned.text).toBe(headers);
    expect(returned.text).not.toContain('Patient');
  });

  it('returns the whole message as message/rfc822 for RET=FULL and for a small message without RET', async () => {
    for (const ret of ['FULL', undefined] as const) {
      const dsn = await buildDsn({
        reportingMta: 'courrier.test',
        envelope: envelope(ret ? { ret } : {}),
        messagePath: small,
        reports: [failedBob],
        arrivalDate: arrival,
        now,
      });
      const { returned, status } = await parse(dsn);
      expect(returned.type).toBe('message/rfc822');
      expect(returned.text).toBe(headers + body);
      expect(status[0]).not.toHaveProperty('original-envelope-id');
    }
  });

  it('returns headers only for a large message without RET, and for RET=FULL above 10 MB', async () => {
    for (const [file, ret] of [
      [large, undefined],
      [huge, 'FULL'],
    ] as const) {
      const dsn = await buildDsn({
        reportingMta: 'courrier.test',
        envelope: envelope(ret ? { ret } : {}),
        messagePath: file,
        reports: [failedBob],
        arrivalDate: arrival,
        now,
      });
      expect(dsn.length).toBeLessThan(10_000);
      const { returned, mail } = await parse(dsn);
      expect(returned.type).toBe('text/rfc822-headers');
      expect(returned.text).toBe(headers);
      expect(mail.text).toContain('The headers of the message are attached.');
    }
  });

  it('returns headers only in delay and success reports, whatever RET says', async () => {
    const dsn = await buildDsn({
      reportingMta: 'courrier.test',
      envelope: envelope({ ret: 'FULL' }),
      messagePath: small,
      reports: [delayedCarol],
      arrivalDate: arrival,
      now,
    });
    const { returned, mail } = await parse(dsn);
    expect(mail.subject).toBe('Delivery Status Notification (Delay)');
    expect(returned.type).toBe('text/rfc822-headers');
  });

  it('reports success (delivered, relayed) with its own subject', async () => {
    const dsn = await buildDsn({
      reportingMta: 'courrier.test',
      envelope: envelope(),
      messagePath: small,
      reports: [
        {
          recipient: { address: 'carla@courrier.test', notify: ['SUCCESS'] },
          action: 'delivered',
          status: '2.0.0',
        },
        {
          recipient: { address: 'bob@example.org', notify: ['SUCCESS'] },
          action: 'relayed',
          status: '2.0.0',
          remoteMta: 'mx.example.org',
        },
      ],
      arrivalDate: arrival,
      now,
    });
    const { mail, status } = await parse(dsn);
    expect(mail.subject).toBe('Delivery Status Notification (Success)');
    expect(status.slice(1).map((s) => [s['final-recipient'], s.action, s.status])).toEqual([
      ['rfc822;carla@courrier.test', 'delivered', '2.0.0'],
      ['rfc822;bob@example.org', 'relayed', '2.0.0'],
    ]);
    expect(mail.text).toContain('relayed to mx.example.org');
    expect(status[1]).not.toHaveProperty('will-retry-until');
  });

  it('keeps control characters and header injection out of the report', async () => {
    const dsn = await buildDsn({
      reportingMta: 'courrier.test',
      envelope: envelope({ envid: 'a b\r\nBcc: x@evil.test' }),
      messagePath: small,
      reports: [{ ...failedBob, diagnostic: '550 nope\r\nBcc: victim@evil.test\r\n\r\ninjected body' }],
      arrivalDate: arrival,
      now,
    });
    const { mail, status } = await parse(dsn);
    expect(mail.headers.has('bcc')).toBe(false);
    expect(status[1]!['diagnostic-code']).toBe('smtp; 550 nope Bcc: victim@evil.test injected body');
    expect(status[0]!['original-envelope-id']).toBe('a+20b+0D+0ABcc:+20x@evil.test');
    expect(status).toHaveLength(2);
  });

  it('formats RFC 5322 dates in UTC', () => {
    expect(rfc5322Date(new Date('2026-12-31T23:59:09Z'))).toBe('Thu, 31 Dec 2026 23:59:09 +0000');
  });
});

describe('createNotifier', () => {
  function notifier() {
    const sent: Array<{ mailFrom: string; to: string; data: Buffer }> = [];
    const n = createNotifier({
      hostname: 'courrier.test',
      submit: async (m) => {
        sent.push(m);
        return `DSN${sent.length}`;
      },
      now: () => now,
    });
    return { n, sent };
  }

  it('sends failures and delays by default, from the null sender to the original sender', async () => {
    const { n, sent } = notifier();
    await n.report(envelope(), small, [failedBob, delayedCarol]);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.mailFrom).toBe('');
    expect(sent[0]!.to).toBe('alice@courrier.test');
    const { status } = await parse(sent[0]!.data);
    expect(status.slice(1).map((s) => s.action)).toEqual(['failed', 'delayed']);
  });

  it('honours NOTIFY per recipient: NEVER, FAILURE only, SUCCESS only when asked', async () => {
    const { n, sent } = notifier();
    await n.report(envelope(), small, [
      { ...failedBob, recipient: { address: 'bob@example.org', notify: 'NEVER' } },
      { ...delayedCarol, recipient: { address: 'carol@example.net', notify: ['FAILURE'] } },
      { recipient: { address: 'dan@example.org' }, action: 'delivered', status: '2.0.0' },
      { recipient: { address: 'eve@example.org', notify: ['SUCCESS'] }, action: 'relayed', status: '2.0.0' },
      { recipient: { address: 'fay@example.org', notify: ['DELAY'] }, action: 'failed', status: '5.1.1' },
    ]);
    expect(sent).toHaveLength(1);
    const { status } = await parse(sent[0]!.data);
    expect(status.slice(1).map((s) => s['final-recipient'])).toEqual(['rfc822;eve@example.org']);
  });

  it('sends nothing when no recipient asked for these reports', async () => {
    const { n, sent } = notifier();
    await n.report(envelope(), small, [
      { ...failedBob, recipient: { address: 'bob@example.org', notify: 'NEVER' } },
    ]);
    await n.report(envelope(), small, [
      { recipient: { address: 'dan@example.org' }, action: 'delivered', status: '2.0.0' },
    ]);
    expect(sent).toHaveLength(0);
  });

  it('never reports to the null sender (no bounce loops)', async () => {
    const { n, sent } = notifier();
    await n.report(envelope({ mailFrom: '' }), small, [failedBob]);
    expect(sent).toHaveLength(0);
  });

  it('wantsReport follows RFC 3461 §4.1', () => {
    expect(wantsReport({ address: 'a@b' }, 'failed')).toBe(true);
    expect(wantsReport({ address: 'a@b' }, 'delayed')).toBe(true);
    expect(wantsReport({ address: 'a@b' }, 'delivered')).toBe(false);
    expect(wantsReport({ address: 'a@b', notify: ['SUCCESS'] }, 'expanded')).toBe(true);
    expect(wantsReport({ address: 'a@b', notify: ['SUCCESS'] }, 'failed')).toBe(false);
    expect(wantsReport({ address: 'a@b', notify: 'NEVER' }, 'failed')).toBe(false);
  });
});
