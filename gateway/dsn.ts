import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import type { DsnRecipientReport, Envelope, EnvelopeRecipient, Notifier } from '../queue/types.ts';

/**
 * Delivery Status Notifications: RFC 3464 reports, sent as RFC 3461 asks (NOTIFY per recipient,
 * RET, ENVID), never to the null sender. The human-readable part says only what the sender
 * already knows or what the next hop answered: recipients, status, remote reply. It never
 * quotes the subject or the body (patient data), only the returned content part carries them,
 * and only as the sender's RET asked.
 */

/** Without RET, the whole message comes back in a failure DSN up to this size (bytes). */
export const RETURN_FULL_DEFAULT_LIMIT = 100 * 1024;
/** With RET=FULL, the whole message comes back up to this size; headers only above (bytes). */
export const RETURN_FULL_MAX = 10 * 1024 * 1024;
/** Headers longer than this are cut (a message without a blank line, or a header bomb). */
const HEADERS_MAX = 1024 * 1024;

export interface BuildDsnOptions {
  /** Our name (Reporting-MTA, From, Message-ID). */
  reportingMta: string;
  envelope: Envelope;
  messagePath: string;
  reports: DsnRecipientReport[];
  arrivalDate: Date;
  /** Defaults to now; tests pin it. */
  now?: Date;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

/** RFC 5322 §3.3 date-time in UTC: `Tue, 15 Nov 1994 08:12:31 +0000`. */
export function rfc5322Date(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return (
    `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
  );
}

/** Control characters never reach a header or the report: a remote reply is untrusted text. */
function clean(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
}

/**
 * The envelope id as the sender gave it (the spool keeps ENVID xtext-decoded, like ORCPT), the
 * way Postfix writes it. It is *text (RFC 3464 §2.2.1); anything outside `!`..`~` that slipped
 * through is written as an xtext `+XX` escape so it can never break the field.
 */
function printableEnvid(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out +=
      byte >= 0x21 && byte <= 0x7e
        ? String.fromCharCode(byte)
        : `+${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** Folds a header-style field at spaces so no line is longer than 78 characters (RFC 5322 §2.2.3). */
function field(name: string, value: string): string {
  const words = clean(value).split(' ');
  const lines: string[] = [];
  let line = `${name}:`;
  for (const w of words) {
    if (line.length + 1 + w.length > 78 && line.trim().length > name.length + 1) {
      lines.push(line);
      line = ` ${w}`;
    } else {
      line += ` ${w}`;
    }
  }
  lines.push(line);
  return lines.join('\r\n');
}

/** RFC 3464 §2.3.2 / RFC 6533: `rfc822;` for ASCII addresses, `utf-8;` otherwise. */
function addressField(address: string): string {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(address) ? `rfc822;${address}` : `utf-8;${address}`;
}

function is8bit(buf: Buffer): boolean {
  for (const b of buf) if (b > 0x7f) return true;
  return false;
}

/** The header section of the stored message (up to and including the blank line). */
async function readHeaders(messagePath: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of createReadStream(messagePath, { highWaterMark: 64 * 1024 })) {
    const buf = chunk as Buffer;
    chunks.push(buf);
    total += buf.length;
    const all = Buffer.concat(chunks);
    const crlf = all.indexOf('\r\n\r\n');
    const lf = all.indexOf('\n\n');
    const ends = [crlf >= 0 ? crlf + 4 : -1, lf >= 0 ? lf + 2 : -1].filter((n) => n >= 0);
    if (ends.length > 0) return all.subarray(0, Math.min(...ends));
    if (total >= HEADERS_MAX) return all.subarray(0, HEADERS_MAX);
  }
  return Buffer.concat(chunks);
}

function normalizeCrlf(buf: Buffer): Buffer {
  // Stored messages are CRLF already; a bare LF (from a header cut or a broken client) is fixed.
  return Buffer.from(buf.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
}

function describe(report: DsnRecipientReport): string {
  const who = report.recipient.address;
  const remote = report.remoteMta ? ` (${report.remoteMta})` : '';
  const diag = report.diagnostic ? `\r\n    ${clean(report.diagnostic)}` : '';
  switch (report.action) {
    case 'failed':
      return `<${who}>: delivery failed, status ${report.status}${remote}${diag}`;
    case 'delayed': {
      const until = report.willRetryUntil
        ? `; we keep trying until ${rfc5322Date(new Date(report.willRetryUntil))}`
        : '';
      return `<${who}>: not delivered yet, status ${report.status}${remote}${until}${diag}`;
    }
    case 'delivered':
      return `<${who}>: delivered to the mailbox`;
    case 'relayed':
      return `<${who}>: relayed to ${report.remoteMta ?? 'the next server'}, which does not send delivery notifications`;
    case 'expanded':
      return `<${who}>: delivered and expanded to further recipients`;
  }
}

function subjectFor(reports: DsnRecipientReport[]): string {
  if (reports.some((r) => r.action === 'failed')) return 'Delivery Status Notification (Failure)';
  if (reports.some((r) => r.action === 'delayed')) return 'Delivery Status Notification (Delay)';
  return 'Delivery Status Notification (Success)';
}

/**
 * Builds an RFC 3464 DSN for `reports` (one or more recipients of the same message) as the bytes
 * of a message to the original sender, CRLF line endings. The returned content follows RFC 3461
 * §4.3: RET=HDRS → headers; RET=FULL → the whole message up to RETURN_FULL_MAX; no RET → the
 * whole message up to RETURN_FULL_DEFAULT_LIMIT. Only failure reports return the whole message;
 * delay and success reports return headers.
 */
export async function buildDsn(opts: BuildDsnOptions): Promise<Buffer> {
  const { envelope, reports, reportingMta } = opts;
  if (reports.length === 0) throw new Error('buildDsn: no recipient reports');
  const now = opts.now ?? new Date();
  const mta = clean(reportingMta);
  const boundary = `=_dsn_${randomBytes(12).toString('hex')}`;
  const messageId = `<dsn.${Date.now().toString(36)}.${randomBytes(8).toString('hex')}@${mta}>`;

  // (3) the returned content
  const failed = reports.some((r) => r.action === 'failed');
  const { size } = await fs.stat(opts.messagePath);
  const fullLimit =
    envelope.ret === 'FULL' ? RETURN_FULL_MAX : envelope.ret === 'HDRS' ? 0 : RETURN_FULL_DEFAULT_LIMIT;
  const returnFull = failed && size <= fullLimit;
  const content = returnFull
    ? await fs.readFile(opts.messagePath)
    : normalizeCrlf(await readHeaders(opts.messagePath));
  if (content.includes(boundary)) throw new Error('buildDsn: boundary collision'); // 96 random bits: never

  // (1) human-readable part
  const intro = failed
    ? 'Your message could not be delivered to one or more recipients.'
    : reports.some((r) => r.action === 'delayed')
      ? 'Your message has not been delivered yet to one or more recipients. Nothing needs to be done: we keep trying and will tell you if we give up.'
      : 'Your message was delivered or passed on as requested.';
  const text = [
    `This is the mail system at ${mta}.`,
    '',
    intro,
    '',
    ...reports.map(describe),
    '',
    `Message received: ${rfc5322Date(opts.arrivalDate)}`,
    returnFull ? 'The message is attached.' : 'The headers of the message are attached.',
    '',
  ].join('\r\n');
  const textBytes = Buffer.from(text, 'utf8');
  const textPart = is8bit(textBytes)
    ? `Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n${textBytes
        .toString('base64')
        .replace(/.{76}/g, '$&\r\n')}\r\n`
    : `Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n${text}`;

  // (2) machine-readable part: RFC 3464 §2.2 per-message, §2.3 per-recipient fields
  const perMessage = [field('Reporting-MTA', `dns; ${mta}`)];
  if (envelope.envid) perMessage.push(field('Original-Envelope-Id', printableEnvid(envelope.envid)));
  perMessage.push(field('Arrival-Date', rfc5322Date(opts.arrivalDate)));
  const perRecipient = reports.map((r) => {
    const lines: string[] = [];
    if (r.recipient.orcpt) lines.push(field('Original-Recipient', clean(r.recipient.orcpt)));
    lines.push(field('Final-Recipient', addressField(r.recipient.address)));
    lines.push(field('Action', r.action));
    lines.push(field('Status', r.status));
    if (r.remoteMta) lines.push(field('Remote-MTA', `dns; ${r.remoteMta}`));
    if (r.diagnostic) lines.push(field('Diagnostic-Code', `smtp; ${r.diagnostic}`));
    lines.push(field('Last-Attempt-Date', rfc5322Date(new Date(r.lastAttemptAt ?? now.getTime()))));
    if (r.action === 'delayed' && r.willRetryUntil) {
      lines.push(field('Will-Retry-Until', rfc5322Date(new Date(r.willRetryUntil))));
    }
    return lines.join('\r\n');
  });
  const statusBody = [perMessage.join('\r\n'), ...perRecipient].join('\r\n\r\n') + '\r\n';
  const statusPart = `Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: ${
    is8bit(Buffer.from(statusBody, 'utf8')) ? '8bit' : '7bit'
  }\r\n\r\n${statusBody}`;

  const contentType = returnFull ? 'message/rfc822' : 'text/rfc822-headers';
  const contentHead = `Content-Type: ${contentType}\r\nContent-Transfer-Encoding: ${is8bit(content) ? '8bit' : '7bit'}\r\n\r\n`;

  const head = [
    field('From', `Mail Delivery System <MAILER-DAEMON@${mta}>`),
    field('To', `<${clean(envelope.mailFrom)}>`),
    field('Subject', subjectFor(reports)),
    field('Date', rfc5322Date(now)),
    field('Message-ID', messageId),
    // RFC 3834 §5: an automatic response; mail robots must not answer it.
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status;\r\n boundary="${boundary}"`,
  ].join('\r\n');

  const contentEndsWithNewline = content.length === 0 || content.subarray(-2).toString('latin1') === '\r\n';
  return Buffer.concat([
    Buffer.from(
      `${head}\r\n\r\nThis is a MIME-encapsulated delivery status notification (RFC 3464).\r\n\r\n` +
        `--${boundary}\r\n${textPart}\r\n--${boundary}\r\n${statusPart}\r\n--${boundary}\r\n${contentHead}`,
      'utf8',
    ),
    content,
    Buffer.from(`${contentEndsWithNewline ? '' : '\r\n'}\r\n--${boundary}--\r\n`, 'utf8'),
  ]);
}

/** Which actions a recipient asked to hear about (RFC 3461 §4.1; default FAILURE,DELAY). */
export function wantsReport(recipient: EnvelopeRecipient, action: DsnRecipientReport['action']): boolean {
  const notify = recipient.notify;
  if (notify === 'NEVER') return false;
  const asked = notify ?? ['FAILURE', 'DELAY'];
  if (action === 'failed') return asked.includes('FAILURE');
  if (action === 'delayed') return asked.includes('DELAY');
  return asked.includes('SUCCESS');
}

export interface NotifierOptions {
  hostname: string;
  /** Queues a message for delivery; resolves to its queue id. DSNs always use the null sender. */
  submit: (mail: { mailFrom: ''; to: string; data: Buffer }) => Promise<string>;
  /** Defaults to now; tests pin it. */
  now?: () => Date;
}

/**
 * Sends DSNs as the recipients asked: NOTIFY=NEVER → nothing; no NOTIFY → failures and delays;
 * SUCCESS only when asked. Never to the null sender (RFC 3461 §6.2: no bounce loops).
 */
export function createNotifier(opts: NotifierOptions): Notifier {
  return {
    async report(envelope, messagePath, reports) {
      if (envelope.mailFrom === '') return;
      const wanted = reports.filter((r) => wantsReport(r.recipient, r.action));
      if (wanted.length === 0) return;
      const data = await buildDsn({
        reportingMta: opts.hostname,
        envelope,
        messagePath,
        reports: wanted,
        arrivalDate: new Date(envelope.receivedAt),
        now: opts.now?.() ?? new Date(),
      });
      await opts.submit({ mailFrom: '', to: envelope.mailFrom, data });
    },
  };
}
