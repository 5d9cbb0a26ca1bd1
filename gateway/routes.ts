import { promises as dnsPromises } from 'node:dns';
import net from 'node:net';
import type { Config } from '../config/schema.ts';

/** The DNS queries routing needs; `new dns.promises.Resolver()` has them (tests point one at a local server). */
export interface DnsResolver {
  resolveMx(hostname: string): Promise<Array<{ exchange: string; priority: number }>>;
  resolve4(hostname: string): Promise<string[]>;
  resolve6(hostname: string): Promise<string[]>;
}

/** One SMTP server to try, in order. */
export interface NextHop {
  /** Name of the server: MX exchange, static route host, or an address literal. */
  host: string;
  port: number;
  /** `starttls` (required and verified; never falls back to clear text) or `implicit`. */
  tls: 'starttls' | 'implicit';
  /** Name to verify in the server certificate when it is not `host`. */
  tlsServername?: string;
  auth?: { user: string; pass: string };
  /** Where the hop came from: a static route, an MX record, the RFC 5321 §5.1 implicit MX, a literal. */
  source: 'static' | 'mx' | 'implicit-mx' | 'literal';
  /** MX preference (lower first). */
  preference?: number;
}

export type Route =
  | { kind: 'local' }
  | { kind: 'smtp'; hops: NextHop[] }
  /** No next hop: DNS says the domain takes no mail (reject) or DNS is failing now (defer). */
  | { kind: 'unroutable'; result: 'defer' | 'reject'; status: string; category: 'dns'; reply: string };

export interface RouteOptions {
  /** Port for DNS-routed next hops: 25 (RFC 5321 §4.5.4); tests point it at a local sink. */
  smtpPort?: number;
}

/** The system resolver (node:dns/promises), used when none is injected. */
export const systemResolver: DnsResolver = dnsPromises;

function dnsCode(err: unknown): string {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}

function unroutable(result: 'defer' | 'reject', status: string, text: string): Route {
  const basic = result === 'defer' ? 451 : 550;
  return { kind: 'unroutable', result, status, category: 'dns', reply: `${basic} ${status} ${text}` };
}

/** A DNS failure that says nothing about the domain itself: try again later (RFC 3463 X.4.3). */
function dnsTrouble(domain: string, query: string, err: unknown): Route {
  return unroutable('defer', '4.4.3', `DNS ${query} lookup for ${domain} failed: ${dnsCode(err)}`);
}

/** Random order among equal preferences (RFC 5321 §5.1), lowest preference first. */
function orderMx(
  records: Array<{ exchange: string; priority: number }>,
): Array<{ exchange: string; priority: number }> {
  const shuffled = records.map((r) => ({ r, k: Math.random() }));
  shuffled.sort((a, b) => a.r.priority - b.r.priority || a.k - b.k);
  return shuffled.map((s) => s.r);
}

function normalizeName(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

/**
 * Where mail for `domain` goes: a local mailbox (`localDomains`), a static route
 * (`delivery.routes[domain]`, else `delivery.routes['*']`), or the domain's MX hosts.
 *
 * DNS (RFC 5321 §5.1): MX hosts sorted by preference; no MX → the domain itself (implicit MX)
 * if it has an address; RFC 7505 null MX → reject 5.1.10; NXDOMAIN → reject 5.1.2; SERVFAIL,
 * timeouts and refused queries → defer 4.4.3. Never throws for DNS failures.
 */
export async function resolveRoute(
  domain: string,
  config: Pick<Config, 'localDomains' | 'delivery'>,
  dns: DnsResolver = systemResolver,
  opts: RouteOptions = {},
): Promise<Route> {
  const d = normalizeName(domain);
  if (config.localDomains.some((local) => normalizeName(local) === d)) return { kind: 'local' };

  const routes = config.delivery.routes;
  const staticRoute = Object.hasOwn(routes, d)
    ? routes[d]
    : Object.hasOwn(routes, '*')
      ? routes['*']
      : undefined;
  if (staticRoute) {
    const hop: NextHop = {
      host: staticRoute.host,
      port: staticRoute.port,
      tls: staticRoute.tls,
      source: 'static',
    };
    if (staticRoute.tlsServername) hop.tlsServername = staticRoute.tlsServername;
    if (staticRoute.auth) hop.auth = { user: staticRoute.auth.user, pass: staticRoute.auth.pass };
    return { kind: 'smtp', hops: [hop] };
  }

  const port = opts.smtpPort ?? 25;
  // RFC 5321 §4.1.3 address literal: `user@[192.0.2.1]` goes to that address.
  const literal = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(d);
  if (literal) {
    const ip = literal[1]!;
    if (net.isIP(ip) === 0) return unroutable('reject', '5.1.2', `bad address literal [${ip}]`);
    return { kind: 'smtp', hops: [{ host: ip, port, tls: 'starttls', source: 'literal' }] };
  }

  let records: Array<{ exchange: string; priority: number }>;
  try {
    records = await dns.resolveMx(d);
  } catch (err) {
    const code = dnsCode(err);
    if (code === 'ENOTFOUND') return unroutable('reject', '5.1.2', `domain ${d} does not exist (NXDOMAIN)`);
    if (code !== 'ENODATA') return dnsTrouble(d, 'MX', err);
    records = [];
  }

  // RFC 7505 §3: a null MX (exchange ".", which resolvers hand back as "") means no mail at all.
  if (records.some((r) => normalizeName(r.exchange) === '')) {
    return unroutable('reject', '5.1.10', `domain ${d} accepts no mail (null MX, RFC 7505)`);
  }

  if (records.length > 0) {
    const seen = new Set<string>();
    const hops: NextHop[] = [];
    for (const r of orderMx(records)) {
      const host = normalizeName(r.exchange);
      if (seen.has(host)) continue;
      seen.add(host);
      hops.push({ host, port, tls: 'starttls', source: 'mx', preference: r.priority });
    }
    return { kind: 'smtp', hops };
  }

  // RFC 5321 §5.1: no MX records → implicit MX of preference 0 pointing at the domain, provided
  // it has an address. A domain with neither cannot be routed (RFC 3463 X.4.4).
  const addresses = await resolveAddresses(d, dns);
  if (addresses.kind === 'error') return dnsTrouble(d, addresses.query, addresses.error);
  if (addresses.addresses.length === 0) {
    return unroutable('reject', '5.4.4', `domain ${d} has no MX and no address record`);
  }
  return { kind: 'smtp', hops: [{ host: d, port, tls: 'starttls', source: 'implicit-mx', preference: 0 }] };
}

export type AddressLookup =
  | { kind: 'ok'; addresses: string[] }
  | { kind: 'error'; query: 'A' | 'AAAA'; error: unknown; notFound: boolean };

/**
 * A and AAAA records of a host (IPv6 first, as connections prefer it); an empty list when the
 * name exists without addresses. An error only when neither query gave an answer.
 */
export async function resolveAddresses(
  host: string,
  dns: DnsResolver = systemResolver,
): Promise<AddressLookup> {
  if (net.isIP(host) !== 0) return { kind: 'ok', addresses: [host] };
  const [v6, v4] = await Promise.allSettled([dns.resolve6(host), dns.resolve4(host)]);
  const ok = (r: PromiseSettledResult<string[]>): string[] | undefined =>
    r.status === 'fulfilled' ? r.value : dnsCode(r.reason) === 'ENODATA' ? [] : undefined;
  const six = ok(v6);
  const four = ok(v4);
  if (six !== undefined && four !== undefined) return { kind: 'ok', addresses: [...six, ...four] };
  // One family answering is enough to connect.
  if ((six?.length ?? 0) > 0 || (four?.length ?? 0) > 0)
    return { kind: 'ok', addresses: [...(six ?? []), ...(four ?? [])] };
  const failed = v4.status === 'rejected' && four === undefined ? v4 : v6;
  const error = failed.status === 'rejected' ? failed.reason : new Error('no address');
  return {
    kind: 'error',
    query: failed === v4 ? 'A' : 'AAAA',
    error,
    notFound: dnsCode(error) === 'ENOTFOUND',
  };
}
