import { makeMessage, RawSmtpClient } from '../test/helpers/smtp-client.ts';
import { nowMs } from './stats.ts';

/**
 * The submission load: N sessions, each opened once (EHLO, STARTTLS with a verified certificate,
 * EHLO, AUTH PLAIN if credentials are given), then reused for message after message. Commands
 * are pipelined as RFC 2920 allows (MAIL, RCPT and DATA in one write, as Postfix and nodemailer
 * do), the message and its final dot follow the 354 in one write; the acceptance latency runs from
 * the moment that write was handed to the kernel to the final reply.
 */

export interface LoadTarget {
  port: number;
  ca: string;
  /** Omit for a server that relays for loopback without AUTH (the Postfix comparison). */
  auth?: { user: string; pass: string };
}

export interface MessageTiming {
  /** Message-ID (without brackets), what the sink reports. */
  id: string;
  /** Before MAIL FROM was written. */
  submitAt: number;
  /** When the message with its final dot had been handed to the kernel (write callback). */
  dotAt: number;
  /** When the final reply arrived. */
  ackAt: number;
  /** The final reply's code (250 when accepted); the refusing reply's code otherwise. */
  code: number;
}

export interface LoadOptions {
  /** Messages to send, spread over the sessions as they become free. */
  count: number;
  /** Total message size in bytes (headers included, approximately). */
  size: number;
  /** Prefix of the Message-IDs, unique per run. */
  idPrefix: string;
  from: string;
  to: string;
}

/** Opens `n` ready sessions (TLS and, if asked, AUTH done). */
export async function openSessions(target: LoadTarget, n: number): Promise<RawSmtpClient[]> {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const { client, greeting } = await RawSmtpClient.connect({
        port: target.port,
        ca: target.ca,
        timeoutMs: 120_000,
      });
      if (greeting.code !== 220) throw new Error(`greeting: ${greeting.code} ${greeting.text}`);
      await client.startTls('bench.client.test');
      if (target.auth) {
        const r = await client.authPlain(target.auth.user, target.auth.pass);
        if (r.code !== 235) throw new Error(`AUTH refused: ${r.code} ${r.text}`);
      }
      return client;
    }),
  );
}

export async function closeSessions(sessions: RawSmtpClient[]): Promise<void> {
  await Promise.all(sessions.map((s) => s.quit()));
}

const ID_MARK = '@@MESSAGE-ID@@';
const DOT = Buffer.from('.\r\n');

/** The message as bytes around its Message-ID, CRLF line endings, dot-stuffed, no final dot. */
function messageTemplate(opts: LoadOptions): { before: Buffer; after: Buffer } {
  const headerEstimate = 260;
  let text = makeMessage({
    from: opts.from,
    to: opts.to,
    subject: `bench ${opts.size} bytes`,
    messageId: ID_MARK,
    bodySize: Math.max(100, opts.size - headerEstimate),
  });
  text = text.replace(/(^|\r\n)\./g, '$1..');
  if (!text.endsWith('\r\n')) text += '\r\n';
  const [before, after] = text.split(ID_MARK) as [string, string];
  return { before: Buffer.from(before, 'latin1'), after: Buffer.from(after, 'latin1') };
}

/** Sends `opts.count` messages over the sessions; resolves with one timing per message. */
export async function runLoad(sessions: RawSmtpClient[], opts: LoadOptions): Promise<MessageTiming[]> {
  const { before, after } = messageTemplate(opts);
  const envelope = `MAIL FROM:<${opts.from}>\r\nRCPT TO:<${opts.to}>\r\nDATA\r\n`;
  const timings: MessageTiming[] = [];
  let next = 0;
  const session = async (client: RawSmtpClient): Promise<void> => {
    while (next < opts.count) {
      const id = `${opts.idPrefix}-${next++}@bench.test`;
      const message = Buffer.concat([before, Buffer.from(id), after]);
      const submitAt = nowMs();
      await client.write(envelope);
      const mail = await client.read();
      const rcpt = await client.read().catch((err: unknown) => {
        throw new Error(`after MAIL FROM (${mail.code} ${mail.text})`, { cause: err });
      });
      const data = await client.read();
      if (data.code !== 354) {
        // With DATA refused the transaction may still be open (MAIL accepted): start afresh.
        if (mail.code === 250) await client.command('RSET');
        const refused = [mail, rcpt, data].find((r) => r.code >= 400)!;
        timings.push({ id, submitAt, dotAt: NaN, ackAt: nowMs(), code: refused.code });
        continue;
      }
      // Message and final dot in one write, as MTAs send them: a dot written on its own would
      // wait for the ACK of the message's last segment (Nagle's algorithm against the peer's
      // delayed ACK, 40 ms on Linux), a client artefact that is not the server's latency.
      await client.write(Buffer.concat([message, DOT]));
      const dotAt = nowMs();
      const final = await client.read();
      timings.push({ id, submitAt, dotAt, ackAt: nowMs(), code: final.code });
    }
  };
  await Promise.all(sessions.map(session));
  return timings;
}
