import pg from 'pg';
import { toColumns, type Row, type SqlDriver, type SqlExecutor, type SqlValue } from './sql.ts';

export interface PostgresOptions {
  /** e.g. `postgres://postgres@127.0.0.1:5432/courrier`. */
  connectionString: string;
  /** Schema holding the directory tables (created if missing); default `public`. */
  schema?: string;
  /** Pool size; default 4. */
  maxConnections?: number;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

// BIGINT (int8) comes back as a string by default; our int8 columns are millisecond timestamps,
// far below 2^53.
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === 20 && format !== 'binary') return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format as 'text');
  },
} as pg.CustomTypesConfig;

/** `?` placeholders to `$1…$n` (our statements never contain `?` inside literals). */
const rewritten = new Map<string, string>();
function toPg(sql: string): string {
  let out = rewritten.get(sql);
  if (out === undefined) {
    let n = 0;
    out = sql.replace(/\?/g, () => `$${++n}`);
    rewritten.set(sql, out);
  }
  return out;
}

function executor(q: (text: string, values: readonly SqlValue[]) => Promise<pg.QueryResult>): SqlExecutor {
  return {
    dialect: 'postgres',
    all: async (sql, params = []) => (await q(toPg(sql), params)).rows as Row[],
    get: async (sql, params = []) => (await q(toPg(sql), params)).rows[0] as Row | undefined,
    run: async (sql, params = []) => (await q(toPg(sql), params)).rowCount ?? 0,
    runBatch: async (sql, params, rows) =>
      rows.length === 0 ? 0 : ((await q(toPg(sql), [...params, ...toColumns(rows)])).rowCount ?? 0),
    allBatch: async (sql, params, rows) =>
      rows.length === 0 ? [] : ((await q(toPg(sql), [...params, ...toColumns(rows)])).rows as Row[]),
  };
}

/** A pool on PostgreSQL, every connection with `search_path` set to the schema. */
export async function openPostgresDriver(options: PostgresOptions): Promise<SqlDriver> {
  const schema = options.schema ?? 'public';
  if (!SCHEMA_NAME.test(schema)) throw new Error(`invalid PostgreSQL schema name "${schema}"`);
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.maxConnections ?? 4,
    options: `-c search_path=${schema}`,
    types,
  });
  // An idle client losing its server must not crash the process; the next query reports it.
  pool.on('error', () => undefined);
  try {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  } catch (err) {
    await pool.end();
    throw new Error(`cannot open the PostgreSQL directory: ${(err as Error).message}`, { cause: err });
  }
  const query = (text: string, values: readonly SqlValue[]) => pool.query(text, values as unknown[]);
  return {
    ...executor(query),
    async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const value = await fn(executor((text, values) => client.query(text, values as unknown[])));
        await client.query('COMMIT');
        return value;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}
