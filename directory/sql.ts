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
  readonly dialect: 'sqlite' | 'postgres';
  all(sql: string, params?: readonly SqlValue[]): Promise<Row[]>;
  get(sql: string, params?: readonly SqlValue[]): Promise<Row | undefined>;
  /** Returns the number of rows changed. */
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
  /**
   * Runs a statement for a batch of rows; returns the rows changed. The SQL differs by dialect:
   * SQLite runs it once per row with `params` then the row's values (prepared once; an in-process
   * call costs less than building and parsing a JSON batch), PostgreSQL once with `params` then one
   * array per column, read with `unnestTable` (one round trip).
   */
  runBatch(sql: string, params: readonly SqlValue[], rows: readonly BatchRow[]): Promise<number>;
  /** As `runBatch`, returning what the statement selects (all rows' results on SQLite). */
  allBatch(sql: string, params: readonly SqlValue[], rows: readonly BatchRow[]): Promise<Row[]>;
}

export interface SqlDriver extends SqlExecutor {
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
    dialect: 'sqlite',
    all: (sql, params = []) => Promise.resolve(prepare(sql).all(...(params as SQLInputValue[]))),
    get: (sql, params = []) => Promise.resolve(prepare(sql).get(...(params as SQLInputValue[]))),
    run: (sql, params = []) =>
      Promise.resolve(Number(prepare(sql).run(...(params as SQLInputValue[])).changes)),
    runBatch(sql, params, rows) {
      const st = prepare(sql);
      let changes = 0;
      for (const row of rows) changes += Number(st.run(...(params as SQLInputValue[]), ...row).changes);
      return Promise.resolve(changes);
    },
    allBatch(sql, params, rows) {
      const st = prepare(sql);
      const out: Row[] = [];
      for (const row of rows) for (const r of st.all(...(params as SQLInputValue[]), ...row)) out.push(r);
      return Promise.resolve(out);
    },
  };
  let queue: Promise<unknown> = Promise.resolve();
  return {
    ...exec,
    db,
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

export type ColumnType = 'text' | 'integer' | 'bigint';
/** Columns of a batch of rows passed as parameters: [name, type]. */
export type BatchColumns = readonly (readonly [string, ColumnType])[];
/** One row of a batch, values in the order of its BatchColumns. */
export type BatchRow = readonly (string | number | null)[];

/**
 * PostgreSQL's side of a batch statement (`runBatch`, `allBatch`): the batch as a table
 * `alias (columns…)`, `unnest` of one array parameter per column, so that the batch is one statement
 * and one round trip. Its placeholders must come after every other `?` of the statement.
 */
export function unnestTable(columns: BatchColumns, alias: string): string {
  const arrays = columns.map(([, type]) => `?::${type}[]`).join(', ');
  return `unnest(${arrays}) AS ${alias} (${columns.map(([name]) => name).join(', ')})`;
}

/** Rows to one array per column (PostgreSQL's side of a batch statement). */
export function toColumns(rows: readonly BatchRow[]): SqlValue[] {
  const width = rows[0]?.length ?? 0;
  const columns: (string | number | null)[][] = [];
  for (let c = 0; c < width; c++) columns.push(rows.map((r) => r[c] ?? null));
  // node-postgres sends JS arrays as PostgreSQL array literals.
  return columns as unknown as SqlValue[];
}
