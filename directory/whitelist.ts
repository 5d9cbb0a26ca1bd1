import { createReadStream } from 'node:fs';
import type { DirectoryStore } from './directory-store.ts';
import type { TrustDomainEntry } from './model.ts';

/**
 * The trust-space whitelist (`listeblanchemssante.xml`): domain → operator certificate subject DNs.
 * Published copies have been seen without their closing root tag, so this is a tolerant scanner of
 * `<Domaine>` blocks rather than an XML parser: each complete block counts, a cut-off one is
 * reported, and a file that does not end properly is flagged `truncated`.
 */

export interface WhitelistSkip {
  /** 1-based line where the skipped block starts. */
  line: number;
  reason: string;
}

export interface WhitelistParse {
  generatedAt?: string;
  entries: TrustDomainEntry[];
  skipped: WhitelistSkip[];
  /** The closing `</ListeDomaines>` / `</ListeBlancheMSSante>` tags were missing. */
  truncated: boolean;
}

export interface WhitelistImportReport extends WhitelistParse {
  domains: number;
  /** Entries of the previous list that are gone (0 for a truncated file: nothing is removed). */
  removed: number;
}

// Tags may carry a namespace prefix (`<ns2:Domaine>`).
const BLOCK_OPEN = /<(?:[\w.-]+:)?Domaine\b[^>]*>/g;
const BLOCK_CLOSE = /<\/(?:[\w.-]+:)?Domaine\s*>/;
const DOMAIN_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/;

function field(block: string, tag: string): string | undefined {
  const m = new RegExp(`<(?:[\\w.-]+:)?${tag}\\b[^>]*>([\\s\\S]*?)</(?:[\\w.-]+:)?${tag}\\s*>`).exec(block);
  if (m === null) return undefined;
  const v = decodeXml(m[1]!.replace(/^<!\[CDATA\[([\s\S]*)\]\]>$/, '$1')).trim();
  return v === '' ? undefined : v;
}

function decodeXml(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e === 'amp') return '&';
    if (e === 'lt') return '<';
    if (e === 'gt') return '>';
    if (e === 'quot') return '"';
    if (e === 'apos') return "'";
    const code = e.startsWith('#x') ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
    return String.fromCodePoint(code);
  });
}

const lineCount = (s: string) => {
  let n = 0;
  for (let i = s.indexOf('\n'); i !== -1; i = s.indexOf('\n', i + 1)) n++;
  return n;
};

/** Parses a whitelist from text chunks (a file stream decoded as UTF-8, or one string). */
export async function parseWhitelist(input: AsyncIterable<string> | string): Promise<WhitelistParse> {
  const out: WhitelistParse = { entries: [], skipped: [], truncated: false };
  let buffer = '';
  /** Lines before `buffer`'s start. */
  let linesBefore = 0;
  let tail = '';
  const consume = (final: boolean) => {
    if (out.generatedAt === undefined) {
      const g = field(buffer, 'DateDeGeneration');
      if (g !== undefined) out.generatedAt = g;
    }
    for (;;) {
      BLOCK_OPEN.lastIndex = 0;
      const open = BLOCK_OPEN.exec(buffer);
      if (open === null) break;
      const rest = buffer.slice(open.index + open[0].length);
      const close = BLOCK_CLOSE.exec(rest);
      const line = linesBefore + lineCount(buffer.slice(0, open.index)) + 1;
      // A new block opening before this one closes: this one was cut short.
      BLOCK_OPEN.lastIndex = 0;
      const nextOpen = BLOCK_OPEN.exec(rest);
      if (nextOpen !== null && (close === null || nextOpen.index < close.index)) {
        out.skipped.push({ line, reason: 'Domaine element not closed before the next one' });
        const cut = open.index + open[0].length + nextOpen.index;
        linesBefore += lineCount(buffer.slice(0, cut));
        buffer = buffer.slice(cut);
        continue;
      }
      if (close === null) {
        if (final) out.skipped.push({ line, reason: 'Domaine element cut off by the end of the file' });
        break;
      }
      const block = rest.slice(0, close.index);
      const name = field(block, 'Nom')?.toLowerCase().replace(/\.$/, '');
      const dn = field(block, 'DNCertificatOperateur');
      if (name === undefined || !DOMAIN_NAME.test(name)) {
        out.skipped.push({ line, reason: `missing or invalid Nom "${name ?? ''}"` });
      } else if (dn === undefined) {
        out.skipped.push({ line, reason: `no DNCertificatOperateur for ${name}` });
      } else {
        const entry: TrustDomainEntry = { domain: name, operatorDn: dn };
        const description = field(block, 'Description');
        if (description !== undefined) entry.description = description;
        const updated = field(block, 'DateMAJ');
        if (updated !== undefined) entry.updatedAt = updated;
        out.entries.push(entry);
      }
      const cut = open.index + open[0].length + close.index + close[0].length;
      linesBefore += lineCount(buffer.slice(0, cut));
      buffer = buffer.slice(cut);
    }
    if (final) tail = buffer;
  };
  const chunks = typeof input === 'string' ? [input] : input;
  for await (const chunk of chunks) {
    buffer += chunk;
    consume(false);
    // Keep the buffer bounded when no block opens in a long stretch of text (only the last tag
    // fragment can matter).
    if (buffer.length > 1 << 20 && !/<(?:[\w.-]+:)?Domaine\b/.test(buffer)) {
      linesBefore += lineCount(buffer.slice(0, -256));
      buffer = buffer.slice(-256);
    }
  }
  consume(true);
  out.truncated = !/<\/(?:[\w.-]+:)?ListeBlancheMSSante\s*>/.test(tail);
  return out;
}

/**
 * Imports a whitelist file into the store. A complete file replaces the list; a truncated one only
 * adds and updates, so that a cut download cannot take domains out of the trust space.
 */
export async function importWhitelist(
  store: DirectoryStore,
  source: string | AsyncIterable<string>,
): Promise<WhitelistImportReport> {
  const input = typeof source === 'string' ? createReadStream(source, { encoding: 'utf8' }) : source;
  const parsed = await parseWhitelist(input as AsyncIterable<string>);
  if (parsed.entries.length === 0) {
    throw new Error(`the whitelist has no usable Domaine entry (${parsed.skipped.length} skipped)`);
  }
  const saved = await store.saveTrustDomains(parsed.entries, { complete: !parsed.truncated });
  return {
    ...parsed,
    domains: new Set(parsed.entries.map((e) => e.domain)).size,
    removed: saved.removed,
  };
}

/**
 * Compares two distinguished names as the policy layer needs: attribute types case-insensitive,
 * spaces around `,` and `=` ignored, values compared exactly. Not a full RFC 4514 parser (no
 * escaped commas or multi-valued RDNs; the published DNs have none).
 */
export function sameDn(a: string, b: string): boolean {
  const norm = (dn: string) =>
    dn
      .split(',')
      .map((rdn) => {
        const eq = rdn.indexOf('=');
        return eq === -1
          ? rdn.trim()
          : `${rdn.slice(0, eq).trim().toUpperCase()}=${rdn.slice(eq + 1).trim()}`;
      })
      .join(',');
  return norm(a) === norm(b);
}
