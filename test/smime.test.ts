import { beforeAll, describe, expect, it } from 'vitest';
import type { KeyAndCert } from '../crypto/dev-pki.ts';
import { decrypt, encrypt, sign, verify } from '../crypto/smime.ts';
import { canonicalizeEntity, splitEntity } from '../crypto/smime-mime.ts';
import { CryptoError } from '../crypto/types.ts';
import { issueEcPerson, makePki, sampleMessage, signingKey, type SmimePki } from './smime-fixtures.ts';

let pki: SmimePki;
let ecSigner: KeyAndCert;
beforeAll(() => {
  pki = makePki();
  ecSigner = issueEcPerson(pki);
});

const text = (b: Uint8Array) => Buffer.from(b).toString('latin1');

describe('sign / verify', () => {
  it('signs detached (multipart/signed) with the right protocol and micalg, and verifies', async () => {
    for (const digest of ['sha256', 'sha384', 'sha512'] as const) {
      const signed = await sign({ message: sampleMessage, signingKeys: signingKey(pki.alice), digest });
      const head = splitEntity(text(signed));
      const ct = head.headers.find((h) => h.name === 'content-type')!.value;
      expect(ct).toContain('multipart/signed');
      expect(ct).toContain('protocol="application/pkcs7-signature"');
      expect(ct).toContain(`micalg=sha-${digest.slice(3)}`);
      // Outer headers stay outside, readable.
      expect(head.headers.map((h) => h.name)).toEqual(expect.arrayContaining(['from', 'to', 'subject']));
      const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
      expect(r.problems).toEqual([]);
      expect(r.valid).toBe(true);
      expect(r.signers[0]).toMatchObject({
        identity: 'CN=Alice',
        emailAddresses: ['alice@example.org'],
        signatureValid: true,
        trust: 'trusted',
        algorithms: { digest, signature: 'rsa-pkcs1' },
      });
      expect(r.signers[0]!.signedAt).toBeInstanceOf(Date);
    }
  });

  it('signs opaque SignedData and returns its content on verify', async () => {
    const signed = await sign({
      message: sampleMessage,
      signingKeys: signingKey(pki.alice),
      detached: false,
    });
    expect(text(signed)).toMatch(
      /Content-Type: application\/pkcs7-mime; smime-type=signed-data; name="smime.p7m"/,
    );
    const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(r.valid).toBe(true);
    expect(text(r.content)).toContain('Content-Type: text/plain; charset=utf-8');
  });

  it('supports RSA-PSS, ECDSA P-256 and two signers at once', async () => {
    const pss = await sign({
      message: sampleMessage,
      signingKeys: signingKey(pki.alice),
      rsaPadding: 'pss',
      digest: 'sha384',
    });
    const rp = await verify({ message: pss, trustAnchors: [pki.ca.certPem] });
    expect(rp.valid).toBe(true);
    expect(rp.signers[0]!.algorithms).toEqual({ digest: 'sha384', signature: 'rsa-pss' });
    const ec = await sign({ message: sampleMessage, signingKeys: signingKey(ecSigner) });
    const re = await verify({ message: ec, trustAnchors: [pki.ca.certPem] });
    expect(re.valid).toBe(true);
    expect(re.signers[0]!.algorithms.signature).toBe('ecdsa');
    const two = await sign({
      message: sampleMessage,
      signingKeys: [signingKey(pki.alice), signingKey(pki.bob)],
    });
    const rt = await verify({ message: two, trustAnchors: [pki.ca.certPem] });
    expect(rt.valid).toBe(true);
    expect(rt.signers.map((s) => s.identity).sort()).toEqual(['CN=Alice', 'CN=Bob']);
  });

  it('canonicalises before signing: 8-bit re-encoded, and the signature survives LF-only storage', async () => {
    const lf = sampleMessage.replace(/\r\n/g, '\n');
    const signed = await sign({ message: lf, signingKeys: signingKey(pki.alice) });
    const s = text(signed);
    expect(/[\x80-\xff]/.test(s)).toBe(false);
    expect(s).toContain('Content-Transfer-Encoding: base64');
    expect(s).not.toMatch(/(?<!\r)\n/);
    // A Unix mailbox turns CRLF into LF; verification restores the canonical form.
    const stored = s.replace(/\r\n/g, '\n');
    expect((await verify({ message: stored, trustAnchors: [pki.ca.certPem] })).valid).toBe(true);
  });

  it('canonicalises multipart trees part by part', () => {
    const entity =
      'Content-Type: multipart/mixed; boundary="b1"\n\npreamble\n--b1\nContent-Type: text/plain\n\nplain ascii\n--b1\n' +
      'Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\nd\xe9j\xe0\n--b1--\n';
    const c = canonicalizeEntity(entity);
    expect(c).toContain('--b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b1\r\n');
    expect(c).toContain(
      'Content-Transfer-Encoding: base64\r\n\r\n' + Buffer.from('d\xe9j\xe0', 'latin1').toString('base64'),
    );
    expect(c.endsWith('--b1--\r\n')).toBe(true);
    expect(c).not.toMatch(/[\x80-\xff]/);
  });

  it('rejects unknown options, a mismatched key and a public key as signing key', async () => {
    await expect(
      sign({ message: 'x', signingKeys: signingKey(pki.alice), digset: 'sha1' } as never),
    ).rejects.toMatchObject({ code: 'unknown-option' });
    await expect(
      sign({ message: 'x', signingKeys: { privateKey: pki.bob.keyPem, certificate: pki.alice.certPem } }),
    ).rejects.toMatchObject({
      code: 'no-matching-key',
    });
    const err = await sign({
      message: 'x',
      signingKeys: { privateKey: 'not a key', certificate: pki.alice.certPem },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CryptoError);
    expect((err as CryptoError).code).toBe('malformed');
  });

  it('private keys never appear in error messages', async () => {
    const err = (await sign({
      message: 'x',
      signingKeys: { privateKey: pki.bob.keyPem, certificate: pki.alice.certPem },
    }).catch((e: unknown) => e)) as Error;
    const keyBody = pki.bob.keyPem.split('\n')[1]!;
    expect(`${err.message} ${String(err.cause ?? '')}`).not.toContain(keyBody);
  });
});

describe('encrypt / decrypt', () => {
  const dk = (k: KeyAndCert) => ({ privateKey: k.keyPem, certificate: k.certPem });

  it('EnvelopedData AES-256-CBC + RSA-OAEP by default, with the right MIME type', async () => {
    const enc = await encrypt({ message: sampleMessage, encryptionKeys: [pki.bob.certPem] });
    expect(text(enc)).toContain(
      'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"',
    );
    expect(text(enc)).toContain('Subject: Lettre de liaison');
    expect(text(enc)).not.toContain('Compte rendu');
    const d = await decrypt({ message: enc, decryptionKeys: dk(pki.bob) });
    expect(d.algorithms).toEqual({ keyTransport: 'rsa-oaep', contentEncryption: 'aes-256-cbc' });
    expect(d.type).toBe('enveloped-data');
    expect(Buffer.from(d.data).toString('utf8')).toContain('Température 38,5 °C.');
    expect(Buffer.from(d.data).toString('utf8')).toContain('From: Dr Alice');
  });

  it('AuthEnvelopedData AES-256-GCM for three recipients plus the sender', async () => {
    const enc = await encrypt({
      message: sampleMessage,
      encryptionKeys: [pki.bob.certPem, pki.carol.certPem, pki.alice.certPem],
      includeSenderCertificate: pki.alice.certPem,
      authenticated: true,
    });
    expect(text(enc)).toContain('smime-type=authEnveloped-data');
    for (const k of [pki.alice, pki.bob, pki.carol]) {
      const d = await decrypt({ message: enc, decryptionKeys: dk(k) });
      expect(d.algorithms.contentEncryption).toBe('aes-256-gcm');
      expect(d.type).toBe('authEnveloped-data');
    }
  });

  it('AES-128 and PKCS#1 v1.5 key transport on request (flagged as legacy on decrypt)', async () => {
    const enc = await encrypt({
      message: sampleMessage,
      encryptionKeys: pki.bob.certPem,
      aesKeyBits: 128,
      keyTransport: 'rsa-pkcs1',
    });
    const d = await decrypt({ message: enc, decryptionKeys: [dk(pki.alice), dk(pki.bob)] });
    expect(d.algorithms).toEqual({ keyTransport: 'rsa-pkcs1', contentEncryption: 'aes-128-cbc' });
    expect(d.warnings).toEqual(['legacy RSA PKCS#1 v1.5 key transport']);
  });

  it('no-matching-key when we are not a recipient; integrity-failed on a modified GCM body', async () => {
    const enc = await encrypt({
      message: sampleMessage,
      encryptionKeys: pki.bob.certPem,
      authenticated: true,
    });
    await expect(decrypt({ message: enc, decryptionKeys: dk(pki.carol) })).rejects.toMatchObject({
      code: 'no-matching-key',
    });
    const s = text(enc);
    const bodyStart = s.indexOf('\r\n\r\n') + 4;
    const der = Buffer.from(s.slice(bodyStart), 'base64');
    der[der.length - 40]! ^= 1; // inside the ciphertext, before the 16-byte tag's OCTET STRING
    await expect(decrypt({ message: der, decryptionKeys: dk(pki.bob) })).rejects.toMatchObject({
      code: 'integrity-failed',
    });
  });

  it('refuses EC recipients and certificates without keyEncipherment', async () => {
    await expect(encrypt({ message: 'x', encryptionKeys: ecSigner.certPem })).rejects.toMatchObject({
      code: 'unsupported',
    });
    await expect(encrypt({ message: 'x', encryptionKeys: pki.ca.certPem })).rejects.toMatchObject({
      code: 'wrong-key-usage',
    });
  });

  it('sign then encrypt then decrypt then verify', async () => {
    const signed = await sign({ message: sampleMessage, signingKeys: signingKey(pki.alice) });
    const enc = await encrypt({ message: signed, encryptionKeys: pki.bob.certPem, authenticated: true });
    const d = await decrypt({ message: enc, decryptionKeys: dk(pki.bob) });
    const v = await verify({ message: d.data, trustAnchors: [pki.ca.certPem], expectSigned: true });
    expect(v.valid).toBe(true);
  });
});

describe('base64Lines', () => {
  it('matches Buffer base64 in 76-character CRLF lines for every tail length', async () => {
    const { base64Lines } = await import('../crypto/smime-mime.ts');
    const { randomBytes } = await import('node:crypto');
    for (const len of [0, 1, 2, 3, 56, 57, 58, 113, 114, 115, 10_000]) {
      const b = randomBytes(len);
      const expected = (b.toString('base64').match(/.{1,76}/g) ?? []).map((l) => l + '\r\n').join('');
      expect(base64Lines(b).toString('latin1')).toBe(expected);
    }
  });
});
