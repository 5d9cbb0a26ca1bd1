import { open, writeFile } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Config } from '../config/schema.ts';
import { ImportLockError, SEARCH_MAX, type DirectoryStore } from '../directory/directory-store.ts';
import { importPersonActivity, RppsImportError } from '../directory/rpps-import.ts';
import { ExtractImportError, importExtract, progressBar } from '../directory/extract-import.ts';
import { KeyFileError, readKeyFile } from '../directory/key-file.ts';
import { MAILBOX_TYPES, MailboxError, openMailboxStore } from '../directory/mailbox-store.ts';
import type {
  DirectoryMailbox,
  KeyFormat,
  MailboxKey,
  Team,
  TeamKind,
  TeamMember,
} from '../directory/model.ts';
import { TEAM_KINDS } from '../directory/model.ts';
import { toNationalId } from '../directory/normalise.ts';
import {
  applyTeamFile,
  checkAddress,
  checkId,
  checkNationalId,
  checkProfession,
  checkStructureKey,
  readTeamFile,
  TeamFileError,
  type Check,
  type TeamFileFormat,
} from '../directory/team-file.ts';
import { importWhitelist } from '../directory/whitelist.ts';
import { openDirectory, StartupError } from './open-directory.ts';
import type { DataPaths } from './first-run.ts';

/**
 * `courrier directory ...`, `courrier team ...` and `courrier mailbox attach|keys|detach`: the
 * directory for an admin. Entries go to stdout (the admin asked for them); nothing is logged.
 */

/** What the commands need from cli.ts. */
export interface CliContext {
  configFrom(cmd: Command): Config;
  dataDir(config: Config): Promise<DataPaths>;
  out(text: string): void;
}

/** An expected failure: one line on stderr, exit code 1. */
export class CliError extends Error {
  override readonly name = 'CliError';
}

/** Shown on the summary; the rest goes to --report. */
const REJECTED_SHOWN = 10;

type ImportFormat = 'extract' | 'whitelist' | 'rpps';

/** The format of a directory file from its first bytes (BOM and leading blanks ignored). */
export function detectImportFormat(head: string): ImportFormat | undefined {
  // Case and typographic apostrophes vary between publications; the importers accept both.
  const text = head
    .replace(/^\uFEFF/, '')
    .replace(/[\u2019\u02bc]/g, "'")
    .toLowerCase();
  if (text.startsWith('type de bal|')) return 'extract';
  if (text.startsWith("type d'identifiant pp|")) return 'rpps';
  if (text.trimStart().startsWith('<')) return 'whitelist';
  return undefined;
}

async function readHead(file: string): Promise<string> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await handle.close();
  }
}

/** Errors the directory modules raise for bad input become CliErrors (message only, no stack). */
function expected(err: unknown): unknown {
  if (
    err instanceof KeyFileError ||
    err instanceof TeamFileError ||
    err instanceof ExtractImportError ||
    err instanceof MailboxError ||
    err instanceof StartupError ||
    err instanceof RppsImportError ||
    err instanceof ImportLockError
  ) {
    return new CliError(err.message, { cause: err });
  }
  return err;
}

function jsonOr(
  json: boolean | undefined,
  out: (t: string) => void,
  value: unknown,
  text: () => string,
): void {
  out(
    json ? JSON.stringify(value, (_k, v: unknown) => (v instanceof Uint8Array ? undefined : v), 2) : text(),
  );
}

/** The value of a check shared with team files (directory/team-file.ts), or its problem as a CliError. */
function must<T>(check: Check<T>): T {
  if ('problem' in check) throw new CliError(check.problem);
  return check.value;
}

const address = (a: string): string => must(checkAddress(a));
const nationalId = (id: string): string => must(checkNationalId(id));

const date = (ms: number | undefined) =>
  ms === undefined ? 'none' : new Date(ms).toISOString().slice(0, 10);

function nameOf(m: DirectoryMailbox): string {
  if (m.owner !== undefined) return `${m.owner.lastName} ${m.owner.firstName}`.trim();
  return m.displayName ?? '';
}

/** A plain-text table: columns padded to their widest cell. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function describeMailbox(m: DirectoryMailbox, keys: MailboxKey[]): string {
  const lines = [
    `${m.address}  ${m.type}  ${m.source}${m.hosted ? ', hosted here' : ''}${m.hidden ? ', hidden (liste rouge)' : ''}` +
      (m.retiredAt !== undefined ? `, retired ${date(m.retiredAt)}` : ''),
  ];
  if (m.owner !== undefined) {
    const p = m.owner;
    lines.push(
      `  owner: ${[p.civility, p.firstName, p.lastName].filter(Boolean).join(' ')}  ${p.nationalId}` +
        (p.professionLabel
          ? `  ${p.professionLabel}${p.professionCode ? ` (${p.professionCode})` : ''}`
          : '') +
        (p.specialtyLabel ? `, ${p.specialtyLabel}` : ''),
    );
  } else if (m.displayName) lines.push(`  name: ${m.displayName}`);
  for (const s of m.structures) {
    lines.push(
      `  at: ${s.structure.name} (${s.structure.key}, ${s.structure.kind})` +
        (s.service ? `, ${s.service}` : '') +
        (s.postcode || s.city ? `, ${[s.postcode, s.city].filter(Boolean).join(' ')}` : ''),
    );
  }
  for (const k of keys) lines.push(`  key: ${describeKey(k)}`);
  return lines.join('\n');
}

function describeKey(k: MailboxKey, now = Date.now()): string {
  const state =
    k.notAfter !== undefined && k.notAfter <= now
      ? 'expired'
      : k.notBefore !== undefined && k.notBefore > now
        ? 'not yet valid'
        : 'valid';
  return `${k.format}  ${k.fingerprint}  ${date(k.notBefore)} to ${date(k.notAfter)}  ${state}${k.preferred ? '  preferred' : ''}`;
}

function describeMember(m: TeamMember): string {
  return (
    (m.kind === 'mailbox' ? m.address : m.nationalId) +
    (m.role ? `  ${m.role}` : '') +
    (m.professionCode ? `  profession ${m.professionCode}` : '')
  );
}

/** Runs `fn` on the configured directory (hosted mailboxes marked), closing it afterwards. */
function directoryRunner(ctx: CliContext) {
  return async (cmd: Command, fn: (store: DirectoryStore) => Promise<void>): Promise<void> => {
    const config = ctx.configFrom(cmd);
    const paths = await ctx.dataDir(config);
    const hosted = openMailboxStore(paths.directoryFile);
    try {
      const store = await openDirectory(config, paths, { hostedMailboxes: hosted }).catch((err: unknown) => {
        throw expected(err);
      });
      try {
        await fn(store);
      } catch (err) {
        throw expected(err);
      } finally {
        await store.close();
      }
    } finally {
      hosted.close();
    }
  };
}

export function registerDirectoryCommands(program: Command, ctx: CliContext): void {
  const { out } = ctx;

  const withDirectory = directoryRunner(ctx);

  // -------------------------------------------------------------------------------------------
  // directory

  const directory = program.command('directory').description('the professional directory');

  directory
    .command('import <file>')
    .description(
      'import a directory file (Extraction_Correspondance_MSSante, whitelist, PS_LibreAcces activities)',
    )
    .addOption(
      new Option('--format <format>', 'file format (default: detected from the first line)').choices([
        'extract',
        'whitelist',
        'rpps',
      ]),
    )
    .option('--no-retire', 'do not retire what the file no longer lists')
    .option(
      '--force-retire',
      'retire what the file no longer lists even if that is more than 20% of the live entries, or the file has no accepted line',
    )
    .addOption(
      new Option('--rpps-check-digit <mode>', 'RPPS Luhn check digit')
        .choices(['warn', 'reject', 'ignore'])
        .default('warn'),
    )
    .option(
      '--report <file>',
      'write the report as JSON: exact counts, and the rejected and warned lines up to --max-reported of each',
    )
    .addOption(
      new Option('--max-reported <n>', 'rejected (and warned) lines kept in the report')
        .default(10_000)
        .argParser((v) => {
          const n = Number(v);
          if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('not a whole number');
          return n;
        }),
    )
    .option('--json', 'print the report as JSON')
    .action(
      async (
        file: string,
        opts: {
          format?: ImportFormat;
          retire: boolean;
          forceRetire?: boolean;
          rppsCheckDigit: 'warn' | 'reject' | 'ignore';
          maxReported: number;
          report?: string;
          json?: boolean;
        },
        cmd: Command,
      ) => {
        const head = await readHead(file);
        const format = opts.format ?? detectImportFormat(head);
        if (format === undefined) {
          throw new CliError(
            `${file}: unknown format (the first line is neither "Type de BAL|..." (extract), ` +
              `"Type d'identifiant PP|..." (rpps) nor XML (whitelist)); give --format`,
          );
        }
        await withDirectory(cmd, async (store) => {
          const options = {
            rppsCheckDigit: opts.rppsCheckDigit,
            retireMissing: opts.retire,
            forceRetire: opts.forceRetire === true,
            maxReported: opts.maxReported,
            onProgress: progressBar(process.stderr),
          };
          let report: Record<string, unknown> & { rejected?: { line: number; reason: string }[] };
          let summary: string;
          if (format === 'whitelist') {
            const r = await importWhitelist(store, file);
            report = { format, ...r };
            summary =
              `imported ${file} (whitelist): ${r.entries.length} entries, ${r.domains} domains, ${r.removed} removed, ` +
              `${r.skipped.length} skipped${r.truncated ? '; the file is truncated: nothing was removed' : ''}` +
              r.skipped
                .slice(0, REJECTED_SHOWN)
                .map((s) => `\n  line ${s.line}: ${s.reason}`)
                .join('');
          } else {
            const r =
              format === 'extract'
                ? await importExtract(store, file, options)
                : await importPersonActivity(store, file, options);
            if (process.stderr.isTTY) process.stderr.write('\n');
            // The safeguard kept everything live: said on stderr, whatever the output format.
            if (r.retireRefused !== undefined) process.stderr.write(`warning: ${r.retireRefused}\n`);
            report = { format, ...r };
            const retired =
              'retiredActivities' in r
                ? `${String(r.retiredActivities)} retired activities`
                : `${r.retiredMailboxes} retired mailboxes`;
            summary =
              `imported ${file} (${format}): ${r.lines} lines, ${r.inserted} inserted, ${r.updated} updated, ` +
              `${r.unchanged} unchanged, ${retired}, ${r.rejectedCount} rejected, ${r.warningCount} warnings ` +
              `(${(r.durationMs / 1000).toFixed(1)} s)` +
              (r.rejected.length > 0
                ? `\nfirst rejected lines:${r.rejected
                    .slice(0, REJECTED_SHOWN)
                    .map((x) => `\n  line ${x.line}: ${x.reason}`)
                    .join('')}` +
                  (r.rejectedCount > REJECTED_SHOWN ? `\n  ... ${r.rejectedCount - REJECTED_SHOWN} more` : '')
                : '');
          }
          if (opts.report !== undefined) {
            await writeFile(opts.report, `${JSON.stringify(report, null, 2)}\n`).catch((err: unknown) => {
              throw new CliError(`cannot write the report ${opts.report}: ${(err as Error).message}`, {
                cause: err,
              });
            });
            summary += `\nreport: ${opts.report}`;
          }
          jsonOr(opts.json, out, report, () => summary);
        });
      },
    );

  directory
    .command('search')
    .description('search mailboxes (accents and case ignored)')
    .option('--name <words>', 'words of a name or a service')
    .option('--profession <code|words>', 'profession code (10, 60...) or label words')
    .option('--city <words|postcode>', 'city words or postcode prefix')
    .option('--structure <words|key>', 'structure name words or key (1:1340000000)')
    .addOption(new Option('--type <type>', 'mailbox type').choices([...MAILBOX_TYPES]))
    .option('--limit <n>', `at most n results (default 50, at most ${SEARCH_MAX})`)
    .option('--include-hidden', 'include liste rouge mailboxes')
    .option('--json', 'machine-readable output')
    .action(
      (
        opts: {
          name?: string;
          profession?: string;
          city?: string;
          structure?: string;
          type?: (typeof MAILBOX_TYPES)[number];
          limit?: string;
          includeHidden?: boolean;
          json?: boolean;
        },
        cmd: Command,
      ) =>
        withDirectory(cmd, async (store) => {
          let limit: number | undefined;
          if (opts.limit !== undefined) {
            if (!/^\d+$/.test(opts.limit) || Number(opts.limit) < 1 || Number(opts.limit) > SEARCH_MAX) {
              throw new CliError('--limit must be a whole number from 1 to 500');
            }
            limit = Number(opts.limit);
          }
          const results = await store.search({
            ...(opts.name !== undefined ? { name: opts.name } : {}),
            ...(opts.profession !== undefined ? { profession: opts.profession } : {}),
            ...(opts.city !== undefined ? { city: opts.city } : {}),
            ...(opts.structure !== undefined ? { structure: opts.structure } : {}),
            ...(opts.type !== undefined ? { type: opts.type } : {}),
            ...(limit !== undefined ? { limit } : {}),
            includeHidden: Boolean(opts.includeHidden),
          });
          jsonOr(opts.json, out, results, () =>
            results.length === 0
              ? 'no mailbox found'
              : table(
                  ['ADDRESS', 'TYPE', 'NAME', 'PROFESSION', 'CITY', 'STRUCTURE'],
                  results.map((m) => [
                    m.address + (m.hidden ? ' (hidden)' : ''),
                    m.type,
                    nameOf(m),
                    m.owner?.professionLabel ?? '',
                    m.structures[0]?.city ?? '',
                    m.structures[0]?.structure.name ?? '',
                  ]),
                ),
          );
        }),
    );

  directory
    .command('show <query>')
    .description('a mailbox (address), a professional (national id) or a team (id or address)')
    .option('--json', 'machine-readable output')
    .action((query: string, opts: { json?: boolean }, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        if (query.includes('@')) {
          const m = await store.resolveAddress(query, { includeRetired: true });
          if (m !== undefined) {
            const keys = await store.keysFor(m.address, { includeInvalid: true });
            jsonOr(opts.json, out, { ...m, keys }, () => describeMailbox(m, keys));
            return;
          }
        } else {
          const id = toNationalId(query);
          const found = id === undefined ? undefined : await store.findByNationalId(id);
          if (found !== undefined) {
            const p = found.professional;
            jsonOr(opts.json, out, found, () =>
              [
                `${[p.civility, p.firstName, p.lastName].filter(Boolean).join(' ')}  ${p.nationalId}` +
                  (p.professionLabel ? `  ${p.professionLabel} (${p.professionCode ?? ''})` : '') +
                  (p.specialtyLabel ? `, ${p.specialtyLabel}` : ''),
                ...(found.mailboxes.length === 0
                  ? ['  no live mailbox']
                  : found.mailboxes.map((m) => `  ${m.address}  ${m.type}${m.hidden ? '  hidden' : ''}`)),
              ].join('\n'),
            );
            return;
          }
        }
        const team = await store.getTeam(query);
        if (team !== undefined) {
          jsonOr(opts.json, out, team, () =>
            [
              `${team.id}  ${team.kind}  ${team.name}${team.address ? `  <${team.address}>` : ''}`,
              ...team.members.map((m) => `  ${describeMember(m)}`),
            ].join('\n'),
          );
          return;
        }
        throw new CliError(
          `nothing in the directory for "${query}" (an address, a national id or a team id)`,
        );
      }),
    );

  directory
    .command('stats')
    .description('counts of what the directory holds')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        const c = await store.counts();
        jsonOr(opts.json, out, { backend: store.backend, ...c }, () =>
          table(
            ['', 'COUNT'],
            [['backend', store.backend], ...Object.entries(c).map(([k, v]) => [k, String(v)])],
          ),
        );
      }),
    );

  for (const [name, hidden] of [
    ['hide', true],
    ['unhide', false],
  ] as const) {
    directory
      .command(`${name} <address>`)
      .description(
        hidden ? 'put a mailbox on the liste rouge (never in search)' : 'take a mailbox off the liste rouge',
      )
      .action((a: string, _opts, cmd: Command) =>
        withDirectory(cmd, async (store) => {
          const addr = address(a);
          if (!(await store.setHidden(addr, hidden)))
            throw new CliError(`no mailbox ${addr} in the directory`);
          out(`${addr}: ${hidden ? 'hidden (liste rouge)' : 'visible in search'}`);
        }),
      );
  }

  // -------------------------------------------------------------------------------------------
  // team

  const team = program.command('team').description('ESP, CPTS and MSP teams');

  team
    .command('import <file>')
    .description('sync teams from a CSV or YAML file (members not in the file are removed from its teams)')
    .addOption(
      new Option('--format <format>', 'default: from the extension or the header').choices(['csv', 'yaml']),
    )
    .option('--prune', 'also remove the teams that are not in the file')
    .option('--json', 'print the report as JSON')
    .action(
      (file: string, opts: { format?: TeamFileFormat; prune?: boolean; json?: boolean }, cmd: Command) =>
        withDirectory(cmd, async (store) => {
          let teams;
          try {
            teams = await readTeamFile(file, opts.format);
          } catch (err) {
            throw err instanceof TeamFileError ? err : new CliError((err as Error).message, { cause: err });
          }
          const r = await applyTeamFile(store, teams, { prune: Boolean(opts.prune) });
          jsonOr(opts.json, out, r, () =>
            [
              `imported ${file}: ${teams.length} teams (${r.teamsCreated.length} created, ${r.teamsUpdated.length} updated, ` +
                `${r.teamsUnchanged} unchanged${opts.prune ? `, ${r.teamsRemoved.length} removed` : ''}); members: ` +
                `${r.membersAdded} added, ${r.membersUpdated} updated, ${r.membersRemoved} removed, ${r.membersUnchanged} unchanged`,
              ...r.warnings.map((w) => `warning: ${w}`),
            ].join('\n'),
          );
        }),
    );

  team
    .command('list')
    .description('every team')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        const teams: (Team & { members: number })[] = [];
        for (const t of await store.listTeams()) {
          teams.push({ ...t, members: (await store.getTeam(t.id))?.members.length ?? 0 });
        }
        jsonOr(opts.json, out, teams, () =>
          teams.length === 0
            ? 'no team'
            : table(
                ['ID', 'KIND', 'NAME', 'ADDRESS', 'MEMBERS'],
                teams.map((t) => [t.id, t.kind, t.name, t.address ?? '', String(t.members)]),
              ),
        );
      }),
    );

  team
    .command('show <idOrAddress>')
    .description('a team, its members, and who a message to it reaches')
    .option('--profession <code>', 'only members of this profession (TRE_G15 code)')
    .option('--json', 'machine-readable output')
    .action((idOrAddress: string, opts: { profession?: string; json?: boolean }, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        const t = await store.getTeam(idOrAddress);
        const expansion = await store.expandTeam(
          idOrAddress,
          opts.profession === undefined ? {} : { profession: opts.profession },
        );
        if (t === undefined || expansion === undefined) throw new CliError(`no team "${idOrAddress}"`);
        jsonOr(
          opts.json,
          out,
          { ...t, recipients: expansion.recipients, unreachable: expansion.unreachable },
          () =>
            [
              `${t.id}  ${t.kind}  ${t.name}${t.address ? `  <${t.address}>` : ''}${t.structureKey ? `  structure ${t.structureKey}` : ''}`,
              `members (${t.members.length}):`,
              ...t.members.map((m) => `  ${describeMember(m)}`),
              `recipients${opts.profession ? ` (profession ${opts.profession})` : ''} (${expansion.recipients.length}):`,
              ...expansion.recipients.map((r) => `  ${r.address}  (${describeMember(r.member)})`),
              ...(expansion.unreachable.length > 0
                ? [
                    `unreachable (${expansion.unreachable.length}, no live mailbox):`,
                    ...expansion.unreachable.map((m) => `  ${describeMember(m)}`),
                  ]
                : []),
            ].join('\n'),
        );
      }),
    );

  team
    .command('add <id>')
    .description('create or update a team')
    .addOption(new Option('--kind <kind>', 'ESP, CPTS or MSP').choices([...TEAM_KINDS]).makeOptionMandatory())
    .requiredOption('--name <name>', 'team name')
    .option('--address <address>', 'the address that expands to the members')
    .option('--structure <key>', 'the structure that carries the team (1:1340000000)')
    .action(
      (
        id: string,
        opts: { kind: TeamKind; name: string; address?: string; structure?: string },
        cmd: Command,
      ) =>
        withDirectory(cmd, async (store) => {
          must(checkId(id));
          if (opts.structure !== undefined) must(checkStructureKey(opts.structure));
          const addr = opts.address === undefined ? undefined : address(opts.address);
          if (addr !== undefined) {
            const holder = await store.getTeam(addr);
            if (holder !== undefined && holder.id !== id) {
              throw new CliError(`${addr} is already the address of team "${holder.id}"`);
            }
          }
          const existed = (await store.getTeam(id)) !== undefined;
          const t = await store.saveTeam({
            id,
            kind: opts.kind,
            name: opts.name,
            ...(addr !== undefined ? { address: addr } : {}),
            ...(opts.structure !== undefined ? { structureKey: opts.structure } : {}),
          });
          out(
            `${existed ? 'updated' : 'created'} team ${t.id} (${t.kind}) ${t.name}${t.address ? ` <${t.address}>` : ''}`,
          );
        }),
    );

  const memberOf = (opts: {
    nationalId?: string;
    mailbox?: string;
    role?: string;
    profession?: string;
  }): TeamMember => {
    if ((opts.nationalId === undefined) === (opts.mailbox === undefined)) {
      throw new CliError('give exactly one of --national-id or --mailbox');
    }
    const m: TeamMember =
      opts.nationalId !== undefined
        ? { kind: 'professional', nationalId: nationalId(opts.nationalId) }
        : { kind: 'mailbox', address: address(opts.mailbox!) };
    if (opts.role !== undefined) m.role = opts.role;
    if (opts.profession !== undefined) m.professionCode = must(checkProfession(opts.profession));
    return m;
  };

  team
    .command('add-member <id>')
    .description('add a professional or a mailbox to a team (or update its role)')
    .option('--national-id <id>', '8 + RPPS, 0 + ADELI, or an RPPS')
    .option('--mailbox <address>', 'a mailbox (a service, an EHPAD...)')
    .option('--role <role>', 'role in the team')
    .option('--profession <code>', 'profession code for this membership (default: the professional’s)')
    .action(
      (
        id: string,
        opts: { nationalId?: string; mailbox?: string; role?: string; profession?: string },
        cmd: Command,
      ) =>
        withDirectory(cmd, async (store) => {
          const m = memberOf(opts);
          if ((await store.getTeam(id)) === undefined) throw new CliError(`no team "${id}"`);
          await store.addTeamMember(id, m);
          const who = m.kind === 'mailbox' ? m.address : m.nationalId;
          const unreachable = (await store.expandTeam(id))?.unreachable ?? [];
          out(`${id}: member ${who} saved`);
          if (unreachable.some((u) => (u.kind === 'mailbox' ? u.address : u.nationalId) === who)) {
            console.error(`courrier: warning: ${who} has no live mailbox in the directory`);
          }
        }),
    );

  team
    .command('remove-member <id>')
    .description('remove a professional or a mailbox from a team')
    .option('--national-id <id>', '8 + RPPS, 0 + ADELI, or an RPPS')
    .option('--mailbox <address>', 'a mailbox')
    .action((id: string, opts: { nationalId?: string; mailbox?: string }, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        const m = memberOf(opts);
        const who = m.kind === 'mailbox' ? m.address : m.nationalId;
        if (!(await store.removeTeamMember(id, m)))
          throw new CliError(`${who} is not a member of team "${id}"`);
        out(`${id}: member ${who} removed`);
      }),
    );

  team
    .command('remove <id>')
    .description('remove a team and its memberships')
    .action((id: string, _opts, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        if (!(await store.removeTeam(id))) throw new CliError(`no team "${id}"`);
        out(`removed team ${id}`);
      }),
    );
}

/** `courrier mailbox attach|keys|detach`, on the existing `mailbox` command. */
export function registerMailboxKeyCommands(mailbox: Command, ctx: CliContext): void {
  const { out } = ctx;
  const withDirectory = directoryRunner(ctx);

  mailbox
    .command('attach <address> <file>')
    .description('attach an S/MIME certificate or OpenPGP public key to a mailbox')
    .addOption(
      new Option('--format <format>', 'default: detected from the content').choices(['smime', 'openpgp']),
    )
    .option('--preferred', 'use this one first for its format')
    .action((a: string, file: string, opts: { format?: KeyFormat; preferred?: boolean }, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        const addr = address(a);
        const key = await readKeyFile(file, {
          address: addr,
          ...(opts.format ? { format: opts.format } : {}),
        });
        if (key.format === 'openpgp') {
          // The crypto layer's rules for encrypting to a key (strength, flags, expiry, revocation).
          // Loaded on demand: OpenPGP.js is large and only this command needs it.
          const { checkPgpKey, readPgpPublicKey } = await import('../crypto/openpgp-keys.ts');
          // Validity (expiry, revocation, dates) is already among the key file's warnings: add what
          // only this layer judges, such as key strength and usage flags.
          const { status, problem } = await checkPgpKey(await readPgpPublicKey(key.data), 'encrypt');
          const validity: readonly string[] = ['expired', 'revoked', 'not-yet-valid'];
          if (status !== 'trusted' && problem !== undefined && !validity.includes(status)) {
            key.warnings.push(`cannot be used to encrypt: ${problem}`);
          }
        }
        if ((await store.resolveAddress(addr)) === undefined) {
          key.warnings.push(`${addr} is not in the directory (the key is kept for it all the same)`);
        }
        const saved = await store.attachKey(addr, {
          format: key.format,
          data: key.data,
          ...(key.notBefore !== undefined ? { notBefore: key.notBefore } : {}),
          ...(key.notAfter !== undefined ? { notAfter: key.notAfter } : {}),
          preferred: Boolean(opts.preferred),
        });
        out(
          [
            `attached to ${addr}: ${describeKey(saved)}`,
            `  ${key.format === 'smime' ? 'subject' : 'user IDs'}: ${key.identity}`,
            ...(key.keyFingerprint ? [`  OpenPGP fingerprint: ${key.keyFingerprint}`] : []),
          ].join('\n'),
        );
        for (const w of key.warnings) console.error(`courrier: warning: ${w}`);
      }),
    );

  mailbox
    .command('keys <address>')
    .description('certificates and keys attached to a mailbox (expired ones included)')
    .option('--json', 'machine-readable output')
    .action((a: string, opts: { json?: boolean }, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        const addr = address(a);
        const keys = await store.keysFor(addr, { includeInvalid: true });
        jsonOr(opts.json, out, keys, () =>
          keys.length === 0 ? `no key for ${addr}` : keys.map((k) => describeKey(k)).join('\n'),
        );
      }),
    );

  mailbox
    .command('detach <address> <fingerprint>')
    .description('remove a certificate or key (SHA-256 fingerprint as `mailbox keys` shows it)')
    .action((a: string, fingerprint: string, _opts, cmd: Command) =>
      withDirectory(cmd, async (store) => {
        const addr = address(a);
        if (!(await store.detachKey(addr, fingerprint))) {
          throw new CliError(`no key ${fingerprint} for ${addr} (see courrier mailbox keys ${addr})`);
        }
        out(`detached ${fingerprint} from ${addr}`);
      }),
    );
}

/**
 * The PS_LibreAcces_Personne_activite importer (directory/rpps-import.ts) is loaded when asked for,
 * so that the other commands do not depend on it.
 */
