import { describe, expect, it } from 'vitest';
import { configSchema } from '../config/schema.ts';
import { resolveAddresses, resolveRoute } from '../gateway/routes.ts';
import { useDnsServer } from './helpers/dns-server.ts';

const dns = useDnsServer({
  'example.test': {
    MX: [
      { preference: 20, exchange: 'mx2.example.test' },
      { preference: 10, exchange: 'MX1.example.test.' },
      { preference: 30, exchange: 'mx1.example.test' },
    ],
  },
  'twins.test': {
    MX: [
      { preference: 10, exchange: 'a.twins.test' },
      { preference: 10, exchange: 'b.twins.test' },
      { preference: 5, exchange: 'first.twins.test' },
    ],
  },
  'implicit.test': { A: ['192.0.2.7'] },
  'implicit6.test': { AAAA: ['2001:db8::7'] },
  'nothing.test': {},
  'nullmx.test': { MX: [{ preference: 0, exchange: '.' }] },
  'servfail.test': { rcode: 'SERVFAIL' },
  'refused.test': { rcode: 'REFUSED' },
  'slow.test': { drop: true },
  'host.test': { A: ['192.0.2.1', '192.0.2.2'], AAAA: ['2001:db8::1'] },
});

const config = configSchema.parse({
  localDomains: ['courrier.test', 'cabinet.test'],
  delivery: {
    routes: {
      'partner.test': {
        host: 'relay.partner.test',
        port: 2525,
        tlsServername: 'mx.partner.test',
        auth: { user: 'u', pass: 'p' },
      },
      'example.test': { host: '10.0.0.1', tls: 'implicit', port: 465 },
    },
  },
});
const withDefault = configSchema.parse({
  localDomains: ['courrier.test'],
  delivery: { routes: { '*': { host: 'smarthost.test' }, 'direct.test': { host: 'direct-relay.test' } } },
});
const dnsOnly = configSchema.parse({ localDomains: ['courrier.test'] });

describe('resolveRoute', () => {
  it('routes local domains to the mailboxes (case-insensitive)', async () => {
    expect(await resolveRoute('Cabinet.TEST', config, dns.resolver())).toEqual({ kind: 'local' });
    expect(dns.queries).not.toContain('MX cabinet.test');
  });

  it('uses the static route of the domain, with its TLS name and credentials, before DNS', async () => {
    expect(await resolveRoute('partner.test', config, dns.resolver())).toEqual({
      kind: 'smtp',
      hops: [
        {
          host: 'relay.partner.test',
          port: 2525,
          tls: 'starttls',
          tlsServername: 'mx.partner.test',
          auth: { user: 'u', pass: 'p' },
          source: 'static',
        },
      ],
    });
    expect(await resolveRoute('example.test', config, dns.resolver())).toEqual({
      kind: 'smtp',
      hops: [{ host: '10.0.0.1', port: 465, tls: 'implicit', source: 'static' }],
    });
  });

  it('falls back to the `*` route, but an exact route wins', async () => {
    const r = await resolveRoute('anywhere.test', withDefault, dns.resolver());
    expect(r).toEqual({
      kind: 'smtp',
      hops: [{ host: 'smarthost.test', port: 25, tls: 'starttls', source: 'static' }],
    });
    const d = await resolveRoute('direct.test', withDefault, dns.resolver());
    expect(d.kind === 'smtp' && d.hops[0]!.host).toBe('direct-relay.test');
  });

  it('orders MX hosts by preference, lower-cases them, drops the trailing dot and duplicates', async () => {
    const r = await resolveRoute('example.test', dnsOnly, dns.resolver());
    expect(r).toEqual({
      kind: 'smtp',
      hops: [
        { host: 'mx1.example.test', port: 25, tls: 'starttls', source: 'mx', preference: 10 },
        { host: 'mx2.example.test', port: 25, tls: 'starttls', source: 'mx', preference: 20 },
      ],
    });
  });

  it('keeps preference order with ties in any order (RFC 5321 §5.1), and honours the port override', async () => {
    const r = await resolveRoute('twins.test', dnsOnly, dns.resolver(), { smtpPort: 2526 });
    if (r.kind !== 'smtp') throw new Error(`expected smtp, got ${r.kind}`);
    expect(r.hops[0]).toMatchObject({ host: 'first.twins.test', port: 2526 });
    expect(new Set(r.hops.slice(1).map((h) => h.host))).toEqual(new Set(['a.twins.test', 'b.twins.test']));
  });

  it('uses the domain itself when it has no MX but an address (implicit MX)', async () => {
    for (const d of ['implicit.test', 'implicit6.test']) {
      expect(await resolveRoute(d, dnsOnly, dns.resolver())).toEqual({
        kind: 'smtp',
        hops: [{ host: d, port: 25, tls: 'starttls', source: 'implicit-mx', preference: 0 }],
      });
    }
  });

  it('rejects permanently: null MX 5.1.10, NXDOMAIN 5.1.2, no MX and no address 5.4.4', async () => {
    expect(await resolveRoute('nullmx.test', dnsOnly, dns.resolver())).toMatchObject({
      kind: 'unroutable',
      result: 'reject',
      status: '5.1.10',
      category: 'dns',
    });
    expect(await resolveRoute('does-not-exist.test', dnsOnly, dns.resolver())).toMatchObject({
      kind: 'unroutable',
      result: 'reject',
      status: '5.1.2',
    });
    expect(await resolveRoute('nothing.test', dnsOnly, dns.resolver())).toMatchObject({
      kind: 'unroutable',
      result: 'reject',
      status: '5.4.4',
    });
  });

  it('defers 4.4.3 on SERVFAIL, REFUSED and timeouts', async () => {
    for (const d of ['servfail.test', 'refused.test', 'slow.test']) {
      const r = await resolveRoute(d, dnsOnly, dns.resolver({ timeoutMs: 200 }));
      expect(r).toMatchObject({ kind: 'unroutable', result: 'defer', status: '4.4.3', category: 'dns' });
    }
    const r = await resolveRoute('servfail.test', dnsOnly, dns.resolver());
    expect(r.kind === 'unroutable' && r.reply).toBe(
      '451 4.4.3 DNS MX lookup for servfail.test failed: ESERVFAIL',
    );
  });

  it('routes an address literal to that address', async () => {
    expect(await resolveRoute('[192.0.2.9]', dnsOnly, dns.resolver())).toEqual({
      kind: 'smtp',
      hops: [{ host: '192.0.2.9', port: 25, tls: 'starttls', source: 'literal' }],
    });
    expect(await resolveRoute('[999.1.1.1]', dnsOnly, dns.resolver())).toMatchObject({
      result: 'reject',
      status: '5.1.2',
    });
  });
});

describe('resolveAddresses', () => {
  it('returns IPv6 then IPv4 addresses', async () => {
    expect(await resolveAddresses('host.test', dns.resolver())).toEqual({
      kind: 'ok',
      addresses: ['2001:db8::1', '192.0.2.1', '192.0.2.2'],
    });
  });
  it('returns an empty list for a name without addresses and an error for a failing one', async () => {
    expect(await resolveAddresses('nothing.test', dns.resolver())).toEqual({ kind: 'ok', addresses: [] });
    expect(await resolveAddresses('servfail.test', dns.resolver())).toMatchObject({
      kind: 'error',
      notFound: false,
    });
    expect(await resolveAddresses('gone.test', dns.resolver())).toMatchObject({
      kind: 'error',
      notFound: true,
    });
  });
  it('passes IP addresses through', async () => {
    expect(await resolveAddresses('192.0.2.3', dns.resolver())).toEqual({
      kind: 'ok',
      addresses: ['192.0.2.3'],
    });
  });
});
