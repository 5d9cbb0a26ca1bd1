import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  X509Certificate,
  type KeyObject,
} from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';

/**
 * A development PKI: a private CA and the certificates it issues, for first runs, tests and
 * benchmarks. Not a production CA (no revocation, no policy), but the certificates are shaped like
 * real ones (RFC 5280 profile) so that the code using them is exercised the way production will be.
 *
 * Keys come from node:crypto (OpenSSL). node-forge assembles the X.509 structures (names,
 * extensions, DER). The TBSCertificate is signed with node:crypto too, which lets one code path
 * serve RSA and ECDSA, for the CA and the leaf in any combination: forge signs with RSA only.
 */

export interface KeyAndCert {
  /** PKCS#8 private key, PEM. */
  keyPem: string;
  /** X.509 certificate, PEM. */
  certPem: string;
}

export type KeyType = 'rsa2048' | 'rsa3072' | 'ec-p256';

export interface CaOptions {
  commonName: string;
  organization?: string;
  /** Default 3650 days. */
  validDays?: number;
  /** Default rsa2048. */
  keyType?: KeyType;
}

export interface IssueOptions {
  commonName: string;
  organization?: string;
  organizationalUnit?: string;
  /** ISO 3166 two-letter code. */
  country?: string;
  /** DNS names in A-label (ASCII) form. */
  dnsNames?: string[];
  ipAddresses?: string[];
  emailAddresses?: string[];
  usage: 'server' | 'client' | 'server+client' | 'email';
  /** Start of validity. Default: now minus 5 minutes (tolerates clock skew between peers). */
  validFrom?: Date;
  /** Default 397 days (the longest lifetime TLS clients such as Apple's and Chrome's accept). */
  validDays?: number;
  /** Default rsa2048. */
  keyType?: KeyType;
}

const DAY_MS = 86_400_000;
const CLOCK_SKEW_MS = 5 * 60_000;
const DEFAULT_CA_DAYS = 3650;
const DEFAULT_LEAF_DAYS = 397;

const OID = {
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  subjectKeyIdentifier: '2.5.29.14',
} as const;

// node-forge's typings omit these (they exist in lib/x509.js and lib/asn1.js).
interface ForgeExtras {
  certificateExtensionsToAsn1(exts: unknown[]): forge.asn1.Asn1;
}
type FromDerOptions = { strict?: boolean; parseAllBytes?: boolean; decodeBitStrings?: boolean };
const pkiExtras = forge.pki as unknown as ForgeExtras;
const asn1 = forge.asn1;
/** @types/node-forge types valueTagClass as a tag class; forge reads it as a universal type. */
const tagOf = (type: forge.asn1.Type) => type as unknown as forge.asn1.Class;
const fromDer = asn1.fromDer as unknown as (bytes: string, options: FromDerOptions) => forge.asn1.Asn1;

/** Creates a self-signed certification authority. */
export function createCa(opts: CaOptions): KeyAndCert {
  const keys = generateKeys(opts.keyType ?? 'rsa2048');
  const notBefore = new Date(Date.now() - CLOCK_SKEW_MS);
  const subject = nameToAsn1({ commonName: opts.commonName, organization: opts.organization });
  const ski = keyIdentifier(keys.publicKey);
  const extensions = [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    subjectKeyIdentifierExtension(ski),
  ];
  const certPem = buildCertificate({
    subject,
    issuer: subject,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    notBefore,
    notAfter: addDays(notBefore, opts.validDays ?? DEFAULT_CA_DAYS),
    extensions,
  });
  return { keyPem: exportPrivateKey(keys.privateKey), certPem };
}

/** Issues an end-entity certificate (and a fresh key) signed by `ca`. */
export function issueCertificate(ca: KeyAndCert, opts: IssueOptions): KeyAndCert {
  const caKey = createPrivateKey(ca.keyPem);
  const caCert = new X509Certificate(ca.certPem);
  if (!caCert.ca)
    throw new Error('issueCertificate: the issuing certificate is not a CA (basicConstraints CA:false)');
  if (!caCert.checkPrivateKey(caKey))
    throw new Error('issueCertificate: the CA key does not match the CA certificate');
  const caParts = parseCertificate(caCert.raw);

  const keyType = opts.keyType ?? 'rsa2048';
  const keys = generateKeys(keyType);
  const notBefore = opts.validFrom ?? new Date(Date.now() - CLOCK_SKEW_MS);
  const isRsa = keyType !== 'ec-p256';

  // RFC 5280 §4.2.1.3. RSA keys carry TLS 1.2 RSA key exchange and S/MIME key transport, hence
  // keyEncipherment; EC keys do S/MIME encryption through ECDH (RFC 5753), hence keyAgreement.
  const keyUsage: Record<string, boolean | string> = {
    name: 'keyUsage',
    critical: true,
    digitalSignature: true,
  };
  if (isRsa) keyUsage.keyEncipherment = true;
  if (opts.usage === 'email') {
    keyUsage.nonRepudiation = true;
    if (!isRsa) keyUsage.keyAgreement = true;
  }
  const eku: Record<string, boolean | string> = { name: 'extKeyUsage' };
  if (opts.usage === 'server' || opts.usage === 'server+client') eku.serverAuth = true;
  if (opts.usage === 'client' || opts.usage === 'server+client') eku.clientAuth = true;
  if (opts.usage === 'email') eku.emailProtection = true;

  const extensions: unknown[] = [
    { name: 'basicConstraints', cA: false, critical: true },
    keyUsage,
    eku,
    subjectKeyIdentifierExtension(keyIdentifier(keys.publicKey)),
  ];
  if (caParts.subjectKeyIdentifier !== undefined) {
    extensions.push({ name: 'authorityKeyIdentifier', keyIdentifier: caParts.subjectKeyIdentifier });
  }
  const altNames = subjectAltNames(opts);
  // RFC 5280 §4.2.1.6: an empty subjectAltName extension is not allowed.
  if (altNames.length > 0) extensions.push({ name: 'subjectAltName', altNames });

  const certPem = buildCertificate({
    subject: nameToAsn1(opts),
    issuer: caParts.subject,
    publicKey: keys.publicKey,
    signingKey: caKey,
    notBefore,
    notAfter: addDays(notBefore, opts.validDays ?? DEFAULT_LEAF_DAYS),
    extensions,
  });
  return { keyPem: exportPrivateKey(keys.privateKey), certPem };
}

/**
 * The PKI a fresh install runs on: a "Courrier Development CA" and one certificate for this
 * gateway, usable as TLS server AND client certificate (mutual TLS between gateways), naming the
 * host, localhost, every local domain, 127.0.0.1 and ::1.
 */
export function generateDevPki(opts: { hostname: string; localDomains: string[] }): {
  ca: KeyAndCert;
  server: KeyAndCert;
} {
  const ca = createCa({ commonName: 'Courrier Development CA', organization: 'Courrier' });
  // `*` is a routing wildcard in the config, not a name a certificate can carry.
  const names = [opts.hostname, 'localhost', ...opts.localDomains]
    .map((n) => n.toLowerCase())
    .filter((n) => n !== '*');
  const server = issueCertificate(ca, {
    commonName: opts.hostname,
    organization: 'Courrier',
    dnsNames: [...new Set(names)],
    ipAddresses: ['127.0.0.1', '::1'],
    usage: 'server+client',
  });
  return { ca, server };
}

// ---------------------------------------------------------------------------------------------

function generateKeys(keyType: KeyType): { publicKey: KeyObject; privateKey: KeyObject } {
  switch (keyType) {
    case 'rsa2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 0x10001 });
    case 'rsa3072':
      return generateKeyPairSync('rsa', { modulusLength: 3072, publicExponent: 0x10001 });
    case 'ec-p256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    default:
      throw new Error(`unsupported key type: ${String(keyType)}`);
  }
}

function exportPrivateKey(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}

function addDays(from: Date, days: number): Date {
  if (!Number.isFinite(days) || days <= 0)
    throw new Error(`validDays must be a positive number, got ${days}`);
  return new Date(from.getTime() + days * DAY_MS);
}

/** The subjectPublicKey bits (RFC 5280 §4.1.2.7): PKCS#1 RSAPublicKey, or the EC point. */
function subjectPublicKeyBytes(key: KeyObject): Buffer {
  if (key.asymmetricKeyType === 'rsa') return key.export({ type: 'pkcs1', format: 'der' });
  if (key.asymmetricKeyType === 'ec') {
    const jwk = key.export({ format: 'jwk' });
    if (jwk.x === undefined || jwk.y === undefined) throw new Error('EC public key without coordinates');
    // Uncompressed point, SEC 1 §2.3.3.
    return Buffer.concat([
      Buffer.from([4]),
      Buffer.from(jwk.x, 'base64url'),
      Buffer.from(jwk.y, 'base64url'),
    ]);
  }
  throw new Error(`unsupported key algorithm: ${String(key.asymmetricKeyType)}`);
}

/** Key identifier per RFC 7093 §2 method 1: leftmost 160 bits of the SHA-256 of the key bits. */
function keyIdentifier(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(subjectPublicKeyBytes(publicKey))
    .digest()
    .subarray(0, 20)
    .toString('binary');
}

function subjectKeyIdentifierExtension(ski: string): unknown {
  return {
    name: 'subjectKeyIdentifier',
    value: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, ski),
  };
}

function nameToAsn1(opts: {
  commonName: string;
  organization?: string | undefined;
  organizationalUnit?: string | undefined;
  country?: string | undefined;
}): forge.asn1.Asn1 {
  if (opts.commonName.length === 0 || opts.commonName.length > 64) {
    throw new Error('commonName must be 1 to 64 characters (RFC 5280 ub-common-name)');
  }
  // UTF8String for names (French accents); PrintableString for the country (RFC 5280 §4.1.2.4).
  const attributes: forge.pki.CertificateField[] = [];
  if (opts.country !== undefined) {
    if (!/^[A-Z]{2}$/.test(opts.country))
      throw new Error(`country must be a two-letter ISO 3166 code, got "${opts.country}"`);
    attributes.push({
      name: 'countryName',
      value: opts.country,
      valueTagClass: tagOf(asn1.Type.PRINTABLESTRING),
    });
  }
  if (opts.organization !== undefined) {
    attributes.push({
      name: 'organizationName',
      value: opts.organization,
      valueTagClass: tagOf(asn1.Type.UTF8),
    });
  }
  if (opts.organizationalUnit !== undefined) {
    attributes.push({
      name: 'organizationalUnitName',
      value: opts.organizationalUnit,
      valueTagClass: tagOf(asn1.Type.UTF8),
    });
  }
  attributes.push({ name: 'commonName', value: opts.commonName, valueTagClass: tagOf(asn1.Type.UTF8) });
  // setSubject fills in the OIDs from the names.
  const holder = forge.pki.createCertificate();
  holder.setSubject(attributes);
  return forge.pki.distinguishedNameToAsn1(holder.subject);
}

function subjectAltNames(opts: IssueOptions): unknown[] {
  const names: unknown[] = [];
  for (const dns of opts.dnsNames ?? []) {
    // RFC 5280 §4.2.1.6: dNSName is an IA5String in preferred name syntax (IDNs as A-labels).
    if (!/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(dns)) {
      throw new Error(`not a DNS name for a certificate: "${dns}" (use A-labels for IDNs)`);
    }
    names.push({ type: 2, value: dns });
  }
  for (const ip of opts.ipAddresses ?? []) {
    if (isIP(ip) === 0) throw new Error(`not an IP address: "${ip}"`);
    names.push({ type: 7, ip });
  }
  for (const email of opts.emailAddresses ?? []) {
    // rfc822Name is an IA5String: ASCII only (internationalised addresses need SmtpUTF8Mailbox, RFC 8398).
    if (!/^[\x21-\x7e]+@[a-z0-9.-]+$/i.test(email))
      throw new Error(`not an ASCII e-mail address: "${email}"`);
    names.push({ type: 1, value: email });
  }
  return names;
}

function serialNumberHex(): string {
  // RFC 5280 §4.1.2.2: positive, at most 20 octets. 16 random bytes with the top bit cleared
  // (positive) and the next one set (no leading zero octet, so the DER stays minimal).
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString('hex');
}

function timeToAsn1(date: Date): forge.asn1.Asn1 {
  // RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
  const year = date.getUTCFullYear();
  if (year >= 1950 && year < 2050) {
    return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.UTCTIME, false, asn1.dateToUtcTime(date));
  }
  return asn1.create(
    asn1.Class.UNIVERSAL,
    asn1.Type.GENERALIZEDTIME,
    false,
    asn1.dateToGeneralizedTime(date),
  );
}

function signatureAlgorithm(signingKey: KeyObject): { asn1: forge.asn1.Asn1; digest: 'sha256' } {
  const oid = (o: string) =>
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(o).getBytes());
  if (signingKey.asymmetricKeyType === 'rsa') {
    // RFC 4055 §5: parameters NULL.
    const params = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '');
    return {
      asn1: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [
        oid(OID.sha256WithRSAEncryption),
        params,
      ]),
      digest: 'sha256',
    };
  }
  if (signingKey.asymmetricKeyType === 'ec') {
    const curve = signingKey.asymmetricKeyDetails?.namedCurve;
    if (curve !== 'prime256v1') throw new Error(`unsupported CA curve ${String(curve)} (P-256 only)`);
    // RFC 5758 §3.2: parameters absent.
    return {
      asn1: asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [oid(OID.ecdsaWithSHA256)]),
      digest: 'sha256',
    };
  }
  throw new Error(`unsupported CA key algorithm: ${String(signingKey.asymmetricKeyType)}`);
}

function buildCertificate(parts: {
  subject: forge.asn1.Asn1;
  issuer: forge.asn1.Asn1;
  publicKey: KeyObject;
  signingKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  extensions: unknown[];
}): string {
  const algorithm = signatureAlgorithm(parts.signingKey);
  // setExtensions turns the named extensions into DER values (the SKI arrives ready-made).
  const holder = forge.pki.createCertificate();
  holder.setExtensions(parts.extensions as never[]);
  const spkiDer = parts.publicKey.export({ type: 'spki', format: 'der' });

  const { Class, Type } = asn1;
  const tbs = asn1.create(Class.UNIVERSAL, Type.SEQUENCE, true, [
    // version v3 (2)
    asn1.create(Class.CONTEXT_SPECIFIC, 0, true, [
      asn1.create(Class.UNIVERSAL, Type.INTEGER, false, asn1.integerToDer(2).getBytes()),
    ]),
    asn1.create(Class.UNIVERSAL, Type.INTEGER, false, forge.util.hexToBytes(serialNumberHex())),
    algorithm.asn1,
    parts.issuer,
    asn1.create(Class.UNIVERSAL, Type.SEQUENCE, true, [
      timeToAsn1(parts.notBefore),
      timeToAsn1(parts.notAfter),
    ]),
    parts.subject,
    fromDer(spkiDer.toString('binary'), { decodeBitStrings: false }),
    pkiExtras.certificateExtensionsToAsn1(holder.extensions),
  ]);
  const tbsDer = Buffer.from(asn1.toDer(tbs).getBytes(), 'binary');
  // RSA: PKCS#1 v1.5 (the default); ECDSA: DER-encoded (r, s) (the default), as X.509 expects.
  const signature = sign(algorithm.digest, tbsDer, parts.signingKey);
  const certificate = asn1.create(Class.UNIVERSAL, Type.SEQUENCE, true, [
    tbs,
    algorithm.asn1,
    asn1.create(Class.UNIVERSAL, Type.BITSTRING, false, '\x00' + signature.toString('binary')),
  ]);
  const der = Buffer.from(asn1.toDer(certificate).getBytes(), 'binary');
  // Parsing it back with OpenSSL both validates the encoding and produces the PEM.
  return new X509Certificate(der).toString();
}

/** The issuer's subject name (as DER structure) and subjectKeyIdentifier, read from its DER. */
function parseCertificate(der: Buffer): { subject: forge.asn1.Asn1; subjectKeyIdentifier?: string } {
  const cert = fromDer(der.toString('binary'), { decodeBitStrings: false });
  const tbs = childAt(cert, 0);
  // TBSCertificate: [0] version, serial, signature, issuer, validity, subject, spki, [1], [2], [3].
  const hasVersion = childAt(tbs, 0).tagClass === asn1.Class.CONTEXT_SPECIFIC;
  const subject = childAt(tbs, hasVersion ? 5 : 4);
  let subjectKeyIdentifier: string | undefined;
  for (const part of children(tbs)) {
    if (part.tagClass !== asn1.Class.CONTEXT_SPECIFIC || part.type !== 3) continue;
    for (const ext of children(childAt(part, 0))) {
      const [idNode, ...rest] = children(ext);
      if (idNode === undefined || asn1.derToOid(idNode.value as string) !== OID.subjectKeyIdentifier)
        continue;
      const valueNode = rest[rest.length - 1];
      if (valueNode === undefined) continue;
      const inner = fromDer(valueNode.value as string, { decodeBitStrings: false });
      subjectKeyIdentifier = inner.value as string;
    }
  }
  return subjectKeyIdentifier === undefined ? { subject } : { subject, subjectKeyIdentifier };
}

function children(node: forge.asn1.Asn1): forge.asn1.Asn1[] {
  return Array.isArray(node.value) ? node.value : [];
}

function childAt(node: forge.asn1.Asn1, index: number): forge.asn1.Asn1 {
  const child = children(node)[index];
  if (child === undefined) throw new Error('malformed CA certificate');
  return child;
}
