import { createReadStream } from 'node:fs';
import net from 'node:net';
import nodemailer, {
  type Mail,
  type SendMailOptions,
  type SMTPPoolOptions,
  type SMTPPoolSentMessageInfo,
} from 'nodemailer';
import type { Config } from '../config/schema.ts';
import type {
  Deliverer,
  DeliveryOutcome,
  DeliveryRequest,
  Envelope,
  EnvelopeRecipient,
} from '../queue/types.ts';
import type { LocalDelivery } from './local-delivery.ts';
import type { Logger } from './log.ts';
import { resolveAddresses, resolveRoute as resolveRouteDefault, systemResolver } from './routes.ts';
import type { DnsResolver, NextHop, Route } from './routes.ts';
import {
  classifyDeliveryError,
  parseReply,
  replyToLine,
  type Classification,
} from './smtp-reply-classifier.ts';

/**
 * Outbound delivery: groups a request's recipients by route, delivers local ones into Maildirs
 * and the others over SMTP through a nodemailer pool per next hop. TLS is always required and
 * verified against our trust anchors (never clear text, never an unverified certificate).
 * Every remote failure becomes a per-recipient outcome; deliver() never throws.
 */

export interface DelivererOptions {
  config: Config;
  /** Trust anchors for next hops, and our client certificate (mutual TLS) if any. PEM. */
  tls: { ca: string; cert?: string; key?: string };
  logger: Logger;
  local: LocalDelivery;
  /** Where mail for a domain goes; default: gateway/routes.ts resolveRoute with `dns`. */
  resolveRoute?: (domain: string) => Promise<Route>;
  /** Resolver for MX lookups and MX host addresses (default: the system resolver). */
  dns?: DnsResolver;
  /** Port of DNS-routed next hops (25; tests point it at a local sink). */
  mxPort?: number;
}

/** At most this many addresses are tried per transaction (Postfix smtp_mx_address_limit is 5). */
const MAX_ADDRESSES_PER_TRANSACTION = 5;
/** A pool nobody used for this long is closed (ms); nodemailer closes idle connections after 4 min. */
const POOL_IDLE_CLOSE = 10 * 60_000;
/** RFC 5321 §4.5.3.1.8: servers must take at least 100 recipients per transaction. */
const MAX_RECIPIENTS_PER_TRANSACTION = 100;

/** A `250` reply's queue id: Postfix, Exim, Haraka/zone-mta, Sendmail, Gmail, or a <message-id>. */
export function parseRemoteId(reply: string): string | undefined {
  const line = replyToLine(reply);
  const patterns = [
    /\bqueued as\s+<?([^\s>;,]+)>?/i, // Postfix: 250 2.0.0 Ok: queued as 4F1B2C3D4E
    /\bid=([^\s;,]+)/i, // Exim: 250 OK id=1tXyZa-000ABC-12
    /\bqueued\s*\(([^)\s]+)\)/i, // Haraka, zone-mta: 250 Message Queued (0123abcd)
    /^250[ -](?:2\.\d\.\d\s+)?([A-Za-z0-9]{8,})\s+Message accepted/i, // Sendmail
    /\bOK\s+\d+\s+(\S+)\s+-\s+gsmtp/i, // Gmail
    /(<[^<>\s]+@[^<>\s]+>)/, // a message id
  ];
  for (const p of patterns) {
    const m = p.exec(line);
    if (m?.[1]) return m[1].replace(/[.,;]+$/, '');
  }
  return undefined;
}

/** The envelope object nodemailer's SMTP connection fills in as RCPT replies arrive. */
interface SessionEnvelope {
  to?: unknown;
  accepted?: unknown;
  rejectedErrors?: unknown;
}

/** Key under which a send passes its capture hook to the `stream` plugin (see poolFor). */
const CAPTURE = 'courrierCaptureEnvelope';

interface PoolTarget {
  hop: NextHop;
  /** The address to connect to (MX hosts are resolved by us); undefined: nodemailer resolves hop.host. */
  address?: string;
}

type Pool = Mail<SMTPPoolSentMessageInfo, SMTPPoolOptions>;

interface Transaction {
  recipients: EnvelopeRecipient[];
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string; notify?: string; orcpt?: string };
}

type AttemptResult =
  | { kind: 'outcomes'; outcomes: DeliveryOutcome[] }
  /** Failed before the transaction started (connect, TLS, greeting, EHLO): another host may do. */
  | { kind: 'hop-failed'; classification: Classification };

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

function notifyKey(r: EnvelopeRecipient): string {
  if (r.notify === undefined) return '';
  return r.notify === 'NEVER' ? 'NEVER' : [...r.notify].sort().join(',');
}

/** RFC 3461 parameters go per message in nodemailer, so one transaction per (NOTIFY, ORCPT). */
function splitTransactions(envelope: Envelope, recipients: EnvelopeRecipient[]): Transaction[] {
  const groups = new Map<string, EnvelopeRecipient[]>();
  const seen = new Set<string>();
  for (const r of recipients) {
    const id = r.address.toLowerCase();
    if (seen.has(id)) continue; // one RCPT per address (nodemailer would merge them silently)
    seen.add(id);
    const key = `${notifyKey(r)}\u0000${r.orcpt ?? ''}`;
    const list = groups.get(key);
    if (list) list.push(r);
    else groups.set(key, [r]);
  }
  const txns: Transaction[] = [];
  for (const list of groups.values()) {
    const first = list[0]!;
    const dsn: NonNullable<Transaction['dsn']> = {};
    if (envelope.ret) dsn.ret = envelope.ret;
    if (envelope.envid) dsn.envid = envelope.envid;
    if (first.notify !== undefined) dsn.notify = first.notify === 'NEVER' ? 'NEVER' : first.notify.join(',');
    if (first.orcpt) dsn.orcpt = first.orcpt;
    for (let i = 0; i < list.length; i += MAX_RECIPIENTS_PER_TRANSACTION) {
      const chunk = list.slice(i, i + MAX_RECIPIENTS_PER_TRANSACTION);
      txns.push(Object.keys(dsn).length > 0 ? { recipients: chunk, dsn } : { recipients: chunk });
    }
  }
  return txns;
}

function outcomeFrom(address: string, c: Classification, remoteMta?: string): DeliveryOutcome {
  const o: DeliveryOutcome = {
    address,
    result: c.result,
    reply: c.reply,
    status: c.status,
    category: c.category,
  };
  if (remoteMta) o.remoteMta = remoteMta;
  return o;
}

function errorOf(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** Ranks failures of several hosts: the one that says most about the problem is reported. */
function significance(c: Classification): number {
  if (c.category === 'tls') return 3;
  if (c.category === 'network' || c.category === 'dns') return 1;
  return 2;
}

export function createDeliverer(opts: DelivererOptions): Deliverer {
  const { config, logger } = opts;
  const dns = opts.dns ?? systemResolver;
  const routeOf =
    opts.resolveRoute ??
    ((domain: string) => resolveRouteDefault(domain, config, dns, { smtpPort: opts.mxPort ?? 25 }));
  // One pool per next hop address; forgotten once idle so a gateway that talks to thousands of
  // domains does not keep thousands of pool objects.
  const pools = new Map<string, { pool: Pool; inFlight: number; lastUsed: number }>();
  let closed = false;

  function sweepPools(now: number): void {
    for (const [key, entry] of pools) {
      if (entry.inFlight === 0 && now - entry.lastUsed > POOL_IDLE_CLOSE) {
        entry.pool.close();
        pools.delete(key);
      }
    }
  }

  function poolFor(target: PoolTarget): { pool: Pool; inFlight: number; lastUsed: number } {
    const { hop } = target;
    const connectTo = target.address ?? hop.host;
    // The name verified in the certificate: the route's tlsServername, else the host name (an
    // MX name even when we connect to its address). An IP host without a name is verified
    // against the certificate's IP addresses.
    const servername = hop.tlsServername ?? (net.isIP(hop.host) === 0 ? hop.host : undefined);
    const key = [hop.tls, connectTo, hop.port, servername ?? '', hop.auth?.user ?? ''].join('|');
    const existing = pools.get(key);
    if (existing) return existing;
    sweepPools(Date.now());

    const tls: Record<string, unknown> = { ca: opts.tls.ca, minVersion: config.tls.minVersion };
    if (opts.tls.cert && opts.tls.key) {
      tls.cert = opts.tls.cert;
      tls.key = opts.tls.key;
    }
    if (servername) tls.servername = servername;
    const pool = nodemailer.createTransport({
      pool: true,
      host: connectTo,
      port: hop.port,
      // `starttls`: STARTTLS is required (no clear-text fallback, RFC 3207 §4 is our policy);
      // `implicit`: TLS from the first byte (RFC 8314).
      secure: hop.tls === 'implicit',
      requireTLS: hop.tls === 'starttls',
      ignoreTLS: false,
      opportunisticTLS: false,
      name: config.hostname,
      tls,
      ...(hop.auth ? { auth: { user: hop.auth.user, pass: hop.auth.pass } } : {}),
      maxConnections: config.delivery.maxConnectionsPerHost,
      // One retry on a fresh connection when a pooled one turns out to be closed before a byte
      // of the message was sent; our own retry schedule does the rest.
      maxRequeues: 1,
      connectionTimeout: config.delivery.connectTimeout,
      greetingTimeout: config.delivery.connectTimeout,
      dnsTimeout: config.delivery.connectTimeout,
      socketTimeout: config.delivery.replyTimeout,
      // We only ever hand it raw streams; nothing in a message may make it read files or URLs.
      disableFileAccess: true,
      disableUrlAccess: true,
    });
    // nodemailer reports which recipients the server accepted only when the whole message
    // succeeds; when DATA fails it drops them (smtp-connection send(): the envelope info is not
    // put on the error). Its SMTP connection fills in the envelope object of the message as
    // RCPT replies arrive, so we keep a reference to it (nodemailer is pinned; the delivery
    // tests with a RCPT 4xx next to a DATA 5xx fail if this stops working).
    pool.use('stream', (mail, done) => {
      const capture = (mail.data as Record<string, unknown>)[CAPTURE];
      if (typeof capture === 'function' && mail.message) capture(mail.message.getEnvelope());
      done();
    });
    const entry = { pool, inFlight: 0, lastUsed: Date.now() };
    pools.set(key, entry);
    return entry;
  }

  async function attempt(
    request: DeliveryRequest,
    txn: Transaction,
    target: PoolTarget,
    log: Logger,
  ): Promise<AttemptResult> {
    const { envelope, messagePath } = request;
    const { hop } = target;
    const entry = poolFor(target);
    const pool = entry.pool;
    entry.inFlight++;
    const ctx = { host: hop.host, port: hop.port, ...(target.address ? { address: target.address } : {}) };
    const captured: { envelope?: SessionEnvelope } = {};
    const addresses = txn.recipients.map((r) => r.address);
    const started = Date.now();
    try {
      const info = await pool.sendMail({
        envelope: { from: envelope.mailFrom, to: addresses, size: envelope.size, use8BitMime: true },
        // Streamed from the spool, never read whole (DeliveryRequest.messagePath).
        raw: createReadStream(messagePath),
        ...(txn.dsn ? { dsn: txn.dsn } : {}),
        [CAPTURE]: (e: SessionEnvelope) => {
          captured.envelope = e;
        },
      } as SendMailOptions);
      const dsnPassedOn = (info.ehlo ?? []).some((l) => /^DSN\b/i.test(l));
      const remoteId = parseRemoteId(info.response) ?? info.serverMessageId;
      const status = parseReply(info.response)?.enhanced ?? '2.0.0';
      const rejected = rejectionsByAddress(info.rejectedErrors, captured.envelope, addresses);
      const outcomes = txn.recipients.map((r, i): DeliveryOutcome => {
        const rej = rejected.get(i);
        if (rej) return outcomeFrom(r.address, classifyDeliveryError(rej, ctx), hop.host);
        const o: DeliveryOutcome = {
          address: r.address,
          result: 'delivered',
          reply: replyToLine(info.response),
          status: status.startsWith('2.') ? status : '2.0.0',
          remoteMta: hop.host,
          dsnPassedOn,
        };
        if (remoteId) o.remoteId = remoteId;
        return o;
      });
      log.info(
        {
          host: hop.host,
          port: hop.port,
          rcpts: addresses.length,
          delivered: outcomes.filter((o) => o.result === 'delivered').length,
          dsnPassedOn,
          ms: Date.now() - started,
        },
        'delivered over SMTP',
      );
      return { kind: 'outcomes', outcomes };
    } catch (caught) {
      const err = errorOf(caught);
      const classification = classifyDeliveryError(err, ctx);
      const session = captured.envelope;
      const code = (err as { code?: unknown }).code;
      // The transaction never started: nothing was said about any recipient, another host may
      // take it (RFC 5321 §5.1). Errors nodemailer raises before sending are not host trouble.
      const beforeTransaction = !session || !Array.isArray(session.accepted);
      if (
        beforeTransaction &&
        code !== 'EENVELOPE' &&
        code !== 'EMESSAGE' &&
        code !== 'ESTREAM' &&
        code !== 'EABORT'
      ) {
        log.warn(
          {
            host: hop.host,
            port: hop.port,
            category: classification.category,
            status: classification.status,
            rule: classification.rule,
          },
          'next hop failed before the transaction',
        );
        return { kind: 'hop-failed', classification };
      }
      // With PIPELINING the RCPTs went out with MAIL FROM; after a refused MAIL FROM their
      // replies (503 need MAIL) say nothing about the recipients: the MAIL reply is the verdict.
      const mailRefused = (err as { command?: unknown }).command === 'MAIL FROM';
      const rejected = mailRefused
        ? new Map<number, unknown>()
        : rejectionsByAddress((err as { rejectedErrors?: unknown }).rejectedErrors, session, addresses);
      const accepted = acceptedIndexes(session, addresses);
      const outcomes = txn.recipients.map((r, i): DeliveryOutcome => {
        const rej = rejected.get(i);
        if (rej) return outcomeFrom(r.address, classifyDeliveryError(rej, ctx), hop.host);
        // The error (MAIL FROM, DATA, lost connection) applies to everyone not refused at RCPT.
        return outcomeFrom(r.address, classification, hop.host);
      });
      log.warn(
        {
          host: hop.host,
          port: hop.port,
          rcpts: addresses.length,
          acceptedAtRcpt: accepted?.size,
          category: classification.category,
          status: classification.status,
          rule: classification.rule,
          ms: Date.now() - started,
        },
        'SMTP transaction failed',
      );
      return { kind: 'outcomes', outcomes };
    } finally {
      entry.inFlight--;
      entry.lastUsed = Date.now();
    }
  }

  /** Normalized address (as nodemailer sent it) → index in our list, for mapping replies back. */
  function indexBySentAddress(
    session: SessionEnvelope | undefined,
    addresses: string[],
  ): Map<string, number> {
    const sent =
      session && Array.isArray(session.to) && session.to.length === addresses.length ? session.to : addresses;
    const map = new Map<string, number>();
    sent.forEach((a, i) => map.set(String(a).toLowerCase(), i));
    return map;
  }

  function rejectionsByAddress(
    errors: unknown,
    session: SessionEnvelope | undefined,
    addresses: string[],
  ): Map<number, unknown> {
    const out = new Map<number, unknown>();
    const list = Array.isArray(errors)
      ? errors
      : Array.isArray(session?.rejectedErrors)
        ? session.rejectedErrors
        : [];
    const index = indexBySentAddress(session, addresses);
    for (const e of list) {
      const rcpt = (e as { recipient?: unknown }).recipient;
      const i = typeof rcpt === 'string' ? index.get(rcpt.toLowerCase()) : undefined;
      if (i !== undefined) out.set(i, e);
    }
    return out;
  }

  function acceptedIndexes(
    session: SessionEnvelope | undefined,
    addresses: string[],
  ): Set<number> | undefined {
    if (!session || !Array.isArray(session.accepted)) return undefined;
    const index = indexBySentAddress(session, addresses);
    const out = new Set<number>();
    for (const a of session.accepted) {
      const i = index.get(String(a).toLowerCase());
      if (i !== undefined) out.add(i);
    }
    return out;
  }

  /** The addresses to try for the hops of a route, in order, at most MAX_ADDRESSES_PER_TRANSACTION. */
  async function targetsFor(hops: NextHop[]): Promise<{ targets: PoolTarget[]; failures: Classification[] }> {
    const targets: PoolTarget[] = [];
    const failures: Classification[] = [];
    for (const hop of hops) {
      if (targets.length >= MAX_ADDRESSES_PER_TRANSACTION) break;
      // Static routes may name hosts only /etc/hosts knows (containers): nodemailer resolves
      // them. MX hosts are resolved with our resolver, so routing uses one view of DNS.
      if (hop.source === 'static' || hop.source === 'literal' || net.isIP(hop.host) !== 0) {
        targets.push({ hop });
        continue;
      }
      const lookup = await resolveAddresses(hop.host, dns);
      if (lookup.kind === 'error') {
        failures.push(
          classifyDeliveryError(
            {
              code: 'EDNS',
              originalCode: (lookup.error as { code?: unknown }).code,
              message: String(lookup.error),
            },
            { host: hop.host },
          ),
        );
        continue;
      }
      if (lookup.addresses.length === 0) {
        failures.push(
          classifyDeliveryError(
            { code: 'EDNS', originalCode: 'ENODATA', message: 'no address' },
            { host: hop.host },
          ),
        );
        continue;
      }
      for (const address of lookup.addresses) {
        if (targets.length >= MAX_ADDRESSES_PER_TRANSACTION) break;
        targets.push({ hop, address });
      }
    }
    return { targets, failures };
  }

  async function deliverSmtp(
    request: DeliveryRequest,
    hops: NextHop[],
    recipients: EnvelopeRecipient[],
    log: Logger,
  ) {
    const { targets, failures } = await targetsFor(hops);
    const outcomes: DeliveryOutcome[] = [];
    // A host that failed before a transaction is not tried again for the next transactions of
    // this request (a dead MX would cost a connect timeout each time).
    const dead = new Map<PoolTarget, Classification>();
    for (const txn of splitTransactions(request.envelope, recipients)) {
      const hopFailures = [...failures, ...dead.values()];
      let done: DeliveryOutcome[] | undefined;
      for (const target of targets) {
        if (dead.has(target)) continue;
        const result = await attempt(request, txn, target, log);
        if (result.kind === 'outcomes') {
          done = result.outcomes;
          break;
        }
        dead.set(target, result.classification);
        hopFailures.push(result.classification);
      }
      if (!done) {
        // Every host failed before the transaction: report the most telling failure.
        let worst: Classification | undefined;
        for (const f of hopFailures) if (!worst || significance(f) >= significance(worst)) worst = f;
        const c =
          worst ??
          classifyDeliveryError(
            { code: 'EDNS', message: 'no next hop address' },
            { host: hops[0]?.host ?? 'next hop' },
          );
        const remoteMta = targets[targets.length - 1]?.hop.host ?? hops[0]?.host;
        done = txn.recipients.map((r) => outcomeFrom(r.address, c, remoteMta));
      }
      outcomes.push(...done);
    }
    return outcomes;
  }

  function routeKey(route: Route): string {
    return route.kind === 'smtp'
      ? JSON.stringify(route.hops.map((h) => [h.host, h.port, h.tls, h.tlsServername, h.auth?.user]))
      : route.kind;
  }

  return {
    async deliver(request) {
      const { envelope, messagePath } = request;
      const log = logger.child({ queueId: envelope.id });
      if (closed) {
        return request.recipients.map((r) =>
          outcomeFrom(r.address, {
            result: 'defer',
            status: '4.3.0',
            category: 'other',
            reply: '451 4.3.0 delivery is shutting down',
            rule: 'closed',
          }),
        );
      }
      // domain → route, then recipients of domains with the same route share transactions.
      const byDomain = new Map<string, EnvelopeRecipient[]>();
      for (const r of request.recipients) {
        const d = domainOf(r.address);
        const list = byDomain.get(d);
        if (list) list.push(r);
        else byDomain.set(d, [r]);
      }
      const groups = new Map<string, { route: Route; recipients: EnvelopeRecipient[] }>();
      for (const [domain, recipients] of byDomain) {
        let route: Route;
        try {
          route = await routeOf(domain);
        } catch (err) {
          log.error({ err: errorOf(err), domain }, 'route lookup failed');
          route = {
            kind: 'unroutable',
            result: 'defer',
            status: '4.4.3',
            category: 'dns',
            reply: `451 4.4.3 route lookup for ${domain} failed`,
          };
        }
        const key = route.kind === 'unroutable' ? `unroutable:${domain}` : routeKey(route);
        const g = groups.get(key);
        if (g) g.recipients.push(...recipients);
        else groups.set(key, { route, recipients: [...recipients] });
      }

      const results = await Promise.all(
        [...groups.values()].map(async ({ route, recipients }): Promise<DeliveryOutcome[]> => {
          try {
            if (route.kind === 'local') {
              const out: DeliveryOutcome[] = [];
              for (const r of recipients) out.push(await opts.local.deliver(envelope, messagePath, r));
              log.info(
                { rcpts: recipients.length, delivered: out.filter((o) => o.result === 'delivered').length },
                'local delivery',
              );
              return out;
            }
            if (route.kind === 'unroutable') {
              log.warn({ domain: domainOf(recipients[0]!.address), status: route.status }, 'no route');
              return recipients.map((r) => ({
                address: r.address,
                result: route.result,
                reply: route.reply,
                status: route.status,
                category: route.category,
              }));
            }
            return await deliverSmtp(request, route.hops, recipients, log);
          } catch (err) {
            // A bug or a local failure, not a remote verdict: keep the message and retry.
            log.error({ err: errorOf(err) }, 'delivery failed unexpectedly');
            return recipients.map((r) =>
              outcomeFrom(r.address, {
                result: 'defer',
                status: '4.3.0',
                category: 'other',
                reply: '451 4.3.0 local error during delivery',
                rule: 'internal',
              }),
            );
          }
        }),
      );
      // One outcome per requested recipient, in request order (duplicates share one).
      const byAddress = new Map<string, DeliveryOutcome>();
      for (const o of results.flat()) byAddress.set(o.address.toLowerCase(), o);
      return request.recipients.map((r): DeliveryOutcome => {
        const o = byAddress.get(r.address.toLowerCase());
        if (o) return { ...o, address: r.address };
        // Cannot happen (every group returns one outcome per recipient); never lose one.
        return {
          address: r.address,
          result: 'defer',
          reply: '451 4.3.0 no outcome',
          status: '4.3.0',
          category: 'other',
        };
      });
    },

    async close() {
      closed = true;
      for (const entry of pools.values()) entry.pool.close();
      pools.clear();
    },
  };
}
