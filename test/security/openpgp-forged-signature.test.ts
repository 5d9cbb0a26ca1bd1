/**
 * Attack class: forged or altered signed content. Content changed after signing, a signature
 * moved to other content, and a signature by a key that is not among the verification keys are
 * never `valid`; with `expectSigned` they throw `invalid-signature` / `untrusted`.
 */
import type { PrivateKey, PublicKey } from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { CryptoError } from '../../crypto/types.ts';
import { generatePgpKey, readPgpPrivateKey, readPgpPublicKey } from '../../crypto/openpgp-keys.ts';
import { pgpDecrypt, pgpEncrypt, pgpSign, pgpVerify } from '../../crypto/openpgp-mime.ts';

const PART = 'Content-Type: text/plain\r\n\r\nPosologie: 1 comprime le soir.\r\n';
let doctor: { priv: PrivateKey; pub: PublicKey };
let mallory: { priv: PrivateKey; pub: PublicKey };

async function pair(email: string): Promise<{ priv: PrivateKey; pub: PublicKey }> {
  const k = await generatePgpKey({ userIDs: [{ email }] });
  return { priv: await readPgpPrivateKey(k.privateKey), pub: await readPgpPublicKey(k.publicKey) };
}

async function code(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CryptoError);
  return (err as CryptoError).code;
}

beforeAll(async () => {
  [doctor, mallory] = await Promise.all([pair('doctor@example.org'), pair('mallory@example.net')]);
});

describe('forged signatures', () => {
  it('one character of the signed part changed', async () => {
    const signed = Buffer.from(await pgpSign(PART, { signingKeys: doctor.priv })).toString('latin1');
    const altered = signed.replace('1 comprime', '4 comprime');
    const res = await pgpVerify(altered, { verificationKeys: doctor.pub });
    expect(res.verification.valid).toBe(false);
    expect(res.verification.signers[0]).toMatchObject({ signatureValid: false, trust: 'invalid' });
    expect(res.verification.problems[0]).toMatch(/does not verify/);
    expect(await code(pgpVerify(altered, { verificationKeys: doctor.pub, expectSigned: true }))).toBe(
      'invalid-signature',
    );
  });

  it('a header added to the signed part (signed exactly as transmitted)', async () => {
    const signed = Buffer.from(await pgpSign(PART, { signingKeys: doctor.priv })).toString('latin1');
    const altered = signed.replace(
      'Content-Type: text/plain\r\n',
      'Content-Type: text/plain\r\nContent-Disposition: attachment\r\n',
    );
    expect(await code(pgpVerify(altered, { verificationKeys: doctor.pub, expectSigned: true }))).toBe(
      'invalid-signature',
    );
  });

  it("the doctor's signature moved onto other content", async () => {
    const a = Buffer.from(await pgpSign(PART, { signingKeys: doctor.priv })).toString('latin1');
    const sigA = /-----BEGIN PGP SIGNATURE-----[\s\S]*?-----END PGP SIGNATURE-----/.exec(a)![0];
    const b = Buffer.from(
      await pgpSign(PART.replace('soir', 'matin'), { signingKeys: mallory.priv }),
    ).toString('latin1');
    const forged = b.replace(/-----BEGIN PGP SIGNATURE-----[\s\S]*?-----END PGP SIGNATURE-----/, sigA);
    expect(await code(pgpVerify(forged, { verificationKeys: doctor.pub, expectSigned: true }))).toBe(
      'invalid-signature',
    );
  });

  it('a valid signature by a key that is not among the verification keys is untrusted', async () => {
    const signed = await pgpSign(PART, { signingKeys: mallory.priv });
    const res = await pgpVerify(signed, { verificationKeys: doctor.pub });
    expect(res.verification.signers[0]).toMatchObject({ trust: 'untrusted', signatureValid: false });
    expect(await code(pgpVerify(signed, { verificationKeys: doctor.pub, expectSigned: true }))).toBe(
      'untrusted',
    );
    const enc = await pgpEncrypt(PART, { encryptionKeys: doctor.pub, signingKeys: mallory.priv });
    expect(
      await code(
        pgpDecrypt(enc, { decryptionKeys: doctor.priv, verificationKeys: doctor.pub, expectSigned: true }),
      ),
    ).toBe('untrusted');
  });
});
