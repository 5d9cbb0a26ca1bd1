/**
 * Attack class: forged or altered signed content. Content changed after signing, a signature
 * moved to other content, and a signature by a key that is not among the verification keys are
 * never `valid`; with `expectSigned` they throw `invalid-signature` / `untrusted`.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { pgpDecrypt, pgpEncrypt, pgpSign, pgpVerify } from '../../crypto/openpgp-mime.ts';
import { cryptoErrorCode, pgpPair, signedText, type PgpPair } from '../helpers/openpgp-fixture.ts';

const PART = 'Content-Type: text/plain\r\n\r\nPosologie: 1 comprime le soir.\r\n';
let doctor: PgpPair;
let mallory: PgpPair;

beforeAll(async () => {
  [doctor, mallory] = await Promise.all([pgpPair('doctor@example.org'), pgpPair('mallory@example.net')]);
});

describe('forged signatures', () => {
  it('one character of the signed part changed', async () => {
    const signed = await signedText(PART, doctor.priv);
    const altered = signed.replace('1 comprime', '4 comprime');
    const res = await pgpVerify(altered, { verificationKeys: doctor.pub });
    expect(res.verification.valid).toBe(false);
    expect(res.verification.signers[0]).toMatchObject({ signatureValid: false, trust: 'invalid' });
    expect(res.verification.problems[0]).toMatch(/does not verify/);
    expect(
      await cryptoErrorCode(pgpVerify(altered, { verificationKeys: doctor.pub, expectSigned: true })),
    ).toBe('invalid-signature');
  });

  it('a header added to the signed part (signed exactly as transmitted)', async () => {
    const signed = await signedText(PART, doctor.priv);
    const altered = signed.replace(
      'Content-Type: text/plain\r\n',
      'Content-Type: text/plain\r\nContent-Disposition: attachment\r\n',
    );
    expect(
      await cryptoErrorCode(pgpVerify(altered, { verificationKeys: doctor.pub, expectSigned: true })),
    ).toBe('invalid-signature');
  });

  it("the doctor's signature moved onto other content", async () => {
    const a = await signedText(PART, doctor.priv);
    const sigA = /-----BEGIN PGP SIGNATURE-----[\s\S]*?-----END PGP SIGNATURE-----/.exec(a)![0];
    const b = await signedText(PART.replace('soir', 'matin'), mallory.priv);
    const forged = b.replace(/-----BEGIN PGP SIGNATURE-----[\s\S]*?-----END PGP SIGNATURE-----/, sigA);
    expect(
      await cryptoErrorCode(pgpVerify(forged, { verificationKeys: doctor.pub, expectSigned: true })),
    ).toBe('invalid-signature');
  });

  it('a valid signature by a key that is not among the verification keys is untrusted', async () => {
    const signed = await pgpSign(PART, { signingKeys: mallory.priv });
    const res = await pgpVerify(signed, { verificationKeys: doctor.pub });
    expect(res.verification.signers[0]).toMatchObject({ trust: 'untrusted', signatureValid: false });
    expect(
      await cryptoErrorCode(pgpVerify(signed, { verificationKeys: doctor.pub, expectSigned: true })),
    ).toBe('untrusted');
    const enc = await pgpEncrypt(PART, { encryptionKeys: doctor.pub, signingKeys: mallory.priv });
    expect(
      await cryptoErrorCode(
        pgpDecrypt(enc, { decryptionKeys: doctor.priv, verificationKeys: doctor.pub, expectSigned: true }),
      ),
    ).toBe('untrusted');
  });
});
