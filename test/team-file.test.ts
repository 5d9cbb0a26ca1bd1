import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { importExtract, type DirectoryStore } from '../directory/index.ts';
import {
  applyTeamFile,
  detectTeamFileFormat,
  parseTeamFile,
  readTeamFile,
  TeamFileError,
  type TeamFileProblem,
} from '../directory/team-file.ts';
import { directoryBackends, EXTRACT_SAMPLE as SAMPLE, testDir } from './helpers/directory-backends.ts';

const dir = testDir('courrier-teams-');

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

const YAML_TEAMS = `teams:
  - id: cpts-sud
    kind: CPTS
    name: CPTS Sud Exemple
    address: Equipe@cpts-sud-exemple.mssante.fr
    structure: '1:1340000000'
    members:
      - { nationalId: '819990000004', role: coordinatrice }
      - { nationalId: '19990000009', profession: '50' }
      - mailbox: urgences.espvalvert12@msp-des-vignes.mssante.fr
        role: urgences
  - id: msp-vignes
    kind: msp
    name: MSP des Vignes
    members:
      - { nationalId: '819990000024' }
`;

const CSV_TEAMS = [
  'team_id;kind;team_name;team_address;member;role;profession',
  'cpts-sud;CPTS;CPTS Sud Exemple;equipe@cpts-sud-exemple.mssante.fr;819990000004;coordinatrice;',
  'cpts-sud;CPTS;CPTS Sud Exemple;equipe@cpts-sud-exemple.mssante.fr;19990000009;;50',
  'cpts-sud;CPTS;CPTS Sud Exemple;equipe@cpts-sud-exemple.mssante.fr;urgences.espvalvert12@msp-des-vignes.mssante.fr;urgences;',
  '"msp-vignes";MSP;"MSP des Vignes";;819990000024;;',
  '',
].join('\r\n');

function problemsOf(text: string, format: 'yaml' | 'csv'): TeamFileProblem[] {
  return parseTeamFile(text, format).problems;
}

describe('parseTeamFile', () => {
  it('reads the YAML layout', () => {
    const { teams, problems } = parseTeamFile(YAML_TEAMS, 'yaml');
    expect(problems).toEqual([]);
    expect(teams).toEqual([
      {
        id: 'cpts-sud',
        kind: 'CPTS',
        name: 'CPTS Sud Exemple',
        address: 'equipe@cpts-sud-exemple.mssante.fr',
        structureKey: '1:1340000000',
        members: [
          { kind: 'professional', nationalId: '819990000004', role: 'coordinatrice' },
          { kind: 'professional', nationalId: '819990000009', professionCode: '50' },
          { kind: 'mailbox', address: 'urgences.espvalvert12@msp-des-vignes.mssante.fr', role: 'urgences' },
        ],
      },
      {
        id: 'msp-vignes',
        kind: 'MSP',
        name: 'MSP des Vignes',
        members: [{ kind: 'professional', nationalId: '819990000024' }],
      },
    ]);
  });

  it('reads unquoted ids and codes as text (an ADELI id keeps its leading zero)', () => {
    const text =
      'teams:\n  - id: esp-1\n    kind: ESP\n    name: ESP 1\n    members:\n      - { nationalId: 0341234567, profession: 60 }\n      - nationalId: 819990000004\n';
    const { teams, problems } = parseTeamFile(text, 'yaml');
    expect(problems).toEqual([]);
    expect(teams[0]?.members).toEqual([
      { kind: 'professional', nationalId: '0341234567', professionCode: '60' },
      { kind: 'professional', nationalId: '819990000004' },
    ]);
  });

  it('reads the CSV layout (quotes, CRLF) to the same teams, structure aside', () => {
    const csv = parseTeamFile(CSV_TEAMS, 'csv');
    expect(csv.problems).toEqual([]);
    const yaml = parseTeamFile(YAML_TEAMS, 'yaml').teams;
    delete yaml[0]!.structureKey;
    // The CSV layout cannot say which structure carries a team: the stored one is kept.
    expect(csv.teams).toEqual(yaml.map((t) => ({ ...t, keepStructure: true })));
  });

  it('detects the format from the extension, else from the header', () => {
    expect(detectTeamFileFormat('t.csv', '')).toBe('csv');
    expect(detectTeamFileFormat('t.YML', '')).toBe('yaml');
    expect(detectTeamFileFormat('teams', CSV_TEAMS)).toBe('csv');
    expect(detectTeamFileFormat('teams', YAML_TEAMS)).toBe('yaml');
  });

  it('reports every YAML problem with its line and path', () => {
    const text = `teams:
  - id: Bad Id
    kind: ESP
    name: x
  - id: esp-ok
    kind: SCM
    name: y
  - id: esp-2
    kind: ESP
    name: z
    colour: blue
    members:
      - { nationalId: '12345' }
      - { mailbox: not-an-address }
      - { nationalId: '819990000004', mailbox: a@b.fr }
      - { nationalId: '819990000004', profession: médecin }
  - id: esp-3
    kind: ESP
    name: w
    members:
      - { nationalId: '819990000004' }
      - { nationalId: '19990000004' }
  - id: esp-3
    kind: ESP
    name: again
`;
    expect(problemsOf(text, 'yaml')).toEqual([
      { line: 2, path: 'teams[0].id', message: expect.stringContaining('invalid team id "Bad Id"') },
      { line: 6, path: 'teams[1].kind', message: 'invalid kind "SCM" (expected ESP, CPTS, MSP)' },
      { line: 11, path: 'teams[2]', message: expect.stringContaining('unknown key "colour"') },
      {
        line: 22,
        path: 'teams[3].members[1]',
        message: '819990000004 is already a member of "esp-3" (line 21)',
      },
      { line: 23, path: 'teams[4]', message: 'team "esp-3" is already defined on line 17' },
    ]);
    // Member problems are reported once the team itself is valid.
    const members = problemsOf(text.replace('    colour: blue\n', ''), 'yaml');
    expect(members.filter((p) => p.path?.startsWith('teams[2].members'))).toEqual([
      {
        line: 12,
        path: 'teams[2].members[0]',
        message: expect.stringContaining('invalid national id "12345"'),
      },
      {
        line: 13,
        path: 'teams[2].members[1]',
        message: expect.stringContaining('invalid mailbox address "not-an-address"'),
      },
      { line: 14, path: 'teams[2].members[2]', message: 'give exactly one of nationalId or mailbox' },
      {
        line: 15,
        path: 'teams[2].members[3]',
        message: expect.stringContaining('invalid profession "médecin"'),
      },
    ]);
  });

  it('reports YAML syntax errors and a missing teams list', () => {
    expect(problemsOf('teams:\n  - id: a\n   kind: [\n', 'yaml')[0]).toMatchObject({
      line: expect.any(Number),
      message: expect.stringContaining('YAML syntax error'),
    });
    expect(problemsOf('team:\n  - id: a\n', 'yaml')).toEqual([
      { line: 1, message: 'expected a top-level "teams:" list' },
    ]);
    expect(problemsOf('teams: []\n', 'yaml')).toEqual([{ line: 1, message: 'no team in the file' }]);
  });

  it('reports every CSV problem with its line', () => {
    const text = [
      'team_id;kind;team_name;team_address;member;role;profession',
      'esp-1;ESP;ESP Un;;819990000004;;',
      'esp-1;ESP;ESP Un bis;;819990000009;;',
      'esp-2;XYZ;ESP Deux;;;;',
      'esp-3;ESP;ESP Trois;;"unterminated;;',
      'esp-4;ESP;ESP Quatre;;819990000004;;',
      'esp-4;ESP;ESP Quatre;;819990000004;médecin;',
      'esp-5;ESP;ESP Cinq;equipe@esp.fr;12;;',
      'esp-6;ESP;ESP Six;equipe@esp.fr;;;',
      'esp-7;ESP;ESP Sept',
    ].join('\n');
    expect(problemsOf(text, 'csv')).toEqual([
      { line: 3, message: 'team "esp-1" has a different kind, name or address on line 2' },
      { line: 4, message: 'invalid kind "XYZ" (expected ESP, CPTS, MSP)' },
      { line: 5, message: 'unbalanced double quote' },
      { line: 7, message: '819990000004 is already a member of "esp-4" (line 6)' },
      { line: 8, message: expect.stringContaining('invalid national id "12"') },
      { line: 9, message: 'address equipe@esp.fr is already the address of team "esp-5" (line 8)' },
      { line: 10, message: 'expected 7 fields separated by ;, found 3' },
    ]);
    expect(problemsOf('id;kind\n', 'csv')).toEqual([
      { line: 1, message: 'expected the header team_id;kind;team_name;team_address;member;role;profession' },
    ]);
  });

  it('readTeamFile throws one TeamFileError listing the problems with file:line', async () => {
    const file = write(
      'bad.csv',
      'team_id;kind;team_name;team_address;member;role;profession\nesp;ESP;;;;;\n',
    );
    const err = await readTeamFile(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TeamFileError);
    expect((err as Error).message).toBe(
      `${file}: 1 problem, nothing applied:\n  ${file}:2: team_name is required`,
    );
    await expect(readTeamFile(join(dir, 'missing.yaml'))).rejects.toThrow(
      /cannot read the teams file .*missing\.yaml/,
    );
  });
});

describe.each(directoryBackends(dir, 'team_test'))('applyTeamFile on $name', (backend) => {
  let store: DirectoryStore;
  beforeEach(async () => {
    store = await backend.open();
    await importExtract(store, SAMPLE);
  });
  afterEach(async () => {
    await store.close();
    await backend.cleanup();
  });

  const teams = (text: string, format: 'yaml' | 'csv' = 'yaml') => {
    const r = parseTeamFile(text, format);
    expect(r.problems).toEqual([]);
    return r.teams;
  };

  it('creates the teams, then a second apply changes nothing', async () => {
    const first = await applyTeamFile(store, teams(YAML_TEAMS));
    expect(first).toEqual({
      teamsCreated: ['cpts-sud', 'msp-vignes'],
      teamsUpdated: [],
      teamsUnchanged: 0,
      teamsRemoved: [],
      membersAdded: 4,
      membersUpdated: 0,
      membersRemoved: 0,
      membersUnchanged: 0,
      warnings: [],
    });
    const expansion = await store.expandTeam('equipe@cpts-sud-exemple.mssante.fr');
    expect(expansion?.recipients.map((r) => r.address).sort()).toEqual([
      'maelle.michel4@ch-exemple.mssante.fr',
      'raphael.garcia9@pro.mssante.fr',
      'urgences.espvalvert12@msp-des-vignes.mssante.fr',
    ]);
    expect((await store.getTeam('cpts-sud'))?.structureKey).toBe('1:1340000000');

    const again = await applyTeamFile(store, teams(YAML_TEAMS));
    expect(again).toMatchObject({
      teamsCreated: [],
      teamsUpdated: [],
      teamsUnchanged: 2,
      membersAdded: 0,
      membersUpdated: 0,
      membersRemoved: 0,
      membersUnchanged: 4,
    });
    // The CSV file says the same, without the structure (no such column): the stored one is kept.
    const csv = await applyTeamFile(store, teams(CSV_TEAMS, 'csv'));
    expect(csv).toMatchObject({ teamsUpdated: [], teamsUnchanged: 2, membersUnchanged: 4 });
    expect((await store.getTeam('cpts-sud'))?.structureKey).toBe('1:1340000000');
  });

  it('syncs: members not in the file are removed, other teams left alone unless pruned', async () => {
    await applyTeamFile(store, teams(YAML_TEAMS));
    await store.saveTeam({ id: 'esp-autre', kind: 'ESP', name: 'Autre' });
    await store.addTeamMember('esp-autre', { kind: 'professional', nationalId: '819990000004' });

    const changed = YAML_TEAMS.replace("      - { nationalId: '19990000009', profession: '50' }\n", '')
      .replace('role: coordinatrice', 'role: présidente')
      .replace("      - { nationalId: '819990000024' }\n", "      - { nationalId: '819990000031' }\n");
    const report = await applyTeamFile(store, teams(changed));
    expect(report).toMatchObject({
      teamsUnchanged: 2,
      teamsRemoved: [],
      membersAdded: 1,
      membersUpdated: 1,
      membersRemoved: 2,
      membersUnchanged: 1,
    });
    const cpts = await store.getTeam('cpts-sud');
    expect(cpts?.members).toHaveLength(2);
    expect(cpts?.members.find((m) => m.kind === 'professional')).toMatchObject({ role: 'présidente' });
    expect((await store.getTeam('msp-vignes'))?.members).toEqual([
      { kind: 'professional', nationalId: '819990000031', professionCode: '10' },
    ]);
    expect(await store.getTeam('esp-autre')).toBeDefined();

    const pruned = await applyTeamFile(store, teams(changed), { prune: true });
    expect(pruned.teamsRemoved).toEqual(['esp-autre']);
    expect(await store.getTeam('esp-autre')).toBeUndefined();
    expect((await store.listTeams()).map((t) => t.id)).toEqual(['cpts-sud', 'msp-vignes']);
  });

  it('moves a team address between two teams of the file', async () => {
    await applyTeamFile(store, teams(YAML_TEAMS));
    const swapped = YAML_TEAMS.replace('    address: Equipe@cpts-sud-exemple.mssante.fr\n', '').replace(
      '    name: MSP des Vignes\n',
      '    name: MSP des Vignes\n    address: equipe@cpts-sud-exemple.mssante.fr\n',
    );
    const report = await applyTeamFile(store, teams(swapped));
    expect(report.teamsUpdated).toEqual(['cpts-sud', 'msp-vignes']);
    expect((await store.getTeam('equipe@cpts-sud-exemple.mssante.fr'))?.id).toBe('msp-vignes');
    expect((await store.getTeam('cpts-sud'))?.address).toBeUndefined();
  });

  it('refuses an address held by a team outside the file, before writing anything', async () => {
    await store.saveTeam({
      id: 'esp-x',
      kind: 'ESP',
      name: 'X',
      address: 'equipe@cpts-sud-exemple.mssante.fr',
    });
    await expect(applyTeamFile(store, teams(YAML_TEAMS))).rejects.toThrow(
      'team "cpts-sud": address equipe@cpts-sud-exemple.mssante.fr is already the address of team "esp-x"',
    );
    expect(await store.getTeam('cpts-sud')).toBeUndefined();
  });

  it('keeps and reports members that cannot be reached', async () => {
    const text = `teams:
  - id: esp-1
    kind: ESP
    name: ESP 1
    members:
      - { nationalId: '810000000000' }
      - { mailbox: personne@ailleurs.example }
`;
    const report = await applyTeamFile(store, teams(text));
    expect(report.membersAdded).toBe(2);
    expect(report.warnings).toEqual([
      'team "esp-1": mailbox personne@ailleurs.example has no live mailbox in the directory',
      'team "esp-1": professional 810000000000 has no live mailbox in the directory',
    ]);
  });
});
