/**
 * Attack class: weak algorithms. RSA keys under 2048 bits are refused for every use
 * (`weak-algorithm`), and signatures made with them, or with SHA-1, are never `valid`.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import type { PrivateKey } from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkPgpKey } from '../../crypto/openpgp-keys.ts';
import { pgpEncrypt, pgpSign, pgpVerify } from '../../crypto/openpgp-mime.ts';
import { buildMultipartSigned } from '../../crypto/pgp-mime.ts';
import {
  cryptoErrorCode,
  makeGpgHome,
  mustGpg,
  pgpPair,
  readPgpPair,
  removeGpgHome,
  type PgpPair,
} from '../helpers/openpgp-fixture.ts';

const PART = 'Content-Type: text/plain\r\n\r\nLettre de liaison.\r\n';
let weak: PgpPair;
let ok: PgpPair;
let rsaOk: PgpPair; // Ed25519 always signs with SHA-512 in OpenPGP.js

/** A detached signature made outside our API (which refuses to make these), in our envelope. */
async function foreignSigned(
  key: PrivateKey,
  config: openpgp.PartialConfig,
  micalg: string,
): Promise<string> {
  const signature = await openpgp.sign({
    message: await openpgp.createMessage({ binary: new TextEncoder().encode(PART) }),
    signingKeys: key,
    detached: true,
    config,
  });
  return buildMultipartSigned(PART, signature, micalg);
}

beforeAll(async () => {
  // OpenPGP.js itself refuses RSA-1024 unless told otherwise: this is the kind of old key we meet.
  const k = await openpgp.generateKey({
    type: 'rsa',
    rsaBits: 1024,
    userIDs: [{ email: 'old@example.org' }],
    config: { minRSABits: 1024 },
    format: 'armored',
  });
  weak = await readPgpPair(k);
  ok = await pgpPair('ok@example.org');
  rsaOk = await pgpPair('rsa@example.org', { type: 'rsa' });
});

describe('weak algorithms', () => {
  it('RSA-1024 is read (so it can be reported) but refused for encryption and signing', async () => {
    expect(await checkPgpKey(weak.pub, 'encrypt')).toMatchObject({ status: 'weak-algorithm' });
    expect(await cryptoErrorCode(pgpEncrypt(PART, { encryptionKeys: weak.pub }))).toBe('weak-algorithm');
    expect(await cryptoErrorCode(pgpSign(PART, { signingKeys: weak.priv }))).toBe('weak-algorithm');
    // one weak recipient among good ones fails the whole message rather than leaving them out
    expect(await cryptoErrorCode(pgpEncrypt(PART, { encryptionKeys: [ok.pub, weak.pub] }))).toBe(
      'weak-algorithm',
    );
  });

  it('a signature by an RSA-1024 key is not valid (trust weak-algorithm)', async () => {
    const signed = await foreignSigned(weak.priv, { minRSABits: 1024 }, 'pgp-sha256');
    const res = await pgpVerify(signed, { verificationKeys: weak.pub });
    expect(res.verification.valid).toBe(false);
    expect(res.verification.signers[0]!.trust).toBe('weak-algorithm');
    expect(await cryptoErrorCode(pgpVerify(signed, { verificationKeys: weak.pub, expectSigned: true }))).toBe(
      'weak-algorithm',
    );
  });

  it('a SHA-1 signature by a good RSA-3072 key is not valid (trust weak-algorithm)', async () => {
    // OpenPGP.js will not make SHA-1 signatures any more; GnuPG 2.2 still does when asked.
    const home = makeGpgHome('sha1');
    let signed: string;
    try {
      mustGpg(home, ['--import'], rsaOk.priv.armor());
      writeFileSync(join(home, 'part'), PART);
      const sig = mustGpg(home, [
        '--armor',
        '--digest-algo',
        'SHA1',
        '--detach-sign',
        '--output',
        '-',
        join(home, 'part'),
      ]);
      signed = buildMultipartSigned(PART, sig, 'pgp-sha1');
    } finally {
      removeGpgHome(home);
    }
    const res = await pgpVerify(signed, { verificationKeys: rsaOk.pub });
    const signer = res.verification.signers[0]!;
    expect(signer.algorithms.digest).toBe('sha1');
    expect(signer).toMatchObject({ signatureValid: false, trust: 'weak-algorithm' });
    expect(
      await cryptoErrorCode(pgpVerify(signed, { verificationKeys: rsaOk.pub, expectSigned: true })),
    ).toBe('weak-algorithm');
  });
});
