import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from 'smtp-server';
import type { KeyAndCert } from '../../crypto/dev-pki.ts';
import { testPki } from './pki.ts';

/**
 * A scriptable next-hop SMTP server for tests: a real smtp-server on 127.0.0.1:<random port>
 * with STARTTLS (or implicit TLS, or no TLS at all) using a test PKI certificate. It records
 * what it receives (envelope with DSN parameters, raw bytes, TLS facts) and answers each MAIL,
 * RCPT and DATA as the test scripts it: accept, any 4xx/5xx reply, drop the connection (at DATA
 * after some bytes of the message), or delay any of these.
 *
 *   const sink = await startSmtpSink({
 *     rcpt: (address) => (address.startsWith('unknown') ? reply(550, '5.1.1 user unknown') : accept()),
 *     data: () => delay(200, accept('2.0.0 Ok: queued as ABC123')),
 *   });
 *   // route: { host: '127.0.0.1', port: sink.port, tlsServername: 'localhost' }, trust testPki().ca
 *   const [msg] = await sink.waitForMessages(1);
 *   expect(msg.mailFrom).toBe('');
 *   await sink.close();
 *
 * Scripts can be replaced between tests (`sink.script.rcpt = ...`). Every session event is in
 * `sink.events` (in order), so a test can assert that something did NOT happen, e.g. that no
 * MAIL FROM was ever received without TLS.
 */

export type SinkAction =
  /** 250. For DATA, `text` is the reply text (default `2.0.0 Ok: queued as <queueId>`). */
  | { kind: 'accept'; text?: string }
  /** Any failure reply, e.g. 451 / `4.7.1 try later`, or 550 / `5.1.1 user unknown`. */
  | { kind: 'reply'; code: number; text: string }
  /** Close the TCP connection without a reply. At DATA: after `afterBytes` of the message arrived. */
  | { kind: 'drop'; afterBytes?: number }
  /** Wait, then do `then`. */
  | { kind: 'delay'; ms: number; then: SinkAction };

export const accept = (text?: string): SinkAction =>
  text === undefined ? { kind: 'accept' } : { kind: 'accept', text };
export const reply = (code: number, text: string): SinkAction => ({ kind: 'reply', code, text });
export const drop = (afterBytes?: number): SinkAction =>
  afterBytes === undefined ? { kind: 'drop' } : { kind: 'drop', afterBytes };
export const delay = (ms: number, then: SinkAction): SinkAction => ({ kind: 'delay', ms, then });

export interface SinkRecipient {
  address: string;
  /** RFC 3461 NOTIFY as received (upper case), if any. */
  notify?: string[];
  /** RFC 3461 ORCPT as received (xtext-encoded), if any. */
  orcpt?: string;
}

export interface SinkTransaction {
  sessionId: string;
  /** '' for the null sender (`MAIL FROM:<>`). */
  mailFrom: string;
  rcptTo: SinkRecipient[];
  /** RFC 3461 RET and ENVID (ENVID as received, xtext-encoded), if any. */
  ret?: string;
  envid?: string;
  /** BODY= parameter: '7bit' or '8bitmime'. */
  bodyType?: string;
  /** The message as received (dot-unstuffed, CRLF line endings). */
  raw: Buffer;
  /** The session was under TLS when the message came. */
  secure: boolean;
  /** SNI name the client asked for. */
  servername?: string;
  /** Client certificate the client presented (mutual TLS), as the server saw it. */
  clientCert?: { subjectCN?: string; issuerCN?: string; authorized: boolean };
  /** The 250 reply text sent, for accepted messages. */
  queueId?: string;
  outcome: 'accepted' | 'rejected' | 'dropped';
}

export type SinkEvent =
  | { type: 'connect'; sessionId: string; remotePort: number }
  | { type: 'secure'; sessionId: string; servername?: string; clientCertCN?: string; authorized: boolean }
  | { type: 'mail'; sessionId: string; address: string; secure: boolean }
  | { type: 'rcpt'; sessionId: string; address: string; secure: boolean }
  | { type: 'data'; sessionId: string; secure: boolean }
  | { type: 'close'; sessionId: string };

export interface SinkScript {
  mail?: (address: string, session: SMTPServerSession) => SinkAction;
  rcpt?: (address: string, session: SMTPServerSession) => SinkAction;
  /** Decided when DATA starts (so `drop` can cut the message); the envelope is in the session. */
  data?: (session: SMTPServerSession) => SinkAction;
}

export interface SmtpSinkOptions extends SinkScript {
  /** `starttls` (default), `implicit` (TLS from the first byte), or `none` (no STARTTLS at all). */
  tls?: 'starttls' | 'implicit' | 'none';
  /** Server certificate; default the test PKI's loopback server certificate. */
  cert?: KeyAndCert;
  /** Require a client certificate chaining to `clientCa` (default the test CA): mutual TLS. */
  requireClientCert?: boolean;
  clientCa?: string;
  /** Advertise DSN (RFC 3461); default true, like Postfix. */
  dsn?: boolean;
  /** Advertise PIPELINING; default true. */
  pipelining?: boolean;
  /** SIZE limit in bytes (advertised; larger messages get 552). */
  size?: number;
  /** Banner name. */
  name?: string;
  /** Address and port to listen on: default 127.0.0.1 and a free port. (Any 127.x.y.z works on Linux.) */
  host?: string;
  port?: number;
}

export interface SmtpSink {
  host: string;
  port: number;
  /** Current scripts; replace a function to change behaviour between tests. */
  script: SinkScript;
  /** Accepted messages, in arrival order. */
  messages: SinkTransaction[];
  /** Every DATA transaction, accepted or not. */
  transactions: SinkTransaction[];
  events: SinkEvent[];
  /** Resolves once `count` messages were accepted (rejects after `timeoutMs`, default 10 s). */
  waitForMessages(count: number, timeoutMs?: number): Promise<SinkTransaction[]>;
  /** Forgets recorded messages, transactions and events. */
  reset(): void;
  /** Stops listening and closes open connections at once. */
  close(): Promise<void>;
}

function smtpError(code: number, text: string): Error {
  const err = new Error(text) as Error & { responseCode: number };
  err.responseCode = code;
  return err;
}

function addressOf(a: SMTPServerAddress | false): string {
  return a ? a.address : '';
}

export async function startSmtpSink(opts: SmtpSinkOptions = {}): Promise<SmtpSink> {
  const pki = testPki();
  const cert = opts.cert ?? pki.server;
  const mode = opts.tls ?? 'starttls';
  const script: SinkScript = {};
  if (opts.mail) script.mail = opts.mail;
  if (opts.rcpt) script.rcpt = opts.rcpt;
  if (opts.data) script.data = opts.data;
  const messages: SinkTransaction[] = [];
  const transactions: SinkTransaction[] = [];
  const events: SinkEvent[] = [];
  const waiters: Array<() => void> = [];
  // Raw TCP sockets by client port, so a script can drop a connection (even under TLS).
  const sockets = new Map<number, net.Socket>();
  const tlsFacts = new Map<string, { servername?: string; clientCert?: SinkTransaction['clientCert'] }>();

  const dropSession = (session: SMTPServerSession): void => {
    sockets.get(session.remotePort)?.destroy();
  };

  /** Runs an action for MAIL/RCPT: callback() for accept, callback(err) for a reply. */
  const perform = (
    action: SinkAction,
    session: SMTPServerSession,
    callback: (err?: Error | null) => void,
  ): void => {
    switch (action.kind) {
      case 'accept':
        return callback();
      case 'reply':
        return callback(smtpError(action.code, action.text));
      case 'drop':
        return dropSession(session);
      case 'delay':
        setTimeout(() => perform(action.then, session, callback), action.ms);
        return;
    }
  };

  /** MAIL FROM and RCPT TO: record the event, then do what the script says (default accept). */
  const onAddress =
    (type: 'mail' | 'rcpt') =>
    (
      address: SMTPServerAddress,
      session: SMTPServerSession,
      callback: (err?: Error | null) => void,
    ): void => {
      events.push({ type, sessionId: session.id, address: address.address, secure: !!session.secure });
      perform(script[type]?.(address.address, session) ?? accept(), session, callback);
    };

  const disabled: string[] = ['AUTH'];
  if (mode === 'none') disabled.push('STARTTLS');
  const server = new SMTPServer({
    secure: mode === 'implicit',
    key: cert.keyPem,
    cert: cert.certPem,
    ...(opts.requireClientCert
      ? { requestCert: true, rejectUnauthorized: true, ca: opts.clientCa ?? pki.ca.certPem }
      : {}),
    name: opts.name ?? 'sink.localhost',
    banner: 'test sink',
    authOptional: true,
    disabledCommands: disabled,
    hideDSN: opts.dsn === false,
    hidePIPELINING: opts.pipelining === false,
    hideENHANCEDSTATUSCODES: true, // scripts write the enhanced code they want into the text
    disableReverseLookup: true,
    ...(opts.size ? { size: opts.size } : {}),
    logger: false,
    closeTimeout: 100,

    onConnect(session, callback) {
      events.push({ type: 'connect', sessionId: session.id, remotePort: session.remotePort });
      callback();
    },
    onSecure(socket, session, callback) {
      const s = socket as tls.TLSSocket;
      const peer = typeof s.getPeerCertificate === 'function' ? s.getPeerCertificate() : undefined;
      const hasPeer = peer !== undefined && Object.keys(peer).length > 0;
      const facts: { servername?: string; clientCert?: SinkTransaction['clientCert'] } = {};
      if (session.servername) facts.servername = session.servername;
      if (hasPeer) {
        const cc: NonNullable<SinkTransaction['clientCert']> = { authorized: s.authorized };
        if (typeof peer.subject?.CN === 'string') cc.subjectCN = peer.subject.CN;
        if (typeof peer.issuer?.CN === 'string') cc.issuerCN = peer.issuer.CN;
        facts.clientCert = cc;
      }
      tlsFacts.set(session.id, facts);
      const ev: SinkEvent = { type: 'secure', sessionId: session.id, authorized: s.authorized };
      if (facts.servername) ev.servername = facts.servername;
      if (facts.clientCert?.subjectCN) ev.clientCertCN = facts.clientCert.subjectCN;
      events.push(ev);
      callback();
    },
    onMailFrom: onAddress('mail'),
    onRcptTo: onAddress('rcpt'),
    onData(stream, session, callback) {
      events.push({ type: 'data', sessionId: session.id, secure: !!session.secure });
      const chunks: Buffer[] = [];
      let bytes = 0;
      let action = script.data?.(session) ?? accept();
      let wait = 0;
      while (action.kind === 'delay') {
        wait += action.ms;
        action = action.then;
      }
      const env = session.envelope;
      const facts = tlsFacts.get(session.id);
      const record = (outcome: SinkTransaction['outcome'], queueId?: string): SinkTransaction => {
        const t: SinkTransaction = {
          sessionId: session.id,
          mailFrom: addressOf(env.mailFrom),
          rcptTo: env.rcptTo.map((r) => {
            const out: SinkRecipient = { address: r.address };
            const dsn = (r as SMTPServerAddress & { dsn?: { notify?: string[]; orcpt?: string } }).dsn;
            if (dsn?.notify) out.notify = dsn.notify;
            if (dsn?.orcpt) out.orcpt = dsn.orcpt;
            return out;
          }),
          raw: Buffer.concat(chunks),
          secure: !!session.secure,
          outcome,
        };
        if (env.dsn?.ret) t.ret = env.dsn.ret;
        if (env.dsn?.envid) t.envid = env.dsn.envid;
        if (env.bodyType) t.bodyType = env.bodyType;
        if (facts?.servername) t.servername = facts.servername;
        if (facts?.clientCert) t.clientCert = facts.clientCert;
        if (queueId) t.queueId = queueId;
        transactions.push(t);
        return t;
      };
      const final = action;
      let dropped = false;
      const dropNow = (): void => {
        if (dropped) return;
        dropped = true;
        record('dropped');
        dropSession(session);
      };
      stream.on('data', (chunk: Buffer) => {
        if (dropped) return;
        chunks.push(chunk);
        bytes += chunk.length;
        if (final.kind === 'drop' && bytes >= (final.afterBytes ?? 1)) dropNow();
      });
      stream.on('end', () => {
        if (final.kind === 'drop') {
          // The whole message fit before the drop threshold: drop instead of answering.
          dropNow();
          return;
        }
        setTimeout(() => {
          if (stream.sizeExceeded) return callback(smtpError(552, '5.3.4 message too big'));
          if (final.kind === 'reply') {
            record('rejected');
            return callback(smtpError(final.code, final.text));
          }
          const queueId = randomBytes(5).toString('hex').toUpperCase();
          const text =
            final.kind === 'accept' && final.text !== undefined
              ? final.text
              : `2.0.0 Ok: queued as ${queueId}`;
          messages.push(record('accepted', queueId));
          for (const w of waiters.splice(0)) w();
          callback(null, text);
        }, wait);
      });
    },
    onClose(session) {
      events.push({ type: 'close', sessionId: session.id });
    },
  });
  // A client that fails the TLS handshake (unknown CA, no client certificate) is an expected
  // outcome in tests, not a crash.
  server.on('error', () => {});
  server.server.on('connection', (socket: net.Socket) => {
    const port = socket.remotePort;
    if (port === undefined) return;
    sockets.set(port, socket);
    socket.once('close', () => sockets.delete(port));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.server.address() as net.AddressInfo;

  return {
    host: address.address,
    port: address.port,
    script,
    messages,
    transactions,
    events,
    waitForMessages(count, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          if (messages.length >= count) {
            clearTimeout(timer);
            resolve(messages.slice(0, count));
            return true;
          }
          return false;
        };
        const timer = setTimeout(
          () => reject(new Error(`smtp sink: ${messages.length}/${count} messages after ${timeoutMs} ms`)),
          timeoutMs,
        );
        if (check()) return;
        const waiter = (): void => {
          if (!check()) waiters.push(waiter);
        };
        waiters.push(waiter);
      });
    },
    reset() {
      messages.length = 0;
      transactions.length = 0;
      events.length = 0;
    },
    close() {
      for (const s of sockets.values()) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
