import { X509Certificate, type KeyObject } from 'node:crypto';
import {
  child,
  contentOf,
  encodingOf,
  is,
  oidOf,
  readAsn1,
  Tag,
  TagClass,
  type Asn1Node,
} from './asn1-der.ts';
import { isRevoked, type ParsedCrl } from './cert-crl.ts';
import type { OcspOutcome } from './cert-ocsp.ts';
import { CryptoError, type TrustStatus } from './types.ts';

/**
 * Certificates for S/MIME: reading them (OpenSSL through `X509Certificate`, plus the fields it
 * does not expose, from the DER), and validating a signer's chain to configured trust anchors
 * (RFC 5280 §6, the parts S/MIME needs: names and signatures up the chain, validity periods,
 * CA flag, key usage, CRL and OCSP revocation, algorithm strength).
 */

/** A certificate as PEM text, DER bytes or a parsed `X509Certificate`. */
export type CertificateInput = X509Certificate | string | Uint8Array;

export interface CertInfo {
  x509: X509Certificate;
  der: Buffer;
  /** DER of the issuer and subject Names, as encoded in the certificate. */
  issuerDer: Buffer;
  subjectDer: Buffer;
  /** Content octets of the serialNumber INTEGER. */
  serial: Buffer;
  /** The serialNumber INTEGER, whole TLV. */
  serialDer: Buffer;
  signatureAlgorithmOid: string;
  /** Key usage bit names (RFC 5280 §4.2.1.3), undefined when the extension is absent. */
  keyUsage: Set<string> | undefined;
  /** Extended key usage OIDs, undefined when the extension is absent. */
  extKeyUsage: string[] | undefined;
  subjectKeyIdentifier: Buffer | undefined;
}

export const OID_EMAIL_PROTECTION = '1.3.6.1.5.5.7.3.4';
const OID_ANY_EKU = '2.5.29.37.0';
const KEY_USAGE_BITS = [
  'digitalSignature',
  'nonRepudiation',
  'keyEncipherment',
  'dataEncipherment',
  'keyAgreement',
  'keyCertSign',
  'cRLSign',
  'encipherOnly',
  'decipherOnly',
] as const;

/** Signature algorithms refused anywhere below a trust anchor: MD2, MD5, SHA-1 (RFC 8551 §2.2). */
export const WEAK_SIGNATURE_OIDS: ReadonlyMap<string, string> = new Map([
  ['1.2.840.113549.1.1.2', 'md2WithRSAEncryption'],
  ['1.2.840.113549.1.1.4', 'md5WithRSAEncryption'],
  ['1.2.840.113549.1.1.5', 'sha1WithRSAEncryption'],
  ['1.2.840.10045.4.1', 'ecdsa-with-SHA1'],
  ['1.2.840.10040.4.3', 'dsa-with-sha1'],
]);

export const MIN_RSA_BITS = 2048;
const MAX_CHAIN = 8;

/** Parses a certificate; a clear `malformed` error for anything unreadable. */
export function parseCertificate(input: CertificateInput): CertInfo {
  let x509: X509Certificate;
  try {
    x509 =
      input instanceof X509Certificate
        ? input
        : new X509Certificate(typeof input === 'string' ? input : Buffer.from(input));
  } catch (cause) {
    throw new CryptoError('malformed', 'certificate could not be parsed', { cause });
  }
  return describeCertificate(x509);
}

/** Parses certificates from DER already read out of a CMS structure. */
export function certificateFromDer(der: Buffer): CertInfo {
  return parseCertificate(der);
}

function describeCertificate(x509: X509Certificate): CertInfo {
  try {
    // OpenSSL decodes the key lazily: a damaged SubjectPublicKeyInfo would throw later, anywhere.
    void x509.publicKey;
  } catch (cause) {
    throw new CryptoError('malformed', 'certificate public key could not be read', { cause });
  }
  const der = Buffer.from(x509.raw);
  const cert = readAsn1(der);
  const tbs = child(cert, 0, 'tbsCertificate');
  const hasVersion = is(tbs.children[0], 0, TagClass.CONTEXT);
  const at = (i: number, what: string) => child(tbs, hasVersion ? i + 1 : i, what);
  const serialNode = at(0, 'serialNumber');
  const info: CertInfo = {
    x509,
    der,
    issuerDer: encodingOf(at(2, 'issuer')),
    subjectDer: encodingOf(at(4, 'subject')),
    serial: contentOf(serialNode),
    serialDer: encodingOf(serialNode),
    signatureAlgorithmOid: oidOf(child(child(cert, 1, 'signatureAlgorithm'), 0, 'algorithm')),
    keyUsage: undefined,
    extKeyUsage: undefined,
    subjectKeyIdentifier: undefined,
  };
  const extsWrapper = tbs.children.find((c) => is(c, 3, TagClass.CONTEXT));
  for (const ext of extsWrapper?.children[0]?.children ?? []) {
    const id = oidOf(ext.children[0]);
    const valueNode = ext.children[ext.children.length - 1];
    if (valueNode === undefined || !is(valueNode, Tag.OCTET_STRING)) continue;
    const value = readAsn1(contentOf(valueNode));
    if (id === '2.5.29.15') info.keyUsage = keyUsageNames(value);
    else if (id === '2.5.29.37') info.extKeyUsage = value.children.map((c) => oidOf(c));
    else if (id === '2.5.29.14') info.subjectKeyIdentifier = Buffer.from(contentOf(value));
  }
  return info;
}

function keyUsageNames(bits: Asn1Node): Set<string> {
  const bytes = contentOf(bits).subarray(1);
  const names = new Set<string>();
  KEY_USAGE_BITS.forEach((name, i) => {
    const byte = bytes[i >> 3];
    if (byte !== undefined && (byte & (0x80 >> (i & 7))) !== 0) names.add(name);
  });
  return names;
}

/** Subject DN on one line, RFC 4514 order as OpenSSL prints it (`CN=..., O=...`). */
export function subjectName(cert: CertInfo): string {
  return cert.x509.subject.split('\n').join(', ');
}

export function issuerName(cert: CertInfo): string {
  return cert.x509.issuer.split('\n').join(', ');
}

/** `issuer DN + serial`, the keyId of SignerResult. */
export function keyIdOf(cert: CertInfo): string {
  return `${issuerName(cert)} / serial ${cert.serial.toString('hex')}`;
}

/** rfc822Name entries of the subjectAltName, plus an emailAddress in the subject DN. */
export function emailAddressesOf(cert: CertInfo): string[] {
  const out = new Set<string>();
  for (const part of (cert.x509.subjectAltName ?? '').split(', ')) {
    if (part.startsWith('email:')) out.add(part.slice(6).toLowerCase());
  }
  const m = /(?:^|\n)emailAddress=([^\n]+)/.exec(cert.x509.subject);
  if (m !== null) out.add(m[1]!.toLowerCase());
  return [...out];
}

/** Problems with a public key's strength: RSA under 2048 bits; EC other than P-256/384/521. */
export function keyWeakness(key: KeyObject): string | undefined {
  if (key.asymmetricKeyType === 'rsa' || key.asymmetricKeyType === 'rsa-pss') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) return `RSA key of ${bits} bits (at least ${MIN_RSA_BITS} required)`;
    return undefined;
  }
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve ?? '';
    if (!['prime256v1', 'secp384r1', 'secp521r1'].includes(curve))
      return `EC curve ${curve || 'unknown'} not accepted`;
    return undefined;
  }
  return `key type ${String(key.asymmetricKeyType)} not accepted for S/MIME`;
}

/** Why an end-entity certificate may not be used for `purpose`, or undefined (RFC 8550 §4.4). */
export function usageProblem(cert: CertInfo, purpose: 'sign' | 'encrypt'): string | undefined {
  if (cert.keyUsage !== undefined) {
    if (
      purpose === 'sign' &&
      !cert.keyUsage.has('digitalSignature') &&
      !cert.keyUsage.has('nonRepudiation')
    ) {
      return 'key usage does not allow digitalSignature or nonRepudiation';
    }
    if (purpose === 'encrypt' && !cert.keyUsage.has('keyEncipherment')) {
      return 'key usage does not allow keyEncipherment';
    }
  }
  if (
    cert.extKeyUsage !== undefined &&
    !cert.extKeyUsage.includes(OID_EMAIL_PROTECTION) &&
    !cert.extKeyUsage.includes(OID_ANY_EKU)
  ) {
    return 'extended key usage does not include emailProtection';
  }
  return undefined;
}

export function validityProblem(
  cert: CertInfo,
  now: Date,
): { status: 'expired' | 'not-yet-valid'; problem: string } | undefined {
  if (now.getTime() > cert.x509.validToDate.getTime()) {
    return {
      status: 'expired',
      problem: `certificate "${subjectName(cert)}" expired on ${cert.x509.validToDate.toISOString()}`,
    };
  }
  if (now.getTime() < cert.x509.validFromDate.getTime()) {
    return {
      status: 'not-yet-valid',
      problem: `certificate "${subjectName(cert)}" is not valid before ${cert.x509.validFromDate.toISOString()}`,
    };
  }
  return undefined;
}

export interface PathOptions {
  anchors: CertInfo[];
  /** Candidate intermediates (from the message and from configuration). */
  intermediates: CertInfo[];
  crls: ParsedCrl[];
  /**
   * When true, a certificate with neither a current CRL from its issuer nor a good OCSP answer is
   * `revocation-unknown`.
   */
  requireRevocationCheck: boolean;
  /** OCSP answers gathered beforehand (`cert-ocsp.ts` `ocspStatus`), looked up per certificate. */
  ocsp?: (cert: CertInfo, issuer: CertInfo) => OcspOutcome | undefined;
  now: Date;
}

export interface PathResult {
  /** The first (most serious) status; `trusted` when there is no problem. */
  status: TrustStatus;
  problems: string[];
  /** Leaf first, anchor last (when one was reached). */
  path: CertInfo[];
}

function issuedBy(cert: CertInfo, issuer: CertInfo): boolean {
  // checkIssued: names, key identifiers, the issuer's keyCertSign usage; verify: the signature.
  try {
    return cert.x509.checkIssued(issuer.x509) && cert.x509.verify(issuer.x509.publicKey);
  } catch {
    // An unverifiable signature (unknown algorithm, broken key) is simply "not issued by".
    return false;
  }
}

/**
 * The chain from `leaf` towards one of the anchors (leaf first), without any check beyond
 * issuance: `anchored` says whether an anchor was reached.
 */
export function buildPath(
  leaf: CertInfo,
  opts: Pick<PathOptions, 'anchors' | 'intermediates'>,
): { path: CertInfo[]; anchored: boolean } {
  const path: CertInfo[] = [leaf];
  let anchored = opts.anchors.some((a) => a.der.equals(leaf.der));
  let current = leaf;
  while (!anchored && path.length <= MAX_CHAIN) {
    const anchor = opts.anchors.find((a) => issuedBy(current, a));
    if (anchor !== undefined) {
      path.push(anchor);
      anchored = true;
      break;
    }
    const next = opts.intermediates.find((c) => !path.includes(c) && c.x509.ca && issuedBy(current, c));
    if (next === undefined) break;
    path.push(next);
    current = next;
  }
  return { path, anchored };
}

/** Builds and checks the chain from `leaf` to one of the anchors. */
export function validatePath(leaf: CertInfo, opts: PathOptions): PathResult {
  const { path, anchored } = buildPath(leaf, opts);
  const current = path[path.length - 1]!;
  const found: Array<{ status: TrustStatus; problem: string }> = [];
  if (!anchored) {
    found.push({
      status: 'untrusted',
      problem: `no chain from "${subjectName(leaf)}" (issuer "${issuerName(current)}") to a configured trust anchor`,
    });
  }
  path.forEach((cert, i) => {
    const isAnchor = anchored && i === path.length - 1;
    const validity = validityProblem(cert, opts.now);
    if (validity !== undefined) found.push(validity);
    const weakKey = keyWeakness(cert.x509.publicKey);
    if (weakKey !== undefined)
      found.push({ status: 'weak-algorithm', problem: `"${subjectName(cert)}": ${weakKey}` });
    // An anchor is trusted by configuration, not by its own (self-)signature.
    const weakSig = WEAK_SIGNATURE_OIDS.get(cert.signatureAlgorithmOid);
    if (!isAnchor && weakSig !== undefined) {
      found.push({ status: 'weak-algorithm', problem: `"${subjectName(cert)}" is signed with ${weakSig}` });
    }
    const issuer = path[i + 1];
    if (issuer === undefined) return;
    // Revoked by either source is revoked; a current CRL or a good OCSP answer is enough otherwise.
    const revocation = isRevoked(cert, issuer, opts.crls, opts.now);
    const ocsp = opts.ocsp?.(cert, issuer);
    if (revocation.state === 'revoked') {
      found.push({
        status: 'revoked',
        problem: `certificate "${subjectName(cert)}" was revoked on ${revocation.date.toISOString()}`,
      });
    } else if (ocsp?.state === 'revoked') {
      found.push({
        status: 'revoked',
        problem: `certificate "${subjectName(cert)}" was revoked on ${ocsp.date.toISOString()} (OCSP${ocsp.reason === undefined ? '' : `, ${ocsp.reason}`})`,
      });
    } else if (revocation.state === 'unknown' && ocsp?.state !== 'good' && opts.requireRevocationCheck) {
      found.push({
        status: 'revocation-unknown',
        problem: `"${subjectName(cert)}": ${revocation.why}${ocsp === undefined ? '' : `; OCSP: ${ocsp.why}`}`,
      });
    }
  });
  const usage = usageProblem(leaf, 'sign');
  if (usage !== undefined)
    found.push({ status: 'wrong-key-usage', problem: `"${subjectName(leaf)}": ${usage}` });
  const order: TrustStatus[] = [
    'untrusted',
    'revoked',
    'expired',
    'not-yet-valid',
    'weak-algorithm',
    'wrong-key-usage',
    'revocation-unknown',
  ];
  found.sort((a, b) => order.indexOf(a.status) - order.indexOf(b.status));
  return { status: found[0]?.status ?? 'trusted', problems: found.map((f) => f.problem), path };
}
