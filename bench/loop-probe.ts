import fs from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

/**
 * Preloaded into the gateway by the bench (`NODE_OPTIONS=--import=<this file>`), nothing in the
 * product depends on it: measures the event loop's delay (how late a 1 ms timer fires, i.e. how
 * long the loop was busy with other work). On SIGUSR2 it appends the figures since the previous
 * SIGUSR2 to the file named by BENCH_LOOP_PROBE_FILE and starts afresh, so the bench gets
 * exactly its measured window.
 */
const out = process.env.BENCH_LOOP_PROBE_FILE;
if (out) {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  process.on('SIGUSR2', () => {
    const ms = (ns: number) => ns / 1e6;
    const figures = {
      p50: ms(histogram.percentile(50)),
      p99: ms(histogram.percentile(99)),
      max: ms(histogram.max),
      mean: ms(histogram.mean),
    };
    fs.appendFileSync(out, `${JSON.stringify(figures)}\n`);
    histogram.reset();
  });
}
