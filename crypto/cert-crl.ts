import { createPrivateKey, sign, verify, type KeyObject } from 'node:crypto';
import { child, contentOf, der, encodingOf, is, oidOf, readAsn1, Tag, timeOf } from './asn1-der.ts';
import type { CertInfo } from './cert-path.ts';
import { CryptoError } from './types.ts';

/**
 * X.509 certificate revocation lists (RFC 5280 §5): reading them to check a certificate, and
 * writing them (for the development PKI and tests).
 */

export interface ParsedCrl {
  der: Buffer;
  issuerDer: Buffer;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  /** Serial (hex of the INTEGER content octets) → revocation date. */
  revoked: Map<string, Date>;
  tbsDer: Buffer;
  signatureAlgorithmOid: string;
  signature: Buffer;
}

/** Hash used by a certificate or CRL signature algorithm (RSA PKCS#1 v1.5 and ECDSA). */
const SIGNATURE_HASH: ReadonlyMap<string, string> = new Map([
  ['1.2.840.113549.1.1.5', 'sha1'],
  ['1.2.840.113549.1.1.11', 'sha256'],
  ['1.2.840.113549.1.1.12', 'sha384'],
  ['1.2.840.113549.1.1.13', 'sha512'],
  ['1.2.840.10045.4.1', 'sha1'],
  ['1.2.840.10045.4.3.2', 'sha256'],
  ['1.2.840.10045.4.3.3', 'sha384'],
  ['1.2.840.10045.4.3.4', 'sha512'],
]);

/** Parses a CRL from DER or PEM. */
export function parseCrl(input: Uint8Array | string): ParsedCrl {
  let bytes: Buffer;
  if (typeof input === 'string') {
    const m = /-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/.exec(input);
    if (m === null) throw new CryptoError('malformed', 'CRL: no "BEGIN X509 CRL" block in the PEM text');
    bytes = Buffer.from(m[1]!, 'base64');
  } else bytes = Buffer.from(input);
  const list = readAsn1(bytes);
  const tbs = child(list, 0, 'tbsCertList');
  let i = is(tbs.children[0], Tag.INTEGER) ? 1 : 0;
  i++; // signature AlgorithmIdentifier
  const issuerDer = encodingOf(child(tbs, i++, 'CRL issuer'));
  const thisUpdate = timeOf(child(tbs, i++, 'thisUpdate'));
  let nextUpdate: Date | undefined;
  const maybeNext = tbs.children[i];
  if (maybeNext !== undefined && (is(maybeNext, Tag.UTC_TIME) || is(maybeNext, Tag.GENERALIZED_TIME))) {
    nextUpdate = timeOf(maybeNext);
    i++;
  }
  const revoked = new Map<string, Date>();
  const entries = tbs.children[i];
  if (entries !== undefined && is(entries, Tag.SEQUENCE)) {
    for (const entry of entries.children) {
      revoked.set(
        contentOf(child(entry, 0, 'userCertificate')).toString('hex'),
        timeOf(child(entry, 1, 'revocationDate')),
      );
    }
  }
  const sig = contentOf(child(list, 2, 'CRL signature'));
  return {
    der: bytes,
    issuerDer,
    thisUpdate,
    nextUpdate,
    revoked,
    tbsDer: encodingOf(tbs),
    signatureAlgorithmOid: oidOf(child(child(list, 1, 'signatureAlgorithm'), 0, 'algorithm')),
    signature: sig.subarray(1),
  };
}

function crlSignedBy(crl: ParsedCrl, issuer: CertInfo): boolean {
  const hash = SIGNATURE_HASH.get(crl.signatureAlgorithmOid);
  if (hash === undefined || hash === 'sha1') return false;
  try {
    return verify(hash, crl.tbsDer, issuer.x509.publicKey, crl.signature);
  } catch {
    // A signature that cannot be checked does not count: the CRL is ignored.
    return false;
  }
}

export type RevocationState =
  { state: 'good' } | { state: 'revoked'; date: Date } | { state: 'unknown'; why: string };

/** Looks `cert` up in the CRLs its `issuer` signed. */
export function isRevoked(cert: CertInfo, issuer: CertInfo, crls: ParsedCrl[], now: Date): RevocationState {
  const serial = cert.serial.toString('hex');
  let current = false;
  let stale = false;
  for (const crl of crls) {
    if (!crl.issuerDer.equals(cert.issuerDer) || !crlSignedBy(crl, issuer)) continue;
    const date = crl.revoked.get(serial);
    // A revocation is final even in a stale CRL (RFC 5280 §3.3, no removeFromCRL handling here).
    if (date !== undefined && date.getTime() <= now.getTime()) return { state: 'revoked', date };
    if (crl.nextUpdate !== undefined && crl.nextUpdate.getTime() < now.getTime()) stale = true;
    else current = true;
  }
  if (current) return { state: 'good' };
  return {
    state: 'unknown',
    why: stale ? 'the CRL of its issuer is past its nextUpdate' : 'no CRL from its issuer',
  };
}

/** Writes a CRL v2 signed by the CA (RSA: sha256WithRSAEncryption; EC: ecdsa-with-SHA256). */
export function createCrl(opts: {
  ca: { keyPem: string; certPem: string };
  caInfo: CertInfo;
  revoked: Array<{ serial: Buffer; date: Date }>;
  thisUpdate?: Date;
  nextUpdate?: Date;
}): Buffer {
  const key: KeyObject = createPrivateKey(opts.ca.keyPem);
  const isRsa = key.asymmetricKeyType === 'rsa';
  const alg = isRsa
    ? der.sequence(der.oid('1.2.840.113549.1.1.11'), der.null())
    : der.sequence(der.oid('1.2.840.10045.4.3.2'));
  const thisUpdate = opts.thisUpdate ?? new Date(Date.now() - 60_000);
  const nextUpdate = opts.nextUpdate ?? new Date(thisUpdate.getTime() + 7 * 86_400_000);
  const entries = opts.revoked.map((r) => der.sequence(der.integer(r.serial), der.time(r.date)));
  const tbs = der.sequence(
    der.integer(1),
    alg,
    der.raw(opts.caInfo.subjectDer),
    der.time(thisUpdate),
    der.time(nextUpdate),
    ...(entries.length > 0 ? [der.sequence(...entries)] : []),
  );
  const signature = sign('sha256', tbs, key);
  return der.sequence(tbs, alg, der.bitString(signature));
}
