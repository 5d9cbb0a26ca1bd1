import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/**
 * Milliseconds on the monotonic clock every process of the machine shares (CLOCK_MONOTONIC, what
 * process.hrtime reads). The bench, the sink process and V8 CPU profiles (whose timestamps are µs
 * on the same clock) can thus be compared with each other directly.
 */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Nearest-rank percentile of an ascending array (p in 0..100). */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function ascending(values: number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/** A plain text table: the first row is the header; columns after the first are right-aligned. */
export function formatTable(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  const line = (row: string[]) =>
    row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  const out = [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const row of rows.slice(1)) out.push(line(row));
  return out.join('\n');
}

export const fmt = (n: number, digits = 1): string => (Number.isFinite(n) ? n.toFixed(digits) : '–');

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ). */
export const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100; // USER_HZ is 100 on every Linux architecture we run on
  }
})();

/**
 * CPU seconds a process used so far (user + system), with `children` the reaped children's too.
 * Undefined when the process is gone (or this is not Linux).
 */
export function processCpuSeconds(pid: number, children = false): number | undefined {
  const stat = procStat(pid);
  if (!stat) return undefined;
  return (stat.utime + stat.stime + (children ? stat.cutime + stat.cstime : 0)) / CLOCK_TICKS;
}

/** Parent pid and CPU times (clock ticks) of a process, from /proc/<pid>/stat (proc(5)). */
export function procStat(
  pid: number,
): { ppid: number; utime: number; stime: number; cutime: number; cstime: number } | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the command name (which may contain spaces) start at field 3 (state).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const f = (n: number) => Number(fields[n - 3]);
  return { ppid: f(4), utime: f(14), stime: f(15), cutime: f(16), cstime: f(17) };
}

/** Threads of a Node process, by what they do (names as Node 24 and libuv set them). */
export type ThreadKind = 'main' | 'libuv pool' | 'V8 helpers' | 'other';

function kindOfThread(pid: number, tid: number, comm: string): ThreadKind {
  if (tid === pid) return 'main';
  if (comm === 'libuv-worker') return 'libuv pool';
  if (comm.startsWith('V8')) return 'V8 helpers';
  return 'other';
}

/**
 * Seconds the threads of one kind spent on a CPU, or waiting for one while runnable (the run
 * queue), from /proc/<pid>/task/<tid>/schedstat (ns). Undefined when unavailable.
 */
export function threadSeconds(
  pid: number,
  kind: ThreadKind,
  what: 'running' | 'waiting',
): number | undefined {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let ns = 0;
  for (const tid of tids) {
    try {
      const comm = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      if (kindOfThread(pid, Number(tid), comm) !== kind) continue;
      const [running, waiting] = fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ');
      ns += Number(what === 'running' ? running : waiting);
    } catch {
      // the thread ended meanwhile
    }
  }
  return ns / 1e9;
}

/**
 * CPU seconds of the whole machine so far (from /proc/stat): busy (steal excluded), stolen by the
 * hypervisor (a virtual machine's CPU given to other guests), and total.
 */
export function machineCpuSeconds(): { busy: number; steal: number; total: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/stat', 'utf8');
  } catch {
    return undefined;
  }
  const cpu = text.split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0);
  const steal = cpu[7] ?? 0;
  const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
  return {
    busy: (total - idle - steal) / CLOCK_TICKS,
    steal: steal / CLOCK_TICKS,
    total: total / CLOCK_TICKS,
  };
}

/** Pids of the processes whose command line matches `name` exactly (pgrep -x), if any. */
export function pidsOf(name: string): number[] {
  try {
    return execFileSync('pgrep', ['-x', name], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * Where the machine's CPU went during a window: per named group of processes, in cores (CPU
 * seconds per second of the window), plus the machine as a whole.
 */
export class CpuMeter {
  private readonly groups: Map<string, () => number | undefined>;
  private start = new Map<string, number | undefined>();
  private startMachine: { busy: number; steal: number; total: number } | undefined;
  private startedAt = 0;

  constructor(groups: Record<string, () => number | undefined>) {
    this.groups = new Map(Object.entries(groups));
  }

  begin(): void {
    this.startedAt = nowMs();
    this.startMachine = machineCpuSeconds();
    for (const [name, read] of this.groups) this.start.set(name, read());
  }

  /**
   * Cores used per group over the window (CPU seconds / wall seconds), and the shares of the
   * machine's CPU time that were busy and stolen.
   */
  end(): { cores: Record<string, number>; machineBusy: number; machineSteal: number; seconds: number } {
    const seconds = (nowMs() - this.startedAt) / 1000;
    const cores: Record<string, number> = {};
    for (const [name, read] of this.groups) {
      const a = this.start.get(name);
      const b = read();
      cores[name] = a === undefined || b === undefined ? Number.NaN : (b - a) / seconds;
    }
    const m = machineCpuSeconds();
    const a = this.startMachine;
    const share = (f: 'busy' | 'steal') => (m && a ? (m[f] - a[f]) / (m.total - a.total) : NaN);
    return { cores, machineBusy: share('busy'), machineSteal: share('steal'), seconds };
  }
}

/** One cell of a crypto benchmark's table: one tool doing one operation on messages of one size. */
export interface ThroughputCell {
  tool: string;
  operation: string;
  sizeKb: number;
  perSecond: number;
  msPerMessage: number;
  iterations: number;
}

/**
 * Runs `run` once to warm up, then again and again for at least `seconds` and `minIterations`
 * runs; returns the rate. Shared by the crypto benchmarks.
 */
export async function throughput(
  run: () => unknown,
  seconds: number,
  minIterations: number,
): Promise<{ perSecond: number; msPerMessage: number; iterations: number; seconds: number }> {
  await run(); // warm-up (JIT, page cache, agents started)
  let iterations = 0;
  const started = process.hrtime.bigint();
  const deadline = started + BigInt(Math.round(seconds * 1e9));
  while (iterations < minIterations || process.hrtime.bigint() < deadline) {
    await run();
    iterations++;
  }
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    perSecond: iterations / elapsed,
    msPerMessage: (elapsed * 1000) / iterations,
    iterations,
    seconds: elapsed,
  };
}
