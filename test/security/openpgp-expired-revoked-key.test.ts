/**
 * Attack class: expired and revoked keys. We neither encrypt to nor sign with them
 * (`key-expired`, `key-revoked`), and signatures by them are not `valid` (trust `expired` /
 * `revoked`). Decryption with an expired key still works: mail sent before expiry must open.
 */
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { pgpDecrypt, pgpEncrypt, pgpSign, pgpVerify } from '../../crypto/openpgp-mime.ts';
import { cryptoErrorCode, pgpPair, type PgpPair as Pair } from '../helpers/openpgp-fixture.ts';

const PART = 'Content-Type: text/plain\r\n\r\nCompte rendu operatoire.\r\n';
const HOUR = 3600_000;
const created = new Date(Date.now() - 48 * HOUR);
const whileValid = new Date(created.getTime() + HOUR);

let expiring: Pair; // valid for 24 h from `created`, so expired now
let revoked: Pair; // primary key revoked now
let subkeyRevoked: Pair; // encryption subkey revoked, primary fine
let good: Pair;

beforeAll(async () => {
  let toRevoke: Pair;
  let toRevokeSub: Pair;
  [expiring, toRevoke, toRevokeSub, good] = await Promise.all([
    pgpPair('expiring@example.org', { now: created, expiresInSeconds: 24 * 3600 }),
    pgpPair('revoked@example.org', { now: created }),
    pgpPair('subkey-revoked@example.org', { now: created }),
    pgpPair('good@example.org', { now: created }),
  ]);
  const r = await openpgp.revokeKey({
    key: toRevoke.priv,
    format: 'object',
    reasonForRevocation: { flag: openpgp.enums.reasonForRevocation.keyCompromised },
  });
  revoked = { priv: r.privateKey, pub: r.publicKey };
  const subkey = toRevokeSub.priv.subkeys[0]!;
  const revokedSub = await subkey.revoke(toRevokeSub.priv.keyPacket as openpgp.SecretKeyPacket);
  toRevokeSub.priv.subkeys[0] = revokedSub;
  subkeyRevoked = { priv: toRevokeSub.priv, pub: toRevokeSub.priv.toPublic() };
});

describe('expired keys', () => {
  it('no encrypting to, no signing with an expired key', async () => {
    expect(await cryptoErrorCode(pgpEncrypt(PART, { encryptionKeys: expiring.pub }))).toBe('key-expired');
    expect(await cryptoErrorCode(pgpSign(PART, { signingKeys: expiring.priv }))).toBe('key-expired');
    expect(
      await cryptoErrorCode(pgpEncrypt(PART, { encryptionKeys: good.pub, signingKeys: expiring.priv })),
    ).toBe('key-expired');
  });

  it('a signature made while the key was valid, checked after expiry: trust expired, not valid', async () => {
    const signed = await pgpSign(PART, { signingKeys: expiring.priv, now: whileValid });
    expect(
      (await pgpVerify(signed, { verificationKeys: expiring.pub, now: whileValid })).verification.valid,
    ).toBe(true);
    const later = await pgpVerify(signed, { verificationKeys: expiring.pub });
    expect(later.verification.valid).toBe(false);
    expect(later.verification.signers[0]!.trust).toBe('expired');
    expect(
      await cryptoErrorCode(pgpVerify(signed, { verificationKeys: expiring.pub, expectSigned: true })),
    ).toBe('key-expired');
  });

  it('mail encrypted before expiry still decrypts with the expired key', async () => {
    const enc = await pgpEncrypt(PART, { encryptionKeys: expiring.pub, now: whileValid });
    const res = await pgpDecrypt(enc, { decryptionKeys: expiring.priv });
    expect(Buffer.from(res.content).toString()).toBe(PART);
  });
});

describe('revoked keys', () => {
  it('no encrypting to, no signing with a revoked key', async () => {
    expect(await cryptoErrorCode(pgpEncrypt(PART, { encryptionKeys: revoked.pub }))).toBe('key-revoked');
    expect(await cryptoErrorCode(pgpSign(PART, { signingKeys: revoked.priv }))).toBe('key-revoked');
  });

  it('a revoked encryption subkey: key-revoked even though the primary key is fine', async () => {
    expect(await cryptoErrorCode(pgpEncrypt(PART, { encryptionKeys: subkeyRevoked.pub }))).toBe(
      'key-revoked',
    );
    // signing with its primary key is still allowed
    await expect(pgpSign(PART, { signingKeys: subkeyRevoked.priv })).resolves.toBeInstanceOf(Uint8Array);
  });

  it('a signature by a key revoked since: trust revoked, not valid', async () => {
    const signedBefore = await pgpSign(PART, { signingKeys: good.priv, now: whileValid });
    const revokedGood = await openpgp.revokeKey({ key: good.priv, format: 'object' });
    const res = await pgpVerify(signedBefore, { verificationKeys: revokedGood.publicKey });
    expect(res.verification.signers[0]).toMatchObject({ trust: 'revoked', signatureValid: false });
    expect(res.verification.problems.join()).toMatch(/revoked/);
    expect(
      await cryptoErrorCode(
        pgpVerify(signedBefore, { verificationKeys: revokedGood.publicKey, expectSigned: true }),
      ),
    ).toBe('key-revoked');
  });
});
