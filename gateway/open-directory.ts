import type { Config } from '../config/schema.ts';
import { redactUrlPassword } from '../config/print.ts';
import {
  openPostgresDirectory,
  openSqliteDirectory,
  type DirectoryStore,
} from '../directory/directory-store.ts';
import type { MailboxStore } from '../directory/mailbox-store.ts';
import type { DataPaths } from './first-run.ts';

/*
 * Kept apart from app.ts so that the CLI's directory commands load the directory and nothing of
 * the SMTP, queue and crypto stack (about 90 MB less resident memory for an import).
 */

/** The gateway could not start (a port in use, say); everything it had opened is closed again. */
export class StartupError extends Error {
  override readonly name = 'StartupError';
}

/**
 * Opens the configured directory (`directory.backend`): the SQLite file shared with the hosted
 * mailboxes, or PostgreSQL. The one place both the CLI and the gateway open it from. `hostedMailboxes`
 * makes answers say which addresses are hosted here.
 */
export async function openDirectory(
  config: Pick<Config, 'directory'>,
  paths: Pick<DataPaths, 'directoryFile'>,
  options: { hostedMailboxes?: MailboxStore } = {},
): Promise<DirectoryStore> {
  const storeOptions = options.hostedMailboxes ? { hostedMailboxes: options.hostedMailboxes } : {};
  const { backend, postgres } = config.directory;
  try {
    if (backend === 'sqlite') return await openSqliteDirectory(paths.directoryFile, storeOptions);
    if (postgres.url === undefined) throw new Error('directory.postgres.url is not set');
    return await openPostgresDirectory(
      { connectionString: postgres.url, schema: postgres.schema },
      storeOptions,
    );
  } catch (err) {
    const where =
      backend === 'sqlite'
        ? paths.directoryFile
        : `${redactUrlPassword(postgres.url ?? '(no url)')} schema ${postgres.schema}`;
    // The driver's message may quote the connection string: keep the password out of it.
    let reason = err instanceof Error ? err.message : String(err);
    if (postgres.url !== undefined) reason = reason.replaceAll(postgres.url, redactUrlPassword(postgres.url));
    throw new StartupError(`cannot open the directory (${backend}, ${where}): ${reason}`, { cause: err });
  }
}
