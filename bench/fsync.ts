import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { processMessage, type QueueLogger } from '../queue/process-message.ts';
import { openSpool, type Spool } from '../queue/spool.ts';
import type { Deliverer, Envelope } from '../queue/types.ts';
import { ascending, nowMs, percentile } from './stats.ts';

/**
 * What the spool's durability costs on this disk, apart from SMTP, TLS and Redis:
 * - each fsync on its own (serial, so nothing is batched by the journal);
 * - the spool's real receive + commit of a message (3 fsyncs: message, envelope, queue folder),
 *   one at a time and with `parallel` at once (like the SMTP sessions);
 * - the same file operations without any fsync (what the durability adds).
 */
export interface FsyncFigures {
  size: number;
  /** ms per call, serial. */
  fsyncMessage: { p50: number; p99: number };
  fdatasyncEnvelope: { p50: number; p99: number };
  fsyncDir: { p50: number; p99: number };
  /** The spool's receive + commit, ms per message one at a time, and messages/s with `parallel`. */
  spoolSerial: { p50: number; p99: number };
  spoolParallel: { parallel: number; perSecond: number; p50: number; p99: number };
  /** The same file operations without fsync, `parallel` at once. */
  noSync: { perSecond: number; p50: number };
  /** libuv thread pool size the figures were taken with. */
  threadPool: number;
  /** The delivery worker's spool bookkeeping per message (see measureBookkeeping). */
  bookkeeping: { idle: Bookkeeping; underLoad: Bookkeeping };
}

/**
 * One delivery run's spool work as the worker does it (lock, processMessage with a next hop that
 * accepts at once, unlock), per message: wall time, and the part spent in synchronous fs calls,
 * which block the event loop (SMTP sessions included) while they run.
 */
export interface Bookkeeping {
  msPerMessage: number;
  syncFsMsPerMessage: number;
  syncFsCallsPerMessage: number;
  /** Per fs function: calls and ms per message, most expensive first. */
  byFunction: Array<{ name: string; calls: number; ms: number }>;
}

const p = (values: number[]) => {
  const s = ascending(values);
  return { p50: percentile(s, 50), p99: percentile(s, 99) };
};

async function timed(n: number, fn: (i: number) => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = nowMs();
    await fn(i);
    out.push(nowMs() - t);
  }
  return out;
}

/** Runs `count` calls of fn, at most `parallel` at a time; returns each call's time and the total. */
async function parallelTimed(
  count: number,
  parallel: number,
  fn: (i: number) => Promise<void>,
): Promise<{ times: number[]; totalMs: number }> {
  const times: number[] = [];
  let next = 0;
  const start = nowMs();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        const i = next++;
        const t = nowMs();
        await fn(i);
        times.push(nowMs() - t);
      }
    }),
  );
  return { times, totalMs: nowMs() - start };
}

export async function measureFsync(
  dir: string,
  opts: { size: number; count: number; parallel: number },
): Promise<FsyncFigures> {
  const message = Buffer.alloc(opts.size, 'x');
  const envelope = JSON.stringify({
    id: 'x'.repeat(19),
    mailFrom: 'a@b.example',
    recipients: [{ address: 'c@d.example' }],
  });
  const raw = path.join(dir, 'raw');
  await fsp.mkdir(raw, { recursive: true });

  const syncTimes = { msg: [] as number[], env: [] as number[], dir: [] as number[] };
  for (let i = 0; i < Math.min(opts.count, 300); i++) {
    const m = await fsp.open(path.join(raw, `${i}.eml`), 'wx', 0o600);
    await m.writeFile(message);
    let t = nowMs();
    await m.sync();
    syncTimes.msg.push(nowMs() - t);
    await m.close();
    const e = await fsp.open(path.join(raw, `${i}.env`), 'wx', 0o600);
    await e.writeFile(envelope);
    t = nowMs();
    await e.datasync();
    syncTimes.env.push(nowMs() - t);
    await e.close();
    const d = await fsp.open(raw, 'r');
    t = nowMs();
    await d.sync();
    syncTimes.dir.push(nowMs() - t);
    await d.close();
  }

  const spool = await openSpool(path.join(dir, 'spool'));
  const oneMessage = async () => {
    await spoolOne(spool, message);
  };
  const serial = await timed(Math.min(opts.count, 300), oneMessage);
  const par = await parallelTimed(opts.count, opts.parallel, oneMessage);

  // The spool's file operations (stream the message, write the envelope, two renames) without fsync.
  const plain = path.join(dir, 'nosync');
  for (const d of ['tmp', 'queue']) await fsp.mkdir(path.join(plain, d), { recursive: true });
  const noSync = await parallelTimed(opts.count, opts.parallel, async (i) => {
    const tmp = path.join(plain, 'tmp', `${i}`);
    const out = fs.createWriteStream(`${tmp}.eml`, { flags: 'wx', mode: 0o600 });
    await new Promise<void>((resolve, reject) => {
      out.once('error', reject);
      out.end(message, () => resolve());
    });
    await fsp.writeFile(`${tmp}.env`, envelope, { flag: 'wx', mode: 0o600 });
    await fsp.rename(`${tmp}.eml`, path.join(plain, 'queue', `${i}.eml`));
    await fsp.rename(`${tmp}.env`, path.join(plain, 'queue', `${i}.env`));
  });

  const bookkeeping = await measureBookkeeping(path.join(dir, 'bookkeeping'), {
    count: Math.min(opts.count, 500),
    parallel: opts.parallel,
    message,
  });

  return {
    size: opts.size,
    bookkeeping,
    fsyncMessage: p(syncTimes.msg),
    fdatasyncEnvelope: p(syncTimes.env),
    fsyncDir: p(syncTimes.dir),
    spoolSerial: p(serial),
    spoolParallel: {
      parallel: opts.parallel,
      perSecond: opts.count / (par.totalMs / 1000),
      ...p(par.times),
    },
    noSync: { perSecond: opts.count / (noSync.totalMs / 1000), p50: p(noSync.times).p50 },
    threadPool: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
  };
}

const silent: QueueLogger = {
  info: () => {},
  warn: () => {},
  error: () => {},
  debug: () => {},
  child: () => silent,
};

/** A next hop that takes everything at once: what is left is the spool's bookkeeping. */
const instantDeliverer: Deliverer = {
  deliver: async (request) =>
    request.recipients.map((r) => ({
      address: r.address,
      result: 'delivered' as const,
      reply: '250 2.0.0 Ok: queued as BENCH',
      status: '2.0.0',
      remoteMta: '127.0.0.1',
    })),
  close: async () => {},
};

/** Times every synchronous fs call made while `fn` runs (spool.ts calls them as fs.<name>Sync). */
async function withSyncFsTimer<T>(
  fn: () => Promise<T>,
): Promise<{ result: T; ms: number; calls: number; byFunction: Map<string, { calls: number; ms: number }> }> {
  const target = fs as unknown as Record<string, unknown>;
  const saved = new Map<string, (...args: unknown[]) => unknown>();
  let ms = 0;
  let calls = 0;
  let depth = 0;
  const byFunction = new Map<string, { calls: number; ms: number }>();
  for (const name of Object.keys(fs)) {
    const original = target[name];
    if (!name.endsWith('Sync') || typeof original !== 'function') continue;
    saved.set(name, original as (...args: unknown[]) => unknown);
    target[name] = function timed(this: unknown, ...args: unknown[]) {
      // Some fs functions call others through the module object: count the outer call only.
      if (depth > 0) return (original as (...a: unknown[]) => unknown).apply(this, args);
      depth++;
      const t = nowMs();
      try {
        return (original as (...a: unknown[]) => unknown).apply(this, args);
      } finally {
        depth--;
        const spent = nowMs() - t;
        ms += spent;
        calls++;
        const f = byFunction.get(name) ?? { calls: 0, ms: 0 };
        f.calls++;
        f.ms += spent;
        byFunction.set(name, f);
      }
    };
  }
  try {
    return { result: await fn(), ms, calls, byFunction };
  } finally {
    for (const [name, original] of saved) target[name] = original;
  }
}

/** Receives and commits one message as an authenticated submission would; returns its spool id. */
async function spoolOne(spool: Spool, message: Buffer): Promise<string> {
  const id = spool.newId();
  await spool.receive(
    id,
    (async function* one() {
      yield message;
    })(),
  );
  const envelope: Envelope = {
    id,
    mailFrom: 'bench@courrier.test',
    recipients: [{ address: 'dr.martin@cabinet.example' }],
    receivedAt: Date.now(),
    size: message.length,
    source: { listener: 'submission', clientIp: '127.0.0.1', tls: true, user: 'bench@courrier.test' },
  };
  await spool.commit(envelope);
  return id;
}

async function committed(spool: Spool, message: Buffer, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push(await spoolOne(spool, message));
  return ids;
}

/**
 * The worker's bookkeeping for `count` messages, one after the other, on an idle disk and while
 * `parallel` spool commits run (what the SMTP sessions make the disk do during the bench).
 */
async function measureBookkeeping(
  dir: string,
  opts: { count: number; parallel: number; message: Buffer },
): Promise<{ idle: Bookkeeping; underLoad: Bookkeeping }> {
  const spool = await openSpool(dir);
  const deps = {
    spool,
    deliverer: instantDeliverer,
    notifier: { report: async () => {} },
    retry: {
      firstDelay: 300_000,
      maxDelay: 14_400_000,
      giveUpAfter: 432_000_000,
      delayWarningAfter: 14_400_000,
    },
    logger: silent,
    now: Date.now,
  };
  const run = async (ids: string[]): Promise<Bookkeeping> => {
    const start = nowMs();
    const { ms, calls, byFunction } = await withSyncFsTimer(async () => {
      for (const id of ids) {
        if (!spool.tryLock(id)) throw new Error(`bench: spool lock of ${id} taken`);
        try {
          await processMessage(id, deps);
        } finally {
          spool.unlock(id);
        }
      }
    });
    return {
      msPerMessage: (nowMs() - start) / ids.length,
      syncFsMsPerMessage: ms / ids.length,
      syncFsCallsPerMessage: calls / ids.length,
      byFunction: [...byFunction]
        .map(([name, f]) => ({ name, calls: f.calls / ids.length, ms: f.ms / ids.length }))
        .sort((a, b) => b.ms - a.ms),
    };
  };
  const idle = await run(await committed(spool, opts.message, opts.count));
  const ids = await committed(spool, opts.message, opts.count);
  let loading = true;
  const load = Promise.all(
    Array.from({ length: opts.parallel }, async () => {
      while (loading) await committed(spool, opts.message, 1);
    }),
  );
  const underLoad = await run(ids);
  loading = false;
  await load;
  return { idle, underLoad };
}
