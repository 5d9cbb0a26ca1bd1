/**
 * Delivery failure classification as data (the zone-mta `config/bounces.txt` idea): what a next
 * hop's reply or a socket error means for the message. gateway/smtp-reply-classifier.ts applies
 * these tables; docs/retry.md shows them and test/smtp-reply-classifier.test.ts runs every
 * example below through the classifier.
 *
 * Principles (RFC 5321 §4.2.1, RFC 3463):
 * - 4xx is always temporary (defer). A text rule never turns a 4xx into a bounce.
 * - 5xx is permanent (reject) unless a rule below says the wording is really temporary
 *   ("try again later", greylisting, rate limits, our IP on a block list): bouncing a health
 *   message on a transient policy hiccup is worse than retrying until the give-up time.
 * - The enhanced status code in the reply wins; without one it is derived from the basic code.
 */

export type FailureCategory =
  | 'recipient'
  | 'mailbox-full'
  | 'policy'
  | 'spam'
  | 'network'
  | 'tls'
  | 'dns'
  | 'protocol'
  | 'message-size'
  | 'other';

export interface ReplyRule {
  /** Stable name, used in logs and in the docs table. */
  id: string;
  /** Tested against the whole reply (all lines joined by a space), case-insensitive. */
  pattern: RegExp;
  /** Only for replies of this class (4 or 5); both when absent. */
  replyClass?: 4 | 5;
  category: FailureCategory;
  /** `defer` turns a 5xx into a temporary failure (status class 4). Absent: follow the code. */
  result?: 'defer';
  /** Status to use when the reply carries no enhanced code (class digit follows the result). */
  status?: string;
  why: string;
  /** A real-looking reply this rule is meant for (the classifier test runs each). */
  example: string;
}

/** Text rules, first match wins. Ordered from specific to generic. */
export const REPLY_RULES: readonly ReplyRule[] = [
  {
    id: 'greylisting',
    pattern: /\bgr[ae]y[ -]?list/i,
    category: 'policy',
    result: 'defer',
    status: '4.7.1',
    why: 'Greylisting asks us to come back later, whatever code the server chose.',
    example: '550 5.7.1 Greylisted, please try again in 300 seconds',
  },
  {
    id: 'rate-limit',
    pattern: /\brate[ -]?limit|too many (connections|messages|concurrent)|throttl|sending rate|slow down/i,
    category: 'policy',
    result: 'defer',
    status: '4.7.0',
    why: 'Rate limits lift by themselves.',
    example: '550 5.7.0 Rate limit exceeded for this sender, slow down',
  },
  {
    id: 'block-list',
    pattern:
      /\b(blocked using|\d{1,3}(\.\d{1,3}){3}\]? (is )?listed (at|in|on|by)|black ?list(ed)?(?! by (the )?recipient)|block ?list(ed)?|dnsbl|rbl|spamhaus|spamcop|sorbs|poor reputation)\b/i,
    replyClass: 5,
    category: 'policy',
    result: 'defer',
    status: '4.7.1',
    why: 'Our address is on a block list: the admins get it delisted, the message must not be lost meanwhile.',
    example: '554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org',
  },
  {
    id: 'try-again-later',
    pattern: /\b(try (again )?later|try again|retry (later|in)|temporar(y|ily)|later,? please)\b/i,
    replyClass: 5,
    category: 'other',
    result: 'defer',
    status: '4.3.0',
    why: 'The server says the failure is temporary although it sent a 5xx.',
    example: '554 5.3.0 Temporary local problem, please try again later',
  },
  {
    id: 'tls-required',
    pattern:
      /\b(must issue a starttls|tls (is )?required|requires? (tls|encryption)|encryption required|tls not available)\b/i,
    category: 'tls',
    result: 'defer',
    status: '4.7.5',
    why: 'We always use TLS; a server asking for it or unable to offer it has a TLS problem its admins must fix.',
    example: '530 5.7.0 Must issue a STARTTLS command first',
  },
  {
    id: 'mailbox-full',
    pattern:
      /\b(mailbox (is )?full|over ?quota|quota exceeded|exceeded (storage|quota)|insufficient (storage|space)|disk full)\b/i,
    category: 'mailbox-full',
    status: '5.2.2',
    why: 'Full mailbox: temporary with a 4xx, a bounce with a 5xx (zone-mta does the same).',
    example: '552 5.2.2 <dr.martin@example.org>: mailbox full',
  },
  {
    id: 'message-size',
    pattern:
      /\b(message (size )?(is )?too (big|large)|exceeds (the )?(fixed )?(maximum )?(message )?size|size limit|message size exceeds)\b/i,
    category: 'message-size',
    status: '5.3.4',
    why: 'The message is larger than the next hop takes: retrying will not help.',
    example: '552 5.3.4 Error: message exceeds fixed maximum message size 10485760',
  },
  {
    id: 'spam',
    pattern: /\b(spam|junk|unsolicited|bulk mail|UBE|virus|malware|content rejected)\b/i,
    category: 'spam',
    status: '5.7.1',
    why: 'Content filters: a bounce that tells the sender the content was refused.',
    example: '550 5.7.1 Message rejected as spam by Content Filtering',
  },
  {
    id: 'authentication-policy',
    pattern: /\b(dmarc|spf|dkim)\b/i,
    category: 'policy',
    status: '5.7.1',
    why: 'Sender authentication (SPF/DKIM/DMARC) failed at the next hop.',
    example: "550 5.7.1 Unauthenticated email is not accepted due to domain's DMARC policy",
  },
  {
    id: 'relay-denied',
    pattern:
      /\b(relay(ing)? (access )?(denied|not permitted|prohibited)|not permitted to relay|relay not allowed)\b/i,
    category: 'policy',
    status: '5.7.1',
    why: 'The next hop does not take mail for this domain from us.',
    example: '554 5.7.1 <x@example.net>: Relay access denied',
  },
  {
    id: 'unknown-recipient',
    pattern:
      /\b(user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|doesn't exist|unknown (recipient|mailbox)|recipient (address )?rejected|invalid (recipient|mailbox)|mailbox (unavailable|not found|disabled)|address rejected|account (is )?disabled)\b/i,
    category: 'recipient',
    status: '5.1.1',
    why: 'The recipient address is not valid at the next hop.',
    example:
      '550 5.1.1 <inconnu@example.org>: Recipient address rejected: User unknown in local recipient table',
  },
];

/**
 * Enhanced status codes (RFC 3463) that are temporary in practice although their class is 5
 * (zone-mta treats these the same way): network trouble and a system not accepting mail now.
 */
export const TEMPORARY_PERMANENT_CODES: readonly string[] = ['5.3.2', '5.4.1', '5.4.2', '5.4.3', '5.4.5'];

/**
 * Basic codes that are temporary although their class is 5: 503 "bad sequence of commands" says
 * the session was out of step, not that the message is refused (nodemailer treats it the same).
 */
export const TEMPORARY_PERMANENT_BASIC_CODES: readonly number[] = [503];

/**
 * Category from an enhanced status code: exact `subject.detail` first, then the subject.
 * RFC 3463 §3: X.1 addressing, X.2 mailbox, X.3 mail system, X.4 network and routing,
 * X.5 protocol, X.6 content, X.7 security or policy.
 */
export const ENHANCED_CODE_CATEGORIES: Readonly<Record<string, FailureCategory>> = {
  '1.10': 'dns', // RFC 7505 null MX
  '1.2': 'dns', // bad destination system address
  '1.7': 'policy', // bad sender mailbox syntax
  '1.8': 'policy', // bad sender system address
  '2.2': 'mailbox-full',
  '2.3': 'message-size',
  '3.2': 'network', // system not accepting network messages (now)
  '3.4': 'message-size',
  '4.3': 'dns', // directory server failure
  '4.4': 'dns', // unable to route
  '5.3': 'protocol', // too many recipients
  '7.1': 'policy',
  '7.5': 'tls', // cryptographic failure
  '7.10': 'tls', // encryption needed
  '7.11': 'tls', // encryption required for requested authentication mechanism
  '1': 'recipient',
  '2': 'recipient',
  '3': 'other',
  '4': 'network',
  '5': 'protocol',
  '6': 'other',
  '7': 'policy',
};

/**
 * Enhanced status for a reply that has none (RFC 3463 §3 and RFC 5321 §4.2.2 meanings of the
 * basic codes). Unknown codes fall back to `<class>.0.0`.
 */
export const BASIC_CODE_STATUS: Readonly<Record<number, { status: string; category: FailureCategory }>> = {
  421: { status: '4.3.2', category: 'network' }, // service not available, closing channel
  450: { status: '4.2.1', category: 'recipient' }, // mailbox unavailable (busy)
  451: { status: '4.3.0', category: 'other' }, // local error in processing
  452: { status: '4.3.1', category: 'other' }, // insufficient system storage
  454: { status: '4.7.0', category: 'tls' }, // TLS not available (RFC 3207)
  455: { status: '4.5.4', category: 'protocol' }, // parameters cannot be accommodated
  500: { status: '5.5.2', category: 'protocol' },
  501: { status: '5.5.4', category: 'protocol' },
  502: { status: '5.5.1', category: 'protocol' },
  503: { status: '5.5.1', category: 'protocol' },
  504: { status: '5.5.4', category: 'protocol' },
  521: { status: '5.3.2', category: 'other' }, // RFC 7504: host does not accept mail
  530: { status: '5.7.0', category: 'policy' },
  534: { status: '5.7.9', category: 'policy' },
  535: { status: '5.7.8', category: 'policy' },
  538: { status: '5.7.11', category: 'tls' },
  550: { status: '5.0.0', category: 'other' }, // mailbox unavailable or policy: text decides
  551: { status: '5.1.6', category: 'recipient' }, // user not local
  552: { status: '5.2.2', category: 'mailbox-full' }, // exceeded storage allocation
  553: { status: '5.1.3', category: 'recipient' }, // mailbox name not allowed
  554: { status: '5.0.0', category: 'other' }, // transaction failed
  555: { status: '5.5.4', category: 'protocol' }, // MAIL/RCPT parameters not recognized
  556: { status: '5.1.10', category: 'dns' }, // RFC 7504: domain does not accept mail
};

/** Certificate verification failures reported by OpenSSL through Node (err.code). */
export const TLS_VERIFY_ERROR_CODES: readonly string[] = [
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
];

/** Socket errors where the next hop could not be reached at all (RFC 3463 X.4.1 no answer). */
export const UNREACHABLE_ERROR_CODES: readonly string[] = [
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EADDRNOTAVAIL',
];

/** Socket errors on an established connection (RFC 3463 X.4.2 bad connection). */
export const BROKEN_CONNECTION_ERROR_CODES: readonly string[] = [
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ENETRESET',
  'ENOTCONN',
  'ESHUTDOWN',
];

/** The text rules as a Markdown table (docs/retry.md embeds it; a test keeps the two in sync). */
export function renderReplyRules(): string {
  const lines = [
    '| rule | replies | result | category | status without enhanced code | why |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of REPLY_RULES) {
    const replies = r.replyClass ? `${r.replyClass}xx` : '4xx, 5xx';
    const result = r.result === 'defer' ? 'defer (5xx too)' : 'follows the code';
    lines.push(`| \`${r.id}\` | ${replies} | ${result} | ${r.category} | ${r.status ?? '–'} | ${r.why} |`);
  }
  return lines.join('\n');
}
