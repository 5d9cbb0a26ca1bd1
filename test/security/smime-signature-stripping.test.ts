import { beforeAll, describe, expect, it } from 'vitest';
import { splitMultipart } from '../../crypto/smime-mime.ts';
import { sign, verify } from '../../crypto/smime.ts';
import { makePki, sampleMessage, signingKey, type SmimePki } from '../smime-fixtures.ts';

/** Attack: remove the signature and pass the content off as an ordinary (unsigned) message. */

let pki: SmimePki;
beforeAll(() => {
  pki = makePki();
});

async function stripped(): Promise<string> {
  const signed = Buffer.from(
    await sign({ message: sampleMessage, signingKeys: signingKey(pki.alice) }),
  ).toString('latin1');
  const boundary = /boundary="([^"]+)"/.exec(signed)![1]!;
  const split = splitMultipart(signed.slice(signed.indexOf('\r\n\r\n') + 4), boundary)!;
  const outer = signed.slice(0, signed.indexOf('MIME-Version'));
  return outer + 'MIME-Version: 1.0\r\n' + split.parts[0]!;
}

describe('signature stripping', () => {
  it('without expectSigned: reported as not signed, never as valid', async () => {
    const r = await verify({ message: await stripped(), trustAnchors: [pki.ca.certPem] });
    expect(r).toMatchObject({ signed: false, valid: false, signers: [] });
    expect(r.problems).toEqual(['the message is not signed']);
  });

  it('with expectSigned: throws not-signed', async () => {
    await expect(
      verify({ message: await stripped(), trustAnchors: [pki.ca.certPem], expectSigned: true }),
    ).rejects.toMatchObject({
      code: 'not-signed',
    });
  });

  it('multipart/signed relabelled as multipart/mixed is not signed either', async () => {
    const signed = Buffer.from(
      await sign({ message: sampleMessage, signingKeys: signingKey(pki.alice) }),
    ).toString('latin1');
    const relabelled = signed.replace('multipart/signed', 'multipart/mixed');
    await expect(
      verify({ message: relabelled, trustAnchors: [pki.ca.certPem], expectSigned: true }),
    ).rejects.toMatchObject({
      code: 'not-signed',
    });
  });

  it('a SignedData with its signerInfos emptied is signed but not valid', async () => {
    const opaque = Buffer.from(
      await sign({
        message: 'Content-Type: text/plain\r\n\r\nx\r\n',
        signingKeys: signingKey(pki.alice),
        detached: false,
      }),
    ).toString('latin1');
    const der = Buffer.from(opaque.slice(opaque.indexOf('\r\n\r\n') + 4), 'base64');
    // The last element of SignedData is the SET OF SignerInfo: cut it to an empty SET and fix lengths
    // by re-encoding through our own writer.
    const { readAsn1, encodingOf, der: w } = await import('../../crypto/asn1-der.ts');
    const root = readAsn1(der);
    const sd = root.children[1]!.children[0]!;
    const kept = sd.children.slice(0, -1).map((c) => encodingOf(c));
    const forged = w.sequence(
      w.raw(encodingOf(root.children[0]!)),
      w.explicit(0, w.sequence(...kept, w.set())),
    );
    const r = await verify({ message: forged, trustAnchors: [pki.ca.certPem] });
    expect(r).toMatchObject({ signed: true, valid: false });
    await expect(
      verify({ message: forged, trustAnchors: [pki.ca.certPem], expectSigned: true }),
    ).rejects.toMatchObject({
      code: 'invalid-signature',
    });
  });
});
