import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import type { DirectoryStore } from './directory-store.ts';
import { normaliseAddress } from './mailbox-store.ts';
import type { Team, TeamKind, TeamMember } from './model.ts';
import { TEAM_KINDS } from './model.ts';
import { toNationalId } from './normalise.ts';

/**
 * Teams (ESP, CPTS, MSP) and their members from a file an operator keeps, YAML or CSV:
 *
 *   teams:
 *     - id: cpts-sud-exemple
 *       kind: CPTS
 *       name: CPTS Sud Exemple
 *       address: cpts-sud@courrier.localhost   # optional: the address that expands to the members
 *       structure: '1:1340000000'              # optional: the structure that carries the team
 *       members:
 *         - { nationalId: '819990000000', role: coordinateur, profession: '10' }
 *         - { mailbox: urgences@ch-exemple.mssante.fr }
 *
 *   team_id;kind;team_name;team_address;member;role;profession     (one line per membership;
 *   cpts-sud-exemple;CPTS;CPTS Sud Exemple;;819990000000;coordinateur;10   member: id or address)
 *
 * The file is checked as a whole before anything is written: one problem and nothing is applied,
 * because applying is a sync (members missing from the file are removed from their team).
 */

export interface TeamSpec extends Team {
  members: TeamMember[];
  /**
   * The file cannot say which structure carries the team (the CSV layout has no such column): the
   * stored one is kept instead of being cleared.
   */
  keepStructure?: boolean;
}

export interface TeamFileProblem {
  /** 1-based line in the file. */
  line: number;
  /** YAML: where in the document, e.g. `teams[2].members[0]`. */
  path?: string;
  message: string;
}

/** The file cannot be applied; `problems` lists every problem found, each with its line. */
export class TeamFileError extends Error {
  override readonly name = 'TeamFileError';
  readonly problems: TeamFileProblem[];
  constructor(file: string, problems: TeamFileProblem[]) {
    super(
      `${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}, nothing applied:\n` +
        problems.map((p) => `  ${formatProblem(file, p)}`).join('\n'),
    );
    this.problems = problems;
  }
}

export function formatProblem(file: string, p: TeamFileProblem): string {
  return `${file}:${p.line}: ${p.path === undefined ? '' : `${p.path}: `}${p.message}`;
}

export type TeamFileFormat = 'yaml' | 'csv';

export const CSV_HEADER = ['team_id', 'kind', 'team_name', 'team_address', 'member', 'role', 'profession'];
const TEAM_ID = /^[a-z0-9][a-z0-9._-]*$/;
const STRUCTURE_KEY = /^[0-4]:\S+$/;
const PROFESSION = /^\d{1,4}$/;

/** `csv` for `.csv` files or a text starting with the CSV header, else `yaml`. */
export function detectTeamFileFormat(file: string, text: string): TeamFileFormat {
  const ext = extname(file).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  return /^\uFEFF?\s*"?team_id"?\s*;/i.test(text) ? 'csv' : 'yaml';
}

/** Reads and checks a teams file; throws TeamFileError listing every problem. */
export async function readTeamFile(file: string, format?: TeamFileFormat): Promise<TeamSpec[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the teams file ${file}: ${(err as Error).message}`, { cause: err });
  }
  const { teams, problems } = parseTeamFile(text, format ?? detectTeamFileFormat(file, text));
  if (problems.length > 0) throw new TeamFileError(file, problems);
  return teams;
}

/** Parses a teams file's text; problems are returned, not thrown. */
export function parseTeamFile(
  text: string,
  format: TeamFileFormat,
): { teams: TeamSpec[]; problems: TeamFileProblem[] } {
  const r = format === 'csv' ? parseCsv(text) : parseYaml(text);
  if (r.teams.length === 0 && r.problems.length === 0) {
    r.problems.push({ line: 1, message: 'no team in the file' });
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Checks shared by both formats

/** A value checked as team files and the CLI (gateway/directory-cli.ts) check it. */
export type Check<T> = { value: T } | { problem: string };

export function checkStructureKey(v: string): Check<string> {
  return STRUCTURE_KEY.test(v)
    ? { value: v }
    : { problem: `invalid structure key "${v}" (<id type 0-4>:<identification>, e.g. 1:1340000000)` };
}

export function checkId(v: string): Check<string> {
  return TEAM_ID.test(v)
    ? { value: v }
    : {
        problem: `invalid team id "${v}" (lower-case letters, digits, . _ - ; starting with a letter or digit)`,
      };
}

function checkKind(v: string): Check<TeamKind> {
  const k = v.trim().toUpperCase() as TeamKind;
  return TEAM_KINDS.includes(k)
    ? { value: k }
    : { problem: `invalid kind "${v}" (expected ${TEAM_KINDS.join(', ')})` };
}

export function checkAddress(v: string): Check<string> {
  try {
    return { value: normaliseAddress(v) };
  } catch (err) {
    return { problem: (err as Error).message };
  }
}

export function checkNationalId(v: string): Check<string> {
  const id = toNationalId(v);
  return id === undefined
    ? { problem: `invalid national id "${v}" (8 + 11-digit RPPS, 0 + 9-character ADELI, or a bare RPPS)` }
    : { value: id };
}

export function checkProfession(v: string): Check<string> {
  return PROFESSION.test(v)
    ? { value: v }
    : { problem: `invalid profession "${v}" (a TRE_G15 code: digits, e.g. 10, 60)` };
}

function memberKey(m: TeamMember): string {
  return m.kind === 'mailbox' ? `mailbox:${m.address}` : `professional:${m.nationalId}`;
}

/** Duplicate team ids, team addresses and members, across the whole file. */
class Collector {
  readonly teams: TeamSpec[] = [];
  readonly problems: TeamFileProblem[] = [];
  private readonly teamLines = new Map<string, number>();
  private readonly addressLines = new Map<string, { team: string; line: number }>();
  private readonly memberLines = new Map<string, number>();

  problem(line: number, message: string, path?: string): void {
    this.problems.push(path === undefined ? { line, message } : { line, path, message });
  }

  /** Registers a team; returns false (and records why) for a duplicate. */
  addTeam(team: TeamSpec, line: number, path?: string): boolean {
    const first = this.teamLines.get(team.id);
    if (first !== undefined) {
      this.problem(line, `team "${team.id}" is already defined on line ${first}`, path);
      return false;
    }
    if (team.address !== undefined) {
      const other = this.addressLines.get(team.address);
      if (other !== undefined) {
        this.problem(
          line,
          `address ${team.address} is already the address of team "${other.team}" (line ${other.line})`,
          path,
        );
        return false;
      }
      this.addressLines.set(team.address, { team: team.id, line });
    }
    this.teamLines.set(team.id, line);
    this.teams.push(team);
    return true;
  }

  addMember(team: TeamSpec, member: TeamMember, line: number, path?: string): void {
    const key = `${team.id} ${memberKey(member)}`;
    const first = this.memberLines.get(key);
    if (first !== undefined) {
      const who = member.kind === 'mailbox' ? member.address : member.nationalId;
      this.problem(line, `${who} is already a member of "${team.id}" (line ${first})`, path);
      return;
    }
    this.memberLines.set(key, line);
    team.members.push(member);
  }
}

// ---------------------------------------------------------------------------------------------
// YAML

const TEAM_KEYS = new Set(['id', 'kind', 'name', 'address', 'structure', 'members']);
const MEMBER_KEYS = new Set(['nationalId', 'mailbox', 'role', 'profession']);

function parseYaml(text: string): { teams: TeamSpec[]; problems: TeamFileProblem[] } {
  const c = new Collector();
  const lines = new LineCounter();
  // Failsafe schema: every scalar is text, so an unquoted ADELI id (`0341234567`) keeps its
  // leading zero and a profession code (`10`) is not a number.
  const doc = parseDocument(text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    schema: 'failsafe',
  });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) c.problem(lines.linePos(e.pos[0]).line, `YAML syntax error: ${e.message}`);
    return c;
  }
  const lineOf = (path: (string | number)[]): number => lineAt(doc, lines, path);
  const root: unknown = doc.toJS();
  if (!isRecord(root) || !Array.isArray(root.teams)) {
    c.problem(1, 'expected a top-level "teams:" list');
    return c;
  }
  for (const key of Object.keys(root)) {
    if (key !== 'teams') c.problem(lineOf([key]), `unknown key "${key}" (only "teams")`, key);
  }
  root.teams.forEach((raw: unknown, i: number) => {
    const at = ['teams', i];
    const path = `teams[${i}]`;
    const line = lineOf(at);
    if (!isRecord(raw)) {
      c.problem(line, 'expected a mapping with id, kind, name, members', path);
      return;
    }
    const before = c.problems.length;
    for (const key of Object.keys(raw)) {
      if (!TEAM_KEYS.has(key)) {
        c.problem(lineOf([...at, key]), `unknown key "${key}" (expected ${[...TEAM_KEYS].join(', ')})`, path);
      }
    }
    const field = (key: string, required: boolean): string | undefined => {
      const v = raw[key];
      if (v === undefined || v === null || v === '') {
        if (required) c.problem(line, `"${key}" is required`, path);
        return undefined;
      }
      if (typeof v !== 'string' && typeof v !== 'number') {
        c.problem(lineOf([...at, key]), `"${key}" must be text`, `${path}.${key}`);
        return undefined;
      }
      return String(v).trim();
    };
    const take = <T>(key: string, check: (v: string) => Check<T>, required: boolean): T | undefined => {
      const v = field(key, required);
      if (v === undefined) return undefined;
      const r = check(v);
      if ('problem' in r) {
        c.problem(lineOf([...at, key]), r.problem, `${path}.${key}`);
        return undefined;
      }
      return r.value;
    };
    const id = take('id', checkId, true);
    const kind = take('kind', checkKind, true);
    const name = field('name', true);
    const address = take('address', checkAddress, false);
    const structure = take('structure', checkStructureKey, false);
    const membersRaw = raw.members ?? [];
    if (!Array.isArray(membersRaw)) {
      c.problem(lineOf([...at, 'members']), 'expected a list of members', `${path}.members`);
      return;
    }
    if (id === undefined || kind === undefined || name === undefined || c.problems.length > before) return;
    const team: TeamSpec = { id, kind, name, members: [] };
    if (address !== undefined) team.address = address;
    if (structure !== undefined) team.structureKey = structure;
    if (!c.addTeam(team, line, path)) return;

    membersRaw.forEach((m: unknown, j: number) => {
      const mAt = [...at, 'members', j];
      const mPath = `${path}.members[${j}]`;
      const mLine = lineOf(mAt);
      if (!isRecord(m)) {
        c.problem(mLine, 'expected a mapping with nationalId or mailbox', mPath);
        return;
      }
      const text = (key: string): string | undefined => {
        const v = m[key];
        if (v === undefined || v === null || v === '') return undefined;
        return typeof v === 'string' || typeof v === 'number' ? String(v).trim() : undefined;
      };
      for (const key of Object.keys(m)) {
        if (!MEMBER_KEYS.has(key)) {
          c.problem(
            lineOf([...mAt, key]),
            `unknown key "${key}" (expected ${[...MEMBER_KEYS].join(', ')})`,
            mPath,
          );
        } else if (m[key] !== null && typeof m[key] === 'object') {
          c.problem(lineOf([...mAt, key]), `"${key}" must be text`, mPath);
        }
      }
      const member = buildMember(
        {
          nationalId: text('nationalId'),
          mailbox: text('mailbox'),
          role: text('role'),
          profession: text('profession'),
        },
        (message) => c.problem(mLine, message, mPath),
      );
      if (member !== undefined) c.addMember(team, member, mLine, mPath);
    });
  });
  return c;
}

function lineAt(doc: Document.Parsed, lines: LineCounter, path: (string | number)[]): number {
  // The deepest node that exists along the path (the key for mapping entries).
  let node: unknown = doc.contents;
  let offset = 0;
  for (const segment of path) {
    if (isMap(node)) {
      const pair = node.items.find(
        (p) => String((p.key as { value?: unknown } | null)?.value) === String(segment),
      );
      if (pair === undefined) break;
      const keyRange = (pair.key as { range?: [number, number, number] } | null)?.range;
      if (keyRange) offset = keyRange[0];
      node = pair.value;
    } else if (isSeq(node)) {
      const item = node.items[Number(segment)] as { range?: [number, number, number] } | undefined;
      if (item === undefined) break;
      if (item.range) offset = item.range[0];
      node = item;
    } else break;
  }
  return lines.linePos(offset).line;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function buildMember(
  f: {
    nationalId?: string | undefined;
    mailbox?: string | undefined;
    role?: string | undefined;
    profession?: string | undefined;
  },
  problem: (message: string) => void,
): TeamMember | undefined {
  if ((f.nationalId === undefined) === (f.mailbox === undefined)) {
    problem('give exactly one of nationalId or mailbox');
    return undefined;
  }
  let member: TeamMember | undefined;
  let ok = true;
  if (f.nationalId !== undefined) {
    const r = checkNationalId(f.nationalId);
    if ('problem' in r) {
      problem(r.problem);
      ok = false;
    } else member = { kind: 'professional', nationalId: r.value };
  } else {
    const r = checkAddress(f.mailbox!);
    if ('problem' in r) {
      problem(r.problem);
      ok = false;
    } else member = { kind: 'mailbox', address: r.value };
  }
  if (f.profession !== undefined) {
    const r = checkProfession(f.profession);
    if ('problem' in r) {
      problem(r.problem);
      ok = false;
    } else if (member !== undefined) member.professionCode = r.value;
  }
  if (!ok || member === undefined) return undefined;
  if (f.role !== undefined) member.role = f.role;
  return member;
}

// ---------------------------------------------------------------------------------------------
// CSV

/** Splits one line on `;`, with `"…"` quoting (`""` for a quote), as spreadsheets write it. */
function splitCsvLine(line: string): string[] | undefined {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let value = '';
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q === -1) return undefined; // unterminated quote
        value += line.slice(i, q);
        if (line[q + 1] === '"') {
          value += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      fields.push(value);
      if (i === line.length) return fields;
      if (line[i] !== ';') return undefined;
      i++;
    } else {
      const sep = line.indexOf(';', i);
      if (sep === -1) {
        fields.push(line.slice(i));
        return fields;
      }
      fields.push(line.slice(i, sep));
      i = sep + 1;
    }
  }
}

function parseCsv(text: string): { teams: TeamSpec[]; problems: TeamFileProblem[] } {
  const c = new Collector();
  const rows = text.replace(/^\uFEFF/, '').split('\n');
  const header = splitCsvLine((rows[0] ?? '').replace(/\r$/, ''))?.map((h) => h.trim().toLowerCase());
  if (header === undefined || header.join(';') !== CSV_HEADER.join(';')) {
    c.problem(1, `expected the header ${CSV_HEADER.join(';')}`);
    return c;
  }
  const byId = new Map<string, { team: TeamSpec; line: number }>();
  for (let n = 1; n < rows.length; n++) {
    const raw = rows[n]!.replace(/\r$/, '');
    const line = n + 1;
    if (raw.trim() === '') continue;
    const f = splitCsvLine(raw)?.map((v) => v.trim());
    if (f === undefined) {
      c.problem(line, 'unbalanced double quote');
      continue;
    }
    if (f.length !== CSV_HEADER.length) {
      c.problem(line, `expected ${CSV_HEADER.length} fields separated by ;, found ${f.length}`);
      continue;
    }
    const [teamId, kindText, name, addressText, memberText, role, profession] = f as [
      string,
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    const before = c.problems.length;
    const id = checkId(teamId);
    if ('problem' in id) c.problem(line, id.problem);
    const kind = checkKind(kindText);
    if ('problem' in kind) c.problem(line, kind.problem);
    if (name === '') c.problem(line, 'team_name is required');
    const address = addressText === '' ? undefined : checkAddress(addressText);
    if (address !== undefined && 'problem' in address) c.problem(line, address.problem);
    if (c.problems.length > before || !('value' in id) || !('value' in kind)) continue;

    let entry = byId.get(id.value);
    if (entry === undefined) {
      const team: TeamSpec = { id: id.value, kind: kind.value, name, members: [], keepStructure: true };
      if (address !== undefined && 'value' in address) team.address = address.value;
      if (!c.addTeam(team, line)) continue;
      entry = { team, line };
      byId.set(id.value, entry);
    } else {
      // Every line repeats the team's own columns: they must agree, or which one is right?
      const t = entry.team;
      const a = address !== undefined && 'value' in address ? address.value : undefined;
      if (t.kind !== kind.value || t.name !== name || t.address !== a) {
        c.problem(line, `team "${t.id}" has a different kind, name or address on line ${entry.line}`);
        continue;
      }
    }
    if (memberText === '') {
      if (role !== '' || profession !== '') c.problem(line, 'role or profession given without a member');
      continue; // a team without members (yet)
    }
    const isAddress = memberText.includes('@');
    const member = buildMember(
      {
        nationalId: isAddress ? undefined : memberText,
        mailbox: isAddress ? memberText : undefined,
        role: role === '' ? undefined : role,
        profession: profession === '' ? undefined : profession,
      },
      (message) => c.problem(line, message),
    );
    if (member !== undefined) c.addMember(entry.team, member, line);
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Apply

export interface TeamSyncReport {
  teamsCreated: string[];
  teamsUpdated: string[];
  teamsUnchanged: number;
  /** Teams not in the file that were removed (only with `prune`). */
  teamsRemoved: string[];
  membersAdded: number;
  membersUpdated: number;
  membersRemoved: number;
  membersUnchanged: number;
  /** Members that cannot be reached today (no such person or no live mailbox): kept, reported. */
  warnings: string[];
}

/**
 * Makes the store match `teams`: each team listed is created or updated, its members added or
 * updated, and members not in the file removed. Teams not in the file are left alone, or removed
 * with `prune`. Idempotent: applying the same file again changes nothing. Not one transaction: an
 * interrupted sync is completed by running it again.
 */
export async function applyTeamFile(
  store: DirectoryStore,
  teams: readonly TeamSpec[],
  options: { prune?: boolean } = {},
): Promise<TeamSyncReport> {
  const report: TeamSyncReport = {
    teamsCreated: [],
    teamsUpdated: [],
    teamsUnchanged: 0,
    teamsRemoved: [],
    membersAdded: 0,
    membersUpdated: 0,
    membersRemoved: 0,
    membersUnchanged: 0,
    warnings: [],
  };
  // A team address held by a team outside the file would fail half-way through: check first.
  for (const spec of teams) {
    if (spec.address === undefined) continue;
    const holder = await store.getTeam(spec.address);
    if (holder !== undefined && holder.id !== spec.id && !teams.some((t) => t.id === holder.id)) {
      throw new Error(
        `team "${spec.id}": address ${spec.address} is already the address of team "${holder.id}"`,
      );
    }
  }
  const befores = new Map<string, Awaited<ReturnType<DirectoryStore['getTeam']>>>();
  for (const spec of teams) befores.set(spec.id, await store.getTeam(spec.id));
  // Addresses may move between teams of the file: free the changed ones first (UNIQUE constraint).
  for (const before of befores.values()) {
    const spec = teams.find((t) => t.id === before?.id);
    if (before?.address !== undefined && before.address !== spec?.address) {
      const { members: _members, address: _address, ...team } = before;
      await store.saveTeam(team);
    }
  }
  for (const spec of teams) {
    const before = befores.get(spec.id);
    const { members, keepStructure, ...team } = spec;
    if (keepStructure === true && before?.structureKey !== undefined) team.structureKey = before.structureKey;
    await store.saveTeam(team);
    const existing = new Map((before?.members ?? []).map((m) => [memberKey(m), m]));
    const wanted = new Set(members.map(memberKey));
    for (const [key, m] of existing) {
      if (!wanted.has(key)) {
        await store.removeTeamMember(spec.id, m);
        report.membersRemoved++;
      }
    }
    for (const m of members) await store.addTeamMember(spec.id, m);
    const after = await store.getTeam(spec.id);
    const afterByKey = new Map((after?.members ?? []).map((m) => [memberKey(m), m]));
    for (const [key, m] of afterByKey) {
      const old = existing.get(key);
      if (old === undefined) report.membersAdded++;
      else if (old.role !== m.role || old.professionCode !== m.professionCode) report.membersUpdated++;
      else report.membersUnchanged++;
    }
    if (before === undefined) report.teamsCreated.push(spec.id);
    else if (
      before.kind !== spec.kind ||
      before.name !== spec.name ||
      before.address !== spec.address ||
      before.structureKey !== team.structureKey
    )
      report.teamsUpdated.push(spec.id);
    else report.teamsUnchanged++;

    const expansion = await store.expandTeam(spec.id);
    for (const m of expansion?.unreachable ?? []) {
      report.warnings.push(
        `team "${spec.id}": ${m.kind === 'mailbox' ? `mailbox ${m.address}` : `professional ${m.nationalId}`} has no live mailbox in the directory`,
      );
    }
  }
  if (options.prune) {
    const listed = new Set(teams.map((t) => t.id));
    for (const t of await store.listTeams()) {
      if (!listed.has(t.id) && (await store.removeTeam(t.id))) report.teamsRemoved.push(t.id);
    }
  }
  return report;
}
