import { isUtf8 } from 'node:buffer';
import { hash } from 'node:crypto';
import { statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { BatchResult, DirectoryStore, ExtractRow, FinishImportResult } from './directory-store.ts';
import type { MailboxType } from './mailbox-store.ts';
import { normaliseAddress } from './mailbox-store.ts';
import type { Professional, StructureIdType } from './model.ts';
import { ADELI, luhnValid, RPPS } from './normalise.ts';
import { guessStructureKind } from './structure-kind.ts';

/**
 * Streaming import of the public `Extraction_Correspondance_MSSante` file (layout in
 * docs/directory.md): `|`-separated UTF-8, one header line, 31 columns, PER and ORG rows.
 */

export const EXTRACT_COLUMNS = 31;
const DEFAULT_BATCH_SIZE = 2000;
const FIRST_HEADER = 'Type de BAL';

export interface ImportProgress {
  /** Bytes read so far and the total when known (a file). */
  bytes: number;
  totalBytes?: number;
  lines: number;
  rejected: number;
}

export interface RejectedLine {
  /** 1-based, the header being line 1. */
  line: number;
  reason: string;
}

export interface ExtractImportOptions {
  /** Lines per transaction; default 2 000. */
  batchSize?: number;
  /**
   * Heartbeat age (ms) after which another import holding the store's import lock is taken for
   * dead and marked failed; default 10 min (IMPORT_STALE_AFTER_MS).
   */
  staleLockMs?: number;
  /**
   * What to do with an RPPS whose Luhn check digit is wrong. Default `warn`: real RPPS numbers carry
   * one, but the synthetic generator's do not (9 in 10 fail), so rejecting is opt-in.
   */
  rppsCheckDigit?: 'reject' | 'warn' | 'ignore';
  /**
   * Retire (mark, never delete) what the file no longer lists; default true. Never done when the
   * import fails part-way.
   */
  retireMissing?: boolean;
  /**
   * Largest share (0 to 1) of the live mailbox links (RPPS: activities) an import may retire; more
   * is taken for a damaged file and nothing is retired (the lines are still applied). Default 0.2.
   * An import that accepted no line never retires.
   */
  maxRetireShare?: number;
  /** Retire whatever the share, even with no accepted line (CLI `--force-retire`). */
  forceRetire?: boolean;
  /** Called after each batch. */
  onProgress?: (progress: ImportProgress) => void;
  /** Rejected and warned lines kept in the report (the counts are always exact); default 1 000. */
  maxReported?: number;
}

export interface ExtractImportReport {
  importId: number;
  /** Data lines (the header excluded). */
  lines: number;
  inserted: number;
  updated: number;
  unchanged: number;
  retiredMailboxes: number;
  /** Live links kept because their line was rejected (its address was readable). */
  keptLinks: number;
  /** Why nothing was retired when the safeguards refused it (no accepted line, too large a share). */
  retireRefused?: string;
  rejectedCount: number;
  rejected: RejectedLine[];
  warningCount: number;
  warnings: RejectedLine[];
  durationMs: number;
}

/** A problem with the whole file (no header, unreadable): nothing was retired. */
export class ExtractImportError extends Error {
  override name = 'ExtractImportError';
}

type Source = string | AsyncIterable<Uint8Array>;

/**
 * Imports an extract from a file path or a byte stream into `store`. Idempotent: importing the same
 * file again changes no data. A newer file updates what changed and retires what disappeared.
 * Holds the store's import lock (see DirectoryStore.beginImport) from start to end; an import that
 * fails part-way is marked failed, releases the lock and retires nothing.
 */
export async function importExtract(
  store: DirectoryStore,
  source: Source,
  options: ExtractImportOptions = {},
): Promise<ExtractImportReport> {
  const started = performance.now();
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  const maxReported = options.maxReported ?? 1000;
  const checkDigit = options.rppsCheckDigit ?? 'warn';
  const totalBytes = typeof source === 'string' ? statSync(source).size : undefined;

  const importId = await store.beginImport(
    'extract-mssante',
    options.staleLockMs === undefined ? {} : { staleAfterMs: options.staleLockMs },
  );
  const report: ExtractImportReport = {
    importId,
    lines: 0,
    inserted: 0,
    updated: 0,
    unchanged: 0,
    retiredMailboxes: 0,
    keptLinks: 0,
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
  /**
   * Rejected lines whose address could be read, `address|structure key` or `address|*` (any
   * structure): their live links are kept (finishImport), since the file did not really drop them.
   */
  const keep = new Set<string>();
  const read = { bytes: 0 };
  let batch: ExtractRow[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const r: BatchResult = await store.applyExtractBatch(importId, batch);
    report.inserted += r.inserted;
    report.updated += r.updated;
    report.unchanged += r.unchanged;
    for (const x of r.rejected) reject(x.line, x.reason);
    batch = [];
    options.onProgress?.({
      bytes: read.bytes,
      ...(totalBytes === undefined ? {} : { totalBytes }),
      lines: report.lines,
      rejected: report.rejectedCount,
    });
  };

  const decoder = new TextDecoder('utf-8');
  let sawHeader = false;
  /** Synchronous except when a full batch is written: no promise per line. */
  const onLine = (bytes: Uint8Array, lineNo: number): Promise<void> | undefined => {
    if (!sawHeader) {
      const header = (isUtf8(bytes) ? decoder.decode(bytes) : '').replace(/^\uFEFF/, '').split('|');
      if (header.length !== EXTRACT_COLUMNS || header[0] !== FIRST_HEADER) {
        throw new ExtractImportError(
          `line 1 is not the Extraction_Correspondance_MSSante header (${header.length} columns, ` +
            `expected ${EXTRACT_COLUMNS} starting with "${FIRST_HEADER}")`,
        );
      }
      sawHeader = true;
      return undefined;
    }
    if (bytes.length === 0) return undefined; // a trailing empty line
    report.lines++;
    if (!isUtf8(bytes)) {
      reject(lineNo, 'not valid UTF-8');
      const k = rejectedLineKey(lossy.decode(bytes).split('|'));
      if (k !== undefined) keep.add(`${k.address}|${k.structureKey ?? '*'}`);
      return undefined;
    }
    const text = decoder.decode(bytes);
    const parsed = parseExtractLine(text, lineNo, checkDigit);
    if ('reason' in parsed) {
      reject(lineNo, parsed.reason);
      const k = rejectedLineKey(text.split('|'));
      if (k !== undefined) keep.add(`${k.address}|${k.structureKey ?? '*'}`);
      return undefined;
    }
    if (parsed.warning !== undefined) warn(lineNo, parsed.warning);
    parsed.row.hash = hash('sha1', bytes, 'base64');
    batch.push(parsed.row);
    return batch.length >= batchSize ? flush() : undefined;
  };

  let finished: FinishImportResult;
  try {
    await forEachLine(source, read, onLine);
    if (!sawHeader) throw new ExtractImportError('the file is empty: no header line');
    await flush();
    finished = await store.finishImport(importId, {
      retire: (options.retireMissing ?? true) ? 'mailboxes' : false,
      acceptedLines: report.lines - report.rejectedCount,
      keepLinks: [...keep].map((k) => {
        const bar = k.lastIndexOf('|');
        const structureKey = k.slice(bar + 1);
        return structureKey === '*'
          ? { address: k.slice(0, bar) }
          : { address: k.slice(0, bar), structureKey };
      }),
      ...(options.maxRetireShare === undefined ? {} : { maxRetireShare: options.maxRetireShare }),
      ...(options.forceRetire === undefined ? {} : { forceRetire: options.forceRetire }),
      summary: JSON.stringify({
        lines: report.lines,
        inserted: report.inserted,
        updated: report.updated,
        unchanged: report.unchanged,
        rejected: report.rejectedCount,
      }),
    });
  } catch (err) {
    // Release the lock; the batches written stay (the next import sees them as unchanged lines).
    try {
      await store.failImport(importId, `after ${report.lines} lines: ${(err as Error).message}`);
    } catch (failErr) {
      throw new AggregateError(
        [err, failErr],
        `import ${importId} failed and its lock could not be released`,
        {
          cause: failErr,
        },
      );
    }
    throw err;
  }
  report.retiredMailboxes = finished.retiredMailboxes;
  report.keptLinks = finished.kept;
  if (finished.retireRefused !== undefined) report.retireRefused = finished.retireRefused;
  report.durationMs = Math.round(performance.now() - started);
  return report;
}

/** Bytes per read of a file (one buffer, reused). */
const READ_SIZE = 1 << 20;

/**
 * Calls `onLine` for each line (LF-separated, a CR before the LF dropped, the last line without LF
 * included) of a file or byte stream, awaiting it only when it returns a promise. The bytes given
 * are only valid during the call. A file is read into one reused 1 MiB buffer (grown only for a
 * longer line), so reading allocates nothing per chunk. `read.bytes` counts the bytes read.
 */
async function forEachLine(
  source: Source,
  read: { bytes: number },
  onLine: (bytes: Uint8Array, lineNo: number) => Promise<void> | undefined,
): Promise<void> {
  let lineNo = 0;
  const emit = (raw: Uint8Array) =>
    onLine(raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, raw.length - 1) : raw, ++lineNo);
  if (typeof source !== 'string') {
    let carry: Uint8Array | undefined;
    for await (const chunk of source) {
      read.bytes += chunk.length;
      let start = 0;
      for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
        let raw = chunk.subarray(start, nl);
        if (carry !== undefined) {
          raw = Buffer.concat([carry, raw]);
          carry = undefined;
        }
        const pending = emit(raw);
        if (pending !== undefined) await pending;
        start = nl + 1;
      }
      if (start < chunk.length) {
        const rest = chunk.subarray(start);
        // Copy: the stream may reuse its buffer.
        carry = carry === undefined ? Uint8Array.from(rest) : Buffer.concat([carry, rest]);
      }
    }
    if (carry !== undefined && carry.length > 0) await emit(carry);
    return;
  }
  const file = await open(source, 'r');
  try {
    let buf = Buffer.allocUnsafe(READ_SIZE);
    let filled = 0; // bytes of a partial line kept at the start of buf
    for (;;) {
      if (filled === buf.length) {
        const bigger = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(bigger, 0, 0, filled);
        buf = bigger;
      }
      const { bytesRead } = await file.read(buf, filled, buf.length - filled, null);
      if (bytesRead === 0) break;
      read.bytes += bytesRead;
      const view = buf.subarray(0, filled + bytesRead);
      let start = 0;
      for (let nl = view.indexOf(0x0a); nl !== -1; nl = view.indexOf(0x0a, start)) {
        const pending = emit(view.subarray(start, nl));
        if (pending !== undefined) await pending;
        start = nl + 1;
      }
      filled = view.length - start;
      buf.copy(buf, 0, start, view.length);
    }
    if (filled > 0) await emit(buf.subarray(0, filled));
  } finally {
    await file.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Lines

interface Line {
  lineNo: number;
  /** Undefined when the bytes are not valid UTF-8. */
  text: string | undefined;
  bytes: Uint8Array;
}

/**
 * Splits a byte stream on LF (a CR before it is dropped) without holding more than one chunk and
 * one partial line; each line is decoded on its own so that one bad byte costs one line.
 */
export function lineReader(input: AsyncIterable<Uint8Array>): { lines: AsyncIterable<Line>; bytes: number } {
  const decoder = new TextDecoder('utf-8');
  const state = { bytes: 0, lines: undefined as unknown as AsyncIterable<Line> };
  const toLine = (lineNo: number, raw: Uint8Array): Line => {
    const bytes = raw.length > 0 && raw[raw.length - 1] === 0x0d ? raw.subarray(0, raw.length - 1) : raw;
    return { lineNo, text: isUtf8(bytes) ? decoder.decode(bytes) : undefined, bytes };
  };
  state.lines = (async function* () {
    let carry: Uint8Array | undefined;
    let lineNo = 0;
    for await (const chunk of input) {
      state.bytes += chunk.length;
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(0x0a, start);
        if (nl === -1) break;
        let raw = chunk.subarray(start, nl);
        if (carry !== undefined) {
          raw = Buffer.concat([carry, raw]);
          carry = undefined;
        }
        yield toLine(++lineNo, raw);
        start = nl + 1;
      }
      if (start < chunk.length) {
        const rest = chunk.subarray(start);
        // Copy: the stream may reuse its buffer.
        carry = carry === undefined ? Uint8Array.from(rest) : Buffer.concat([carry, rest]);
      }
    }
    if (carry !== undefined && carry.length > 0) yield toLine(lineNo + 1, carry);
  })();
  return state;
}

// ---------------------------------------------------------------------------------------------
// One line

const STRUCTURE_ID = /^[0-9A-Za-z]{1,20}$/;

/** Decodes a line that is not valid UTF-8, to read its address all the same. */
const lossy = new TextDecoder('utf-8');

/** The mailbox link a rejected line still names, when it does. */
interface RejectedLineKey {
  address: string;
  /** Only when the line has the right columns and a valid structure (or none: ''). */
  structureKey?: string;
}

/**
 * What a rejected line still names: its address when column 2 parses, and its structure when the
 * columns are where they should be. Its live links then stay: retiring a mailbox because its line
 * was mangled would make mail to it bounce.
 */
function rejectedLineKey(c: readonly string[]): RejectedLineKey | undefined {
  let address: string;
  try {
    address = normaliseAddress(c[1]?.trim() ?? '');
  } catch {
    return undefined; // no readable address: nothing to keep
  }
  if (address.includes('\uFFFD')) return undefined;
  if (c.length !== EXTRACT_COLUMNS) return { address };
  const sType = c[5]!.trim();
  const sId = c[6]!.trim();
  if (sType === '' && sId === '') return { address, structureKey: '' };
  if (/^[0-4]$/.test(sType) && STRUCTURE_ID.test(sId)) return { address, structureKey: `${sType}:${sId}` };
  return { address };
}

/** Parses one data line; exported for tests. */
export function parseExtractLine(
  text: string,
  lineNo: number,
  rppsCheckDigit: 'reject' | 'warn' | 'ignore' = 'warn',
): { row: ExtractRow; warning?: string } | { reason: string } {
  const c = text.split('|');
  if (c.length !== EXTRACT_COLUMNS) {
    return { reason: `expected ${EXTRACT_COLUMNS} columns, found ${c.length}` };
  }
  const col = (n: number) => c[n - 1]!.trim();
  const type = col(1);
  if (type !== 'PER' && type !== 'ORG' && type !== 'APP' && type !== 'CAB') {
    return { reason: `unknown mailbox type "${type}" (column 1)` };
  }
  let address: string;
  try {
    address = normaliseAddress(col(2));
  } catch (err) {
    return { reason: `bad address (column 2): ${(err as Error).message}` };
  }
  const row: ExtractRow = {
    lineNo,
    hash: '',
    type: type as MailboxType,
    address,
    domain: address.slice(address.lastIndexOf('@') + 1),
  };
  let warning: string | undefined;

  const idType = col(3);
  const id = col(4);
  const nationalId = col(5);
  if (type === 'PER' || idType !== '' || nationalId !== '') {
    if (idType === '8') {
      if (!RPPS.test(id)) return { reason: `bad RPPS "${id}" (column 4): 11 digits expected` };
      if (!luhnValid(id) && rppsCheckDigit !== 'ignore') {
        const message = `RPPS ${id} (column 4) fails its Luhn check digit`;
        if (rppsCheckDigit === 'reject') return { reason: message };
        warning = message;
      }
    } else if (idType === '0') {
      if (!ADELI.test(id)) return { reason: `bad ADELI "${id}" (column 4): 9 characters expected` };
    } else {
      return { reason: `unknown person id type "${idType}" (column 3): 8 (RPPS) or 0 (ADELI) expected` };
    }
    if (nationalId !== `${idType}${id}`) {
      return { reason: `national id "${nationalId}" (column 5) is not "${idType}" + "${id}"` };
    }
    const lastName = col(10);
    if (lastName === '') return { reason: 'missing name (column 10) for a person' };
    const p: Professional = { nationalId, idType, lastName, firstName: col(11) };
    if (col(9) !== '') p.civility = col(9);
    if (col(14) !== '') p.professionCode = col(14);
    if (col(15) !== '') p.professionLabel = col(15);
    if (col(16) !== '') p.specialtyCode = col(16);
    if (col(17) !== '') p.specialtyLabel = col(17);
    row.professional = p;
  }

  const sType = col(6);
  const sId = col(7);
  if (sType !== '' || sId !== '') {
    if (!/^[0-4]$/.test(sType))
      return { reason: `unknown structure id type "${sType}" (column 6): 0 to 4 expected` };
    if (!STRUCTURE_ID.test(sId)) return { reason: `bad structure id "${sId}" (column 7)` };
    const name = col(19) || col(20) || sId;
    row.structure = {
      key: `${sType}:${sId}`,
      idType: sType as StructureIdType,
      identification: sId,
      name,
      kind: guessStructureKind(sType, name),
    };
  }
  if (col(8) !== '') row.service = col(8);
  const street = [col(21), col(22), [col(23), col(24), col(25), col(26)].filter(Boolean).join(' '), col(27)]
    .filter(Boolean)
    .join(', ');
  if (street !== '') row.street = street;
  const postcode = col(29);
  if (postcode !== '') row.postcode = postcode;
  // L6 is "<postcode> <city>" (La Poste line 6).
  const l6 = col(28);
  const city = postcode !== '' && l6.startsWith(postcode) ? l6.slice(postcode.length).trim() : l6;
  if (city !== '') row.city = city;
  if (col(30) !== '') row.department = col(30);
  if (col(31) !== '') row.country = col(31);
  if (col(18) === 'O') row.dematerialisation = true;
  else if (col(18) === 'N') row.dematerialisation = false;
  return warning === undefined ? { row } : { row, warning };
}

/**
 * A progress callback drawing a bar on `stream` when it is a terminal (nothing otherwise), e.g.
 * `importExtract(store, file, { onProgress: progressBar(process.stderr) })`.
 */
export function progressBar(
  stream: NodeJS.WritableStream & { isTTY?: boolean },
  width = 30,
): (p: ImportProgress) => void {
  if (!stream.isTTY) return () => undefined;
  return (p) => {
    const ratio = p.totalBytes ? Math.min(1, p.bytes / p.totalBytes) : 0;
    const done = Math.round(ratio * width);
    stream.write(
      `\r[${'#'.repeat(done)}${' '.repeat(width - done)}] ${Math.round(ratio * 100)}% ` +
        `${p.lines} lines, ${p.rejected} rejected`,
    );
  };
}
