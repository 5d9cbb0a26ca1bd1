/**
 * Set-up shared by the directory's test files: the shared sample files, a temp dir per test file,
 * generated extracts, and the two storage back-ends the same tests run against (a SQLite file in the
 * temp dir, a PostgreSQL store in a fresh schema dropped by `cleanup`).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll } from 'vitest';
import {
  openPostgresDirectory,
  openSqliteDirectory,
  type DirectoryStore,
  type MailboxStore,
} from '../../directory/index.ts';

export const EXTRACT_SAMPLE = fileURLToPath(
  new URL('../../../shared/fixtures/Extraction_Correspondance_MSSante_sample.txt', import.meta.url),
);
export const WHITELIST_SAMPLE = fileURLToPath(
  new URL('../../../shared/fixtures/listeblanche_sample.xml', import.meta.url),
);
const GENERATOR = fileURLToPath(new URL('../../../shared/tools/gen-directory.mjs', import.meta.url));
export const PG_URL = process.env.COURRIER_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

/** The sample extract's lines, header first, without the final newline. */
export const sampleLines = (): string[] => readFileSync(EXTRACT_SAMPLE, 'utf8').trimEnd().split('\n');

/** A fresh temp dir for the calling test file, removed after its tests. */
export function testDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes an `n`-line extract from ../shared/tools/gen-directory.mjs (same seed, same file) into `dir`. */
export function generateExtract(dir: string, n: number, seed: number): string {
  const file = join(dir, `gen-${n}-${seed}.txt`);
  writeFileSync(
    file,
    execFileSync(process.execPath, [GENERATOR, String(n), String(seed)], { maxBuffer: 64 << 20 }),
  );
  return file;
}

/**
 * One storage back-end. `open` opens the same store again until `cleanup`, which forgets it (SQLite:
 * the next open takes a new file) or drops its schema (PostgreSQL).
 */
export interface DirectoryBackend {
  name: 'sqlite' | 'postgres';
  open(hosted?: MailboxStore): Promise<DirectoryStore>;
  /** A JS expression opening the same store in another process (with directory/index.ts imported as d). */
  openInChild(): string;
  /** Runs a read-only statement (`?` placeholders) on the store's database, beside the store. */
  query(sql: string, params: (string | number)[]): Promise<Record<string, unknown>[]>;
  /** Runs statements on the store's schema from outside the store (PostgreSQL only). */
  sql?(text: string): Promise<void>;
  cleanup(): Promise<void>;
}

/** SQLite files named `dir-<random>.sqlite` in `dir`. */
export function sqliteBackend(dir: string): DirectoryBackend {
  let file = '';
  return {
    name: 'sqlite',
    open(hosted) {
      file ||= join(dir, `dir-${randomBytes(4).toString('hex')}.sqlite`);
      return openSqliteDirectory(file, hosted ? { hostedMailboxes: hosted } : {});
    },
    openInChild: () => `d.openSqliteDirectory(${JSON.stringify(file)})`,
    query(sql, params) {
      const db = new DatabaseSync(file, { readOnly: true });
      try {
        return Promise.resolve(db.prepare(sql).all(...params));
      } finally {
        db.close();
      }
    },
    cleanup: async () => {
      file = '';
    },
  };
}

/** PostgreSQL stores in schemas named `<schemaPrefix>_<random>` of COURRIER_TEST_PG. */
export function postgresBackend(schemaPrefix: string): DirectoryBackend {
  let schema = '';
  async function withClient<T>(run: (client: pg.Client) => Promise<T>, options?: string): Promise<T> {
    const client = new pg.Client({ connectionString: PG_URL, ...(options === undefined ? {} : { options }) });
    await client.connect();
    try {
      return await run(client);
    } finally {
      await client.end();
    }
  }
  return {
    name: 'postgres',
    open(hosted) {
      schema ||= `${schemaPrefix}_${randomBytes(6).toString('hex')}`;
      return openPostgresDirectory(
        { connectionString: PG_URL, schema, maxConnections: 2 },
        hosted ? { hostedMailboxes: hosted } : {},
      );
    },
    openInChild: () =>
      `d.openPostgresDirectory(${JSON.stringify({ connectionString: PG_URL, schema, maxConnections: 1 })})`,
    query(sql, params) {
      let n = 0;
      return withClient(
        async (client) =>
          (
            await client.query(
              sql.replace(/\?/g, () => `$${++n}`),
              params,
            )
          ).rows,
        `-c search_path=${schema}`,
      );
    },
    sql: (text) =>
      withClient(async (client) => {
        await client.query(`SET search_path TO ${schema}; ${text}`);
      }),
    async cleanup() {
      if (schema === '') return;
      await withClient((client) => client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
      schema = '';
    },
  };
}

/** Both back-ends, for `describe.each`. */
export const directoryBackends = (dir: string, schemaPrefix: string): DirectoryBackend[] => [
  sqliteBackend(dir),
  postgresBackend(schemaPrefix),
];
