import { beforeAll, describe, expect, it } from 'vitest';
import { sign, verify } from '../../crypto/smime.ts';
import { makePki, sampleMessage, signingKey, type SmimePki } from '../smime-fixtures.ts';

/** Attack: change the signed content in transit and hope the signature still passes. */

let pki: SmimePki;
beforeAll(() => {
  pki = makePki();
});

describe('tampered body', () => {
  it('a changed byte in a multipart/signed body makes the signature invalid', async () => {
    const message = 'Content-Type: text/plain\r\n\r\nDose: 5 mg twice a day\r\n';
    const signed = Buffer.from(await sign({ message, signingKeys: signingKey(pki.alice) })).toString(
      'latin1',
    );
    const tampered = signed.replace('5 mg', '50 mg');
    expect(tampered).not.toBe(signed);
    const r = await verify({ message: tampered, trustAnchors: [pki.ca.certPem] });
    expect(r.signed).toBe(true);
    expect(r.valid).toBe(false);
    expect(r.signers[0]).toMatchObject({ signatureValid: false, trust: 'invalid' });
    expect(r.problems.join('\n')).toMatch(/message digest differs/);
    await expect(
      verify({ message: tampered, trustAnchors: [pki.ca.certPem], expectSigned: true }),
    ).rejects.toMatchObject({
      code: 'invalid-signature',
    });
  });

  it('an added header inside the signed part is detected', async () => {
    const signed = Buffer.from(
      await sign({ message: sampleMessage, signingKeys: signingKey(pki.alice) }),
    ).toString('latin1');
    const tampered = signed.replace(
      'Content-Type: text/plain; charset=utf-8\r\n',
      'Content-Type: text/plain; charset=utf-8\r\nX-Injected: 1\r\n',
    );
    const r = await verify({ message: tampered, trustAnchors: [pki.ca.certPem] });
    expect(r.valid).toBe(false);
  });

  it('a changed byte inside opaque SignedData content is detected', async () => {
    const signed = Buffer.from(
      await sign({
        message: 'Content-Type: text/plain\r\n\r\nAAAA\r\n',
        signingKeys: signingKey(pki.alice),
        detached: false,
      }),
    ).toString('latin1');
    const body = signed.slice(signed.indexOf('\r\n\r\n') + 4);
    const der = Buffer.from(body, 'base64');
    const at = der.indexOf('AAAA');
    expect(at).toBeGreaterThan(0);
    der[at] = 0x42;
    const r = await verify({ message: der, trustAnchors: [pki.ca.certPem] });
    expect(r.valid).toBe(false);
    expect(r.signers[0]!.signatureValid).toBe(false);
  });

  it('a signature from another message does not validate this one (signature transplant)', async () => {
    const a = Buffer.from(
      await sign({ message: 'Content-Type: text/plain\r\n\r\nA\r\n', signingKeys: signingKey(pki.alice) }),
    ).toString('latin1');
    const b = Buffer.from(
      await sign({ message: 'Content-Type: text/plain\r\n\r\nB\r\n', signingKeys: signingKey(pki.alice) }),
    ).toString('latin1');
    const sigB = b.slice(b.indexOf('Content-Type: application/pkcs7-signature'));
    const transplanted =
      a.slice(0, a.indexOf('Content-Type: application/pkcs7-signature')) +
      sigB.replace(/--[^\r\n]+--\r\n$/, a.slice(a.lastIndexOf('\r\n--') + 2));
    const r = await verify({ message: transplanted, trustAnchors: [pki.ca.certPem] });
    expect(r.valid).toBe(false);
  });
});
