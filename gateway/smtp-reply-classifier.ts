import {
  BASIC_CODE_STATUS,
  BROKEN_CONNECTION_ERROR_CODES,
  ENHANCED_CODE_CATEGORIES,
  REPLY_RULES,
  TEMPORARY_PERMANENT_BASIC_CODES,
  TEMPORARY_PERMANENT_CODES,
  TLS_VERIFY_ERROR_CODES,
  UNREACHABLE_ERROR_CODES,
  type FailureCategory,
} from './bounce-rules.ts';

export type { FailureCategory };

/** What a failed delivery attempt means for one recipient. */
export interface Classification {
  /** `defer`: try again later (until the give-up time); `reject`: bounce now. */
  result: 'defer' | 'reject';
  /** RFC 3463 enhanced status; its class (4 or 5) always agrees with `result`. */
  status: string;
  category: FailureCategory;
  /** One line for DeliveryOutcome.reply and the DSN Diagnostic-Code. */
  reply: string;
  /** Which rule decided (a REPLY_RULES id, `enhanced-code`, `basic-code`, or an error kind). */
  rule: string;
}

/** The SMTP stage a reply answered; it refines the category of an unspecific reply. */
export type SmtpStage = 'connect' | 'mail' | 'rcpt' | 'data';

export interface ParsedReply {
  code: number;
  /** Enhanced status code as written by the server (RFC 2034), if any. */
  enhanced?: string;
  /** The text after the codes, all lines joined by a space. */
  text: string;
}

const ENHANCED_AT_START = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;
// Exchange and some others put it in the text: `554 ... #5.1.1`.
const ENHANCED_HASHED = /#([245])\.(\d{1,3})\.(\d{1,3})(?![.\d])/;

/** Joins a (possibly multi-line) reply into one line: `550-a\r\n550 b` → `550 a b`. */
export function replyToLine(reply: string): string {
  const lines = reply
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  if (lines.length === 0) return '';
  const first = /^(\d{3})[ -]?/.exec(lines[0]!);
  if (!first) return lines.join(' ').replace(/\s+/g, ' ');
  const code = first[1]!;
  const texts = lines.map((l) => l.replace(/^\d{3}[ -]?/, ''));
  // Multi-line replies repeat the enhanced code on every line (RFC 2034 §4): keep it once.
  const enhanced = ENHANCED_AT_START.exec(texts[0] ?? '');
  const body = texts
    .map((t, i) => (i > 0 && enhanced && t.startsWith(enhanced[0]) ? t.slice(enhanced[0].length).trim() : t))
    .join(' ');
  return `${code} ${body}`.replace(/\s+/g, ' ').trim();
}

/** Splits an SMTP reply into its basic code, enhanced code and text; null if it has no code. */
export function parseReply(reply: string): ParsedReply | null {
  const line = replyToLine(reply);
  const m = /^([1-5]\d\d)(?:\s+(.*))?$/.exec(line);
  if (!m) return null;
  const code = Number(m[1]);
  let text = m[2] ?? '';
  let enhanced: string | undefined;
  const start = ENHANCED_AT_START.exec(text);
  if (start) {
    enhanced = start[0];
    text = text.slice(start[0].length).trim();
  } else {
    const hashed = ENHANCED_HASHED.exec(text);
    if (hashed) enhanced = `${hashed[1]}.${hashed[2]}.${hashed[3]}`;
  }
  return enhanced === undefined ? { code, text } : { code, enhanced, text };
}

function withClass(status: string, cls: 4 | 5): string {
  return `${cls}${status.slice(status.indexOf('.'))}`;
}

function categoryOfEnhanced(enhanced: string): FailureCategory | undefined {
  const [, subject, detail] = enhanced.split('.');
  return ENHANCED_CODE_CATEGORIES[`${subject}.${detail}`] ?? ENHANCED_CODE_CATEGORIES[`${subject}`];
}

/**
 * Classifies a next hop's failure reply (4xx or 5xx; anything else is a protocol error).
 * 4xx → defer; 5xx → reject unless a rule in gateway/bounce-rules.ts says it is temporary.
 */
export function classifyReply(reply: string, stage?: SmtpStage): Classification {
  const line = replyToLine(reply);
  const parsed = parseReply(reply);
  if (!parsed || parsed.code < 400) {
    return {
      result: 'defer',
      status: '4.5.0',
      category: 'protocol',
      reply: line || '(empty reply)',
      rule: 'unexpected-reply',
    };
  }
  const basicClass: 4 | 5 = parsed.code >= 500 ? 5 : 4;
  // Addresses in the reply are data, not wording: `<junk@x>: user unknown` is not spam.
  const wording = line.replace(/<[^>]*>/g, '<>');
  const rule = REPLY_RULES.find(
    (r) => (r.replyClass === undefined || r.replyClass === basicClass) && r.pattern.test(wording),
  );
  // RFC 3463 §2: the enhanced class must agree with the basic code; the basic code wins.
  const enhanced = parsed.enhanced ? withClass(parsed.enhanced, basicClass) : undefined;

  let temporary = basicClass === 4;
  if (!temporary && rule?.result === 'defer') temporary = true;
  // A wording rule is more specific than the code list: Microsoft 365 answers unknown
  // recipients with `550 5.4.1 Recipient address rejected: Access denied`.
  if (!temporary && !rule && enhanced && TEMPORARY_PERMANENT_CODES.includes(enhanced)) temporary = true;
  if (!temporary && TEMPORARY_PERMANENT_BASIC_CODES.includes(parsed.code)) temporary = true;
  const cls: 4 | 5 = temporary ? 4 : 5;

  const basic = BASIC_CODE_STATUS[parsed.code];
  const status = withClass(enhanced ?? rule?.status ?? basic?.status ?? `${cls}.0.0`, cls);
  let category: FailureCategory | undefined =
    rule?.category ?? (enhanced ? categoryOfEnhanced(enhanced) : undefined);
  if (category === undefined) {
    category = basic?.category ?? 'other';
    // Nothing specific in the reply: a bare `550 no` to RCPT TO is about that recipient, to
    // MAIL FROM it is about us.
    if (category === 'other' && stage === 'rcpt') category = 'recipient';
    if (category === 'other' && stage === 'mail') category = 'policy';
  }

  const ruleName = rule ? rule.id : enhanced ? 'enhanced-code' : basic ? 'basic-code' : 'reply-class';
  return { result: temporary ? 'defer' : 'reject', status, category, reply: line, rule: ruleName };
}

/** The parts of a nodemailer / Node error the classifier reads. */
interface ErrorLike {
  message?: unknown;
  code?: unknown;
  originalCode?: unknown;
  response?: unknown;
  responseCode?: unknown;
  command?: unknown;
  timeoutType?: unknown;
  cause?: unknown;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

function stageOfCommand(command: string | undefined): SmtpStage | undefined {
  if (!command) return undefined;
  const c = command.toUpperCase();
  if (c.startsWith('MAIL')) return 'mail';
  if (c.startsWith('RCPT')) return 'rcpt';
  if (c.startsWith('DATA')) return 'data';
  return 'connect';
}

/** Where the failure happened, for the one-line reason we write ourselves. */
export interface ErrorContext {
  /** The next hop's name (MX host or static route host). */
  host?: string;
  /** The address we connected to, when it differs from host. */
  address?: string;
  port?: number;
}

function where(ctx: ErrorContext): string {
  if (!ctx.host) return 'next hop';
  const addr = ctx.address && ctx.address !== ctx.host ? `[${ctx.address}]` : '';
  return `${ctx.host}${addr}${ctx.port ? `:${ctx.port}` : ''}`;
}

function ours(
  result: 'defer' | 'reject',
  status: string,
  category: FailureCategory,
  rule: string,
  text: string,
): Classification {
  // Our own reasons are written like a reply so that DSNs and `message status` read the same.
  const basic = result === 'defer' ? (category === 'network' || category === 'tls' ? 421 : 451) : 550;
  return { result, status, category, rule, reply: `${basic} ${status} ${text}`.replace(/\s+/g, ' ').trim() };
}

/**
 * Classifies anything a delivery attempt can fail with: nodemailer errors (with or without a
 * server reply), socket and TLS errors. Unknown errors are temporary (`4.3.0`): a message is
 * never bounced because of a failure we do not understand.
 */
export function classifyDeliveryError(err: unknown, ctx: ErrorContext = {}): Classification {
  const e: ErrorLike =
    typeof err === 'object' && err !== null ? (err as ErrorLike) : { message: String(err) };
  const code = str(e.code);
  const originalCode = str(e.originalCode);
  const response = str(e.response);
  const command = str(e.command);
  const message = str(e.message) ?? 'unknown error';
  const codes = [code, originalCode].filter((c): c is string => c !== undefined);
  const at = where(ctx);

  // TLS first: a certificate the trust anchors do not vouch for is an admin matter (retry
  // until the give-up time), and the bounce must say TLS, not "network".
  const verify = codes.find((c) => TLS_VERIFY_ERROR_CODES.includes(c));
  if (verify || (!response && /certificate|self[- ]signed|unable to verify/i.test(message))) {
    return ours(
      'defer',
      '4.7.5',
      'tls',
      'tls-verify',
      `TLS certificate of ${at} not trusted: ${verify ?? message}`,
    );
  }
  if (code === 'ETLS') {
    const text = response
      ? `TLS required but ${at} refused STARTTLS (${replyToLine(response)}); nothing was sent in clear`
      : `TLS negotiation with ${at} failed: ${message}`;
    return ours('defer', '4.7.5', 'tls', 'tls-required', text);
  }
  const sslCode = codes.find((c) => c.startsWith('ERR_SSL_') || c.startsWith('ERR_TLS_'));
  if (sslCode) {
    return ours('defer', '4.7.5', 'tls', 'tls-handshake', `TLS handshake with ${at} failed: ${sslCode}`);
  }
  // Authentication to a static route: our credentials are wrong, the admins fix them.
  if (code === 'EAUTH' || (command && /^AUTH\b/i.test(command))) {
    const text = response ? replyToLine(response) : message;
    return ours('defer', '4.7.8', 'policy', 'auth-failed', `authentication to ${at} failed: ${text}`);
  }
  if (response && /^\d{3}/.test(response)) {
    return classifyReply(response, stageOfCommand(command));
  }
  if (code === 'ETIMEDOUT' || originalCode === 'ETIMEDOUT') {
    const phase = str(e.timeoutType);
    if (phase === 'CONNECT_TIMEOUT' || phase === 'GREETING_TIMEOUT') {
      return ours(
        'defer',
        '4.4.1',
        'network',
        'connect-timeout',
        `no answer from ${at} (${phase.toLowerCase().replace('_', ' ')})`,
      );
    }
    return ours('defer', '4.4.2', 'network', 'timeout', `timeout waiting for ${at}: ${message}`);
  }
  const unreachable = codes.find((c) => UNREACHABLE_ERROR_CODES.includes(c));
  if (unreachable) {
    return ours('defer', '4.4.1', 'network', 'unreachable', `cannot connect to ${at}: ${unreachable}`);
  }
  const broken = codes.find((c) => BROKEN_CONNECTION_ERROR_CODES.includes(c));
  if (broken || code === 'ECONNECTION' || code === 'ESOCKET') {
    return ours(
      'defer',
      '4.4.2',
      'network',
      'connection-lost',
      `connection to ${at} lost: ${broken ?? message}`,
    );
  }
  if (code === 'EDNS') {
    return ours('defer', '4.4.3', 'dns', 'dns', `cannot resolve ${at}: ${originalCode ?? message}`);
  }
  if (code === 'EMESSAGE' && /size/i.test(message)) {
    return ours(
      'reject',
      '5.3.4',
      'message-size',
      'size-limit',
      `message larger than ${at} accepts (SIZE): ${message}`,
    );
  }
  if (code === 'EENVELOPE') {
    return ours('reject', '5.1.3', 'recipient', 'bad-address', `address refused before sending: ${message}`);
  }
  if (code === 'ESTREAM') {
    return ours('defer', '4.3.0', 'other', 'spool-read', `could not read the stored message: ${message}`);
  }
  if (code === 'EPROTOCOL') {
    return ours('defer', '4.5.0', 'protocol', 'protocol', `protocol error with ${at}: ${message}`);
  }
  return ours('defer', '4.3.0', 'other', 'unknown', `delivery to ${at} failed: ${message}`);
}
