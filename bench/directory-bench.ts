/**
 * What the directory benchmarks (bench/directory.ts, bench/rpps.ts) share: running under the
 * `courrier` CLI's V8 flag, their arguments, a throw-away store and the import figure line.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { openPostgresDirectory, openSqliteDirectory, type DirectoryStore } from '../directory/index.ts';

export const PG_URL = process.env.COURRIER_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

export const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`;

// V8's default young generation grows to 2 × 64 MiB on this machine: alone it took the import
// over 300 MB RSS. The CLI caps each semi-space at 16 MiB (docs/directory.md, Bench).
const CLI_V8_FLAG = '--max-semi-space-size=16';

/**
 * Started without the CLI's V8 flag, runs `scriptUrl` again under it, waits and exits with its
 * status: that run does all the work and reports its own peak RSS. Otherwise returns.
 */
export function runUnderCliV8Flag(scriptUrl: string): void {
  if (process.execArgv.includes(CLI_V8_FLAG) || (process.env.NODE_OPTIONS ?? '').includes(CLI_V8_FLAG))
    return;
  const run = spawnSync(
    process.execPath,
    [...process.execArgv, CLI_V8_FLAG, fileURLToPath(scriptUrl), ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  process.exit(run.status ?? 1);
}

/** `[lines] [--pg]` from the command line. */
export function benchArgs(defaultLines: number): { lines: number; usePg: boolean } {
  return {
    lines: Number(process.argv.find((a) => /^\d+$/.test(a)) ?? defaultLines),
    usePg: process.argv.includes('--pg'),
  };
}

export interface BenchStore {
  store: DirectoryStore;
  /** The SQLite file (unused with PostgreSQL). */
  file: string;
  /** The PostgreSQL schema (unused with SQLite). */
  schema: string;
  /** Closes the store, removes the file or drops the schema. */
  close(): Promise<void>;
}

/** A fresh store: an SQLite file in a temp folder, or a throw-away schema of PG_URL. */
export async function openBenchStore(usePg: boolean): Promise<BenchStore> {
  const dir = mkdtempSync(join(tmpdir(), 'courrier-bench-directory-'));
  const file = join(dir, 'directory.sqlite');
  const schema = `dir_bench_${randomBytes(4).toString('hex')}`;
  const store = usePg
    ? await openPostgresDirectory({ connectionString: PG_URL, schema })
    : await openSqliteDirectory(file);
  return {
    store,
    file,
    schema,
    async close() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
      if (usePg) {
        const client = new pg.Client({ connectionString: PG_URL });
        await client.connect();
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await client.end();
      }
    },
  };
}

/** One import's figure line: time, rate, counts, and the whole process's peak RSS so far. */
export function importFigures(
  label: string,
  seconds: number,
  r: { lines: number; inserted: number; updated: number; unchanged: number; rejectedCount: number },
): string {
  return (
    `${label}: ${seconds.toFixed(1)} s (${Math.round(r.lines / seconds)} lines/s), inserted ${r.inserted}, ` +
    `updated ${r.updated}, unchanged ${r.unchanged}, rejected ${r.rejectedCount}, ` +
    `peak RSS ${mb(process.resourceUsage().maxRSS * 1024)}`
  );
}
