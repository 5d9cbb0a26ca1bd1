/**
 * Attack class: malformed input. Broken armor, garbage packets, broken MIME structure and broken
 * keys give a clear `CryptoError` (`malformed` where the data is at fault), quickly: no crash, no
 * other error type, no hang. A small mutation fuzz checks the same over many random damages.
 */
import { randomBytes } from 'node:crypto';
import type { PrivateKey, PublicKey } from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { CryptoError } from '../../crypto/types.ts';
import { readPgpPrivateKey, readPgpPublicKeys } from '../../crypto/openpgp-keys.ts';
import { pgpDecrypt, pgpEncrypt, pgpVerify } from '../../crypto/openpgp-mime.ts';
import { buildMultipartEncrypted, buildMultipartSigned } from '../../crypto/pgp-mime.ts';
import { pgpPair, signedText } from '../helpers/openpgp-fixture.ts';

const PART = 'Content-Type: text/plain\r\n\r\nBilan sanguin normal.\r\n';
let priv: PrivateKey;
let pub: PublicKey;
let encrypted: string;
let signed: string;

/** Resolves to the CryptoError (or undefined on success); anything else fails the test. */
async function outcome(p: Promise<unknown>, budgetMs = 3000): Promise<CryptoError | undefined> {
  const started = Date.now();
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(Date.now() - started).toBeLessThan(budgetMs);
  if (err !== undefined && !(err instanceof CryptoError)) throw err;
  return err;
}

const decrypt = (entity: string) => pgpDecrypt(entity, { decryptionKeys: priv, verificationKeys: pub });
const verify = (entity: string) => pgpVerify(entity, { verificationKeys: pub });
const armoredMessage = (body: string) =>
  `-----BEGIN PGP MESSAGE-----\r\n\r\n${body}\r\n-----END PGP MESSAGE-----\r\n`;

beforeAll(async () => {
  ({ priv, pub } = await pgpPair('lab@example.org'));
  encrypted = Buffer.from(await pgpEncrypt(PART, { encryptionKeys: pub, signingKeys: priv })).toString(
    'latin1',
  );
  signed = await signedText(PART, priv);
});

describe('malformed armor and packets', () => {
  const cases: [string, () => string][] = [
    [
      'armor body that is not base64',
      () => buildMultipartEncrypted(armoredMessage('@@@ not base64 at all @@@')),
    ],
    [
      'armor without its END line',
      () => buildMultipartEncrypted('-----BEGIN PGP MESSAGE-----\r\n\r\nwV4DAAAA\r\n'),
    ],
    ['no armor at all', () => buildMultipartEncrypted('hello')],
    [
      'valid base64 of random bytes',
      () => buildMultipartEncrypted(armoredMessage(randomBytes(300).toString('base64'))),
    ],
    ['empty armor', () => buildMultipartEncrypted(armoredMessage(''))],
    [
      'truncated message (half the armor lines)',
      () => {
        const lines = encrypted.split('\r\n');
        const begin = lines.indexOf('-----BEGIN PGP MESSAGE-----');
        const end = lines.indexOf('-----END PGP MESSAGE-----');
        return [...lines.slice(0, begin + Math.floor((end - begin) / 2)), ...lines.slice(end)].join('\r\n');
      },
    ],
    [
      'a signature block where the message belongs',
      () =>
        buildMultipartEncrypted(
          signed.slice(
            signed.indexOf('-----BEGIN PGP SIGNATURE-----'),
            signed.indexOf('-----END PGP SIGNATURE-----') + 27,
          ),
        ),
    ],
  ];
  for (const [name, make] of cases) {
    it(`decrypt: ${name}`, async () => {
      const err = await outcome(decrypt(make()));
      expect(err?.code).toBe('malformed');
    });
  }

  it('verify: garbage in the signature part', async () => {
    for (const sig of [
      '-----BEGIN PGP SIGNATURE-----\r\n\r\n!!!!\r\n-----END PGP SIGNATURE-----',
      'not armor',
      '',
    ]) {
      const err = await outcome(verify(buildMultipartSigned(PART, sig, 'pgp-sha256')));
      expect(err?.code).toBe('malformed');
    }
  });

  it('a large garbage armor (4 MB) fails quickly', async () => {
    const big = buildMultipartEncrypted(armoredMessage('QUFB'.repeat(1_000_000).replace(/.{64}/g, '$&\r\n')));
    const err = await outcome(decrypt(big), 10_000);
    expect(err).toBeInstanceOf(CryptoError);
  });
});

describe('malformed MIME structure', () => {
  it('multipart/encrypted without a boundary, without its closing boundary, with one part', async () => {
    const noBoundary = encrypted.replace(/boundary="[^"]+"/, '');
    const boundary = /boundary="([^"]+)"/.exec(encrypted)![1]!;
    const unclosed = encrypted.replace(`--${boundary}--`, '');
    const onePart = `Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b--\r\n`;
    const wrongVersion = encrypted.replace('Version: 1', 'Version: 2');
    for (const entity of [noBoundary, unclosed, onePart, wrongVersion]) {
      expect((await outcome(decrypt(entity)))?.code).toBe('malformed');
    }
  });

  it('a header block that starts with a continuation line', async () => {
    expect((await outcome(verify(' folded: nonsense\r\n\r\nbody')))?.code).toBe('malformed');
  });
});

describe('malformed keys', () => {
  it('garbage, truncated and empty key armor is malformed', async () => {
    const armored = pub.armor();
    for (const input of [
      '',
      'garbage',
      armored.slice(0, armored.length / 2),
      new Uint8Array([0x99, 0x01]),
      randomBytes(64),
    ]) {
      expect((await outcome(readPgpPublicKeys(input)))?.code).toBe('malformed');
    }
    expect((await outcome(readPgpPrivateKey(armored)))?.code).toBe('malformed'); // a public key is not a private key
  });
});

describe('mutation fuzz', () => {
  it('200 random byte changes to encrypted and signed messages: success or CryptoError, never anything else', async () => {
    let failures = 0;
    for (let i = 0; i < 200; i++) {
      const source = i % 2 === 0 ? encrypted : signed;
      const bytes = Buffer.from(source, 'latin1');
      const changes = 1 + (i % 4);
      for (let c = 0; c < changes; c++)
        bytes[Math.floor(Math.random() * bytes.length)] = Math.floor(Math.random() * 256);
      const mutated = bytes.toString('latin1');
      const err = await outcome(i % 2 === 0 ? decrypt(mutated) : verify(mutated));
      if (err !== undefined) failures++;
    }
    expect(failures).toBeGreaterThan(0);
  });
});
