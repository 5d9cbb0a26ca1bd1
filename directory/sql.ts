import { existsSync, chmodSync } from 'node:fs';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';

/**
 * The little SQL surface the directory store needs, so that one implementation of the queries
 * serves SQLite and PostgreSQL. Statements use `?` placeholders (the PostgreSQL driver rewrites
 * them to `$n`) and only SQL both engines accept: `ON CONFLICT … DO UPDATE`, integers for booleans
 * and timestamps (ms), `LIKE … ESCAPE`.
 */
export type SqlValue = string | number | null | Uint8Array;
export type Row = Record<string, unknown>;

export interface SqlExecutor {
  all(sql: string, params?: readonly SqlValue[]): Promise<Row[]>;
  get(sql: string, params?: readonly SqlValue[]): Promise<Row | undefined>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
}

export interface SqlDriver extends SqlExecutor {
  readonly dialect: 'sqlite' | 'postgres';
  /** Runs `fn` in one transaction; transactions are serialised. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Opens (creating if needed) an SQLite database in WAL mode; `:memory:` works too. */
export function openSqliteDriver(file: string): SqlDriver & { db: DatabaseSync } {
  const isNew = file !== ':memory:' && !existsSync(file);
  const db = new DatabaseSync(file);
  try {
    // The same file may hold the hosted mailboxes and their password hashes: owner only.
    if (isNew) chmodSync(file, 0o600);
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA busy_timeout = 5000');
    // WAL makes NORMAL durable across application crashes; a power cut may lose the last
    // transactions of an import, which the next import redoes.
    db.exec('PRAGMA synchronous = NORMAL');
    db.exec('PRAGMA foreign_keys = ON');
    // 32 MiB page cache (negative = KiB) instead of 2 MiB: the extract import inserts in address
    // order, which is random order for the B-trees. bench/directory.ts, 535 000 lines: 71.8 s with
    // the default, 34.0 s with this (shared 2-core machine, loads differed).
    db.exec('PRAGMA cache_size = -32768');
  } catch (err) {
    db.close();
    throw new Error(`cannot open the directory database ${file}: ${(err as Error).message}`, { cause: err });
  }
  const statements = new Map<string, StatementSync>();
  const prepare = (sql: string): StatementSync => {
    let st = statements.get(sql);
    if (st === undefined) {
      st = db.prepare(sql);
      statements.set(sql, st);
    }
    return st;
  };
  const exec: SqlExecutor = {
    all: (sql, params = []) => Promise.resolve(prepare(sql).all(...(params as SQLInputValue[]))),
    get: (sql, params = []) => Promise.resolve(prepare(sql).get(...(params as SQLInputValue[]))),
    run: (sql, params = []) =>
      Promise.resolve(Number(prepare(sql).run(...(params as SQLInputValue[])).changes)),
  };
  let queue: Promise<unknown> = Promise.resolve();
  return {
    ...exec,
    db,
    dialect: 'sqlite',
    transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
      const result = queue.then(async () => {
        db.exec('BEGIN IMMEDIATE');
        try {
          const value = await fn(exec);
          db.exec('COMMIT');
          return value;
        } catch (err) {
          if (db.isTransaction) db.exec('ROLLBACK');
          throw err;
        }
      });
      queue = result.catch(() => undefined);
      return result;
    },
    close() {
      statements.clear();
      if (db.isOpen) db.close();
      return Promise.resolve();
    },
  };
}
