import { describe, expect, it } from 'vitest';
import { REPLY_RULES, TEMPORARY_PERMANENT_CODES } from '../gateway/bounce-rules.ts';
import {
  classifyDeliveryError,
  classifyReply,
  parseReply,
  replyToLine,
  type SmtpStage,
} from '../gateway/smtp-reply-classifier.ts';

type Row = [
  reply: string,
  stage: SmtpStage | undefined,
  result: 'defer' | 'reject',
  status: string,
  category: string,
];

describe('classifyReply', () => {
  const table: Row[] = [
    // 4xx is always temporary; the enhanced code from the reply is kept.
    ['450 4.2.1 mailbox busy', 'rcpt', 'defer', '4.2.1', 'recipient'],
    ['451 4.3.0 Temporary lookup failure', 'rcpt', 'defer', '4.3.0', 'other'],
    ['452 4.2.2 <x@y>: over quota', 'rcpt', 'defer', '4.2.2', 'mailbox-full'],
    ['421 4.7.0 Too many connections from your host', 'connect', 'defer', '4.7.0', 'policy'],
    ['454 4.7.0 TLS not available due to local problem', 'connect', 'defer', '4.7.0', 'tls'],
    // 4xx without an enhanced code: derived from the basic code (RFC 3463).
    ['421 Service not available, closing transmission channel', 'connect', 'defer', '4.3.2', 'network'],
    ['450 Requested mail action not taken', 'rcpt', 'defer', '4.2.1', 'recipient'],
    ['451 Requested action aborted', 'data', 'defer', '4.3.0', 'other'],
    ['499 strange', undefined, 'defer', '4.0.0', 'other'],
    // 5xx is permanent.
    [
      '550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown',
      'rcpt',
      'reject',
      '5.1.1',
      'recipient',
    ],
    [
      '550 5.1.1 The email account that you tried to reach does not exist',
      'rcpt',
      'reject',
      '5.1.1',
      'recipient',
    ],
    ['552 5.2.2 Mailbox full', 'rcpt', 'reject', '5.2.2', 'mailbox-full'],
    [
      '552 5.3.4 Error: message exceeds fixed maximum message size',
      'data',
      'reject',
      '5.3.4',
      'message-size',
    ],
    ['554 5.7.1 Message rejected as spam', 'data', 'reject', '5.7.1', 'spam'],
    ['554 5.7.1 <x@example.net>: Relay access denied', 'rcpt', 'reject', '5.7.1', 'policy'],
    [
      '550 5.7.26 Unauthenticated email is not accepted due to domain DMARC policy',
      'data',
      'reject',
      '5.7.26',
      'policy',
    ],
    ['553 5.1.3 bad recipient address syntax', 'rcpt', 'reject', '5.1.3', 'recipient'],
    ['554 5.6.0 message malformed', 'data', 'reject', '5.6.0', 'other'],
    ['556 5.1.10 domain does not accept mail', 'rcpt', 'reject', '5.1.10', 'dns'],
    // 5xx without an enhanced code: derived; a bare 550 is about the recipient at RCPT, about us at MAIL.
    ['550 no', 'rcpt', 'reject', '5.0.0', 'recipient'],
    ['550 no', 'mail', 'reject', '5.0.0', 'policy'],
    ['550 Requested action not taken: no such user here', 'rcpt', 'reject', '5.1.1', 'recipient'],
    [
      '552 Requested mail action aborted: exceeded storage allocation',
      'rcpt',
      'reject',
      '5.2.2',
      'mailbox-full',
    ],
    ['554 Transaction failed', 'data', 'reject', '5.0.0', 'other'],
    ['500 Syntax error, command unrecognized', undefined, 'reject', '5.5.2', 'protocol'],
    // 503: the session was out of step, not a verdict on the message.
    ['503 5.5.1 Error: need MAIL command', 'rcpt', 'defer', '4.5.1', 'protocol'],
    // 5xx that are really temporary become defers with a class-4 status.
    ['550 5.7.1 Greylisted, please try again in 300 seconds', 'rcpt', 'defer', '4.7.1', 'policy'],
    ['554 5.3.0 Temporary local problem, please try again later', 'data', 'defer', '4.3.0', 'other'],
    ['550 Rate limit exceeded, slow down', 'mail', 'defer', '4.7.0', 'policy'],
    [
      '554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org',
      'connect',
      'defer',
      '4.7.1',
      'policy',
    ],
    ['530 5.7.0 Must issue a STARTTLS command first', 'mail', 'defer', '4.7.0', 'tls'],
    ['550 5.4.1 Recipient address rejected: Access denied', 'rcpt', 'reject', '5.4.1', 'recipient'],
    ['550 5.4.2 network connection timed out', 'rcpt', 'defer', '4.4.2', 'network'],
    ['550 5.3.2 system not accepting network messages', 'connect', 'defer', '4.3.2', 'network'],
    // The basic code decides the class when the enhanced code disagrees (RFC 3463 §2).
    ['550 4.2.2 mailbox full', 'rcpt', 'reject', '5.2.2', 'mailbox-full'],
    // Exchange puts the enhanced code in the text.
    ['554 Unknown recipient #5.1.1', 'rcpt', 'reject', '5.1.1', 'recipient'],
    // An address in the reply is not wording: `junk@` is not spam, `greylist@` not greylisting.
    ['550 5.1.1 <junk@example.org>: user unknown', 'rcpt', 'reject', '5.1.1', 'recipient'],
    ['550 5.1.1 <greylist@example.org>: user unknown', 'rcpt', 'reject', '5.1.1', 'recipient'],
    // A user-level block is permanent, a block list of our address is not.
    ['550 5.7.1 Blacklisted by recipient', 'rcpt', 'reject', '5.7.1', 'policy'],
  ];
  it.each(table)('%s (%s) → %s %s %s', (r, stage, result, status, category) => {
    const c = classifyReply(r, stage);
    expect({ result: c.result, status: c.status, category: c.category }).toEqual({
      result,
      status,
      category,
    });
    expect(c.reply).toBe(r);
  });

  it('reads a multi-line reply as one line with the enhanced code once', () => {
    const r =
      '550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Please try double-checking.';
    expect(replyToLine(r)).toBe(
      '550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking.',
    );
    expect(classifyReply(r, 'rcpt')).toMatchObject({
      result: 'reject',
      status: '5.1.1',
      category: 'recipient',
    });
  });

  it('parses the codes of a reply', () => {
    expect(parseReply('250 2.0.0 Ok: queued as X')).toEqual({
      code: 250,
      enhanced: '2.0.0',
      text: 'Ok: queued as X',
    });
    expect(parseReply('250 OK')).toEqual({ code: 250, text: 'OK' });
    expect(parseReply('garbage')).toBeNull();
  });

  it('treats a reply without a failure code as a temporary protocol error', () => {
    expect(classifyReply('250 OK')).toMatchObject({ result: 'defer', status: '4.5.0', category: 'protocol' });
    expect(classifyReply('')).toMatchObject({ result: 'defer', category: 'protocol' });
  });

  describe('every rule in gateway/bounce-rules.ts', () => {
    it.each(REPLY_RULES.map((r) => [r.id, r] as const))(
      '%s: its example is classified by it',
      (_id, rule) => {
        const c = classifyReply(rule.example);
        expect(c.rule).toBe(rule.id);
        expect(c.category).toBe(rule.category);
        const cls = Number(rule.example[0]);
        // A rule never turns a 4xx into a bounce; `defer` rules turn 5xx into a defer.
        expect(c.result).toBe(cls === 4 || rule.result === 'defer' ? 'defer' : 'reject');
        expect(c.status[0]).toBe(c.result === 'defer' ? '4' : '5');
      },
    );
  });

  it.each(TEMPORARY_PERMANENT_CODES.map((code) => [code]))('%s is treated as temporary', (code) => {
    expect(classifyReply(`550 ${code} something`)).toMatchObject({
      result: 'defer',
      status: `4${code.slice(1)}`,
    });
  });
});

/** An error shaped like the ones nodemailer's SMTP connection produces. */
function nmError(message: string, props: Record<string, unknown>): Error {
  return Object.assign(new Error(message), props);
}

describe('classifyDeliveryError', () => {
  const ctx = { host: 'mx.example.org', address: '192.0.2.10', port: 25 };
  const table: Array<
    [name: string, err: unknown, result: 'defer' | 'reject', status: string, category: string]
  > = [
    [
      'connection refused',
      nmError('connect ECONNREFUSED 192.0.2.10:25', {
        code: 'ESOCKET',
        originalCode: 'ECONNREFUSED',
        command: 'CONN',
      }),
      'defer',
      '4.4.1',
      'network',
    ],
    [
      'host unreachable',
      nmError('connect EHOSTUNREACH', { code: 'ESOCKET', originalCode: 'EHOSTUNREACH' }),
      'defer',
      '4.4.1',
      'network',
    ],
    [
      'connect timeout',
      nmError('Connection timeout', { code: 'ETIMEDOUT', timeoutType: 'CONNECT_TIMEOUT', command: 'CONN' }),
      'defer',
      '4.4.1',
      'network',
    ],
    [
      'greeting timeout',
      nmError('Greeting never received', { code: 'ETIMEDOUT', timeoutType: 'GREETING_TIMEOUT' }),
      'defer',
      '4.4.1',
      'network',
    ],
    [
      'reply timeout',
      nmError('Timeout', { code: 'ETIMEDOUT', timeoutType: 'SOCKET_TIMEOUT', command: 'CONN' }),
      'defer',
      '4.4.2',
      'network',
    ],
    [
      'reset',
      nmError('read ECONNRESET', { code: 'ESOCKET', originalCode: 'ECONNRESET' }),
      'defer',
      '4.4.2',
      'network',
    ],
    [
      'dropped mid-DATA',
      nmError('Connection closed unexpectedly', { code: 'ECONNECTION', command: 'CONN' }),
      'defer',
      '4.4.2',
      'network',
    ],
    [
      'unknown CA',
      nmError('unable to verify the first certificate', {
        code: 'ESOCKET',
        originalCode: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      }),
      'defer',
      '4.7.5',
      'tls',
    ],
    [
      'self-signed in chain',
      nmError('self-signed certificate in certificate chain', {
        code: 'ESOCKET',
        originalCode: 'SELF_SIGNED_CERT_IN_CHAIN',
      }),
      'defer',
      '4.7.5',
      'tls',
    ],
    [
      'expired',
      nmError('certificate has expired', { code: 'ESOCKET', originalCode: 'CERT_HAS_EXPIRED' }),
      'defer',
      '4.7.5',
      'tls',
    ],
    [
      'wrong name',
      nmError("Hostname/IP does not match certificate's altnames", {
        code: 'ESOCKET',
        originalCode: 'ERR_TLS_CERT_ALTNAME_INVALID',
      }),
      'defer',
      '4.7.5',
      'tls',
    ],
    [
      'no STARTTLS',
      nmError('Error upgrading connection with STARTTLS: 502 5.5.1 Error: command not implemented', {
        code: 'ETLS',
        response: '502 5.5.1 Error: command not implemented',
        responseCode: 502,
        command: 'STARTTLS',
      }),
      'defer',
      '4.7.5',
      'tls',
    ],
    [
      'TLS alert',
      nmError('tlsv13 alert certificate required', {
        code: 'ESOCKET',
        originalCode: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
      }),
      'defer',
      '4.7.5',
      'tls',
    ],
    [
      'auth refused',
      nmError('Invalid login: 535 5.7.8 Authentication credentials invalid', {
        code: 'EAUTH',
        response: '535 5.7.8 Authentication credentials invalid',
        responseCode: 535,
        command: 'AUTH PLAIN',
      }),
      'defer',
      '4.7.8',
      'policy',
    ],
    [
      'RCPT 550',
      nmError('Recipient command failed: 550 5.1.1 user unknown', {
        code: 'EENVELOPE',
        response: '550 5.1.1 user unknown',
        responseCode: 550,
        command: 'RCPT TO',
      }),
      'reject',
      '5.1.1',
      'recipient',
    ],
    [
      'DATA 451',
      nmError('Message failed: 451 4.3.0 try again', {
        code: 'EMESSAGE',
        response: '451 4.3.0 try again',
        responseCode: 451,
        command: 'DATA',
      }),
      'defer',
      '4.3.0',
      'other',
    ],
    [
      'unknown recipient wording mentioning verification',
      nmError('Recipient command failed', {
        code: 'EENVELOPE',
        response: '550 5.1.1 unable to verify recipient',
        command: 'RCPT TO',
      }),
      'reject',
      '5.1.1',
      'recipient',
    ],
    [
      '421 greeting',
      nmError('Invalid greeting', {
        code: 'EPROTOCOL',
        response: '421 4.3.2 Service shutting down',
        command: 'CONN',
      }),
      'defer',
      '4.3.2',
      'network',
    ],
    [
      'static host not found',
      nmError('getaddrinfo ENOTFOUND relay', { code: 'EDNS', originalCode: 'ENOTFOUND' }),
      'defer',
      '4.4.3',
      'dns',
    ],
    [
      'SIZE too small',
      nmError('Message size larger than allowed 1000', { code: 'EMESSAGE', command: 'MAIL FROM' }),
      'reject',
      '5.3.4',
      'message-size',
    ],
    ['spool unreadable', nmError('ENOENT: no such file', { code: 'ESTREAM' }), 'defer', '4.3.0', 'other'],
    ['anything else', new Error('surprise'), 'defer', '4.3.0', 'other'],
    ['not even an Error', 'weird', 'defer', '4.3.0', 'other'],
  ];
  it.each(table)('%s → %s %s %s', (_name, err, result, status, category) => {
    const c = classifyDeliveryError(err, ctx);
    expect({ result: c.result, status: c.status, category: c.category }).toEqual({
      result,
      status,
      category,
    });
    expect(c.reply).toMatch(/^[45]\d\d [45]\.\d{1,3}\.\d{1,3} /);
  });

  it('names the host in the reasons it writes itself', () => {
    const c = classifyDeliveryError(nmError('x', { code: 'ESOCKET', originalCode: 'ECONNREFUSED' }), ctx);
    expect(c.reply).toBe('421 4.4.1 cannot connect to mx.example.org[192.0.2.10]:25: ECONNREFUSED');
    const t = classifyDeliveryError(nmError('x', { code: 'ESOCKET', originalCode: 'CERT_HAS_EXPIRED' }), ctx);
    expect(t.reply).toBe(
      '421 4.7.5 TLS certificate of mx.example.org[192.0.2.10]:25 not trusted: CERT_HAS_EXPIRED',
    );
  });
});
