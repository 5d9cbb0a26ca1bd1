import { createHash, randomBytes, verify as nodeVerify } from 'node:crypto';
import {
  child,
  contentOf,
  der,
  encodingOf,
  expectTag,
  is,
  oidOf,
  readAsn1,
  smallIntOf,
  Tag,
  TagClass,
  timeOf,
  type Asn1Node,
} from './asn1-der.ts';
import {
  keyWeakness,
  parseCertificate,
  subjectName,
  validityProblem,
  WEAK_SIGNATURE_OIDS,
  type CertificateInput,
  type CertInfo,
} from './cert-path.ts';
import { CryptoError } from './types.ts';

/**
 * OCSP (RFC 6960) for S/MIME verification: writing a request for one certificate and checking the
 * responder's answer. Pure functions, no sockets: the gateway carries the bytes (HTTP POST of
 * `application/ocsp-request` to the responder URL) through a fetcher it injects into `verify`.
 *
 * What `checkOcspResponse` requires before it believes an answer:
 * - responseStatus `successful` and a BasicOCSPResponse;
 * - a signature by the certificate's issuer itself, or by a delegated responder certificate that
 *   the issuer signed, that carries the id-kp-OCSPSigning EKU and is within its validity period
 *   (RFC 6960 §4.2.2.2); the responderID must name (byName) or hash (byKey) the signer;
 * - no MD5/SHA-1 signature, no RSA key under 2048 bits (the rules of certificate paths);
 * - a SingleResponse whose CertID matches the certificate (issuer name hash, issuer key hash,
 *   serial), whatever CertID hash the responder used;
 * - thisUpdate not in the future and nextUpdate not in the past (± `OCSP_CLOCK_SKEW_MS`); without
 *   nextUpdate, thisUpdate at most `maxAgeMs` old;
 * - the nonce echoed, when one was sent;
 * - no unknown critical extension.
 * Anything else throws a `CryptoError`: `malformed` for bytes that are not an OCSP response,
 * otherwise a code saying why the answer is refused.
 */

export const OCSP_CLOCK_SKEW_MS = 5 * 60_000;
/** How old a response without nextUpdate may be (RFC 6960 §4.2.2.1: "newer information is always available"). */
export const OCSP_MAX_AGE_WITHOUT_NEXT_UPDATE_MS = 60 * 60_000;

const OID = {
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
  basicResponse: '1.3.6.1.5.5.7.48.1.1',
  nonce: '1.3.6.1.5.5.7.48.1.2',
  ocspSigning: '1.3.6.1.5.5.7.3.9',
  authorityInfoAccess: '1.3.6.1.5.5.7.1.1',
  accessOcsp: '1.3.6.1.5.5.7.48.1',
};

const HASH_BY_OID: ReadonlyMap<string, string> = new Map([
  [OID.sha1, 'sha1'],
  [OID.sha256, 'sha256'],
  [OID.sha384, 'sha384'],
  [OID.sha512, 'sha512'],
]);

/** Response signature algorithms accepted (RSA PKCS#1 v1.5 and ECDSA with SHA-2). */
const SIGNATURE_HASH: ReadonlyMap<string, string> = new Map([
  ['1.2.840.113549.1.1.11', 'sha256'],
  ['1.2.840.113549.1.1.12', 'sha384'],
  ['1.2.840.113549.1.1.13', 'sha512'],
  ['1.2.840.10045.4.3.2', 'sha256'],
  ['1.2.840.10045.4.3.3', 'sha384'],
  ['1.2.840.10045.4.3.4', 'sha512'],
]);

const RESPONSE_STATUS = [
  'successful',
  'malformedRequest',
  'internalError',
  'tryLater',
  '(unused)',
  'sigRequired',
  'unauthorized',
];

/** CRLReason (RFC 5280 §5.3.1); 7 is unused. */
const CRL_REASONS = [
  'unspecified',
  'keyCompromise',
  'cACompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'certificateHold',
  '(7)',
  'removeFromCRL',
  'privilegeWithdrawn',
  'aACompromise',
];

export interface OcspRequestOptions {
  /**
   * CertID hash. Default `sha1`: RFC 5019 §2.1.1 has clients use SHA-1 and many deployed
   * responders (and pre-signed response caches) only index SHA-1 CertIDs. It is a lookup key,
   * not a signature, so SHA-1's collision weakness does not apply. `sha256` for responders that
   * take it (OpenSSL does).
   */
  hashAlgorithm?: 'sha1' | 'sha256';
  /** Nonce extension (RFC 8954: 1 to 32 octets); the response must then echo it. */
  nonce?: Uint8Array;
}

/** DER OCSPRequest for `cert`, unsigned, one Request. */
export function buildOcspRequest(
  cert: CertificateInput | CertInfo,
  issuer: CertificateInput | CertInfo,
  options: OcspRequestOptions = {},
): Buffer {
  const c = asInfo(cert);
  const i = asInfo(issuer);
  const hash = options.hashAlgorithm ?? 'sha1';
  if (hash !== 'sha1' && hash !== 'sha256')
    throw new CryptoError('unsupported', `OCSP: CertID hash ${String(hash)} not offered`);
  if (options.nonce !== undefined && (options.nonce.length < 1 || options.nonce.length > 32))
    throw new CryptoError('unsupported', 'OCSP: a nonce has 1 to 32 octets (RFC 8954)');
  const certId = der.sequence(
    der.sequence(der.oid(hash === 'sha1' ? OID.sha1 : OID.sha256), der.null()),
    der.octetString(createHash(hash).update(c.issuerDer).digest()),
    der.octetString(createHash(hash).update(publicKeyBits(i)).digest()),
    der.raw(c.serialDer),
  );
  const extensions =
    options.nonce === undefined
      ? []
      : [
          der.explicit(
            2,
            der.sequence(der.sequence(der.oid(OID.nonce), der.octetString(der.octetString(options.nonce)))),
          ),
        ];
  return der.sequence(der.sequence(der.sequence(der.sequence(certId)), ...extensions));
}

export interface OcspCheckOptions {
  /** The certificate asked about. */
  cert: CertificateInput | CertInfo;
  /** Its issuer (already validated by the caller's path building). */
  issuer: CertificateInput | CertInfo;
  /** Time of the check; default now. */
  now?: Date;
  /** The nonce sent in the request, if any: the response must echo it. */
  nonce?: Uint8Array;
  /** Accepted age of a response that has no nextUpdate; default one hour. */
  maxAgeMs?: number;
}

export interface OcspResult {
  status: 'good' | 'revoked' | 'unknown';
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  producedAt: Date;
  revokedAt?: Date;
  /** CRLReason name (`keyCompromise`, ...), when the responder gave one. */
  reason?: string;
  /** Who signed: `issuer` (the issuer itself) or the subject DN of the delegated responder. */
  responder: string;
}

interface SingleResponse {
  certId: { hashOid: string; nameHash: Buffer; keyHash: Buffer; serial: Buffer };
  status: OcspResult['status'];
  revokedAt?: Date;
  reason?: string;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  criticalExtensions: string[];
}

interface ParsedResponse {
  tbsDer: Buffer;
  responderByName: Buffer | undefined;
  responderByKey: Buffer | undefined;
  producedAt: Date;
  responses: SingleResponse[];
  nonce: Buffer | undefined;
  criticalExtensions: string[];
  signatureAlgorithmOid: string;
  signature: Buffer;
  certs: CertInfo[];
}

/** Checks a DER OCSPResponse about `cert` (see the module comment for every rule). */
export function checkOcspResponse(response: Uint8Array, options: OcspCheckOptions): OcspResult {
  const cert = asInfo(options.cert);
  const issuer = asInfo(options.issuer);
  return checkParsed(parseOcspResponse(response), cert, issuer, options);
}

function checkParsed(
  parsed: ParsedResponse,
  cert: CertInfo,
  issuer: CertInfo,
  options: Omit<OcspCheckOptions, 'cert' | 'issuer'>,
): OcspResult {
  const now = options.now ?? new Date();

  // Who signed, and may they answer for this issuer?
  const signer = responderCertificate(parsed, issuer, now);
  const weakSig = WEAK_SIGNATURE_OIDS.get(parsed.signatureAlgorithmOid);
  if (weakSig !== undefined)
    throw new CryptoError('weak-algorithm', `OCSP: the response is signed with ${weakSig}, which is refused`);
  const hash = SIGNATURE_HASH.get(parsed.signatureAlgorithmOid);
  if (hash === undefined)
    throw new CryptoError(
      'unsupported',
      `OCSP: response signature algorithm ${parsed.signatureAlgorithmOid} not supported`,
    );
  const weakKey = keyWeakness(signer.x509.publicKey);
  if (weakKey !== undefined) throw new CryptoError('weak-algorithm', `OCSP responder: ${weakKey}`);
  let signatureOk: boolean;
  try {
    signatureOk = nodeVerify(hash, parsed.tbsDer, signer.x509.publicKey, parsed.signature);
  } catch {
    signatureOk = false;
  }
  if (!signatureOk)
    throw new CryptoError('invalid-signature', 'OCSP: the response signature does not verify');

  // About this certificate?
  const single = parsed.responses.find((r) => certIdMatches(r, cert, issuer));
  if (single === undefined)
    throw new CryptoError(
      'untrusted',
      'OCSP: the response has no answer for this certificate (CertID differs)',
    );
  const critical = [...parsed.criticalExtensions, ...single.criticalExtensions];
  if (critical.length > 0)
    throw new CryptoError('untrusted', `OCSP: unknown critical extension ${critical.join(', ')}`);

  // Fresh?
  const t = now.getTime();
  if (single.thisUpdate.getTime() > t + OCSP_CLOCK_SKEW_MS)
    throw new CryptoError(
      'untrusted',
      `OCSP: thisUpdate ${single.thisUpdate.toISOString()} is in the future`,
    );
  if (single.nextUpdate !== undefined) {
    if (single.nextUpdate.getTime() < t - OCSP_CLOCK_SKEW_MS)
      throw new CryptoError(
        'untrusted',
        `OCSP: the response is stale (nextUpdate ${single.nextUpdate.toISOString()})`,
      );
  } else if (
    t - single.thisUpdate.getTime() >
    (options.maxAgeMs ?? OCSP_MAX_AGE_WITHOUT_NEXT_UPDATE_MS) + OCSP_CLOCK_SKEW_MS
  ) {
    throw new CryptoError(
      'untrusted',
      `OCSP: the response has no nextUpdate and its thisUpdate ${single.thisUpdate.toISOString()} is too old`,
    );
  }

  // Our nonce echoed?
  if (options.nonce !== undefined) {
    const sent = Buffer.from(options.nonce);
    if (parsed.nonce === undefined || !nonceEquals(parsed.nonce, sent))
      throw new CryptoError('untrusted', 'OCSP: the response does not echo the request nonce');
  }

  const result: OcspResult = {
    status: single.status,
    thisUpdate: single.thisUpdate,
    nextUpdate: single.nextUpdate,
    producedAt: parsed.producedAt,
    responder: signer === issuer ? 'issuer' : subjectName(signer),
  };
  if (single.revokedAt !== undefined) result.revokedAt = single.revokedAt;
  if (single.reason !== undefined) result.reason = single.reason;
  return result;
}

/** OCSP responder URLs of the certificate's Authority Information Access extension (RFC 5280 §4.2.2.1). */
export function ocspUrlsOf(cert: CertificateInput | CertInfo): string[] {
  const info = asInfo(cert);
  const urls: string[] = [];
  try {
    const tbs = child(readAsn1(info.der), 0, 'tbsCertificate');
    const exts = tbs.children.find((c) => is(c, 3, TagClass.CONTEXT))?.children[0]?.children ?? [];
    for (const ext of exts) {
      if (oidOf(ext.children[0]) !== OID.authorityInfoAccess) continue;
      const value = readAsn1(
        contentOf(expectTag(ext.children[ext.children.length - 1], Tag.OCTET_STRING, 'extnValue')),
      );
      for (const ad of value.children) {
        const location = ad.children[1];
        // GeneralName uniformResourceIdentifier [6] IA5String
        if (oidOf(ad.children[0]) === OID.accessOcsp && is(location, 6, TagClass.CONTEXT)) {
          const url = contentOf(location).toString('latin1');
          if (/^https?:\/\//i.test(url)) urls.push(url);
        }
      }
    }
  } catch (cause) {
    if (cause instanceof CryptoError) throw cause;
    throw new CryptoError('malformed', 'certificate Authority Information Access could not be read', {
      cause,
    });
  }
  return urls;
}

/** Fetches an OCSP response: DER request in, DER response out (the gateway's HTTP client). */
export type OcspFetcher = (request: Uint8Array, url: string) => Promise<Uint8Array>;

/** What OCSP says about one certificate, for path validation. */
export type OcspOutcome =
  { state: 'good' } | { state: 'revoked'; date: Date; reason?: string } | { state: 'unknown'; why: string };

export interface OcspStatusOptions {
  /** Responses obtained beforehand (cache, prefetch); those about other certificates are skipped. */
  responses: Uint8Array[];
  fetch?: OcspFetcher;
  /** Responder for a certificate without an AIA OCSP URL. */
  defaultUrl?: string;
  /** Send a random nonce and require its echo (RFC 5019 responders with cached answers do not echo). */
  nonce?: boolean;
  now: Date;
}

const MAX_URLS = 2;

/**
 * The OCSP status of `cert`: first from `responses`, then (if no valid good/revoked answer) by
 * asking its responder through `fetch`. Never throws: a refused, malformed or missing answer is
 * `unknown`, with the reason.
 */
export async function ocspStatus(
  cert: CertInfo,
  issuer: CertInfo,
  opts: OcspStatusOptions,
): Promise<OcspOutcome> {
  const why: string[] = [];
  const decide = (r: OcspResult): OcspOutcome | undefined => {
    if (r.status === 'revoked') {
      const out: OcspOutcome = { state: 'revoked', date: r.revokedAt ?? r.thisUpdate };
      if (r.reason !== undefined) out.reason = r.reason;
      return out;
    }
    if (r.status === 'good') return { state: 'good' };
    why.push('the responder does not know the certificate (status unknown)');
    return undefined;
  };
  let good = false;
  for (const response of opts.responses) {
    try {
      const parsed = parseOcspResponse(response);
      if (!parsed.responses.some((r) => certIdMatches(r, cert, issuer))) continue;
      const outcome = decide(checkParsed(parsed, cert, issuer, { now: opts.now }));
      if (outcome?.state === 'revoked') return outcome;
      if (outcome?.state === 'good') good = true;
    } catch (err) {
      why.push(err instanceof Error ? err.message : String(err));
    }
  }
  if (good) return { state: 'good' };
  if (opts.fetch !== undefined) {
    let urls: string[] = [];
    try {
      urls = ocspUrlsOf(cert);
    } catch (err) {
      why.push(err instanceof Error ? err.message : String(err));
    }
    if (urls.length === 0 && opts.defaultUrl !== undefined) urls = [opts.defaultUrl];
    if (urls.length === 0) why.push('no OCSP responder URL in the certificate');
    for (const url of urls.slice(0, MAX_URLS)) {
      try {
        const nonce = opts.nonce === true ? randomBytes(16) : undefined;
        const request = buildOcspRequest(cert, issuer, nonce === undefined ? {} : { nonce });
        const response = await opts.fetch(request, url);
        const outcome = decide(
          checkParsed(parseOcspResponse(response), cert, issuer, {
            now: opts.now,
            ...(nonce === undefined ? {} : { nonce }),
          }),
        );
        if (outcome !== undefined) return outcome;
      } catch (err) {
        why.push(`${url}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
  return { state: 'unknown', why: why.length > 0 ? why.join('; ') : 'no OCSP response for it' };
}

// ---------------------------------------------------------------------------------------------

function asInfo(input: CertificateInput | CertInfo): CertInfo {
  if (typeof input === 'object' && 'x509' in input && 'serialDer' in input) return input;
  return parseCertificate(input);
}

/** The subjectPublicKey BIT STRING contents (without the unused-bits octet): what KeyHash hashes. */
function publicKeyBits(cert: CertInfo): Buffer {
  const spki = readAsn1(cert.x509.publicKey.export({ type: 'spki', format: 'der' }));
  return contentOf(
    expectTag(child(spki, 1, 'subjectPublicKey'), Tag.BIT_STRING, 'subjectPublicKey'),
  ).subarray(1);
}

function certIdMatches(r: SingleResponse, cert: CertInfo, issuer: CertInfo): boolean {
  const hash = HASH_BY_OID.get(r.certId.hashOid);
  if (hash === undefined) return false;
  return (
    r.certId.serial.equals(cert.serial) &&
    r.certId.nameHash.equals(createHash(hash).update(cert.issuerDer).digest()) &&
    r.certId.keyHash.equals(createHash(hash).update(publicKeyBits(issuer)).digest())
  );
}

function nonceEquals(extnValue: Buffer, sent: Buffer): boolean {
  // RFC 8954: extnValue holds an OCTET STRING; some responders put the raw octets there.
  if (extnValue.equals(sent)) return true;
  try {
    const inner = readAsn1(extnValue);
    return is(inner, Tag.OCTET_STRING) && contentOf(inner).equals(sent);
  } catch {
    return false;
  }
}

function identifies(parsed: ParsedResponse, candidate: CertInfo): boolean {
  if (parsed.responderByName !== undefined) return parsed.responderByName.equals(candidate.subjectDer);
  if (parsed.responderByKey !== undefined)
    return parsed.responderByKey.equals(createHash('sha1').update(publicKeyBits(candidate)).digest());
  return false;
}

/** RFC 6960 §4.2.2.2: the issuer itself, or a certificate it issued for OCSPSigning. */
function responderCertificate(parsed: ParsedResponse, issuer: CertInfo, now: Date): CertInfo {
  if (identifies(parsed, issuer)) return issuer;
  const delegate = parsed.certs.find((c) => identifies(parsed, c));
  if (delegate === undefined)
    throw new CryptoError(
      'untrusted',
      'OCSP: the responder is neither the issuer nor a certificate included in the response',
    );
  let issued: boolean;
  try {
    issued =
      delegate.issuerDer.equals(issuer.subjectDer) &&
      delegate.x509.checkIssued(issuer.x509) &&
      delegate.x509.verify(issuer.x509.publicKey);
  } catch {
    issued = false;
  }
  if (!issued)
    throw new CryptoError(
      'untrusted',
      `OCSP: responder "${subjectName(delegate)}" was not issued by the certificate's issuer`,
    );
  if (delegate.extKeyUsage === undefined || !delegate.extKeyUsage.includes(OID.ocspSigning))
    throw new CryptoError(
      'wrong-key-usage',
      `OCSP: responder "${subjectName(delegate)}" lacks the id-kp-OCSPSigning extended key usage`,
    );
  if (
    delegate.keyUsage !== undefined &&
    !delegate.keyUsage.has('digitalSignature') &&
    !delegate.keyUsage.has('nonRepudiation')
  )
    throw new CryptoError(
      'wrong-key-usage',
      `OCSP: responder "${subjectName(delegate)}" key usage forbids signing`,
    );
  const weakSig = WEAK_SIGNATURE_OIDS.get(delegate.signatureAlgorithmOid);
  if (weakSig !== undefined)
    throw new CryptoError('weak-algorithm', `OCSP: responder certificate is signed with ${weakSig}`);
  const validity = validityProblem(delegate, now);
  if (validity !== undefined) throw new CryptoError('key-expired', `OCSP responder: ${validity.problem}`);
  return delegate;
}

function extensionsOf(wrapper: Asn1Node | undefined): {
  byOid: Map<string, Buffer>;
  critical: string[];
} {
  const byOid = new Map<string, Buffer>();
  const critical: string[] = [];
  for (const ext of wrapper?.children[0]?.children ?? []) {
    const id = oidOf(ext.children[0]);
    const value = contentOf(expectTag(ext.children[ext.children.length - 1], Tag.OCTET_STRING, 'extnValue'));
    const crit = is(ext.children[1], Tag.BOOLEAN) && contentOf(ext.children[1]!)[0] !== 0;
    byOid.set(id, value);
    if (crit && id !== OID.nonce) critical.push(id);
  }
  return { byOid, critical };
}

function parseOcspResponse(input: Uint8Array): ParsedResponse {
  try {
    return parseOcspResponseUnsafe(input);
  } catch (cause) {
    if (cause instanceof CryptoError) throw cause;
    throw new CryptoError('malformed', 'OCSP: the response could not be read', { cause });
  }
}

function parseOcspResponseUnsafe(input: Uint8Array): ParsedResponse {
  const top = expectTag(readAsn1(input, { maxNodes: 20_000, maxDepth: 32 }), Tag.SEQUENCE, 'OCSPResponse');
  const statusNode = expectTag(top.children[0], 10 /* ENUMERATED */, 'responseStatus');
  const statusBytes = contentOf(statusNode);
  if (statusBytes.length !== 1) throw new CryptoError('malformed', 'OCSP: bad responseStatus');
  const status = statusBytes[0]!;
  if (status !== 0)
    throw new CryptoError(
      'untrusted',
      `OCSP: the responder answered ${RESPONSE_STATUS[status] ?? `status ${status}`}, not successful`,
    );
  const responseBytes = expectTag(top.children[1], 0, 'responseBytes', TagClass.CONTEXT);
  const rb = expectTag(child(responseBytes, 0, 'ResponseBytes'), Tag.SEQUENCE, 'ResponseBytes');
  const type = oidOf(rb.children[0]);
  if (type !== OID.basicResponse)
    throw new CryptoError('unsupported', `OCSP: response type ${type} is not id-pkix-ocsp-basic`);
  const basic = readAsn1(contentOf(expectTag(rb.children[1], Tag.OCTET_STRING, 'response')), {
    maxNodes: 20_000,
    maxDepth: 32,
  });
  expectTag(basic, Tag.SEQUENCE, 'BasicOCSPResponse');
  const tbs = expectTag(child(basic, 0, 'tbsResponseData'), Tag.SEQUENCE, 'tbsResponseData');
  const sigAlg = expectTag(child(basic, 1, 'signatureAlgorithm'), Tag.SEQUENCE, 'signatureAlgorithm');
  const sigBits = contentOf(expectTag(child(basic, 2, 'signature'), Tag.BIT_STRING, 'signature'));
  if (sigBits.length < 2 || sigBits[0] !== 0)
    throw new CryptoError('malformed', 'OCSP: bad signature BIT STRING');
  const certs: CertInfo[] = [];
  const certsWrapper = basic.children[3];
  if (certsWrapper !== undefined) {
    expectTag(certsWrapper, 0, 'certs', TagClass.CONTEXT);
    const list = expectTag(child(certsWrapper, 0, 'certs'), Tag.SEQUENCE, 'certs');
    if (list.children.length > 8) throw new CryptoError('malformed', 'OCSP: more than 8 certificates');
    for (const c of list.children) certs.push(parseCertificate(Buffer.from(encodingOf(c))));
  }

  let i = 0;
  if (is(tbs.children[0], 0, TagClass.CONTEXT)) {
    if (smallIntOf(child(tbs.children[0]!, 0, 'version')) !== 0)
      throw new CryptoError('unsupported', 'OCSP: ResponseData version is not v1');
    i++;
  }
  const responderId = child(tbs, i++, 'responderID');
  let responderByName: Buffer | undefined;
  let responderByKey: Buffer | undefined;
  if (is(responderId, 1, TagClass.CONTEXT))
    responderByName = encodingOf(expectTag(child(responderId, 0, 'byName'), Tag.SEQUENCE, 'Name'));
  else if (is(responderId, 2, TagClass.CONTEXT))
    responderByKey = contentOf(expectTag(child(responderId, 0, 'byKey'), Tag.OCTET_STRING, 'KeyHash'));
  else throw new CryptoError('malformed', 'OCSP: bad responderID');
  const producedAt = timeOf(expectTag(child(tbs, i++, 'producedAt'), Tag.GENERALIZED_TIME, 'producedAt'));
  const list = expectTag(child(tbs, i++, 'responses'), Tag.SEQUENCE, 'responses');
  const exts = extensionsOf(is(tbs.children[i], 1, TagClass.CONTEXT) ? tbs.children[i] : undefined);
  return {
    tbsDer: encodingOf(tbs),
    responderByName,
    responderByKey,
    producedAt,
    responses: list.children.map(parseSingleResponse),
    nonce: exts.byOid.get(OID.nonce),
    criticalExtensions: exts.critical,
    signatureAlgorithmOid: oidOf(sigAlg.children[0]),
    signature: sigBits.subarray(1),
    certs,
  };
}

function parseSingleResponse(node: Asn1Node): SingleResponse {
  expectTag(node, Tag.SEQUENCE, 'SingleResponse');
  const id = expectTag(child(node, 0, 'certID'), Tag.SEQUENCE, 'CertID');
  const certId = {
    hashOid: oidOf(child(child(id, 0, 'hashAlgorithm'), 0, 'algorithm')),
    nameHash: contentOf(expectTag(child(id, 1, 'issuerNameHash'), Tag.OCTET_STRING, 'issuerNameHash')),
    keyHash: contentOf(expectTag(child(id, 2, 'issuerKeyHash'), Tag.OCTET_STRING, 'issuerKeyHash')),
    serial: contentOf(expectTag(child(id, 3, 'serialNumber'), Tag.INTEGER, 'serialNumber')),
  };
  const statusNode = child(node, 1, 'certStatus');
  if (statusNode.cls !== TagClass.CONTEXT) throw new CryptoError('malformed', 'OCSP: bad certStatus');
  let status: SingleResponse['status'];
  let revokedAt: Date | undefined;
  let reason: string | undefined;
  if (statusNode.tag === 0) status = 'good';
  else if (statusNode.tag === 2) status = 'unknown';
  else if (statusNode.tag === 1 && statusNode.constructed) {
    status = 'revoked';
    revokedAt = timeOf(
      expectTag(child(statusNode, 0, 'revocationTime'), Tag.GENERALIZED_TIME, 'revocationTime'),
    );
    const r = statusNode.children[1];
    if (r !== undefined) {
      const code = contentOf(
        expectTag(
          child(expectTag(r, 0, 'revocationReason', TagClass.CONTEXT), 0, 'CRLReason'),
          10,
          'CRLReason',
        ),
      );
      if (code.length !== 1) throw new CryptoError('malformed', 'OCSP: bad CRLReason');
      reason = CRL_REASONS[code[0]!] ?? `reason ${code[0]}`;
    }
  } else throw new CryptoError('malformed', 'OCSP: bad certStatus');
  const thisUpdate = timeOf(expectTag(child(node, 2, 'thisUpdate'), Tag.GENERALIZED_TIME, 'thisUpdate'));
  let j = 3;
  let nextUpdate: Date | undefined;
  if (is(node.children[j], 0, TagClass.CONTEXT)) {
    nextUpdate = timeOf(
      expectTag(child(node.children[j]!, 0, 'nextUpdate'), Tag.GENERALIZED_TIME, 'nextUpdate'),
    );
    j++;
  }
  const exts = extensionsOf(is(node.children[j], 1, TagClass.CONTEXT) ? node.children[j] : undefined);
  const result: SingleResponse = {
    certId,
    status,
    thisUpdate,
    nextUpdate,
    criticalExtensions: exts.critical,
  };
  if (revokedAt !== undefined) result.revokedAt = revokedAt;
  if (reason !== undefined) result.reason = reason;
  return result;
}
