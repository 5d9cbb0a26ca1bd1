/**
 * PGP/MIME interop with GnuPG 2.2 in both directions. Each party has its own temporary gpg
 * homedir (batch mode, loopback pinentry, no passphrase); every homedir's gpg-agent is killed at
 * the end. Envelopes around gpg output are built the way Thunderbird/Enigmail build them: the MIME
 * part is canonicalised to CRLF and 7-bit encoded, gpg signs/encrypts it, and `micalg` comes from
 * gpg's SIG_CREATED status line.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateKey, PublicKey } from 'openpgp';
import { generatePgpKey, readPgpPrivateKey, readPgpPublicKey } from '../crypto/openpgp-keys.ts';
import { pgpDecrypt, pgpEncrypt, pgpSign, pgpVerify } from '../crypto/openpgp-mime.ts';
import { gpg, gpgFingerprint, makeGpgHome, mustGpg, removeGpgHome } from './helpers/openpgp-fixture.ts';

const MULTIPART_PART = [
  'Content-Type: multipart/mixed; boundary="inner-boundary"',
  '',
  '--inner-boundary',
  'Content-Type: text/plain; charset=utf-8',
  'Content-Transfer-Encoding: quoted-printable',
  '',
  'Ch=C3=A8re consoeur,',
  'veuillez trouver la lettre de liaison ci-jointe.',
  '--inner-boundary',
  'Content-Type: application/pdf; name="lettre.pdf"',
  'Content-Transfer-Encoding: base64',
  'Content-Disposition: attachment; filename="lettre.pdf"',
  '',
  Buffer.from('%PDF-1.7 fake pdf bytes \u0000\u00ff'.repeat(20), 'latin1')
    .toString('base64')
    .replace(/.{76}/g, '$&\r\n'),
  '--inner-boundary--',
  '',
].join('\r\n');

/** An 8-bit part, as a practice application might hand it over. */
const EIGHT_BIT_PART =
  'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCompte rendu: tension 12/8, Müller \r\nFrom the clinic\r\n';

const dirs: string[] = [];
let tmp: string;

interface GpgParty {
  home: string;
  fingerprint: string;
  publicKey: PublicKey;
}
let gpgEd: GpgParty; // GnuPG-generated ed25519 + cv25519
let gpgRsa: GpgParty; // GnuPG-generated RSA-2048 sign + RSA-2048 encrypt

interface OurParty {
  privateKey: PrivateKey;
  publicKey: PublicKey;
  armoredPublic: string;
  fingerprint: string;
}
let ourEd: OurParty; // openpgp.js v4 Curve25519 "legacy"
let ourRsa: OurParty; // openpgp.js v4 RSA-3072

function newHome(name: string): string {
  const home = makeGpgHome(name);
  dirs.push(home);
  return home;
}

async function makeGpgParty(name: string, primary: string, subkey: string): Promise<GpgParty> {
  const home = newHome(name);
  const uid = `${name} <${name}@gpg.example.org>`;
  mustGpg(home, ['--quick-gen-key', uid, primary, 'sign,cert', 'never']);
  const fingerprint = gpgFingerprint(home, uid);
  mustGpg(home, ['--quick-add-key', fingerprint, subkey, 'encr', 'never']);
  const armored = mustGpg(home, ['--armor', '--export', fingerprint]);
  return { home, fingerprint, publicKey: await readPgpPublicKey(armored) };
}

async function makeOurParty(type: 'curve25519' | 'rsa', email: string): Promise<OurParty> {
  const key = await generatePgpKey({ userIDs: [{ name: 'Courrier', email }], type });
  return {
    privateKey: await readPgpPrivateKey(key.privateKey),
    publicKey: await readPgpPublicKey(key.publicKey),
    armoredPublic: key.publicKey,
    fingerprint: key.fingerprint,
  };
}

function importInto(home: string, armored: string): string {
  return mustGpg(home, ['--status-fd', '1', '--import'], armored);
}

/** Splits our multipart/* output into its two parts, like a receiving client would. */
function twoParts(entity: Uint8Array): [string, string] {
  const text = Buffer.from(entity).toString('latin1');
  const boundary = /boundary="([^"]+)"/.exec(text)?.[1];
  if (boundary === undefined) throw new Error('no boundary');
  const pieces = text.split(`--${boundary}`);
  // pieces: preamble, part1 (after CRLF, before CRLF), part2, epilogue
  const strip = (p: string) => p.slice(2, -2); // leading CRLF of the delimiter line, CRLF before the next delimiter
  return [strip(pieces[1]!), strip(pieces[2]!)];
}

function bodyOf(part: string): string {
  return part.slice(part.indexOf('\r\n\r\n') + 4);
}

/** Enigmail/Thunderbird-style multipart/signed around a gpg detached signature. */
function enigmailSigned(part: string, signature: string, micalg: string): string {
  const b = '------------enig2F9D1B0C7E5A4F3B';
  return (
    `Content-Type: multipart/signed; micalg=${micalg};\r\n protocol="application/pgp-signature";\r\n boundary="${b}"\r\n\r\n` +
    `This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n--${b}\r\n${part}\r\n--${b}\r\n` +
    `Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"\r\nContent-Description: OpenPGP digital signature\r\n` +
    `Content-Disposition: attachment; filename="OpenPGP_signature.asc"\r\n\r\n${signature.replace(/\r?\n/g, '\r\n')}\r\n--${b}--\r\n`
  );
}

/** Enigmail/Thunderbird-style multipart/encrypted around gpg output. */
function enigmailEncrypted(armored: string): string {
  const b = '------------enigE4D5C6B7A8F9E0D1';
  return (
    `Content-Type: multipart/encrypted;\r\n protocol="application/pgp-encrypted";\r\n boundary="${b}"\r\n\r\n` +
    `This is an OpenPGP/MIME encrypted message (RFC 2440 and 3156)\r\n--${b}\r\n` +
    `Content-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n` +
    `--${b}\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\nContent-Description: OpenPGP encrypted message\r\n` +
    `Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n${armored.replace(/\r?\n/g, '\r\n')}\r\n--${b}--\r\n`
  );
}

/** gpg detached signature over `part` and the micalg Enigmail would derive from SIG_CREATED. */
function gpgDetachSign(party: GpgParty, part: string): { signature: string; micalg: string } {
  const partFile = join(tmp, `part-${Math.random().toString(36).slice(2)}`);
  writeFileSync(partFile, part, 'latin1');
  const status = mustGpg(party.home, [
    '--status-fd',
    '1',
    '--armor',
    '--detach-sign',
    '-u',
    party.fingerprint,
    '--output',
    `${partFile}.asc`,
    partFile,
  ]);
  // [GNUPG:] SIG_CREATED D <pubkey algo> <hash algo> ...
  const hashAlgo = Number(/SIG_CREATED \S+ \d+ (\d+)/.exec(status)?.[1]);
  const names: Record<number, string> = { 8: 'sha256', 9: 'sha384', 10: 'sha512', 11: 'sha224' };
  return { signature: readFileSync(`${partFile}.asc`, 'latin1'), micalg: `pgp-${names[hashAlgo]}` };
}

function gpgVerifyDetached(home: string, part: string, signature: string): string {
  const partFile = join(tmp, `vpart-${Math.random().toString(36).slice(2)}`);
  writeFileSync(partFile, part, 'latin1');
  writeFileSync(`${partFile}.asc`, signature, 'latin1');
  return gpg(home, ['--status-fd', '1', '--verify', `${partFile}.asc`, partFile]).stdout;
}

beforeAll(async () => {
  tmp = newHome('files');
  [gpgEd, gpgRsa, ourEd, ourRsa] = await Promise.all([
    makeGpgParty('gpg-ed', 'ed25519', 'cv25519'),
    makeGpgParty('gpg-rsa', 'rsa2048', 'rsa2048'),
    makeOurParty('curve25519', 'ed@courrier.example.org'),
    makeOurParty('rsa', 'rsa@courrier.example.org'),
  ]);
  for (const party of [gpgEd, gpgRsa]) {
    importInto(party.home, ourEd.armoredPublic);
    importInto(party.home, ourRsa.armoredPublic);
  }
  // Each gpg party knows the other's public key (for multi-recipient and verification).
  importInto(gpgEd.home, mustGpg(gpgRsa.home, ['--armor', '--export', gpgRsa.fingerprint]));
  importInto(gpgRsa.home, mustGpg(gpgEd.home, ['--armor', '--export', gpgEd.fingerprint]));
}, 120_000);

afterAll(() => {
  for (const home of dirs) removeGpgHome(home);
});

describe('keys generated by us in GnuPG 2.2', () => {
  it('imports our v4 Curve25519 and RSA public keys', () => {
    for (const party of [ourEd, ourRsa]) {
      const listing = mustGpg(gpgEd.home, ['--with-colons', '--list-keys', party.fingerprint]);
      expect(listing).toContain(`fpr:::::::::${party.fingerprint}:`);
    }
    const ed = mustGpg(gpgEd.home, ['--with-colons', '--list-keys', ourEd.fingerprint]);
    expect(ed).toMatch(/^pub:[^:]*:255:22:/m); // EdDSA (22), 255 bits
    expect(ed).toMatch(/^sub:[^:]*:255:18:.*:e:/m); // ECDH cv25519 (18), encryption
    const rsa = mustGpg(gpgEd.home, ['--with-colons', '--list-keys', ourRsa.fingerprint]);
    expect(rsa).toMatch(/^pub:[^:]*:3072:1:/m);
  });

  it('v6 (RFC 9580) keys are flagged as not GnuPG 2.2 compatible, and GnuPG 2.2 indeed cannot use them', async () => {
    const v6 = await generatePgpKey({ userIDs: [{ email: 'v6@courrier.example.org' }], profile: 'rfc9580' });
    expect(v6.version).toBe(6);
    expect(v6.gnupg22Compatible).toBe(false);
    expect(v6.fingerprint).toHaveLength(64);
    const home = newHome('v6');
    const status = gpg(home, ['--status-fd', '1', '--import'], v6.publicKey);
    expect(status.stdout).not.toContain('IMPORT_OK');
    expect(gpg(home, ['--list-keys', v6.fingerprint]).code).not.toBe(0);
  });
});

describe('multipart/signed: we sign, gpg verifies', () => {
  for (const which of ['curve25519', 'rsa'] as const) {
    it(`${which} key, 8-bit part re-encoded to 7-bit first`, async () => {
      const signer = which === 'rsa' ? ourRsa : ourEd;
      const out = await pgpSign(EIGHT_BIT_PART, { signingKeys: signer.privateKey });
      const text = Buffer.from(out).toString('latin1');
      expect(text).toMatch(/micalg=pgp-sha(256|512)/);
      if (which === 'rsa') expect(text).toContain('micalg=pgp-sha256');
      const [part, sigPart] = twoParts(out);
      expect(part).toContain('Content-Transfer-Encoding: quoted-printable');
      expect(part).not.toMatch(/[\u0080-\u00ff]/);
      const status = gpgVerifyDetached(gpgRsa.home, part, bodyOf(sigPart));
      expect(status).toContain(`VALIDSIG ${signer.fingerprint}`);
      expect(status).toContain('GOODSIG');
    });
  }

  it('multipart/mixed part already 7-bit: signed byte for byte', async () => {
    const out = await pgpSign(MULTIPART_PART, { signingKeys: ourEd.privateKey });
    const [part, sigPart] = twoParts(out);
    expect(part).toBe(MULTIPART_PART);
    expect(gpgVerifyDetached(gpgEd.home, part, bodyOf(sigPart))).toContain(`VALIDSIG ${ourEd.fingerprint}`);
  });
});

describe('multipart/signed: gpg signs (Enigmail-style envelope), we verify', () => {
  for (const which of ['ed25519', 'rsa'] as const) {
    it(`gpg ${which} detached signature`, async () => {
      const signer = which === 'rsa' ? gpgRsa : gpgEd;
      const { signature, micalg } = gpgDetachSign(signer, MULTIPART_PART);
      const message = enigmailSigned(MULTIPART_PART, signature, micalg);
      const res = await pgpVerify(message, {
        verificationKeys: [gpgEd.publicKey, gpgRsa.publicKey],
        expectSigned: true,
      });
      expect(res.verification.valid).toBe(true);
      expect(res.verification.signers).toHaveLength(1);
      const signerResult = res.verification.signers[0]!;
      expect(signerResult).toMatchObject({
        format: 'openpgp',
        keyId: signer.fingerprint,
        signatureValid: true,
        trust: 'trusted',
        emailAddresses: [`gpg-${which === 'rsa' ? 'rsa' : 'ed'}@gpg.example.org`],
      });
      expect(signerResult.algorithms.signature).toBe(which === 'rsa' ? 'rsa-pkcs1' : 'ed25519');
      expect(Buffer.from(res.content).toString('latin1')).toBe(MULTIPART_PART);
    });
  }

  it('the same envelope stored with LF line endings still verifies (canonicalised to CRLF)', async () => {
    const { signature, micalg } = gpgDetachSign(gpgEd, MULTIPART_PART);
    const lf = enigmailSigned(MULTIPART_PART, signature, micalg).replace(/\r\n/g, '\n');
    const res = await pgpVerify(lf, { verificationKeys: gpgEd.publicKey });
    expect(res.verification.valid).toBe(true);
  });
});

describe('multipart/encrypted: we sign+encrypt, gpg decrypts and verifies', () => {
  it('one recipient (gpg cv25519), signed with our ed25519 key, not compressed', async () => {
    const out = await pgpEncrypt(MULTIPART_PART, {
      encryptionKeys: gpgEd.publicKey,
      signingKeys: ourEd.privateKey,
    });
    const [versionPart, dataPart] = twoParts(out);
    expect(versionPart).toContain('Content-Type: application/pgp-encrypted');
    expect(bodyOf(versionPart)).toBe('Version: 1\r\n');
    const armored = bodyOf(dataPart);
    const plainFile = join(tmp, 'plain-ed');
    const status = mustGpg(gpgEd.home, ['--status-fd', '1', '--output', plainFile, '--decrypt'], armored);
    expect(status).toContain('DECRYPTION_OKAY');
    expect(status).toContain(`VALIDSIG ${ourEd.fingerprint}`);
    expect(readFileSync(plainFile, 'latin1')).toBe(MULTIPART_PART);
    const packets = mustGpg(gpgEd.home, ['--list-packets'], armored);
    expect(packets).not.toMatch(/compressed packet/);
    expect(packets).toMatch(/encrypted data packet:\s*\n\s*length: .*\n\s*mdc_method: 2/);
  });

  it('several recipients (gpg RSA, gpg cv25519, our own RSA), signed with our RSA key: each gpg party decrypts', async () => {
    const out = await pgpEncrypt(EIGHT_BIT_PART, {
      encryptionKeys: [gpgRsa.publicKey, gpgEd.publicKey, ourRsa.publicKey],
      signingKeys: ourRsa.privateKey,
    });
    const armored = bodyOf(twoParts(out)[1]);
    for (const party of [gpgRsa, gpgEd]) {
      const plainFile = join(tmp, `plain-multi-${party.fingerprint}`);
      const status = mustGpg(party.home, ['--status-fd', '1', '--output', plainFile, '--decrypt'], armored);
      expect(status).toContain('DECRYPTION_OKAY');
      expect(status).toContain(`VALIDSIG ${ourRsa.fingerprint}`);
      // Inside encryption nothing is re-encoded: only line endings are canonical.
      expect(readFileSync(plainFile, 'latin1')).toBe(Buffer.from(EIGHT_BIT_PART, 'utf8').toString('latin1'));
    }
    expect(mustGpg(gpgRsa.home, ['--list-packets'], armored).match(/:pubkey enc packet:/g)).toHaveLength(3);
    // and we decrypt it too, as the third recipient
    const mine = await pgpDecrypt(out, {
      decryptionKeys: ourRsa.privateKey,
      verificationKeys: ourRsa.publicKey,
      expectSigned: true,
    });
    expect(Buffer.from(mine.content).toString('utf8')).toBe(EIGHT_BIT_PART);
  });
});

describe('multipart/encrypted: gpg --encrypt --sign --armor (Enigmail-style envelope), we decrypt and verify', () => {
  it('gpg ed25519 signer, one recipient (our Curve25519 key)', async () => {
    const armored = mustGpg(
      gpgEd.home,
      ['--armor', '--encrypt', '--sign', '-u', gpgEd.fingerprint, '-r', ourEd.fingerprint],
      MULTIPART_PART,
    );
    const res = await pgpDecrypt(enigmailEncrypted(armored), {
      decryptionKeys: ourEd.privateKey,
      verificationKeys: gpgEd.publicKey,
      expectSigned: true,
    });
    expect(res.verification.valid).toBe(true);
    expect(res.verification.signers[0]).toMatchObject({
      keyId: gpgEd.fingerprint,
      trust: 'trusted',
      signatureValid: true,
    });
    expect(Buffer.from(res.content).toString('latin1')).toBe(MULTIPART_PART);
  });

  it('gpg RSA signer, several recipients (our Curve25519 and our RSA key): each of us decrypts', async () => {
    const armored = mustGpg(
      gpgRsa.home,
      [
        '--armor',
        '--encrypt',
        '--sign',
        '-u',
        gpgRsa.fingerprint,
        '-r',
        ourEd.fingerprint,
        '-r',
        ourRsa.fingerprint,
        '-r',
        gpgEd.fingerprint,
      ],
      MULTIPART_PART,
    );
    for (const me of [ourEd, ourRsa]) {
      const res = await pgpDecrypt(enigmailEncrypted(armored), {
        decryptionKeys: me.privateKey,
        verificationKeys: [gpgRsa.publicKey, gpgEd.publicKey],
        expectSigned: true,
      });
      expect(res.verification.signers[0]).toMatchObject({ keyId: gpgRsa.fingerprint, trust: 'trusted' });
      // gpg picks the strongest digest all recipients prefer: SHA-512 with our keys' preferences.
      expect(res.verification.signers[0]!.algorithms).toMatchObject({
        digest: expect.stringMatching(/^sha(256|512)$/),
        signature: 'rsa-pkcs1',
      });
      expect(Buffer.from(res.content).toString('latin1')).toBe(MULTIPART_PART);
    }
  });

  it('RFC 3156 §6.1: gpg-signed multipart/signed, then encrypted separately', async () => {
    const { signature, micalg } = gpgDetachSign(gpgEd, MULTIPART_PART);
    const signed = enigmailSigned(MULTIPART_PART, signature, micalg);
    const armored = mustGpg(gpgEd.home, ['--armor', '--encrypt', '-r', ourEd.fingerprint], signed);
    const res = await pgpDecrypt(enigmailEncrypted(armored), {
      decryptionKeys: ourEd.privateKey,
      verificationKeys: gpgEd.publicKey,
      expectSigned: true,
    });
    expect(res.verification.valid).toBe(true);
    expect(Buffer.from(res.content).toString('latin1')).toBe(MULTIPART_PART);
  });
});
