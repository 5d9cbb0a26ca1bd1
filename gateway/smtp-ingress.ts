import type { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import {
  SMTPServer,
  type SMTPServerAddress,
  type SMTPServerOptions,
  type SMTPServerSession,
} from 'smtp-server';
import type { Config } from '../config/schema.ts';
import type { DeliveryQueue } from '../queue/delivery-queue.ts';
import type { Spool } from '../queue/spool.ts';
import type { DsnNotify, Envelope, EnvelopeRecipient } from '../queue/types.ts';
import { smtpError, toSmtpReply, SmtpError } from './errors.ts';
import type { Logger } from './log.ts';
import { installEnhancedCodeReplies } from './smtp-replies.ts';

/** What ingress needs from the directory. */
export interface IngressMailboxes {
  isHosted(address: string): boolean;
  verifyPassword(address: string, password: string): Promise<boolean>;
}

export interface IngressTls {
  key: string;
  cert: string;
  /** Trust anchors for client certificates (relay listener). */
  ca: string;
}

export interface IngressDeps {
  config: Config;
  tls: IngressTls;
  spool: Spool;
  queue: DeliveryQueue;
  mailboxes: IngressMailboxes;
  logger: Logger;
  /** Shared by the listeners; a default one per listener otherwise. */
  authThrottle?: AuthThrottle;
}

export type ListenerKind = 'submission' | 'submissions' | 'relay';

export interface Listener {
  kind: ListenerKind;
  server: SMTPServer;
  /** The bound port (useful with port 0 in tests). */
  port: number;
  host: string;
}

/** The client certificate a relay peer presented, kept per session for policy and logs. */
const peerCertificates = new WeakMap<SMTPServerSession, { subject: string; authorized: boolean }>();

const ADDRESS = /^[^\s@<>()[\]\\,;:"]+@[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/i;

/** Lower-cases the domain; the local part is kept as sent (RFC 5321 §2.4). */
export function normaliseAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address;
  return `${address.slice(0, at)}@${address.slice(at + 1).toLowerCase()}`;
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

/**
 * Watches the DATA bytes for a CR or LF that is not part of a CRLF pair (RFC 5321 §2.3.8). Such
 * line endings are how SMTP smuggling hides a second message (`\n.\r\n`); the message is refused
 * as a whole rather than repaired.
 */
export class LineEndingCheck {
  bare = false;
  private prev = 0;

  inspect(chunk: Buffer): void {
    for (let i = 0; i < chunk.length && !this.bare; i++) {
      const c = chunk[i]!;
      if ((c === 0x0a && this.prev !== 0x0d) || (this.prev === 0x0d && c !== 0x0a)) this.bare = true;
      this.prev = c;
    }
  }

  /** Call at the end of the data: a trailing lone CR is bare too. */
  finish(): void {
    if (this.prev === 0x0d) this.bare = true;
  }
}

function receivedHeader(
  session: SMTPServerSession,
  id: string,
  hostname: string,
  kind: ListenerKind,
  date: Date,
): Buffer {
  // RFC 5321 §4.4 time stamp line; RFC 3848 protocol types (ESMTPS: TLS, ESMTPSA: TLS + AUTH).
  const protocol = `ESMTP${session.secure ? 'S' : ''}${session.user ? 'A' : ''}`;
  const helo = (session.hostNameAppearsAs || 'unknown').replace(/[^\x21-\x7e]/g, '');
  const client =
    session.clientHostname && session.clientHostname !== `[${session.remoteAddress}]`
      ? session.clientHostname
      : '';
  return Buffer.from(
    `Received: from ${helo} (${client ? `${client} ` : ''}[${session.remoteAddress}])\r\n` +
      `\tby ${hostname} (Courrier, ${kind}) with ${protocol} id ${id};\r\n` +
      `\t${date.toUTCString().replace('GMT', '+0000')}\r\n`,
  );
}

function toEnvelopeRecipient(rcpt: SMTPServerAddress): EnvelopeRecipient {
  const r: EnvelopeRecipient = { address: normaliseAddress(rcpt.address) };
  const dsn = (rcpt as SMTPServerAddress & { dsn?: { notify?: string[]; orcpt?: string } }).dsn;
  if (dsn?.notify) {
    const values = dsn.notify.map((v) => v.toUpperCase());
    r.notify = values.includes('NEVER') ? 'NEVER' : (values as DsnNotify[]);
  }
  // smtp-server has already decoded the xtext of every parameter value (RFC 3461 §4).
  if (dsn?.orcpt) r.orcpt = dsn.orcpt;
  return r;
}

/** Starts the SMTP listeners the config enables. */
export async function startIngress(deps: IngressDeps): Promise<Listener[]> {
  installEnhancedCodeReplies();
  const { config } = deps;
  deps = { ...deps, authThrottle: deps.authThrottle ?? new AuthThrottle() };
  const listeners: Listener[] = [];
  const sub = config.smtp.submission;
  const wanted: Array<[ListenerKind, string, number]> = [];
  if (sub.enabled) wanted.push(['submission', sub.host, sub.port]);
  if (sub.enabled && sub.implicitTlsPort !== undefined)
    wanted.push(['submissions', sub.host, sub.implicitTlsPort]);
  if (config.smtp.relay.enabled) wanted.push(['relay', config.smtp.relay.host, config.smtp.relay.port]);
  try {
    for (const [kind, host, port] of wanted) listeners.push(await listen(deps, kind, host, port));
  } catch (err) {
    // All or nothing: a port in use must not leave the other listeners half up.
    await stopIngress(listeners);
    throw err;
  }
  return listeners;
}

/** Stops accepting: open sessions get `421 4.3.2` and are closed. */
export async function stopIngress(listeners: Listener[]): Promise<void> {
  await Promise.all(listeners.map((l) => new Promise<void>((resolve) => l.server.close(() => resolve()))));
}

function listen(deps: IngressDeps, kind: ListenerKind, host: string, port: number): Promise<Listener> {
  const server = createSmtpServer(deps, kind);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.removeListener('error', reject);
      server.on('error', (err) =>
        deps.logger.warn({ listener: kind, err: { message: err.message } }, 'smtp error'),
      );
      const address = server.server.address();
      resolve({ kind, server, host, port: typeof address === 'object' && address ? address.port : port });
    });
  });
}

/**
 * Failed AUTH attempts per client address: past `max` failures within `windowMs` the address gets
 * `454 4.7.0` without a password check (no scrypt time spent, no guessing at full speed).
 */
export class AuthThrottle {
  private failures = new Map<string, { count: number; since: number }>();
  readonly max: number;
  readonly windowMs: number;

  constructor(max = 10, windowMs = 15 * 60_000) {
    this.max = max;
    this.windowMs = windowMs;
  }

  blocked(ip: string, now = Date.now()): boolean {
    const f = this.failures.get(ip);
    if (!f) return false;
    if (now - f.since > this.windowMs) {
      this.failures.delete(ip);
      return false;
    }
    return f.count >= this.max;
  }

  fail(ip: string, now = Date.now()): void {
    const f = this.failures.get(ip);
    if (!f || now - f.since > this.windowMs) this.failures.set(ip, { count: 1, since: now });
    else f.count++;
    // Bounded memory: forget the oldest entries past 10 000 addresses.
    if (this.failures.size > 10_000) this.failures.delete(this.failures.keys().next().value!);
  }

  succeed(ip: string): void {
    this.failures.delete(ip);
  }
}

function createSmtpServer(deps: IngressDeps, kind: ListenerKind): SMTPServer {
  const { config, spool, queue, mailboxes, logger } = deps;
  const isRelay = kind === 'relay';
  const localDomains = new Set(config.localDomains);
  const sessionLog = new WeakMap<SMTPServerSession, Logger>();
  const throttle = deps.authThrottle ?? new AuthThrottle();
  const logOf = (s: SMTPServerSession): Logger => sessionLog.get(s) ?? logger;

  const options: SMTPServerOptions = {
    name: config.hostname,
    banner: 'Courrier ESMTP',
    secure: kind === 'submissions',
    key: deps.tls.key,
    cert: deps.tls.cert,
    minVersion: config.tls.minVersion,
    size: config.smtp.maxMessageSize,
    maxRecipients: config.smtp.maxRecipients,
    socketTimeout: config.smtp.socketTimeout,
    closeTimeout: 5_000,
    disableReverseLookup: true,
    // Both default to hidden in smtp-server: we want RFC 2034 enhanced codes and RFC 3461 DSN.
    hideENHANCEDSTATUSCODES: false,
    hideDSN: false,
    logger: false,
    // AUTH only after TLS (RFC 8314); none on the relay port, where peers prove who they are with
    // their certificate.
    allowInsecureAuth: false,
    authMethods: ['PLAIN', 'LOGIN'],
    authOptional: isRelay,
    disabledCommands: isRelay ? ['AUTH'] : [],
    ...(isRelay && config.smtp.relay.requireClientCert
      ? { requestCert: true, rejectUnauthorized: true, ca: deps.tls.ca }
      : {}),

    onConnect(session, callback) {
      sessionLog.set(session, logger.child({ sid: session.id, listener: kind }));
      logOf(session).debug({ ip: session.remoteAddress }, 'connection');
      callback();
    },

    onSecure(socket, session, callback) {
      if (isRelay && config.smtp.relay.requireClientCert) {
        const tlsSocket = socket as TLSSocket;
        const cert = tlsSocket.getPeerCertificate();
        const present = cert && Object.keys(cert).length > 0;
        if (!present || !tlsSocket.authorized) {
          logOf(session).warn(
            { ip: session.remoteAddress, reason: tlsSocket.authorizationError ?? 'no certificate' },
            'relay peer refused',
          );
          return callback(smtpError('CLIENT_CERT_REQUIRED'));
        }
        peerCertificates.set(session, {
          subject: formatDn(cert.subject as unknown as Record<string, string | string[]>),
          authorized: true,
        });
      }
      callback();
    },

    onAuth(auth, session, callback) {
      const username = (auth.username ?? '').trim();
      const ip = session.remoteAddress;
      if (throttle.blocked(ip)) {
        logOf(session).warn({ ip }, 'authentication refused: too many failures from this address');
        return callback(smtpError('AUTH_THROTTLED'));
      }
      mailboxes
        .verifyPassword(username, auth.password ?? '')
        .then((ok) => {
          if (!ok) {
            throttle.fail(ip);
            logOf(session).info({ ip }, 'authentication failed');
            return callback(smtpError('AUTH_FAILED'));
          }
          throttle.succeed(ip);
          logOf(session).info({ userDomain: domainOf(username) }, 'authenticated');
          callback(null, { user: normaliseAddress(username) });
        })
        .catch((err: unknown) => {
          logOf(session).error({ err }, 'authentication backend failed');
          callback(smtpError('AUTH_TEMPORARY'));
        });
    },

    onMailFrom(address, session, callback) {
      try {
        if (isRelay && !session.secure) throw smtpError('TLS_REQUIRED');
        if (!isRelay) {
          const user = typeof session.user === 'string' ? session.user : undefined;
          if (!user) throw smtpError('AUTH_REQUIRED');
          // A mailbox may only send as itself (no null sender either: DSNs are ours to make).
          if (!address.address || normaliseAddress(address.address).toLowerCase() !== user.toLowerCase()) {
            throw smtpError('SENDER_NOT_OWNED');
          }
        }
        // Fail now rather than after the client sent megabytes of DATA.
        if (!queue.isReady()) throw smtpError('QUEUE_UNAVAILABLE');
        callback();
      } catch (err) {
        callback(reply(err, logOf(session)));
      }
    },

    onRcptTo(address, session, callback) {
      try {
        const rcpt = normaliseAddress(address.address);
        if (!ADDRESS.test(rcpt)) throw smtpError('RECIPIENT_SYNTAX');
        const domain = domainOf(rcpt);
        if (localDomains.has(domain)) {
          let hosted: boolean;
          try {
            hosted = mailboxes.isHosted(rcpt);
          } catch (err) {
            throw smtpError('DIRECTORY_UNAVAILABLE', undefined, err);
          }
          if (!hosted) throw smtpError('RECIPIENT_UNKNOWN');
        } else if (isRelay) {
          // Peers may only hand us mail for our own mailboxes: no open relay.
          throw smtpError('RELAY_DENIED');
        }
        callback();
      } catch (err) {
        callback(reply(err, logOf(session)));
      }
    },

    onData(stream, session, callback) {
      const log = logOf(session);
      accept(stream, session).then(
        (id) => callback(null, `Ok: queued as ${id}`),
        (err: unknown) => callback(reply(err, log)),
      );
    },

    onClose(session) {
      sessionLog.delete(session);
    },
  };

  async function accept(
    stream: Readable & { sizeExceeded?: boolean },
    session: SMTPServerSession,
  ): Promise<string> {
    const id = spool.newId();
    const log = logOf(session).child({ queueId: id });
    const receivedAt = new Date();
    const check = new LineEndingCheck();
    const header = receivedHeader(session, id, config.hostname, kind, receivedAt);
    let refused = false;
    let size: number;
    try {
      // Iterating the DATA stream itself (not a pipe) makes a client that disconnects mid-DATA
      // end this with an error (premature close) instead of leaving the spool file open.
      size = await spool.receive(
        id,
        (async function* withHeader() {
          yield header;
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            // Once the message is refused, read on to the end of DATA (so the reply can be sent)
            // but store nothing more: an oversized message must not fill the spool disk.
            if (refused) continue;
            if (stream.sizeExceeded) refused = true;
            else check.inspect(chunk);
            if (check.bare) refused = true;
            if (!refused) yield chunk;
          }
          check.finish();
        })(),
      );
    } catch (err) {
      // Keep reading so smtp-server sees the end of DATA and can send our reply.
      if (!stream.destroyed) stream.resume();
      await spool.discard(id);
      throw err;
    }
    if (stream.sizeExceeded) {
      await spool.discard(id);
      log.info({ size }, 'message refused: too big');
      throw smtpError('MESSAGE_TOO_BIG');
    }
    if (check.bare) {
      await spool.discard(id);
      log.warn({ size }, 'message refused: bare CR or LF in DATA');
      throw smtpError('BARE_LINE_ENDING');
    }
    const mailFrom = session.envelope.mailFrom;
    const dsn = (session.envelope as { dsn?: { ret?: string; envid?: string } }).dsn;
    const envelope: Envelope = {
      id,
      mailFrom: mailFrom ? normaliseAddress(mailFrom.address) : '',
      recipients: session.envelope.rcptTo.map(toEnvelopeRecipient),
      receivedAt: receivedAt.getTime(),
      size,
      source: {
        listener: isRelay ? 'relay' : 'submission',
        clientIp: session.remoteAddress,
        tls: session.secure,
        ...(typeof session.user === 'string' ? { user: session.user } : {}),
      },
      ...(dsn?.ret === 'FULL' || dsn?.ret === 'HDRS' ? { ret: dsn.ret } : {}),
      ...(dsn?.envid ? { envid: dsn.envid } : {}),
    };
    await spool.commit(envelope);
    try {
      await queue.enqueue(id);
    } catch (err) {
      // Not acknowledged, so not ours: the client keeps the message and tries again.
      await spool.discard(id);
      throw smtpError('QUEUE_UNAVAILABLE', undefined, err);
    }
    log.info(
      {
        size,
        rcpts: envelope.recipients.length,
        rcptDomains: [...new Set(envelope.recipients.map((r) => domainOf(r.address)))],
      },
      'message accepted',
    );
    return id;
  }

  return new SMTPServer(options);
}

function reply(err: unknown, log: Logger): SmtpError {
  const e = toSmtpReply(err);
  if (e.errorName === 'LOCAL_ERROR' || e.errorName === 'SPOOL_FULL' || e.errorName === 'QUEUE_UNAVAILABLE') {
    log.error(
      { err: err instanceof Error ? { message: err.message, cause: String(err.cause ?? '') } : String(err) },
      e.message,
    );
  } else {
    log.info({ reply: e.responseCode, status: e.enhanced }, 'refused');
  }
  return e;
}

function formatDn(dn: Record<string, string | string[]> | undefined): string {
  if (!dn) return '';
  return Object.entries(dn)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`)
    .join(',');
}

/** The verified client certificate of a relay session (for trust-space policy). */
export function peerCertificateOf(
  session: SMTPServerSession,
): { subject: string; authorized: boolean } | undefined {
  return peerCertificates.get(session);
}
