import type { SqlDriver, SqlExecutor } from './sql.ts';

/** A migration step: SQL run on both engines, or code for what differs by engine. */
type MigrationStep = string | ((tx: SqlExecutor) => Promise<void>);

/**
 * Directory schema, versioned apart from the hosted-mailbox store (`schema_version`, in
 * mailbox-store.ts) so that both can share one SQLite file and evolve separately: that store
 * refuses a `schema_version` it does not know. Tables are prefixed `dir_` for the same reason
 * (`mailboxes` is the hosted-mailbox table).
 *
 * Each entry upgrades the schema by one version; never edit a released entry, append one.
 * `{blob}` and `{int8}` are the only dialect differences in SQL steps; what differs more is a
 * function step.
 */
const MIGRATIONS: MigrationStep[][] = [
  [
    `CREATE TABLE dir_professionals (
       national_id      TEXT PRIMARY KEY NOT NULL,
       id_type          TEXT NOT NULL,
       civility         TEXT,
       last_name        TEXT NOT NULL,
       first_name       TEXT NOT NULL,
       name_norm        TEXT NOT NULL,
       profession_code  TEXT,
       profession_label TEXT,
       profession_norm  TEXT,
       specialty_code   TEXT,
       specialty_label  TEXT,
       updated_at       {int8} NOT NULL
     )`,
    `CREATE TABLE dir_structures (
       key            TEXT PRIMARY KEY NOT NULL,
       id_type        TEXT NOT NULL,
       identification TEXT NOT NULL,
       name           TEXT NOT NULL,
       name_norm      TEXT NOT NULL,
       kind           TEXT NOT NULL,
       updated_at     {int8} NOT NULL
     )`,
    `CREATE TABLE dir_mailboxes (
       address           TEXT PRIMARY KEY NOT NULL,
       domain            TEXT NOT NULL,
       type              TEXT NOT NULL CHECK (type IN ('PER', 'ORG', 'APP', 'CAB')),
       source            TEXT NOT NULL CHECK (source IN ('extract', 'local')),
       national_id       TEXT REFERENCES dir_professionals (national_id),
       display_name      TEXT,
       name_norm         TEXT NOT NULL,
       hidden            INTEGER NOT NULL DEFAULT 0,
       dematerialisation INTEGER,
       retired_at        {int8},
       updated_at        {int8} NOT NULL
     )`,
    'CREATE INDEX dir_mailboxes_national_id ON dir_mailboxes (national_id)',
    // One line of the extract: a mailbox at a structure. `row_hash` makes re-imports idempotent,
    // `last_import` tells which lines the latest import saw.
    `CREATE TABLE dir_mailbox_links (
       address       TEXT NOT NULL REFERENCES dir_mailboxes (address),
       structure_key TEXT NOT NULL,
       service       TEXT,
       street        TEXT,
       postcode      TEXT,
       city          TEXT,
       city_norm     TEXT,
       department    TEXT,
       country       TEXT,
       row_hash      TEXT NOT NULL,
       last_import   {int8} NOT NULL,
       retired_at    {int8},
       PRIMARY KEY (address, structure_key)
     )`,
    'CREATE INDEX dir_mailbox_links_structure ON dir_mailbox_links (structure_key)',
    'CREATE INDEX dir_mailbox_links_last_import ON dir_mailbox_links (last_import)',
    `CREATE TABLE dir_imports (
       id          {int8} PRIMARY KEY NOT NULL,
       kind        TEXT NOT NULL,
       started_at  {int8} NOT NULL,
       finished_at {int8},
       summary     TEXT
     )`,
    `CREATE TABLE dir_teams (
       id            TEXT PRIMARY KEY NOT NULL,
       kind          TEXT NOT NULL CHECK (kind IN ('ESP', 'CPTS', 'MSP')),
       name          TEXT NOT NULL,
       structure_key TEXT,
       address       TEXT UNIQUE
     )`,
    `CREATE TABLE dir_team_members (
       team_id         TEXT NOT NULL REFERENCES dir_teams (id) ON DELETE CASCADE,
       member_kind     TEXT NOT NULL CHECK (member_kind IN ('professional', 'mailbox')),
       member          TEXT NOT NULL,
       role            TEXT,
       profession_code TEXT,
       PRIMARY KEY (team_id, member_kind, member)
     )`,
    `CREATE TABLE dir_mailbox_keys (
       address     TEXT NOT NULL,
       fingerprint TEXT NOT NULL,
       format      TEXT NOT NULL CHECK (format IN ('smime', 'openpgp')),
       data        {blob} NOT NULL,
       not_before  {int8},
       not_after   {int8},
       preferred   INTEGER NOT NULL DEFAULT 0,
       added_at    {int8} NOT NULL,
       PRIMARY KEY (address, fingerprint)
     )`,
    `CREATE TABLE dir_trust_domains (
       domain      TEXT NOT NULL,
       operator_dn TEXT NOT NULL,
       description TEXT,
       updated     TEXT,
       PRIMARY KEY (domain, operator_dn)
     )`,
  ],
  [
    // One line of PS_LibreAcces_Personne_activite: a professional's activity (role, mode, sector)
    // at a site. `activity_key` identifies the activity within the person across imports;
    // `row_hash`/`last_import`/`retired_at` work as for dir_mailbox_links.
    `CREATE TABLE dir_activities (
       national_id   TEXT NOT NULL,
       activity_key  TEXT NOT NULL,
       structure_key TEXT,
       site_name     TEXT,
       role_code     TEXT,
       role_label    TEXT,
       mode_code     TEXT,
       mode_label    TEXT,
       sector_code   TEXT,
       sector_label  TEXT,
       street        TEXT,
       postcode      TEXT,
       city          TEXT,
       city_norm     TEXT,
       department    TEXT,
       country       TEXT,
       row_hash      TEXT NOT NULL,
       last_import   {int8} NOT NULL,
       retired_at    {int8},
       PRIMARY KEY (national_id, activity_key)
     )`,
    'CREATE INDEX dir_activities_structure ON dir_activities (structure_key)',
    'CREATE INDEX dir_activities_last_import ON dir_activities (last_import)',
    // Import lock: the running import refreshes heartbeat_at; another import waits or is refused
    // unless the heartbeat is stale (the holder died).
    'ALTER TABLE dir_imports ADD COLUMN heartbeat_at {int8}',
    'ALTER TABLE dir_imports ADD COLUMN holder TEXT',
  ],
  [
    // Search by name without a scan (directory-store.ts, search): a trigram index on the
    // normalised names, so that `LIKE '%word%'` (3 characters or more) has an index to use.
    searchIndexes,
  ],
];

/**
 * SQLite: an FTS5 trigram table over `dir_mailboxes.name_norm` (rowid = the mailbox's rowid, the
 * address kept beside it so that candidates come out in address order), kept in sync by triggers
 * so that every writer of dir_mailboxes (the extract import, local mailboxes) keeps it right.
 * PostgreSQL: pg_trgm GIN indexes on the normalised columns search filters on; when the extension
 * cannot be created (the user may not), a warning, and search stays a scan.
 */
async function searchIndexes(tx: SqlExecutor): Promise<void> {
  if (tx.dialect === 'sqlite') {
    await tx.run(
      `CREATE VIRTUAL TABLE dir_mailbox_name_search USING fts5(address UNINDEXED, name_norm, tokenize = 'trigram')`,
    );
    await tx.run(
      `INSERT INTO dir_mailbox_name_search (rowid, address, name_norm) SELECT rowid, address, name_norm FROM dir_mailboxes`,
    );
    await tx.run(SEARCH_INSERT_TRIGGER);
    // The import's upsert sets name_norm on every changed line: rewrite the index only when it differs.
    await tx.run(
      `CREATE TRIGGER dir_mailbox_name_search_update AFTER UPDATE OF address, name_norm ON dir_mailboxes
       WHEN old.name_norm IS NOT new.name_norm OR old.address IS NOT new.address BEGIN
         DELETE FROM dir_mailbox_name_search WHERE rowid = old.rowid;
         INSERT INTO dir_mailbox_name_search (rowid, address, name_norm) VALUES (new.rowid, new.address, new.name_norm);
       END`,
    );
    await tx.run(
      `CREATE TRIGGER dir_mailbox_name_search_delete AFTER DELETE ON dir_mailboxes BEGIN
         DELETE FROM dir_mailbox_name_search WHERE rowid = old.rowid;
       END`,
    );
    return;
  }
  // A refused CREATE EXTENSION aborts the transaction: try it under a savepoint.
  await tx.run('SAVEPOINT dir_pg_trgm');
  try {
    await tx.run('CREATE EXTENSION IF NOT EXISTS pg_trgm');
    await tx.run('RELEASE SAVEPOINT dir_pg_trgm');
  } catch (err) {
    await tx.run('ROLLBACK TO SAVEPOINT dir_pg_trgm');
    process.emitWarning(
      `directory search: cannot create the pg_trgm extension (${(err as Error).message}); ` +
        'search by name, city and structure scans the tables. A superuser can run ' +
        '"CREATE EXTENSION pg_trgm" and the CREATE INDEX statements of docs/directory.md (Queries)',
      { code: 'COURRIER_DIRECTORY_NO_TRGM' },
    );
    return;
  }
  // The extension may live in another schema than the directory's (search_path is the latter).
  const ext = await tx.get(
    `SELECT n.nspname AS schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_trgm'`,
  );
  const ops = `"${String(ext?.schema ?? 'public').replaceAll('"', '""')}".gin_trgm_ops`;
  await tx.run(`CREATE INDEX dir_mailboxes_name_trgm ON dir_mailboxes USING gin (name_norm ${ops})`);
  await tx.run(`CREATE INDEX dir_mailbox_links_city_trgm ON dir_mailbox_links USING gin (city_norm ${ops})`);
  await tx.run(`CREATE INDEX dir_structures_name_trgm ON dir_structures USING gin (name_norm ${ops})`);
}

const SEARCH_INSERT_TRIGGER = `CREATE TRIGGER IF NOT EXISTS dir_mailbox_name_search_insert
  AFTER INSERT ON dir_mailboxes BEGIN
    INSERT INTO dir_mailbox_name_search (rowid, address, name_norm) VALUES (new.rowid, new.address, new.name_norm);
  END`;

/**
 * SQLite, first import into an empty directory: the insert trigger would tokenise every new
 * mailbox one by one (about 16 s more for 535 000 lines); drop it, and restoreSearchIndex fills
 * the table in one statement at the end (about 1.5 s). Returns whether it was suspended.
 */
export async function suspendSearchIndex(tx: SqlExecutor): Promise<boolean> {
  if (tx.dialect !== 'sqlite') return false;
  if ((await tx.get('SELECT 1 AS x FROM dir_mailboxes LIMIT 1')) !== undefined) return false;
  await tx.run('DROP TRIGGER IF EXISTS dir_mailbox_name_search_insert');
  return true;
}

/** Whether an import has suspended the SQLite search index (see suspendSearchIndex). */
export async function searchIndexSuspended(db: SqlExecutor): Promise<boolean> {
  if (db.dialect !== 'sqlite') return false;
  const trigger = await db.get(
    "SELECT 1 AS x FROM sqlite_master WHERE type = 'trigger' AND name = 'dir_mailbox_name_search_insert'",
  );
  return trigger === undefined;
}

/**
 * Rebuilds the SQLite search table from dir_mailboxes and puts the insert trigger back, when an
 * import suspended it (at the end of that import, or when the store is opened after it died).
 */
export async function restoreSearchIndex(tx: SqlExecutor): Promise<boolean> {
  if (!(await searchIndexSuspended(tx))) return false;
  await tx.run('DELETE FROM dir_mailbox_name_search');
  await tx.run(
    'INSERT INTO dir_mailbox_name_search (rowid, address, name_norm) SELECT rowid, address, name_norm FROM dir_mailboxes',
  );
  await tx.run(SEARCH_INSERT_TRIGGER);
  return true;
}

export const DIRECTORY_SCHEMA_VERSION = MIGRATIONS.length;

function dialectSql(sql: string, dialect: SqlDriver['dialect']): string {
  return sql
    .replaceAll('{blob}', dialect === 'sqlite' ? 'BLOB' : 'BYTEA')
    .replaceAll('{int8}', dialect === 'sqlite' ? 'INTEGER' : 'BIGINT');
}

/** Brings the schema to the current version; refuses a schema written by a newer Courrier. */
export async function migrateDirectory(driver: SqlDriver): Promise<void> {
  await driver.transaction(async (tx) => {
    // Two gateway instances starting together on PostgreSQL: one migrates, the other waits.
    if (driver.dialect === 'postgres') await tx.run('SELECT pg_advisory_xact_lock(7263550)');
    await tx.run('CREATE TABLE IF NOT EXISTS directory_schema_version (version INTEGER NOT NULL)');
    const row = await tx.get('SELECT version FROM directory_schema_version');
    let version = row === undefined ? 0 : Number(row.version);
    if (row === undefined) await tx.run('INSERT INTO directory_schema_version (version) VALUES (0)');
    if (version > MIGRATIONS.length) {
      throw new Error(
        `directory schema version ${version} is newer than this Courrier knows (${MIGRATIONS.length})`,
      );
    }
    if (version === MIGRATIONS.length) return;
    for (; version < MIGRATIONS.length; version++) {
      for (const step of MIGRATIONS[version]!) {
        if (typeof step === 'string') await tx.run(dialectSql(step, driver.dialect));
        else await step(tx);
      }
    }
    await tx.run('UPDATE directory_schema_version SET version = ?', [version]);
  });
}
