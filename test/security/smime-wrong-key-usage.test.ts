import { beforeAll, describe, expect, it } from 'vitest';
import { issueCertificate, type KeyAndCert } from '../../crypto/dev-pki.ts';
import { encrypt, sign, verify } from '../../crypto/smime.ts';
import { makePki, opensslIssue, opensslSign, signingKey, type SmimePki } from '../smime-fixtures.ts';

/** Attack: use a certificate issued for something else (TLS, encryption only) to sign mail. */

let pki: SmimePki;
let tlsServer: KeyAndCert;
let encryptOnly: KeyAndCert;
beforeAll(() => {
  pki = makePki();
  tlsServer = issueCertificate(pki.ca, {
    commonName: 'mx.example.org',
    dnsNames: ['mx.example.org'],
    usage: 'server',
  });
  encryptOnly = opensslIssue(pki.ca, {
    commonName: 'Encrypt Only',
    ext: 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyEncipherment\nextendedKeyUsage=emailProtection',
  });
});

const content = 'Content-Type: text/plain\r\n\r\nOrdonnance\r\n';

describe('wrong key usage', () => {
  it('a TLS server certificate (EKU serverAuth) is not accepted as a mail signer', async () => {
    const signed = opensslSign(tlsServer, content);
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.valid).toBe(false);
    expect(r.signers[0]).toMatchObject({ signatureValid: true, trust: 'wrong-key-usage' });
    expect(r.problems.join('\n')).toMatch(/emailProtection/);
    await expect(
      verify({ message: signed, trustAnchors: [pki.ca.certPem], expectSigned: true }),
    ).rejects.toMatchObject({
      code: 'wrong-key-usage',
    });
  });

  it('a certificate whose key usage lacks digitalSignature/nonRepudiation is not a signer', async () => {
    const signed = opensslSign(encryptOnly, content);
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.signers[0]).toMatchObject({ trust: 'wrong-key-usage' });
    expect(r.problems.join('\n')).toMatch(/digitalSignature/);
  });

  it('the CA certificate itself is not a mail signer (no emailProtection, keyCertSign only)', async () => {
    const signed = opensslSign(pki.ca, content);
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.valid).toBe(false);
    expect(r.signers[0]!.trust).toBe('wrong-key-usage');
  });

  it('we refuse to sign or encrypt with such certificates ourselves', async () => {
    await expect(sign({ message: content, signingKeys: signingKey(tlsServer) })).rejects.toMatchObject({
      code: 'wrong-key-usage',
    });
    await expect(sign({ message: content, signingKeys: signingKey(encryptOnly) })).rejects.toMatchObject({
      code: 'wrong-key-usage',
    });
    await expect(encrypt({ message: content, encryptionKeys: tlsServer.certPem })).rejects.toMatchObject({
      code: 'wrong-key-usage',
    });
  });
});
