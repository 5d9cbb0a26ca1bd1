import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  importExtract,
  importPersonActivity,
  parseActivityLine,
  readActivityHeader,
  RppsImportError,
  type ActivityColumns,
  type DirectoryStore,
} from '../directory/index.ts';
import { directoryBackends, EXTRACT_SAMPLE, testDir } from './helpers/directory-backends.ts';
import {
  activityLine,
  generateActivityLines,
  RPPS_HEADER,
  RPPS_HEADER_LINE,
  person,
  sampleActivity,
  sampleLine as line,
  writeActivityFile,
  type ActivityFields as Fields,
} from './helpers/rpps-fixture.ts';

const dir = testDir('courrier-rpps-');

function writeLines(name: string, lines: string[], eol = '\n'): string {
  const file = join(dir, name);
  writeFileSync(file, `${[RPPS_HEADER_LINE, ...lines].join(eol)}${eol}`);
  return file;
}

// ---------------------------------------------------------------------------------------------

describe('PS_LibreAcces_Personne_activite header', () => {
  it('locates the 56 columns of the published header, trailing | included', () => {
    const columns = readActivityHeader(RPPS_HEADER_LINE);
    expect(columns.count).toBe(56);
    expect(columns.missingOptional).toEqual([]);
    expect(columns.index.idType).toBe(0);
    expect(columns.index.roleCode).toBe(RPPS_HEADER.indexOf('Code rôle'));
  });

  it('finds columns by name whatever their order, with a BOM and typographic apostrophes', () => {
    const reordered = [...RPPS_HEADER].reverse().map((h) => h.replace("'", '’'));
    const columns = readActivityHeader(`\uFEFF${reordered.join('|')}|`);
    expect(columns.index.idType).toBe(55);
    const fields = sampleActivity();
    const text = `${[...RPPS_HEADER]
      .reverse()
      .map((h) => fields[h] ?? '')
      .join('|')}|`;
    const inOrder = parseActivityLine(line(), readActivityHeader(RPPS_HEADER_LINE), 2);
    const reversed = parseActivityLine(text, columns, 2);
    expect(reversed).toEqual(inOrder);
  });

  it('names every missing or repeated required column', () => {
    const header = RPPS_HEADER.filter((h) => h !== 'Code rôle' && h !== 'Numéro SIRET site');
    header.push('Identifiant PP');
    expect(() => readActivityHeader(header.join('|'), 'rpps.txt: line 1')).toThrow(
      new RppsImportError(
        'rpps.txt: line 1 is not a PS_LibreAcces_Personne_activite header (55 columns, 56 expected): ' +
          'missing columns "Numéro SIRET site", "Code rôle"; repeated column "Identifiant PP"',
      ),
    );
    expect(() => readActivityHeader('Type de BAL|Adresse BAL|')).toThrow(
      /missing columns "Type d'identifiant PP"/,
    );
  });

  it('accepts a header without an optional column and says so', () => {
    const columns = readActivityHeader(RPPS_HEADER.filter((h) => h !== 'Libellé rôle').join('|'));
    expect(columns.count).toBe(55);
    expect(columns.missingOptional).toEqual(['Libellé rôle']);
  });
});

describe('PS_LibreAcces_Personne_activite lines', () => {
  const columns: ActivityColumns = readActivityHeader(RPPS_HEADER_LINE);
  const parse = (text: string) => parseActivityLine(text, columns, 7);
  const reason = (text: string) => {
    const r = parse(text);
    return 'reason' in r ? r.reason : undefined;
  };

  it('reads a person, their specialty and the activity at a FINESS site', () => {
    const r = parseActivityLine(line(), columns, 2, 'ignore');
    expect(r).toEqual({
      row: {
        lineNo: 2,
        hash: expect.any(String),
        professional: {
          nationalId: '810000000001',
          idType: '8',
          lastName: 'LEFÈVRE',
          firstName: 'Maëlle',
          civility: 'DR',
          professionCode: '10',
          professionLabel: 'Médecin',
          specialtyCode: 'SM54',
          specialtyLabel: 'Médecine générale',
        },
        activity: {
          activityKey: '1:349999991|L|FON-01|GENR01',
          structure: {
            key: '1:349999991',
            idType: '1',
            identification: '349999991',
            name: 'MAISON DE SANTE DES VIGNES',
            kind: 'msp',
          },
          siteName: 'MAISON DE SANTE DES VIGNES',
          roleCode: 'FON-01',
          roleLabel: 'Titulaire de cabinet',
          modeCode: 'L',
          modeLabel: 'Libéral',
          sectorCode: 'SA07',
          sectorLabel: 'Cabinet individuel',
          street: '9 T BD JEAN JAURES',
          postcode: '34800',
          city: 'CLERMONT-L’HÉRAULT',
          department: '34',
          country: 'France',
        },
      },
    });
  });

  it('keys the site by FINESS, else SIRET, else SIREN, else the technical id', () => {
    const key = (o: Fields) => {
      const r = parse(line(o));
      return 'row' in r ? r.row.activity.structure?.key : r.reason;
    };
    expect(key({})).toBe('1:349999991');
    expect(key({ 'Numéro FINESS site': '' })).toBe('3:99999999900011');
    expect(key({ 'Numéro FINESS site': '', 'Numéro SIRET site': '' })).toBe('2:999999999');
    expect(key({ 'Numéro FINESS site': '', 'Numéro SIRET site': '', 'Numéro SIREN site': '' })).toBe(
      '4:R10000000000001',
    );
  });

  it('keeps a person without activity, with the empty activity key', () => {
    const empty: Fields = {};
    for (const h of RPPS_HEADER.slice(RPPS_HEADER.indexOf('Code mode exercice'))) empty[h] = '';
    const r = parse(line(empty));
    expect('row' in r && r.row.activity).toEqual({ activityKey: '' });
    expect('row' in r && r.row.professional.lastName).toBe('LEFÈVRE');
  });

  it('keeps the savoir-faire as specialty only when its type is a specialty', () => {
    const r = parse(line({ 'Code type savoir-faire': 'CEX', 'Code savoir-faire': 'CEX01' }));
    expect('row' in r && r.row.professional.specialtyCode).toBeUndefined();
  });

  it('accepts a line without its trailing |, rejects a line with one column too many', () => {
    const r = parse(line().slice(0, -1));
    expect('row' in r).toBe(true);
    expect(reason(`${line()}extra|`)).toBe('expected 56 columns, found 57');
    expect(reason(`${line()}|`)).toBe('expected 56 columns, found 57');
    expect(reason('8|10000000001|810000000001|')).toBe('expected 56 columns, found 3');
  });

  it('rejects each malformed identifier with its column and why', () => {
    expect(reason(line({ "Type d'identifiant PP": '3' }))).toBe(
      `unknown person id type "3" (Type d'identifiant PP): 8 (RPPS) or 0 (ADELI) expected`,
    );
    expect(reason(line(person('1000000001')))).toBe(
      'bad RPPS "1000000001" (Identifiant PP): 11 digits expected',
    );
    expect(
      reason(
        line({
          "Type d'identifiant PP": '0',
          'Identifiant PP': '99123456',
          'Identification nationale PP': '099123456',
        }),
      ),
    ).toBe('bad ADELI "99123456" (Identifiant PP): 9 characters expected');
    expect(reason(line({ 'Identification nationale PP': '810000000002' }))).toBe(
      'national id "810000000002" (Identification nationale PP) is not "8" + "10000000001"',
    );
    expect(reason(line({ "Nom d'exercice": ' ' }))).toBe("missing name (Nom d'exercice)");
    expect(reason(line({ 'Numéro SIRET site': '9999999990001' }))).toBe(
      'bad SIRET "9999999990001" (Numéro SIRET site): 14 digits expected',
    );
    expect(reason(line({ 'Numéro SIREN site': '99999999A' }))).toBe(
      'bad SIREN "99999999A" (Numéro SIREN site): 9 digits expected',
    );
    expect(reason(line({ 'Numéro FINESS site': '3499999' }))).toBe(
      'bad FINESS "3499999" (Numéro FINESS site): 9 characters expected',
    );
    expect(reason(line({ 'Identifiant technique de la structure': 'R1-0' }))).toBe(
      'bad structure id "R1-0" (Identifiant technique de la structure): 1 to 20 letters or digits expected',
    );
  });

  it('accepts ADELI numbers, Corsican ones too', () => {
    const r = parse(
      line({
        "Type d'identifiant PP": '0',
        'Identifiant PP': '2A1234567',
        'Identification nationale PP': '02A1234567',
      }),
    );
    expect('row' in r && r.row.professional.nationalId).toBe('02A1234567');
  });

  it('checks the RPPS Luhn digit as asked', () => {
    // 10000000001 fails Luhn; 10000000009 passes.
    expect(parseActivityLine(line(), columns, 2)).toMatchObject({
      warning: 'RPPS 10000000001 (Identifiant PP) fails its Luhn check digit',
    });
    expect(parseActivityLine(line(), columns, 2, 'reject')).toEqual({
      reason: 'RPPS 10000000001 (Identifiant PP) fails its Luhn check digit',
    });
    expect(parseActivityLine(line(person('10000000009')), columns, 2, 'reject')).not.toHaveProperty('reason');
  });

  it('hashes what is stored: a phone number change is no change, a city change is', () => {
    const hash = (o: Fields) => {
      const r = parse(line(o));
      return 'row' in r ? r.row.hash : r.reason;
    };
    expect(hash({ 'Téléphone (coord. structure)': '0499999999' })).toBe(hash({}));
    expect(hash({ 'Libellé commune (coord. structure)': 'LODÈVE' })).not.toBe(hash({}));
  });

  it('generates lines the parser accepts, deterministically', () => {
    const lines = [...generateActivityLines(500, 3)];
    expect(lines).toHaveLength(500);
    expect([...generateActivityLines(500, 3)]).toEqual(lines);
    for (const l of lines) {
      expect(l.split('|')).toHaveLength(57);
      expect(parseActivityLine(l, columns, 2, 'ignore')).not.toHaveProperty('reason');
    }
  });
});

// ---------------------------------------------------------------------------------------------

/** A small file: A with two activities, B with one, C without activity. */
const v1Lines = () => [
  line(person('10000000001')),
  line(person('10000000001', { 'Numéro FINESS site': '', 'Code rôle': 'FON-05', 'Code mode exercice': 'S' })),
  line(
    person('10000000002', {
      "Nom d'exercice": 'N’DIAYE',
      "Prénom d'exercice": 'Noé',
      'Code profession': '60',
      'Libellé profession': 'Infirmier',
      'Code type savoir-faire': '',
      'Code savoir-faire': '',
      'Libellé savoir-faire': '',
      'Numéro FINESS site': '',
      'Numéro SIRET site': '',
      'Raison sociale site': 'CENTRE HOSPITALIER EXEMPLE',
    }),
  ),
  activityLine({
    "Type d'identifiant PP": '0',
    'Identifiant PP': '991234567',
    'Identification nationale PP': '0991234567',
    "Nom d'exercice": 'ROUX',
    "Prénom d'exercice": 'Élodie',
    'Code profession': '91',
    'Libellé profession': 'Orthophoniste',
  }),
];

async function* chunks(bytes: Uint8Array, size: number, failAfter?: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) {
    if (failAfter !== undefined && i >= failAfter) throw new Error('connection reset while downloading');
    yield bytes.subarray(i, i + size);
  }
}

describe.each(directoryBackends(dir, 'rpps_test'))('RPPS activity import on $name', (backend) => {
  let store: DirectoryStore;
  beforeEach(async () => {
    store = await backend.open();
  });
  afterEach(async () => {
    await store.close();
    await backend.cleanup();
  });

  it('imports professionals, sites and activities, and answers by national id', async () => {
    const progress: number[] = [];
    const report = await importPersonActivity(store, writeLines('v1.txt', v1Lines()), {
      batchSize: 3,
      onProgress: (p) => progress.push(p.lines),
    });
    expect(report).toMatchObject({
      lines: 4,
      inserted: 4,
      updated: 0,
      unchanged: 0,
      retiredActivities: 0,
      rejectedCount: 0,
      warningCount: 3, // the synthetic RPPS fail Luhn
    });
    expect(progress).toEqual([3, 4]);
    expect(await store.counts()).toMatchObject({ professionals: 3, structures: 3, mailboxes: 0 });

    // Known only from this file: no mailbox, found all the same.
    const found = await store.findByNationalId('10000000001');
    expect(found).toEqual({
      professional: {
        nationalId: '810000000001',
        idType: '8',
        civility: 'DR',
        lastName: 'LEFÈVRE',
        firstName: 'Maëlle',
        professionCode: '10',
        professionLabel: 'Médecin',
        specialtyCode: 'SM54',
        specialtyLabel: 'Médecine générale',
      },
      mailboxes: [],
    });
    const activities = await store.activitiesOf('810000000001');
    expect(activities.map((a) => a.activityKey)).toEqual([
      '1:349999991|L|FON-01|GENR01',
      '3:99999999900011|S|FON-05|GENR01',
    ]);
    expect(activities[0]).toMatchObject({
      nationalId: '810000000001',
      structure: { key: '1:349999991', name: 'MAISON DE SANTE DES VIGNES', kind: 'msp' },
      roleCode: 'FON-01',
      modeLabel: 'Libéral',
      sectorCode: 'SA07',
      street: '9 T BD JEAN JAURES',
      postcode: '34800',
      city: 'CLERMONT-L’HÉRAULT',
    });
    expect((await store.activitiesOf('810000000002'))[0]?.structure).toMatchObject({
      key: '2:999999999',
      kind: 'hospital',
    });
    // A person without activity: known, with no activity.
    expect((await store.findByNationalId('0991234567'))?.professional.lastName).toBe('ROUX');
    expect(await store.activitiesOf('0991234567')).toEqual([]);
    expect(await store.activitiesOf('not an id')).toEqual([]);
  });

  it('re-importing the same file changes nothing, whatever its line endings', async () => {
    const file = writeLines('same.txt', v1Lines());
    await importPersonActivity(store, file);
    const snapshot = async () => ({
      a: await store.activitiesOf('810000000001'),
      b: await store.activitiesOf('810000000002'),
      p: await store.findByNationalId('810000000001'),
      counts: await store.counts(),
    });
    const before = await snapshot();
    expect(await importPersonActivity(store, file)).toMatchObject({
      lines: 4,
      inserted: 0,
      updated: 0,
      unchanged: 4,
      retiredActivities: 0,
      rejectedCount: 0,
    });
    // CRLF, read in 7-byte chunks: the same lines.
    const crlf = readFileSync(writeLines('same-crlf.txt', v1Lines(), '\r\n'));
    expect(await importPersonActivity(store, chunks(crlf, 7))).toMatchObject({
      lines: 4,
      unchanged: 4,
      inserted: 0,
      updated: 0,
    });
    expect(await snapshot()).toEqual(before);
  });

  it('a newer file updates what changed, retires what disappeared and revives what returns', async () => {
    const v1 = v1Lines();
    await importPersonActivity(store, writeLines('v1.txt', v1));
    const v2 = [
      v1[0]!,
      // B moved city; A's second activity is gone; D is new.
      v1[2]!.replace('|34800|34079|CLERMONT-L’HÉRAULT|', '|34700|34142|LODÈVE|'),
      v1[3]!,
      line(person('10000000003', { "Nom d'exercice": 'GARCÍA' })),
    ];
    // 1 of the 3 live activities retired: more than the default 20%, allowed here.
    const report = await importPersonActivity(store, writeLines('v2.txt', v2), { maxRetireShare: 0.5 });
    expect(report).toMatchObject({ lines: 4, inserted: 1, updated: 1, unchanged: 2, retiredActivities: 1 });
    expect((await store.activitiesOf('810000000001')).map((a) => a.activityKey)).toEqual([
      '1:349999991|L|FON-01|GENR01',
    ]);
    const all = await store.activitiesOf('810000000001', { includeRetired: true });
    expect(all).toHaveLength(2);
    expect(all[1]).toMatchObject({ activityKey: '3:99999999900011|S|FON-05|GENR01' });
    expect(all[1]?.retiredAt).toBeGreaterThan(0);
    expect((await store.activitiesOf('810000000002'))[0]).toMatchObject({
      postcode: '34700',
      city: 'LODÈVE',
    });

    // A person whose data changed is updated from their line.
    const v3 = [...v2, v1[1]!.replace('|LEFÈVRE|', '|LEFÈVRE-ROUX|')];
    v3[0] = v3[0]!.replace('|LEFÈVRE|', '|LEFÈVRE-ROUX|');
    const again = await importPersonActivity(store, writeLines('v3.txt', v3));
    expect(again).toMatchObject({ inserted: 0, updated: 2, unchanged: 3, retiredActivities: 0 });
    expect((await store.findByNationalId('810000000001'))?.professional.lastName).toBe('LEFÈVRE-ROUX');
    expect(await store.activitiesOf('810000000001')).toHaveLength(2);
  });

  it('reports rejected lines with their number and reason, and imports the rest', async () => {
    const lines = v1Lines();
    const bad = [
      ...lines,
      `${lines[0]}extra|`,
      lines[0]!.replace('|349999991|', '|3499|'),
      lines[0]!.replace('|SA07|', '|SA08|'), // same activity again, other contents
      lines[0]!, // same activity again, same contents: seen, nothing to write
      lines[2]!.replace('|CENTRE HOSPITALIER EXEMPLE|', '|CENTRE HOSPITALIER EX\u0000|'),
    ];
    const file = writeLines('bad.txt', bad);
    const bytes = readFileSync(file);
    bytes[bytes.lastIndexOf(0)] = 0xff; // an invalid UTF-8 byte on the last line
    writeFileSync(file, bytes);
    const report = await importPersonActivity(store, file, { rppsCheckDigit: 'ignore' });
    expect(report.rejected).toEqual([
      { line: 6, reason: 'expected 56 columns, found 57' },
      { line: 7, reason: 'bad FINESS "3499" (Numéro FINESS site): 9 characters expected' },
      { line: 10, reason: 'not valid UTF-8' },
      {
        line: 8,
        reason:
          'duplicate: activity "1:349999991|L|FON-01|GENR01" of 810000000001 already given on an earlier line with other contents',
      },
    ]);
    expect(report).toMatchObject({ lines: 9, inserted: 4, unchanged: 1, rejectedCount: 4, warningCount: 0 });
    expect((await store.activitiesOf('810000000001'))[0]?.sectorCode).toBe('SA07');
    // Idempotent with the duplicate in the file, also when each line is its own batch.
    expect(await importPersonActivity(store, file, { batchSize: 1 })).toMatchObject({
      inserted: 0,
      updated: 0,
      unchanged: 5,
      rejectedCount: 4,
    });
  });

  it('refuses a wrong header with a clear error and retires nothing', async () => {
    await importPersonActivity(store, writeLines('v1.txt', v1Lines()));
    const file = join(dir, 'extract-instead.txt');
    writeFileSync(file, readFileSync(EXTRACT_SAMPLE));
    await expect(importPersonActivity(store, file)).rejects.toThrow(
      new RegExp(
        `^${file}: line 1 is not a PS_LibreAcces_Personne_activite header \\(31 columns, 56 expected\\)`,
      ),
    );
    const empty = join(dir, 'empty.txt');
    writeFileSync(empty, '');
    await expect(importPersonActivity(store, empty)).rejects.toThrow(`${empty} is empty: no header line`);
    expect(await store.activitiesOf('810000000001')).toHaveLength(2);
  });

  it('retires nothing when the file breaks off part-way, and the next import runs', async () => {
    await importPersonActivity(store, writeLines('v1.txt', v1Lines()));
    const bytes = readFileSync(writeLines('v2.txt', [v1Lines()[0]!, ...generateActivityLines(200, 9)]));
    await expect(importPersonActivity(store, chunks(bytes, 4096, 8192), { batchSize: 10 })).rejects.toThrow(
      'connection reset while downloading',
    );
    // Marked failed with the reason, lock released; the lines read were stored, nothing was retired.
    expect((await store.listImports(1))[0]).toMatchObject({
      kind: 'rpps',
      state: 'failed',
      summary: JSON.stringify({ failed: 'connection reset while downloading' }),
    });
    expect(await store.activitiesOf('810000000001')).toHaveLength(2);
    expect(await store.activitiesOf('810000000002')).toHaveLength(1);
    // The lock is free again; this complete import retires what the broken one left behind.
    // It retires almost everything the broken one wrote: the operator forces it.
    const next = await importPersonActivity(store, writeLines('v1-again.txt', v1Lines()), {
      forceRetire: true,
    });
    expect(next).toMatchObject({ unchanged: 4, inserted: 0 });
    expect(next.retiredActivities).toBeGreaterThan(10);
  });

  it('waits its turn: refused while another import holds the lock, nothing written', async () => {
    const other = await store.beginImport('extract-mssante');
    await expect(importPersonActivity(store, writeLines('v1.txt', v1Lines()))).rejects.toThrow(
      /cannot start the rpps import: import \d+ \(extract-mssante\) is running/,
    );
    expect(await store.counts()).toMatchObject({ professionals: 0 });
    await store.failImport(other, 'test');
    expect(await importPersonActivity(store, writeLines('v1.txt', v1Lines()))).toMatchObject({ inserted: 4 });
  });

  it('leaves the mailbox extract alone (its mailboxes stay live) and shares the structures', async () => {
    await importExtract(store, EXTRACT_SAMPLE);
    const rpps = await importPersonActivity(
      store,
      writeLines('at-chu.txt', [
        line(
          person('19990000000', {
            'Numéro FINESS site': '',
            'Numéro SIRET site': '',
            'Numéro SIREN site': '',
            'Identifiant technique de la structure': '199900001',
            'Raison sociale site': 'CABINET MEDICAL DU CENTRE',
            "Nom d'exercice": 'LAURENT',
            "Prénom d'exercice": 'Mathéo',
          }),
        ),
      ]),
    );
    expect(rpps).toMatchObject({ inserted: 1, retiredActivities: 0 });
    expect((await store.counts()).liveMailboxes).toBe(40);
    // The extract's professional gains an activity at the extract's structure 4:199900001.
    expect((await store.findByNationalId('819990000000'))?.mailboxes).toHaveLength(1);
    expect((await store.activitiesOf('819990000000'))[0]?.structure?.key).toBe('4:199900001');
    expect(await importExtract(store, EXTRACT_SAMPLE)).toMatchObject({ unchanged: 40, retiredMailboxes: 0 });
  });

  it('imports a generated file and re-imports it unchanged', async () => {
    const file = join(dir, `gen-${backend.name}.txt`);
    await writeActivityFile(file, 3000, 5);
    const first = await importPersonActivity(store, file);
    expect(first).toMatchObject({ lines: 3000, rejectedCount: 0, unchanged: 0, updated: 0, inserted: 3000 });
    const again = await importPersonActivity(store, file);
    expect(again).toMatchObject({ inserted: 0, updated: 0, unchanged: 3000, retiredActivities: 0 });
  });
});
