import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { hostname } from 'node:os';
import {
  activityMethods,
  keepActivitiesOf,
  liveActivityCounts,
  retireUnseenActivities,
  type ActivityMethods,
} from './activity-store.ts';
import type { MailboxStore, MailboxType } from './mailbox-store.ts';
import { MAILBOX_TYPES, normaliseAddress } from './mailbox-store.ts';
import type {
  DirectoryMailbox,
  KeyFormat,
  MailboxKey,
  MailboxStructure,
  Professional,
  SearchQuery,
  Structure,
  StructureIdType,
  StructureKind,
  Team,
  TeamExpansion,
  TeamKind,
  TeamMember,
  TrustDomainEntry,
} from './model.ts';
import { TEAM_KINDS } from './model.ts';
import { likeEscape, normaliseText, toNationalId } from './normalise.ts';
import { openPostgresDriver, type PostgresOptions } from './pg-driver.ts';
import { migrateDirectory, restoreSearchIndex, searchIndexSuspended, suspendSearchIndex } from './schema.ts';
import {
  openSqliteDriver,
  unnestTable,
  type BatchColumns,
  type BatchRow,
  type Row,
  type SqlDriver,
  type SqlExecutor,
} from './sql.ts';

/** One accepted line of an extract, ready to store (see extract-import.ts). */
export interface ExtractRow {
  lineNo: number;
  /** Hash of the line's bytes: equal hash, nothing to write. */
  hash: string;
  type: MailboxType;
  address: string;
  domain: string;
  professional?: Professional;
  structure?: Structure;
  service?: string;
  street?: string;
  postcode?: string;
  city?: string;
  department?: string;
  country?: string;
  dematerialisation?: boolean;
}

export interface BatchResult {
  inserted: number;
  updated: number;
  unchanged: number;
  rejected: { line: number; reason: string }[];
}

export interface DirectoryStoreOptions {
  /**
   * The hosted-mailbox store (mailbox-store.ts): its mailboxes are reported `hosted`, and one that
   * is not in the directory at all still resolves (source `local`).
   */
  hostedMailboxes?: Pick<MailboxStore, 'get'>;
}

export interface DirectoryCounts {
  professionals: number;
  structures: number;
  mailboxes: number;
  liveMailboxes: number;
  teams: number;
  keys: number;
  trustDomains: number;
}

/** One row of `dir_imports`. */
export interface ImportRecord {
  id: number;
  kind: string;
  state: 'running' | 'finished' | 'failed';
  /** `host:pid:random` of the process that ran it (imports from before schema v2 have none). */
  holder?: string;
  startedAt: number;
  heartbeatAt?: number;
  finishedAt?: number;
  /** JSON: counts, or `failed` with the reason. */
  summary?: string;
}

/** What finishImport does besides releasing the lock (DirectoryStore.finishImport). */
export interface FinishImportOptions {
  /**
   * What the import retires of what it did not see: the extract's links, then the mailboxes left
   * without a live link (`'mailboxes'`, or `true`); the RPPS activities (`'activities'`); nothing
   * (`false`). Each import retires only its own kind of rows.
   */
  retire: boolean | 'mailboxes' | 'activities';
  /** JSON object of counts; the retirement's counts (and why it was refused) are added to it. */
  summary: string;
  /** Lines the import accepted; 0 refuses the retirement (an empty or unreadable file). */
  acceptedLines?: number;
  /**
   * Largest share (0 to 1) of the live links (or activities) one import may retire; default
   * DEFAULT_MAX_RETIRE_SHARE. More than that is taken for a damaged file: nothing is retired.
   */
  maxRetireShare?: number;
  /** Retire even past maxRetireShare or with no accepted line (the operator checked the file). */
  forceRetire?: boolean;
  /**
   * Rejected extract lines whose address could be read: their live links stay (all links of the
   * address, or the one at `structureKey`). Marked seen before counting and retiring.
   */
  keepLinks?: readonly { address: string; structureKey?: string }[];
  /** Rejected RPPS lines whose national id could be read: that person's live activities stay. */
  keepActivitiesOf?: readonly string[];
}

export interface FinishImportResult {
  retiredLinks: number;
  retiredMailboxes: number;
  retiredActivities: number;
  /** Live links or activities kept because their line was rejected (keepLinks, keepActivitiesOf). */
  kept: number;
  /** Why nothing was retired, when the safeguards refused it. */
  retireRefused?: string;
}

/** Default share of the live links or activities one import may retire: 20 %. */
export const DEFAULT_MAX_RETIRE_SHARE = 0.2;

/** Heartbeat age after which a running import is taken for dead: 10 min (ms). */
export const IMPORT_STALE_AFTER_MS = 10 * 60 * 1000;

/** Another import holds the store's import lock, or this import lost it. Nothing was changed. */
export class ImportLockError extends Error {
  override name = 'ImportLockError';
}

/**
 * Storage and queries of the directory; the same contract on SQLite and PostgreSQL. The RPPS
 * activities (`activitiesOf` and the import primitives of rpps-import.ts) are in activity-store.ts.
 */
export interface DirectoryStore extends ActivityMethods {
  readonly backend: 'sqlite' | 'postgres';

  /** Case-insensitive; a retired mailbox only with `includeRetired`. */
  resolveAddress(address: string, opts?: { includeRetired?: boolean }): Promise<DirectoryMailbox | undefined>;
  /** `8`+RPPS, `0`+ADELI or a bare 11-digit RPPS. Live mailboxes only. */
  findByNationalId(
    id: string,
  ): Promise<{ professional: Professional; mailboxes: DirectoryMailbox[] } | undefined>;
  /** Accent- and case-insensitive; hidden (liste rouge) and retired mailboxes left out by default. */
  search(query: SearchQuery): Promise<DirectoryMailbox[]>;

  /** Adds or updates a mailbox that is not from the extract (APP, CAB, team addresses...). */
  saveLocalMailbox(mailbox: {
    address: string;
    type: MailboxType;
    displayName?: string;
    nationalId?: string;
    hidden?: boolean;
  }): Promise<DirectoryMailbox>;
  /** Liste rouge flag; false if the mailbox is unknown. */
  setHidden(address: string, hidden: boolean): Promise<boolean>;
  saveProfessional(professional: Professional): Promise<void>;

  saveTeam(team: Team): Promise<Team>;
  addTeamMember(teamId: string, member: TeamMember): Promise<void>;
  removeTeamMember(teamId: string, member: TeamMember): Promise<boolean>;
  getTeam(idOrAddress: string): Promise<(Team & { members: TeamMember[] }) | undefined>;
  /** Every team, ordered by id. */
  listTeams(): Promise<Team[]>;
  /** Removes a team and its memberships; false if there was no such team. */
  removeTeam(id: string): Promise<boolean>;
  /** Members' addresses, one per member, deduplicated; `profession` keeps members of one code. */
  expandTeam(idOrAddress: string, opts?: { profession?: string }): Promise<TeamExpansion | undefined>;

  /**
   * Attaches a certificate or key to a mailbox (replacing the same bytes). For S/MIME the validity
   * is read from the certificate when not given.
   */
  attachKey(
    address: string,
    key: { format: KeyFormat; data: Uint8Array; notBefore?: number; notAfter?: number; preferred?: boolean },
  ): Promise<MailboxKey>;
  /** Keys valid at `at` (default now), preferred first, then the latest expiry. */
  keysFor(
    address: string,
    opts?: { at?: number; format?: KeyFormat; includeInvalid?: boolean },
  ): Promise<MailboxKey[]>;
  detachKey(address: string, fingerprint: string): Promise<boolean>;

  /**
   * Stores whitelist entries. `complete`: the set replaces the current one; otherwise (a truncated
   * file) entries are added or updated and nothing is removed.
   */
  saveTrustDomains(
    entries: readonly TrustDomainEntry[],
    opts: { complete: boolean },
  ): Promise<{ entries: number; removed: number }>;
  isTrustedDomain(domain: string): Promise<boolean>;
  /** Subject DNs of the operator certificates that may speak for `domain`. */
  operatorDnsFor(domain: string): Promise<string[]>;

  /**
   * Import primitives, used by importExtract (extract-import.ts) and the RPPS import. One import at
   * a time per store, across processes and gateway instances: `beginImport` takes the lock (its row
   * in `dir_imports` with `finished_at` NULL) or throws an ImportLockError naming the holder, unless
   * the holder's heartbeat is older than `staleAfterMs` (default 10 min): that import is then marked
   * failed and this one proceeds.
   */
  beginImport(kind: string, opts?: { staleAfterMs?: number }): Promise<number>;
  /** One transaction; refreshes the lock's heartbeat (ImportLockError if the lock was lost). */
  applyExtractBatch(importId: number, rows: readonly ExtractRow[]): Promise<BatchResult>;
  /** Refreshes the lock's heartbeat; ImportLockError if the lock was taken over as stale. */
  heartbeatImport(importId: number): Promise<void>;
  /**
   * Releases the lock and, in the same transaction, retires what the import did not see (see
   * FinishImportOptions: links then mailboxes, or activities), unless that is refused: no accepted
   * line, or more than `maxRetireShare` of the live rows (the reason is in `retireRefused` and the
   * import's summary). ImportLockError (and nothing retired) if the lock was taken over as stale.
   */
  finishImport(importId: number, opts: FinishImportOptions): Promise<FinishImportResult>;
  /**
   * Marks a running import failed (its summary says why) and releases the lock; retires nothing.
   * False when the import was no longer running (finished, or taken over as stale).
   */
  failImport(importId: number, reason: string): Promise<boolean>;
  /** The latest imports, newest first (default 20): what runs, what failed and why. */
  listImports(limit?: number): Promise<ImportRecord[]>;

  counts(): Promise<DirectoryCounts>;
  close(): Promise<void>;
}

/** Opens (creating if needed) the directory in an SQLite file; may be the hosted-mailbox file. */
export async function openSqliteDirectory(
  file: string,
  options: DirectoryStoreOptions = {},
): Promise<DirectoryStore> {
  const driver = openSqliteDriver(file);
  return createDirectoryStore(driver, options);
}

/** Opens the directory on PostgreSQL (several gateway instances share it). */
export async function openPostgresDirectory(
  pgOptions: PostgresOptions,
  options: DirectoryStoreOptions = {},
): Promise<DirectoryStore> {
  return createDirectoryStore(await openPostgresDriver(pgOptions), options);
}

const SEARCH_LIMIT = 50;
/** The most results one search returns (the CLI and the JSON endpoint say so). */
export const SEARCH_MAX = 500;
/** Candidates checked per statement by searchByNameIndex. */
const SEARCH_CHUNK = 500;

/**
 * SQLite search with a name of words of 3 characters or more: the FTS5 trigram table
 * (`dir_mailbox_name_search`, schema.ts) gives the mailboxes whose normalised name contains every
 * such word, a superset of what `name_norm LIKE '%word%'` keeps, in address order; `verify` (the
 * search's own statement, every condition of the query plus `m.address IN` a JSON array) keeps
 * the right ones, a chunk of candidates at a time, until `limit` are found. The results are those
 * of the scan, in the same order: shorter words, profession, city and structure are filtered by
 * the same LIKEs.
 */
async function searchByNameIndex(
  driver: SqlDriver,
  verify: string,
  params: readonly (string | number)[],
  trigramWords: readonly string[],
  limit: number,
): Promise<Row[]> {
  // Normalised words are letters and digits only: a quoted FTS5 string is each as a substring.
  const match = trigramWords.map((w) => `"${w}"`).join(' AND ');
  const candidates = await driver.all(
    'SELECT address FROM dir_mailbox_name_search WHERE dir_mailbox_name_search MATCH ? ORDER BY address',
    [match],
  );
  const found: Row[] = [];
  for (let i = 0; i < candidates.length && found.length < limit; i += SEARCH_CHUNK) {
    const chunk = JSON.stringify(candidates.slice(i, i + SEARCH_CHUNK).map((c) => String(c.address)));
    found.push(...(await driver.all(`${verify} LIMIT ${limit - found.length}`, [...params, chunk])));
  }
  return found;
}

async function createDirectoryStore(
  driver: SqlDriver,
  options: DirectoryStoreOptions,
): Promise<DirectoryStore> {
  try {
    await migrateDirectory(driver);
  } catch (err) {
    await driver.close();
    throw new Error(`cannot open the directory: ${(err as Error).message}`, { cause: err });
  }
  // An import that suspended the search index died: put it back, unless one is still running.
  if (await searchIndexSuspended(driver)) {
    await driver.transaction(async (tx) => {
      const live = await tx.get(
        'SELECT 1 AS x FROM dir_imports WHERE finished_at IS NULL AND heartbeat_at > ?',
        [Date.now() - IMPORT_STALE_AFTER_MS],
      );
      if (live === undefined) await restoreSearchIndex(tx);
    });
  }
  const hosted = options.hostedMailboxes;
  // Addresses in byte order on both back-ends: SQLite compares bytes (BINARY), PostgreSQL would use
  // the database's collation (e.g. fr_FR ignores punctuation), and "the first mailbox by address"
  // must not depend on how the database was created.
  const byteOrder = driver.dialect === 'postgres' ? ' COLLATE "C"' : '';

  const linksOf = async (db: SqlExecutor, address: string, includeRetired: boolean) =>
    (
      await db.all(
        `SELECT l.*, s.id_type, s.identification, s.name, s.kind FROM dir_mailbox_links l
         LEFT JOIN dir_structures s ON s.key = l.structure_key
         WHERE l.address = ? ${includeRetired ? '' : 'AND l.retired_at IS NULL'} ORDER BY l.structure_key`,
        [address],
      )
    )
      .filter((r) => r.name !== null && r.name !== undefined)
      .map(toMailboxStructure);

  const hydrate = async (db: SqlExecutor, row: Row, includeRetired = false): Promise<DirectoryMailbox> => {
    const address = String(row.address);
    const m: DirectoryMailbox = {
      address,
      domain: String(row.domain),
      type: String(row.type) as MailboxType,
      source: String(row.source) as 'extract' | 'local',
      structures: await linksOf(db, address, includeRetired),
      hidden: Number(row.hidden) === 1,
      hosted: hosted?.get(address) !== undefined,
      updatedAt: Number(row.updated_at),
    };
    if (row.p_national_id !== null && row.p_national_id !== undefined) m.owner = toProfessional(row, 'p_');
    if (row.dematerialisation !== null) m.dematerialisation = Number(row.dematerialisation) === 1;
    if (typeof row.display_name === 'string') m.displayName = row.display_name;
    if (row.retired_at !== null) m.retiredAt = Number(row.retired_at);
    return m;
  };

  const MAILBOX_SELECT = `SELECT m.*, ${PROFESSIONAL_COLUMNS.map((c) => `p.${c} AS p_${c}`).join(', ')}
    FROM dir_mailboxes m LEFT JOIN dir_professionals p ON p.national_id = m.national_id`;

  const resolveAddress: DirectoryStore['resolveAddress'] = async (address, opts = {}) => {
    const a = address.trim().toLowerCase();
    const row = await driver.get(`${MAILBOX_SELECT} WHERE m.address = ?`, [a]);
    if (row !== undefined) {
      if (row.retired_at !== null && !opts.includeRetired) return undefined;
      return hydrate(driver, row, opts.includeRetired);
    }
    const local = hosted?.get(a);
    if (local === undefined) return undefined;
    const m: DirectoryMailbox = {
      address: local.address,
      domain: local.address.slice(local.address.lastIndexOf('@') + 1),
      type: local.type,
      source: 'local',
      structures: [],
      hidden: false,
      hosted: true,
      updatedAt: local.createdAt,
    };
    if (local.displayName !== undefined) m.displayName = local.displayName;
    return m;
  };

  const teamRow = async (idOrAddress: string): Promise<Row | undefined> => {
    const key = idOrAddress.trim();
    return driver.get('SELECT * FROM dir_teams WHERE id = ? OR address = ?', [key, key.toLowerCase()]);
  };

  const membersOf = async (teamId: string): Promise<TeamMember[]> =>
    (
      await driver.all('SELECT * FROM dir_team_members WHERE team_id = ? ORDER BY member_kind DESC, member', [
        teamId,
      ])
    ).map(toTeamMember);

  return {
    backend: driver.dialect,
    ...activityMethods(driver, heartbeat),
    resolveAddress,

    async findByNationalId(id) {
      const nationalId = toNationalId(id);
      if (nationalId === undefined) return undefined;
      const p = await driver.get('SELECT * FROM dir_professionals WHERE national_id = ?', [nationalId]);
      if (p === undefined) return undefined;
      const rows = await driver.all(
        `${MAILBOX_SELECT} WHERE m.national_id = ? AND m.retired_at IS NULL ORDER BY m.address`,
        [nationalId],
      );
      const mailboxes: DirectoryMailbox[] = [];
      for (const r of rows) mailboxes.push(await hydrate(driver, r));
      return { professional: toProfessional(p, ''), mailboxes };
    },

    async search(q) {
      const where: string[] = [];
      const params: (string | number)[] = [];
      const words = (s: string) => normaliseText(s).split(' ').filter(Boolean);
      const like = (column: string, word: string, prefix = false) => {
        where.push(`${column} LIKE ? ESCAPE '\\'`);
        params.push(`${prefix ? '' : '%'}${likeEscape(word)}%`);
      };
      if (q.name !== undefined) for (const w of words(q.name)) like('m.name_norm', w);
      if (q.profession !== undefined) {
        const p = q.profession.trim();
        if (/^\d+$/.test(p)) {
          where.push('p.profession_code = ?');
          params.push(p);
        } else for (const w of words(p)) like('p.profession_norm', w);
      }
      if (q.city !== undefined) {
        const c = q.city.trim();
        if (/^\d+$/.test(c)) like('l.postcode', c, true);
        else for (const w of words(c)) like('l.city_norm', w);
      }
      if (q.structure !== undefined) {
        const s = q.structure.trim();
        if (/^[0-4]:/.test(s)) {
          where.push('l.structure_key = ?');
          params.push(s);
        } else for (const w of words(s)) like('s.name_norm', w);
      }
      if (q.type !== undefined) {
        where.push('m.type = ?');
        params.push(q.type);
      }
      if (!q.includeHidden) where.push('m.hidden = 0');
      if (!q.includeRetired) where.push('m.retired_at IS NULL');
      const limit = Math.min(Math.max(1, Math.trunc(q.limit ?? SEARCH_LIMIT)), SEARCH_MAX);
      const select = (extra: string) =>
        `SELECT DISTINCT m.address FROM dir_mailboxes m
         LEFT JOIN dir_professionals p ON p.national_id = m.national_id
         LEFT JOIN dir_mailbox_links l ON l.address = m.address
           ${q.includeRetired ? '' : 'AND l.retired_at IS NULL'}
         LEFT JOIN dir_structures s ON s.key = l.structure_key
         ${where.length > 0 || extra !== '' ? `WHERE ${[...where, ...(extra ? [extra] : [])].join(' AND ')}` : ''}
         ORDER BY m.address`;
      // PostgreSQL: the pg_trgm indexes (schema.ts) serve the LIKEs of this one query.
      const trigramWords = q.name === undefined ? [] : words(q.name).filter((w) => [...w].length >= 3);
      const rows =
        driver.dialect === 'sqlite' && trigramWords.length > 0
          ? await searchByNameIndex(
              driver,
              select(`m.address IN (SELECT value FROM json_each(?))`),
              params,
              trigramWords,
              limit,
            )
          : await driver.all(`${select('')} LIMIT ${limit}`, params);
      const out: DirectoryMailbox[] = [];
      for (const r of rows) {
        const full = await driver.get(`${MAILBOX_SELECT} WHERE m.address = ?`, [String(r.address)]);
        if (full !== undefined) out.push(await hydrate(driver, full, q.includeRetired));
      }
      return out;
    },

    async saveLocalMailbox(mb) {
      const address = normaliseAddress(mb.address);
      if (!MAILBOX_TYPES.includes(mb.type)) throw new Error(`unknown mailbox type "${mb.type}"`);
      let nationalId: string | null = null;
      if (mb.nationalId !== undefined) {
        nationalId = toNationalId(mb.nationalId) ?? null;
        if (nationalId === null) throw new Error(`invalid national id "${mb.nationalId}"`);
      }
      const displayName = mb.displayName?.trim() || null;
      // A mailbox the extract lists (a live link) stays the extract's: otherwise an unchanged extract
      // line would never set it back and the extract could no longer retire it.
      await driver.run(
        `INSERT INTO dir_mailboxes (address, domain, type, source, national_id, display_name, name_norm, hidden, updated_at)
         VALUES (?, ?, ?, 'local', ?, ?, ?, ?, ?)
         ON CONFLICT (address) DO UPDATE SET type = excluded.type, national_id = excluded.national_id,
           display_name = excluded.display_name, name_norm = excluded.name_norm, hidden = excluded.hidden,
           source = CASE WHEN dir_mailboxes.source = 'extract' AND EXISTS (SELECT 1 FROM dir_mailbox_links l
             WHERE l.address = dir_mailboxes.address AND l.retired_at IS NULL) THEN 'extract' ELSE 'local' END,
           retired_at = NULL, updated_at = excluded.updated_at`,
        [
          address,
          address.slice(address.lastIndexOf('@') + 1),
          mb.type,
          nationalId,
          displayName,
          normaliseText(displayName ?? ''),
          mb.hidden ? 1 : 0,
          Date.now(),
        ],
      );
      return (await resolveAddress(address))!;
    },

    async setHidden(address, hidden) {
      const changed = await driver.run(
        'UPDATE dir_mailboxes SET hidden = ?, updated_at = ? WHERE address = ?',
        [hidden ? 1 : 0, Date.now(), address.trim().toLowerCase()],
      );
      return changed > 0;
    },

    async saveProfessional(p) {
      await upsertProfessionals(driver, [p], Date.now());
    },

    async saveTeam(team) {
      if (!TEAM_KINDS.includes(team.kind)) throw new Error(`unknown team kind "${team.kind}"`);
      if (!/^[a-z0-9][a-z0-9._-]*$/.test(team.id)) {
        throw new Error(`invalid team id "${team.id}" (lower-case letters, digits, . _ -)`);
      }
      const address = team.address === undefined ? null : normaliseAddress(team.address);
      await driver.run(
        `INSERT INTO dir_teams (id, kind, name, structure_key, address) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
           structure_key = excluded.structure_key, address = excluded.address`,
        [team.id, team.kind, team.name.trim(), team.structureKey ?? null, address],
      );
      return toTeam((await driver.get('SELECT * FROM dir_teams WHERE id = ?', [team.id]))!);
    },

    async addTeamMember(teamId, member) {
      const key = memberKey(member);
      let profession = member.professionCode ?? null;
      if (profession === null && member.kind === 'professional') {
        const p = await driver.get('SELECT profession_code FROM dir_professionals WHERE national_id = ?', [
          key,
        ]);
        if (typeof p?.profession_code === 'string') profession = p.profession_code;
      }
      const team = await driver.get('SELECT id FROM dir_teams WHERE id = ?', [teamId]);
      if (team === undefined) throw new Error(`no team "${teamId}"`);
      await driver.run(
        `INSERT INTO dir_team_members (team_id, member_kind, member, role, profession_code) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (team_id, member_kind, member) DO UPDATE SET role = excluded.role,
           profession_code = excluded.profession_code`,
        [teamId, member.kind, key, member.role ?? null, profession],
      );
    },

    async removeTeamMember(teamId, member) {
      const changes = await driver.run(
        'DELETE FROM dir_team_members WHERE team_id = ? AND member_kind = ? AND member = ?',
        [teamId, member.kind, memberKey(member)],
      );
      return changes > 0;
    },

    async getTeam(idOrAddress) {
      const row = await teamRow(idOrAddress);
      if (row === undefined) return undefined;
      return { ...toTeam(row), members: await membersOf(String(row.id)) };
    },

    async listTeams() {
      return (await driver.all('SELECT * FROM dir_teams ORDER BY id')).map(toTeam);
    },

    async removeTeam(id) {
      return driver.transaction(async (tx) => {
        await tx.run('DELETE FROM dir_team_members WHERE team_id = ?', [id]);
        return (await tx.run('DELETE FROM dir_teams WHERE id = ?', [id])) > 0;
      });
    },

    async expandTeam(idOrAddress, opts = {}) {
      const row = await teamRow(idOrAddress);
      if (row === undefined) return undefined;
      const team = toTeam(row);
      const seen = new Set<string>();
      /** People already reached through a mailbox member they own. */
      const reached = new Set<string>();
      const expansion: TeamExpansion = { team, recipients: [], unreachable: [] };
      const members = (await membersOf(team.id)).filter(
        (m) => opts.profession === undefined || m.professionCode === opts.profession,
      );
      // Mailbox members first, so that a person listed both ways gets that mailbox, once.
      for (const member of members) {
        if (member.kind !== 'mailbox') continue;
        const m = await resolveAddress(member.address);
        if (m === undefined) expansion.unreachable.push(member);
        else if (!seen.has(m.address)) {
          seen.add(m.address);
          if (m.owner !== undefined) reached.add(m.owner.nationalId);
          expansion.recipients.push({ address: m.address, member });
        }
      }
      for (const member of members) {
        if (member.kind !== 'professional' || reached.has(member.nationalId)) continue;
        // One mailbox per person: a PER mailbox hosted here first, then the first by address.
        const rows = await driver.all(
          `SELECT address FROM dir_mailboxes WHERE national_id = ? AND retired_at IS NULL
           ORDER BY CASE type WHEN 'PER' THEN 0 ELSE 1 END, address${byteOrder}`,
          [member.nationalId],
        );
        const addresses = rows.map((r) => String(r.address));
        const address = addresses.find((a) => hosted?.get(a) !== undefined) ?? addresses[0];
        if (address === undefined) expansion.unreachable.push(member);
        else if (!seen.has(address)) {
          seen.add(address);
          expansion.recipients.push({ address, member });
        }
      }
      return expansion;
    },

    async attachKey(address, key) {
      const a = normaliseAddress(address);
      if (key.format !== 'smime' && key.format !== 'openpgp')
        throw new Error(`unknown key format "${key.format}"`);
      let { notBefore, notAfter } = key;
      if (key.format === 'smime' && (notBefore === undefined || notAfter === undefined)) {
        let cert: X509Certificate;
        try {
          cert = new X509Certificate(Buffer.from(key.data));
        } catch (err) {
          throw new Error(`the S/MIME certificate for ${a} cannot be read: ${(err as Error).message}`, {
            cause: err,
          });
        }
        notBefore ??= cert.validFromDate.getTime();
        notAfter ??= cert.validToDate.getTime();
      }
      const fingerprint = createHash('sha256').update(key.data).digest('hex');
      const now = Date.now();
      await driver.transaction(async (tx) => {
        if (key.preferred) {
          await tx.run('UPDATE dir_mailbox_keys SET preferred = 0 WHERE address = ? AND format = ?', [
            a,
            key.format,
          ]);
        }
        await tx.run(
          `INSERT INTO dir_mailbox_keys (address, fingerprint, format, data, not_before, not_after, preferred, added_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (address, fingerprint) DO UPDATE SET not_before = excluded.not_before,
             not_after = excluded.not_after, preferred = excluded.preferred`,
          [
            a,
            fingerprint,
            key.format,
            key.data,
            notBefore ?? null,
            notAfter ?? null,
            key.preferred ? 1 : 0,
            now,
          ],
        );
      });
      const row = await driver.get('SELECT * FROM dir_mailbox_keys WHERE address = ? AND fingerprint = ?', [
        a,
        fingerprint,
      ]);
      return toKey(row!);
    },

    async keysFor(address, opts = {}) {
      const at = opts.at ?? Date.now();
      const where = ['address = ?'];
      const params: (string | number)[] = [address.trim().toLowerCase()];
      if (opts.format !== undefined) {
        where.push('format = ?');
        params.push(opts.format);
      }
      if (!opts.includeInvalid) {
        where.push('(not_before IS NULL OR not_before <= ?) AND (not_after IS NULL OR not_after > ?)');
        params.push(at, at);
      }
      const rows = await driver.all(
        `SELECT * FROM dir_mailbox_keys WHERE ${where.join(' AND ')}
         ORDER BY preferred DESC, CASE WHEN not_after IS NULL THEN 1 ELSE 0 END DESC, not_after DESC, fingerprint`,
        params,
      );
      return rows.map(toKey);
    },

    async detachKey(address, fingerprint) {
      const changes = await driver.run('DELETE FROM dir_mailbox_keys WHERE address = ? AND fingerprint = ?', [
        address.trim().toLowerCase(),
        fingerprint.toLowerCase(),
      ]);
      return changes > 0;
    },

    async saveTrustDomains(entries, opts) {
      return driver.transaction(async (tx) => {
        let removed = 0;
        if (opts.complete) {
          const before = await tx.get('SELECT COUNT(*) AS n FROM dir_trust_domains');
          await tx.run('DELETE FROM dir_trust_domains');
          removed = Number(before?.n ?? 0);
        }
        for (const e of entries) {
          await tx.run(
            `INSERT INTO dir_trust_domains (domain, operator_dn, description, updated) VALUES (?, ?, ?, ?)
             ON CONFLICT (domain, operator_dn) DO UPDATE SET description = excluded.description,
               updated = excluded.updated`,
            [e.domain.toLowerCase(), e.operatorDn, e.description ?? null, e.updatedAt ?? null],
          );
        }
        const after = await tx.get('SELECT COUNT(*) AS n FROM dir_trust_domains');
        // Removed = entries gone from the previous set.
        if (opts.complete) removed = Math.max(0, removed - Number(after?.n ?? 0));
        return { entries: entries.length, removed };
      });
    },

    async isTrustedDomain(domain) {
      const row = await driver.get('SELECT 1 AS ok FROM dir_trust_domains WHERE domain = ? LIMIT 1', [
        domain.trim().toLowerCase().replace(/\.$/, ''),
      ]);
      return row !== undefined;
    },

    async operatorDnsFor(domain) {
      const rows = await driver.all(
        'SELECT operator_dn FROM dir_trust_domains WHERE domain = ? ORDER BY operator_dn',
        [domain.trim().toLowerCase().replace(/\.$/, '')],
      );
      return rows.map((r) => String(r.operator_dn));
    },

    async beginImport(kind, opts = {}) {
      const staleAfterMs = opts.staleAfterMs ?? IMPORT_STALE_AFTER_MS;
      const holder = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
      return driver.transaction(async (tx) => {
        // Race-free: on SQLite the transaction is BEGIN IMMEDIATE (the write lock from the start);
        // on PostgreSQL (READ COMMITTED) two instances could both see no running import without
        // this lock, held until the transaction ends.
        if (tx.dialect === 'postgres') await tx.run('SELECT pg_advisory_xact_lock(7263551)');
        const now = await lockClock(tx);
        const running = await tx.all(
          'SELECT id, kind, holder, started_at, heartbeat_at FROM dir_imports WHERE finished_at IS NULL ORDER BY id',
        );
        for (const r of running) {
          const beat = Number(r.heartbeat_at ?? r.started_at);
          if (now - beat < staleAfterMs) {
            throw new ImportLockError(
              `cannot start the ${kind} import: import ${Number(r.id)} (${String(r.kind)}) is running, ` +
                `held by ${String(r.holder ?? 'an unknown process')} since ${iso(Number(r.started_at))}, ` +
                `last heartbeat ${iso(beat)}; it is taken for dead after ${Math.round(staleAfterMs / 1000)} s ` +
                'without a heartbeat',
            );
          }
        }
        for (const r of running) {
          const beat = Number(r.heartbeat_at ?? r.started_at);
          await tx.run('UPDATE dir_imports SET finished_at = ?, summary = ? WHERE id = ?', [
            now,
            JSON.stringify({
              failed:
                `stale: no heartbeat since ${iso(beat)} from ${String(r.holder ?? 'an unknown process')}; ` +
                `lock taken over by ${holder}`,
            }),
            Number(r.id),
          ]);
        }
        const row = await tx.get('SELECT MAX(id) AS id FROM dir_imports');
        const id = Number(row?.id ?? 0) + 1;
        await tx.run(
          'INSERT INTO dir_imports (id, kind, started_at, heartbeat_at, holder) VALUES (?, ?, ?, ?, ?)',
          [id, kind, now, now, holder],
        );
        if (kind === 'extract-mssante') await suspendSearchIndex(tx);
        return id;
      });
    },

    applyExtractBatch(importId, rows) {
      return driver.transaction(async (tx) => {
        await heartbeat(tx, importId);
        return applyBatch(tx, importId, rows);
      });
    },

    heartbeatImport(importId) {
      return driver.transaction((tx) => heartbeat(tx, importId));
    },

    async finishImport(importId, opts) {
      const finished = await driver.transaction(async (tx) => {
        const now = Date.now();
        // First: an import whose lock was taken over must not retire what the other one wrote.
        const held = await tx.run(
          'UPDATE dir_imports SET finished_at = ?, heartbeat_at = ? WHERE id = ? AND finished_at IS NULL',
          [now, now, importId],
        );
        if (held === 0) throw await lostLock(tx, importId);
        const result: FinishImportResult = {
          retiredLinks: 0,
          retiredMailboxes: 0,
          retiredActivities: 0,
          kept: 0,
        };
        const retire = opts.retire === true ? 'mailboxes' : opts.retire;
        if (retire === 'mailboxes') {
          for (const k of opts.keepLinks ?? []) {
            result.kept += await tx.run(
              `UPDATE dir_mailbox_links SET last_import = ?
               WHERE address = ? ${k.structureKey === undefined ? '' : 'AND structure_key = ?'}
                 AND retired_at IS NULL AND last_import < ?`,
              k.structureKey === undefined
                ? [importId, k.address, importId]
                : [importId, k.address, k.structureKey, importId],
            );
          }
          const counts = await tx.get(
            `SELECT COUNT(*) AS live, COALESCE(SUM(CASE WHEN last_import < ? THEN 1 ELSE 0 END), 0) AS unseen
             FROM dir_mailbox_links WHERE retired_at IS NULL`,
            [importId],
          );
          const refused = refuseRetirement(
            opts,
            'mailbox links',
            Number(counts?.live),
            Number(counts?.unseen),
          );
          if (refused !== undefined) result.retireRefused = refused;
          else {
            result.retiredLinks = await tx.run(
              'UPDATE dir_mailbox_links SET retired_at = ? WHERE retired_at IS NULL AND last_import < ?',
              [now, importId],
            );
            result.retiredMailboxes = await tx.run(
              `UPDATE dir_mailboxes SET retired_at = ?, updated_at = ?
               WHERE source = 'extract' AND retired_at IS NULL AND NOT EXISTS (
                 SELECT 1 FROM dir_mailbox_links l WHERE l.address = dir_mailboxes.address AND l.retired_at IS NULL)`,
              [now, now],
            );
          }
        } else if (retire === 'activities') {
          result.kept = await keepActivitiesOf(tx, importId, opts.keepActivitiesOf ?? []);
          const { live, unseen } = await liveActivityCounts(tx, importId);
          const refused = refuseRetirement(opts, 'activities', live, unseen);
          if (refused !== undefined) result.retireRefused = refused;
          else result.retiredActivities = await retireUnseenActivities(tx, importId, now);
        }
        await tx.run('UPDATE dir_imports SET summary = ? WHERE id = ?', [
          withRetirement(opts.summary, retire, result),
          importId,
        ]);
        await restoreSearchIndex(tx);
        return result;
      });
      // Fresh planner statistics: right after a first import PostgreSQL has none (autovacuum comes
      // later), and then plans a search as nested trigram index scans (over 20 s instead of 0.1 s
      // on 535 000 mailboxes, measured).
      if (driver.dialect === 'postgres') {
        await driver.run(
          'ANALYZE dir_mailboxes, dir_mailbox_links, dir_professionals, dir_structures, dir_activities',
        );
      }
      return finished;
    },

    async failImport(importId, reason) {
      const now = Date.now();
      const changed = await driver.run(
        'UPDATE dir_imports SET finished_at = ?, heartbeat_at = ?, summary = ? WHERE id = ? AND finished_at IS NULL',
        [now, now, JSON.stringify({ failed: reason }), importId],
      );
      await driver.transaction((tx) => restoreSearchIndex(tx));
      return changed > 0;
    },

    async listImports(limit = 20) {
      const rows = await driver.all(
        'SELECT id, kind, holder, started_at, heartbeat_at, finished_at, summary FROM dir_imports ORDER BY id DESC LIMIT ?',
        [Math.max(1, Math.trunc(limit))],
      );
      return rows.map(toImportRecord);
    },

    async counts() {
      const n = async (sql: string) => Number((await driver.get(sql))?.n ?? 0);
      return {
        professionals: await n('SELECT COUNT(*) AS n FROM dir_professionals'),
        structures: await n('SELECT COUNT(*) AS n FROM dir_structures'),
        mailboxes: await n('SELECT COUNT(*) AS n FROM dir_mailboxes'),
        liveMailboxes: await n('SELECT COUNT(*) AS n FROM dir_mailboxes WHERE retired_at IS NULL'),
        teams: await n('SELECT COUNT(*) AS n FROM dir_teams'),
        keys: await n('SELECT COUNT(*) AS n FROM dir_mailbox_keys'),
        trustDomains: await n('SELECT COUNT(DISTINCT domain) AS n FROM dir_trust_domains'),
      };
    },

    close: () => driver.close(),
  };
}

// ---------------------------------------------------------------------------------------------
// Import of a batch of extract lines

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Why an import must not retire `unseen` of the `live` rows, or undefined when it may. "Nothing
 * lost" comes first: a truncated or mangled file would otherwise retire mailboxes, and mail to a
 * retired mailbox bounces.
 */
function refuseRetirement(
  opts: FinishImportOptions,
  what: string,
  live: number,
  unseen: number,
): string | undefined {
  if (opts.forceRetire || unseen === 0) return undefined;
  if (opts.acceptedLines === 0) {
    return (
      `retirement refused: the import accepted no line, so it would retire all ${unseen} live ${what}; ` +
      'nothing was retired (check the file; force with --force-retire)'
    );
  }
  const max = opts.maxRetireShare ?? DEFAULT_MAX_RETIRE_SHARE;
  if (unseen > live * max) {
    const pct = (x: number) => `${Math.round(x * 1000) / 10}%`;
    return (
      `retirement refused: the import would retire ${unseen} of ${live} live ${what} (${pct(unseen / live)}), ` +
      `more than the maximum share ${pct(max)}; its lines were applied, nothing was retired ` +
      '(check the file; if the change is real, run it again with --force-retire or a higher maxRetireShare)'
    );
  }
  return undefined;
}

/** The import's summary (a JSON object) with what finishImport retired, kept or refused. */
function withRetirement(
  summary: string,
  retire: false | 'mailboxes' | 'activities',
  r: FinishImportResult,
): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(summary);
  } catch {
    parsed = undefined; // not ours to judge: stored as given
  }
  if (retire === false || typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    return summary;
  const counts =
    retire === 'mailboxes'
      ? { retiredLinks: r.retiredLinks, retiredMailboxes: r.retiredMailboxes }
      : { retiredActivities: r.retiredActivities };
  return JSON.stringify({
    ...parsed,
    ...counts,
    kept: r.kept,
    ...(r.retireRefused === undefined ? {} : { retireRefused: r.retireRefused }),
  });
}

const PG_NOW_MS = '(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint';

/**
 * The clock of the import lock. On PostgreSQL the database's, not this host's: the heartbeats of
 * gateway instances on several hosts are compared with each other, and a host whose clock runs
 * ahead would otherwise take a live import for dead. SQLite is on this host anyway.
 */
async function lockClock(tx: SqlExecutor): Promise<number> {
  if (tx.dialect !== 'postgres') return Date.now();
  const row = await tx.get(`SELECT ${PG_NOW_MS} AS now`);
  return Number(row?.now);
}

/** Refreshes the import lock's heartbeat (lockClock's time), in the caller's transaction. */
async function heartbeat(tx: SqlExecutor, importId: number): Promise<void> {
  const held =
    tx.dialect === 'postgres'
      ? await tx.run(
          `UPDATE dir_imports SET heartbeat_at = ${PG_NOW_MS} WHERE id = ? AND finished_at IS NULL`,
          [importId],
        )
      : await tx.run('UPDATE dir_imports SET heartbeat_at = ? WHERE id = ? AND finished_at IS NULL', [
          Date.now(),
          importId,
        ]);
  if (held === 0) throw await lostLock(tx, importId);
}

async function lostLock(tx: SqlExecutor, importId: number): Promise<ImportLockError> {
  const row = await tx.get('SELECT summary FROM dir_imports WHERE id = ?', [importId]);
  return new ImportLockError(
    row === undefined
      ? `import ${importId} does not exist`
      : `import ${importId} no longer holds the import lock (${String(row.summary ?? 'finished')}): ` +
          'nothing more is written or retired',
  );
}

const LINK_KEY: BatchColumns = [
  ['address', 'text'],
  ['structure_key', 'text'],
];
const TOUCH_COLUMNS: BatchColumns = [...LINK_KEY, ['row_hash', 'text']];
const LINK_COLUMNS: BatchColumns = [
  ...LINK_KEY,
  ...(
    ['service', 'street', 'postcode', 'city', 'city_norm', 'department', 'country', 'row_hash'] as const
  ).map((c) => [c, 'text'] as const),
];
const MAILBOX_COLUMNS: BatchColumns = [
  ...(['address', 'domain', 'type', 'national_id', 'display_name', 'name_norm'] as const).map(
    (c) => [c, 'text'] as const,
  ),
  ['dematerialisation', 'integer'],
];
const STRUCTURE_COLUMNS: BatchColumns = (
  ['key', 'id_type', 'identification', 'name', 'name_norm', 'kind'] as const
).map((c) => [c, 'text'] as const);
const PROFESSIONAL_BATCH_COLUMNS: BatchColumns = (
  [
    'national_id',
    'id_type',
    'civility',
    'last_name',
    'first_name',
    'name_norm',
    'profession_code',
    'profession_label',
    'profession_norm',
    'specialty_code',
    'specialty_label',
  ] as const
).map((c) => [c, 'text'] as const);

const names = (columns: BatchColumns, prefix = '') => columns.map(([c]) => `${prefix}${c}`).join(', ');

/**
 * Statement texts per dialect, fixed whatever the batch size (prepared once). SQLite: one row's
 * values after the fixed parameters; PostgreSQL: the whole batch through unnestTable.
 */
function batchStatements(dialect: SqlExecutor['dialect']) {
  /** INSERT of the batch's rows with `fixed` columns ([column, expression]) first. */
  const insert = (table: string, fixed: [string, string][], columns: BatchColumns) => {
    const head = `INSERT INTO ${table} (${fixed.map(([c]) => c).join(', ')}, ${names(columns)})`;
    const exprs = fixed.map(([, e]) => e).join(', ');
    return dialect === 'sqlite'
      ? `${head} VALUES (${exprs}, ${columns.map(() => '?').join(', ')})`
      : `${head} SELECT ${exprs}, ${names(columns, 'b.')} FROM ${unnestTable(columns, 'b')}`;
  };
  const now: [string, string] = ['updated_at', 'CAST(? AS BIGINT)'];
  return {
    // The daily re-import's common case: the same line (same hash, live), only marked as seen by
    // this import. Returns the keys it marked.
    touch:
      dialect === 'sqlite'
        ? `UPDATE dir_mailbox_links SET last_import = ?
           WHERE address = ? AND structure_key = ? AND row_hash = ? AND retired_at IS NULL
           RETURNING address, structure_key`
        : `UPDATE dir_mailbox_links AS l SET last_import = CAST(? AS BIGINT)
           FROM ${unnestTable(TOUCH_COLUMNS, 'k')}
           WHERE l.address = k.address AND l.structure_key = k.structure_key AND l.row_hash = k.row_hash
             AND l.retired_at IS NULL
           RETURNING l.address, l.structure_key`,
    // What is stored for the other keys.
    known:
      dialect === 'sqlite'
        ? `SELECT address, structure_key, row_hash, last_import, retired_at FROM dir_mailbox_links
           WHERE address = ? AND structure_key = ?`
        : `SELECT l.address, l.structure_key, l.row_hash, l.last_import, l.retired_at
           FROM ${unnestTable(LINK_KEY, 'k')}
           JOIN dir_mailbox_links l ON l.address = k.address AND l.structure_key = k.structure_key`,
    // A line without profession or specialty keeps the stored one, as the RPPS import does: the
    // RPPS file gave it, and its unchanged line is skipped on its hash, so it would never come back.
    professionals: `${insert('dir_professionals', [now], PROFESSIONAL_BATCH_COLUMNS)}
      ON CONFLICT (national_id) DO UPDATE SET civility = excluded.civility, last_name = excluded.last_name,
        first_name = excluded.first_name, name_norm = excluded.name_norm,
        profession_code = COALESCE(excluded.profession_code, dir_professionals.profession_code),
        profession_label = COALESCE(excluded.profession_label, dir_professionals.profession_label),
        profession_norm = COALESCE(excluded.profession_norm, dir_professionals.profession_norm),
        specialty_code = COALESCE(excluded.specialty_code, dir_professionals.specialty_code),
        specialty_label = COALESCE(excluded.specialty_label, dir_professionals.specialty_label),
        updated_at = excluded.updated_at`,
    structures: `${insert('dir_structures', [now], STRUCTURE_COLUMNS)}
      ON CONFLICT (key) DO UPDATE SET name = excluded.name, name_norm = excluded.name_norm,
        kind = excluded.kind, updated_at = excluded.updated_at
      WHERE dir_structures.name <> excluded.name OR dir_structures.kind <> excluded.kind`,
    mailboxes: `${insert('dir_mailboxes', [now, ['source', "'extract'"]], MAILBOX_COLUMNS)}
      ON CONFLICT (address) DO UPDATE SET domain = excluded.domain, type = excluded.type, source = 'extract',
        national_id = excluded.national_id, display_name = excluded.display_name,
        name_norm = excluded.name_norm, dematerialisation = excluded.dematerialisation,
        retired_at = NULL, updated_at = excluded.updated_at`,
    links: `${insert('dir_mailbox_links', [['last_import', 'CAST(? AS BIGINT)']], LINK_COLUMNS)}
      ON CONFLICT (address, structure_key) DO UPDATE SET service = excluded.service, street = excluded.street,
        postcode = excluded.postcode, city = excluded.city, city_norm = excluded.city_norm,
        department = excluded.department, country = excluded.country, row_hash = excluded.row_hash,
        last_import = excluded.last_import, retired_at = NULL`,
  };
}
const STATEMENTS = { sqlite: batchStatements('sqlite'), postgres: batchStatements('postgres') };

/**
 * Writes a batch of extract lines with one batch statement per step (runBatch in sql.ts: one round
 * trip each on PostgreSQL): mark the unchanged lines seen while reading what is stored for the
 * batch's (address, structure) keys, then upsert the new and changed lines' professionals,
 * structures, mailboxes and links.
 */
async function applyBatch(
  tx: SqlExecutor,
  importId: number,
  rows: readonly ExtractRow[],
): Promise<BatchResult> {
  const result: BatchResult = { inserted: 0, updated: 0, unchanged: 0, rejected: [] };
  const sql = STATEMENTS[tx.dialect];
  if (tx.dialect === 'postgres') {
    // For this transaction only: look each of the batch's keys up in the primary key. With the
    // statistics of a table that the import is filling, the planner otherwise scans the whole table
    // for every batch, by a hash join or as the outer side of a nested loop (535 000 lines: 121 s).
    await tx.get(
      "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true), " +
        "set_config('enable_seqscan', 'off', true)",
    );
  }
  const now = Date.now();
  const keyOf = (r: ExtractRow) => `${r.address}|${r.structure?.key ?? ''}`; // '|' is in no field

  /** Hash and import of each key: as stored (after the touch), then as this batch leaves it. */
  const known = new Map<string, { hash: string; lastImport: number; live: boolean } | null>();
  const keys: BatchRow[] = [];
  for (const r of rows) {
    const key = keyOf(r);
    if (known.has(key)) continue;
    known.set(key, null);
    keys.push([r.address, r.structure?.key ?? '', r.hash]);
  }
  for (const e of await tx.allBatch(sql.touch, [importId], keys)) {
    known.set(`${String(e.address)}|${String(e.structure_key)}`, {
      hash: '',
      lastImport: importId,
      live: true,
    });
  }
  const rest: BatchRow[] = [];
  for (const [address, structureKey, hash] of keys) {
    const touched = known.get(`${address}|${structureKey}`);
    if (touched) touched.hash = String(hash);
    else rest.push([address!, structureKey!]);
  }
  for (const e of await tx.allBatch(sql.known, [], rest)) {
    known.set(`${String(e.address)}|${String(e.structure_key)}`, {
      hash: String(e.row_hash),
      lastImport: Number(e.last_import),
      live: e.retired_at === null || e.retired_at === undefined,
    });
  }

  const links: BatchRow[] = [];
  // Last line wins for a person or a mailbox given on several lines, as line-by-line upserts would.
  const professionals = new Map<string, Professional>();
  const structures = new Map<string, Structure>();
  const mailboxes = new Map<string, BatchRow>();
  for (const r of rows) {
    const key = keyOf(r);
    const existing = known.get(key);
    const structureKey = r.structure?.key ?? '';
    if (existing && existing.live && existing.hash === r.hash) {
      // The common case of a daily re-import: the same line, already marked seen by the touch.
      result.unchanged++;
      continue;
    }
    if (existing && existing.lastImport === importId) {
      // Two different lines for one mailbox at one structure: keeping the last one would make every
      // re-import flip between them.
      result.rejected.push({
        line: r.lineNo,
        reason: `duplicate: ${r.address} at structure ${structureKey || '(none)'} already given on an earlier line`,
      });
      continue;
    }
    if (existing) result.updated++;
    else result.inserted++;
    known.set(key, { hash: r.hash, lastImport: importId, live: true });

    const p = r.professional;
    if (p !== undefined) professionals.set(p.nationalId, p);
    if (r.structure !== undefined) structures.set(r.structure.key, r.structure);
    const displayName =
      p !== undefined
        ? `${p.firstName} ${p.lastName}`.trim()
        : [r.service, r.structure?.name].filter((x) => x !== undefined && x !== '').join(' — ');
    mailboxes.set(r.address, [
      r.address,
      r.domain,
      r.type,
      p?.nationalId ?? null,
      displayName || null,
      normaliseText(p !== undefined ? `${p.lastName} ${p.firstName}` : displayName),
      r.dematerialisation === undefined ? null : r.dematerialisation ? 1 : 0,
    ]);
    links.push([
      r.address,
      structureKey,
      r.service ?? null,
      r.street ?? null,
      r.postcode ?? null,
      r.city ?? null,
      r.city === undefined ? null : normaliseText(r.city),
      r.department ?? null,
      r.country ?? null,
      r.hash,
    ]);
  }
  // Parents first: dir_mailboxes.national_id and dir_mailbox_links.address are foreign keys.
  await upsertProfessionals(tx, [...professionals.values()], now);
  await tx.runBatch(
    sql.structures,
    [now],
    [...structures.values()].map((s) => [
      s.key,
      s.idType,
      s.identification,
      s.name,
      normaliseText(s.name),
      s.kind,
    ]),
  );
  await tx.runBatch(sql.mailboxes, [now], [...mailboxes.values()]);
  await tx.runBatch(sql.links, [importId], links);
  return result;
}

/** One batch upsert; each national id at most once (PostgreSQL refuses a row upserted twice). */
async function upsertProfessionals(db: SqlExecutor, ps: readonly Professional[], now: number): Promise<void> {
  const values = ps.map((p) => {
    const nationalId = toNationalId(p.nationalId);
    if (nationalId === undefined) throw new Error(`invalid national id "${p.nationalId}"`);
    return [
      nationalId,
      nationalId.slice(0, 1),
      p.civility ?? null,
      p.lastName,
      p.firstName,
      normaliseText(`${p.lastName} ${p.firstName}`),
      p.professionCode ?? null,
      p.professionLabel ?? null,
      p.professionLabel === undefined ? null : normaliseText(p.professionLabel),
      p.specialtyCode ?? null,
      p.specialtyLabel ?? null,
    ];
  });
  await db.runBatch(STATEMENTS[db.dialect].professionals, [now], values);
}

function toImportRecord(row: Row): ImportRecord {
  const summary = optional(row, 'summary');
  const finishedAt =
    row.finished_at === null || row.finished_at === undefined ? undefined : Number(row.finished_at);
  const r: ImportRecord = {
    id: Number(row.id),
    kind: String(row.kind),
    // Failed imports (failImport, a stale lock taken over, the RPPS import's error path) say so in
    // their summary.
    state: finishedAt === undefined ? 'running' : summary?.includes('"failed":') ? 'failed' : 'finished',
    startedAt: Number(row.started_at),
  };
  const holder = optional(row, 'holder');
  if (holder !== undefined) r.holder = holder;
  if (row.heartbeat_at !== null && row.heartbeat_at !== undefined) r.heartbeatAt = Number(row.heartbeat_at);
  if (finishedAt !== undefined) r.finishedAt = finishedAt;
  if (summary !== undefined) r.summary = summary;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Rows to objects

const PROFESSIONAL_COLUMNS = [
  'national_id',
  'id_type',
  'civility',
  'last_name',
  'first_name',
  'profession_code',
  'profession_label',
  'specialty_code',
  'specialty_label',
] as const;

function optional(row: Row, column: string): string | undefined {
  const v = row[column];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function toProfessional(row: Row, prefix: string): Professional {
  const p: Professional = {
    nationalId: String(row[`${prefix}national_id`]),
    idType: String(row[`${prefix}id_type`]) as '8' | '0',
    lastName: String(row[`${prefix}last_name`]),
    firstName: String(row[`${prefix}first_name`]),
  };
  const set = (
    key: 'civility' | 'professionCode' | 'professionLabel' | 'specialtyCode' | 'specialtyLabel',
    c: string,
  ) => {
    const v = optional(row, `${prefix}${c}`);
    if (v !== undefined) p[key] = v;
  };
  set('civility', 'civility');
  set('professionCode', 'profession_code');
  set('professionLabel', 'profession_label');
  set('specialtyCode', 'specialty_code');
  set('specialtyLabel', 'specialty_label');
  return p;
}

function toMailboxStructure(row: Row): MailboxStructure {
  const ms: MailboxStructure = {
    structure: {
      key: String(row.structure_key),
      idType: String(row.id_type) as StructureIdType,
      identification: String(row.identification),
      name: String(row.name),
      kind: String(row.kind) as StructureKind,
    },
  };
  for (const [key, column] of [
    ['service', 'service'],
    ['street', 'street'],
    ['postcode', 'postcode'],
    ['city', 'city'],
    ['department', 'department'],
    ['country', 'country'],
  ] as const) {
    const v = optional(row, column);
    if (v !== undefined) ms[key] = v;
  }
  return ms;
}

function toTeam(row: Row): Team {
  const t: Team = { id: String(row.id), kind: String(row.kind) as TeamKind, name: String(row.name) };
  const s = optional(row, 'structure_key');
  if (s !== undefined) t.structureKey = s;
  const a = optional(row, 'address');
  if (a !== undefined) t.address = a;
  return t;
}

function toTeamMember(row: Row): TeamMember {
  const m: TeamMember =
    row.member_kind === 'mailbox'
      ? { kind: 'mailbox', address: String(row.member) }
      : { kind: 'professional', nationalId: String(row.member) };
  const role = optional(row, 'role');
  if (role !== undefined) m.role = role;
  const profession = optional(row, 'profession_code');
  if (profession !== undefined) m.professionCode = profession;
  return m;
}

function memberKey(member: TeamMember): string {
  if (member.kind === 'mailbox') return normaliseAddress(member.address);
  const id = toNationalId(member.nationalId);
  if (id === undefined) throw new Error(`invalid national id "${member.nationalId}"`);
  return id;
}

function toKey(row: Row): MailboxKey {
  const k: MailboxKey = {
    address: String(row.address),
    format: String(row.format) as KeyFormat,
    fingerprint: String(row.fingerprint),
    data: new Uint8Array(row.data as Uint8Array),
    preferred: Number(row.preferred) === 1,
    addedAt: Number(row.added_at),
  };
  if (row.not_before !== null) k.notBefore = Number(row.not_before);
  if (row.not_after !== null) k.notAfter = Number(row.not_after);
  return k;
}
