/**
 * Attack class: signature stripping. With `expectSigned`, content that arrives without a
 * PGP/MIME signature (signature removed, envelope rewritten, encrypted-only, inline PGP instead of
 * PGP/MIME) is `not-signed`, never silently accepted as plain content.
 */
import type { PrivateKey, PublicKey } from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { pgpDecrypt, pgpEncrypt, pgpVerify } from '../../crypto/openpgp-mime.ts';
import { cryptoErrorCode, pgpPair, signedText } from '../helpers/openpgp-fixture.ts';

const PART = 'Content-Type: text/plain\r\n\r\nOrdonnance: amoxicilline 1 g x 3/j.\r\n';
let priv: PrivateKey;
let pub: PublicKey;

beforeAll(async () => {
  ({ priv, pub } = await pgpPair('dr@example.org'));
});

describe('signature stripping', () => {
  it('plain content where a signature is expected', async () => {
    expect(await cryptoErrorCode(pgpVerify(PART, { verificationKeys: pub, expectSigned: true }))).toBe(
      'not-signed',
    );
  });

  it('multipart/signed rewritten to multipart/mixed (signature kept as an attachment)', async () => {
    const signed = await signedText(PART, priv);
    const rewritten = signed.replace('multipart/signed', 'multipart/mixed');
    expect(await cryptoErrorCode(pgpVerify(rewritten, { verificationKeys: pub, expectSigned: true }))).toBe(
      'not-signed',
    );
  });

  it('multipart/signed whose signature part was swapped for text is malformed', async () => {
    const signed = await signedText(PART, priv);
    const swapped = signed.replace(
      /Content-Type: application\/pgp-signature[\s\S]*?-----END PGP SIGNATURE-----/,
      'Content-Type: text/plain\r\n\r\nno signature',
    );
    expect(await cryptoErrorCode(pgpVerify(swapped, { verificationKeys: pub, expectSigned: true }))).toBe(
      'malformed',
    );
  });

  it('encrypted but not signed, where a signature is expected', async () => {
    const enc = await pgpEncrypt(PART, { encryptionKeys: pub });
    expect(
      await cryptoErrorCode(
        pgpDecrypt(enc, { decryptionKeys: priv, verificationKeys: pub, expectSigned: true }),
      ),
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
    expect(await cryptoErrorCode(pgpVerify(inline, { verificationKeys: pub, expectSigned: true }))).toBe(
      'not-signed',
    );
  });
});
