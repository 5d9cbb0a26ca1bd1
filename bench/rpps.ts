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
import { existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importPersonActivity, progressBar } from '../directory/index.ts';
import { benchArgs, importFigures, mb, openBenchStore, runUnderCliV8Flag } from './directory-bench.ts';
import { writeActivityFile } from '../test/helpers/rpps-fixture.ts';

runUnderCliV8Flag(import.meta.url);

const { lines, usePg } = benchArgs(500_000);

const source = join(tmpdir(), `courrier-bench-rpps-${lines}.txt`);
if (!existsSync(source)) {
  const t = performance.now();
  await writeActivityFile(source, lines, 1);
  console.error(`generated ${source} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}
console.log(
  `PS_LibreAcces_Personne_activite: ${lines} lines, ${mb(statSync(source).size)}; node ${process.version} ${process.execArgv.join(' ')}`,
);

const bench = await openBenchStore(usePg);
const { store, file } = bench;
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
    console.log(importFigures(label, s, report));
  }
  const counts = await store.counts();
  console.log(
    `professionals ${counts.professionals}, structures ${counts.structures}` +
      (usePg ? '' : `; database ${mb(statSync(file).size)}`),
  );
} finally {
  await bench.close();
}
