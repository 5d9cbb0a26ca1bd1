import { randomBytes } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  importExtract,
  importPersonActivity,
  ImportLockError,
  type DirectoryStore,
} from '../directory/index.ts';
import {
  directoryBackends,
  EXTRACT_SAMPLE as SAMPLE,
  sampleLines,
  testDir,
} from './helpers/directory-backends.ts';
import { person, RPPS_HEADER_LINE, sampleLine as rppsLine } from './helpers/rpps-fixture.ts';

/**
 * Safeguards of the directory imports (the reviewer's findings): a taken-over RPPS import writes and
 * retires nothing, rejected lines keep what they name, an import refuses to retire too much, the two
 * imports keep each other's professional data, and the rest of issue 5's import defects.
 */

const dir = testDir('courrier-retire-');
function writeFile(name: string, lines: string[]): string {
  const file = join(dir, `${randomBytes(4).toString('hex')}-${name}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}
/** A with two activities, B with one. */
const rppsV1 = () => [
  rppsLine(person('10000000001')),
  rppsLine(
    person('10000000001', { 'Numéro FINESS site': '', 'Code rôle': 'FON-05', 'Code mode exercice': 'S' }),
  ),
  rppsLine(person('10000000002', { "Nom d'exercice": 'ROUX', 'Numéro FINESS site': '349999992' })),
];
const writeRpps = (name: string, lines: string[]) => writeFile(name, [RPPS_HEADER_LINE, ...lines]);

/** A gate for a byte stream: `reached` when the stream got there, `open()` lets it go on. */
function gate() {
  let reach!: () => void;
  let open!: () => void;
  const reached = new Promise<void>((r) => (reach = r));
  const opened = new Promise<void>((r) => (open = r));
  return { reached, open, pass: () => (reach(), opened) };
}
const bytes = (text: string) => new TextEncoder().encode(text);

describe.each(directoryBackends(dir, 'retire_test'))('import safeguards on $name', (backend) => {
  let store: DirectoryStore;
  beforeEach(async () => {
    store = await backend.open();
  });
  afterEach(async () => {
    await store.close();
    await backend.cleanup();
  });

  describe('RPPS import lock', () => {
    it('takes over a stale lock: the dead import can no longer write a batch', async () => {
      const g = gate();
      async function* stalled() {
        yield bytes(`${RPPS_HEADER_LINE}\n`);
        await g.pass(); // the import stalls here and is taken for dead meanwhile
        yield bytes(`${rppsLine()}\n`);
      }
      const dead = importPersonActivity(store, stalled(), { batchSize: 1 }).then(
        () => 'finished',
        (err: unknown) => err,
      );
      await g.reached;
      // staleAfterMs 0: any heartbeat is stale (the default is 10 minutes).
      const other = await store.beginImport('extract-mssante', { staleAfterMs: 0 });
      g.open();
      const error = await dead;
      expect(error).toBeInstanceOf(ImportLockError);
      expect((error as Error).message).toMatch(/import \d+ no longer holds the import lock \(.*stale/);
      expect(await store.counts()).toMatchObject({ professionals: 0, structures: 0 });
      expect(await store.activitiesOf('810000000001', { includeRetired: true })).toEqual([]);
      await store.finishImport(other, { retire: false, summary: '{}' });
    });

    it('a dead import that wakes up does not make the live one retire what its file lists', async () => {
      const a = gate();
      const b = gate();
      const line = `${rppsLine()}\n`;
      async function* deadSource() {
        yield bytes(`${RPPS_HEADER_LINE}\n`);
        await a.pass();
        yield bytes(line);
      }
      async function* liveSource() {
        yield bytes(`${RPPS_HEADER_LINE}\n${line}`);
        await b.pass(); // its line is written (batches of 1); the import is not finished yet
      }
      const dead = importPersonActivity(store, deadSource(), { batchSize: 1 }).then(
        () => 'finished',
        (err: unknown) => err,
      );
      await a.reached;
      const live = importPersonActivity(store, liveSource(), { batchSize: 1, staleLockMs: 0 });
      await b.reached;
      a.open();
      expect(await dead).toBeInstanceOf(ImportLockError);
      b.open();
      expect(await live).toMatchObject({ inserted: 1, retiredActivities: 0 });
      expect(await store.activitiesOf('810000000001')).toHaveLength(1);
      const [latest, old] = await store.listImports();
      expect(latest).toMatchObject({ kind: 'rpps', state: 'finished' });
      expect(old).toMatchObject({ kind: 'rpps', state: 'failed' });
    });
  });

  describe('rejected lines keep what they name', () => {
    it('extract: a mangled line does not retire its mailbox, and is counted', async () => {
      await importExtract(store, SAMPLE);
      const lines = sampleLines();
      lines[1] = `${lines[1]}|extra`; // the publisher adds a field on one line
      lines[2] = lines[2]!.replace('|19990000001|819990000001|', '|1999000001|81999000001|');
      // Share check out of the way: only the rejected lines' keep is tested here.
      const report = await importExtract(store, writeFile('mangled.txt', lines), { maxRetireShare: 1 });
      expect(report).toMatchObject({ rejectedCount: 2, retiredMailboxes: 0, keptLinks: 2 });
      expect(report.retireRefused).toBeUndefined();
      expect(await store.resolveAddress('matheo.laurent0@pharmacien.mssante.fr')).toBeDefined();
      expect(await store.resolveAddress('elodie.roux1@infirmier.mssante.fr')).toBeDefined();
      expect((await store.counts()).liveMailboxes).toBe(40);
    });

    it('extract: an unreadable address keeps nothing; the line is gone, its mailbox retired', async () => {
      await importExtract(store, SAMPLE);
      const lines = sampleLines();
      lines[1] = lines[1]!.replace('matheo.laurent0@', 'matheo laurent0@');
      const report = await importExtract(store, writeFile('bad-address.txt', lines));
      expect(report).toMatchObject({ rejectedCount: 1, retiredMailboxes: 1, keptLinks: 0 });
    });

    it("RPPS: a rejected line whose national id is readable keeps that person's activities", async () => {
      await importPersonActivity(store, writeRpps('v1.txt', rppsV1()));
      const v2 = rppsV1();
      v2[0] = `${v2[0]}extra|`; // one column too many
      v2[2] = v2[2]!.replace('|349999992|', '|3499|'); // bad FINESS
      const report = await importPersonActivity(store, writeRpps('v2.txt', v2), { maxRetireShare: 1 });
      expect(report).toMatchObject({ rejectedCount: 2, retiredActivities: 0, keptActivities: 2 });
      expect(await store.activitiesOf('810000000001')).toHaveLength(2);
      expect(await store.activitiesOf('810000000002')).toHaveLength(1);
    });
  });

  describe('retirement refused when the file looks damaged', () => {
    it('extract: a header-only file retires nothing, and says why', async () => {
      await importExtract(store, SAMPLE);
      const report = await importExtract(store, writeFile('header-only.txt', sampleLines().slice(0, 1)));
      expect(report).toMatchObject({ lines: 0, retiredMailboxes: 0 });
      expect(report.retireRefused).toMatch(
        /^retirement refused: the import accepted no line, .* all 40 live/,
      );
      expect((await store.counts()).liveMailboxes).toBe(40);
      const [last] = await store.listImports(1);
      expect(last).toMatchObject({ state: 'finished' });
      expect(JSON.parse(last!.summary!).retireRefused).toBe(report.retireRefused);
    });

    it('extract: more than 20% of the live links is refused, the lines are applied; --force-retire retires', async () => {
      await importExtract(store, SAMPLE);
      const lines = sampleLines().slice(0, 11);
      lines[1] = lines[1]!.replace('|LAURENT|Mathéo|', '|LAURENT-PETIT|Mathéo|');
      const file = writeFile('first-ten.txt', lines);
      const report = await importExtract(store, file);
      expect(report).toMatchObject({ updated: 1, unchanged: 9, retiredMailboxes: 0 });
      expect(report.retireRefused).toContain('would retire 30 of 40 live mailbox links (75%)');
      expect((await store.counts()).liveMailboxes).toBe(40);
      expect((await store.resolveAddress('matheo.laurent0@pharmacien.mssante.fr'))?.owner?.lastName).toBe(
        'LAURENT-PETIT',
      );
      // 30 of 40 is within a share of 0.8; forced, whatever the share.
      expect(await importExtract(store, file, { maxRetireShare: 0.8 })).toMatchObject({
        retiredMailboxes: 30,
      });
      await importExtract(store, SAMPLE, { forceRetire: true });
      const forced = await importExtract(store, file, { forceRetire: true });
      expect(forced).toMatchObject({ retiredMailboxes: 30 });
      expect(forced.retireRefused).toBeUndefined();
    });

    it('RPPS: no accepted line, or too large a share, retires no activity', async () => {
      await importPersonActivity(store, writeRpps('v1.txt', rppsV1()));
      const empty = await importPersonActivity(store, writeRpps('header-only.txt', []));
      expect(empty).toMatchObject({ retiredActivities: 0 });
      expect(empty.retireRefused).toMatch(/accepted no line, so it would retire all 3 live activities/);
      const one = writeRpps('one.txt', rppsV1().slice(0, 1));
      const shrunk = await importPersonActivity(store, one);
      expect(shrunk.retireRefused).toContain('would retire 2 of 3 live activities (66.7%)');
      expect(await store.activitiesOf('810000000002')).toHaveLength(1);
      expect(await importPersonActivity(store, one, { forceRetire: true })).toMatchObject({
        retiredActivities: 2,
      });
    });
  });

  it('an extract line without specialty keeps the one the RPPS import gave', async () => {
    await importExtract(store, SAMPLE);
    await importPersonActivity(
      store,
      writeRpps('specialty.txt', [
        rppsLine(
          person('19990000001', {
            "Nom d'exercice": 'ROUX',
            'Code savoir-faire': 'SM99',
            'Libellé savoir-faire': 'Spécialité RPPS',
          }),
        ),
      ]),
    );
    expect((await store.findByNationalId('819990000001'))?.professional).toMatchObject({
      specialtyCode: 'SM99',
      specialtyLabel: 'Spécialité RPPS',
    });
    const lines = sampleLines();
    lines[2] = lines[2]!
      .replace('|74000 ANNECY|', '|74001 ANNECY|')
      .replace('|SM15|Endocrinologie et métabolisme|', '|||');
    expect(await importExtract(store, writeFile('no-specialty.txt', lines))).toMatchObject({ updated: 1 });
    expect((await store.findByNationalId('819990000001'))?.professional).toMatchObject({
      professionCode: '10',
      specialtyCode: 'SM99',
      specialtyLabel: 'Spécialité RPPS',
    });
  });

  it('expands a team to the first mailbox in byte order, whatever the database collation', async () => {
    // A database created with a French ICU locale sorts '_' before digits; bytes put it after.
    await backend.sql?.('ALTER TABLE dir_mailboxes ALTER COLUMN address TYPE TEXT COLLATE "fr-FR-x-icu"');
    await store.saveProfessional({
      nationalId: '810000000009',
      idType: '8',
      lastName: 'MARTIN',
      firstName: 'A',
    });
    for (const address of ['a_b@x.example', 'a1@x.example']) {
      await store.saveLocalMailbox({ address, type: 'PER', nationalId: '810000000009' });
    }
    await store.saveTeam({ id: 'msp', kind: 'MSP', name: 'MSP' });
    await store.addTeamMember('msp', { kind: 'professional', nationalId: '810000000009' });
    expect((await store.expandTeam('msp'))?.recipients.map((r) => r.address)).toEqual(['a1@x.example']);
  });

  it('a refused RPPS import opens no file', async () => {
    const file = writeRpps('v1.txt', rppsV1());
    const other = await store.beginImport('extract-mssante');
    const refused = () => expect(importPersonActivity(store, file)).rejects.toThrow(ImportLockError);
    await refused(); // the store's connections are open from here on
    const before = readdirSync('/proc/self/fd').length;
    for (let i = 0; i < 5; i++) await refused();
    // A file opened by a refused import would be open once the event loop has run its callbacks.
    await sleep(100);
    expect(readdirSync('/proc/self/fd').length).toBe(before);
    await store.failImport(other, 'test');
  });

  it("a local edit of an extract mailbox leaves it the extract's, retired when the extract drops it", async () => {
    await importExtract(store, SAMPLE);
    const address = 'matheo.laurent0@pharmacien.mssante.fr';
    const edited = await store.saveLocalMailbox({
      address,
      type: 'PER',
      nationalId: '819990000000',
      displayName: 'Dr Mathéo Laurent',
      hidden: true,
    });
    expect(edited).toMatchObject({ source: 'extract', displayName: 'Dr Mathéo Laurent', hidden: true });
    const report = await importExtract(
      store,
      writeFile(
        'without.txt',
        sampleLines().filter((_, i) => i !== 1),
      ),
    );
    expect(report).toMatchObject({ retiredMailboxes: 1 });
    expect(await store.resolveAddress(address)).toBeUndefined();
    // Saved locally once retired: now local, so the next extract without it leaves it live.
    expect(await store.saveLocalMailbox({ address, type: 'PER', nationalId: '819990000000' })).toMatchObject({
      source: 'local',
    });
    expect(
      await importExtract(
        store,
        writeFile(
          'still-without.txt',
          sampleLines().filter((_, i) => i !== 1),
        ),
      ),
    ).toMatchObject({ retiredMailboxes: 0 });
    expect(await store.resolveAddress(address)).toMatchObject({ source: 'local' });
    // A local mailbox that the extract does not list stays local.
    expect(await store.saveLocalMailbox({ address: 'team@x.example', type: 'ORG' })).toMatchObject({
      source: 'local',
    });
  });
});
