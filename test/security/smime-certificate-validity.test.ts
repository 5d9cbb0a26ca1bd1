import { beforeAll, describe, expect, it } from 'vitest';
import { createCrl } from '../../crypto/cert-crl.ts';
import { parseCertificate } from '../../crypto/cert-path.ts';
import { issueCertificate, type KeyAndCert } from '../../crypto/dev-pki.ts';
import { encrypt, sign, verify } from '../../crypto/smime.ts';
import { crlRevoking, makePki, openssl, signingKey, tempDir, type SmimePki } from '../smime-fixtures.ts';

/** Attack: sign with a certificate that is expired, not yet valid, or revoked. */

const DAY = 86_400_000;
let pki: SmimePki;
let expired: KeyAndCert;
let future: KeyAndCert;
const content = 'Content-Type: text/plain\r\n\r\nRésultats\r\n';
beforeAll(() => {
  pki = makePki();
  expired = issueCertificate(pki.ca, {
    commonName: 'Expired',
    usage: 'email',
    validFrom: new Date(Date.now() - 10 * DAY),
    validDays: 1,
  });
  future = issueCertificate(pki.ca, {
    commonName: 'Future',
    usage: 'email',
    validFrom: new Date(Date.now() + DAY),
    validDays: 30,
  });
});

describe('certificate validity', () => {
  it('expired signer: trust "expired", valid at the time it was used', async () => {
    const signingTime = new Date(Date.now() - 9.5 * DAY);
    const signed = await sign({ message: content, signingKeys: signingKey(expired), date: signingTime });
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.signers[0]).toMatchObject({ signatureValid: true, trust: 'expired' });
    expect(r.valid).toBe(false);
    await expect(
      verify({ message: signed, trustAnchors: [pki.ca.certPem], expectSigned: true }),
    ).rejects.toMatchObject({ code: 'key-expired' });
    // `now` lets an archive check a message as of its reception: then the signer was in its
    // validity period (the test CA itself was only created today, hence not-yet-valid then).
    const then = await verify({ message: signed, trustAnchors: [pki.ca.certPem], now: signingTime });
    expect(then.problems.join('\n')).not.toMatch(/"CN=Expired" expired/);
    expect(then.problems.join('\n')).toMatch(/Courrier Test S\/MIME CA" is not valid before/);
    // And we do not sign (or encrypt) with it today.
    await expect(sign({ message: content, signingKeys: signingKey(expired) })).rejects.toMatchObject({
      code: 'key-expired',
    });
    await expect(encrypt({ message: content, encryptionKeys: expired.certPem })).rejects.toMatchObject({
      code: 'key-expired',
    });
  });

  it('not-yet-valid signer', async () => {
    const signed = await sign({
      message: content,
      signingKeys: signingKey(future),
      date: new Date(Date.now() + 2 * DAY),
    });
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.signers[0]).toMatchObject({ signatureValid: true, trust: 'not-yet-valid' });
  });

  it('revoked signer (CRL written by us)', async () => {
    const signed = await sign({ message: content, signingKeys: signingKey(pki.alice) });
    const crl = crlRevoking(pki, [pki.alice]);
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem], crls: [crl] });
    expect(r.signers[0]).toMatchObject({ signatureValid: true, trust: 'revoked' });
    await expect(
      verify({ message: signed, trustAnchors: [pki.ca.certPem], crls: [crl], expectSigned: true }),
    ).rejects.toMatchObject({
      code: 'key-revoked',
    });
    // Bob is not on the list.
    const bob = await sign({ message: content, signingKeys: signingKey(pki.bob) });
    expect(
      (
        await verify({
          message: bob,
          trustAnchors: [pki.ca.certPem],
          crls: [crl],
          requireRevocationCheck: true,
        })
      ).valid,
    ).toBe(true);
  });

  it('our CRL verifies with openssl crl -CAfile, and its PEM form revokes as well', async () => {
    const t = tempDir('courrier-smime-crl-');
    try {
      const crlFile = t.file('ours.crl', crlRevoking(pki, [pki.alice]));
      const r = openssl([
        'crl',
        '-inform',
        'DER',
        '-in',
        crlFile,
        '-noout',
        '-text',
        '-CAfile',
        t.file('ca.pem', pki.ca.certPem),
      ]);
      expect(r.ok).toBe(true);
      expect(r.stderr + r.stdout.toString()).toMatch(/verify OK/);
      expect(r.stdout.toString()).toMatch(/Revoked Certificates:/);
      // A PEM CRL goes through parseCrl too.
      const pem = openssl(['crl', '-inform', 'DER', '-in', crlFile, '-outform', 'PEM']).stdout.toString();
      const signed = await sign({ message: content, signingKeys: signingKey(pki.alice) });
      expect(
        (await verify({ message: signed, trustAnchors: [pki.ca.certPem], crls: [pem] })).signers[0]!.trust,
      ).toBe('revoked');
    } finally {
      t.dispose();
    }
  });

  it('a CRL signed by someone else is ignored; missing or stale CRLs are revocation-unknown when required', async () => {
    const signed = await sign({ message: content, signingKeys: signingKey(pki.alice) });
    const other = makePki();
    const forged = createCrl({
      ca: other.ca,
      caInfo: parseCertificate(pki.ca.certPem),
      revoked: [{ serial: parseCertificate(pki.alice.certPem).serial, date: new Date(Date.now() - DAY) }],
    });
    const r1 = await verify({ message: signed, trustAnchors: [pki.ca.certPem], crls: [forged] });
    expect(r1.valid).toBe(true);
    const r2 = await verify({
      message: signed,
      trustAnchors: [pki.ca.certPem],
      requireRevocationCheck: true,
    });
    expect(r2.signers[0]!.trust).toBe('revocation-unknown');
    const stale = crlRevoking(pki, [], {
      thisUpdate: new Date(Date.now() - 10 * DAY),
      nextUpdate: new Date(Date.now() - 3 * DAY),
    });
    const r3 = await verify({
      message: signed,
      trustAnchors: [pki.ca.certPem],
      crls: [stale],
      requireRevocationCheck: true,
    });
    expect(r3.signers[0]!.trust).toBe('revocation-unknown');
    expect(r3.problems.join('\n')).toMatch(/nextUpdate/);
  });
});
