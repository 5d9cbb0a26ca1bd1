/** PGP/MIME verbs and keys without gpg: API shape, options, MIME details, v6 keys, passphrases. */
import { beforeAll, describe, expect, it } from 'vitest';
import type { PrivateKey, PublicKey } from 'openpgp';
import {
  checkPgpKey,
  generatePgpKey,
  readPgpPrivateKey,
  readPgpPublicKey,
  readPgpPublicKeys,
} from '../crypto/openpgp-keys.ts';
import { pgpDecrypt, pgpEncrypt, pgpSign, pgpVerify } from '../crypto/openpgp-mime.ts';
import { encodeQuotedPrintable, makeSevenBitSafe, splitMultipart } from '../crypto/pgp-mime.ts';
import { cryptoError } from './helpers/openpgp-fixture.ts';

const PART = 'Content-Type: text/plain; charset=us-ascii\r\n\r\nRendez-vous mardi.\r\n';

let alicePriv: PrivateKey;
let alicePub: PublicKey;
let bobPriv: PrivateKey;
let bobPub: PublicKey;
let protectedArmored: string;

beforeAll(async () => {
  const [alice, bob, prot] = await Promise.all([
    generatePgpKey({ userIDs: [{ name: 'Dr Alice', email: 'alice@msp.example.org' }] }),
    generatePgpKey({ userIDs: [{ email: 'bob@cpts.example.org' }] }),
    generatePgpKey({ userIDs: [{ email: 'prot@example.org' }], passphrase: 'correct horse' }),
  ]);
  alicePriv = await readPgpPrivateKey(alice.privateKey);
  alicePub = await readPgpPublicKey(alice.publicKey);
  bobPriv = await readPgpPrivateKey(bob.privateKey);
  bobPub = await readPgpPublicKey(bob.publicKey);
  protectedArmored = prot.privateKey;
});

describe('options', () => {
  it('every verb rejects unknown options (typos fail loudly)', async () => {
    const cases: Promise<unknown>[] = [
      pgpSign(PART, { signingKeys: alicePriv, signingKey: alicePriv } as never),
      pgpEncrypt(PART, { encryptionKeys: bobPub, compression: 'zlib' } as never),
      pgpVerify(PART, { verificationKeys: alicePub, expectSinged: true } as never),
      pgpDecrypt(PART, { decryptionKeys: bobPriv, publicKeys: alicePub } as never),
      readPgpPrivateKey(protectedArmored, { password: 'x' } as never),
      generatePgpKey({ userIDs: [{ email: 'x@example.org' }], curve: 'p256' } as never),
    ];
    for (const c of cases) expect((await cryptoError(c)).code).toBe('unknown-option');
  });

  it('without keys: no-matching-key', async () => {
    expect((await cryptoError(pgpSign(PART, { signingKeys: [] }))).code).toBe('no-matching-key');
    expect((await cryptoError(pgpEncrypt(PART, { encryptionKeys: [] }))).code).toBe('no-matching-key');
  });
});

describe('round trips', () => {
  it('sign then verify; signer result is structured', async () => {
    const now = new Date();
    const signed = await pgpSign(PART, { signingKeys: alicePriv, now });
    const res = await pgpVerify(signed, { verificationKeys: [bobPub, alicePub], expectSigned: true });
    expect(Buffer.from(res.content).toString()).toBe(PART);
    expect(res.verification).toMatchObject({ signed: true, valid: true, problems: [] });
    const signer = res.verification.signers[0]!;
    expect(signer).toMatchObject({
      format: 'openpgp',
      identity: 'Dr Alice <alice@msp.example.org>',
      emailAddresses: ['alice@msp.example.org'],
      keyId: alicePub.getFingerprint().toUpperCase(),
      signatureValid: true,
      trust: 'trusted',
      algorithms: { signature: 'ed25519' },
    });
    expect(Math.abs(signer.signedAt!.getTime() - now.getTime())).toBeLessThan(2000);
    expect(signer.certificate).toBeInstanceOf(Uint8Array);
  });

  it('micalg names the digest actually used (Ed25519 legacy signatures use SHA-512 in OpenPGP.js)', async () => {
    const text = Buffer.from(await pgpSign(PART, { signingKeys: alicePriv })).toString();
    expect(text).toContain('micalg=pgp-sha512;');
    expect(text).toContain('protocol="application/pgp-signature"');
  });

  it('signatures from keys not among the verification keys are untrusted', async () => {
    const signed = await pgpSign(PART, { signingKeys: alicePriv });
    const res = await pgpVerify(signed, { verificationKeys: bobPub });
    expect(res.verification.valid).toBe(false);
    expect(res.verification.signers[0]).toMatchObject({ trust: 'untrusted', signatureValid: false });
    expect(
      (await cryptoError(pgpVerify(signed, { verificationKeys: bobPub, expectSigned: true }))).code,
    ).toBe('untrusted');
  });

  it('encrypt without signing; decrypt reports unsigned', async () => {
    const enc = await pgpEncrypt(PART, { encryptionKeys: bobPub });
    const res = await pgpDecrypt(enc, { decryptionKeys: bobPriv });
    expect(res.verification).toMatchObject({ signed: false, valid: false, signers: [] });
    expect(Buffer.from(res.content).toString()).toBe(PART);
  });

  it('decrypting with a key the message is not for: no-matching-key', async () => {
    const enc = await pgpEncrypt(PART, { encryptionKeys: bobPub });
    expect((await cryptoError(pgpDecrypt(enc, { decryptionKeys: alicePriv }))).code).toBe('no-matching-key');
  });

  it('v6 (RFC 9580) keys round-trip with AEAD (SEIPDv2)', async () => {
    const v6 = await generatePgpKey({ userIDs: [{ email: 'v6@example.org' }], profile: 'rfc9580' });
    const priv = await readPgpPrivateKey(v6.privateKey);
    const pub = await readPgpPublicKey(v6.publicKey);
    expect(pub.keyPacket.version).toBe(6);
    const enc = await pgpEncrypt(PART, { encryptionKeys: pub, signingKeys: priv });
    const res = await pgpDecrypt(enc, { decryptionKeys: priv, verificationKeys: pub, expectSigned: true });
    expect(res.verification.valid).toBe(true);
    expect(res.verification.signers[0]!.keyId).toHaveLength(64);
  });
});

describe('keys', () => {
  it('passphrase-protected private keys: missing or wrong passphrase is passphrase-required', async () => {
    expect((await cryptoError(readPgpPrivateKey(protectedArmored))).code).toBe('passphrase-required');
    expect((await cryptoError(readPgpPrivateKey(protectedArmored, { passphrase: 'wrong' }))).code).toBe(
      'passphrase-required',
    );
    const key = await readPgpPrivateKey(protectedArmored, { passphrase: 'correct horse' });
    expect(key.isDecrypted()).toBe(true);
  });

  it('a keyring export gives every key; private keys given as public are reduced', async () => {
    const keys = await readPgpPublicKeys(alicePub.armor() + '\n' + bobPriv.armor());
    expect(keys.map((k) => k.isPrivate())).toEqual([false, false]);
    expect(keys).toHaveLength(2);
  });

  it('binary keys are read too', async () => {
    const key = await readPgpPublicKey(alicePub.write());
    expect(key.getFingerprint()).toBe(alicePub.getFingerprint());
  });

  it('checkPgpKey says a fresh Curve25519 key is fine for every use', async () => {
    for (const use of ['sign', 'verify', 'encrypt', 'decrypt'] as const) {
      expect((await checkPgpKey(alicePriv, use)).status).toBe('trusted');
    }
  });
});

describe('MIME details', () => {
  it('7-bit safety: 8-bit text becomes quoted-printable, binary becomes base64, safe parts stay byte for byte', () => {
    expect(makeSevenBitSafe(PART)).toBe(PART);
    const text = makeSevenBitSafe(
      'Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\u00c3\u00a9 \r\nFrom me\r\n.\r\n',
    );
    expect(text).toBe(
      'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9=20\r\n=46rom me\r\n=2E\r\n',
    );
    const bin = makeSevenBitSafe(
      'Content-Type: application/pdf\r\nContent-Transfer-Encoding: binary\r\n\r\n\u0000\u00ff\u0001',
    );
    expect(bin).toBe('Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAP8B\r\n');
  });

  it('7-bit safety reaches into multipart bodies', () => {
    const mixed =
      'Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nok\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\u00c3\u00a9t\u00c3\u00a9\r\n--b--\r\n';
    const safe = makeSevenBitSafe(mixed);
    expect(safe).toContain('--b\r\nContent-Type: text/plain\r\n\r\nok\r\n--b\r\n');
    expect(safe).toContain('=C3=A9t=C3=A9');
  });

  it('long lines get soft breaks at 76 octets', () => {
    const qp = encodeQuotedPrintable('x'.repeat(200));
    for (const line of qp.split('\r\n')) expect(line.length).toBeLessThanOrEqual(76);
    expect(qp.replace(/=\r\n/g, '')).toBe('x'.repeat(200));
  });

  it('8-bit header bytes in the part to sign are refused, not silently signed', async () => {
    const err = await cryptoError(
      pgpSign('Content-Type: text/plain; name="r\u00e9sum\u00e9.txt"\r\n\r\nx\r\n', {
        signingKeys: alicePriv,
      }),
    );
    expect(err.code).toBe('unsupported');
  });

  it('splitMultipart keeps parts byte-exact (the CRLF before a delimiter is not part of the part)', () => {
    const { parts } = splitMultipart('preamble\r\n--b\r\nA\r\n\r\n--b \r\nB\r\n--b--\r\nepilogue', 'b');
    expect(parts).toEqual(['A\r\n', 'B']);
  });

  it('inline PGP is detected and reported, not taken for PGP/MIME', async () => {
    const inline =
      'Content-Type: text/plain\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhello\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nxx\r\n-----END PGP SIGNATURE-----\r\n';
    const res = await pgpVerify(inline, { verificationKeys: alicePub });
    expect(res.inlinePgp).toBe('signed');
    expect(res.verification.signed).toBe(false);
    expect(res.verification.problems[0]).toMatch(/inline PGP/);
    const enc =
      'Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nxx\r\n-----END PGP MESSAGE-----\r\n';
    const err = await cryptoError(pgpDecrypt(enc, { decryptionKeys: bobPriv }));
    expect(err.code).toBe('unsupported');
    expect(err.message).toMatch(/inline PGP/);
  });

  it('S/MIME multipart/signed is not ours: unsupported', async () => {
    const smime =
      'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n';
    expect((await cryptoError(pgpVerify(smime, { verificationKeys: alicePub }))).code).toBe('unsupported');
  });
});
