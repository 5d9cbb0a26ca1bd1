import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SEARCH_MAX, type DirectoryStore } from '../directory/directory-store.ts';
import { MAILBOX_TYPES, type MailboxType } from '../directory/mailbox-store.ts';
import type { DirectoryMailbox, MailboxKey, SearchQuery } from '../directory/model.ts';
import { toNationalId } from '../directory/normalise.ts';
import type { Logger } from './log.ts';

/**
 * The directory's JSON search endpoint (node:http, read-only):
 *
 *   GET /directory/search?name=&profession=&city=&structure=&type=&limit=
 *   GET /directory/mailboxes/<address>
 *   GET /directory/professionals/<national id>
 *   GET /directory/teams/<id or address>
 *
 * Every request carries `Authorization: Bearer <token>`. Errors are `{ "error": { "code",
 * "message" } }` with 400, 401, 404, 405 or 500; a 500 says nothing about the internals (the log
 * has the error). Search never returns liste rouge (hidden) mailboxes; nor does the professional
 * lookup, which would otherwise turn a national id into a hidden address. A hidden mailbox still
 * resolves by its own address, as over SMTP.
 */

export interface DirectoryHttpOptions {
  store: DirectoryStore;
  host: string;
  /** 0 picks a free port. */
  port: number;
  token: string;
  logger: Logger;
}

export interface DirectoryHttp {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

const SEARCH_PARAMS = new Set(['name', 'profession', 'city', 'structure', 'type', 'limit']);
/** Characters; longer criteria are a mistake or an attack, not a search. */
const MAX_PARAM_LENGTH = 200;

class HttpProblem extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Starts the endpoint; rejects when it cannot listen (port in use...). */
export async function startDirectoryHttp(options: DirectoryHttpOptions): Promise<DirectoryHttp> {
  const { store, logger } = options;
  // Compare digests: timingSafeEqual wants equal lengths, and the length must not leak either.
  const expected = createHash('sha256').update(options.token).digest();
  const authorised = (req: IncomingMessage): boolean => {
    const m = /^Bearer +(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (m === null) return false;
    return timingSafeEqual(createHash('sha256').update(m[1]!).digest(), expected);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      // Addresses and ids in the URL are professional data: log the route kind, not the URL.
      logger.error(
        { err, method: req.method, route: routeKind(req.url ?? '') },
        'directory HTTP request failed',
      );
      if (!res.headersSent) send(res, 500, { error: { code: 'internal', message: 'internal error' } });
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    try {
      if (!authorised(req)) {
        res.setHeader('WWW-Authenticate', 'Bearer realm="courrier-directory"');
        throw new HttpProblem(401, 'unauthorized', 'missing or wrong bearer token');
      }
      const url = new URL(req.url ?? '/', 'http://directory.invalid');
      const route = match(url.pathname);
      if (route === undefined) throw new HttpProblem(404, 'not-found', `no such resource: ${url.pathname}`);
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        throw new HttpProblem(405, 'method-not-allowed', `${req.method} is not allowed here (GET only)`);
      }
      send(res, 200, await answer(store, route, url.searchParams), req.method === 'HEAD');
    } catch (err) {
      if (!(err instanceof HttpProblem)) throw err;
      send(res, err.status, { error: { code: err.code, message: err.message } }, req.method === 'HEAD');
    }
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    host: address.address,
    port: address.port,
    close() {
      closing ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

type Route =
  | { kind: 'search' }
  | { kind: 'mailbox'; address: string }
  | { kind: 'professional'; id: string }
  | { kind: 'team'; id: string };

function match(pathname: string): Route | undefined {
  const parts = pathname.split('/');
  if (parts[0] !== '' || parts[1] !== 'directory') return undefined;
  let value: string;
  try {
    value = decodeURIComponent(parts[3] ?? '');
  } catch {
    throw new HttpProblem(400, 'bad-request', 'malformed percent-encoding in the path');
  }
  if (parts.length === 3 && parts[2] === 'search') return { kind: 'search' };
  if (parts.length !== 4 || value === '') return undefined;
  if (parts[2] === 'mailboxes') return { kind: 'mailbox', address: value };
  if (parts[2] === 'professionals') return { kind: 'professional', id: value };
  if (parts[2] === 'teams') return { kind: 'team', id: value };
  return undefined;
}

function routeKind(url: string): string {
  const m = /^\/directory\/(search|mailboxes|professionals|teams)\b/.exec(url);
  return m?.[1] ?? 'other';
}

async function answer(store: DirectoryStore, route: Route, params: URLSearchParams): Promise<unknown> {
  switch (route.kind) {
    case 'search': {
      const results = await store.search(searchQuery(params));
      return { count: results.length, results: results.map(present) };
    }
    case 'mailbox': {
      const m = await store.resolveAddress(route.address);
      if (m === undefined) throw new HttpProblem(404, 'not-found', `no mailbox ${route.address}`);
      const keys = await store.keysFor(m.address);
      return { ...present(m), keys: keys.map(presentKey) };
    }
    case 'professional': {
      const id = toNationalId(route.id);
      if (id === undefined) {
        throw new HttpProblem(
          400,
          'bad-request',
          `not a national id: "${route.id}" (8 + RPPS, 0 + ADELI, or an RPPS)`,
        );
      }
      const found = await store.findByNationalId(id);
      if (found === undefined) throw new HttpProblem(404, 'not-found', `no professional ${id}`);
      return {
        professional: found.professional,
        mailboxes: found.mailboxes.filter((m) => !m.hidden).map(present),
      };
    }
    case 'team': {
      const team = await store.getTeam(route.id);
      const expansion = await store.expandTeam(route.id, profession(params));
      if (team === undefined || expansion === undefined)
        throw new HttpProblem(404, 'not-found', `no team ${route.id}`);
      // A professional member may be reached through a liste rouge mailbox: the gateway delivers to
      // it, but this endpoint never tells its address (as for search and professionals/<id>).
      const recipients: typeof expansion.recipients = [];
      let hiddenRecipients = 0;
      for (const r of expansion.recipients) {
        if ((await store.resolveAddress(r.address))?.hidden === true) hiddenRecipients++;
        else recipients.push(r);
      }
      const hiddenAddresses = new Set(
        expansion.recipients.filter((r) => !recipients.includes(r)).map((r) => r.address),
      );
      const members = team.members.filter(
        (m) => m.kind !== 'mailbox' || !hiddenAddresses.has(m.address.toLowerCase()),
      );
      return { ...team, members, recipients, hiddenRecipients, unreachable: expansion.unreachable };
    }
  }
}

function profession(params: URLSearchParams): { profession?: string } {
  for (const key of params.keys()) {
    if (key !== 'profession')
      throw new HttpProblem(400, 'bad-request', `unknown parameter "${key}" (profession)`);
  }
  const p = params.get('profession');
  return p === null || p === '' ? {} : { profession: p };
}

/** The query string as a SearchQuery; anything unexpected is a 400 naming the parameter. */
function searchQuery(params: URLSearchParams): SearchQuery {
  const q: SearchQuery = {};
  const seen = new Set<string>();
  for (const [key, raw] of params) {
    if (!SEARCH_PARAMS.has(key)) {
      throw new HttpProblem(
        400,
        'bad-request',
        `unknown parameter "${key}" (${[...SEARCH_PARAMS].join(', ')})`,
      );
    }
    if (seen.has(key)) throw new HttpProblem(400, 'bad-request', `parameter "${key}" given twice`);
    seen.add(key);
    const value = raw.trim();
    if (value === '') continue;
    if (value.length > MAX_PARAM_LENGTH) {
      throw new HttpProblem(
        400,
        'bad-request',
        `parameter "${key}" is longer than ${MAX_PARAM_LENGTH} characters`,
      );
    }
    if (key === 'limit') {
      if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > SEARCH_MAX) {
        throw new HttpProblem(400, 'bad-request', `limit must be a whole number from 1 to ${SEARCH_MAX}`);
      }
      q.limit = Number(value);
    } else if (key === 'type') {
      const t = value.toUpperCase() as MailboxType;
      if (!MAILBOX_TYPES.includes(t)) {
        throw new HttpProblem(400, 'bad-request', `type must be one of ${MAILBOX_TYPES.join(', ')}`);
      }
      q.type = t;
    } else q[key as 'name' | 'profession' | 'city' | 'structure'] = value;
  }
  if (Object.keys(q).every((k) => k === 'limit')) {
    throw new HttpProblem(400, 'bad-request', 'give at least one of name, profession, city, structure, type');
  }
  // Liste rouge: never in search answers, whatever the query says.
  q.includeHidden = false;
  return q;
}

function present(m: DirectoryMailbox): Record<string, unknown> {
  const { updatedAt, retiredAt, ...rest } = m;
  return {
    ...rest,
    updatedAt: new Date(updatedAt).toISOString(),
    ...(retiredAt === undefined ? {} : { retiredAt: new Date(retiredAt).toISOString() }),
  };
}

function presentKey(k: MailboxKey): Record<string, unknown> {
  return {
    format: k.format,
    fingerprint: k.fingerprint,
    preferred: k.preferred,
    ...(k.notBefore === undefined ? {} : { notBefore: new Date(k.notBefore).toISOString() }),
    ...(k.notAfter === undefined ? {} : { notAfter: new Date(k.notAfter).toISOString() }),
    // The certificate or public key itself, for a client that encrypts: it is public material.
    data: Buffer.from(k.data).toString('base64'),
  };
}

function send(res: ServerResponse, status: number, body: unknown, headOnly = false): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
  });
  res.end(headOnly ? undefined : text);
}
