import { createHash } from 'node:crypto';
import { createReadStream, ReadStream, statSync } from 'node:fs';
import type { ActivityMethods, ActivityRow } from './activity-store.ts';
import { NO_ACTIVITY_KEY } from './activity-store.ts';
import type { DirectoryStore } from './directory-store.ts';
import type { ExtractImportOptions, ImportProgress, RejectedLine } from './extract-import.ts';
import { lineReader } from './extract-import.ts';
import type { Activity, Professional, Structure } from './model.ts';
import { ADELI, luhnValid, RPPS } from './normalise.ts';
import { guessStructureKind } from './structure-kind.ts';

/**
 * Streaming import of the RPPS open-data file `PS_LibreAcces_Personne_activite` (layout in
 * docs/directory.md): `|`-separated UTF-8 with a trailing `|` on every line, one header line,
 * 56 columns, one line per person × activity. Columns are found by their header name: the
 * publisher has reordered them before.
 */

/** Columns in the published layout (the header may hold more or fewer, see readActivityHeader). */
export const ACTIVITY_COLUMNS = 56;

/** The columns read, by header name. Required ones make a header without them an error. */
const REQUIRED = {
  idType: "Type d'identifiant PP",
  id: 'Identifiant PP',
  nationalId: 'Identification nationale PP',
  lastName: "Nom d'exercice",
  firstName: "Prénom d'exercice",
  professionCode: 'Code profession',
  professionLabel: 'Libellé profession',
  skillType: 'Code type savoir-faire',
  skillCode: 'Code savoir-faire',
  skillLabel: 'Libellé savoir-faire',
  modeCode: 'Code mode exercice',
  siret: 'Numéro SIRET site',
  siren: 'Numéro SIREN site',
  finess: 'Numéro FINESS site',
  technicalId: 'Identifiant technique de la structure',
  siteName: 'Raison sociale site',
  roleCode: 'Code rôle',
  genreCode: 'Code genre activité',
} as const;

/** Read when present; a header without them is imported with a warning (line 1). */
const OPTIONAL = {
  exerciseCivility: "Code civilité d'exercice",
  civility: 'Code civilité',
  modeLabel: 'Libellé mode exercice',
  brand: 'Enseigne commerciale site',
  recipientLine: 'Complément destinataire (coord. structure)',
  placeLine: 'Complément point géographique (coord. structure)',
  streetNumber: 'Numéro Voie (coord. structure)',
  streetRepeat: 'Indice répétition voie (coord. structure)',
  streetTypeCode: 'Code type de voie (coord. structure)',
  streetTypeLabel: 'Libellé type de voie (coord. structure)',
  streetName: 'Libellé Voie (coord. structure)',
  distribution: 'Mention distribution (coord. structure)',
  postcode: 'Code postal (coord. structure)',
  city: 'Libellé commune (coord. structure)',
  countryLabel: 'Libellé pays (coord. structure)',
  department: 'Code Département (structure)',
  sectorCode: "Code secteur d'activité",
  sectorLabel: "Libellé secteur d'activité",
  roleLabel: 'Libellé rôle',
} as const;

type Field = keyof typeof REQUIRED | keyof typeof OPTIONAL;

/** Where each column read is (index from 0; -1 when an optional one is absent). */
export interface ActivityColumns {
  /** Columns per line, the trailing `|` not counted. */
  count: number;
  index: Record<Field, number>;
  /** Optional columns missing from the header. */
  missingOptional: string[];
}

/** The savoir-faire type of a specialty (TRE_R04 "S", spécialité ordinale); others are not kept. */
const SPECIALTY_TYPE = 'S';

const SIRET = /^\d{14}$/;
const SIREN = /^\d{9}$/;
/** FINESS: 9 characters, the department first (2A/2B for Corsica). */
const FINESS = /^(\d{2}|2[AB])\d{7}$/;
const TECHNICAL_ID = /^[0-9A-Za-z]{1,20}$/;

export type ActivityImportOptions = ExtractImportOptions;

export interface ActivityImportReport {
  importId: number;
  /** Data lines (the header excluded). */
  lines: number;
  inserted: number;
  updated: number;
  unchanged: number;
  retiredActivities: number;
  /** Live activities kept because their person's line was rejected (its national id was readable). */
  keptActivities: number;
  /** Why nothing was retired when the safeguards refused it (no accepted line, too large a share). */
  retireRefused?: string;
  rejectedCount: number;
  rejected: RejectedLine[];
  warningCount: number;
  warnings: RejectedLine[];
  durationMs: number;
}

/** A problem with the whole file (no header, a required column missing): nothing was retired. */
export class RppsImportError extends Error {
  override name = 'RppsImportError';
}

/** What the import needs of the directory store. */
export type ActivityImportTarget = Pick<
  DirectoryStore,
  'beginImport' | 'heartbeatImport' | 'finishImport' | 'failImport'
> &
  Pick<ActivityMethods, 'applyActivityBatch'>;

/** Decodes a line that is not valid UTF-8, to read its national id all the same. */
const lossy = new TextDecoder('utf-8');

const headerKey = (name: string) => name.normalize('NFC').replace(/[’‘]/g, "'").trim().toLowerCase();

/** Strips the trailing `|` (one empty last field) that every line of the layout carries. */
function splitFields(text: string): string[] {
  const fields = text.split('|');
  if (fields.length > 1 && fields[fields.length - 1] === '') fields.pop();
  return fields;
}

/**
 * Locates the columns by name in the header line (BOM, case, spacing and typographic apostrophes
 * tolerated). Throws an RppsImportError naming every missing or repeated required column.
 */
export function readActivityHeader(text: string, where = 'line 1'): ActivityColumns {
  const names = splitFields(text.replace(/^\uFEFF/, ''));
  const positions = new Map<string, number[]>();
  names.forEach((n, i) => {
    const k = headerKey(n);
    positions.set(k, [...(positions.get(k) ?? []), i]);
  });
  const index = {} as Record<Field, number>;
  const missing: string[] = [];
  const repeated: string[] = [];
  const missingOptional: string[] = [];
  const locate = (field: Field, name: string, required: boolean) => {
    const at = positions.get(headerKey(name)) ?? [];
    if (at.length > 1) repeated.push(name);
    if (at.length === 0) (required ? missing : missingOptional).push(name);
    index[field] = at[0] ?? -1;
  };
  for (const [field, name] of Object.entries(REQUIRED)) locate(field as Field, name, true);
  for (const [field, name] of Object.entries(OPTIONAL)) locate(field as Field, name, false);
  if (missing.length > 0 || repeated.length > 0) {
    const problems = [
      missing.length > 0 ? `missing column${missing.length > 1 ? 's' : ''} ${quoteAll(missing)}` : '',
      repeated.length > 0 ? `repeated column${repeated.length > 1 ? 's' : ''} ${quoteAll(repeated)}` : '',
    ].filter(Boolean);
    throw new RppsImportError(
      `${where} is not a PS_LibreAcces_Personne_activite header (${names.length} columns, ` +
        `${ACTIVITY_COLUMNS} expected): ${problems.join('; ')}`,
    );
  }
  return { count: names.length, index, missingOptional };
}

const quoteAll = (names: string[]) => names.map((n) => `"${n}"`).join(', ');

/**
 * Imports `PS_LibreAcces_Personne_activite` from a file path or a byte stream. Idempotent: the same
 * file again changes no data. A newer file updates what changed and, when complete, retires the
 * activities that disappeared. Professionals and sites (structures) are upserted from the lines.
 */
export async function importPersonActivity(
  store: ActivityImportTarget,
  source: string | AsyncIterable<Uint8Array>,
  options: ActivityImportOptions = {},
): Promise<ActivityImportReport> {
  const started = performance.now();
  const batchSize = options.batchSize ?? 2000;
  const maxReported = options.maxReported ?? 1000;
  const checkDigit = options.rppsCheckDigit ?? 'warn';
  const where = typeof source === 'string' ? source : 'the stream';
  const totalBytes = typeof source === 'string' ? statSync(source).size : undefined;

  // The store's import lock (one import at a time): refreshed by each batch, released by
  // finishImport or failImport. Taken before the file is opened: a refused import opens nothing.
  const importId = await store.beginImport(
    'rpps',
    options.staleLockMs === undefined ? {} : { staleAfterMs: options.staleLockMs },
  );
  const report: ActivityImportReport = {
    importId,
    lines: 0,
    inserted: 0,
    updated: 0,
    unchanged: 0,
    retiredActivities: 0,
    keptActivities: 0,
    rejectedCount: 0,
    rejected: [],
    warningCount: 0,
    warnings: [],
    durationMs: 0,
  };
  const reject = (line: number, reason: string) => {
    report.rejectedCount++;
    if (report.rejected.length < maxReported) report.rejected.push({ line, reason });
  };
  const warn = (line: number, reason: string) => {
    report.warningCount++;
    if (report.warnings.length < maxReported) report.warnings.push({ line, reason });
  };
  const summary = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      lines: report.lines,
      inserted: report.inserted,
      updated: report.updated,
      unchanged: report.unchanged,
      rejected: report.rejectedCount,
      ...extra,
    });

  /** National ids read from rejected lines: their live activities are kept (finishImport). */
  const keep = new Set<string>();
  let input: ReturnType<typeof createReadStream> | AsyncIterable<Uint8Array> | undefined;
  try {
    input = typeof source === 'string' ? createReadStream(source, { highWaterMark: 1 << 20 }) : source;
    const reader = lineReader(input);
    let batch: ActivityRow[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      const r = await store.applyActivityBatch(importId, batch);
      report.inserted += r.inserted;
      report.updated += r.updated;
      report.unchanged += r.unchanged;
      for (const x of r.rejected) reject(x.line, x.reason);
      batch = [];
      const progress: ImportProgress = {
        bytes: reader.bytes,
        lines: report.lines,
        rejected: report.rejectedCount,
      };
      if (totalBytes !== undefined) progress.totalBytes = totalBytes;
      options.onProgress?.(progress);
    };

    let columns: ActivityColumns | undefined;
    for await (const { lineNo, text, bytes } of reader.lines) {
      if (columns === undefined) {
        if (text === undefined) throw new RppsImportError(`${where}: line 1 (the header) is not valid UTF-8`);
        columns = readActivityHeader(text, `${where}: line 1`);
        for (const name of columns.missingOptional) warn(1, `no column "${name}" in the header: left empty`);
        continue;
      }
      if (text === '') continue; // a trailing empty line
      report.lines++;
      if (text === undefined) {
        reject(lineNo, 'not valid UTF-8');
        const id = nationalIdOf(lossy.decode(bytes), columns);
        if (id !== undefined) keep.add(id);
        continue;
      }
      const parsed = parseActivityLine(text, columns, lineNo, checkDigit);
      if ('reason' in parsed) {
        reject(lineNo, parsed.reason);
        // A rejected line that still names its person: what that person had stays live.
        const id = nationalIdOf(text, columns);
        if (id !== undefined) keep.add(id);
        continue;
      }
      if (parsed.warning !== undefined) warn(lineNo, parsed.warning);
      batch.push(parsed.row);
      if (batch.length >= batchSize) await flush();
    }
    if (columns === undefined) throw new RppsImportError(`${where} is empty: no header line`);
    await flush();
    // Only after a complete read: a failed import retires nothing. Retired in the transaction that
    // checks the lock and releases it: an import whose lock was taken over as stale retires nothing.
    const finished = await store.finishImport(importId, {
      retire: (options.retireMissing ?? true) ? 'activities' : false,
      summary: summary(),
      acceptedLines: report.lines - report.rejectedCount,
      keepActivitiesOf: [...keep],
      ...(options.maxRetireShare === undefined ? {} : { maxRetireShare: options.maxRetireShare }),
      ...(options.forceRetire === undefined ? {} : { forceRetire: options.forceRetire }),
    });
    report.retiredActivities = finished.retiredActivities;
    report.keptActivities = finished.kept;
    if (finished.retireRefused !== undefined) report.retireRefused = finished.retireRefused;
  } catch (err) {
    // A file opened and not read to its end: closed here, not left to the garbage collector.
    if (input instanceof ReadStream) input.destroy();
    try {
      await store.failImport(importId, (err as Error).message);
    } catch (finishErr) {
      throw new AggregateError([err, finishErr], `import ${importId} failed and could not be closed`, {
        cause: finishErr,
      });
    }
    throw err;
  }
  report.durationMs = Math.round(performance.now() - started);
  return report;
}

/** Parses one data line against the header's columns; exported for tests. */
export function parseActivityLine(
  text: string,
  columns: ActivityColumns,
  lineNo: number,
  rppsCheckDigit: 'reject' | 'warn' | 'ignore' = 'warn',
): { row: ActivityRow; warning?: string } | { reason: string } {
  const c = splitFields(text);
  if (c.length !== columns.count) {
    return { reason: `expected ${columns.count} columns, found ${c.length}` };
  }
  const col = (f: Field) => {
    const i = columns.index[f];
    return i < 0 ? '' : c[i]!.trim();
  };
  const name = (f: Field) =>
    f in REQUIRED ? REQUIRED[f as keyof typeof REQUIRED] : OPTIONAL[f as keyof typeof OPTIONAL];
  let warning: string | undefined;

  const idType = col('idType');
  const id = col('id');
  if (idType === '8') {
    if (!RPPS.test(id)) return { reason: `bad RPPS "${id}" (${name('id')}): 11 digits expected` };
    if (!luhnValid(id) && rppsCheckDigit !== 'ignore') {
      const message = `RPPS ${id} (${name('id')}) fails its Luhn check digit`;
      if (rppsCheckDigit === 'reject') return { reason: message };
      warning = message;
    }
  } else if (idType === '0') {
    if (!ADELI.test(id)) return { reason: `bad ADELI "${id}" (${name('id')}): 9 characters expected` };
  } else {
    return {
      reason: `unknown person id type "${idType}" (${name('idType')}): 8 (RPPS) or 0 (ADELI) expected`,
    };
  }
  const nationalId = col('nationalId');
  if (nationalId !== `${idType}${id}`) {
    return { reason: `national id "${nationalId}" (${name('nationalId')}) is not "${idType}" + "${id}"` };
  }
  const lastName = col('lastName');
  if (lastName === '') return { reason: `missing name (${name('lastName')})` };

  const p: Professional = { nationalId, idType, lastName, firstName: col('firstName') };
  const civility = col('exerciseCivility') || col('civility');
  if (civility !== '') p.civility = civility;
  if (col('professionCode') !== '') p.professionCode = col('professionCode');
  if (col('professionLabel') !== '') p.professionLabel = col('professionLabel');
  if (col('skillType') === SPECIALTY_TYPE && col('skillCode') !== '') {
    p.specialtyCode = col('skillCode');
    if (col('skillLabel') !== '') p.specialtyLabel = col('skillLabel');
  }

  const siret = col('siret');
  const siren = col('siren');
  const finess = col('finess');
  const technicalId = col('technicalId');
  if (siret !== '' && !SIRET.test(siret))
    return { reason: `bad SIRET "${siret}" (${name('siret')}): 14 digits expected` };
  if (siren !== '' && !SIREN.test(siren))
    return { reason: `bad SIREN "${siren}" (${name('siren')}): 9 digits expected` };
  if (finess !== '' && !FINESS.test(finess)) {
    return { reason: `bad FINESS "${finess}" (${name('finess')}): 9 characters expected` };
  }
  if (technicalId !== '' && !TECHNICAL_ID.test(technicalId)) {
    return {
      reason: `bad structure id "${technicalId}" (${name('technicalId')}): 1 to 20 letters or digits expected`,
    };
  }

  // The site as a structure, keyed like the extract's: FINESS, else SIRET, else SIREN, else the
  // RPPS technical id of the structure (type 4, as the extract's RPPS practices).
  const siteName = col('siteName') || col('brand');
  let structure: Structure | undefined;
  const [sType, sId] =
    finess !== ''
      ? (['1', finess] as const)
      : siret !== ''
        ? (['3', siret] as const)
        : siren !== ''
          ? (['2', siren] as const)
          : technicalId !== ''
            ? (['4', technicalId] as const)
            : [undefined, undefined];
  if (sType !== undefined) {
    const sName = siteName || sId;
    structure = {
      key: `${sType}:${sId}`,
      idType: sType,
      identification: sId,
      name: sName,
      kind: guessStructureKind(sType, sName),
    };
  }
  const modeCode = col('modeCode');
  const roleCode = col('roleCode');
  const genreCode = col('genreCode');
  const activity: ActivityRow['activity'] = { activityKey: NO_ACTIVITY_KEY };
  if (structure !== undefined || modeCode !== '' || roleCode !== '' || genreCode !== '') {
    activity.activityKey = [structure?.key ?? '', modeCode, roleCode, genreCode].join('|');
    const set = (key: Exclude<keyof Activity, 'structure' | 'retiredAt' | 'nationalId'>, value: string) => {
      if (value !== '') activity[key] = value;
    };
    if (structure !== undefined) activity.structure = structure;
    set('siteName', siteName);
    set('roleCode', roleCode);
    set('roleLabel', col('roleLabel'));
    set('modeCode', modeCode);
    set('modeLabel', col('modeLabel'));
    set('sectorCode', col('sectorCode'));
    set('sectorLabel', col('sectorLabel'));
    const streetLine = [
      col('streetNumber'),
      col('streetRepeat'),
      col('streetTypeCode') || col('streetTypeLabel'),
      col('streetName'),
    ]
      .filter(Boolean)
      .join(' ');
    set(
      'street',
      [col('recipientLine'), col('placeLine'), streetLine, col('distribution')].filter(Boolean).join(', '),
    );
    set('postcode', col('postcode'));
    set('city', col('city'));
    set('department', col('department'));
    set('country', col('countryLabel'));
  }
  // What is stored, not the raw bytes: columns we do not keep (phone, e-mail...) or a new column
  // order do not make every line "updated".
  const hash = createHash('sha1')
    .update(JSON.stringify([p, activity]))
    .digest('base64');
  const row: ActivityRow = { lineNo, hash, professional: p, activity };
  return warning === undefined ? { row } : { row, warning };
}

/**
 * The national id of a line when its columns give a valid and consistent one (type 8 + 11-digit
 * RPPS or 0 + 9-character ADELI, equal to type + id), whatever else is wrong with it.
 */
function nationalIdOf(text: string, columns: ActivityColumns): string | undefined {
  const c = splitFields(text);
  const at = (f: Field) => c[columns.index[f]]?.trim() ?? '';
  const idType = at('idType');
  const id = at('id');
  const valid = (idType === '8' && RPPS.test(id)) || (idType === '0' && ADELI.test(id));
  return valid && at('nationalId') === `${idType}${id}` ? `${idType}${id}` : undefined;
}
