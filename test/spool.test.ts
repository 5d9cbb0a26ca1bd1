import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isQueueId, openSpool, type Spool } from '../queue/spool.ts';
import type { Envelope } from '../queue/types.ts';

let dir: string;
let spool: Spool;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'courrier-spool-'));
  spool = await openSpool(dir);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function envelope(id: string, size: number): Envelope {
  return {
    id,
    mailFrom: 'a@example.org',
    recipients: [{ address: 'b@example.net' }],
    receivedAt: Date.now(),
    size,
    source: { listener: 'submission' },
  };
}

describe('spool', () => {
  it('makes sortable, unique, file-safe ids', () => {
    const ids = Array.from({ length: 1000 }, () => spool.newId());
    expect(new Set(ids).size).toBe(1000);
    expect([...ids].sort()).toEqual(ids);
    for (const id of ids) expect(isQueueId(id)).toBe(true);
    expect(isQueueId('../etc/passwd')).toBe(false);
    expect(() => spool.readEnvelope('../../x')).toThrow(/invalid queue id/);
  });

  it('is not visible in the queue until committed', async () => {
    const id = spool.newId();
    const size = await spool.receive(id, Readable.from([Buffer.from('Subject: x\r\n\r\nhello\r\n')]));
    expect(size).toBe(Buffer.byteLength('Subject: x\r\n\r\nhello\r\n'));
    expect(spool.listQueued()).toEqual([]);
    await spool.commit(envelope(id, size));
    expect(spool.listQueued()).toEqual([id]);
    expect(fs.readFileSync(spool.messagePath(id), 'utf8')).toBe('Subject: x\r\n\r\nhello\r\n');
    expect(spool.readEnvelope(id)?.recipients).toEqual([{ address: 'b@example.net' }]);
  });

  it('discard removes a committed message and leaves nothing behind', async () => {
    const id = spool.newId();
    await spool.receive(id, Readable.from([Buffer.from('x\r\n')]));
    await spool.commit(envelope(id, 3));
    await spool.discard(id);
    expect(spool.listQueued()).toEqual([]);
    expect(fs.readdirSync(path.join(dir, 'queue'))).toEqual([]);
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([]);
  });

  it('a failed receive leaves no committed message', async () => {
    const id = spool.newId();
    const failing = new Readable({
      read() {
        this.destroy(new Error('client went away'));
      },
    });
    await expect(spool.receive(id, failing)).rejects.toThrow(/client went away/);
    await spool.discard(id);
    expect(spool.listQueued()).toEqual([]);
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([]);
  });

  it('stores, tracks state and control, and finishes into a tracking record', async () => {
    const id = spool.newId();
    expect(
      await spool.store({ ...envelope(id, 0), size: undefined } as unknown as Envelope, Buffer.from('a\r\n')),
    ).toBe(true);
    expect(await spool.store(envelope(id, 0), Buffer.from('a\r\n'))).toBe(false); // idempotent
    expect(spool.readEnvelope(id)?.size).toBe(3);
    spool.writeState({
      id,
      attempt: 1,
      recipients: [{ address: 'b@example.net', state: 'delivered', attempts: 1 }],
      updatedAt: 1,
    });
    expect(spool.readState(id)?.attempt).toBe(1);
    spool.writeControl(id, { held: true });
    expect(spool.readControl(id)).toEqual({ held: true });
    spool.finish({
      id,
      envelope: spool.readEnvelope(id)!,
      state: spool.readState(id)!,
      finishedAt: 2,
      reason: 'final',
    });
    expect(spool.listQueued()).toEqual([]);
    expect(spool.readEnvelope(id)).toBeUndefined();
    expect(spool.readFinished(id)?.state.recipients[0]?.state).toBe('delivered');
    expect(fs.readdirSync(path.join(dir, 'queue'))).toEqual([]);
    // A finished message cannot be stored again under the same id.
    expect(await spool.store(envelope(id, 0), Buffer.from('a\r\n'))).toBe(false);
  });

  it('reports a corrupt state file instead of treating it as empty', async () => {
    const id = spool.newId();
    await spool.store(envelope(id, 0), Buffer.from('a\r\n'));
    fs.writeFileSync(path.join(dir, 'queue', `${id}.state`), '{not json');
    expect(() => spool.readState(id)).toThrow(/corrupt spool file/);
  });

  it('cleans stale tmp files only', async () => {
    const fresh = spool.newId();
    const stale = spool.newId();
    await spool.receive(fresh, Readable.from([Buffer.from('x')]));
    await spool.receive(stale, Readable.from([Buffer.from('x')]));
    const old = new Date(Date.now() - 2 * 3_600_000);
    fs.utimesSync(path.join(dir, 'tmp', `${stale}.eml`), old, old);
    expect(await spool.cleanTmp(3_600_000)).toBe(1);
    expect(fs.readdirSync(path.join(dir, 'tmp'))).toEqual([`${fresh}.eml`]);
  });
});

describe('spool locks and leftovers', () => {
  it('lets one holder at a time deliver a message, and takes over a dead holder’s lock', async () => {
    const id = spool.newId();
    await spool.store(envelope(id, 0), Buffer.from('a\r\n'));
    expect(spool.tryLock(id)).toBe(true);
    expect(spool.tryLock(id)).toBe(false); // held by this process already
    spool.unlock(id);
    expect(spool.tryLock(id)).toBe(true);
    spool.unlock(id);
    // A live process holds it: not ours to take.
    fs.writeFileSync(path.join(dir, 'queue', `${id}.lock`), `${process.ppid}:other`);
    expect(spool.tryLock(id)).toBe(false);
    // A dead one (pid 2^22 + 1 is beyond Linux's pid range) left it: taken over.
    fs.writeFileSync(path.join(dir, 'queue', `${id}.lock`), `${2 ** 22 + 1}:gone`);
    expect(spool.tryLock(id)).toBe(true);
    // An earlier life of this very pid (a restarted container) left it: taken over too.
    fs.writeFileSync(path.join(dir, 'queue', `${id}.lock`), `${process.pid}:before-restart`);
    expect(spool.tryLock(id)).toBe(true);
  });

  it('removes files of messages without an envelope, which a crash can leave behind', async () => {
    const kept = spool.newId();
    await spool.store(envelope(kept, 0), Buffer.from('a\r\n'));
    spool.writeState({ id: kept, attempt: 1, recipients: [], updatedAt: 0 });
    const orphan = spool.newId();
    for (const ext of ['eml', 'state', 'ctl'])
      fs.writeFileSync(path.join(dir, 'queue', `${orphan}.${ext}`), 'x');
    const old = new Date(Date.now() - 2 * 3_600_000);
    for (const f of fs.readdirSync(path.join(dir, 'queue')))
      fs.utimesSync(path.join(dir, 'queue', f), old, old);
    expect(await spool.cleanTmp(3_600_000)).toBe(3);
    expect(fs.readdirSync(path.join(dir, 'queue')).sort()).toEqual(
      [`${kept}.env`, `${kept}.eml`, `${kept}.state`].sort(),
    );
  });
});
