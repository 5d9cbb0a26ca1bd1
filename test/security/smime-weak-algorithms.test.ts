import { beforeAll, describe, expect, it } from 'vitest';
import { encrypt, sign, verify } from '../../crypto/smime.ts';
import { makePki, opensslIssue, opensslSign, signingKey, type SmimePki } from '../smime-fixtures.ts';
import type { KeyAndCert } from '../../crypto/dev-pki.ts';

/** Attack: rely on broken algorithms (SHA-1 collisions, factorable RSA-1024). */

let pki: SmimePki;
let rsa1024: KeyAndCert;
let sha1Cert: KeyAndCert;
beforeAll(() => {
  pki = makePki();
  rsa1024 = opensslIssue(pki.ca, { commonName: 'Small Key', bits: 1024 });
  sha1Cert = opensslIssue(pki.ca, { commonName: 'SHA1 Signed', md: 'sha1' });
});

const content = 'Content-Type: text/plain\r\n\r\nCompte rendu\r\n';

describe('weak algorithms', () => {
  it('a SHA-1 message signature (made by openssl) is refused', async () => {
    const signed = opensslSign(pki.alice, content, ['-md', 'sha1']);
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.valid).toBe(false);
    expect(r.signers[0]).toMatchObject({ trust: 'weak-algorithm', algorithms: { digest: 'sha1' } });
    await expect(
      verify({ message: signed, trustAnchors: [pki.ca.certPem], expectSigned: true }),
    ).rejects.toMatchObject({
      code: 'weak-algorithm',
    });
  });

  it('a signer key of RSA-1024 is refused, and we will not sign or encrypt with one', async () => {
    const signed = opensslSign(rsa1024, content);
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.signers[0]!.trust).toBe('weak-algorithm');
    expect(r.problems.join('\n')).toMatch(/1024 bits/);
    await expect(sign({ message: content, signingKeys: signingKey(rsa1024) })).rejects.toMatchObject({
      code: 'weak-algorithm',
    });
    await expect(encrypt({ message: content, encryptionKeys: rsa1024.certPem })).rejects.toMatchObject({
      code: 'weak-algorithm',
    });
  });

  it('a signer certificate signed with sha1WithRSAEncryption is refused', async () => {
    const signed = await sign({ message: content, signingKeys: signingKey(sha1Cert) });
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.signers[0]).toMatchObject({ signatureValid: true, trust: 'weak-algorithm' });
    expect(r.problems.join('\n')).toMatch(/sha1WithRSAEncryption/);
  });
});
