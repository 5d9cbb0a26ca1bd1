import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  importExtract,
  importWhitelist,
  openMailboxStore,
  openSqliteDirectory,
  ImportLockError,
  type DirectoryStore,
} from '../directory/index.ts';
import type { SearchQuery } from '../directory/model.ts';
import { likeEscape, normaliseText } from '../directory/normalise.ts';
import {
  directoryBackends,
  EXTRACT_SAMPLE as SAMPLE,
  postgresBackend,
  generateExtract,
  sampleLines,
  testDir,
  WHITELIST_SAMPLE as WHITELIST,
  type DirectoryBackend,
} from './helpers/directory-backends.ts';

const INDEX = fileURLToPath(new URL('../directory/index.ts', import.meta.url));

const dir = testDir('courrier-directory-');
function writeExtract(name: string, lines: string[]): string {
  const file = join(dir, name);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}
const generate = (n: number, seed: number) => generateExtract(dir, n, seed);
const backends = () => directoryBackends(dir, 'dir_test');

describe.each(backends())('directory on $name', (backend) => {
  let store: DirectoryStore;
  beforeEach(async () => {
    store = await backend.open();
  });
  afterEach(async () => {
    await store.close();
    await backend.cleanup();
  });

  describe('extract import', () => {
    it('imports the shared sample', async () => {
      const progress: number[] = [];
      const report = await importExtract(store, SAMPLE, {
        batchSize: 16,
        onProgress: (p) => progress.push(p.lines),
      });
      expect(report).toMatchObject({ lines: 40, inserted: 40, updated: 0, unchanged: 0, rejectedCount: 0 });
      expect(progress).toEqual([16, 32, 40]);
      expect(await store.counts()).toMatchObject({
        professionals: 34,
        mailboxes: 40,
        liveMailboxes: 40,
        structures: 5,
      });
      const m = await store.resolveAddress('Maelle.Lefevre2@MSP-DES-VIGNES.mssante.fr');
      expect(m).toMatchObject({
        address: 'maelle.lefevre2@msp-des-vignes.mssante.fr',
        domain: 'msp-des-vignes.mssante.fr',
        type: 'PER',
        source: 'extract',
        hidden: false,
        hosted: false,
        dematerialisation: true,
        owner: {
          nationalId: '819990000002',
          idType: '8',
          civility: 'DR',
          lastName: 'LEFÈVRE',
          firstName: 'Maëlle',
          professionCode: '80',
          professionLabel: 'Pédicure-Podologue',
        },
        structures: [
          {
            structure: { key: '3:99999999900037', idType: '3', name: 'ESP VAL VERT', kind: 'esp' },
            street: '9 T BD JEAN JAURES',
            postcode: '74000',
            city: 'ANNECY',
            department: '74',
            country: 'FRANCE',
          },
        ],
      });
      const org = await store.resolveAddress('coordination.centrehospitalierexemple7@ch-exemple.mssante.fr');
      expect(org).toMatchObject({ type: 'ORG', displayName: 'Coordination — CENTRE HOSPITALIER EXEMPLE' });
      expect(org?.owner).toBeUndefined();
      expect(org?.structures[0]).toMatchObject({ service: 'Coordination', structure: { kind: 'hospital' } });
    });

    it('re-importing the same file changes nothing', async () => {
      await importExtract(store, SAMPLE);
      const before = await store.search({ limit: 500 });
      const again = await importExtract(store, SAMPLE);
      expect(again).toMatchObject({ lines: 40, inserted: 0, updated: 0, unchanged: 40, retiredMailboxes: 0 });
      expect(await store.search({ limit: 500 })).toEqual(before);
    });

    it('a newer file updates what changed, retires what disappeared and revives what returns', async () => {
      const lines = sampleLines();
      await importExtract(store, writeExtract('v1.txt', lines));
      const v2 = lines.filter((_, i) => i !== 2 && i !== 8);
      v2[1] = v2[1]!.replace('|LAURENT|Mathéo|', '|LAURENT-PETIT|Mathéo|');
      v2.push(lines[6]!.replace('raphael.fontaine-meril5@', 'raphael.fontaine-meril.new@'));
      const report = await importExtract(store, writeExtract('v2.txt', v2));
      expect(report).toMatchObject({
        lines: 39,
        inserted: 1,
        updated: 1,
        unchanged: 37,
        retiredMailboxes: 2,
      });
      expect(await store.resolveAddress('elodie.roux1@infirmier.mssante.fr')).toBeUndefined();
      const retired = await store.resolveAddress('elodie.roux1@infirmier.mssante.fr', {
        includeRetired: true,
      });
      expect(retired?.retiredAt).toBeGreaterThan(0);
      expect(retired?.structures).toHaveLength(1);
      expect((await store.resolveAddress('matheo.laurent0@pharmacien.mssante.fr'))?.owner?.lastName).toBe(
        'LAURENT-PETIT',
      );
      expect(await store.counts()).toMatchObject({ mailboxes: 41, liveMailboxes: 39 });
      expect((await store.search({ name: 'roux elodie' })).map((m) => m.address)).toEqual([]);

      const v3 = await importExtract(store, writeExtract('v1-again.txt', lines));
      expect(v3).toMatchObject({ inserted: 0, updated: 3, unchanged: 37, retiredMailboxes: 1 });
      expect((await store.resolveAddress('elodie.roux1@infirmier.mssante.fr'))?.retiredAt).toBeUndefined();
    });

    it('reports rejected lines with their number and reason, and imports the rest', async () => {
      const lines = sampleLines();
      const bad = [...lines];
      bad[1] = `${lines[1]}|extra`;
      bad[2] = lines[2]!.replace('|19990000001|819990000001|', '|1999000001|81999000001|');
      bad[3] = lines[3]!.replace('|819990000002|', '|819990000999|');
      bad[4] = lines[4]!.replace('matheo.ndiaye3@', 'matheo ndiaye3@');
      bad[5] = lines[5]!.replace(/^PER/, 'XYZ');
      bad[6] = lines[6]!.split('|').slice(0, 12).join('|');
      bad.push(lines[9]!.replace('|DUBOIS|', '|DUBOIS-AUTRE|'));
      const file = writeExtract('bad.txt', bad);
      // An invalid UTF-8 byte in line 9.
      const bytes = readFileSync(file);
      const at = bytes.indexOf('CARCASSONNE');
      bytes[at] = 0xff;
      writeFileSync(file, bytes);
      const report = await importExtract(store, file);
      expect(report.lines).toBe(41);
      expect(report.rejected).toEqual([
        { line: 2, reason: 'expected 31 columns, found 32' },
        { line: 3, reason: 'bad RPPS "1999000001" (column 4): 11 digits expected' },
        { line: 4, reason: 'national id "819990000999" (column 5) is not "8" + "19990000002"' },
        { line: 5, reason: expect.stringMatching(/^bad address \(column 2\): .*invalid local part/) },
        { line: 6, reason: 'unknown mailbox type "XYZ" (column 1)' },
        { line: 7, reason: 'expected 31 columns, found 12' },
        { line: 9, reason: 'not valid UTF-8' },
        {
          line: 42,
          reason:
            'duplicate: raphael.dubois8@ch-exemple.mssante.fr at structure 4:199900001 already given on an earlier line',
        },
      ]);
      expect(report).toMatchObject({ rejectedCount: 8, inserted: 33 });
      expect(await store.resolveAddress('raphael.dubois8@ch-exemple.mssante.fr')).toMatchObject({
        owner: { lastName: 'DUBOIS' },
      });
      // Idempotent with the duplicate in the file too.
      expect(await importExtract(store, file)).toMatchObject({ inserted: 0, updated: 0, unchanged: 33 });
    });

    it('checks the RPPS Luhn digit as asked', async () => {
      const lines = sampleLines().slice(0, 3);
      const file = writeExtract('luhn.txt', lines);
      const warned = await importExtract(store, file);
      // 19990000000 and 19990000001: the generator's numbers carry no check digit.
      expect(warned.rejectedCount).toBe(0);
      expect(warned.warnings).toEqual([
        { line: 2, reason: 'RPPS 19990000000 (column 4) fails its Luhn check digit' },
        { line: 3, reason: 'RPPS 19990000001 (column 4) fails its Luhn check digit' },
      ]);
      const rejected = await importExtract(store, file, { rppsCheckDigit: 'reject', retireMissing: false });
      expect(rejected.rejectedCount).toBe(2);
      expect((await importExtract(store, file, { rppsCheckDigit: 'ignore' })).warningCount).toBe(0);
    });

    it('refuses a file without the header and retires nothing', async () => {
      await importExtract(store, SAMPLE);
      await expect(importExtract(store, writeExtract('nohead.txt', sampleLines().slice(1)))).rejects.toThrow(
        /line 1 is not the Extraction_Correspondance_MSSante header/,
      );
      expect((await store.counts()).liveMailboxes).toBe(40);
    });

    it('imports a generated file and re-imports it unchanged', async () => {
      const file = generate(5000, 11);
      const first = await importExtract(store, file);
      expect(first.lines).toBe(5000);
      // The generator repeats some lines word for word (the real file does too): seen, nothing to write.
      expect(first.inserted + first.unchanged + first.rejectedCount).toBe(5000);
      expect(first.inserted).toBeGreaterThan(4900);
      const again = await importExtract(store, file);
      expect(again).toMatchObject({
        inserted: 0,
        updated: 0,
        unchanged: 5000 - first.rejectedCount,
        retiredMailboxes: 0,
      });
    });
  });

  describe('queries', () => {
    beforeEach(async () => {
      await importExtract(store, SAMPLE);
    });

    it('finds a professional by national id, with or without the RPPS prefix', async () => {
      const found = await store.findByNationalId('819990000014');
      expect(found?.professional).toMatchObject({
        lastName: "N'DIAYE",
        firstName: 'Inès',
        professionCode: '50',
      });
      expect(found?.mailboxes.map((m) => m.address)).toEqual(['ines.ndiaye14@cpts-sud-exemple.mssante.fr']);
      expect((await store.findByNationalId('19990000014'))?.professional.nationalId).toBe('819990000014');
      expect(await store.findByNationalId('819999999999')).toBeUndefined();
      expect(await store.findByNationalId('nonsense')).toBeUndefined();
    });

    it('searches names without accents or case', async () => {
      const names = async (q: Parameters<DirectoryStore['search']>[0]) =>
        (await store.search(q)).map((m) =>
          `${m.owner?.lastName ?? m.displayName} ${m.owner?.firstName ?? ''}`.trim(),
        );
      expect(await names({ name: 'lefevre' })).toEqual(['LEFÈVRE Maëlle']);
      expect(await names({ name: 'LEFÈVRE maelle' })).toEqual(['LEFÈVRE Maëlle']);
      expect(await names({ name: 'ndiaye' })).toHaveLength(3);
      expect(await names({ name: "n'diaye ines" })).toEqual(["N'DIAYE Inès"]);
      expect(await names({ name: 'fontaine-meril raphael' })).toEqual([
        'FONTAINE-MÉRIL Raphaël',
        'FONTAINE-MÉRIL Raphaël',
      ]);
      expect(await names({ name: 'garcia' })).toEqual(['GARCÍA Noël', 'GARCÍA Raphaël']);
      expect(await names({ name: 'cardiologie' })).toHaveLength(3);
      expect(await names({ name: '100%_' })).toEqual([]);
    });

    it('searches by profession, city and structure', async () => {
      const addresses = async (q: Parameters<DirectoryStore['search']>[0]) =>
        (await store.search(q)).map((m) => m.address);
      expect(await addresses({ profession: '60' })).toEqual([
        'anais.david33@pharmacien.mssante.fr',
        'noel.robert25@ch-exemple.mssante.fr',
      ]);
      expect(await addresses({ profession: 'kinesitherapeute' })).toHaveLength(3);
      expect(await addresses({ profession: 'sage femme', city: 'chateau-gontier' })).toEqual([
        'loic.david18@esp-val-vert.mssante.fr',
        'raphael.garcia9@pro.mssante.fr',
      ]);
      expect(await addresses({ city: '11000' })).toHaveLength(4);
      expect(await addresses({ structure: 'MSP des Vignes', type: 'ORG' })).toEqual([
        'cardiologie.mspdesvignes29@pro.mssante.fr',
      ]);
      expect(await addresses({ structure: '4:199900001', profession: '10' })).toEqual([
        'noel.leroy10@infirmier.mssante.fr',
        'noel.martin28@cpts-sud-exemple.mssante.fr',
      ]);
      expect(await addresses({ limit: 3 })).toHaveLength(3);
    });

    it('leaves hidden mailboxes out of search, not out of resolution', async () => {
      expect(await store.setHidden('ZOE.LEROY6@cpts-sud-exemple.mssante.fr', true)).toBe(true);
      expect(await store.setHidden('nobody@x.example', true)).toBe(false);
      expect(await store.search({ name: 'leroy zoe' })).toEqual([]);
      expect(await store.search({ name: 'leroy zoe', includeHidden: true })).toHaveLength(1);
      expect((await store.resolveAddress('zoe.leroy6@cpts-sud-exemple.mssante.fr'))?.hidden).toBe(true);
      // An import does not undo the operator's choice.
      await importExtract(store, SAMPLE);
      expect((await store.resolveAddress('zoe.leroy6@cpts-sud-exemple.mssante.fr'))?.hidden).toBe(true);
    });

    it('expands a team address, deduplicated, optionally by profession', async () => {
      await store.saveTeam({
        id: 'cpts-sud',
        kind: 'CPTS',
        name: 'CPTS Sud Exemple',
        structureKey: '3:99999999900029',
        address: 'Equipe@cpts-sud-exemple.mssante.fr',
      });
      await store.addTeamMember('cpts-sud', {
        kind: 'professional',
        nationalId: '819990000014',
        role: 'coordinatrice',
      });
      await store.addTeamMember('cpts-sud', { kind: 'professional', nationalId: '19990000009' });
      await store.addTeamMember('cpts-sud', { kind: 'professional', nationalId: '819990000004' });
      await store.addTeamMember('cpts-sud', {
        kind: 'professional',
        nationalId: '819990000004',
        role: 'médecin',
      });
      await store.addTeamMember('cpts-sud', {
        kind: 'mailbox',
        address: 'coordination.centrehospitalierexemple7@ch-exemple.mssante.fr',
        professionCode: '10',
      });
      await store.addTeamMember('cpts-sud', {
        kind: 'professional',
        nationalId: '810000000000',
        professionCode: '60',
      });
      await expect(
        store.addTeamMember('nope', { kind: 'professional', nationalId: '819990000004' }),
      ).rejects.toThrow('no team "nope"');

      const team = await store.getTeam('equipe@CPTS-SUD-EXEMPLE.mssante.fr');
      expect(team?.members).toHaveLength(5);
      expect(team?.members.find((m) => m.kind === 'professional' && m.nationalId === '819990000004')).toEqual(
        {
          kind: 'professional',
          nationalId: '819990000004',
          role: 'médecin',
          professionCode: '10',
        },
      );

      const all = await store.expandTeam('cpts-sud');
      expect(all?.recipients.map((r) => r.address).sort()).toEqual([
        'coordination.centrehospitalierexemple7@ch-exemple.mssante.fr',
        'ines.ndiaye14@cpts-sud-exemple.mssante.fr',
        'maelle.michel4@ch-exemple.mssante.fr',
        'raphael.garcia9@pro.mssante.fr',
      ]);
      expect(all?.unreachable).toEqual([
        { kind: 'professional', nationalId: '810000000000', professionCode: '60' },
      ]);
      const doctors = await store.expandTeam('equipe@cpts-sud-exemple.mssante.fr', { profession: '10' });
      expect(doctors?.recipients.map((r) => r.address).sort()).toEqual([
        'coordination.centrehospitalierexemple7@ch-exemple.mssante.fr',
        'maelle.michel4@ch-exemple.mssante.fr',
      ]);
      expect(
        await store.removeTeamMember('cpts-sud', { kind: 'professional', nationalId: '819990000004' }),
      ).toBe(true);
      expect((await store.expandTeam('cpts-sud', { profession: '10' }))?.recipients).toHaveLength(1);
      expect(await store.expandTeam('unknown-team')).toBeUndefined();
    });

    it('gives one address per member even with two mailboxes, and none twice', async () => {
      await store.saveLocalMailbox({
        address: 'ines.ndiaye@autre.example',
        type: 'PER',
        nationalId: '819990000014',
      });
      await store.saveTeam({ id: 'esp-1', kind: 'ESP', name: 'ESP 1' });
      await store.addTeamMember('esp-1', { kind: 'professional', nationalId: '819990000014' });
      await store.addTeamMember('esp-1', { kind: 'mailbox', address: 'ines.ndiaye@autre.example' });
      const exp = await store.expandTeam('esp-1');
      expect(exp?.recipients.map((r) => r.address)).toEqual(['ines.ndiaye@autre.example']);
    });
  });

  describe('certificates and keys', () => {
    let certPem: Buffer;
    beforeAll(() => {
      const keyFile = join(dir, 'k.pem');
      certPem = execFileSync('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        keyFile,
        '-subj',
        '/CN=dr.test@medecin.mssante.fr',
        '-days',
        '30',
      ]);
    });

    it('attaches an S/MIME certificate with its validity and an OpenPGP key', async () => {
      const smime = await store.attachKey('Dr.Test@medecin.mssante.fr', { format: 'smime', data: certPem });
      expect(smime.address).toBe('dr.test@medecin.mssante.fr');
      expect(smime.fingerprint).toMatch(/^[0-9a-f]{64}$/);
      expect(smime.notAfter! - smime.notBefore!).toBe(30 * 86_400_000);
      const pgpBytes = randomBytes(300);
      const now = Date.now();
      await store.attachKey('dr.test@medecin.mssante.fr', {
        format: 'openpgp',
        data: pgpBytes,
        notBefore: now - 1000,
        preferred: true,
      });
      const keys = await store.keysFor('dr.test@medecin.mssante.fr');
      expect(keys.map((k) => [k.format, k.preferred])).toEqual([
        ['openpgp', true],
        ['smime', false],
      ]);
      expect(Buffer.from(keys[0]!.data).equals(pgpBytes)).toBe(true);
      expect(Buffer.from(keys[1]!.data).equals(certPem)).toBe(true);
      expect(await store.keysFor('dr.test@medecin.mssante.fr', { format: 'smime' })).toHaveLength(1);
      expect(await store.keysFor('dr.test@medecin.mssante.fr', { at: now + 31 * 86_400_000 })).toHaveLength(
        1,
      );
      expect(await store.keysFor('dr.test@medecin.mssante.fr', { at: now - 86_400_000 })).toHaveLength(0);
      expect(await store.detachKey('dr.test@medecin.mssante.fr', smime.fingerprint)).toBe(true);
      expect(await store.keysFor('dr.test@medecin.mssante.fr', { includeInvalid: true })).toHaveLength(1);
      expect((await store.counts()).keys).toBe(1);
    });

    it('refuses an unreadable certificate', async () => {
      await expect(
        store.attachKey('a@b.example', { format: 'smime', data: Buffer.from('not a certificate') }),
      ).rejects.toThrow(/the S\/MIME certificate for a@b.example cannot be read/);
    });

    it('keeps one preferred key per format', async () => {
      const a = await store.attachKey('a@b.example', {
        format: 'openpgp',
        data: randomBytes(50),
        preferred: true,
      });
      const b = await store.attachKey('a@b.example', {
        format: 'openpgp',
        data: randomBytes(50),
        preferred: true,
      });
      const keys = await store.keysFor('a@b.example');
      expect(keys.map((k) => [k.fingerprint, k.preferred])).toEqual([
        [b.fingerprint, true],
        [a.fingerprint, false],
      ]);
    });
  });

  describe('trust space', () => {
    it('imports the whitelist and answers per domain', async () => {
      const report = await importWhitelist(store, WHITELIST);
      expect(report).toMatchObject({ domains: 5, truncated: false, skipped: [], removed: 0 });
      expect(report.entries).toHaveLength(6);
      expect(await store.isTrustedDomain('MEDECIN.mssante.fr')).toBe(true);
      expect(await store.isTrustedDomain('mssante.fr')).toBe(false);
      expect(await store.operatorDnsFor('medecin.mssante.fr')).toEqual([
        'CN=mx1.operateur-exemple.fr,OU=199900000001,O=GIP OPERATEUR EXEMPLE,ST=Paris (75),C=FR',
        'CN=mx2.operateur-exemple.fr,OU=199900000001,O=GIP OPERATEUR EXEMPLE,ST=Paris (75),C=FR',
      ]);
      expect(await store.operatorDnsFor('unknown.example')).toEqual([]);
      expect((await store.counts()).trustDomains).toBe(5);
    });

    it('a complete list replaces the previous one, a truncated one only adds', async () => {
      await importWhitelist(store, WHITELIST);
      const text = readFileSync(WHITELIST, 'utf8');
      const truncatedFile = join(dir, 'truncated.xml');
      // Cut inside the last Domaine, after replacing the first domain's name.
      writeFileSync(
        truncatedFile,
        text
          .replace('<Nom>medecin.mssante.fr</Nom>', '<Nom>new.mssante.fr</Nom>')
          .slice(0, text.lastIndexOf('<DNCertificatOperateur>')),
      );
      const truncated = await importWhitelist(store, truncatedFile);
      expect(truncated.truncated).toBe(true);
      expect(truncated.skipped).toEqual([
        { line: 44, reason: 'Domaine element cut off by the end of the file' },
      ]);
      expect(truncated.removed).toBe(0);
      expect(await store.isTrustedDomain('new.mssante.fr')).toBe(true);
      expect(await store.isTrustedDomain('esp-val-vert.mssante.fr')).toBe(true);

      const smaller = join(dir, 'smaller.xml');
      writeFileSync(smaller, text.replace(/<Domaine>\s*<Nom>esp-val-vert[\s\S]*?<\/Domaine>/, ''));
      const replaced = await importWhitelist(store, smaller);
      expect(replaced.truncated).toBe(false);
      expect(await store.isTrustedDomain('esp-val-vert.mssante.fr')).toBe(false);
      expect(await store.isTrustedDomain('new.mssante.fr')).toBe(false);
    });
  });

  it('survives a reopen and leaves the schema version alone', async () => {
    await importExtract(store, SAMPLE);
    await store.close();
    store = await backend.open();
    expect((await store.counts()).mailboxes).toBe(40);
  });
});

describe('directory beside the hosted-mailbox store (one SQLite file)', () => {
  it('reports hosted mailboxes and resolves hosted-only ones', async () => {
    const file = join(dir, 'shared.sqlite');
    const hosted = openMailboxStore(file);
    const store = await openSqliteDirectory(file, { hostedMailboxes: hosted });
    try {
      await importExtract(store, SAMPLE);
      await hosted.add('matheo.laurent0@pharmacien.mssante.fr');
      await hosted.add('logiciel@cabinet.example', { type: 'APP', displayName: 'Logiciel métier' });
      expect((await store.resolveAddress('matheo.laurent0@pharmacien.mssante.fr'))?.hosted).toBe(true);
      expect((await store.resolveAddress('elodie.roux1@infirmier.mssante.fr'))?.hosted).toBe(false);
      expect(await store.resolveAddress('LOGICIEL@cabinet.example')).toMatchObject({
        address: 'logiciel@cabinet.example',
        type: 'APP',
        source: 'local',
        hosted: true,
        displayName: 'Logiciel métier',
        structures: [],
      });
      // The hosted-mailbox store still opens (its own schema version is untouched).
      hosted.close();
      const again = openMailboxStore(file);
      expect(again.isHosted('logiciel@cabinet.example')).toBe(true);
      again.close();
    } finally {
      hosted.close();
      await store.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Import lock: one import at a time per store, across connections and processes.

/**
 * Runs beginImport in a separate Node process on the same store (at `startAt`, ms since the epoch,
 * once the store is open, so that several children race); resolves with what it printed.
 */
function beginImportInChild(backend: DirectoryBackend, kind: string, startAt = 0): Promise<string> {
  const script = `
    import * as d from ${JSON.stringify(INDEX)};
    const store = await ${backend.openInChild()};
    await new Promise((r) => setTimeout(r, ${startAt} - Date.now()));
    try { console.log('began ' + (await store.beginImport(${JSON.stringify(kind)}))); }
    catch (err) { console.log(err.name + ': ' + err.message); }
    finally { await store.close(); }`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], (err, stdout, stderr) => {
      if (err) reject(new Error(`child failed: ${stderr}`, { cause: err }));
      else resolve(stdout.trim());
    });
  });
}

/** The header and the first `lines` lines of the sample, then the stream breaks. */
async function* brokenStream(lines: number): AsyncIterable<Uint8Array> {
  yield Buffer.from(
    `${sampleLines()
      .slice(0, lines + 1)
      .join('\n')}\n`,
  );
  throw new Error('connection reset by peer');
}

describe.each(backends())('import lock on $name', (backend) => {
  let store: DirectoryStore;
  beforeEach(async () => {
    store = await backend.open();
  });
  afterEach(async () => {
    await store.close();
    await backend.cleanup();
  });

  it('refuses a second import while the first holds the lock, naming the holder and since when', async () => {
    const first = await store.beginImport('rpps');
    const held = /import \d+ \(rpps\) is running, held by [^:]+:\d+:[0-9a-f]{8} since \d{4}-\d\d-\d\dT/;
    await expect(importExtract(store, SAMPLE)).rejects.toThrow(ImportLockError);
    await expect(importExtract(store, SAMPLE)).rejects.toThrow(held);
    // Another connection to the same store, and another process.
    const other = await backend.open();
    try {
      await expect(importExtract(other, SAMPLE)).rejects.toThrow(held);
      expect(await beginImportInChild(backend, 'extract-mssante')).toMatch(
        new RegExp(`^ImportLockError: cannot start the extract-mssante import: ${held.source}`),
      );
      expect((await store.counts()).mailboxes).toBe(0);
      expect((await store.listImports()).map((i) => [i.id, i.state])).toEqual([[first, 'running']]);

      await store.finishImport(first, { retire: false, summary: '{}' });
      expect(await importExtract(other, SAMPLE)).toMatchObject({ inserted: 40 });
    } finally {
      await other.close();
    }
  });

  it('lets exactly one of several processes starting together take the lock', async () => {
    // Each child opens the store, then all call beginImport at the same moment.
    const startAt = Date.now() + 2500;
    const results = await Promise.all(
      [1, 2, 3].map(() => beginImportInChild(backend, 'extract-mssante', startAt)),
    );
    expect(results.filter((r) => /^began \d+$/.test(r))).toHaveLength(1);
    expect(results.filter((r) => r.startsWith('ImportLockError: cannot start'))).toHaveLength(2);
    expect((await store.listImports()).filter((i) => i.state === 'running')).toHaveLength(1);
  });

  it('takes over a stale lock: the dead import is marked failed and can no longer write or retire', async () => {
    await importExtract(store, SAMPLE);
    const dead = await store.beginImport('extract-mssante');
    // staleLockMs 0: any heartbeat is stale (the default is 10 minutes).
    const report = await importExtract(store, SAMPLE, { staleLockMs: 0 });
    expect(report).toMatchObject({ unchanged: 40, retiredMailboxes: 0 });
    const [latest, old] = await store.listImports();
    expect(latest).toMatchObject({ id: report.importId, state: 'finished' });
    expect(old).toMatchObject({ id: dead, state: 'failed' });
    expect(JSON.parse(old!.summary!).failed).toMatch(
      new RegExp(
        `^stale: no heartbeat since \\d{4}-.* from ${old!.holder}; lock taken over by ${latest!.holder}$`,
      ),
    );
    await expect(store.applyExtractBatch(dead, [])).rejects.toThrow(
      /import \d+ no longer holds the import lock/,
    );
    await expect(store.heartbeatImport(dead)).rejects.toThrow(ImportLockError);
    await expect(store.finishImport(dead, { retire: true, summary: '{}' })).rejects.toThrow(ImportLockError);
    expect((await store.counts()).liveMailboxes).toBe(40);
  });

  it('an import that fails part-way is marked failed, releases the lock and retires nothing', async () => {
    await importExtract(store, SAMPLE);
    await expect(importExtract(store, brokenStream(10), { batchSize: 4 })).rejects.toThrow(
      'connection reset by peer',
    );
    const [failed] = await store.listImports();
    expect(failed).toMatchObject({ state: 'failed' });
    expect(JSON.parse(failed!.summary!)).toEqual({ failed: 'after 10 lines: connection reset by peer' });
    expect((await store.counts()).liveMailboxes).toBe(40);
    // The lock is free: a complete smaller file imports and retires what it no longer lists (75% of
    // the links: over the default safeguard, hence forceRetire).
    const next = await importExtract(store, writeExtract('first-ten.txt', sampleLines().slice(0, 11)), {
      forceRetire: true,
    });
    expect(next).toMatchObject({ unchanged: 10, retiredMailboxes: 30 });
  });
});

/**
 * What search means, as the scan it was before the index (every word a LIKE on the normalised
 * column): the index must give exactly these addresses, in this order.
 */
function scanSearch(q: SearchQuery): { sql: string; params: (string | number)[] } {
  const where: string[] = [];
  const params: (string | number)[] = [];
  const words = (s: string) => normaliseText(s).split(' ').filter(Boolean);
  const like = (column: string, word: string, prefix = false) => {
    where.push(`${column} LIKE ? ESCAPE '\\'`);
    params.push(`${prefix ? '' : '%'}${likeEscape(word)}%`);
  };
  if (q.name !== undefined) for (const w of words(q.name)) like('m.name_norm', w);
  if (q.profession !== undefined) for (const w of words(q.profession)) like('p.profession_norm', w);
  if (q.city !== undefined) {
    if (/^\d+$/.test(q.city)) like('l.postcode', q.city, true);
    else for (const w of words(q.city)) like('l.city_norm', w);
  }
  if (q.structure !== undefined) for (const w of words(q.structure)) like('s.name_norm', w);
  if (!q.includeHidden) where.push('m.hidden = 0');
  if (!q.includeRetired) where.push('m.retired_at IS NULL');
  return {
    sql: `SELECT DISTINCT m.address FROM dir_mailboxes m
      LEFT JOIN dir_professionals p ON p.national_id = m.national_id
      LEFT JOIN dir_mailbox_links l ON l.address = m.address ${q.includeRetired ? '' : 'AND l.retired_at IS NULL'}
      LEFT JOIN dir_structures s ON s.key = l.structure_key
      ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY m.address LIMIT ${q.limit ?? 50}`,
    params,
  };
}

describe.each(backends())('search index on $name', (backend) => {
  let store: DirectoryStore;
  beforeEach(async () => {
    store = await backend.open();
  });
  afterEach(async () => {
    await store.close();
    await backend.cleanup();
  });

  it('gives what the scan gives, in the same order, for varied queries', async () => {
    // 6 000 generated lines: 'mar' (MARTIN, Marie) has more candidates than one chunk (500).
    await importExtract(store, generate(6000, 7));
    await store.setHidden((await store.search({ name: 'martin marie' }))[0]!.address, true);
    const queries: SearchQuery[] = [
      { name: 'lefevre' },
      { name: 'LEFÈVRE maëlle', city: 'annecy' },
      { name: "n'diaye", city: '74000' },
      { name: 'mar', limit: 500 },
      { name: 'mar', city: 'paris', limit: 500 },
      { name: 'mar', profession: 'infirmier', structure: 'vignes', limit: 500 },
      { name: 'martin marie', includeHidden: true },
      { name: 'martin marie' },
      { name: 'ar' }, // shorter than a trigram: the scan
      { name: 'ro', city: 'lyon' },
      { name: 'roux z' }, // one word for the index, one short word filtered after
      { name: 'fontaine-meril', structure: 'cpts sud' },
      { name: 'secretariat' },
      { name: 'zzz' },
      { name: 'garcia', limit: 1 },
      { profession: 'sage femme', city: 'chateau' },
      { structure: 'centre hospitalier', limit: 10 },
    ];
    for (const q of queries) {
      const scan = scanSearch(q);
      const expected = (await backend.query(scan.sql, scan.params)).map((r) => String(r.address));
      const got = (await store.search(q)).map((m) => m.address);
      expect({ q, got }).toEqual({ q, got: expected });
    }
    // Not vacuous: most of these queries find something.
    expect((await store.search({ name: 'mar', limit: 500 })).length).toBe(500);
    expect((await store.search({ name: 'roux z' })).length).toBeGreaterThan(0);
  });

  it('follows the writes: imports that rename or retire, local mailboxes', async () => {
    const lines = sampleLines();
    await importExtract(store, writeExtract('index-v1.txt', lines));
    expect((await store.search({ name: 'lefevre' })).map((m) => m.address)).toHaveLength(1);
    const lefevre = lines.findIndex((l) => l.includes('|LEFÈVRE|'));
    const renamed = lines.map((l, i) => (i === lefevre ? l.replace('|LEFÈVRE|', '|DELACROIX|') : l));
    await importExtract(store, writeExtract('index-v2.txt', renamed));
    expect(await store.search({ name: 'lefevre' })).toEqual([]);
    expect((await store.search({ name: 'delacroix maelle' })).map((m) => m.owner?.lastName)).toEqual([
      'DELACROIX',
    ]);
    // Retired by a complete import without the line: out of search, back with includeRetired.
    await importExtract(
      store,
      writeExtract(
        'index-v3.txt',
        renamed.filter((_, i) => i !== lefevre),
      ),
    );
    expect(await store.search({ name: 'delacroix' })).toEqual([]);
    expect(await store.search({ name: 'delacroix', includeRetired: true })).toHaveLength(1);

    await store.saveLocalMailbox({
      address: 'Accueil@Cabinet-Xyz.example',
      type: 'CAB',
      displayName: 'Cabinet Hébert',
    });
    expect((await store.search({ name: 'hebert' })).map((m) => m.address)).toEqual([
      'accueil@cabinet-xyz.example',
    ]);
    await store.saveLocalMailbox({
      address: 'accueil@cabinet-xyz.example',
      type: 'CAB',
      displayName: 'Cabinet Oudin',
    });
    expect(await store.search({ name: 'hebert' })).toEqual([]);
    expect((await store.search({ name: 'oudin' })).map((m) => m.address)).toEqual([
      'accueil@cabinet-xyz.example',
    ]);
  });
});

describe('SQLite search index during a first import', () => {
  const hasTrigger = (file: string) => {
    const db = new DatabaseSync(file, { readOnly: true });
    try {
      return (
        db
          .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name = 'dir_mailbox_name_search_insert'",
          )
          .all().length === 1
      );
    } finally {
      db.close();
    }
  };

  it('is filled in bulk at the end of a first import, and follows writes again afterwards', async () => {
    const file = join(dir, `first-${randomBytes(4).toString('hex')}.sqlite`);
    const store = await openSqliteDirectory(file);
    try {
      const report = await importExtract(store, generate(3000, 5), {
        onProgress: () => expect(hasTrigger(file)).toBe(false),
      });
      expect(report.inserted).toBeGreaterThan(2900);
      expect(hasTrigger(file)).toBe(true);
      expect((await store.search({ name: 'lefevre' })).length).toBeGreaterThan(0);
      await store.saveLocalMailbox({
        address: 'accueil@msp-bulk.mssante.fr',
        type: 'ORG',
        displayName: 'Accueil Zéphyrin',
      });
      expect((await store.search({ name: 'zephyrin' })).map((m) => m.address)).toEqual([
        'accueil@msp-bulk.mssante.fr',
      ]);
      // A second import (the directory is no longer empty) keeps the trigger all along.
      await importExtract(store, generate(3000, 5), {
        onProgress: () => expect(hasTrigger(file)).toBe(true),
      });
    } finally {
      await store.close();
    }
  });

  it('is rebuilt when the store is opened after the import that suspended it died', async () => {
    const file = join(dir, `died-${randomBytes(4).toString('hex')}.sqlite`);
    let store = await openSqliteDirectory(file);
    const id = await store.beginImport('extract-mssante');
    expect(hasTrigger(file)).toBe(false);
    await store.saveLocalMailbox({
      address: 'accueil@msp-died.mssante.fr',
      type: 'ORG',
      displayName: 'Accueil Zéphyrin',
    });
    await store.close();
    // Opened while the import is alive: left alone.
    store = await openSqliteDirectory(file);
    expect(hasTrigger(file)).toBe(false);
    await store.close();
    // The importer died: its heartbeat is older than the stale threshold.
    const db = new DatabaseSync(file);
    db.prepare('UPDATE dir_imports SET heartbeat_at = 0 WHERE id = ?').run(id);
    db.close();
    store = await openSqliteDirectory(file);
    try {
      expect(hasTrigger(file)).toBe(true);
      expect((await store.search({ name: 'zephyrin' })).map((m) => m.address)).toEqual([
        'accueil@msp-died.mssante.fr',
      ]);
    } finally {
      await store.close();
    }
  });
});

describe('PostgreSQL planner statistics after an import', () => {
  const backend = postgresBackend('dir_stats');
  afterEach(() => backend.cleanup());

  it('are fresh (ANALYZE), so that search is not planned on an empty-table estimate', async () => {
    const store = await backend.open();
    const estimate = async () =>
      Number(
        (await backend.query("SELECT reltuples FROM pg_class WHERE oid = 'dir_mailboxes'::regclass", []))[0]
          ?.reltuples,
      );
    try {
      expect(await estimate()).toBeLessThanOrEqual(0);
      await importExtract(store, SAMPLE);
      expect(await estimate()).toBe(40);
    } finally {
      await store.close();
    }
  });
});

describe('PostgreSQL import lock clock', () => {
  const backend = postgresBackend('dir_clock');
  afterEach(async () => {
    vi.useRealTimers();
    await backend.cleanup();
  });

  it("judges a heartbeat by the database's clock, not by a host whose clock runs ahead", async () => {
    const a = await backend.open();
    const b = await backend.open();
    try {
      await a.beginImport('extract-mssante');
      // Another gateway host, its clock one hour ahead: the live import is not stale for all that.
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() + 3_600_000);
      await expect(b.beginImport('extract-mssante')).rejects.toThrow(ImportLockError);
    } finally {
      vi.useRealTimers();
      await a.close();
      await b.close();
    }
  });
});
