import type { BatchResult } from './directory-store.ts';
import type { Activity, Professional, Structure, StructureIdType, StructureKind } from './model.ts';
import { normaliseText, toNationalId } from './normalise.ts';
import type { Row, SqlDriver, SqlExecutor } from './sql.ts';

/**
 * Storage of `PS_LibreAcces_Personne_activite` lines (rpps-import.ts) in `dir_activities`, and the
 * professionals and structures they name. Spread into the directory store by directory-store.ts.
 */

/** The activity key of a line that gives a person without any activity (empty activity columns). */
export const NO_ACTIVITY_KEY = '';

/** One accepted line, ready to store. */
export interface ActivityRow {
  lineNo: number;
  /** Hash of what is stored from the line: equal hash, nothing to write. */
  hash: string;
  /** Without specialty when the line's savoir-faire is not one: the stored specialty then stays. */
  professional: Professional;
  activity: Omit<Activity, 'nationalId' | 'retiredAt'>;
}

export interface ActivityMethods {
  /**
   * Import primitive (rpps-import.ts): one transaction per batch, which first refreshes the import
   * lock's heartbeat (ImportLockError, nothing written, if the lock was taken over as stale).
   * Retirement is done by `finishImport(id, { retire: 'activities' })`, in the transaction that
   * releases the lock.
   */
  applyActivityBatch(importId: number, rows: readonly ActivityRow[]): Promise<BatchResult>;
  /** A professional's live activities (all with `includeRetired`), with their structure when known. */
  activitiesOf(nationalId: string, opts?: { includeRetired?: boolean }): Promise<Activity[]>;
}

/**
 * `heartbeat` refreshes the import lock in the caller's transaction and throws an ImportLockError
 * when the lock was lost (directory-store.ts).
 */
export function activityMethods(
  driver: SqlDriver,
  heartbeat: (tx: SqlExecutor, importId: number) => Promise<void>,
): ActivityMethods {
  return {
    applyActivityBatch(importId, rows) {
      return driver.transaction(async (tx) => {
        await heartbeat(tx, importId);
        return applyBatch(tx, importId, rows);
      });
    },

    async activitiesOf(nationalId, opts = {}) {
      const id = toNationalId(nationalId);
      if (id === undefined) return [];
      const rows = await driver.all(
        `SELECT a.*, s.id_type, s.identification, s.name, s.kind FROM dir_activities a
         LEFT JOIN dir_structures s ON s.key = a.structure_key
         WHERE a.national_id = ? AND a.activity_key <> ? ${opts.includeRetired ? '' : 'AND a.retired_at IS NULL'}
         ORDER BY a.activity_key`,
        [id, NO_ACTIVITY_KEY],
      );
      return rows.map(toActivity);
    },
  };
}

/**
 * Retires (marks, never deletes) the activities not seen by import `importId`, in the caller's
 * transaction (finishImport's, after its lock check). Returns the activities retired (person-only
 * rows retired too, not counted).
 */
export async function retireUnseenActivities(
  tx: SqlExecutor,
  importId: number,
  now: number,
): Promise<number> {
  const retired = await tx.run(
    `UPDATE dir_activities SET retired_at = ?
     WHERE retired_at IS NULL AND last_import < ? AND activity_key <> ?`,
    [now, importId, NO_ACTIVITY_KEY],
  );
  await tx.run(
    `UPDATE dir_activities SET retired_at = ?
     WHERE retired_at IS NULL AND last_import < ? AND activity_key = ?`,
    [now, importId, NO_ACTIVITY_KEY],
  );
  return retired;
}

/** Live activities (person-only rows not counted) and how many of them import `importId` did not see. */
export async function liveActivityCounts(
  tx: SqlExecutor,
  importId: number,
): Promise<{ live: number; unseen: number }> {
  const row = await tx.get(
    `SELECT COUNT(*) AS live, COALESCE(SUM(CASE WHEN last_import < ? THEN 1 ELSE 0 END), 0) AS unseen
     FROM dir_activities WHERE retired_at IS NULL AND activity_key <> ?`,
    [importId, NO_ACTIVITY_KEY],
  );
  return { live: Number(row?.live ?? 0), unseen: Number(row?.unseen ?? 0) };
}

/**
 * Marks the live activities of these people seen by import `importId`: their line was rejected but
 * named them, so what they had stays. Returns the activities kept (person-only rows included).
 */
export async function keepActivitiesOf(
  tx: SqlExecutor,
  importId: number,
  nationalIds: readonly string[],
): Promise<number> {
  let kept = 0;
  for (const id of nationalIds) {
    kept += await tx.run(
      'UPDATE dir_activities SET last_import = ? WHERE national_id = ? AND retired_at IS NULL AND last_import < ?',
      [importId, id, importId],
    );
  }
  return kept;
}

/** Ids per `IN (…)` list; lists are padded to this size so that one statement text is prepared. */
const CHUNK = 100;

function chunked<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) {
    const part = items.slice(i, i + CHUNK);
    while (part.length < CHUNK) part.push(part[part.length - 1]!);
    out.push(part);
  }
  return out;
}

const SELECT_KNOWN = `SELECT national_id, activity_key, row_hash, last_import, retired_at FROM dir_activities
  WHERE national_id IN (${Array.from({ length: CHUNK }, () => '?').join(', ')})`;
const MARK_SEEN = `UPDATE dir_activities SET last_import = ?
  WHERE (national_id, activity_key) IN (VALUES ${Array.from({ length: CHUNK }, () => '(?, ?)').join(', ')})`;

interface Known {
  hash: string;
  lastImport: number;
  live: boolean;
}

async function applyBatch(
  tx: SqlExecutor,
  importId: number,
  rows: readonly ActivityRow[],
): Promise<BatchResult> {
  const result: BatchResult = { inserted: 0, updated: 0, unchanged: 0, rejected: [] };
  const now = Date.now();
  // What is stored for the batch's people: one query per 100 people instead of two per line.
  const known = new Map<string, Known>();
  const people = [...new Set(rows.map((r) => r.professional.nationalId))];
  for (const ids of chunked(people)) {
    for (const e of await tx.all(SELECT_KNOWN, ids)) {
      known.set(`${String(e.national_id)}\n${String(e.activity_key)}`, {
        hash: String(e.row_hash),
        lastImport: Number(e.last_import),
        live: e.retired_at === null || e.retired_at === undefined,
      });
    }
  }
  /** Unchanged activities to mark as seen by this import: [national id, activity key]. */
  const seen: [string, string][] = [];
  for (const r of rows) {
    const nationalId = r.professional.nationalId;
    const a = r.activity;
    const key = `${nationalId}\n${a.activityKey}`;
    const existing = known.get(key);
    // The common case of a re-import: the same line, only marked as seen.
    if (existing !== undefined && existing.live && existing.hash === r.hash) {
      if (existing.lastImport !== importId) seen.push([nationalId, a.activityKey]);
      existing.lastImport = importId;
      result.unchanged++;
      continue;
    }
    if (existing !== undefined && existing.lastImport === importId) {
      // Two different lines for one activity: keeping the last would make every re-import flip.
      result.rejected.push({
        line: r.lineNo,
        reason:
          a.activityKey === NO_ACTIVITY_KEY
            ? `duplicate: ${nationalId} without activity already given on an earlier line with other contents`
            : `duplicate: activity "${a.activityKey}" of ${nationalId} already given on an earlier line with other contents`,
      });
      continue;
    }
    await upsertProfessional(tx, r.professional, now);
    if (a.structure !== undefined) await upsertStructure(tx, a.structure, now);
    await tx.run(
      `INSERT INTO dir_activities (national_id, activity_key, structure_key, site_name, role_code, role_label,
         mode_code, mode_label, sector_code, sector_label, street, postcode, city, city_norm, department,
         country, row_hash, last_import)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (national_id, activity_key) DO UPDATE SET structure_key = excluded.structure_key,
         site_name = excluded.site_name, role_code = excluded.role_code, role_label = excluded.role_label,
         mode_code = excluded.mode_code, mode_label = excluded.mode_label, sector_code = excluded.sector_code,
         sector_label = excluded.sector_label, street = excluded.street, postcode = excluded.postcode,
         city = excluded.city, city_norm = excluded.city_norm, department = excluded.department,
         country = excluded.country, row_hash = excluded.row_hash, last_import = excluded.last_import,
         retired_at = NULL`,
      [
        nationalId,
        a.activityKey,
        a.structure?.key ?? null,
        a.siteName ?? null,
        a.roleCode ?? null,
        a.roleLabel ?? null,
        a.modeCode ?? null,
        a.modeLabel ?? null,
        a.sectorCode ?? null,
        a.sectorLabel ?? null,
        a.street ?? null,
        a.postcode ?? null,
        a.city ?? null,
        a.city === undefined ? null : normaliseText(a.city),
        a.department ?? null,
        a.country ?? null,
        r.hash,
        importId,
      ],
    );
    if (existing === undefined) result.inserted++;
    else result.updated++;
    known.set(key, { hash: r.hash, lastImport: importId, live: true });
  }
  for (const pairs of chunked(seen)) await tx.run(MARK_SEEN, [importId, ...pairs.flat()]);
  return result;
}

/**
 * Names and profession come from the line. The specialty only when the line gives one: a person's
 * other lines, or the mailbox extract, may carry it when this line's savoir-faire is of another
 * type. The row is only written when something differs (updated_at stays meaningful).
 */
async function upsertProfessional(db: SqlExecutor, p: Professional, now: number): Promise<void> {
  await db.run(
    `INSERT INTO dir_professionals (national_id, id_type, civility, last_name, first_name, name_norm,
       profession_code, profession_label, profession_norm, specialty_code, specialty_label, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (national_id) DO UPDATE SET civility = excluded.civility, last_name = excluded.last_name,
       first_name = excluded.first_name, name_norm = excluded.name_norm,
       profession_code = excluded.profession_code, profession_label = excluded.profession_label,
       profession_norm = excluded.profession_norm,
       specialty_code = COALESCE(excluded.specialty_code, dir_professionals.specialty_code),
       specialty_label = COALESCE(excluded.specialty_label, dir_professionals.specialty_label),
       updated_at = excluded.updated_at
     WHERE dir_professionals.last_name <> excluded.last_name
       OR dir_professionals.first_name <> excluded.first_name
       OR COALESCE(dir_professionals.civility, '') <> COALESCE(excluded.civility, '')
       OR COALESCE(dir_professionals.profession_code, '') <> COALESCE(excluded.profession_code, '')
       OR COALESCE(dir_professionals.profession_label, '') <> COALESCE(excluded.profession_label, '')
       OR (excluded.specialty_code IS NOT NULL
           AND COALESCE(dir_professionals.specialty_code, '') <> excluded.specialty_code)
       OR (excluded.specialty_label IS NOT NULL
           AND COALESCE(dir_professionals.specialty_label, '') <> excluded.specialty_label)`,
    [
      p.nationalId,
      p.idType,
      p.civility ?? null,
      p.lastName,
      p.firstName,
      normaliseText(`${p.lastName} ${p.firstName}`),
      p.professionCode ?? null,
      p.professionLabel ?? null,
      p.professionLabel === undefined ? null : normaliseText(p.professionLabel),
      p.specialtyCode ?? null,
      p.specialtyLabel ?? null,
      now,
    ],
  );
}

async function upsertStructure(db: SqlExecutor, s: Structure, now: number): Promise<void> {
  await db.run(
    `INSERT INTO dir_structures (key, id_type, identification, name, name_norm, kind, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (key) DO UPDATE SET name = excluded.name, name_norm = excluded.name_norm,
       kind = excluded.kind, updated_at = excluded.updated_at
     WHERE dir_structures.name <> excluded.name OR dir_structures.kind <> excluded.kind`,
    [s.key, s.idType, s.identification, s.name, normaliseText(s.name), s.kind, now],
  );
}

function optional(row: Row, column: string): string | undefined {
  const v = row[column];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function toActivity(row: Row): Activity {
  const a: Activity = { nationalId: String(row.national_id), activityKey: String(row.activity_key) };
  const structureKey = optional(row, 'structure_key');
  if (structureKey !== undefined && typeof row.name === 'string') {
    a.structure = {
      key: structureKey,
      idType: String(row.id_type) as StructureIdType,
      identification: String(row.identification),
      name: row.name,
      kind: String(row.kind) as StructureKind,
    };
  }
  for (const [key, column] of [
    ['siteName', 'site_name'],
    ['roleCode', 'role_code'],
    ['roleLabel', 'role_label'],
    ['modeCode', 'mode_code'],
    ['modeLabel', 'mode_label'],
    ['sectorCode', 'sector_code'],
    ['sectorLabel', 'sector_label'],
    ['street', 'street'],
    ['postcode', 'postcode'],
    ['city', 'city'],
    ['department', 'department'],
    ['country', 'country'],
  ] as const) {
    const v = optional(row, column);
    if (v !== undefined) a[key] = v;
  }
  if (row.retired_at !== null && row.retired_at !== undefined) a.retiredAt = Number(row.retired_at);
  return a;
}
