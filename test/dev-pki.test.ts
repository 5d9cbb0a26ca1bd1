import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, generateDevPki, issueCertificate, type KeyAndCert } from '../crypto/dev-pki.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'courrier-dev-pki-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function writePem(name: string, pem: string): string {
  const file = join(dir, name);
  writeFileSync(file, pem);
  return file;
}

/** `openssl verify`: exit status and combined output. */
function opensslVerify(
  caPem: string,
  certPem: string,
  extra: string[] = [],
): { ok: boolean; output: string } {
  const caFile = writePem(`ca-${Math.random().toString(36).slice(2)}.pem`, caPem);
  const certFile = writePem(`cert-${Math.random().toString(36).slice(2)}.pem`, certPem);
  const r = spawnSync('openssl', ['verify', '-x509_strict', ...extra, '-CAfile', caFile, certFile], {
    encoding: 'utf8',
  });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

function opensslText(certPem: string): string {
  const file = writePem(`text-${Math.random().toString(36).slice(2)}.pem`, certPem);
  return execFileSync('openssl', ['x509', '-in', file, '-noout', '-text', '-nameopt', 'utf8'], {
    encoding: 'utf8',
  });
}

/** Starts a TLS server on 127.0.0.1:0, connects a client, resolves with both views of the handshake. */
async function handshake(
  serverOpts: tls.TlsOptions,
  clientOpts: tls.ConnectionOptions,
): Promise<{ clientAuthorized: boolean; serverSawClientCert: boolean; serverAuthorized: boolean }> {
  const server = tls.createServer(serverOpts);
  const serverSide = new Promise<{ authorized: boolean; peerCn: unknown }>((resolve) => {
    server.on('secureConnection', (socket) => {
      const peer = socket.getPeerCertificate();
      resolve({ authorized: socket.authorized, peerCn: peer.subject?.CN });
      socket.end('hello');
    });
  });
  // A handshake the server rejects surfaces as a client error; keep it from crashing the server.
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  try {
    const clientAuthorized = await new Promise<boolean>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, ...clientOpts }, () => {
        resolve(socket.authorized);
        socket.on('data', () => socket.end());
      });
      socket.on('error', reject);
    });
    const seen = await serverSide;
    return {
      clientAuthorized,
      serverSawClientCert: seen.peerCn !== undefined,
      serverAuthorized: seen.authorized,
    };
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('generateDevPki', () => {
  let pki: { ca: KeyAndCert; server: KeyAndCert };
  beforeAll(() => {
    pki = generateDevPki({ hostname: 'mx.courrier.test', localDomains: ['cabinet.test', 'hopital.test'] });
  });

  it('issues a server certificate that openssl verifies against the CA', () => {
    const r = opensslVerify(pki.ca.certPem, pki.server.certPem, ['-purpose', 'sslserver']);
    expect(r.output).toContain(': OK');
    expect(r.ok).toBe(true);
    expect(opensslVerify(pki.ca.certPem, pki.server.certPem, ['-purpose', 'sslclient']).ok).toBe(true);
  });

  it('names the host, localhost, the local domains and the loopback addresses', () => {
    const text = opensslText(pki.server.certPem);
    expect(text).toContain(
      'DNS:mx.courrier.test, DNS:localhost, DNS:cabinet.test, DNS:hopital.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
    expect(text).toContain('TLS Web Server Authentication, TLS Web Client Authentication');
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(text).toContain('Signature Algorithm: sha256WithRSAEncryption');
    expect(text).toContain('Public-Key: (2048 bit)');
    expect(text).toContain('Subject: O=Courrier, CN=mx.courrier.test');
  });

  it('makes a CA with critical basicConstraints, keyCertSign and cRLSign', () => {
    const text = opensslText(pki.ca.certPem);
    expect(text).toContain('Subject: O=Courrier, CN=Courrier Development CA');
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    const ski = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(text)?.[1];
    expect(ski).toMatch(/^([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
    // The leaf's authorityKeyIdentifier points at the CA's subjectKeyIdentifier.
    expect(opensslText(pki.server.certPem)).toMatch(
      new RegExp(`Authority Key Identifier:\\s+(keyid:)?${ski}`),
    );
  });

  it('serves TLS to a client that trusts only the CA', async () => {
    const r = await handshake(
      { key: pki.server.keyPem, cert: pki.server.certPem },
      { ca: pki.ca.certPem, servername: 'localhost', rejectUnauthorized: true },
    );
    expect(r.clientAuthorized).toBe(true);
  });

  it('does mutual TLS with the same certificate on both sides', async () => {
    const r = await handshake(
      {
        key: pki.server.keyPem,
        cert: pki.server.certPem,
        ca: pki.ca.certPem,
        requestCert: true,
        rejectUnauthorized: true,
      },
      {
        ca: pki.ca.certPem,
        key: pki.server.keyPem,
        cert: pki.server.certPem,
        servername: 'mx.courrier.test',
        rejectUnauthorized: true,
      },
    );
    expect(r.clientAuthorized).toBe(true);
    expect(r.serverSawClientCert).toBe(true);
    expect(r.serverAuthorized).toBe(true);
  });

  it('is rejected by a client that trusts another CA', async () => {
    const other = generateDevPki({ hostname: 'other.test', localDomains: [] });
    await expect(
      handshake(
        { key: pki.server.keyPem, cert: pki.server.certPem },
        { ca: other.ca.certPem, servername: 'localhost', rejectUnauthorized: true },
      ),
    ).rejects.toThrow(/self-signed|unable to verify|certificate/i);
  });

  it('leaves the routing wildcard out of the names', () => {
    const { server } = generateDevPki({ hostname: 'gw.test', localDomains: ['*', 'a.test', 'A.test'] });
    const x509 = new X509Certificate(server.certPem);
    expect(x509.subjectAltName).toBe(
      'DNS:gw.test, DNS:localhost, DNS:a.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
  });
});

describe('issueCertificate', () => {
  const ca = createCa({ commonName: 'Test CA', organization: 'Hôpital Saint-Éloi', validDays: 30 });

  it('issues a certificate that has expired and fails openssl verify', () => {
    const expired = issueCertificate(ca, {
      commonName: 'old.test',
      dnsNames: ['old.test'],
      usage: 'server',
      validFrom: new Date(Date.now() - 10 * 86_400_000),
      validDays: 2,
    });
    const r = opensslVerify(ca.certPem, expired.certPem);
    expect(r.ok).toBe(false);
    expect(r.output).toContain('certificate has expired');
  });

  it('issues an e-mail certificate with nonRepudiation and emailProtection', () => {
    const cert = issueCertificate(ca, {
      commonName: 'Dr Élise Martin',
      organization: 'Cabinet Martin',
      organizationalUnit: 'Cardiologie',
      country: 'FR',
      emailAddresses: ['elise.martin@cabinet.test'],
      usage: 'email',
    });
    expect(opensslVerify(ca.certPem, cert.certPem, ['-purpose', 'smimesign']).ok).toBe(true);
    const text = opensslText(cert.certPem);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Non Repudiation, Key Encipherment/);
    expect(text).toContain('E-mail Protection');
    expect(text).toContain('email:elise.martin@cabinet.test');
    expect(text).toContain('Subject: C=FR, O=Cabinet Martin, OU=Cardiologie, CN=Dr Élise Martin');
    expect(text).toContain('Issuer: O=Hôpital Saint-Éloi, CN=Test CA');
  });

  it('issues a client-only certificate that is not valid for servers', () => {
    const cert = issueCertificate(ca, { commonName: 'client', usage: 'client' });
    expect(opensslVerify(ca.certPem, cert.certPem, ['-purpose', 'sslclient']).ok).toBe(true);
    expect(opensslVerify(ca.certPem, cert.certPem, ['-purpose', 'sslserver']).ok).toBe(false);
  });

  it('gives random 16-byte positive serial numbers', () => {
    const serials = [1, 2, 3].map(
      () =>
        new X509Certificate(issueCertificate(ca, { commonName: 's', usage: 'client' }).certPem).serialNumber,
    );
    expect(new Set(serials).size).toBe(3);
    for (const s of serials) {
      expect(s).toMatch(/^[0-9A-F]{32}$/);
      expect(Number.parseInt(s.slice(0, 1), 16)).toBeLessThan(8);
    }
  });

  it('honours validFrom and validDays', () => {
    const validFrom = new Date('2030-01-01T00:00:00Z');
    const cert = new X509Certificate(
      issueCertificate(ca, { commonName: 'f', usage: 'client', validFrom, validDays: 10 }).certPem,
    );
    expect(new Date(cert.validFrom).toISOString()).toBe('2030-01-01T00:00:00.000Z');
    expect(new Date(cert.validTo).toISOString()).toBe('2030-01-11T00:00:00.000Z');
  });

  it('issues 3072-bit RSA keys on request', () => {
    const cert = issueCertificate(ca, {
      commonName: 'big',
      usage: 'server',
      dnsNames: ['big.test'],
      keyType: 'rsa3072',
    });
    expect(opensslText(cert.certPem)).toContain('Public-Key: (3072 bit)');
    expect(opensslVerify(ca.certPem, cert.certPem).ok).toBe(true);
  });

  it('refuses a non-CA issuer, a mismatched CA key and malformed names', () => {
    const leaf = issueCertificate(ca, { commonName: 'leaf', usage: 'client' });
    expect(() => issueCertificate(leaf, { commonName: 'x', usage: 'client' })).toThrow(/not a CA/);
    const otherCa = createCa({ commonName: 'Other' });
    expect(() =>
      issueCertificate({ keyPem: otherCa.keyPem, certPem: ca.certPem }, { commonName: 'x', usage: 'client' }),
    ).toThrow(/does not match/);
    expect(() => issueCertificate(ca, { commonName: 'x', usage: 'server', dnsNames: ['bad name'] })).toThrow(
      /not a DNS name/,
    );
    expect(() =>
      issueCertificate(ca, { commonName: 'x', usage: 'server', ipAddresses: ['300.1.1.1'] }),
    ).toThrow(/not an IP/);
    expect(() => issueCertificate(ca, { commonName: 'x', usage: 'client', country: 'France' })).toThrow(
      /two-letter/,
    );
  });
});

describe('EC P-256', () => {
  it('builds an ECDSA CA and leaf that openssl verifies and TLS accepts', async () => {
    const ca = createCa({ commonName: 'EC CA', keyType: 'ec-p256' });
    const server = issueCertificate(ca, {
      commonName: 'ec.test',
      dnsNames: ['ec.test'],
      usage: 'server+client',
      keyType: 'ec-p256',
    });
    expect(opensslVerify(ca.certPem, server.certPem, ['-purpose', 'sslserver']).ok).toBe(true);
    const text = opensslText(server.certPem);
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text).toContain('NIST CURVE: P-256');
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    const r = await handshake(
      { key: server.keyPem, cert: server.certPem },
      { ca: ca.certPem, servername: 'ec.test', rejectUnauthorized: true },
    );
    expect(r.clientAuthorized).toBe(true);
  });

  it('mixes key types: an EC CA signs an RSA leaf and an RSA CA signs an EC leaf', () => {
    const ecCa = createCa({ commonName: 'EC CA', keyType: 'ec-p256' });
    const rsaCa = createCa({ commonName: 'RSA CA' });
    const rsaLeaf = issueCertificate(ecCa, { commonName: 'r', usage: 'email', emailAddresses: ['r@a.test'] });
    const ecLeaf = issueCertificate(rsaCa, {
      commonName: 'e',
      usage: 'email',
      emailAddresses: ['e@a.test'],
      keyType: 'ec-p256',
    });
    expect(opensslVerify(ecCa.certPem, rsaLeaf.certPem).ok).toBe(true);
    expect(opensslVerify(rsaCa.certPem, ecLeaf.certPem).ok).toBe(true);
    expect(opensslText(ecLeaf.certPem)).toMatch(/Digital Signature, Non Repudiation, Key Agreement/);
    expect(opensslVerify(rsaCa.certPem, rsaLeaf.certPem).ok).toBe(false);
  });
});
