import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLocalDelivery, mailboxPathParts, maildirFileName } from '../gateway/local-delivery.ts';
import type { Envelope } from '../queue/types.ts';

let dir: string;
let mailboxes: string;
let messagePath: string;
const message = Buffer.from('From: a@example.org\r\nTo: carla@cabinet.test\r\nSubject: x\r\n\r\nbody\r\n');
const hosted = new Set(['carla@cabinet.test', 'dr.bob+tri@cabinet.test']);

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'courrier-local-'));
  mailboxes = path.join(dir, 'mailboxes');
  messagePath = path.join(dir, 'msg.eml');
  writeFileSync(messagePath, message);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const local = () =>
  createLocalDelivery({
    mailboxesDir: mailboxes,
    isHosted: (a) => hosted.has(a.toLowerCase()),
    hostname: 'courrier.test',
  });

function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    id: 'Q123abc',
    mailFrom: 'alice@example.org',
    recipients: [{ address: 'carla@cabinet.test' }],
    receivedAt: Date.now(),
    size: message.length,
    source: { listener: 'relay', tls: true },
    ...over,
  };
}

const newDir = (mailbox: string) => path.join(mailboxes, 'cabinet.test', mailbox, 'new');

describe('local Maildir delivery', () => {
  it('writes the message into new/ with Return-Path and Delivered-To prepended, nothing left in tmp/', async () => {
    const o = await local().deliver(envelope(), messagePath, { address: 'carla@cabinet.test' });
    expect(o).toMatchObject({
      address: 'carla@cabinet.test',
      result: 'delivered',
      status: '2.0.0',
      local: true,
      dsnPassedOn: false,
    });
    const files = readdirSync(newDir('carla'));
    expect(files).toEqual([maildirFileName('Q123abc', 'carla@cabinet.test', 'courrier.test')]);
    expect(o.remoteId).toBe(files[0]);
    const stored = readFileSync(path.join(newDir('carla'), files[0]!));
    expect(stored.toString()).toBe(
      `Return-Path: <alice@example.org>\r\nDelivered-To: carla@cabinet.test\r\n${message.toString()}`,
    );
    expect(readdirSync(path.join(mailboxes, 'cabinet.test', 'carla', 'tmp'))).toEqual([]);
    expect(existsSync(path.join(mailboxes, 'cabinet.test', 'carla', 'cur'))).toBe(true);
    expect(statSync(path.join(newDir('carla'), files[0]!)).mode & 0o777).toBe(0o600);
  });

  it('writes Return-Path: <> for the null sender', async () => {
    await local().deliver(envelope({ mailFrom: '' }), messagePath, { address: 'carla@cabinet.test' });
    const [f] = readdirSync(newDir('carla'));
    expect(readFileSync(path.join(newDir('carla'), f!)).toString()).toMatch(/^Return-Path: <>\r\n/);
  });

  it('counts a repeated delivery (after a crash) as delivered without a second copy', async () => {
    const l = local();
    await l.deliver(envelope(), messagePath, { address: 'carla@cabinet.test' });
    const again = await l.deliver(envelope(), messagePath, { address: 'carla@cabinet.test' });
    expect(again).toMatchObject({
      result: 'delivered',
      reply: '250 2.0.0 delivered to mailbox (already there)',
    });
    expect(readdirSync(newDir('carla'))).toHaveLength(1);
  });

  it('also finds the message once a mail reader has moved it to cur/ with flags', async () => {
    const l = local();
    await l.deliver(envelope(), messagePath, { address: 'carla@cabinet.test' });
    const [f] = readdirSync(newDir('carla'));
    renameSync(
      path.join(newDir('carla'), f!),
      path.join(mailboxes, 'cabinet.test', 'carla', 'cur', `${f}:2,S`),
    );
    const again = await l.deliver(envelope(), messagePath, { address: 'carla@cabinet.test' });
    expect(again.result).toBe('delivered');
    expect(readdirSync(newDir('carla'))).toEqual([]);
  });

  it('keeps concurrent attempts for the same recipient to one copy', async () => {
    const l = local();
    const out = await Promise.all(
      [1, 2, 3, 4].map(() => l.deliver(envelope(), messagePath, { address: 'carla@cabinet.test' })),
    );
    expect(out.every((o) => o.result === 'delivered')).toBe(true);
    expect(readdirSync(newDir('carla'))).toHaveLength(1);
    expect(readdirSync(path.join(mailboxes, 'cabinet.test', 'carla', 'tmp'))).toEqual([]);
  });

  it('gives different messages and different recipients different files', async () => {
    const l = local();
    await l.deliver(envelope(), messagePath, { address: 'carla@cabinet.test' });
    await l.deliver(envelope({ id: 'Q456' }), messagePath, { address: 'carla@cabinet.test' });
    await l.deliver(envelope(), messagePath, { address: 'dr.bob+tri@cabinet.test' });
    expect(readdirSync(newDir('carla'))).toHaveLength(2);
    expect(readdirSync(newDir('dr.bob+tri'))).toHaveLength(1);
  });

  it('rejects an unknown mailbox with 5.1.1 and creates nothing', async () => {
    const o = await local().deliver(envelope(), messagePath, { address: 'nobody@cabinet.test' });
    expect(o).toMatchObject({ result: 'reject', status: '5.1.1', category: 'recipient', local: true });
    expect(existsSync(path.join(mailboxes, 'cabinet.test', 'nobody'))).toBe(false);
  });

  it.each([
    '../../etc@cabinet.test',
    '..@cabinet.test',
    '.hidden@cabinet.test',
    'a/b@cabinet.test',
    'a\\b@cabinet.test',
    '"quoted local"@cabinet.test',
    'carla@../cabinet.test',
    'carla@cabinet.test/..',
    'x'.repeat(65) + '@cabinet.test',
    'no-at-sign',
  ])('refuses %s as a mailbox path (5.1.3), even if the directory says it exists', async (address) => {
    const l = createLocalDelivery({
      mailboxesDir: mailboxes,
      isHosted: () => true,
      hostname: 'courrier.test',
    });
    const o = await l.deliver(envelope(), messagePath, { address });
    expect(o).toMatchObject({ result: 'reject', status: '5.1.3' });
    expect(existsSync(mailboxes)).toBe(false);
  });

  it('defers (4.3.0) when the mailbox cannot be written', async () => {
    mkdirSync(path.join(mailboxes, 'cabinet.test'), { recursive: true });
    writeFileSync(path.join(mailboxes, 'cabinet.test', 'carla'), 'a file where the Maildir should be');
    const o = await local().deliver(envelope(), messagePath, { address: 'carla@cabinet.test' });
    expect(o).toMatchObject({ result: 'defer', status: '4.3.0', local: true });
  });

  it('defers when the stored message is missing', async () => {
    const o = await local().deliver(envelope(), path.join(dir, 'gone.eml'), {
      address: 'carla@cabinet.test',
    });
    expect(o).toMatchObject({ result: 'defer', status: '4.3.0' });
    expect(o.reply).toBe('451 4.3.0 local delivery failed: ENOENT');
    expect(readdirSync(newDir('carla'))).toEqual([]);
    expect(readdirSync(path.join(mailboxes, 'cabinet.test', 'carla', 'tmp'))).toEqual([]);
  });
});

describe('mailboxPathParts', () => {
  it('lower-cases and splits at the last @', () => {
    expect(mailboxPathParts('Dr.Bob+Tri@Cabinet.TEST')).toEqual({
      localPart: 'dr.bob+tri',
      domain: 'cabinet.test',
    });
  });
});
