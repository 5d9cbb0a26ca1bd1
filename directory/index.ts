export {
  openMailboxStore,
  normaliseAddress,
  MailboxError,
  MAILBOX_TYPES,
  MIN_PASSWORD_LENGTH,
  type Mailbox,
  type MailboxErrorCode,
  type MailboxStore,
  type MailboxType,
} from './mailbox-store.ts';
export {
  openSqliteDirectory,
  SEARCH_MAX,
  openPostgresDirectory,
  ImportLockError,
  IMPORT_STALE_AFTER_MS,
  type BatchResult,
  type DirectoryCounts,
  type DirectoryStore,
  type DirectoryStoreOptions,
  type ExtractRow,
  type ImportRecord,
} from './directory-store.ts';
export { type PostgresOptions } from './pg-driver.ts';
export {
  importExtract,
  parseExtractLine,
  progressBar,
  ExtractImportError,
  EXTRACT_COLUMNS,
  type ExtractImportOptions,
  type ExtractImportReport,
  type ImportProgress,
  type RejectedLine,
} from './extract-import.ts';
export {
  importPersonActivity,
  parseActivityLine,
  readActivityHeader,
  RppsImportError,
  ACTIVITY_COLUMNS,
  type ActivityColumns,
  type ActivityImportOptions,
  type ActivityImportReport,
  type ActivityImportTarget,
} from './rpps-import.ts';
export { type ActivityMethods, type ActivityRow } from './activity-store.ts';
export {
  importWhitelist,
  parseWhitelist,
  sameDn,
  type WhitelistImportReport,
  type WhitelistParse,
  type WhitelistSkip,
} from './whitelist.ts';
export { normaliseText, luhnValid, toNationalId } from './normalise.ts';
export { DIRECTORY_SCHEMA_VERSION } from './schema.ts';
export {
  TEAM_KINDS,
  type Activity,
  type DirectoryMailbox,
  type KeyFormat,
  type MailboxKey,
  type MailboxStructure,
  type Professional,
  type SearchQuery,
  type Structure,
  type StructureIdType,
  type StructureKind,
  type Team,
  type TeamExpansion,
  type TeamKind,
  type TeamMember,
  type TrustDomainEntry,
} from './model.ts';
