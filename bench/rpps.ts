/**
 * RPPS bench: import of a generated PS_LibreAcces_Personne_activite file (default 500 000 lines;
 * the real file has about 2.3 M), then the same file again (the idempotent path).
 *
 *   node bench/rpps.ts [lines] [--pg]
 *
 * The lines come from test/helpers/rpps-fixture.ts (deterministic: same count and seed, same bytes).
 * Runs under the V8 flag of the `courrier` CLI, like bench/directory.ts, and reports the peak RSS
 * of the whole process (process.resourceUsage().maxRSS).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  importPersonActivity,
  openPostgresDirectory,
  openSqliteDirectory,
  progressBar,
  type DirectoryStore,
} from '../directory/index.ts';
import { writeActivityFile } from '../test/helpers/rpps-fixture.ts';

const CLI_V8_FLAG = '--max-semi-space-size=16';
if (!process.execArgv.includes(CLI_V8_FLAG) && !(process.env.NODE_OPTIONS ?? '').includes(CLI_V8_FLAG)) {
  const run = spawnSync(
    process.execPath,
    [...process.execArgv, CLI_V8_FLAG, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  process.exit(run.status ?? 1);
}

const lines = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 500_000);
const usePg = process.argv.includes('--pg');
const PG_URL = process.env.COURRIER_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`;

const source = join(tmpdir(), `courrier-bench-rpps-${lines}.txt`);
if (!existsSync(source)) {
  const t = performance.now();
  await writeActivityFile(source, lines, 1);
  console.error(`generated ${source} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}
console.log(
  `PS_LibreAcces_Personne_activite: ${lines} lines, ${mb(statSync(source).size)}; node ${process.version} ${process.execArgv.join(' ')}`,
);

const dir = mkdtempSync(join(tmpdir(), 'courrier-bench-rpps-'));
const file = join(dir, 'directory.sqlite');
const schema = `dir_bench_${randomBytes(4).toString('hex')}`;
const store: DirectoryStore = usePg
  ? await openPostgresDirectory({ connectionString: PG_URL, schema })
  : await openSqliteDirectory(file);
try {
  for (const label of ['first import', 're-import (unchanged)']) {
    const t = performance.now();
    // The generator's RPPS numbers carry no Luhn key: checking them would only count warnings.
    const report = await importPersonActivity(store, source, {
      rppsCheckDigit: 'ignore',
      onProgress: progressBar(process.stderr),
    });
    process.stderr.write('\n');
    const s = (performance.now() - t) / 1000;
    console.log(
      `${label}: ${s.toFixed(1)} s (${Math.round(report.lines / s)} lines/s), inserted ${report.inserted}, ` +
        `updated ${report.updated}, unchanged ${report.unchanged}, rejected ${report.rejectedCount}, ` +
        `peak RSS ${mb(process.resourceUsage().maxRSS * 1024)}`,
    );
  }
  const counts = await store.counts();
  console.log(
    `professionals ${counts.professionals}, structures ${counts.structures}` +
      (usePg ? '' : `; database ${mb(statSync(file).size)}`),
  );
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  if (usePg) {
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  }
}
