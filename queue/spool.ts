import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Envelope, FinishedRecord, MessageControl, MessageState } from './types.ts';

/**
 * The spool is the source of truth for every accepted message; Redis only indexes it.
 *
 * Layout under `dir`:
 *   tmp/<id>.eml, tmp/<id>.env   being received (deleted at start-up when stale)
 *   queue/<id>.eml               the message, RFC 5322 with CRLF line endings
 *   queue/<id>.env               the envelope: its presence is the commit point of acceptance
 *   queue/<id>.state             per-recipient delivery state (absent before the first attempt)
 *   queue/<id>.ctl               admin decisions (hold, purge)
 *   done/<id>.json               tracking record of a finished message (no message bytes)
 *
 * Durability: message and envelope are fsynced, then renamed into queue/ (envelope last), then the
 * directory is fsynced, all before the SMTP 250. State files are replaced by write + rename: that
 * survives a killed process at any point; after a power loss an attempt may be repeated (a delivery
 * at least once), but an accepted message is never lost.
 */
export interface Spool {
  readonly dir: string;
  newId(): string;
  /** Streams the message into tmp/ and fsyncs it. Returns its size in bytes. */
  receive(id: string, source: Readable | AsyncIterable<Buffer>): Promise<number>;
  /** Makes a received message durable and visible to the queue (the 250 may follow). */
  commit(envelope: Envelope): Promise<void>;
  /** Removes a message that must not be delivered (from tmp/ or, before its 250, from queue/). */
  discard(id: string): Promise<void>;
  /** Stores a whole message at once (DSNs generated here); idempotent for a given id. */
  store(envelope: Omit<Envelope, 'size'>, data: Buffer): Promise<boolean>;
  messagePath(id: string): string;
  readEnvelope(id: string): Envelope | undefined;
  readState(id: string): MessageState | undefined;
  writeState(state: MessageState): void;
  readControl(id: string): MessageControl;
  writeControl(id: string, control: MessageControl): void;
  /**
   * Takes the per-message lock (one delivery run at a time, across processes sharing the spool).
   * False when another live process, or this one, holds it; a lock left by a dead process is
   * taken over.
   */
  tryLock(id: string): boolean;
  unlock(id: string): void;
  /** Moves a message out of the queue, keeping its tracking record. */
  finish(record: FinishedRecord): void;
  readFinished(id: string): FinishedRecord | undefined;
  /** Ids of committed messages still in the queue, oldest first. */
  listQueued(): string[];
  /** Removes tmp/ leftovers of sessions that died mid-DATA; returns how many. */
  cleanTmp(olderThanMs: number): Promise<number>;
  /** Removes tracking records older than `olderThanMs`; returns how many. */
  pruneFinished(olderThanMs: number): Promise<number>;
}

/** Identifies this process in lock files: a restarted container can get the same pid again. */
const INSTANCE = `${process.pid}:${randomBytes(6).toString('hex')}`;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const ID_PATTERN = /^[0-9a-z][0-9a-z.-]{5,63}$/;

/** Queue ids: time-sortable, unique, safe as file names and in SMTP replies. */
export function isQueueId(id: string): boolean {
  return ID_PATTERN.test(id) && !id.includes('..');
}

function checkId(id: string): string {
  if (!isQueueId(id)) throw new Error(`invalid queue id: ${JSON.stringify(id)}`);
  return id;
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeDurably(file: string, data: Buffer | string): Promise<void> {
  const handle = await fsp.open(file, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

function readJson<T>(file: string): T | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read spool file ${file}`, { cause: err });
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new Error(`corrupt spool file ${file}`, { cause: err });
  }
}

/** Replaces `file` atomically: a reader sees the old or the new content, never a mix. */
function replaceFile(file: string, data: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

async function unlinkIfExists(file: string): Promise<void> {
  await fsp.rm(file, { force: true });
}

export async function openSpool(dir: string): Promise<Spool> {
  const tmpDir = path.join(dir, 'tmp');
  const queueDir = path.join(dir, 'queue');
  const doneDir = path.join(dir, 'done');
  for (const d of [dir, tmpDir, queueDir, doneDir]) await fsp.mkdir(d, { recursive: true, mode: 0o700 });

  const q = (id: string, ext: string) => path.join(queueDir, `${checkId(id)}.${ext}`);
  const t = (id: string, ext: string) => path.join(tmpDir, `${checkId(id)}.${ext}`);
  let lastTs = 0;
  let seq = 0;

  const spool: Spool = {
    dir,
    newId() {
      // 9 base-36 chars of ms time + a per-ms counter + 8 random hex chars: sortable and unique
      // across processes sharing one spool.
      const now = Date.now();
      seq = now === lastTs ? seq + 1 : 0;
      lastTs = now;
      return `${now.toString(36).padStart(9, '0')}${seq.toString(36).padStart(2, '0')}${randomBytes(4).toString('hex')}`;
    },

    async receive(id, source) {
      let size = 0;
      // flush: the file is fsynced before it is closed, and pipeline() resolves only after 'close'.
      const out = fs.createWriteStream(t(id, 'eml'), { flags: 'wx', mode: 0o600, flush: true });
      await pipeline(
        source,
        async function* count(chunks: AsyncIterable<Buffer>) {
          for await (const chunk of chunks) {
            size += chunk.length;
            yield chunk;
          }
        },
        out,
      );
      if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
      return size;
    },

    async commit(envelope) {
      const id = checkId(envelope.id);
      await writeDurably(t(id, 'env'), JSON.stringify(envelope));
      await fsp.rename(t(id, 'eml'), q(id, 'eml'));
      await fsp.rename(t(id, 'env'), q(id, 'env'));
      await fsyncDir(queueDir);
    },

    async discard(id) {
      // Envelope first: without it the message is not committed, whatever else remains.
      await unlinkIfExists(q(id, 'env'));
      await Promise.all([
        unlinkIfExists(q(id, 'eml')),
        unlinkIfExists(t(id, 'eml')),
        unlinkIfExists(t(id, 'env')),
      ]);
    },

    async store(partial, data) {
      const id = checkId(partial.id);
      if (fs.existsSync(q(id, 'env')) || fs.existsSync(path.join(doneDir, `${id}.json`))) return false;
      await unlinkIfExists(t(id, 'eml'));
      await writeDurably(t(id, 'eml'), data);
      await spool.commit({ ...partial, size: data.length });
      return true;
    },

    messagePath: (id) => q(id, 'eml'),
    readEnvelope: (id) => readJson<Envelope>(q(id, 'env')),
    readState: (id) => readJson<MessageState>(q(id, 'state')),
    writeState(state) {
      replaceFile(q(state.id, 'state'), JSON.stringify(state));
    },
    readControl: (id) => readJson<MessageControl>(q(id, 'ctl')) ?? {},
    writeControl(id, control) {
      replaceFile(q(id, 'ctl'), JSON.stringify(control));
    },

    tryLock(id) {
      const file = q(id, 'lock');
      try {
        fs.writeFileSync(file, INSTANCE, { flag: 'wx', mode: 0o600 });
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = fs.readFileSync(file, 'utf8');
      if (holder === INSTANCE) return false;
      const pid = Number(holder.split(':')[0]);
      if (pid !== process.pid && Number.isInteger(pid) && processAlive(pid)) return false;
      // Left by a process that is gone (or by an earlier life of this pid): take it over.
      replaceFile(file, INSTANCE);
      return true;
    },
    unlock(id) {
      const file = q(id, 'lock');
      try {
        if (fs.readFileSync(file, 'utf8') === INSTANCE) fs.rmSync(file, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    },

    finish(record) {
      const id = checkId(record.id);
      replaceFile(path.join(doneDir, `${id}.json`), JSON.stringify(record));
      // Envelope first, so a crash part-way leaves no committed message behind.
      for (const ext of ['env', 'eml', 'state', 'ctl', 'lock']) fs.rmSync(q(id, ext), { force: true });
    },
    readFinished: (id) => readJson<FinishedRecord>(path.join(doneDir, `${checkId(id)}.json`)),

    listQueued() {
      return fs
        .readdirSync(queueDir)
        .filter((f) => f.endsWith('.env'))
        .map((f) => f.slice(0, -4))
        .sort();
    },

    async cleanTmp(olderThanMs) {
      const limit = Date.now() - olderThanMs;
      // Half-written replacements of state/control files (a process killed between write and
      // rename) sit next to the file they were replacing; the file itself is intact.
      // Files of a message without its envelope are leftovers of a crash in commit, discard or
      // finish (the envelope goes first): never a committed message, and they may hold patient
      // data, so they go too.
      const queued = await fsp.readdir(queueDir);
      const committed = new Set(queued.filter((f) => f.endsWith('.env')).map((f) => f.slice(0, -4)));
      const orphans = queued.filter((f) => {
        if (f.endsWith('.tmp')) return true;
        const dot = f.indexOf('.');
        return dot > 0 && !f.endsWith('.env') && !committed.has(f.slice(0, dot));
      });
      const candidates = [
        ...(await fsp.readdir(tmpDir)).map((f) => path.join(tmpDir, f)),
        ...orphans.map((f) => path.join(queueDir, f)),
      ];
      let removed = 0;
      for (const file of candidates) {
        const st = await fsp.stat(file).catch(() => undefined);
        if (st && st.mtimeMs < limit) {
          await unlinkIfExists(file);
          removed++;
        }
      }
      return removed;
    },

    async pruneFinished(olderThanMs) {
      const limit = Date.now() - olderThanMs;
      let removed = 0;
      for (const f of await fsp.readdir(doneDir)) {
        const file = path.join(doneDir, f);
        const st = await fsp.stat(file).catch(() => undefined);
        if (st && st.mtimeMs < limit) {
          await unlinkIfExists(file);
          removed++;
        }
      }
      return removed;
    },
  };
  return spool;
}
