import { beforeAll, describe, expect, it } from 'vitest';
import { createCa, issueCertificate } from '../../crypto/dev-pki.ts';
import { sign, verify } from '../../crypto/smime.ts';
import { makePki, signingKey, type SmimePki } from '../smime-fixtures.ts';

/** Attack: a signer certificate from a CA we do not trust, including one that copies our CA's name. */

let pki: SmimePki;
beforeAll(() => {
  pki = makePki();
});

const content = 'Content-Type: text/plain\r\n\r\nLettre\r\n';

describe('chain to an unknown root', () => {
  it('a certificate from another CA is untrusted', async () => {
    const rogueCa = createCa({ commonName: 'Rogue CA' });
    const mallory = issueCertificate(rogueCa, {
      commonName: 'Alice',
      emailAddresses: ['alice@example.org'],
      usage: 'email',
    });
    const signed = await sign({
      message: content,
      signingKeys: { ...signingKey(mallory), chain: [rogueCa.certPem] },
    });
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.signers[0]).toMatchObject({ signatureValid: true, trust: 'untrusted' });
    expect(r.problems.join('\n')).toMatch(/no chain/);
    await expect(
      verify({ message: signed, trustAnchors: [pki.ca.certPem], expectSigned: true }),
    ).rejects.toMatchObject({ code: 'untrusted' });
  });

  it('a CA that copies the name of our trusted CA does not pass (signatures are checked, not names)', async () => {
    const impostorCa = createCa({ commonName: 'Courrier Test S/MIME CA', organization: 'Courrier' });
    const mallory = issueCertificate(impostorCa, {
      commonName: 'Alice',
      emailAddresses: ['alice@example.org'],
      usage: 'email',
    });
    const signed = await sign({
      message: content,
      signingKeys: { ...signingKey(mallory), chain: [impostorCa.certPem] },
    });
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.valid).toBe(false);
    expect(r.signers[0]!.trust).toBe('untrusted');
  });

  it('no trust anchors at all means nothing is trusted', async () => {
    const signed = await sign({ message: content, signingKeys: signingKey(pki.alice) });
    const r = await verify({ message: signed, trustAnchors: [] });
    expect(r.signers[0]!.trust).toBe('untrusted');
  });
});
