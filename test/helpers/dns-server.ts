import dgram from 'node:dgram';
import { promises as dnsPromises } from 'node:dns';
import net from 'node:net';
import { afterAll, beforeAll } from 'vitest';

/**
 * A tiny authoritative DNS server on 127.0.0.1:<random port> (UDP), so routing code runs against
 * real DNS answers (real Node error codes: ENOTFOUND, ENODATA, ESERVFAIL, ETIMEOUT) instead of a
 * mock. Answers MX, A and AAAA from a static zone; every other name is NXDOMAIN.
 *
 *   const dns = await startDnsServer({
 *     'example.test': { MX: [{ preference: 10, exchange: 'mx1.example.test' }] },
 *     'mx1.example.test': { A: ['127.0.0.1'] },
 *     'broken.test': { rcode: 'SERVFAIL' },
 *     'slow.test': { drop: true },          // never answers: the resolver times out
 *     'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
 *   });
 *   const resolver = dns.resolver();        // a real dns.promises.Resolver pointed at it
 *   ...
 *   await dns.close();
 *
 * In a test file, `const dns = useDnsServer(zone)` at the top of a file or `describe` block does
 * the start and the close in beforeAll/afterAll.
 */
export interface DnsRecordSet {
  MX?: Array<{ preference: number; exchange: string }>;
  A?: string[];
  AAAA?: string[];
  /** Answer every query for this name with this error code. */
  rcode?: 'SERVFAIL' | 'NXDOMAIN' | 'REFUSED';
  /** Never answer queries for this name. */
  drop?: boolean;
}

export type DnsZone = Record<string, DnsRecordSet>;

export interface DnsServer {
  host: string;
  port: number;
  /** The zone; change it between tests if needed (names are matched lower-cased, no trailing dot). */
  zone: DnsZone;
  /** Queries received, as `TYPE name`. */
  queries: string[];
  /** A fresh real resolver that asks only this server (short timeout, one try). */
  resolver(opts?: { timeoutMs?: number }): dnsPromises.Resolver;
  close(): Promise<void>;
}

const TYPE = { A: 1, MX: 15, AAAA: 28 } as const;
const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

function encodeName(name: string): Buffer {
  const labels = name
    .replace(/\.$/, '')
    .split('.')
    .filter((l) => l.length > 0);
  const parts: Buffer[] = [];
  for (const label of labels) {
    const b = Buffer.from(label, 'ascii');
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function ipv6Bytes(address: string): Buffer {
  if (net.isIPv6(address) === false) throw new Error(`not an IPv6 address: ${address}`);
  const [head, tail] = address.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function record(type: number, rdata: Buffer): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(0xc00c, 0); // name: pointer to the question name
  head.writeUInt16BE(type, 2);
  head.writeUInt16BE(1, 4); // class IN
  head.writeUInt32BE(60, 6); // TTL
  head.writeUInt16BE(rdata.length, 10);
  return Buffer.concat([head, rdata]);
}

export async function startDnsServer(zone: DnsZone): Promise<DnsServer> {
  const socket = dgram.createSocket('udp4');
  const queries: string[] = [];
  const server: DnsServer = {
    host: '127.0.0.1',
    port: 0,
    zone,
    queries,
    resolver(opts = {}) {
      const r = new dnsPromises.Resolver({ timeout: opts.timeoutMs ?? 300, tries: 1 });
      r.setServers([`127.0.0.1:${server.port}`]);
      return r;
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };

  socket.on('message', (msg, rinfo) => {
    if (msg.length < 12) return;
    // Question: QNAME labels, then QTYPE and QCLASS.
    let offset = 12;
    const labels: string[] = [];
    while (offset < msg.length) {
      const len = msg[offset]!;
      if (len === 0) break;
      labels.push(msg.subarray(offset + 1, offset + 1 + len).toString('ascii'));
      offset += 1 + len;
    }
    offset += 1;
    const qtype = msg.readUInt16BE(offset);
    const questionEnd = offset + 4;
    const name = labels.join('.').toLowerCase();
    const typeName = Object.entries(TYPE).find(([, v]) => v === qtype)?.[0] ?? String(qtype);
    queries.push(`${typeName} ${name}`);

    const entry = Object.hasOwn(server.zone, name) ? server.zone[name] : undefined;
    if (entry?.drop) return;
    let rcode: number = RCODE.NOERROR;
    const answers: Buffer[] = [];
    if (!entry) rcode = RCODE.NXDOMAIN;
    else if (entry.rcode) rcode = RCODE[entry.rcode];
    else if (qtype === TYPE.MX) {
      for (const mx of entry.MX ?? []) {
        const pref = Buffer.alloc(2);
        pref.writeUInt16BE(mx.preference, 0);
        answers.push(record(TYPE.MX, Buffer.concat([pref, encodeName(mx.exchange)])));
      }
    } else if (qtype === TYPE.A) {
      for (const a of entry.A ?? []) answers.push(record(TYPE.A, Buffer.from(a.split('.').map(Number))));
    } else if (qtype === TYPE.AAAA) {
      for (const a of entry.AAAA ?? []) answers.push(record(TYPE.AAAA, ipv6Bytes(a)));
    }

    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2); // id
    const rd = msg[2]! & 0x01;
    header[2] = 0x80 | 0x04 | rd; // QR, AA, RD copied
    header[3] = 0x80 | rcode; // RA, RCODE
    header.writeUInt16BE(1, 4); // QDCOUNT
    header.writeUInt16BE(answers.length, 6); // ANCOUNT
    const reply = Buffer.concat([header, msg.subarray(12, questionEnd), ...answers]);
    socket.send(reply, rinfo.port, rinfo.address);
  });

  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  server.port = socket.address().port;
  return server;
}

/**
 * A DNS server with `zone` for the tests of the enclosing file or `describe` block: started in
 * its beforeAll, closed in its afterAll. The returned object stands for the server and may be used
 * like it from then on (passed around, asked for a resolver, its queries read).
 */
export function useDnsServer(zone: DnsZone): DnsServer {
  let started: DnsServer | undefined;
  const server = (): DnsServer => {
    if (started === undefined)
      throw new Error('useDnsServer: the DNS server is used before its beforeAll hook started it');
    return started;
  };
  beforeAll(async () => {
    started = await startDnsServer(zone);
  });
  afterAll(() => started?.close());
  return {
    get host() {
      return server().host;
    },
    get port() {
      return server().port;
    },
    get zone() {
      return server().zone;
    },
    set zone(zone: DnsZone) {
      server().zone = zone;
    },
    get queries() {
      return server().queries;
    },
    resolver: (opts) => server().resolver(opts),
    close: () => server().close(),
  };
}
