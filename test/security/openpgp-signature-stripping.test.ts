/**
 * Attack class: signature stripping. With `expectSigned`, content that arrives without a
 * PGP/MIME signature (signature removed, envelope rewritten, encrypted-only, inline PGP instead of
 * PGP/MIME) is `not-signed`, never silently accepted as plain content.
 */
import type { PrivateKey, PublicKey } from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { CryptoError } from '../../crypto/types.ts';
import { generatePgpKey, readPgpPrivateKey, readPgpPublicKey } from '../../crypto/openpgp-keys.ts';
import { pgpDecrypt, pgpEncrypt, pgpSign, pgpVerify } from '../../crypto/openpgp-mime.ts';

const PART = 'Content-Type: text/plain\r\n\r\nOrdonnance: amoxicilline 1 g x 3/j.\r\n';
let priv: PrivateKey;
let pub: PublicKey;

async function code(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CryptoError);
  return (err as CryptoError).code;
}

beforeAll(async () => {
  const k = await generatePgpKey({ userIDs: [{ email: 'dr@example.org' }] });
  priv = await readPgpPrivateKey(k.privateKey);
  pub = await readPgpPublicKey(k.publicKey);
});

describe('signature stripping', () => {
  it('plain content where a signature is expected', async () => {
    expect(await code(pgpVerify(PART, { verificationKeys: pub, expectSigned: true }))).toBe('not-signed');
  });

  it('multipart/signed rewritten to multipart/mixed (signature kept as an attachment)', async () => {
    const signed = Buffer.from(await pgpSign(PART, { signingKeys: priv })).toString('latin1');
    const rewritten = signed.replace('multipart/signed', 'multipart/mixed');
    expect(await code(pgpVerify(rewritten, { verificationKeys: pub, expectSigned: true }))).toBe(
      'not-signed',
    );
  });

  it('multipart/signed whose signature part was swapped for text is malformed', async () => {
    const signed = Buffer.from(await pgpSign(PART, { signingKeys: priv })).toString('latin1');
    const swapped = signed.replace(
      /Content-Type: application\/pgp-signature[\s\S]*?-----END PGP SIGNATURE-----/,
      'Content-Type: text/plain\r\n\r\nno signature',
    );
    expect(await code(pgpVerify(swapped, { verificationKeys: pub, expectSigned: true }))).toBe('malformed');
  });

  it('encrypted but not signed, where a signature is expected', async () => {
    const enc = await pgpEncrypt(PART, { encryptionKeys: pub });
    expect(
      await code(pgpDecrypt(enc, { decryptionKeys: priv, verificationKeys: pub, expectSigned: true })),
    ).toBe('not-signed');
    // without expectSigned: reported, not thrown
    const res = await pgpDecrypt(enc, { decryptionKeys: priv, verificationKeys: pub });
    expect(res.verification).toMatchObject({ signed: false, valid: false });
  });

  it('inline PGP signature instead of PGP/MIME is reported, and not-signed when one is expected', async () => {
    const inline =
      'Content-Type: text/plain\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nx\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nAA==\r\n-----END PGP SIGNATURE-----\r\n';
    const res = await pgpVerify(inline, { verificationKeys: pub });
    expect(res.inlinePgp).toBe('signed');
    expect(await code(pgpVerify(inline, { verificationKeys: pub, expectSigned: true }))).toBe('not-signed');
  });
});
