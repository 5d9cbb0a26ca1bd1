/**
 * OpenPGP keys: import (armored or binary), passphrase-protected private keys, the checks a key
 * must pass before we sign, encrypt or trust a signature with it (expiry, revocation, key flags,
 * minimum strength), and generation of keys GnuPG 2.2 can use.
 */
import * as openpgp from 'openpgp';
import type { AlgorithmInfo, Key, PrivateKey, PublicKey, Subkey } from 'openpgp';
import { CryptoError, rejectUnknownOptions } from './types.ts';
import type { CryptoErrorCode, TrustStatus } from './types.ts';

export type { PrivateKey as PgpPrivateKey, PublicKey as PgpPublicKey } from 'openpgp';

/** What a key is about to be used for. */
export type PgpKeyUse = 'sign' | 'verify' | 'encrypt' | 'decrypt';

export interface PgpKeyStatus {
  /** `trusted` when the key may be used for this purpose now. */
  status: TrustStatus;
  /** One line, only when `status` is not `trusted`. */
  problem?: string;
}

/** RSA, DSA and ElGamal keys shorter than this are refused (bits). */
export const MIN_PGP_KEY_BITS = 2048;

/** NIST and Brainpool curves are not weak; secp256k1 is not a curve OpenPGP peers expect. */
const ACCEPTED_CURVES: ReadonlySet<string> = new Set([
  'ed25519Legacy',
  'curve25519Legacy',
  'nistP256',
  'nistP384',
  'nistP521',
  'brainpoolP256r1',
  'brainpoolP384r1',
  'brainpoolP512r1',
]);

function looksArmored(bytes: Uint8Array): boolean {
  return new TextDecoder().decode(bytes.subarray(0, 64)).trimStart().startsWith('-----BEGIN PGP');
}

function malformedKey(what: string, err: unknown): CryptoError {
  const reason = err instanceof Error ? err.message : String(err);
  return new CryptoError('malformed', `${what}: not a readable OpenPGP key (${reason})`, { cause: err });
}

/**
 * Reads one or more public keys (a keyring export is fine). Private keys given here are reduced to
 * their public part.
 */
export async function readPgpPublicKeys(input: string | Uint8Array): Promise<PublicKey[]> {
  const keys: Key[] = [];
  try {
    if (typeof input !== 'string' && !looksArmored(input))
      keys.push(...(await openpgp.readKeys({ binaryKeys: input })));
    else {
      const text = typeof input === 'string' ? input : new TextDecoder().decode(input);
      // A file may hold several armored blocks one after the other (one per key).
      const blocks = text.match(
        /-----BEGIN PGP (?:PUBLIC|PRIVATE) KEY BLOCK-----[\s\S]*?-----END PGP (?:PUBLIC|PRIVATE) KEY BLOCK-----/g,
      );
      for (const block of blocks ?? [text]) keys.push(...(await openpgp.readKeys({ armoredKeys: block })));
    }
  } catch (err) {
    throw malformedKey('public key', err);
  }
  if (keys.length === 0) throw new CryptoError('malformed', 'public key: no key found');
  return keys.map((k) => (k.isPrivate() ? k.toPublic() : (k as PublicKey)));
}

/** Reads one public key; see `readPgpPublicKeys`. */
export async function readPgpPublicKey(input: string | Uint8Array): Promise<PublicKey> {
  const keys = await readPgpPublicKeys(input);
  if (keys.length !== 1)
    throw new CryptoError('malformed', `public key: expected one key, found ${keys.length}`);
  return keys[0]!;
}

export interface ReadPgpPrivateKeyOptions {
  /** Needed when the secret key material is encrypted (S2K). */
  passphrase?: string;
}

/**
 * Reads a private key and decrypts its secret material. A protected key without `passphrase`, or
 * with a wrong one, fails with `passphrase-required` (the caller asks again either way).
 */
export async function readPgpPrivateKey(
  input: string | Uint8Array,
  options: ReadPgpPrivateKeyOptions = {},
): Promise<PrivateKey> {
  rejectUnknownOptions('readPgpPrivateKey', options, ['passphrase']);
  let key: PrivateKey;
  try {
    if (typeof input === 'string') key = await openpgp.readPrivateKey({ armoredKey: input });
    else if (looksArmored(input))
      key = await openpgp.readPrivateKey({ armoredKey: new TextDecoder().decode(input) });
    else key = await openpgp.readPrivateKey({ binaryKey: input });
  } catch (err) {
    throw malformedKey('private key', err);
  }
  if (key.isDecrypted()) return key;
  if (options.passphrase === undefined) {
    throw new CryptoError('passphrase-required', `private key ${fingerprintOf(key)} is passphrase-protected`);
  }
  try {
    return await openpgp.decryptKey({ privateKey: key, passphrase: options.passphrase });
  } catch (err) {
    throw new CryptoError('passphrase-required', `private key ${fingerprintOf(key)}: wrong passphrase`, {
      cause: err,
    });
  }
}

/** Upper-case hex fingerprint of the primary key (40 digits for v4, 64 for v6). */
export function fingerprintOf(key: Key): string {
  return key.getFingerprint().toUpperCase();
}

/** E-mail addresses of the key's user IDs, lower-cased, without duplicates. */
export function emailAddressesOf(key: Key): string[] {
  const emails = key.users.map((u) => u.userID?.email.toLowerCase() ?? '').filter((e) => e !== '');
  return [...new Set(emails)];
}

/** Why this key or subkey is too weak, or undefined when it is strong enough. */
export function keyWeakness(info: AlgorithmInfo): string | undefined {
  switch (info.algorithm) {
    case 'rsaEncryptSign':
    case 'rsaEncrypt':
    case 'rsaSign':
    case 'dsa':
    case 'elgamal': {
      const bits = info.bits ?? 0;
      return bits < MIN_PGP_KEY_BITS
        ? `${info.algorithm} ${bits}-bit key is under ${MIN_PGP_KEY_BITS} bits`
        : undefined;
    }
    case 'ecdsa':
    case 'ecdh':
    case 'eddsaLegacy':
      return ACCEPTED_CURVES.has(info.curve ?? '')
        ? undefined
        : `${info.algorithm} on curve ${info.curve} is not accepted`;
    case 'ed25519':
    case 'x25519':
    case 'ed448':
    case 'x448':
      return undefined;
    default:
      return `${info.algorithm} keys are not accepted`;
  }
}

const USE_FLAGS: Record<PgpKeyUse, number> = {
  sign: openpgp.enums.keyFlags.signData,
  verify: openpgp.enums.keyFlags.signData,
  encrypt: openpgp.enums.keyFlags.encryptCommunication | openpgp.enums.keyFlags.encryptStorage,
  decrypt: openpgp.enums.keyFlags.encryptCommunication | openpgp.enums.keyFlags.encryptStorage,
};

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Whether `key` may be used for `use` at `now`: strength of the primary key and of the (sub)key
 * that would be used, revocation, expiry, key flags. Decryption ignores expiry and revocation:
 * mail encrypted before the key expired must still open.
 */
export async function checkPgpKey(key: Key, use: PgpKeyUse, now: Date = new Date()): Promise<PgpKeyStatus> {
  const fpr = fingerprintOf(key);
  const primaryWeakness = keyWeakness(key.getAlgorithmInfo());
  if (primaryWeakness !== undefined)
    return { status: 'weak-algorithm', problem: `key ${fpr}: ${primaryWeakness}` };

  if (use === 'decrypt') {
    const candidates = key.getKeys().filter((k) => keyWeakness(k.getAlgorithmInfo()) === undefined);
    const usable = await Promise.all(candidates.map((k) => hasFlags(key, k, USE_FLAGS.decrypt)));
    if (!usable.includes(true)) {
      return { status: 'wrong-key-usage', problem: `key ${fpr}: no strong key with the encryption flag` };
    }
    return { status: 'trusted' };
  }

  if (key.getCreationTime() > now) {
    return { status: 'not-yet-valid', problem: `key ${fpr} was created after ${now.toISOString()}` };
  }
  try {
    await key.verifyPrimaryKey(now);
  } catch (err) {
    const reason = describe(err);
    if (/revoked/i.test(reason)) return { status: 'revoked', problem: `key ${fpr} is revoked` };
    if (/expired/i.test(reason)) return { status: 'expired', problem: `key ${fpr} has expired` };
    return { status: 'invalid', problem: `key ${fpr}: ${reason}` };
  }

  let selected: Key | Subkey;
  try {
    selected =
      use === 'encrypt'
        ? await key.getEncryptionKey(undefined, now)
        : await key.getSigningKey(undefined, now);
  } catch (err) {
    return diagnoseNoUsableKey(key, use, now, err);
  }
  const weakness = keyWeakness(selected.getAlgorithmInfo());
  if (weakness !== undefined) return { status: 'weak-algorithm', problem: `key ${fpr}: ${weakness}` };
  return { status: 'trusted' };
}

async function hasFlags(key: Key, k: Key | Subkey, flags: number, now?: Date): Promise<boolean> {
  let sig;
  if (k === key) {
    try {
      sig = (await key.getPrimaryUser(now)).selfCertification;
    } catch {
      // No valid primary user at `now` (expired or revoked): look at the newest self-signature.
      sig = key.users.flatMap((u) => u.selfCertifications).at(-1);
    }
  } else {
    sig = (k as Subkey).bindingSignatures.at(-1);
  }
  return ((sig?.keyFlags?.[0] ?? 0) & flags) !== 0;
}

/** getSigningKey/getEncryptionKey found nothing: say why in terms of our error codes. */
async function diagnoseNoUsableKey(key: Key, use: PgpKeyUse, now: Date, err: unknown): Promise<PgpKeyStatus> {
  const fpr = fingerprintOf(key);
  const verb = use === 'encrypt' ? 'encryption' : 'signing';
  const flagged = [];
  for (const k of key.getKeys()) if (await hasFlags(key, k, USE_FLAGS[use], now)) flagged.push(k);
  if (flagged.length === 0) {
    return { status: 'wrong-key-usage', problem: `key ${fpr} has no key with the ${verb} flag` };
  }
  const reasons: string[] = [];
  for (const k of flagged) {
    if (k === key) continue; // primary key already verified valid
    try {
      await (k as Subkey).verify(now);
      const weakness = keyWeakness(k.getAlgorithmInfo());
      reasons.push(weakness ?? 'valid');
    } catch (subErr) {
      reasons.push(describe(subErr));
    }
  }
  if (reasons.length > 0 && reasons.every((r) => /revoked/i.test(r))) {
    return { status: 'revoked', problem: `key ${fpr}: every ${verb} subkey is revoked` };
  }
  if (reasons.length > 0 && reasons.every((r) => /revoked|expired/i.test(r))) {
    return { status: 'expired', problem: `key ${fpr}: every ${verb} subkey has expired or is revoked` };
  }
  if (reasons.some((r) => / bits|not accepted/.test(r))) {
    return {
      status: 'weak-algorithm',
      problem: `key ${fpr}: ${verb} subkey too weak (${reasons.join('; ')})`,
    };
  }
  return { status: 'invalid', problem: `key ${fpr}: no usable ${verb} key (${describe(err)})` };
}

const STATUS_CODES: Record<Exclude<TrustStatus, 'trusted'>, CryptoErrorCode> = {
  expired: 'key-expired',
  'not-yet-valid': 'key-expired',
  revoked: 'key-revoked',
  'wrong-key-usage': 'wrong-key-usage',
  'weak-algorithm': 'weak-algorithm',
  untrusted: 'untrusted',
  'revocation-unknown': 'untrusted',
  invalid: 'malformed',
};

/** The error code for a key or signer status that is not `trusted`. */
export function errorCodeForStatus(status: Exclude<TrustStatus, 'trusted'>): CryptoErrorCode {
  return STATUS_CODES[status];
}

/** Throws the `CryptoError` matching `checkPgpKey` when the key may not be used for `use`. */
export async function assertPgpKeyUsable(key: Key, use: PgpKeyUse, now: Date = new Date()): Promise<void> {
  const { status, problem } = await checkPgpKey(key, use, now);
  if (status !== 'trusted')
    throw new CryptoError(errorCodeForStatus(status), problem ?? `key ${fingerprintOf(key)}: ${status}`);
}

export interface GeneratePgpKeyOptions {
  userIDs: { name?: string; email: string }[];
  /** `curve25519` (default): Ed25519 signing + X25519 encryption; `rsa`: RSA-3072 or 4096. */
  type?: 'curve25519' | 'rsa';
  rsaBits?: 3072 | 4096;
  /**
   * `gnupg-2.2` (default): v4 key, Curve25519 as the "legacy" EdDSA/ECDH algorithms GnuPG 2.2
   * reads. `rfc9580`: v6 key (RFC 9580) with the new Ed25519/X25519 algorithms and SEIPDv2;
   * GnuPG 2.2 cannot import it.
   */
  profile?: 'gnupg-2.2' | 'rfc9580';
  /** Protects the secret key material (S2K). */
  passphrase?: string;
  /** Key lifetime in seconds from `now`; none when omitted. */
  expiresInSeconds?: number;
  now?: Date;
}

export interface GeneratedPgpKey {
  privateKey: string;
  publicKey: string;
  revocationCertificate: string;
  fingerprint: string;
  version: 4 | 6;
  /** False for v6 keys: GnuPG 2.2 (and 2.4) cannot read them. */
  gnupg22Compatible: boolean;
}

/** Generates a key pair (armored), primary key for certification and signing plus an encryption subkey. */
export async function generatePgpKey(options: GeneratePgpKeyOptions): Promise<GeneratedPgpKey> {
  rejectUnknownOptions('generatePgpKey', options, [
    'userIDs',
    'type',
    'rsaBits',
    'profile',
    'passphrase',
    'expiresInSeconds',
    'now',
  ]);
  const v6 = (options.profile ?? 'gnupg-2.2') === 'rfc9580';
  const type = options.type ?? 'curve25519';
  if (options.userIDs.length === 0)
    throw new CryptoError('malformed', 'generatePgpKey: at least one user ID');
  if (type === 'rsa' && options.rsaBits !== undefined && ![3072, 4096].includes(options.rsaBits)) {
    throw new CryptoError('weak-algorithm', 'generatePgpKey: RSA keys are 3072 or 4096 bits');
  }
  const algorithm =
    type === 'rsa'
      ? ({ type: 'rsa', rsaBits: options.rsaBits ?? 3072 } as const)
      : v6
        ? ({ type: 'curve25519' } as const)
        : ({ type: 'ecc', curve: 'ed25519Legacy' } as const);
  const generated = await openpgp.generateKey({
    ...algorithm,
    userIDs: options.userIDs,
    ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}),
    keyExpirationTime: options.expiresInSeconds ?? 0,
    date: options.now ?? new Date(),
    format: 'object',
    // v6 keys advertise SEIPDv2 (AEAD); v4 keys only SEIPDv1 with MDC, which GnuPG 2.2 speaks.
    config: { v6Keys: v6, aeadProtect: v6 },
  });
  return {
    privateKey: generated.privateKey.armor(),
    publicKey: generated.publicKey.armor(),
    revocationCertificate: generated.revocationCertificate,
    fingerprint: fingerprintOf(generated.publicKey),
    version: v6 ? 6 : 4,
    gnupg22Compatible: !v6,
  };
}
