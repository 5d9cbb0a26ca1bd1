/**
 * PGP/MIME (RFC 3156) with OpenPGP.js: one async function per verb, one options object with
 * role-named fields, unknown options rejected, `expectSigned`; verification gives the structured
 * `VerificationResult` shared with S/MIME.
 *
 * Input of `pgpSign`/`pgpEncrypt`: the MIME entity to protect (its Content-* headers, a blank
 * line, its body). Output: the `multipart/signed` or `multipart/encrypted` entity (Content-Type
 * header, blank line, body) that replaces it in the message. `pgpVerify`/`pgpDecrypt` take such
 * an entity (or a whole message: other headers are ignored) and give back the inner entity.
 */
import * as openpgp from 'openpgp';
import type { Key, PrivateKey, PublicKey, Signature } from 'openpgp';
import { CryptoError, rejectUnknownOptions } from './types.ts';
import type { CryptoErrorCode, SignerResult, TrustStatus, VerificationResult } from './types.ts';
import {
  assertPgpKeyUsable,
  checkPgpKey,
  emailAddressesOf,
  errorCodeForStatus,
  fingerprintOf,
} from './openpgp-keys.ts';
import {
  buildMultipartEncrypted,
  buildMultipartSigned,
  bytesToLatin1,
  canonicalCrlf,
  detectInlinePgp,
  headerValue,
  latin1ToBytes,
  makeSevenBitSafe,
  micalgFor,
  parseEntity,
  splitMultipart,
  toBytes,
} from './pgp-mime.ts';
import type { InlinePgp, MimeEntity } from './pgp-mime.ts';

type OneOrMany<T> = T | readonly T[];

function list<T>(value: OneOrMany<T> | undefined): T[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? [...(value as readonly T[])] : [value as T];
}

/**
 * OpenPGP.js settings for everything we write and read. Compression is off (RFC 9580 §5.6 makes
 * it optional): it costs GnuPG about 3x at 2 MB and gains nothing on PDFs and zips, and turning
 * it off removes decompression bombs from what we produce. SHA-256 is the signature digest.
 */
const PGP_CONFIG = {
  preferredCompressionAlgorithm: openpgp.enums.compression.uncompressed,
  preferredHashAlgorithm: openpgp.enums.hash.sha256,
  // Refuse to decrypt anything without MDC/AEAD (EFAIL); these are OpenPGP.js defaults, made explicit.
  allowUnauthenticatedMessages: false,
  allowUnauthenticatedStream: false,
} as const;

export interface PgpSignOptions {
  signingKeys: OneOrMany<PrivateKey>;
  /** Signature time and the moment keys must be valid at; defaults to the current time. */
  now?: Date;
}

export interface PgpEncryptOptions {
  encryptionKeys: OneOrMany<PublicKey>;
  /** When present the message is signed then encrypted: one OpenPGP message (RFC 3156 §6.2). */
  signingKeys?: OneOrMany<PrivateKey>;
  now?: Date;
}

export interface PgpVerifyOptions {
  /** The keys whose signatures are trusted (from the directory); others come out `untrusted`. */
  verificationKeys: OneOrMany<PublicKey>;
  /** Throw `not-signed` when there is no signature, and the signer's error code when it is not valid. */
  expectSigned?: boolean;
  now?: Date;
}

export interface PgpDecryptOptions {
  decryptionKeys: OneOrMany<PrivateKey>;
  verificationKeys?: OneOrMany<PublicKey>;
  expectSigned?: boolean;
  now?: Date;
}

export interface PgpReadResult {
  /** The inner MIME entity (headers, blank line, body), exactly as signed or decrypted. */
  content: Uint8Array;
  verification: VerificationResult;
  /** Inline PGP armor found in a body that is not PGP/MIME: detected, not processed. */
  inlinePgp?: InlinePgp;
}

/**
 * Clear-signs a MIME entity as `multipart/signed; protocol="application/pgp-signature"` with
 * `micalg=pgp-sha256` (RFC 3156 §5). The entity is first given 7-bit-safe transfer encodings and
 * CRLF line endings, then signed exactly as it will be transmitted.
 */
export async function pgpSign(content: Uint8Array | string, options: PgpSignOptions): Promise<Uint8Array> {
  rejectUnknownOptions('pgpSign', options, ['signingKeys', 'now']);
  const now = options.now ?? new Date();
  const signingKeys = list(options.signingKeys);
  if (signingKeys.length === 0) throw new CryptoError('no-matching-key', 'pgpSign: no signing key');
  for (const key of signingKeys) await assertPgpKeyUsable(key, 'sign', now);

  const part = makeSevenBitSafe(canonicalCrlf(bytesToLatin1(toBytes(content))));
  const signature = await wrap('sign', async () =>
    openpgp.sign({
      message: await openpgp.createMessage({ binary: latin1ToBytes(part) }),
      signingKeys,
      detached: true,
      format: 'object',
      date: now,
      config: PGP_CONFIG,
    }),
  );
  // Detached signing gives a Signature object (typed as a Message by OpenPGP.js).
  const hashes = signature.packets
    .filter((p): p is openpgp.SignaturePacket => p instanceof openpgp.SignaturePacket)
    .map((p) => hashName(p.hashAlgorithm));
  return latin1ToBytes(buildMultipartSigned(part, signature.armor(), micalgFor(hashes)));
}

/**
 * Encrypts a MIME entity (signed first when `signingKeys` are given) as `multipart/encrypted;
 * protocol="application/pgp-encrypted"` (RFC 3156 §4, §6.2). Uncompressed; SEIPDv1 with MDC for
 * v4 keys, SEIPDv2 (AEAD) when every recipient key supports it.
 */
export async function pgpEncrypt(
  content: Uint8Array | string,
  options: PgpEncryptOptions,
): Promise<Uint8Array> {
  rejectUnknownOptions('pgpEncrypt', options, ['encryptionKeys', 'signingKeys', 'now']);
  const now = options.now ?? new Date();
  const encryptionKeys = list(options.encryptionKeys);
  const signingKeys = list(options.signingKeys);
  if (encryptionKeys.length === 0) throw new CryptoError('no-matching-key', 'pgpEncrypt: no encryption key');
  for (const key of encryptionKeys) await assertPgpKeyUsable(key, 'encrypt', now);
  for (const key of signingKeys) await assertPgpKeyUsable(key, 'sign', now);

  const entity = latin1ToBytes(canonicalCrlf(bytesToLatin1(toBytes(content))));
  const armored = await wrap('encrypt', async () =>
    openpgp.encrypt({
      message: await openpgp.createMessage({ binary: entity }),
      encryptionKeys,
      signingKeys,
      date: now,
      format: 'armored',
      config: PGP_CONFIG,
    }),
  );
  return latin1ToBytes(buildMultipartEncrypted(armored));
}

/**
 * The two parts of a PGP/MIME `multipart/signed` or `multipart/encrypted` entity (RFC 3156 §4:
 * exactly two body parts), once its protocol parameter says it is PGP/MIME.
 */
function pgpMimeParts(
  entity: MimeEntity,
  protocol: 'application/pgp-signature' | 'application/pgp-encrypted',
): [string, string] {
  const { mediaType, params } = entity.contentType;
  if ((params['protocol'] ?? '').toLowerCase() !== protocol) {
    throw new CryptoError(
      'unsupported',
      `${mediaType} with protocol ${params['protocol'] ?? '(none)'} is not PGP/MIME`,
    );
  }
  const { parts } = splitMultipart(entity.body, params['boundary'] ?? '');
  const [first, second] = parts;
  if (parts.length !== 2 || first === undefined || second === undefined) {
    throw new CryptoError('malformed', `${mediaType} has ${parts.length} parts instead of 2`);
  }
  return [first, second];
}

/** Verifies a `multipart/signed` PGP/MIME entity; see `PgpReadResult`. */
export async function pgpVerify(
  content: Uint8Array | string,
  options: PgpVerifyOptions,
): Promise<PgpReadResult> {
  rejectUnknownOptions('pgpVerify', options, ['verificationKeys', 'expectSigned', 'now']);
  const now = options.now ?? new Date();
  const text = canonicalCrlf(bytesToLatin1(toBytes(content)));
  const entity = parseEntity(text);
  const { mediaType } = entity.contentType;

  if (mediaType !== 'multipart/signed') {
    const inlinePgp = detectInlinePgp(entity.body);
    const verification = unsigned(inlinePgp);
    if (options.expectSigned === true) throw notSigned(inlinePgp);
    return { content: latin1ToBytes(text), verification, ...(inlinePgp ? { inlinePgp } : {}) };
  }
  const [signedPart, signaturePart] = pgpMimeParts(entity, 'application/pgp-signature');
  const sigEntity = parseEntity(signaturePart);
  if (sigEntity.contentType.mediaType !== 'application/pgp-signature') {
    throw new CryptoError(
      'malformed',
      `second part of multipart/signed is ${sigEntity.contentType.mediaType}`,
    );
  }
  const signature = await readArmored('signature', () =>
    openpgp.readSignature({ armoredSignature: decodeTransfer(sigEntity) }),
  );
  const signed = latin1ToBytes(signedPart);
  const result = await wrap('verify', async () =>
    openpgp.verify({
      message: await openpgp.createMessage({ binary: signed }),
      signature,
      verificationKeys: list(options.verificationKeys),
      format: 'binary',
      date: now,
      config: PGP_CONFIG,
    }),
  );
  const verification = await buildVerification(result.signatures, list(options.verificationKeys), now);
  enforceExpectSigned(verification, options.expectSigned);
  return { content: signed, verification };
}

/**
 * Decrypts a `multipart/encrypted` PGP/MIME entity and verifies the signature inside (RFC 3156
 * §6.2) or, when the decrypted entity is itself `multipart/signed`, that one (§6.1).
 */
export async function pgpDecrypt(
  content: Uint8Array | string,
  options: PgpDecryptOptions,
): Promise<PgpReadResult> {
  rejectUnknownOptions('pgpDecrypt', options, ['decryptionKeys', 'verificationKeys', 'expectSigned', 'now']);
  const now = options.now ?? new Date();
  const decryptionKeys = list(options.decryptionKeys);
  const verificationKeys = list(options.verificationKeys);
  const text = canonicalCrlf(bytesToLatin1(toBytes(content)));
  const entity = parseEntity(text);
  const { mediaType } = entity.contentType;

  if (mediaType !== 'multipart/encrypted') {
    const inlinePgp = detectInlinePgp(entity.body);
    if (inlinePgp === 'encrypted') {
      throw new CryptoError('unsupported', 'inline PGP encrypted body (not PGP/MIME): not decrypted');
    }
    throw new CryptoError('unsupported', `not a PGP/MIME encrypted entity (${mediaType})`);
  }
  const [versionPart, dataPart] = pgpMimeParts(entity, 'application/pgp-encrypted');
  const version = parseEntity(versionPart);
  if (
    version.contentType.mediaType !== 'application/pgp-encrypted' ||
    !/^Version:\s*1\s*$/im.test(version.body)
  ) {
    throw new CryptoError(
      'malformed',
      'multipart/encrypted: first part is not application/pgp-encrypted Version: 1',
    );
  }
  const message = await readArmored('message', () =>
    openpgp.readMessage({ armoredMessage: decodeTransfer(parseEntity(dataPart)) }),
  );

  const available = decryptionKeys.flatMap((k) => k.getKeys().map((sub) => sub.getKeyID()));
  const wanted = message.getEncryptionKeyIDs();
  if (decryptionKeys.length === 0 || !wanted.some((id) => available.some((a) => a.equals(id, true)))) {
    throw new CryptoError(
      'no-matching-key',
      `encrypted for ${wanted.map((id) => id.toHex().toUpperCase()).join(', ') || 'no key'}, none of which we hold`,
    );
  }
  for (const key of decryptionKeys) await assertPgpKeyUsable(key, 'decrypt', now);

  const result = await wrap('decrypt', () =>
    openpgp.decrypt({
      message,
      decryptionKeys,
      verificationKeys,
      format: 'binary',
      date: now,
      config: PGP_CONFIG,
    }),
  );
  const decrypted = result.data;
  if (result.signatures.length === 0) {
    const inner = parseEntity(canonicalCrlf(bytesToLatin1(decrypted)));
    if (inner.contentType.mediaType === 'multipart/signed') {
      // RFC 3156 §6.1: signed with multipart/signed, then encrypted (some clients do this).
      return pgpVerify(decrypted, {
        verificationKeys,
        now,
        ...(options.expectSigned !== undefined ? { expectSigned: options.expectSigned } : {}),
      });
    }
  }
  const verification = await buildVerification(result.signatures, verificationKeys, now);
  enforceExpectSigned(verification, options.expectSigned);
  return { content: decrypted, verification };
}

// ---------------------------------------------------------------------------------------------

function unsigned(inlinePgp: InlinePgp | undefined): VerificationResult {
  const problems =
    inlinePgp === undefined
      ? ['not signed']
      : [`inline PGP ${inlinePgp === 'signed' ? 'signature' : 'message'} found (not PGP/MIME): not verified`];
  return { signed: false, valid: false, signers: [], problems };
}

function notSigned(inlinePgp: InlinePgp | undefined): CryptoError {
  return new CryptoError(
    'not-signed',
    inlinePgp === undefined
      ? 'a signature was expected and the content is not signed'
      : 'a signature was expected; the content carries inline PGP, which is not verified',
  );
}

function enforceExpectSigned(verification: VerificationResult, expectSigned: boolean | undefined): void {
  if (expectSigned !== true) return;
  if (!verification.signed) throw notSigned(undefined);
  if (verification.valid) return;
  const firstBad = verification.signers.find((s) => !s.signatureValid || s.trust !== 'trusted');
  const code: CryptoErrorCode =
    firstBad === undefined || firstBad.trust === 'trusted' ? 'invalid-signature' : signerErrorCode(firstBad);
  throw new CryptoError(code, verification.problems.join('; ') || 'signature not valid');
}

function signerErrorCode(signer: SignerResult): CryptoErrorCode {
  if (signer.trust === 'invalid' || signer.trust === 'trusted') return 'invalid-signature';
  return errorCodeForStatus(signer.trust);
}

/** Body of a part with its transfer encoding undone (armor is normally 7bit). */
function decodeTransfer(entity: ReturnType<typeof parseEntity>): string {
  const cte = (headerValue(entity.headers, 'content-transfer-encoding') ?? '7bit').toLowerCase();
  if (cte === 'base64') return Buffer.from(entity.body, 'base64').toString('latin1');
  return entity.body;
}

const SIGNATURE_ALGORITHMS: Record<string, string> = {
  rsaEncryptSign: 'rsa-pkcs1',
  rsaSign: 'rsa-pkcs1',
  eddsaLegacy: 'ed25519',
  ed25519: 'ed25519',
  ed448: 'ed448',
  dsa: 'dsa',
};

function signatureAlgorithmName(key: Key | undefined, publicKeyAlgorithm: number | null): string {
  const algorithm =
    publicKeyAlgorithm === null ? 'unknown' : openpgp.enums.read(openpgp.enums.publicKey, publicKeyAlgorithm);
  if (algorithm === 'ecdsa' && key !== undefined) {
    const curve = key.getAlgorithmInfo().curve ?? '';
    return 'ecdsa-' + curve.replace(/^nist/, '').toLowerCase();
  }
  return SIGNATURE_ALGORITHMS[algorithm] ?? algorithm;
}

interface OpenPgpVerification {
  keyID: openpgp.KeyID;
  verified: Promise<true>;
  signature: Promise<Signature>;
}

async function buildVerification(
  signatures: OpenPgpVerification[],
  verificationKeys: PublicKey[],
  now: Date,
): Promise<VerificationResult> {
  if (signatures.length === 0) return unsigned(undefined);
  const signers: SignerResult[] = [];
  for (const entry of signatures) signers.push(await buildSigner(entry, verificationKeys, now));
  const problems = signers.flatMap((s) => s.problems);
  const valid = signers.every((s) => s.signatureValid && s.trust === 'trusted');
  return { signed: true, valid, signers, problems };
}

async function buildSigner(
  entry: OpenPgpVerification,
  verificationKeys: PublicKey[],
  now: Date,
): Promise<SignerResult> {
  let signatureValid = false;
  let failure: string | undefined;
  try {
    await entry.verified;
    signatureValid = true;
  } catch (err) {
    failure = err instanceof Error ? err.message : String(err);
  }
  let packet;
  try {
    packet = (await entry.signature).packets[0];
  } catch {
    packet = undefined; // the signature packet did not parse; `failure` says why
  }
  const key = verificationKeys.find((k) => k.getKeys(entry.keyID).length > 0);
  const signingSubkey = key?.getKeys(entry.keyID)[0];
  const issuer = packet?.issuerFingerprint
    ? Buffer.from(packet.issuerFingerprint).toString('hex').toUpperCase()
    : entry.keyID.toHex().toUpperCase();
  const algorithms = {
    digest: hashName(packet?.hashAlgorithm),
    signature: signatureAlgorithmName(signingSubkey as Key | undefined, packet?.publicKeyAlgorithm ?? null),
  };
  const signedAt = packet?.created ?? undefined;

  if (key === undefined) {
    return {
      format: 'openpgp',
      identity: '',
      emailAddresses: [],
      keyId: issuer,
      ...(signedAt ? { signedAt } : {}),
      signatureValid: false,
      trust: 'untrusted',
      algorithms,
      problems: [`signed by key ${issuer}, which is not among the verification keys`],
    };
  }

  const problems: string[] = [];
  const keyStatus = await checkPgpKey(key, 'verify', now);
  let trust: TrustStatus = keyStatus.status;
  if (keyStatus.problem !== undefined) problems.push(keyStatus.problem);
  if (!signatureValid) {
    if (trust === 'trusted')
      trust = /insecure|weak|too weak/i.test(failure ?? '') ? 'weak-algorithm' : 'invalid';
    if (keyStatus.problem === undefined)
      problems.push(`signature by ${fingerprintOf(key)} does not verify: ${failure}`);
  }
  const identity = await primaryUserId(key, now);
  return {
    format: 'openpgp',
    identity,
    emailAddresses: emailAddressesOf(key),
    keyId: fingerprintOf(key),
    ...(signedAt ? { signedAt } : {}),
    signatureValid,
    trust,
    algorithms,
    problems,
    certificate: key.write(),
  };
}

async function primaryUserId(key: Key, now: Date): Promise<string> {
  try {
    const primary = await key.getPrimaryUser(now);
    return primary.user.userID?.userID ?? '';
  } catch {
    // Expired or revoked keys have no valid primary user at `now`; name them all the same.
    return key.getUserIDs()[0] ?? '';
  }
}

async function readArmored<T>(what: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new CryptoError('malformed', `PGP/MIME ${what} is not readable OpenPGP data (${reason})`, {
      cause: err,
    });
  }
}

/** OpenPGP.js error messages mapped to our codes; anything else keeps its message and cause. */
const ERROR_PATTERNS: [RegExp, CryptoErrorCode][] = [
  [
    /modification detected|authentication tag mismatch|not authenticated|unable to authenticate data|integrity check failed/i,
    'integrity-failed',
  ],
  [/no decryption key packets found/i, 'no-matching-key'],
  [
    /session key decryption failed|decryption error|incorrect key passphrase|not decrypted/i,
    'decryption-failed',
  ],
  [
    /misformed armored|unknown ascii armor|unexpected end|packet|malformed|invalid.*length|unsupported.*version/i,
    'malformed',
  ],
  [/could not find valid (encryption|signing) key/i, 'wrong-key-usage'],
  [/too weak|insecure|is disabled/i, 'weak-algorithm'],
];

async function wrap<T>(verb: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof CryptoError) throw err;
    const reason = err instanceof Error ? err.message : String(err);
    const code =
      ERROR_PATTERNS.find(([re]) => re.test(reason))?.[1] ??
      (verb === 'decrypt' ? 'decryption-failed' : 'malformed');
    throw new CryptoError(code, `OpenPGP ${verb} failed: ${reason}`, { cause: err });
  }
}

function hashName(algorithm: number | null | undefined): string {
  if (algorithm === null || algorithm === undefined) return 'unknown';
  return String(openpgp.enums.read(openpgp.enums.hash, algorithm as openpgp.enums.hash)).toLowerCase();
}
