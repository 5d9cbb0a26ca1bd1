import type { SqlDriver } from './sql.ts';

/**
 * Directory schema, versioned apart from the hosted-mailbox store (`schema_version`, in
 * mailbox-store.ts) so that both can share one SQLite file and evolve separately: that store
 * refuses a `schema_version` it does not know. Tables are prefixed `dir_` for the same reason
 * (`mailboxes` is the hosted-mailbox table).
 *
 * Each entry upgrades the schema by one version; never edit a released entry, append one.
 * `{blob}` and `{int8}` are the only dialect differences.
 */
const MIGRATIONS: string[][] = [
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
];

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
      for (const sql of MIGRATIONS[version]!) await tx.run(dialectSql(sql, driver.dialect));
    }
    await tx.run('UPDATE directory_schema_version SET version = ?', [version]);
  });
}
