import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MailboxError, openMailboxStore, type MailboxStore } from '../directory/index.ts';

let dir: string;
let file: string;
let store: MailboxStore;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'courrier-mailboxes-'));
  file = join(dir, 'directory.sqlite');
  store = openMailboxStore(file);
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<MailboxError> {
  const err = await p.then(
    () => {
      throw new Error('expected a MailboxError, the call succeeded');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MailboxError);
  return err as MailboxError;
}

/** Reads the raw table with a second connection, as an operator with sqlite3 would. */
function rawRows(): Record<string, unknown>[] {
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    return db.prepare('SELECT * FROM mailboxes ORDER BY address').all();
  } finally {
    db.close();
  }
}

describe('mailboxes', () => {
  it('adds a mailbox with a normalised address and defaults', async () => {
    const before = Date.now();
    const m = await store.add('  Dr.Martin@Cabinet-Martin.Example ');
    expect(m).toEqual({
      address: 'dr.martin@cabinet-martin.example',
      type: 'PER',
      createdAt: m.createdAt,
      hasPassword: false,
    });
    expect(m.createdAt).toBeGreaterThanOrEqual(before);
    expect(m.createdAt).toBeLessThanOrEqual(Date.now());
    expect(store.get('DR.MARTIN@cabinet-martin.example')).toEqual(m);
    expect(store.isHosted('dr.martin@CABINET-MARTIN.example')).toBe(true);
    expect(store.isHosted('other@cabinet-martin.example')).toBe(false);
  });

  it('keeps type and display name', async () => {
    const m = await store.add('secretariat@hopital.example', {
      type: 'ORG',
      displayName: ' Secrétariat cardiologie ',
    });
    expect(m.type).toBe('ORG');
    expect(m.displayName).toBe('Secrétariat cardiologie');
    const err = await rejection(store.add('x@hopital.example', { type: 'XYZ' as 'PER' }));
    expect(err.code).toBe('invalid-type');
  });

  it('refuses a mailbox that exists, whatever the case', async () => {
    await store.add('a@b.example');
    const err = await rejection(store.add('A@B.EXAMPLE', { password: 'correct horse battery' }));
    expect(err.code).toBe('exists');
    expect(err.message).toBe('mailbox a@b.example already exists');
  });

  it('settles concurrent adds of the same address: one wins', async () => {
    const results = await Promise.allSettled([
      store.add('race@b.example', { password: 'first password!!' }),
      store.add('race@b.example', { password: 'second password!' }),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const rejected = results.find((r) => r.status === 'rejected');
    expect((rejected as PromiseRejectedResult).reason).toMatchObject({ code: 'exists' });
  });

  it.each([
    ['no-at-sign.example', 'expected local-part@domain'],
    ['@b.example', 'expected local-part@domain'],
    ['a@', 'expected local-part@domain'],
    ['a b@c.example', 'invalid local part'],
    ['a..b@c.example', 'invalid local part'],
    ['.a@c.example', 'invalid local part'],
    ['"quoted"@c.example', 'invalid local part'],
    ['a@localhost', 'invalid domain'],
    ['a@-bad.example', 'invalid domain'],
    ['a@b_c.example', 'invalid domain'],
    ['élise@c.example', 'invalid local part'],
    [`${'x'.repeat(65)}@c.example`, 'longer than 64'],
  ])('rejects the address %s', async (address, problem) => {
    const err = await rejection(store.add(address));
    expect(err.code).toBe('invalid-address');
    expect(err.message).toContain(problem);
    expect(store.get(address)).toBeUndefined();
    expect(store.isHosted(address)).toBe(false);
  });

  it('accepts the RFC 5322 atext characters', async () => {
    const m = await store.add("o'brien+cardio_1=x@sous.domaine.example");
    expect(m.address).toBe("o'brien+cardio_1=x@sous.domaine.example");
  });

  it('lists in address order and removes', async () => {
    await store.add('b@x.example');
    await store.add('a@x.example', { type: 'APP' });
    await store.add('c@x.example', { type: 'CAB' });
    expect(store.list().map((m) => `${m.address}:${m.type}`)).toEqual([
      'a@x.example:APP',
      'b@x.example:PER',
      'c@x.example:CAB',
    ]);
    expect(store.remove('B@x.example')).toBe(true);
    expect(store.remove('b@x.example')).toBe(false);
    expect(store.remove('not an address')).toBe(false);
    expect(store.list().map((m) => m.address)).toEqual(['a@x.example', 'c@x.example']);
  });
});

describe('passwords', () => {
  it('sets and verifies a password', async () => {
    await store.add('dr@x.example', { password: 'correct horse battery' });
    expect(store.get('dr@x.example')?.hasPassword).toBe(true);
    expect(await store.verifyPassword('DR@x.example', 'correct horse battery')).toBe(true);
    expect(await store.verifyPassword('dr@x.example', 'correct horse batterY')).toBe(false);
    expect(await store.verifyPassword('dr@x.example', '')).toBe(false);
    await store.setPassword('dr@x.example', 'another long secret');
    expect(await store.verifyPassword('dr@x.example', 'correct horse battery')).toBe(false);
    expect(await store.verifyPassword('dr@x.example', 'another long secret')).toBe(true);
  });

  it('stores scrypt$N$r$p$salt$hash with a fresh salt each time', async () => {
    await store.add('a@x.example', { password: 'same password 123' });
    await store.add('b@x.example', { password: 'same password 123' });
    const [a, b] = rawRows().map((r) => String(r.password_hash));
    const format = /^scrypt\$32768\$8\$1\$([A-Za-z0-9+/]{22}==)\$([A-Za-z0-9+/]{43}=)$/;
    expect(a).toMatch(format);
    expect(b).toMatch(format);
    expect(format.exec(a!)![1]).not.toBe(format.exec(b!)![1]);
    expect(format.exec(a!)![2]).not.toBe(format.exec(b!)![2]);
    expect(a).not.toContain('same password');
  });

  it('treats canonically equivalent spellings as the same password (NFC)', async () => {
    await store.add('e@x.example', { password: 'mot de passe \u00e9t\u00e9' });
    expect(await store.verifyPassword('e@x.example', 'mot de passe e\u0301te\u0301')).toBe(true);
  });

  it('refuses short passwords with a clear error, counting characters', async () => {
    const err = await rejection(store.add('s@x.example', { password: 'short' }));
    expect(err.code).toBe('weak-password');
    expect(err.message).toBe('password too short: at least 12 characters are required');
    expect(store.isHosted('s@x.example')).toBe(false);
    await store.add('s@x.example');
    expect((await rejection(store.setPassword('s@x.example', 'ééééééééééé'))).code).toBe('weak-password');
    await store.setPassword('s@x.example', 'éééééééééééé');
    expect(await store.verifyPassword('s@x.example', 'éééééééééééé')).toBe(true);
  });

  it('refuses to set the password of an unknown mailbox', async () => {
    const err = await rejection(store.setPassword('nobody@x.example', 'long enough password'));
    expect(err.code).toBe('unknown');
    expect((await rejection(store.setPassword('bad address', 'long enough password'))).code).toBe(
      'invalid-address',
    );
  });

  it('answers false for unknown mailboxes and mailboxes without password, after as long a wait', async () => {
    await store.add('known@x.example', { password: 'correct horse battery' });
    await store.add('nopass@x.example');
    // Warm up (the decoy hash is computed on first use).
    await store.verifyPassword('nobody@x.example', 'whatever password');
    const time = async (address: string) => {
      const start = performance.now();
      const ok = await store.verifyPassword(address, 'wrong password here');
      return { ok, ms: performance.now() - start };
    };
    const known = await time('known@x.example');
    const missing = await time('nobody@x.example');
    const noPassword = await time('nopass@x.example');
    const invalid = await time('not an address');
    expect([known.ok, missing.ok, noPassword.ok, invalid.ok]).toEqual([false, false, false, false]);
    // Same scrypt work on every path: each takes at least half the time of a real check.
    for (const t of [missing, noPassword, invalid]) expect(t.ms).toBeGreaterThan(known.ms / 2);
  });
});

describe('the SQLite file', () => {
  it('persists across reopen', async () => {
    await store.add('persist@x.example', {
      type: 'CAB',
      displayName: 'Cabinet',
      password: 'survives reopen!',
    });
    store.close();
    store = openMailboxStore(file);
    expect(store.get('persist@x.example')).toMatchObject({
      type: 'CAB',
      displayName: 'Cabinet',
      hasPassword: true,
    });
    expect(await store.verifyPassword('persist@x.example', 'survives reopen!')).toBe(true);
  });

  it('is in WAL mode, readable by the owner only, with a schema version', () => {
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const db = new DatabaseSync(file, { readOnly: true });
    try {
      expect(db.prepare('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' });
      expect(db.prepare('SELECT version FROM schema_version').all()).toEqual([{ version: 1 }]);
    } finally {
      db.close();
    }
  });

  it('refuses a store written by a newer version', () => {
    store.close();
    const db = new DatabaseSync(file);
    db.exec('UPDATE schema_version SET version = 99');
    db.close();
    expect(() => openMailboxStore(file)).toThrow(/schema version 99 is newer than this Courrier knows \(1\)/);
  });

  it('closes idempotently', () => {
    store.close();
    expect(() => store.close()).not.toThrow();
  });
});
