import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openMailboxStore } from '../directory/mailbox-store.ts';
import { dropRedisPrefix } from '../test/helpers/gateway-fixture.ts';
import { startGatewayProcess, writeConfig, type GatewayProcess } from '../test/helpers/gateway-process.ts';
import { testPki } from '../test/helpers/pki.ts';
import { measureFsync, type FsyncFigures } from './fsync.ts';
import type { LoadTarget } from './load.ts';
import { measureRun, type LoopDelay, type RunOptions, type RunResult } from './measure.ts';
import { startPostfix } from './postfix.ts';
import { summariseProfile, type ProfileSummary } from './profile.ts';
import { startSinkProcess, type SinkProcess } from './sink.ts';
import { fmt, formatTable, machineCpuSeconds, pidsOf, processCpuSeconds, threadSeconds } from './stats.ts';

/**
 * `npm run bench:gateway` (and the first part of `npm run bench`): end-to-end figures of a real gateway process (`courrier serve`) on loopback,
 * a CPU profile of it, the cost of the spool's fsyncs, and Postfix on the same load when it is
 * installed. Method and reference figures: docs/benchmarks.md.
 *
 * Tunables (environment): BENCH_MESSAGES (measured messages per size, default 3000),
 * BENCH_WARMUP (default 300), BENCH_SESSIONS (default 10), BENCH_SIZES (KB, default "10,100"),
 * BENCH_POSTFIX=0 to skip Postfix, BENCH_PROFILE=0 to skip the profiled run, BENCH_TMPFS=0 to skip
 * the diagnostic run with the spool in memory, BENCH_PROFILE_OUT=<file> to keep the gateway's
 * .cpuprofile.
 */
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 3000);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 300);
const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 10);
const SIZES = (process.env.BENCH_SIZES ?? '10,100').split(',').map((kb) => Number(kb) * 1024);
const WITH_POSTFIX = process.env.BENCH_POSTFIX !== '0';
const WITH_PROFILE = process.env.BENCH_PROFILE !== '0';
const WITH_TMPFS = process.env.BENCH_TMPFS !== '0';
const TARGET_PER_SECOND = 400;
const PROFILED_SIZE = 10 * 1024;
const SENDER = 'bench@courrier.test';
const PASSWORD = 'bench password, not a secret';
const RECIPIENT = 'dr.martin@cabinet.example';
const redisUrl = process.env.COURRIER_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

const progress = (line: string) => console.error(`bench: ${line}`);

/**
 * What to undo if the bench is interrupted (Ctrl-C): the gateway child, the Postfix instance (a
 * daemon: it would outlive the bench), the sink, Redis keys and temporary folders.
 */
const onInterrupt = new Set<() => Promise<unknown>>();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`${signal}: cleaning up`);
    void (async () => {
      for (const undo of [...onInterrupt].reverse()) await undo().catch(() => undefined);
      process.exit(130);
    })();
  });
}

interface Setup {
  dir: string;
  /** Redis prefixes used (one per gateway data folder), dropped at the end. */
  prefixes: string[];
  pki: ReturnType<typeof testPki>;
  sink: SinkProcess;
}

async function setUp(): Promise<Setup> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'courrier-bench-'));
  const pki = testPki();
  const tlsDir = path.join(dir, 'tls');
  fs.mkdirSync(tlsDir);
  fs.writeFileSync(path.join(tlsDir, 'ca.pem'), pki.ca.certPem);
  fs.writeFileSync(path.join(tlsDir, 'server.pem'), pki.server.certPem + pki.ca.certPem);
  fs.writeFileSync(path.join(tlsDir, 'server-key.pem'), pki.server.keyPem, { mode: 0o600 });
  const sink = await startSinkProcess({ key: pki.server.keyPem, cert: pki.server.certPem });
  return { dir, prefixes: [], pki, sink };
}

/**
 * A gateway config (production defaults except what a bench on loopback needs: ports, the route
 * to the sink, a Redis prefix of its own) with its data folder and the bench mailbox.
 */
async function gatewayConfig(setup: Setup, name: string, dataDir: string): Promise<string> {
  const prefix = `courrier-bench-${randomBytes(4).toString('hex')}`;
  setup.prefixes.push(prefix);
  const confDir = path.join(setup.dir, name);
  fs.mkdirSync(confDir);
  const tlsDir = path.join(setup.dir, 'tls');
  const configFile = writeConfig(confDir, {
    dataDir,
    hostname: 'gw.bench.test',
    localDomains: ['courrier.test'],
    redis: { url: redisUrl, prefix },
    tls: {
      certFile: path.join(tlsDir, 'server.pem'),
      keyFile: path.join(tlsDir, 'server-key.pem'),
      caFile: path.join(tlsDir, 'ca.pem'),
    },
    smtp: { submission: { port: 0 }, relay: { enabled: false } },
    delivery: { routes: { '*': { host: '127.0.0.1', port: setup.sink.port, tlsServername: 'localhost' } } },
    log: { level: 'info' },
  });
  fs.mkdirSync(dataDir, { recursive: true });
  const store = openMailboxStore(path.join(dataDir, 'directory.sqlite'));
  await store.add(SENDER, { password: PASSWORD });
  store.close();
  return configFile;
}

/** A tmpfs folder for the diagnostic run, if the machine has one. */
function tmpfsDir(): string | undefined {
  try {
    const mounts = fs.readFileSync('/proc/mounts', 'utf8');
    if (!/^\S+ \/dev\/shm tmpfs /m.test(mounts)) return undefined;
    return fs.mkdtempSync('/dev/shm/courrier-bench-');
  } catch {
    return undefined;
  }
}

/**
 * The gateway logs a JSON line per event on stdout (production level `info`). The helper parses
 * and keeps every line; during a bench that would be the client's CPU and memory, so after start
 * only warnings and errors are counted.
 */
function watchLog(gw: GatewayProcess): { warnings: number; errors: number; bytes: number } {
  const counts = { warnings: 0, errors: 0, bytes: 0 };
  gw.child.stdout!.removeAllListeners('data');
  gw.child.stdout!.on('data', (d: Buffer) => {
    counts.bytes += d.length;
    const text = d.toString('latin1');
    counts.warnings += text.split('"level":40').length - 1;
    counts.errors += text.split('"level":50').length - 1 + (text.split('"level":60').length - 1);
  });
  return counts;
}

const LOOP_PROBE = fileURLToPath(new URL('loop-probe.ts', import.meta.url));

/** Asks the gateway's loop probe for its figures since the last call ('start' only resets them). */
async function probeLoop(
  gw: GatewayProcess,
  file: string,
  edge: 'start' | 'end',
): Promise<LoopDelay | undefined> {
  const before = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').length : 0;
  gw.child.kill('SIGUSR2');
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n') : [];
    if (lines.length > before) return edge === 'end' ? (JSON.parse(lines.at(-2)!) as LoopDelay) : undefined;
  }
  return undefined;
}

const clientCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** Per-thread meters of the gateway, shown in their own table (keys start with THREAD). */
const THREAD = 'thread:';
function gatewayThreads(pid: number): Record<string, () => number | undefined> {
  return {
    [`${THREAD}main on CPU`]: () => threadSeconds(pid, 'main', 'running'),
    [`${THREAD}main waiting for a CPU`]: () => threadSeconds(pid, 'main', 'waiting'),
    [`${THREAD}libuv pool on CPU`]: () => threadSeconds(pid, 'libuv pool', 'running'),
    [`${THREAD}V8 helpers on CPU`]: () => threadSeconds(pid, 'V8 helpers', 'running'),
  };
}

function redisCpu(): () => number | undefined {
  const pids = pidsOf('redis-server');
  return () => (pids.length ? pids.reduce((a, p) => a + (processCpuSeconds(p) ?? 0), 0) : undefined);
}

/**
 * The load of every measured run, gateway or Postfix, so that their figures compare: the same
 * sessions, message counts, envelope and sink, and the same wait for the last deliveries.
 */
function sameLoad(setup: Setup, size: number): Omit<RunOptions, 'label' | 'target' | 'cpu' | 'onWindow'> {
  return {
    sink: setup.sink,
    sessions: SESSIONS,
    size,
    warmup: WARMUP,
    count: MESSAGES,
    from: SENDER,
    to: RECIPIENT,
    drainTimeoutMs: 180_000,
    progress,
  };
}

/** CPU meters of every run besides its server's: this process (the load client), the sink, Redis. */
function loadCpu(setup: Setup): RunOptions['cpu'] {
  return { client: clientCpu, sink: () => processCpuSeconds(setup.sink.pid), redis: redisCpu() };
}

async function runGateway(
  setup: Setup,
  configFile: string,
  sizes: number[],
  opts: { label: string; nodeOptions?: string },
): Promise<{ results: RunResult[]; log: { warnings: number; errors: number; bytes: number } }> {
  // The gateway inherits the bench's environment: preload the event-loop probe (and the profiler).
  const probeFile = path.join(path.dirname(configFile), `loop-delay-${Date.now()}.jsonl`);
  const saved = { options: process.env.NODE_OPTIONS, probe: process.env.BENCH_LOOP_PROBE_FILE };
  process.env.NODE_OPTIONS = [saved.options, `--import=${LOOP_PROBE}`, opts.nodeOptions]
    .filter(Boolean)
    .join(' ');
  process.env.BENCH_LOOP_PROBE_FILE = probeFile;
  let gw: GatewayProcess;
  try {
    gw = await startGatewayProcess(configFile);
  } finally {
    for (const [name, value] of [
      ['NODE_OPTIONS', saved.options],
      ['BENCH_LOOP_PROBE_FILE', saved.probe],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
  const log = watchLog(gw);
  const results: RunResult[] = [];
  const killGateway = () => gw.kill('SIGKILL');
  onInterrupt.add(killGateway);
  try {
    const target: LoadTarget = {
      port: gw.ports.submission!,
      ca: setup.pki.ca.certPem,
      auth: { user: SENDER, pass: PASSWORD },
    };
    for (const size of sizes) {
      progress(
        `${opts.label}, ${size / 1024} KB: ${WARMUP} warm-up + ${MESSAGES} messages, ${SESSIONS} sessions`,
      );
      results.push(
        await measureRun({
          ...sameLoad(setup, size),
          label: opts.label,
          target,
          cpu: {
            server: () => processCpuSeconds(gw.child.pid!),
            ...loadCpu(setup),
            ...gatewayThreads(gw.child.pid!),
          },
          onWindow: (edge) => probeLoop(gw, probeFile, edge),
        }),
      );
    }
  } finally {
    // SIGTERM: orderly stop, and the CPU profile (if any) is written at exit.
    const stopped = await Promise.race([
      gw.kill('SIGTERM'),
      new Promise((r) => setTimeout(() => r('timeout'), 30_000)),
    ]);
    if (stopped === 'timeout') await gw.kill('SIGKILL');
    onInterrupt.delete(killGateway);
  }
  return { results, log };
}

async function runPostfix(setup: Setup, sizes: number[]): Promise<{ results: RunResult[]; note: string }> {
  const setupResult = await startPostfix({
    sinkPort: setup.sink.port,
    cert: setup.pki.server.certPem,
    key: setup.pki.server.keyPem,
    ca: setup.pki.ca.certPem,
  });
  if (!setupResult.ok) return { results: [], note: `postfix: ${setupResult.reason}` };
  const pf = setupResult.instance;
  const results: RunResult[] = [];
  const stopPostfix = () => pf.stop();
  onInterrupt.add(stopPostfix);
  try {
    for (const size of sizes) {
      progress(`postfix ${pf.version}, ${size / 1024} KB: ${WARMUP} warm-up + ${MESSAGES} messages`);
      results.push(
        await measureRun({
          ...sameLoad(setup, size),
          label: `postfix ${pf.version}`,
          target: { port: pf.port, ca: setup.pki.ca.certPem },
          cpu: { server: () => pf.cpuSeconds(), ...loadCpu(setup) },
        }),
      );
    }
  } finally {
    onInterrupt.delete(stopPostfix);
    await pf.stop();
  }
  return {
    results,
    note:
      `postfix ${pf.version}: private instance (postfix -c), STARTTLS required, relayhost = the same sink ` +
      'over verified TLS with connection reuse; relays for mynetworks = 127.0.0.0/8 WITHOUT AUTH ' +
      '(the gateway requires AUTH PLAIN), no Redis, fsyncs its queue file before the 250 like the gateway.',
  };
}

function resultTable(results: RunResult[]): string {
  const rows = [
    [
      'server',
      'size',
      'accepted',
      'acc msg/s',
      'ack p50 ms',
      'ack p99 ms',
      'delivered',
      'e2e msg/s',
      'e2e p50 ms',
      'e2e p99 ms',
    ],
  ];
  for (const r of results) {
    rows.push([
      r.label,
      `${r.size / 1024} KB`,
      `${r.accepted}/${r.sent}`,
      fmt(r.acceptedPerSecond, 0),
      fmt(r.ackP50),
      fmt(r.ackP99),
      `${r.delivered}`,
      fmt(r.deliveredPerSecond, 0),
      fmt(r.e2eP50),
      fmt(r.e2eP99),
    ]);
  }
  return formatTable(rows);
}

function threadTable(results: RunResult[]): string {
  const kinds = [...new Set(results.flatMap((r) => Object.keys(r.cpu)))].filter((g) => g.startsWith(THREAD));
  const rows = [
    ['server', 'size', ...kinds.map((k) => k.slice(THREAD.length)), 'loop delay p50 ms', 'p99 ms'],
  ];
  for (const r of results) {
    if (!kinds.some((k) => k in r.cpu)) continue;
    rows.push([
      r.label,
      `${r.size / 1024} KB`,
      ...kinds.map((k) => fmt(r.cpu[k] ?? NaN, 2)),
      fmt(r.loopDelay?.p50 ?? NaN),
      fmt(r.loopDelay?.p99 ?? NaN),
    ]);
  }
  return formatTable(rows);
}

/** Cores used by processes that are not part of the run (another bench or test suite). */
function otherCores(r: RunResult): number {
  const ours = Object.entries(r.cpu)
    .filter(([g, v]) => !g.startsWith(THREAD) && Number.isFinite(v))
    .reduce((a, [, v]) => a + v, 0);
  return Math.max(0, r.machineBusy * os.cpus().length - ours);
}

function cpuTable(results: RunResult[]): string {
  const groups = [...new Set(results.flatMap((r) => Object.keys(r.cpu)))].filter(
    (g) => !g.startsWith(THREAD),
  );
  // Steal (CPU the hypervisor gave to other guests) only shows where the hypervisor reports it.
  const steal = results.some((r) => r.machineSteal > 0.005);
  const rows = [
    [
      'server',
      'size',
      ...groups.map((g) => `${g} cores`),
      'other processes',
      'machine busy',
      ...(steal ? ['stolen'] : []),
      'server ms CPU/msg',
    ],
  ];
  for (const r of results) {
    const seconds = (r.window.end - r.window.start) / 1000;
    rows.push([
      r.label,
      `${r.size / 1024} KB`,
      ...groups.map((g) => fmt(r.cpu[g] ?? NaN, 2)),
      fmt(otherCores(r), 2),
      `${fmt(r.machineBusy * 100, 0)} %`,
      ...(steal ? [`${fmt(r.machineSteal * 100, 0)} %`] : []),
      fmt((((r.cpu.server ?? NaN) * seconds) / r.accepted) * 1000, 2),
    ]);
  }
  return formatTable(rows);
}

function profileText(p: ProfileSummary, run: RunResult): string {
  const pct = (ms: number) => `${fmt((ms / p.busyMs) * 100)} %`;
  const perMsg = (ms: number) => fmt((ms / run.accepted) * 1000, 0);
  const lines = [
    `gateway main thread, ${run.size / 1024} KB run: busy ${fmt(p.busyMs / 1000, 2)} s of a ${fmt(p.windowMs / 1000, 2)} s ` +
      `window (${fmt((p.busyMs / p.windowMs) * 100, 0)} % of one core), ${fmt(p.busyMs / run.accepted, 2)} ms per message`,
    '',
    formatTable([
      ['by pipeline stage (innermost frame that tells)', 'ms', 'share', 'µs/msg'],
      ...p.stages.map((l) => [l.name, fmt(l.ms, 0), pct(l.ms), perMsg(l.ms)]),
    ]),
    '',
    formatTable([
      ['by layer (self time)', 'ms', 'share', 'µs/msg'],
      ...p.layers.slice(0, 14).map((l) => [l.name, fmt(l.ms, 0), pct(l.ms), perMsg(l.ms)]),
    ]),
    '',
    formatTable([
      ['by component (innermost library or courrier frame)', 'ms', 'share', 'µs/msg'],
      ...p.components.slice(0, 12).map((c) => [c.name, fmt(c.ms, 0), pct(c.ms), perMsg(c.ms)]),
    ]),
    '',
    formatTable([
      ['top functions (self time)', 'where', 'ms', 'share', 'mostly via'],
      ...p.topFunctions.map((f) => [f.name, f.where, fmt(f.ms, 0), pct(f.ms), f.via]),
    ]),
  ];
  return lines.join('\n');
}

function fsyncText(f: FsyncFigures): string {
  const ms = (x: { p50: number; p99: number }) => [fmt(x.p50, 2), fmt(x.p99, 2)];
  const spool = formatTable([
    ['spool operation (same disk as the gateway spool)', 'p50 ms', 'p99 ms', 'msg/s'],
    [`fsync of a ${f.size / 1024} KB message file`, ...ms(f.fsyncMessage), ''],
    ['fdatasync of the envelope file', ...ms(f.fdatasyncEnvelope), ''],
    ['fsync of the queue folder', ...ms(f.fsyncDir), ''],
    ['spool receive + commit, one at a time', ...ms(f.spoolSerial), fmt(1000 / f.spoolSerial.p50, 0)],
    [
      `spool receive + commit, ${f.spoolParallel.parallel} at once (thread pool ${f.threadPool})`,
      ...ms(f.spoolParallel),
      fmt(f.spoolParallel.perSecond, 0),
    ],
    [
      `same file operations without fsync, ${f.spoolParallel.parallel} at once`,
      fmt(f.noSync.p50, 2),
      '',
      fmt(f.noSync.perSecond, 0),
    ],
  ]);
  const b = f.bookkeeping;
  const bookkeeping = formatTable([
    ['delivery bookkeeping per message (instant next hop)', 'ms', 'sync fs ms', 'sync fs calls'],
    ...(
      [
        ['idle disk', b.idle],
        [`while ${f.spoolParallel.parallel} spool commits run`, b.underLoad],
      ] as const
    ).map(([what, x]) => [
      what,
      fmt(x.msPerMessage, 2),
      fmt(x.syncFsMsPerMessage, 2),
      fmt(x.syncFsCallsPerMessage, 0),
    ]),
  ]);
  const calls = b.idle.byFunction.map((c) => `${c.name} ${fmt(c.calls, 0)}× ${fmt(c.ms, 2)} ms`).join(', ');
  return `${spool}\n\n${bookkeeping}\nsync fs calls per message (idle disk): ${calls}`;
}

/** How busy the machine is before we start (other work skews every figure). */
async function idleCheck(): Promise<number> {
  const a = machineCpuSeconds();
  await new Promise((r) => setTimeout(r, 1000));
  const b = machineCpuSeconds();
  return a && b ? (b.busy - a.busy) / (b.total - a.total) : 0;
}

async function main(): Promise<void> {
  const began = Date.now();
  const busy = await idleCheck();
  const warnings: string[] = [];
  if (busy > 0.15) {
    warnings.push(
      `the machine was ${fmt(busy * 100, 0)} % busy before the bench started (another test run?): figures are low`,
    );
    progress(warnings.at(-1)!);
  }
  const setup = await setUp();
  const results: RunResult[] = [];
  let profile: { summary: ProfileSummary; run: RunResult } | undefined;
  let fsyncFigures: FsyncFigures | undefined;
  let postfixNote: string | undefined;
  let shm: string | undefined;
  const cleanUp = async () => {
    await setup.sink.close();
    for (const prefix of setup.prefixes) await dropRedisPrefix(redisUrl, prefix);
    fs.rmSync(setup.dir, { recursive: true, force: true });
    if (shm) fs.rmSync(shm, { recursive: true, force: true });
  };
  onInterrupt.add(cleanUp);
  try {
    const configFile = await gatewayConfig(setup, 'gateway', path.join(setup.dir, 'data'));
    const plain = await runGateway(setup, configFile, SIZES, { label: 'courrier' });
    results.push(...plain.results);
    progress(
      `gateway log: ${fmt(plain.log.bytes / 1e6)} MB, ${plain.log.warnings} warnings, ${plain.log.errors} errors`,
    );

    if (WITH_PROFILE) {
      const profDir = path.join(setup.dir, 'profile');
      const profiled = await runGateway(setup, configFile, [PROFILED_SIZE], {
        label: 'courrier --cpu-prof',
        nodeOptions: `--cpu-prof --cpu-prof-dir=${profDir}`,
      });
      const run = profiled.results[0]!;
      results.push(run);
      const summary = summariseProfile(profDir, run.window);
      profile = { summary, run };
      if (process.env.BENCH_PROFILE_OUT) {
        fs.copyFileSync(summary.file, process.env.BENCH_PROFILE_OUT);
        progress(`CPU profile kept as ${process.env.BENCH_PROFILE_OUT} (open it in Chrome DevTools)`);
      }
    }

    // The same gateway with its data folder in memory: what the file system costs here. Not a
    // configuration anyone should run (nothing survives a reboot): a diagnostic.
    shm = WITH_TMPFS ? tmpfsDir() : undefined;
    if (shm) {
      const tmpfsConfig = await gatewayConfig(setup, 'gateway-tmpfs', path.join(shm, 'data'));
      const run = await runGateway(setup, tmpfsConfig, [10 * 1024], { label: 'courrier, spool on tmpfs' });
      results.push(...run.results);
    }

    progress('fsync and spool micro-benchmark');
    fsyncFigures = await measureFsync(path.join(setup.dir, 'fsync'), {
      size: 10 * 1024,
      count: 1000,
      parallel: SESSIONS,
    });

    if (WITH_POSTFIX) {
      const pf = await runPostfix(setup, SIZES);
      results.push(...pf.results);
      postfixNote = pf.note;
    } else {
      postfixNote = 'postfix: skipped (BENCH_POSTFIX=0)';
    }
  } finally {
    onInterrupt.delete(cleanUp);
    await cleanUp();
  }

  const cpu = os.cpus();
  console.log(
    `\nCourrier bench, ${new Date().toISOString()}: ${cpu.length} × ${cpu[0]?.model.trim() ?? 'cpu'}, ` +
      `Node ${process.versions.node}, Linux ${os.release()}`,
  );
  console.log(
    `${SESSIONS} sessions (STARTTLS + AUTH once each, MAIL/RCPT/DATA pipelined), ${MESSAGES} messages per ` +
      `size after ${WARMUP} warm-up; ack = final dot → 250; e2e = MAIL FROM → arrival at the sink\n`,
  );
  console.log(resultTable(results));
  console.log('\nCPU while the measured messages were submitted and delivered (1.00 = one core):');
  console.log(cpuTable(results));
  console.log('\nGateway threads over the same window (cores; "waiting" = runnable but not running):');
  console.log(threadTable(results));
  const tenKb = results.find((r) => r.label === 'courrier' && r.size === 10 * 1024);
  if (tenKb) {
    const verdict = tenKb.acceptedPerSecond >= TARGET_PER_SECOND ? 'met' : 'MISSED';
    console.log(
      `\ntarget ${TARGET_PER_SECOND} msg/s at 10 KB: ${verdict} (${fmt(tenKb.acceptedPerSecond, 0)} accepted/s, ` +
        `${fmt(tenKb.deliveredPerSecond, 0)} delivered/s)`,
    );
  }
  if (postfixNote) console.log(`\n${postfixNote}`);
  if (profile)
    console.log(`\nWhere the time goes (CPU profile):\n${profileText(profile.summary, profile.run)}`);
  if (fsyncFigures) console.log(`\nWhat durability costs:\n${fsyncText(fsyncFigures)}`);
  for (const r of results) {
    const others = otherCores(r);
    if (others > 0.2) {
      warnings.push(
        `other processes used ${fmt(others, 2)} cores during "${r.label}" ${r.size / 1024} KB: its figures are low`,
      );
    }
  }
  for (const w of warnings) console.log(`\nwarning: ${w}`);
  console.log(`\nbench took ${Math.round((Date.now() - began) / 1000)} s`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
