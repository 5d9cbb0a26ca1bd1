import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Summarises a V8 CPU profile (`node --cpu-prof`) of the gateway's main thread over a time
 * window: top functions by self time, self time by layer (what the CPU was doing: TLS, streams,
 * JSON, GC...) and by component (whose code asked for it: smtp-server, nodemailer, BullMQ...).
 *
 * Only the main JavaScript thread is sampled: fsync, file writes and other libuv thread-pool
 * work are not in the profile (their cost is latency, measured by bench/fsync.ts), nor is Redis.
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  /** Length of the window, ms. */
  windowMs: number;
  /** Time the main thread was not idle, ms. */
  busyMs: number;
  /** With the innermost library or courrier function that led there most often. */
  topFunctions: Array<{ name: string; where: string; ms: number; via: string }>;
  layers: Array<{ name: string; ms: number }>;
  components: Array<{ name: string; ms: number }>;
  /** Ingress (SMTP in, spool commit, enqueue) versus delivery (worker, bookkeeping, SMTP out). */
  stages: Array<{ name: string; ms: number }>;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Dependencies grouped as the component they belong to. */
const PACKAGE_GROUPS: Array<[RegExp, string]> = [
  [/^smtp-server$/, 'smtp-server (ingress)'],
  [/^nodemailer$/, 'nodemailer (delivery)'],
  [
    /^(bullmq|ioredis|@ioredis\/.*|cluster-key-slot|denque|redis-errors|redis-parser|standard-as-callback|msgpackr|cron-parser|luxon)$/,
    'BullMQ / ioredis',
  ],
  [
    /^(pino|pino-std-serializers|sonic-boom|thread-stream|fast-redact|@pinojs\/.*|quick-format-unescaped|atomic-sleep|on-exit-leak-free|safe-stable-stringify)$/,
    'pino (logging)',
  ],
];

function packageOf(url: string): string | undefined {
  const i = url.lastIndexOf('/node_modules/');
  if (i < 0) return undefined;
  const parts = url.slice(i + '/node_modules/'.length).split('/');
  return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
}

function componentOf(frame: CallFrame): string | undefined {
  const pkg = packageOf(frame.url);
  if (pkg) return PACKAGE_GROUPS.find(([re]) => re.test(pkg))?.[1] ?? `other dependency (${pkg})`;
  const file = frame.url.startsWith('file://') ? fileURLToPath(frame.url) : '';
  if (file.startsWith(ROOT)) return `courrier ${path.relative(ROOT, file).split(path.sep)[0]}/`;
  return undefined;
}

/** What kind of work a frame is, for the layer view; undefined: look at the caller. */
function layerOf(frame: CallFrame): string | undefined {
  const { functionName: name, url } = frame;
  if (name === '(garbage collector)') return 'GC';
  if (name === '(program)') return 'native, no JS on the stack (TLS decrypt, libuv, syscalls)';
  if (url === '' && (name === 'stringify' || name === 'parse')) return 'JSON';
  if (/^node:(_tls_|tls$|internal\/tls\/)/.test(url)) return 'node:tls';
  if (/^node:(internal\/crypto\/|crypto$)/.test(url)) return 'node:crypto';
  if (/^node:(internal\/)?fs/.test(url)) return 'fs (main-thread part)';
  if (/^node:(net$|internal\/stream_base_commons$|internal\/net$)/.test(url))
    return 'socket read/write (incl. TLS encrypt)';
  if (/^node:internal\/(streams|webstreams)\//.test(url) || url === 'node:stream') return 'node streams';
  if (/^node:internal\/(process\/task_queues|timers|async_hooks)$/.test(url) || url === 'node:timers')
    return 'event loop, promises, timers';
  if (url === '' && /^(RegExp|exec|test|replace|split|match)/.test(name)) return 'regular expressions';
  const component = componentOf(frame);
  if (component) return component;
  return undefined;
}

const INGRESS = 'ingress: SMTP session, spool receive + commit, enqueue';
const DELIVERY = 'delivery: BullMQ worker, spool bookkeeping, nodemailer';
const SPOOL_INGRESS = new Set(['receive', 'commit', 'writeDurably', 'fsyncDir', 'newId', 'count', 'discard']);

/** Which half of the pipeline a frame works for; undefined: look at the caller. */
function stageOf(frame: CallFrame): string | undefined {
  const pkg = packageOf(frame.url);
  if (pkg === 'smtp-server') return INGRESS;
  if (pkg === 'nodemailer') return DELIVERY;
  if (pkg === 'bullmq') {
    if (/\/classes\/worker\.js$/.test(frame.url)) return DELIVERY;
    if (/\/classes\/(queue|job)\.js$/.test(frame.url) && frame.functionName.startsWith('add')) return INGRESS;
    return undefined;
  }
  if (pkg || !frame.url.startsWith('file://')) return undefined;
  const file = path.relative(ROOT, fileURLToPath(frame.url));
  if (/^gateway\/smtp-(ingress|replies)\.ts$/.test(file)) return INGRESS;
  if (/^(queue\/(process-message|delivery-queue)|gateway\/(delivery|dsn|local-delivery))\.ts$/.test(file))
    return DELIVERY;
  if (file === 'queue/spool.ts') return SPOOL_INGRESS.has(frame.functionName) ? INGRESS : DELIVERY;
  return undefined;
}

function shortWhere(frame: CallFrame): string {
  const pkg = packageOf(frame.url);
  const line = frame.lineNumber >= 0 ? `:${frame.lineNumber + 1}` : '';
  if (pkg) {
    const rest = frame.url.slice(frame.url.lastIndexOf('/node_modules/') + '/node_modules/'.length);
    return `${rest.replace(/^(@[^/]+\/)?[^/]+\/(dist\/(cjs|esm)\/|lib\/)?/, `${pkg}/`)}${line}`;
  }
  if (frame.url.startsWith('file://')) return `${path.relative(ROOT, fileURLToPath(frame.url))}${line}`;
  return frame.url ? `${frame.url}${line}` : '(native)';
}

const sortedEntries = (m: Map<string, number>) =>
  [...m].map(([name, ms]) => ({ name, ms })).sort((a, b) => b.ms - a.ms);

/** Summarises the newest profile in `dir` over [startMs, endMs] (nowMs clock). */
export function summariseProfile(
  dir: string,
  window: { start: number; end: number },
): ProfileSummary & { file: string } {
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => path.join(dir, f));
  if (files.length === 0) throw new Error(`no .cpuprofile in ${dir}`);
  const newest = files.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0]!;
  const profile = JSON.parse(fs.readFileSync(newest, 'utf8')) as CpuProfile;

  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const from = window.start * 1000;
  const to = window.end * 1000;
  const self = new Map<string, { frame: CallFrame; us: number; via: Map<string, number> }>();
  const layers = new Map<string, number>();
  const components = new Map<string, number>();
  const stages = new Map<string, number>();
  let busyUs = 0;
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    // A sample stands for the time until the next one.
    const us = profile.timeDeltas[i + 1] ?? 0;
    if (t < from || t > to) continue;
    const leaf = byId.get(profile.samples[i]!)!;
    const name = leaf.callFrame.functionName;
    if (name === '(idle)' || name === '(root)') continue;
    busyUs += us;
    const key = `${name}\u0000${leaf.callFrame.url}\u0000${leaf.callFrame.lineNumber}`;
    const entry = self.get(key) ?? { frame: leaf.callFrame, us: 0, via: new Map<string, number>() };
    entry.us += us;
    self.set(key, entry);

    let layer: string | undefined;
    let component: string | undefined;
    let via: string | undefined;
    let stage: string | undefined;
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const frame = byId.get(id)!.callFrame;
      layer ??= layerOf(frame);
      stage ??= stageOf(frame);
      if (!component) {
        component = componentOf(frame);
        if (component) via = `${frame.functionName || '(anonymous)'} ${shortWhere(frame)}`;
      }
      if (layer && component && stage) break;
    }
    stage ??=
      name === '(garbage collector)'
        ? 'GC'
        : 'not attributable: socket and TLS callbacks, Redis replies, timers';
    stages.set(stage, (stages.get(stage) ?? 0) + us / 1000);
    if (via) entry.via.set(via, (entry.via.get(via) ?? 0) + us);
    layer ??= 'other node internals';
    component ??=
      name === '(garbage collector)'
        ? 'GC'
        : name === '(program)'
          ? 'native (no JS frame)'
          : 'node internals';
    layers.set(layer, (layers.get(layer) ?? 0) + us / 1000);
    components.set(component, (components.get(component) ?? 0) + us / 1000);
  }
  return {
    file: newest,
    windowMs: (to - from) / 1000,
    busyMs: busyUs / 1000,
    topFunctions: [...self.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, 15)
      .map((e) => {
        const [via, viaUs] = [...e.via].sort((a, b) => b[1] - a[1])[0] ?? ['', 0];
        return {
          name: e.frame.functionName || '(anonymous)',
          where: shortWhere(e.frame),
          ms: e.us / 1000,
          via: via ? `${via} (${Math.round((viaUs / e.us) * 100)} %)` : '',
        };
      }),
    layers: sortedEntries(layers),
    components: sortedEntries(components),
    stages: sortedEntries(stages),
  };
}
