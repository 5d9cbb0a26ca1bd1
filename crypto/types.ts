/**
 * Types shared by the S/MIME (crypto/smime*.ts) and OpenPGP (crypto/openpgp*.ts) modules, so the
 * rest of the gateway handles both the same way. The API is shaped like OpenPGP.js: one async
 * function per verb (sign, encrypt, decrypt, verify), one options object with role-named fields
 * (`signingKeys`, `encryptionKeys`, `decryptionKeys`, `verificationKeys`), unknown options
 * rejected, `expectSigned` to turn a missing signature into an error. Verification returns a
 * structured result (PKI.js SignedData style), never a bare boolean.
 */

/** Why a signer's certificate or key is (not) acceptable. */
export type TrustStatus =
  | 'trusted'
  /** Chains to no configured trust anchor (S/MIME) or is not among the verification keys (OpenPGP). */
  | 'untrusted'
  | 'expired'
  | 'not-yet-valid'
  | 'revoked'
  /** Revocation could not be checked (CRL missing or stale, OCSP unreachable) and checking is required. */
  | 'revocation-unknown'
  /** MD5/SHA-1 signatures, RSA keys under 2048 bits, and the like. */
  | 'weak-algorithm'
  /** Key usage / extended key usage (S/MIME) or key flags (OpenPGP) forbid this use. */
  | 'wrong-key-usage'
  | 'invalid';

export interface SignerResult {
  format: 'smime' | 'openpgp';
  /** Subject DN (S/MIME) or primary user ID (OpenPGP). */
  identity: string;
  /** Addresses bound to the certificate or key (SAN rfc822Name / user IDs). */
  emailAddresses: string[];
  /** `issuer DN + serial` (S/MIME) or the key fingerprint (OpenPGP), for logs and lookups. */
  keyId: string;
  /** Signing time claimed by the signer, when present. */
  signedAt?: Date;
  /** The signature matches the content (nothing about trust). */
  signatureValid: boolean;
  trust: TrustStatus;
  /** Digest and signature algorithms, e.g. `sha256` / `rsa-pkcs1`, `ecdsa-p256`, `ed25519`. */
  algorithms: { digest: string; signature: string };
  /** One line per problem with this signer (empty when signature and trust are fine). */
  problems: string[];
  /** DER (S/MIME) or armored/binary (OpenPGP) signer certificate or public key, as found. */
  certificate?: Uint8Array;
}

export interface VerificationResult {
  /** The content carried a signature at all. */
  signed: boolean;
  /** Signed, and every signer's signature is valid and trusted. */
  valid: boolean;
  signers: SignerResult[];
  /** Every problem found, one line each; empty when `valid`. */
  problems: string[];
}

export type CryptoErrorCode =
  | 'unknown-option'
  | 'malformed'
  | 'unsupported'
  | 'weak-algorithm'
  | 'no-matching-key'
  | 'decryption-failed'
  | 'integrity-failed'
  | 'not-signed'
  | 'invalid-signature'
  | 'key-expired'
  | 'key-revoked'
  | 'wrong-key-usage'
  | 'untrusted'
  | 'passphrase-required';

/**
 * Every failure of the crypto modules. `code` is stable (the gateway maps it to SMTP X.7.x
 * codes); `message` is one clear line and never contains key material or message content.
 */
export class CryptoError extends Error {
  override readonly name = 'CryptoError';
  readonly code: CryptoErrorCode;

  constructor(code: CryptoErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Throws `unknown-option` for keys of `options` that are not in `allowed` (typos fail loudly). */
export function rejectUnknownOptions(verb: string, options: object, allowed: readonly string[]): void {
  const unknown = Object.keys(options).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) {
    throw new CryptoError('unknown-option', `${verb}: unknown option(s) ${unknown.join(', ')}`);
  }
}
