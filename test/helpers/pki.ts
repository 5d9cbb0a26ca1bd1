import { createCa, issueCertificate, type KeyAndCert } from '../../crypto/dev-pki.ts';

/**
 * A per-run test PKI made with crypto/dev-pki.ts: one trusted CA, a server certificate for the
 * loopback names, a client certificate for mutual TLS, and a second, UNTRUSTED CA with its own
 * server certificate (for "certificate from an unknown CA" tests). EC P-256 keys: key generation
 * is the slow part, and TLS does not care.
 *
 *   const pki = testPki();                      // same instance for the whole test file
 *   new SMTPServer({ key: pki.server.keyPem, cert: pki.server.certPem, ... });
 *   tls: { ca: pki.ca.certPem }                 // the trust anchors a client gets
 *   pki.issueServer(['mx1.example.test'])       // a server cert for other names, same CA
 *
 * Certificates are fresh each run (nothing checked in), valid from 5 minutes ago for 397 days.
 */
export interface TestPki {
  /** The CA the code under test trusts. */
  ca: KeyAndCert;
  /** Server certificate from `ca` for localhost, courrier.localhost, 127.0.0.1 and ::1. */
  server: KeyAndCert;
  /** Client certificate (clientAuth) from `ca`, CN `client.courrier.test`. */
  client: KeyAndCert;
  /** A CA nobody trusts. */
  unknownCa: KeyAndCert;
  /** Server certificate for the same loopback names, but issued by `unknownCa`. */
  untrustedServer: KeyAndCert;
  /** Issues another server certificate from `ca` (loopback names are always included). */
  issueServer(dnsNames: string[], opts?: { validFrom?: Date; validDays?: number }): KeyAndCert;
  /** Issues another client certificate from `ca`. */
  issueClient(commonName: string): KeyAndCert;
}

export const LOOPBACK_NAMES = ['localhost', 'courrier.localhost'];
export const LOOPBACK_IPS = ['127.0.0.1', '::1'];

let cached: TestPki | undefined;

/** The test PKI of this run (created on first use, then shared within the test file). */
export function testPki(): TestPki {
  cached ??= createTestPki();
  return cached;
}

/** A new, independent test PKI (when a test needs its own CA). */
export function createTestPki(): TestPki {
  const ca = createCa({ commonName: 'Courrier Test CA', organization: 'Courrier tests', keyType: 'ec-p256' });
  const unknownCa = createCa({
    commonName: 'Unknown Test CA',
    organization: 'Somebody else',
    keyType: 'ec-p256',
  });
  const issueServerFrom = (
    issuer: KeyAndCert,
    dnsNames: string[],
    opts: { validFrom?: Date; validDays?: number } = {},
  ): KeyAndCert =>
    issueCertificate(issuer, {
      commonName: dnsNames[0] ?? 'localhost',
      dnsNames: [...new Set([...dnsNames, ...LOOPBACK_NAMES])],
      ipAddresses: LOOPBACK_IPS,
      usage: 'server',
      keyType: 'ec-p256',
      ...opts,
    });
  return {
    ca,
    server: issueServerFrom(ca, ['localhost']),
    client: issueCertificate(ca, { commonName: 'client.courrier.test', usage: 'client', keyType: 'ec-p256' }),
    unknownCa,
    untrustedServer: issueServerFrom(unknownCa, ['localhost']),
    issueServer: (dnsNames, opts) => issueServerFrom(ca, dnsNames, opts),
    issueClient: (commonName) => issueCertificate(ca, { commonName, usage: 'client', keyType: 'ec-p256' }),
  };
}
