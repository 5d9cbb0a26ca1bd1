import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { chmodSync, existsSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';

/**
 * The mailboxes hosted by this gateway and their credentials, in SQLite (node:sqlite).
 *
 * Addresses are stored trimmed and lower-cased. RFC 5321 §2.4 says a local part MUST be treated as
 * case-sensitive by hosts that relay it, but leaves the choice to the host that owns the mailbox:
 * we own these, and `Dr.Martin@…` and `dr.martin@…` naming two different people would only ever
 * be a mistake. Domains are case-insensitive anyway (RFC 5321 §2.4, DNS).
 */

/** MSSanté mailbox types: a person, an organisation (service, department), an application, a practice. */
export type MailboxType = 'PER' | 'ORG' | 'APP' | 'CAB';

export interface Mailbox {
  address: string;
  type: MailboxType;
  displayName?: string;
  /** Milliseconds since the epoch. */
  createdAt: number;
  hasPassword: boolean;
}

export interface MailboxStore {
  /** Creates a mailbox. Throws MailboxError `exists` if it is already there. */
  add(
    address: string,
    opts?: { type?: MailboxType; displayName?: string; password?: string },
  ): Promise<Mailbox>;
  /** Throws MailboxError `unknown` for a mailbox that is not hosted here. */
  setPassword(address: string, password: string): Promise<void>;
  /**
   * False for a wrong password, an unknown mailbox or one without a password; the last two still
   * spend the hashing time, so that timing does not tell which addresses exist.
   */
  verifyPassword(address: string, password: string): Promise<boolean>;
  get(address: string): Mailbox | undefined;
  isHosted(address: string): boolean;
  list(): Mailbox[];
  /** True if the mailbox existed. */
  remove(address: string): boolean;
  close(): void;
}

export type MailboxErrorCode = 'invalid-address' | 'invalid-type' | 'weak-password' | 'exists' | 'unknown';

/** A refused mailbox operation; `code` says why (for the CLI and the API to map). */
export class MailboxError extends Error {
  override name = 'MailboxError';
  readonly code: MailboxErrorCode;
  constructor(code: MailboxErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

export const MAILBOX_TYPES: readonly MailboxType[] = ['PER', 'ORG', 'APP', 'CAB'];
/** In characters (code points). */
export const MIN_PASSWORD_LENGTH = 12;
/** In characters; far above any real password, well below a hashing denial of service. */
const MAX_PASSWORD_LENGTH = 1024;

// scrypt (RFC 7914): N = 2^15, r = 8, p = 1 needs 128·N·r = 32 MiB, which is exactly node's
// default maxmem (32 MiB, exclusive), hence the explicit limit.
const SCRYPT = { N: 2 ** 15, r: 8, p: 1 } as const;
const SCRYPT_MAXMEM = 64 * 1024 * 1024;
/** Bytes. */
const SALT_LENGTH = 16;
const HASH_LENGTH = 32;

/** Opens (creating if needed) the mailbox store in `file`. */
export function openMailboxStore(file: string): MailboxStore {
  const isNew = file !== ':memory:' && !existsSync(file);
  const db = new DatabaseSync(file);
  try {
    // Password hashes live here: owner only. SQLite gives -wal and -shm the same mode.
    if (isNew) chmodSync(file, 0o600);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA busy_timeout = 5000');
    migrate(db);
  } catch (err) {
    db.close();
    throw new Error(`cannot open the mailbox store ${file}: ${(err as Error).message}`, { cause: err });
  }

  const selectOne = db.prepare(
    'SELECT address, type, display_name, created_at, password_hash IS NOT NULL AS has_password FROM mailboxes WHERE address = ?',
  );
  const selectAll = db.prepare(
    'SELECT address, type, display_name, created_at, password_hash IS NOT NULL AS has_password FROM mailboxes ORDER BY address',
  );
  const selectHash = db.prepare('SELECT password_hash FROM mailboxes WHERE address = ?');
  const insert = db.prepare(
    'INSERT INTO mailboxes (address, type, display_name, password_hash, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (address) DO NOTHING',
  );
  const updateHash = db.prepare('UPDATE mailboxes SET password_hash = ? WHERE address = ?');
  const deleteOne = db.prepare('DELETE FROM mailboxes WHERE address = ?');

  // Compared against when the mailbox is unknown, so that the answer takes the same time.
  let decoy: Promise<string> | undefined;

  const get = (address: string): Mailbox | undefined => {
    const normalised = tryNormaliseAddress(address);
    if (normalised === undefined) return undefined;
    const row = selectOne.get(normalised);
    return row === undefined ? undefined : toMailbox(row);
  };

  return {
    async add(address, opts = {}) {
      const normalised = normaliseAddress(address);
      const type = opts.type ?? 'PER';
      if (!MAILBOX_TYPES.includes(type)) {
        throw new MailboxError(
          'invalid-type',
          `unknown mailbox type "${type}" (expected ${MAILBOX_TYPES.join(', ')})`,
        );
      }
      if (selectOne.get(normalised) !== undefined) throw exists(normalised);
      const hash = opts.password === undefined ? null : await hashPassword(opts.password);
      const displayName = opts.displayName?.trim() || null;
      // The check above spares a hash in the common case; the insert settles concurrent adds.
      const result = insert.run(normalised, type, displayName, hash, Date.now());
      if (result.changes === 0) throw exists(normalised);
      return get(normalised)!;
    },

    async setPassword(address, password) {
      const normalised = normaliseAddress(address);
      if (selectOne.get(normalised) === undefined) throw unknown(normalised);
      const hash = await hashPassword(password);
      // The mailbox may have been removed while hashing.
      if (updateHash.run(hash, normalised).changes === 0) throw unknown(normalised);
    },

    async verifyPassword(address, password) {
      const normalised = tryNormaliseAddress(address);
      const row = normalised === undefined ? undefined : selectHash.get(normalised);
      const stored = row?.password_hash;
      if (typeof stored === 'string') return checkPassword(password, stored);
      decoy ??= hashPassword(randomBytes(18).toString('base64'));
      await checkPassword(password, await decoy);
      return false;
    },

    get,

    isHosted(address) {
      return get(address) !== undefined;
    },

    list() {
      return selectAll.all().map(toMailbox);
    },

    remove(address) {
      const normalised = tryNormaliseAddress(address);
      if (normalised === undefined) return false;
      return deleteOne.run(normalised).changes > 0;
    },

    close() {
      if (db.isOpen) db.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Schema

/** Each entry upgrades the schema by one version; never edit a released entry, append one. */
const MIGRATIONS: string[] = [
  `CREATE TABLE mailboxes (
     address       TEXT PRIMARY KEY NOT NULL,
     type          TEXT NOT NULL CHECK (type IN ('PER', 'ORG', 'APP', 'CAB')),
     display_name  TEXT,
     password_hash TEXT,
     created_at    INTEGER NOT NULL
   ) STRICT`,
];

function migrate(db: DatabaseSync): void {
  db.exec('BEGIN IMMEDIATE');
  try {
    db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT');
    const row = db.prepare('SELECT version FROM schema_version').get();
    let version = row === undefined ? 0 : Number(row.version);
    if (row === undefined) db.exec('INSERT INTO schema_version (version) VALUES (0)');
    if (version > MIGRATIONS.length) {
      throw new Error(`schema version ${version} is newer than this Courrier knows (${MIGRATIONS.length})`);
    }
    if (version < MIGRATIONS.length) {
      for (; version < MIGRATIONS.length; version++) db.exec(MIGRATIONS[version]!);
      db.prepare('UPDATE schema_version SET version = ?').run(version);
    }
    db.exec('COMMIT');
  } catch (err) {
    db.exec('ROLLBACK');
    throw err;
  }
}

function toMailbox(row: Record<string, unknown>): Mailbox {
  const mailbox: Mailbox = {
    address: String(row.address),
    type: String(row.type) as MailboxType,
    createdAt: Number(row.created_at),
    hasPassword: Number(row.has_password) === 1,
  };
  if (typeof row.display_name === 'string') mailbox.displayName = row.display_name;
  return mailbox;
}

function exists(address: string): MailboxError {
  return new MailboxError('exists', `mailbox ${address} already exists`);
}

function unknown(address: string): MailboxError {
  return new MailboxError('unknown', `no mailbox ${address} is hosted here`);
}

// ---------------------------------------------------------------------------------------------
// Addresses

// RFC 5321 §4.1.2 Dot-string (atext from RFC 5322 §3.2.3); quoted local parts are not accepted
// for mailboxes we create. Non-ASCII (SMTPUTF8, RFC 6531) is not supported yet.
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
const DOMAIN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/;

/** Trims and lower-cases `address`, or says what is wrong with it. */
function checkAddress(address: string): { address: string } | { problem: string } {
  const a = address.trim().toLowerCase();
  const at = a.lastIndexOf('@');
  if (at <= 0 || at === a.length - 1) return { problem: 'expected local-part@domain' };
  const local = a.slice(0, at);
  const domain = a.slice(at + 1);
  // RFC 5321 §4.5.3.1.1 and §4.5.3.1.2.
  if (local.length > 64) return { problem: 'local part longer than 64 characters' };
  if (domain.length > 255 || a.length > 254) return { problem: 'address longer than 254 characters' };
  if (!LOCAL_PART.test(local))
    return { problem: `invalid local part "${local}" (letters, digits, . and !#$%&'*+/=?^_\`{|}~- only)` };
  if (!DOMAIN.test(domain) || domain.split('.').some((l) => l.length > 63)) {
    return {
      problem: `invalid domain "${domain}" (a fully qualified name, ASCII letters, digits and - only)`,
    };
  }
  return { address: a };
}

/** The stored form of `address`; throws MailboxError `invalid-address`. */
export function normaliseAddress(address: string): string {
  const r = checkAddress(address);
  if ('problem' in r)
    throw new MailboxError('invalid-address', `invalid mailbox address "${address}": ${r.problem}`);
  return r.address;
}

function tryNormaliseAddress(address: string): string | undefined {
  const r = checkAddress(address);
  return 'address' in r ? r.address : undefined;
}

// ---------------------------------------------------------------------------------------------
// Passwords

function scryptAsync(
  password: string,
  salt: Buffer,
  keylen: number,
  options: ScryptOptions,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** `scrypt$N$r$p$salt$hash`, salt and hash in base64. */
async function hashPassword(password: string): Promise<string> {
  const chars = [...password].length;
  if (chars < MIN_PASSWORD_LENGTH) {
    throw new MailboxError(
      'weak-password',
      `password too short: at least ${MIN_PASSWORD_LENGTH} characters are required`,
    );
  }
  if (chars > MAX_PASSWORD_LENGTH) {
    throw new MailboxError('weak-password', `password too long: at most ${MAX_PASSWORD_LENGTH} characters`);
  }
  const salt = randomBytes(SALT_LENGTH);
  const hash = await scryptAsync(password.normalize('NFC'), salt, HASH_LENGTH, {
    ...SCRYPT,
    maxmem: SCRYPT_MAXMEM,
  });
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64'), hash.toString('base64')].join('$');
}

/** Checks against the parameters stored with the hash, so that old hashes survive new defaults. */
async function checkPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  const [scheme, n, r, p, saltB64, hashB64] = parts;
  if (parts.length !== 6 || scheme !== 'scrypt' || saltB64 === undefined || hashB64 === undefined) {
    throw new Error('unreadable password hash in the mailbox store');
  }
  const expected = Buffer.from(hashB64, 'base64');
  // NFC so that an é typed as one or two code points is the same password (RFC 8265 §4.2).
  const actual = await scryptAsync(
    password.normalize('NFC'),
    Buffer.from(saltB64, 'base64'),
    expected.length,
    {
      N: Number(n),
      r: Number(r),
      p: Number(p),
      maxmem: SCRYPT_MAXMEM,
    },
  );
  return timingSafeEqual(actual, expected);
}
