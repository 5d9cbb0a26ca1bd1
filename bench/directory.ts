/**
 * Directory bench: import of a generated Extraction_Correspondance_MSSante (default 535 000 lines,
 * the size of the real daily file), then the same file again (the idempotent path), then lookup
 * latency by address and by national id, and search latency (name, name + city, profession + city,
 * structure).
 *
 *   node bench/directory.ts [lines] [--pg]
 *
 * Targets (issue 5, SQLite): import < 60 s and < 300 MB peak RSS; lookup p99 < 1 ms.
 * `--pg` runs the same on PostgreSQL (127.0.0.1:5432, database `test`, a throw-away schema).
 *
 * Runs under the V8 flag the `courrier` CLI runs with (gateway/cli.ts shebang, Dockerfile
 * ENTRYPOINT): started without it, the script runs itself again under it and waits; that run does
 * all the work and reports its own peak RSS (process.resourceUsage().maxRSS, the whole process).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import v8 from 'node:v8';
import pg from 'pg';
import { importExtract, progressBar, type SearchQuery } from '../directory/index.ts';
import {
  benchArgs,
  importFigures,
  mb,
  openBenchStore,
  PG_URL,
  runUnderCliV8Flag,
} from './directory-bench.ts';

runUnderCliV8Flag(import.meta.url);

const { lines, usePg } = benchArgs(535_000);
const generator = new URL('../../shared/tools/gen-directory.mjs', import.meta.url).pathname;

const extract = join(tmpdir(), `courrier-bench-extract-${lines}.txt`);
if (!existsSync(extract)) {
  const t = performance.now();
  const fd = openSync(extract, 'w');
  execFileSync(process.execPath, [generator, String(lines), '42'], { stdio: ['ignore', fd, 'inherit'] });
  closeSync(fd);
  console.error(`generated ${extract} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}
console.log(
  `extract: ${lines} lines, ${mb(statSync(extract).size)}; node ${process.version} ${process.execArgv.join(' ')}`,
);

const bench = await openBenchStore(usePg);
const { store, file, schema } = bench;

try {
  for (const label of ['first import', 're-import (unchanged)']) {
    const t = performance.now();
    const report = await importExtract(store, extract, { onProgress: progressBar(process.stderr) });
    process.stderr.write('\n');
    const s = (performance.now() - t) / 1000;
    console.log(
      `${importFigures(label, s, report)} (V8 heap now ${mb(v8.getHeapStatistics().total_heap_size)})`,
    );
  }

  // Samples: 20 000 random live addresses and national ids.
  let addresses: string[];
  let ids: string[];
  if (usePg) {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    addresses = (
      await c.query(`SELECT address FROM ${schema}.dir_mailboxes ORDER BY random() LIMIT 20000`)
    ).rows.map((r: { address: string }) => r.address);
    ids = (
      await c.query(`SELECT national_id FROM ${schema}.dir_professionals ORDER BY random() LIMIT 20000`)
    ).rows.map((r: { national_id: string }) => r.national_id);
    await c.end();
  } else {
    const db = new DatabaseSync(file, { readOnly: true });
    addresses = db
      .prepare('SELECT address FROM dir_mailboxes ORDER BY random() LIMIT 20000')
      .all()
      .map((r) => String(r.address));
    ids = db
      .prepare('SELECT national_id FROM dir_professionals ORDER BY random() LIMIT 20000')
      .all()
      .map((r) => String(r.national_id));
    db.close();
  }
  const latency = async (label: string, keys: string[], f: (k: string) => Promise<unknown>) => {
    for (const k of keys.slice(0, 500)) await f(k); // warm-up
    const times: number[] = [];
    for (const k of keys) {
      const t = performance.now();
      if ((await f(k)) === undefined) throw new Error(`${label}: ${k} not found`);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
    console.log(
      `${label}: ${times.length} lookups, p50 ${(q(0.5) * 1000).toFixed(0)} µs, ` +
        `p99 ${(q(0.99) * 1000).toFixed(0)} µs, max ${(q(1) * 1000).toFixed(0)} µs`,
    );
  };
  await latency('resolveAddress', addresses, (a) => store.resolveAddress(a.toUpperCase()));
  await latency('findByNationalId', ids, (id) => store.findByNationalId(id));
  // Search: a few hundred varied queries of each kind, words from the generator's vocabulary
  // (gen-directory.mjs), typed in any case and with or without accents.
  const lastNames = ['martin', 'LEFÈVRE', 'lefevre', "n'diaye", 'garcia', 'Fontaine-Méril', 'roux', 'dubois'];
  const firstNames = ['maelle', 'Inès', 'zoe', 'raphael', 'jerome', 'Élodie', 'loic', 'marie'];
  const cities = ['annecy', 'paris', 'lyon', 'carcassonne', 'chateau gontier', '75013', '34800'];
  const professions = ['infirmier', 'sage femme', 'kinesitherapeute', 'pharmacien', '10', '91'];
  const structureNames = [
    'msp des vignes',
    'centre hospitalier',
    'cpts sud',
    'esp val vert',
    'cabinet medical',
  ];
  let n = 0;
  const pick = <T>(a: readonly T[]): T => a[n++ % a.length]!;
  const searches: [string, () => SearchQuery][] = [
    ['name', () => ({ name: `${pick(lastNames)} ${n % 3 === 0 ? pick(firstNames) : ''}` })],
    ['name + city', () => ({ name: `${pick(lastNames)} ${pick(firstNames)}`, city: pick(cities) })],
    ['profession + city', () => ({ profession: pick(professions), city: pick(cities) })],
    ['structure', () => ({ structure: pick(structureNames) })],
  ];
  for (const [label, next] of searches) {
    const times: number[] = [];
    let results = 0;
    for (let i = 0; i < 300; i++) {
      const q = next();
      const t = performance.now();
      results += (await store.search(q)).length;
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
    console.log(
      `search ${label}: ${times.length} queries (limit 50), p50 ${q(0.5).toFixed(1)} ms, ` +
        `p99 ${q(0.99).toFixed(1)} ms, max ${q(1).toFixed(1)} ms, ${(results / times.length).toFixed(0)} results on average`,
    );
  }
  console.log(
    `database: ${usePg ? 'postgres' : mb(statSync(file).size)}, counts ${JSON.stringify(await store.counts())}`,
  );
} finally {
  await bench.close();
}
