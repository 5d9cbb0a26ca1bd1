import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  luhnValid,
  normaliseText,
  parseExtractLine,
  parseWhitelist,
  sameDn,
  toNationalId,
} from '../directory/index.ts';
import { lineReader } from '../directory/extract-import.ts';

const SAMPLE = new URL('../../shared/fixtures/Extraction_Correspondance_MSSante_sample.txt', import.meta.url);
const WHITELIST = fileURLToPath(new URL('../../shared/fixtures/listeblanche_sample.xml', import.meta.url));
const sample = readFileSync(SAMPLE, 'utf8').trimEnd().split('\n');

async function collect(chunks: (string | Uint8Array)[]) {
  const reader = lineReader(
    (async function* () {
      for (const c of chunks) yield typeof c === 'string' ? Buffer.from(c) : c;
    })(),
  );
  const out: [number, string | undefined][] = [];
  for await (const l of reader.lines) out.push([l.lineNo, l.text]);
  return { out, bytes: reader.bytes };
}

describe('line reader', () => {
  it('splits across chunk boundaries, drops CR, keeps a last line without LF', async () => {
    const { out, bytes } = await collect(['ab', 'c\r\nd', 'é', 'f\n\nlast']);
    expect(out).toEqual([
      [1, 'abc'],
      [2, 'déf'],
      [3, ''],
      [4, 'last'],
    ]);
    expect(bytes).toBe(15);
  });

  it('flags a line that is not UTF-8 and goes on', async () => {
    // "é" cut in two by a chunk boundary is fine; a lone 0xff is not.
    const e = Buffer.from('é');
    const { out } = await collect([Buffer.from([0x61, e[0]!]), Buffer.from([e[1]!, 0x0a, 0xff, 0x0a, 0x62])]);
    expect(out).toEqual([
      [1, 'aé'],
      [2, undefined],
      [3, 'b'],
    ]);
  });
});

describe('extract lines', () => {
  it('parses a PER line of the sample', () => {
    const r = parseExtractLine(sample[3]!, 4, 'ignore');
    expect(r).toEqual({
      row: {
        lineNo: 4,
        hash: '',
        type: 'PER',
        address: 'maelle.lefevre2@msp-des-vignes.mssante.fr',
        domain: 'msp-des-vignes.mssante.fr',
        professional: {
          nationalId: '819990000002',
          idType: '8',
          civility: 'DR',
          lastName: 'LEFÈVRE',
          firstName: 'Maëlle',
          professionCode: '80',
          professionLabel: 'Pédicure-Podologue',
        },
        structure: {
          key: '3:99999999900037',
          idType: '3',
          identification: '99999999900037',
          name: 'ESP VAL VERT',
          kind: 'esp',
        },
        street: '9 T BD JEAN JAURES',
        postcode: '74000',
        city: 'ANNECY',
        department: '74',
        country: 'FRANCE',
        dematerialisation: true,
      },
    });
  });

  it('accepts every line of the sample', () => {
    for (const [i, line] of sample.slice(1).entries()) {
      expect(parseExtractLine(line, i + 2, 'ignore')).toHaveProperty('row');
    }
  });

  it('parses an ORG line without person', () => {
    const r = parseExtractLine(sample[8]!, 9);
    expect(r).toMatchObject({
      row: { type: 'ORG', service: 'Coordination', structure: { kind: 'hospital' }, city: 'CARCASSONNE' },
    });
    expect('row' in r && r.row.professional).toBeUndefined();
  });

  const variant = (edit: (cols: string[]) => void) => {
    const cols = sample[1]!.split('|');
    edit(cols);
    return cols.join('|');
  };
  it.each([
    [
      'ADELI person id',
      (c: string[]) => ((c[2] = '0'), (c[3] = '751234567'), (c[4] = '0751234567')),
      undefined,
    ],
    [
      'unknown person id type',
      (c: string[]) => (c[2] = '9'),
      'unknown person id type "9" (column 3): 8 (RPPS) or 0 (ADELI) expected',
    ],
    [
      'bad ADELI',
      (c: string[]) => ((c[2] = '0'), (c[3] = '12'), (c[4] = '012')),
      'bad ADELI "12" (column 4): 9 characters expected',
    ],
    ['missing name', (c: string[]) => (c[9] = ''), 'missing name (column 10) for a person'],
    [
      'bad structure type',
      (c: string[]) => (c[5] = '7'),
      'unknown structure id type "7" (column 6): 0 to 4 expected',
    ],
    ['bad structure id', (c: string[]) => (c[6] = '13 40'), 'bad structure id "13 40" (column 7)'],
    [
      'address without domain',
      (c: string[]) => (c[1] = 'someone'),
      'bad address (column 2): invalid mailbox address "someone": expected local-part@domain',
    ],
  ])('%s', (_, edit, reason) => {
    const r = parseExtractLine(variant(edit), 2, 'ignore');
    if (reason === undefined) expect(r).toHaveProperty('row');
    else expect(r).toEqual({ reason });
  });

  it('checks the RPPS Luhn digit on demand', () => {
    const valid = variant((c) => ((c[3] = '10000000009'), (c[4] = '810000000009')));
    expect(luhnValid('10000000009')).toBe(true);
    expect(parseExtractLine(valid, 2, 'reject')).toHaveProperty('row');
    expect(parseExtractLine(sample[1]!, 2, 'reject')).toEqual({
      reason: 'RPPS 19990000000 (column 4) fails its Luhn check digit',
    });
    expect(parseExtractLine(sample[1]!, 2, 'warn')).toMatchObject({
      warning: 'RPPS 19990000000 (column 4) fails its Luhn check digit',
    });
  });
});

describe('identifiers and names', () => {
  it('normalises for search', () => {
    expect(normaliseText('LEFÈVRE')).toBe('lefevre');
    expect(normaliseText("N'DIAYE Inès")).toBe('ndiaye ines');
    expect(normaliseText('FONTAINE-MÉRIL  Raphaël')).toBe('fontaine meril raphael');
    expect(normaliseText('Œuvre Cœur')).toBe('oeuvre coeur');
    expect(normaliseText('Pédicure-Podologue')).toBe('pedicure podologue');
  });

  it('reads national ids', () => {
    expect(toNationalId('19990000014')).toBe('819990000014');
    expect(toNationalId('819990000014')).toBe('819990000014');
    expect(toNationalId('0751234567')).toBe('0751234567');
    expect(toNationalId('02A1234567')).toBe('02A1234567');
    expect(toNationalId('8123')).toBeUndefined();
    expect(toNationalId('x')).toBeUndefined();
  });

  it('computes Luhn', () => {
    expect(luhnValid('79927398713')).toBe(true);
    expect(luhnValid('79927398710')).toBe(false);
    expect(luhnValid('')).toBe(false);
    expect(luhnValid('12a')).toBe(false);
  });
});

describe('whitelist parser', () => {
  const text = readFileSync(WHITELIST, 'utf8');

  it('reads the sample, one entry per operator DN', async () => {
    const r = await parseWhitelist(text);
    expect(r.generatedAt).toBe('2026-11-01T06:00:00Z');
    expect(r.truncated).toBe(false);
    expect(r.skipped).toEqual([]);
    expect(r.entries).toHaveLength(6);
    expect(r.entries[5]).toEqual({
      domain: 'esp-val-vert.mssante.fr',
      operatorDn: 'CN=gw.esp-val-vert.fr,OU=99999999900037,O=ESP VAL VERT,ST=Haute-Savoie (74),C=FR',
      description: 'ESP VAL VERT — équipe de soins primaires',
      updatedAt: '2026-07-02T14:00:00Z',
    });
  });

  it('gives the same result whatever the chunking', async () => {
    const whole = await parseWhitelist(text);
    for (const size of [1, 7, 100]) {
      const chunks = (async function* () {
        for (let i = 0; i < text.length; i += size) yield text.slice(i, i + size);
      })();
      expect(await parseWhitelist(chunks)).toEqual(whole);
    }
  });

  it('flags a file without its closing tags', async () => {
    const r = await parseWhitelist(text.slice(0, text.indexOf('</ListeDomaines>')));
    expect(r.truncated).toBe(true);
    expect(r.entries).toHaveLength(6);
    expect(r.skipped).toEqual([]);
  });

  it('skips broken blocks with their line, keeps the rest', async () => {
    const broken = text
      .replace('<Nom>ch-exemple.mssante.fr</Nom>', '<Nom>not a domain</Nom>')
      .replace(/<DNCertificatOperateur>CN=gw.esp-val-vert[^<]*<\/DNCertificatOperateur>/, '')
      .replace(
        /(<Nom>cpts-sud-exemple.mssante.fr<\/Nom>[\s\S]*?)<\/Domaine>/,
        '$1', // a block that never closes before the next one opens
      );
    const r = await parseWhitelist(broken);
    expect(r.skipped).toEqual([
      { line: 20, reason: 'missing or invalid Nom "not a domain"' },
      { line: 28, reason: 'Domaine element not closed before the next one' },
      { line: 44, reason: 'no DNCertificatOperateur for esp-val-vert.mssante.fr' },
    ]);
    expect(r.entries.map((e) => e.domain)).toEqual([
      'medecin.mssante.fr',
      'medecin.mssante.fr',
      'msp-des-vignes.mssante.fr',
    ]);
  });

  it('accepts namespace prefixes and entities', async () => {
    const r = await parseWhitelist(
      '<ns2:ListeBlancheMSSante xmlns:ns2="x"><ns2:Domaine><ns2:Nom>A.Example.FR</ns2:Nom>' +
        '<ns2:DNCertificatOperateur>CN=a,O=A &amp; B,C=FR</ns2:DNCertificatOperateur></ns2:Domaine></ns2:ListeBlancheMSSante>',
    );
    expect(r).toEqual({
      entries: [{ domain: 'a.example.fr', operatorDn: 'CN=a,O=A & B,C=FR' }],
      skipped: [],
      truncated: false,
    });
  });

  it('compares DNs leniently on spacing and attribute case only', () => {
    expect(sameDn('CN=mx1.op.fr,OU=1,O=GIP OP,C=FR', 'cn=mx1.op.fr, ou=1, o=GIP OP, c=FR')).toBe(true);
    expect(sameDn('CN=mx1.op.fr,O=GIP OP', 'CN=mx1.op.fr,O=gip op')).toBe(false);
    expect(sameDn('CN=mx1.op.fr,O=GIP OP', 'CN=mx2.op.fr,O=GIP OP')).toBe(false);
  });
});
