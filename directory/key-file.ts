import { createHash, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as openpgp from 'openpgp';
import type { KeyFormat } from './model.ts';

/**
 * A certificate (S/MIME) or public key (OpenPGP) file to attach to a mailbox: format detected from
 * the content, checked, and turned into what `DirectoryStore.attachKey` takes, with warnings for
 * the operator (expired, another address, not for e-mail). Private keys are refused: the
 * directory only ever holds what the correspondents publish.
 *
 * Only reading is done here (directory/ does not import crypto/); the gateway adds the crypto
 * layer's strength checks (crypto/openpgp-keys.ts checkPgpKey) before attaching.
 */

export interface KeyFileContents {
  format: KeyFormat;
  /** The certificate or key as stored: the bytes given (a PEM file with a chain: its first block). */
  data: Uint8Array;
  /** SHA-256 of `data`, lower-case hex: the fingerprint the store uses (detach with it). */
  fingerprint: string;
  notBefore?: number;
  /** Undefined for an OpenPGP key that does not expire. */
  notAfter?: number;
  /** Certificate subject, or the key's user IDs. */
  identity: string;
  /** E-mail addresses the certificate (SAN rfc822Name) or key (user IDs) names, lower-cased. */
  emails: string[];
  /** OpenPGP: the key's own fingerprint (v4: 40 hex digits), as `gpg` shows it. */
  keyFingerprint?: string;
  warnings: string[];
}

/** The file cannot be attached (unreadable, a private key, not a certificate or key). */
export class KeyFileError extends Error {
  override readonly name = 'KeyFileError';
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;
const PEM_PRIVATE = /-----BEGIN (?:RSA |EC |DSA |ENCRYPTED |OPENSSH )?PRIVATE KEY-----/;
const PGP_PUBLIC = '-----BEGIN PGP PUBLIC KEY BLOCK-----';
const PGP_PRIVATE = '-----BEGIN PGP PRIVATE KEY BLOCK-----';
const OID_EMAIL_PROTECTION = '1.3.6.1.5.5.7.3.4';

/** Reads `file`; see `parseKeyData`. */
export async function readKeyFile(
  file: string,
  options: { format?: KeyFormat; address?: string; now?: number } = {},
): Promise<KeyFileContents> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new KeyFileError(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return await parseKeyData(bytes, options);
  } catch (err) {
    if (err instanceof KeyFileError) throw new KeyFileError(`${file}: ${err.message}`, { cause: err });
    throw err;
  }
}

/** The format of a certificate or key, from its first bytes; undefined when it is neither. */
export function detectKeyFormat(bytes: Uint8Array): KeyFormat | 'private' | undefined {
  const head = Buffer.from(bytes.subarray(0, 4096)).toString('latin1');
  if (head.includes(PGP_PRIVATE) || PEM_PRIVATE.test(head)) return 'private';
  if (head.includes(PGP_PUBLIC)) return 'openpgp';
  if (head.includes('-----BEGIN CERTIFICATE-----')) return 'smime';
  const first = bytes[0];
  if (first === undefined) return undefined;
  if (first === 0x30) return 'smime'; // DER SEQUENCE: a certificate (or a PKCS#12/PKCS#8, refused later)
  // OpenPGP packet header (RFC 9580 §4.2): bit 7 set; the tag in bits 5-0 (new) or 5-2 (old).
  if ((first & 0x80) !== 0) {
    const tag = (first & 0x40) !== 0 ? first & 0x3f : (first >> 2) & 0x0f;
    if (tag === 6) return 'openpgp'; // public key
    if (tag === 5) return 'private'; // secret key
  }
  return undefined;
}

/**
 * Checks a certificate or OpenPGP public key. `format` is detected when not given; `address` is
 * compared with the addresses the certificate or key names (a mismatch is a warning, since some
 * operators issue service certificates for another address).
 */
export async function parseKeyData(
  bytes: Uint8Array,
  options: { format?: KeyFormat; address?: string; now?: number } = {},
): Promise<KeyFileContents> {
  const detected = detectKeyFormat(bytes);
  if (detected === 'private') {
    throw new KeyFileError(
      'this is a private key: give the certificate or public key only (private keys never go in the directory)',
    );
  }
  const format = options.format ?? detected;
  if (format === undefined) {
    throw new KeyFileError(
      'neither a certificate (PEM or DER) nor an OpenPGP public key (armored or binary)',
    );
  }
  const now = options.now ?? Date.now();
  const result = format === 'smime' ? readCertificate(bytes, now) : await readPgpKey(bytes, now);
  const address = options.address?.trim().toLowerCase();
  if (address !== undefined && !result.emails.includes(address)) {
    result.warnings.push(
      result.emails.length === 0
        ? `the ${format === 'smime' ? 'certificate' : 'key'} names no e-mail address (expected ${address})`
        : `the ${format === 'smime' ? 'certificate' : 'key'} is for ${result.emails.join(', ')}, not ${address}`,
    );
  }
  return result;
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function validityWarnings(
  notBefore: number | undefined,
  notAfter: number | undefined,
  now: number,
): string[] {
  const w: string[] = [];
  if (notAfter !== undefined && notAfter <= now) w.push(`expired on ${new Date(notAfter).toISOString()}`);
  if (notBefore !== undefined && notBefore > now)
    w.push(`not valid before ${new Date(notBefore).toISOString()}`);
  return w;
}

function readCertificate(bytes: Uint8Array, now: number): KeyFileContents {
  const text = Buffer.from(bytes).toString('latin1');
  const blocks = text.match(PEM_CERT);
  const warnings: string[] = [];
  let data = bytes;
  if (blocks !== null) {
    data = new TextEncoder().encode(`${blocks[0]}\n`);
    if (blocks.length > 1) {
      warnings.push(
        `the file holds ${blocks.length} certificates: the first one was taken (the chain is not stored)`,
      );
    }
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(data));
  } catch (err) {
    throw new KeyFileError(
      `not a readable X.509 certificate (${(err as Error).message}); a PKCS#12 (.p12) file holds a private key: export the certificate alone`,
      { cause: err },
    );
  }
  if (cert.ca)
    throw new KeyFileError(
      `this is a CA certificate (${cert.subject.replace(/\n/g, ', ')}), not a mailbox's`,
    );
  const emails = (cert.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((n) => n.startsWith('email:'))
    .map((n) => n.slice('email:'.length).toLowerCase());
  const notBefore = cert.validFromDate.getTime();
  const notAfter = cert.validToDate.getTime();
  warnings.push(...validityWarnings(notBefore, notAfter, now));
  const eku = cert.keyUsage;
  if (eku !== undefined && eku.length > 0 && !eku.includes(OID_EMAIL_PROTECTION)) {
    warnings.push('the certificate is not for e-mail (no emailProtection extended key usage)');
  }
  return {
    format: 'smime',
    data,
    fingerprint: sha256(data),
    notBefore,
    notAfter,
    identity: cert.subject.replace(/\n/g, ', '),
    emails,
    warnings,
  };
}

async function readPgpKey(bytes: Uint8Array, now: number): Promise<KeyFileContents> {
  const head = Buffer.from(bytes.subarray(0, 4096)).toString('latin1');
  let key: openpgp.Key;
  try {
    key = head.includes('-----BEGIN PGP')
      ? await openpgp.readKey({ armoredKey: Buffer.from(bytes).toString('utf8') })
      : await openpgp.readKey({ binaryKey: bytes });
  } catch (err) {
    throw new KeyFileError(`not a readable OpenPGP public key (${(err as Error).message})`, { cause: err });
  }
  if (key.isPrivate()) {
    throw new KeyFileError(
      'this is a private key: give the certificate or public key only (private keys never go in the directory)',
    );
  }
  const warnings: string[] = [];
  const notBefore = key.getCreationTime().getTime();
  let notAfter: number | undefined;
  const expiry = await key.getExpirationTime().catch(() => null);
  if (expiry instanceof Date) notAfter = expiry.getTime();
  warnings.push(...validityWarnings(notBefore, notAfter, now));
  if (await key.isRevoked(undefined, undefined, new Date(now)).catch(() => false))
    warnings.push('the key is revoked');
  // An expired or revoked key has no usable encryption key either: one warning says it.
  if (warnings.length === 0) {
    try {
      await key.getEncryptionKey(undefined, new Date(now));
    } catch (err) {
      warnings.push(`no usable encryption key (${(err as Error).message})`);
    }
  }
  const emails = [
    ...new Set(key.users.map((u) => u.userID?.email.toLowerCase() ?? '').filter((e) => e !== '')),
  ];
  return {
    format: 'openpgp',
    data: bytes,
    fingerprint: sha256(bytes),
    notBefore,
    ...(notAfter === undefined ? {} : { notAfter }),
    identity: key.getUserIDs().join('; '),
    emails,
    keyFingerprint: key.getFingerprint().toUpperCase(),
    warnings,
  };
}
