import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as openpgp from 'openpgp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCertificate } from '../crypto/dev-pki.ts';
import { detectImportFormat } from '../gateway/directory-cli.ts';
import { writeConfig } from './helpers/gateway-process.ts';
import { writeActivityFile } from './helpers/rpps-fixture.ts';
import { testPki } from './helpers/pki.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SAMPLE = fileURLToPath(
  new URL('../../shared/fixtures/Extraction_Correspondance_MSSante_sample.txt', import.meta.url),
);
const WHITELIST = fileURLToPath(new URL('../../shared/fixtures/listeblanche_sample.xml', import.meta.url));

let dir: string;
let config: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI (`node gateway/cli.ts ...`) on the test's config. */
function courrier(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, 'gateway/cli.ts'), '--config', config, ...args],
      { cwd: dir, env: { ...process.env, COURRIER_CONFIG: '' }, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const file = (name: string, text: string | Uint8Array) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'courrier-dircli-'));
  config = writeConfig(dir, { dataDir: join(dir, 'data'), localDomains: ['courrier.test'] });
  // First run (data folder, dev PKI, first mailbox) once, so that each test's output is its own.
  expect((await courrier('init')).code).toBe(0);
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('courrier directory', () => {
  it('imports the extract (format detected), then again idempotently, with a JSON report file', async () => {
    const first = await courrier('directory', 'import', SAMPLE);
    expect(first).toMatchObject({ code: 0, stderr: '' });
    expect(first.stdout).toMatch(
      /^imported .*Extraction_Correspondance_MSSante_sample\.txt \(extract\): 40 lines, 40 inserted, 0 updated, 0 unchanged, 0 retired mailboxes, 0 rejected, \d+ warnings/,
    );
    const report = join(dir, 'report.json');
    const again = await courrier('directory', 'import', SAMPLE, '--report', report, '--max-reported', '2');
    expect(again.stdout).toContain('40 lines, 0 inserted, 0 updated, 40 unchanged');
    expect(again.stdout).toContain(`report: ${report}`);
    const written = JSON.parse(readFileSync(report, 'utf8')) as { warningCount: number; warnings: unknown[] };
    expect(written).toMatchObject({ format: 'extract', lines: 40, unchanged: 40 });
    // Exact count, lines kept up to --max-reported (the generator's RPPS numbers fail the Luhn check).
    expect(written.warningCount).toBeGreaterThan(2);
    expect(written.warnings).toHaveLength(2);
    const bad = await courrier('directory', 'import', SAMPLE, '--max-reported', 'many');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(
      "option '--max-reported <n>' argument 'many' is invalid. not a whole number",
    );

    const wl = await courrier('directory', 'import', WHITELIST);
    expect(wl).toMatchObject({ code: 0 });
    expect(wl.stdout).toMatch(/\(whitelist\): 6 entries, 5 domains, 0 removed, 0 skipped/);
  });

  it('imports PS_LibreAcces_Personne_activite (format detected from its header)', async () => {
    const activities = join(dir, 'activites.txt');
    await writeActivityFile(activities, 30, 5);
    const r = await courrier('directory', 'import', activities, '--json');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(r.stdout)).toMatchObject({
      format: 'rpps',
      lines: 30,
      inserted: 30,
      retiredActivities: 0,
    });
  });

  it('lists rejected lines with their numbers, and --rpps-check-digit reject', async () => {
    const lines = readFileSync(SAMPLE, 'utf8').trimEnd().split('\n');
    const bad = file(
      'bad-extract.txt',
      [lines[0], lines[1], 'PER|only|three', lines[2]!.replace('@', '@@'), ''].join('\n'),
    );
    const r = await courrier('directory', 'import', bad, '--no-retire', '--json');
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as {
      rejectedCount: number;
      rejected: { line: number; reason: string }[];
    };
    expect(json.rejectedCount).toBe(2);
    expect(json.rejected.map((x) => x.line)).toEqual([3, 4]);
    const text = await courrier('directory', 'import', bad, '--no-retire');
    expect(text.stdout).toContain('first rejected lines:\n  line 3: ');
    const strict = await courrier(
      'directory',
      'import',
      bad,
      '--no-retire',
      '--rpps-check-digit',
      'reject',
      '--json',
    );
    expect((JSON.parse(strict.stdout) as { rejectedCount: number }).rejectedCount).toBeGreaterThan(2);
    // --no-retire kept the sample's other mailboxes live.
    const stats = JSON.parse((await courrier('directory', 'stats', '--json')).stdout) as Record<
      string,
      unknown
    >;
    expect(stats).toMatchObject({ backend: 'sqlite', liveMailboxes: 40, trustDomains: 5 });
  });

  it('searches with accents and case ignored, as a table or JSON', async () => {
    const r = await courrier('directory', 'search', '--name', 'LEFEVRE');
    expect(r.code).toBe(0);
    const [header, row, ...rest] = r.stdout.trimEnd().split('\n');
    expect(header).toMatch(/^ADDRESS\s+TYPE\s+NAME\s+PROFESSION\s+CITY\s+STRUCTURE$/);
    expect(row).toMatch(
      /^maelle\.lefevre2@msp-des-vignes\.mssante\.fr\s+PER\s+LEFÈVRE Maëlle\s+Pédicure-Podologue\s+ANNECY/,
    );
    expect(rest).toEqual([]);

    const json = await courrier('directory', 'search', '--name', 'ndiaye', '--city', 'annecy', '--json');
    const found = JSON.parse(json.stdout) as { address: string; owner: { lastName: string } }[];
    expect(found.length).toBeGreaterThan(0);
    for (const m of found) expect(m.owner.lastName).toBe("N'DIAYE");

    const none = await courrier('directory', 'search', '--name', 'personne-inconnue');
    expect(none.stdout).toBe('no mailbox found\n');
    const badLimit = await courrier('directory', 'search', '--name', 'x', '--limit', '0');
    expect(badLimit).toMatchObject({
      code: 1,
      stderr: 'courrier: --limit must be a whole number from 1 to 500\n',
    });
  });

  it('shows a mailbox, a professional, and hides/unhides (liste rouge)', async () => {
    const m = await courrier('directory', 'show', 'Maelle.Michel4@CH-EXEMPLE.mssante.fr');
    expect(m.stdout).toContain('maelle.michel4@ch-exemple.mssante.fr  PER  extract');
    expect(m.stdout).toContain(
      'owner: Maëlle MICHEL  819990000004  Médecin (10), Qualifié en Médecine Générale',
    );
    const p = await courrier('directory', 'show', '19990000003', '--json');
    expect(JSON.parse(p.stdout)).toMatchObject({
      professional: { nationalId: '819990000003', lastName: "N'DIAYE" },
      mailboxes: [{ address: 'matheo.ndiaye3@cpts-sud-exemple.mssante.fr' }],
    });

    expect((await courrier('directory', 'hide', 'elodie.roux1@infirmier.mssante.fr')).stdout).toBe(
      'elodie.roux1@infirmier.mssante.fr: hidden (liste rouge)\n',
    );
    const hidden = await courrier('directory', 'search', '--name', 'roux', '--json');
    expect((JSON.parse(hidden.stdout) as { address: string }[]).map((x) => x.address)).not.toContain(
      'elodie.roux1@infirmier.mssante.fr',
    );
    const withHidden = await courrier('directory', 'search', '--name', 'roux', '--include-hidden');
    expect(withHidden.stdout).toContain('elodie.roux1@infirmier.mssante.fr (hidden)');
    await courrier('directory', 'unhide', 'elodie.roux1@infirmier.mssante.fr');
    const back = await courrier('directory', 'search', '--name', 'elodie roux', '--json');
    expect((JSON.parse(back.stdout) as unknown[]).length).toBe(1);

    expect(await courrier('directory', 'show', 'personne@nulle-part.fr')).toMatchObject({
      code: 1,
      stderr:
        'courrier: nothing in the directory for "personne@nulle-part.fr" (an address, a national id or a team id)\n',
    });
    expect(await courrier('directory', 'hide', 'personne@nulle-part.fr')).toMatchObject({
      code: 1,
      stderr: 'courrier: no mailbox personne@nulle-part.fr in the directory\n',
    });
  });

  it('fails clearly: missing file, unknown format, bad format option', async () => {
    const missing = await courrier('directory', 'import', join(dir, 'absent.txt'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^courrier: cannot read .*absent\.txt: ENOENT/);
    expect(missing.stdout).toBe('');

    const unknown = await courrier('directory', 'import', file('notes.txt', 'bonjour\n'));
    expect(unknown).toMatchObject({ code: 1, stdout: '' });
    expect(unknown.stderr).toMatch(
      /notes\.txt: unknown format \(the first line is neither .*\); give --format\n$/,
    );

    const wrongHeader = await courrier(
      'directory',
      'import',
      file('wrong.txt', 'bonjour\n'),
      '--format',
      'extract',
    );
    expect(wrongHeader.code).toBe(1);
    expect(wrongHeader.stderr).toMatch(/^courrier: .*header/);
    expect(wrongHeader.stderr).not.toContain('    at ');

    const choice = await courrier('directory', 'import', SAMPLE, '--format', 'csv');
    expect(choice.code).toBe(1);
    expect(choice.stderr).toContain(
      "argument 'csv' is invalid. Allowed choices are extract, whitelist, rpps.",
    );
  });
});

describe('courrier team', () => {
  it('imports a YAML file, shows the expansion, and re-imports idempotently', async () => {
    const teams = file(
      'teams.yaml',
      `teams:
  - id: cpts-sud
    kind: CPTS
    name: CPTS Sud Exemple
    address: equipe@cpts-sud.courrier.test
    members:
      - { nationalId: '819990000004', role: coordinatrice }
      - { nationalId: '819990000031' }
      - { mailbox: urgences.espvalvert12@msp-des-vignes.mssante.fr }
      - { nationalId: '810000000000' }
`,
    );
    const r = await courrier('team', 'import', teams);
    expect(r).toMatchObject({ code: 0 });
    expect(r.stdout).toBe(
      `imported ${teams}: 1 teams (1 created, 0 updated, 0 unchanged); members: 4 added, 0 updated, 0 removed, 0 unchanged\n` +
        'warning: team "cpts-sud": professional 810000000000 has no live mailbox in the directory\n',
    );
    const again = await courrier('team', 'import', teams, '--json');
    expect(JSON.parse(again.stdout)).toMatchObject({
      teamsUnchanged: 1,
      membersUnchanged: 4,
      membersAdded: 0,
    });

    const show = await courrier('team', 'show', 'EQUIPE@cpts-sud.courrier.test');
    expect(show.stdout).toContain('cpts-sud  CPTS  CPTS Sud Exemple  <equipe@cpts-sud.courrier.test>');
    expect(show.stdout).toContain('recipients (3):');
    expect(show.stdout).toContain('unreachable (1, no live mailbox):\n  810000000000');
    const doctors = await courrier('team', 'show', 'cpts-sud', '--profession', '10', '--json');
    expect(
      (JSON.parse(doctors.stdout) as { recipients: { address: string }[] }).recipients
        .map((x) => x.address)
        .sort(),
    ).toEqual(['maelle.michel4@ch-exemple.mssante.fr', 'noel.garcia31@msp-des-vignes.mssante.fr']);

    const list = await courrier('team', 'list');
    expect(list.stdout).toMatch(/cpts-sud\s+CPTS\s+CPTS Sud Exemple\s+equipe@cpts-sud\.courrier\.test\s+4/);
  });

  it('refuses a bad CSV file with every problem and its line, nothing applied', async () => {
    const csv = file(
      'teams.csv',
      [
        'team_id;kind;team_name;team_address;member;role;profession',
        'esp-bad;ESP;ESP;;819990000004;;',
        'esp-bad;XYZ;ESP;;819990000009;;',
        'esp-bad;ESP;ESP;;123;;',
      ].join('\n'),
    );
    const r = await courrier('team', 'import', csv);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `courrier: ${csv}: 2 problems, nothing applied:\n` +
        `  ${csv}:3: invalid kind "XYZ" (expected ESP, CPTS, MSP)\n` +
        `  ${csv}:4: invalid national id "123" (8 + 11-digit RPPS, 0 + 9-character ADELI, or a bare RPPS)\n`,
    );
    expect((await courrier('team', 'show', 'esp-bad')).code).toBe(1);
  });

  it("refuses a bad team id, structure key or profession with the team files' own messages", async () => {
    const id = await courrier('team', 'add', 'ESP 1', '--kind', 'ESP', '--name', 'x');
    expect(id).toMatchObject({ code: 1 });
    expect(id.stderr).toContain('invalid team id "ESP 1"');
    const key = await courrier('team', 'add', 'esp-9', '--kind', 'ESP', '--name', 'x', '--structure', '9-1');
    expect(key).toMatchObject({ code: 1 });
    expect(key.stderr).toContain('invalid structure key "9-1"');
    const prof = await courrier(
      'team',
      'add-member',
      'esp-9',
      '--mailbox',
      'secretariat@example.mssante.fr',
      '--profession',
      'médecin',
    );
    expect(prof).toMatchObject({ code: 1 });
    expect(prof.stderr).toContain('invalid profession "médecin"');
  });

  it('adds a team and members by hand, and removes them', async () => {
    expect((await courrier('team', 'add', 'esp-1', '--kind', 'ESP', '--name', 'ESP Un')).stdout).toBe(
      'created team esp-1 (ESP) ESP Un\n',
    );
    const add = await courrier(
      'team',
      'add-member',
      'esp-1',
      '--national-id',
      '19990000009',
      '--role',
      'kiné',
    );
    expect(add).toMatchObject({ code: 0, stdout: 'esp-1: member 819990000009 saved\n', stderr: '' });
    const show = await courrier('team', 'show', 'esp-1', '--json');
    expect(JSON.parse(show.stdout)).toMatchObject({
      members: [{ kind: 'professional', nationalId: '819990000009', role: 'kiné', professionCode: '50' }],
      recipients: [{ address: 'raphael.garcia9@pro.mssante.fr' }],
    });
    expect(
      await courrier('team', 'add-member', 'esp-1', '--national-id', '1', '--mailbox', 'a@b.fr'),
    ).toMatchObject({
      code: 1,
      stderr: 'courrier: give exactly one of --national-id or --mailbox\n',
    });
    expect(await courrier('team', 'add-member', 'nope', '--mailbox', 'a@b.fr')).toMatchObject({
      code: 1,
      stderr: 'courrier: no team "nope"\n',
    });
    expect((await courrier('team', 'remove-member', 'esp-1', '--national-id', '819990000009')).stdout).toBe(
      'esp-1: member 819990000009 removed\n',
    );
    expect(await courrier('team', 'remove-member', 'esp-1', '--national-id', '819990000009')).toMatchObject({
      code: 1,
      stderr: 'courrier: 819990000009 is not a member of team "esp-1"\n',
    });
    expect(await courrier('team', 'add', 'Bad Id', '--kind', 'ESP', '--name', 'x')).toMatchObject({
      code: 1,
    });
  });
});

describe('courrier mailbox attach|keys|detach', () => {
  const ADDRESS = 'maelle.michel4@ch-exemple.mssante.fr';

  it('attaches a certificate and an OpenPGP key, lists and detaches them', async () => {
    const cert = issueCertificate(testPki().ca, {
      commonName: 'Maëlle Michel',
      emailAddresses: [ADDRESS],
      usage: 'email',
      keyType: 'ec-p256',
    });
    const r = await courrier('mailbox', 'attach', ADDRESS, file('michel.pem', cert.certPem), '--preferred');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(
      new RegExp(
        `^attached to ${ADDRESS.replace(/\./g, '\\.')}: smime  [0-9a-f]{64}  \\d{4}-\\d{2}-\\d{2} to \\d{4}-\\d{2}-\\d{2}  valid  preferred\n  subject: .*CN=Maëlle Michel`,
      ),
    );

    const pgp = await openpgp.generateKey({
      type: 'ecc',
      curve: 'curve25519Legacy',
      userIDs: [{ email: 'quelquun@ailleurs.fr' }],
      format: 'binary',
    });
    const k = await courrier('mailbox', 'attach', ADDRESS, file('key.gpg', pgp.publicKey));
    expect(k.code).toBe(0);
    expect(k.stdout).toContain('openpgp  ');
    expect(k.stdout).toMatch(/OpenPGP fingerprint: [0-9A-F]{40}/);
    expect(k.stderr).toBe(`courrier: warning: the key is for quelquun@ailleurs.fr, not ${ADDRESS}\n`);

    const keys = await courrier('mailbox', 'keys', ADDRESS, '--json');
    const list = JSON.parse(keys.stdout) as { format: string; fingerprint: string; preferred: boolean }[];
    expect(list.map((x) => [x.format, x.preferred])).toEqual([
      ['smime', true],
      ['openpgp', false],
    ]);
    const shown = await courrier('directory', 'show', ADDRESS);
    expect(shown.stdout).toContain(`key: smime  ${list[0]!.fingerprint}`);

    expect((await courrier('mailbox', 'detach', ADDRESS, list[1]!.fingerprint)).stdout).toBe(
      `detached ${list[1]!.fingerprint} from ${ADDRESS}\n`,
    );
    const d = await courrier('mailbox', 'detach', ADDRESS, list[1]!.fingerprint);
    expect(d).toMatchObject({ code: 1 });
    expect(d.stderr).toContain(`no key ${list[1]!.fingerprint} for ${ADDRESS}`);
  });

  it('warns once about an expired OpenPGP key (the key file and the crypto layer both see it)', async () => {
    const pgp = await openpgp.generateKey({
      type: 'ecc',
      curve: 'curve25519Legacy',
      userIDs: [{ email: ADDRESS }],
      keyExpirationTime: 1,
      date: new Date(Date.now() - 86_400_000),
      format: 'armored',
    });
    const k = await courrier('mailbox', 'attach', ADDRESS, file('expired.asc', pgp.publicKey));
    expect(k.code).toBe(0);
    const warnings = k.stderr.split('\n').filter((l) => l !== '');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^courrier: warning: expired on \d{4}-/);
    const keys = JSON.parse((await courrier('mailbox', 'keys', ADDRESS, '--json')).stdout) as {
      fingerprint: string;
    }[];
    for (const key of keys) await courrier('mailbox', 'detach', ADDRESS, key.fingerprint);
  });

  it('refuses a private key and a file that is neither, with exit code 1', async () => {
    const cert = issueCertificate(testPki().ca, { commonName: 'x', usage: 'email', keyType: 'ec-p256' });
    const keyFile = file('private.pem', cert.keyPem);
    const r = await courrier('mailbox', 'attach', ADDRESS, keyFile);
    expect(r).toMatchObject({
      code: 1,
      stdout: '',
      stderr: `courrier: ${keyFile}: this is a private key: give the certificate or public key only (private keys never go in the directory)\n`,
    });
    const junk = file('junk.bin', 'hello');
    expect((await courrier('mailbox', 'attach', ADDRESS, junk)).stderr).toBe(
      `courrier: ${junk}: neither a certificate (PEM or DER) nor an OpenPGP public key (armored or binary)\n`,
    );
    expect((await courrier('mailbox', 'keys', 'not-an-address')).code).toBe(1);
  });

  it('keeps the existing mailbox commands working', async () => {
    const list = await courrier('mailbox', 'list', '--json');
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({ address: 'dev@courrier.test', type: 'PER' }),
    ]);
  });
});

describe('config', () => {
  it('redacts the directory secrets in config print', async () => {
    const withSecrets = writeConfig(mkdtempSync(join(dir, 'cfg-')), {
      dataDir: join(dir, 'data'),
      directory: {
        postgres: { url: 'postgres://courrier:s3cret-pw@127.0.0.1:5432/courrier' },
        http: { token: 'a-very-long-secret-token' },
      },
    });
    const r = await new Promise<Run>((resolve) =>
      execFile(
        process.execPath,
        [join(ROOT, 'gateway/cli.ts'), '--config', withSecrets, 'config', 'print'],
        { env: { ...process.env, COURRIER_CONFIG: '' } },
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('url: postgres://courrier:[redacted]@127.0.0.1:5432/courrier');
    expect(r.stdout).toContain('token: "[redacted]"');
    expect(r.stdout).not.toContain('s3cret-pw');
    expect(r.stdout).not.toContain('a-very-long-secret-token');
  });
});

describe('directory import format detection', () => {
  it('reads the format from the first line, whatever the case, BOM or apostrophe', () => {
    expect(detectImportFormat("Type de BAL|Type d'identifiant PP|...")).toBe('extract');
    expect(detectImportFormat("\uFEFFType d'identifiant PP|Identifiant PP|")).toBe('rpps');
    expect(detectImportFormat('TYPE D\u2019IDENTIFIANT PP|Identifiant PP|')).toBe('rpps');
    expect(detectImportFormat('  <?xml version="1.0"?><ListeBlanche>')).toBe('whitelist');
    expect(detectImportFormat('nom;prenom\n')).toBeUndefined();
  });
});
