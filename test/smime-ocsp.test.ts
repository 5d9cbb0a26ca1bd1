import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { readAsn1 } from '../crypto/asn1-der.ts';
import { buildOcspRequest, checkOcspResponse, ocspUrlsOf } from '../crypto/cert-ocsp.ts';
import { parseCertificate } from '../crypto/cert-path.ts';
import { createCa, type KeyAndCert } from '../crypto/dev-pki.ts';
import { sign, verify } from '../crypto/smime.ts';
import { CryptoError } from '../crypto/types.ts';
import {
  crlRevoking,
  makePki,
  ocspIndexLine,
  openssl,
  opensslIssue,
  opensslOcspRespond,
  readBytes,
  signingKey,
  tempDir,
  type SmimePki,
} from './smime-fixtures.ts';

/**
 * OCSP (RFC 6960) against the real `openssl ocsp` responder, run in one-shot mode on request and
 * response files: our request in, its answer through `checkOcspResponse` and `verify`.
 */

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const AIA_URL = 'http://ocsp.courrier.test/ca';
let pki: SmimePki;
let responder: KeyAndCert;
let noEku: KeyAndCert;
let foreignResponder: KeyAndCert;
let withAia: KeyAndCert;
let index: string[];
const content = 'Content-Type: text/plain\r\n\r\nCompte rendu opératoire\r\n';

beforeAll(() => {
  pki = makePki();
  const leafExt = (extra = '') =>
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' +
    `extendedKeyUsage=emailProtection\nsubjectAltName=email:dr.aia@example.org\n${extra}`;
  responder = opensslIssue(pki.ca, {
    commonName: 'Courrier OCSP Responder',
    ext: 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning',
  });
  noEku = opensslIssue(pki.ca, {
    commonName: 'Not A Responder',
    ext: 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection',
  });
  const otherCa = createCa({ commonName: 'Courrier Test S/MIME CA', organization: 'Other' });
  foreignResponder = opensslIssue(otherCa, {
    commonName: 'Courrier OCSP Responder',
    ext: 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning',
  });
  withAia = opensslIssue(pki.ca, {
    commonName: 'Dr Aia',
    ext: leafExt(`authorityInfoAccess=OCSP;URI:${AIA_URL}`),
  });
  // Alice good, Bob revoked (key compromise), Carol not in the database (unknown).
  index = [
    ocspIndexLine(pki.alice.certPem, 'V'),
    ocspIndexLine(pki.bob.certPem, { revokedAt: new Date(Date.now() - DAY), reason: 'keyCompromise' }),
  ];
});

/** Our request for `who`, answered by openssl. */
function ask(
  who: KeyAndCert,
  opts: { signer?: KeyAndCert; args?: string[]; hash?: 'sha1' | 'sha256'; nonce?: Uint8Array } = {},
): Buffer {
  const request = buildOcspRequest(who.certPem, pki.ca.certPem, {
    ...(opts.hash === undefined ? {} : { hashAlgorithm: opts.hash }),
    ...(opts.nonce === undefined ? {} : { nonce: opts.nonce }),
  });
  return opensslOcspRespond({
    ca: pki.ca,
    signer: opts.signer ?? pki.ca,
    index,
    request,
    ...(opts.args === undefined ? {} : { args: opts.args }),
  });
}

const check = (response: Uint8Array, who: KeyAndCert, extra: { now?: Date; nonce?: Uint8Array } = {}) =>
  checkOcspResponse(response, { cert: who.certPem, issuer: pki.ca.certPem, ...extra });

function refusal(run: () => unknown): CryptoError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(CryptoError);
    return err as CryptoError;
  }
  throw new Error('expected a refusal');
}

describe('OCSP request: openssl reads what we write', () => {
  it('SHA-1 CertID by default, SHA-256 on request, with a nonce', () => {
    const t = tempDir('courrier-ocsp-req-');
    try {
      const nonce = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
      for (const [hash, name] of [
        ['sha1', 'sha1'],
        ['sha256', 'sha256'],
      ] as const) {
        const req = buildOcspRequest(pki.alice.certPem, pki.ca.certPem, { hashAlgorithm: hash, nonce });
        const r = openssl(['ocsp', '-reqin', t.file(`${hash}.der`, req), '-req_text']);
        expect(r.ok, r.stderr).toBe(true);
        const text = r.stdout.toString();
        expect(text).toContain(`Hash Algorithm: ${name}`);
        expect(text).toContain(`Serial Number: ${parseCertificate(pki.alice.certPem).x509.serialNumber}`);
        expect(text).toMatch(/OCSP Nonce:\s*\n\s*0410 ?00112233445566778899AABBCCDDEEFF/i);
      }
      // And openssl's own request for the same certificate is byte-identical to ours (no nonce).
      const ours = buildOcspRequest(pki.alice.certPem, pki.ca.certPem);
      const theirs = t.file('theirs.der');
      const r = openssl([
        'ocsp',
        '-issuer',
        t.file('ca.pem', pki.ca.certPem),
        '-cert',
        t.file('alice.pem', pki.alice.certPem),
        '-no_nonce',
        '-reqout',
        theirs,
      ]);
      expect(r.ok, r.stderr).toBe(true);
      expect(ours.equals(readBytes(theirs))).toBe(true);
    } finally {
      t.dispose();
    }
  });

  it('reads the AIA OCSP URL', () => {
    expect(ocspUrlsOf(withAia.certPem)).toEqual([AIA_URL]);
    expect(ocspUrlsOf(pki.alice.certPem)).toEqual([]);
  });
});

describe('OCSP responses from openssl ocsp', () => {
  it('good, revoked (with date and reason) and unknown, signed by the CA', () => {
    const good = check(ask(pki.alice), pki.alice);
    expect(good).toMatchObject({ status: 'good', responder: 'issuer' });
    expect(good.nextUpdate!.getTime() - good.thisUpdate.getTime()).toBe(DAY);
    const revoked = check(ask(pki.bob), pki.bob);
    expect(revoked).toMatchObject({ status: 'revoked', reason: 'keyCompromise' });
    expect(Math.abs(revoked.revokedAt!.getTime() - (Date.now() - DAY))).toBeLessThan(60_000);
    expect(check(ask(pki.carol), pki.carol).status).toBe('unknown');
  });

  it('SHA-256 CertID, responder identified by key hash, nonce echoed', () => {
    expect(check(ask(pki.alice, { hash: 'sha256' }), pki.alice).status).toBe('good');
    expect(check(ask(pki.bob, { args: ['-ndays', '1', '-resp_key_id'] }), pki.bob).status).toBe('revoked');
    const nonce = randomBytes(16);
    const answered = ask(pki.alice, { nonce });
    expect(check(answered, pki.alice, { nonce }).status).toBe('good');
    expect(refusal(() => check(answered, pki.alice, { nonce: randomBytes(16) })).message).toMatch(/nonce/);
    // A response to a request without nonce does not satisfy one that had it.
    expect(refusal(() => check(ask(pki.alice), pki.alice, { nonce })).message).toMatch(/nonce/);
  });

  it('delegated responder with id-kp-OCSPSigning, issued by the CA: accepted', () => {
    const r = check(ask(pki.bob, { signer: responder }), pki.bob);
    expect(r).toMatchObject({ status: 'revoked', responder: 'CN=Courrier OCSP Responder' });
    // Responder certificate expired by then (30 days): refused even though the answer is about now.
    const later = new Date(Date.now() + 40 * DAY);
    expect(refusal(() => check(ask(pki.bob, { signer: responder }), pki.bob, { now: later })).code).toBe(
      'key-expired',
    );
  });

  it('responder certificate without the OCSPSigning EKU: refused', () => {
    const e = refusal(() => check(ask(pki.bob, { signer: noEku }), pki.bob));
    expect(e.code).toBe('wrong-key-usage');
    expect(e.message).toMatch(/OCSPSigning/);
  });

  it('responder with the EKU but issued by another CA (same CA name), or not included: refused', () => {
    expect(refusal(() => check(ask(pki.alice, { signer: foreignResponder }), pki.alice)).message).toMatch(
      /not issued by the certificate's issuer/,
    );
    const e = refusal(() =>
      check(ask(pki.alice, { signer: responder, args: ['-ndays', '1', '-resp_no_certs'] }), pki.alice),
    );
    expect(e.message).toMatch(/neither the issuer nor a certificate included/);
  });

  it('an answer about another serial: refused', () => {
    const e = refusal(() => check(ask(pki.carol), pki.alice));
    expect(e.code).toBe('untrusted');
    expect(e.message).toMatch(/CertID differs/);
  });

  it('stale (past nextUpdate), from the future, or without nextUpdate and too old: refused', () => {
    const response = ask(pki.alice);
    expect(
      refusal(() => check(response, pki.alice, { now: new Date(Date.now() + 2 * DAY) })).message,
    ).toMatch(/stale/);
    expect(refusal(() => check(response, pki.alice, { now: new Date(Date.now() - HOUR) })).message).toMatch(
      /in the future/,
    );
    // Within the 5-minute skew allowance both ways.
    expect(check(response, pki.alice, { now: new Date(Date.now() - 2 * 60_000) }).status).toBe('good');
    const noNext = ask(pki.alice, { args: [] });
    expect(check(noNext, pki.alice).nextUpdate).toBeUndefined();
    expect(refusal(() => check(noNext, pki.alice, { now: new Date(Date.now() + 2 * HOUR) })).message).toMatch(
      /no nextUpdate/,
    );
  });

  it('tampered response data or signature: refused', () => {
    const response = ask(pki.alice);
    // Change the last digit of producedAt / thisUpdate ("...Z" GeneralizedTime) in the signed data.
    const tampered = Buffer.from(response);
    const at = tampered.indexOf(Buffer.from('Z', 'latin1'));
    tampered[at - 1] = tampered[at - 1] === 0x30 ? 0x31 : 0x30;
    expect(refusal(() => check(tampered, pki.alice)).code).toBe('invalid-signature');
    // Flip the last octet of the signature BIT STRING (OCSPResponse / [0] / ResponseBytes / OCTET
    // STRING holding the BasicOCSPResponse, whose third element is the signature).
    const octets = readAsn1(response).children[1]!.children[0]!.children[1]!;
    const signature = readAsn1(response.subarray(octets.start, octets.end)).children[2]!;
    const flipped = Buffer.from(response);
    flipped[octets.start + signature.end - 1]! ^= 0x01;
    expect(refusal(() => check(flipped, pki.alice)).code).toBe('invalid-signature');
  });

  it('SHA-1 signed response: refused as weak', () => {
    expect(
      refusal(() => check(ask(pki.alice, { args: ['-ndays', '1', '-rmd', 'sha1'] }), pki.alice)).code,
    ).toBe('weak-algorithm');
  });

  it('responder error status (tryLater), garbage, truncations, bit flips: a CryptoError, never a crash', () => {
    const tryLater = Buffer.from([0x30, 0x03, 0x0a, 0x01, 0x03]);
    expect(refusal(() => check(tryLater, pki.alice)).message).toMatch(/tryLater/);
    for (const junk of [
      Buffer.alloc(0),
      Buffer.from('not der'),
      randomBytes(300),
      Buffer.from([0x30, 0x84, 0xff]),
    ])
      expect(refusal(() => check(junk, pki.alice)).code).toBe('malformed');
    const response = ask(pki.alice, { signer: responder });
    const started = performance.now();
    for (let n = 1; n < response.length; n++) refusal(() => check(response.subarray(0, n), pki.alice));
    for (let n = 0; n < 400; n++) {
      const bad = Buffer.from(response);
      bad[(n * 7919) % bad.length]! ^= 1 << (n % 8);
      try {
        check(bad, pki.alice);
      } catch (err) {
        expect(err).toBeInstanceOf(CryptoError);
      }
    }
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});

describe('verify with OCSP', () => {
  /** A fetcher that answers through openssl ocsp with the given database, and records the URLs. */
  const fetcher = (db: string[], urls: string[] = []) => {
    return async (request: Uint8Array, url: string) => {
      urls.push(url);
      return opensslOcspRespond({ ca: pki.ca, signer: responder, index: db, request });
    };
  };
  const anchors = () => [pki.ca.certPem];

  it('signer good per OCSP (AIA URL, fetcher injected): trusted, even with requireRevocationCheck and no CRL', async () => {
    const signed = await sign({ message: content, signingKeys: signingKey(withAia) });
    const urls: string[] = [];
    const r = await verify({
      message: signed,
      trustAnchors: anchors(),
      fetchOcsp: fetcher([ocspIndexLine(withAia.certPem, 'V')], urls),
      requireRevocationCheck: true,
    });
    expect(urls).toEqual([AIA_URL]);
    expect(r.valid).toBe(true);
    expect(r.signers[0]!.trust).toBe('trusted');
    // With a nonce, which openssl echoes.
    const withNonce = await verify({
      message: signed,
      trustAnchors: anchors(),
      fetchOcsp: fetcher([ocspIndexLine(withAia.certPem, 'V')]),
      ocspNonce: true,
      requireRevocationCheck: true,
    });
    expect(withNonce.valid).toBe(true);
  });

  it('signer revoked per OCSP: revoked, and key-revoked with expectSigned', async () => {
    const signed = await sign({ message: content, signingKeys: signingKey(withAia) });
    const db = [
      ocspIndexLine(withAia.certPem, { revokedAt: new Date(Date.now() - HOUR), reason: 'keyCompromise' }),
    ];
    const r = await verify({ message: signed, trustAnchors: anchors(), fetchOcsp: fetcher(db) });
    expect(r.signers[0]).toMatchObject({ signatureValid: true, trust: 'revoked' });
    expect(r.problems.join('\n')).toMatch(/revoked on .* \(OCSP, keyCompromise\)/);
    await expect(
      verify({ message: signed, trustAnchors: anchors(), fetchOcsp: fetcher(db), expectSigned: true }),
    ).rejects.toMatchObject({ code: 'key-revoked' });
  });

  it('unknown to the responder, fetch failure, garbage answer: revocation-unknown only when required', async () => {
    const signed = await sign({ message: content, signingKeys: signingKey(withAia) });
    const fetchers = [
      fetcher([]),
      async () => {
        throw new Error('connect ECONNREFUSED');
      },
      async () => randomBytes(64),
    ];
    for (const fetchOcsp of fetchers) {
      const strict = await verify({
        message: signed,
        trustAnchors: anchors(),
        fetchOcsp,
        requireRevocationCheck: true,
      });
      expect(strict.signers[0]!.trust).toBe('revocation-unknown');
      expect(strict.problems.join('\n')).toMatch(/OCSP: /);
      expect((await verify({ message: signed, trustAnchors: anchors(), fetchOcsp })).valid).toBe(true);
    }
  });

  it('no OCSP request for a signature that does not verify, nor for a chain to no anchor', async () => {
    const ascii = 'Content-Type: text/plain\r\n\r\nCompte rendu\r\n';
    const signed = Buffer.from(await sign({ message: ascii, signingKeys: signingKey(withAia) }));
    const urls: string[] = [];
    const fetchOcsp = fetcher([ocspIndexLine(withAia.certPem, 'V')], urls);
    const tampered = Buffer.from(signed.toString('latin1').replace('Compte rendu', 'Compte-rendu'), 'latin1');
    const r1 = await verify({ message: tampered, trustAnchors: anchors(), fetchOcsp });
    expect(r1.signers[0]!.signatureValid).toBe(false);
    const r2 = await verify({ message: signed, trustAnchors: [pki.alice.certPem], fetchOcsp });
    expect(r2.signers[0]!.trust).toBe('untrusted');
    expect(urls).toEqual([]);
  });

  it('pre-fetched responses and a configured responder URL for a certificate without AIA', async () => {
    const alice = await sign({ message: content, signingKeys: signingKey(pki.alice) });
    const bob = await sign({ message: content, signingKeys: signingKey(pki.bob) });
    // A cache holding answers for several certificates: each is used for its own CertID.
    const cached = [ask(pki.carol), ask(pki.alice), ask(pki.bob, { signer: responder })];
    const base = { trustAnchors: anchors(), ocspResponses: cached, requireRevocationCheck: true };
    expect((await verify({ message: alice, ...base })).valid).toBe(true);
    expect((await verify({ message: bob, ...base })).signers[0]!.trust).toBe('revoked');
    // A cached answer signed by a non-responder is not believed.
    const forged = [ask(pki.alice, { signer: noEku })];
    const r = await verify({ message: alice, ...base, ocspResponses: forged });
    expect(r.signers[0]!.trust).toBe('revocation-unknown');
    expect(r.problems.join('\n')).toMatch(/OCSPSigning/);
    // Alice has no AIA: the configured responder URL is used.
    const urls: string[] = [];
    const viaUrl = await verify({
      message: alice,
      trustAnchors: anchors(),
      fetchOcsp: fetcher(index, urls),
      ocspUrl: 'http://ocsp.local/',
      requireRevocationCheck: true,
    });
    expect(urls).toEqual(['http://ocsp.local/']);
    expect(viaUrl.valid).toBe(true);
  });

  it('CRL and OCSP together: revoked by either is revoked; a current CRL is enough when OCSP has no answer', async () => {
    const alice = await sign({ message: content, signingKeys: signingKey(pki.alice) });
    const ocspRevoked = [
      opensslOcspRespond({
        ca: pki.ca,
        signer: pki.ca,
        index: [ocspIndexLine(pki.alice.certPem, { revokedAt: new Date(Date.now() - HOUR) })],
        request: buildOcspRequest(pki.alice.certPem, pki.ca.certPem),
      }),
    ];
    const base = { message: alice, trustAnchors: anchors(), requireRevocationCheck: true };
    const noneRevoked = crlRevoking(pki, []);
    const aliceRevoked = crlRevoking(pki, [pki.alice]);
    expect(
      (await verify({ ...base, crls: [noneRevoked], ocspResponses: ocspRevoked })).signers[0]!.trust,
    ).toBe('revoked');
    expect(
      (await verify({ ...base, crls: [aliceRevoked], ocspResponses: [ask(pki.alice)] })).signers[0]!.trust,
    ).toBe('revoked');
    expect((await verify({ ...base, crls: [noneRevoked], ocspResponses: [ask(pki.carol)] })).valid).toBe(
      true,
    );
    await expect(verify({ ...base, fetchOcsp: 'http://x' as never })).rejects.toMatchObject({
      code: 'unknown-option',
    });
  });
});
