import { isAscii } from 'node:buffer';

/**
 * The MIME side of S/MIME: splitting headers from bodies, canonicalising an entity before it is
 * signed (RFC 8551 §3.1.1: CRLF line ends, nothing that a 7-bit hop would re-encode), and
 * finding the parts of multipart/signed (RFC 1847). Messages are handled as latin1 strings,
 * which map bytes 1:1, so nothing is lost on the way through.
 */

export interface HeaderField {
  /** Lower-case field name. */
  name: string;
  /** The field as it appeared, folded lines included, without the final CRLF. */
  raw: string;
  /** The unfolded value, trimmed. */
  value: string;
}

export interface SplitEntity {
  headers: HeaderField[];
  body: string;
}

const HEADER_LINE = /^[\x21-\x39\x3b-\x7e]+:/;
const MAX_MIME_DEPTH = 20;

/** CRLF for every line end (bare LF and bare CR included). */
export function toCrlf(s: string): string {
  // Fast path (native indexOf, no regex over megabytes): already canonical, returned as is.
  if (isCrlf(s)) return s;
  return s.replace(/\r\n|\r|\n/g, '\r\n');
}

function isCrlf(s: string): boolean {
  for (let i = s.indexOf('\n'); i >= 0; i = s.indexOf('\n', i + 1))
    if (s.charCodeAt(i - 1) !== 13) return false;
  for (let i = s.indexOf('\r'); i >= 0; i = s.indexOf('\r', i + 1))
    if (s.charCodeAt(i + 1) !== 10) return false;
  return true;
}

/** Splits the header section from the body (RFC 5322 §2.1). A text without headers has none. */
export function splitEntity(s: string): SplitEntity {
  const headers: HeaderField[] = [];
  let pos = 0;
  let current: string[] | undefined;
  const flush = () => {
    if (current === undefined) return;
    const raw = current.join('\r\n');
    const colon = raw.indexOf(':');
    headers.push({
      name: raw.slice(0, colon).trim().toLowerCase(),
      raw,
      value: raw
        .slice(colon + 1)
        .replace(/\r?\n[ \t]/g, ' ')
        .trim(),
    });
    current = undefined;
  };
  for (;;) {
    const nl = s.indexOf('\n', pos);
    const lineEnd = nl < 0 ? s.length : nl;
    const line = s.slice(pos, lineEnd > pos && s[lineEnd - 1] === '\r' ? lineEnd - 1 : lineEnd);
    if (line === '') {
      flush();
      return { headers, body: nl < 0 ? '' : s.slice(nl + 1) };
    }
    if ((line[0] === ' ' || line[0] === '\t') && current !== undefined) current.push(line);
    else if (HEADER_LINE.test(line)) {
      flush();
      current = [line];
    } else {
      // Not a header: the text has no (more) header section; what we read so far was body too.
      if (headers.length === 0 && current === undefined) return { headers: [], body: s };
      flush();
      return { headers, body: s.slice(pos) };
    }
    if (nl < 0) {
      flush();
      return { headers, body: '' };
    }
    pos = nl + 1;
  }
}

export function headerValue(headers: HeaderField[], name: string): string | undefined {
  return headers.find((h) => h.name === name)?.value;
}

/** The media type (lower case) and parameters of a Content-Type value (RFC 2045 §5.1). */
export function parseContentType(value: string | undefined): { type: string; params: Map<string, string> } {
  const params = new Map<string, string>();
  if (value === undefined) return { type: 'text/plain', params };
  const semi = value.indexOf(';');
  const type = (semi < 0 ? value : value.slice(0, semi)).trim().toLowerCase();
  const re = /;\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]*))/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(value)) !== null) {
    params.set(m[1]!.toLowerCase(), m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? ''));
  }
  return { type, params };
}

const BASE64_ALPHABET = Buffer.from(
  'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/',
  'latin1',
);

/**
 * Base64 in 76-character lines with CRLF (RFC 2045 §6.8), as bytes. Encoded straight into the
 * output buffer: 2-3x faster here than `toString('base64')` (which builds a JS string) plus
 * line splitting, and it never makes a multi-megabyte string.
 */
export function base64Lines(src: Uint8Array): Buffer {
  const n = src.length;
  const full = n - (n % 3);
  const encodedLength = Math.ceil(n / 3) * 4;
  const out = Buffer.allocUnsafe(encodedLength + Math.ceil(encodedLength / 76) * 2);
  const T = BASE64_ALPHABET;
  let o = 0;
  let col = 0;
  for (let i = 0; i < full; i += 3) {
    const v = (src[i]! << 16) | (src[i + 1]! << 8) | src[i + 2]!;
    out[o] = T[v >> 18]!;
    out[o + 1] = T[(v >> 12) & 63]!;
    out[o + 2] = T[(v >> 6) & 63]!;
    out[o + 3] = T[v & 63]!;
    o += 4;
    col += 4;
    if (col === 76) {
      out[o++] = 0x0d;
      out[o++] = 0x0a;
      col = 0;
    }
  }
  const rest = n - full;
  if (rest > 0) {
    const v = (src[full]! << 16) | (rest === 2 ? src[full + 1]! << 8 : 0);
    out[o] = T[v >> 18]!;
    out[o + 1] = T[(v >> 12) & 63]!;
    out[o + 2] = rest === 2 ? T[(v >> 6) & 63]! : 0x3d;
    out[o + 3] = 0x3d;
    o += 4;
    col += 4;
  }
  if (col > 0) {
    out[o++] = 0x0d;
    out[o++] = 0x0a;
  }
  return out.subarray(0, o);
}

export function isContentHeader(name: string): boolean {
  return name.startsWith('content-') || name === 'mime-version';
}

/**
 * Separates a message into the headers that stay outside the S/MIME wrapper (From, To,
 * Subject, ...) and the MIME entity that gets signed or encrypted (its Content-* headers and
 * body). A text without a header section becomes a text/plain entity.
 */
export function separateOuterHeaders(message: string): { outer: string[]; entity: string } {
  const { headers, body } = splitEntity(message);
  const outer = headers.filter((h) => !isContentHeader(h.name)).map((h) => h.raw);
  const inner = headers.filter((h) => isContentHeader(h.name) && h.name !== 'mime-version').map((h) => h.raw);
  if (!inner.some((h) => /^content-type\s*:/i.test(h))) {
    inner.unshift(`Content-Type: text/plain; charset=${/[\x80-\xff]/.test(body) ? 'utf-8' : 'us-ascii'}`);
  }
  return { outer, entity: inner.join('\r\n') + '\r\n\r\n' + body };
}

/**
 * `separateOuterHeaders` for bytes, without turning a multi-megabyte body into a JS string:
 * only the header section is handled as text; the body is copied once (made CRLF if needed).
 */
export function separateOuterHeadersBytes(message: Buffer): { outer: string[]; entity: Buffer } {
  const crlf = message.indexOf('\r\n\r\n');
  const lf = message.indexOf('\n\n');
  const [end, sepLength] = crlf >= 0 && (lf < 0 || crlf < lf) ? [crlf, 4] : [lf, 2];
  const headText = end < 0 ? '' : message.subarray(0, end).toString('latin1') + '\r\n\r\n';
  const head = splitEntity(headText);
  if (end < 0 || head.headers.length === 0 || head.body !== '') {
    // No (clean) header section: the general path.
    const { outer, entity } = separateOuterHeaders(message.toString('latin1'));
    return { outer, entity: Buffer.from(toCrlf(entity), 'latin1') };
  }
  const { outer, entity } = separateOuterHeaders(headText);
  let body = message.subarray(end + sepLength);
  if (!bytesAreCrlf(body)) body = Buffer.from(toCrlf(body.toString('latin1')), 'latin1');
  return { outer, entity: Buffer.concat([Buffer.from(toCrlf(entity), 'latin1'), body]) };
}

/**
 * True when an entity with CRLF line ends (from `separateOuterHeadersBytes`) is already in the
 * form canonicalizeEntity would produce for transport: ASCII without NUL, no line over 998
 * octets, no 8bit/binary label. Native scans only (simdutf ASCII check, indexOf), so a 2 MB
 * entity of base64 attachments is checked in a millisecond or two.
 */
export function isSevenBitCanonical(b: Buffer): boolean {
  if (!isAscii(b) || b.indexOf(0) >= 0) return false;
  for (const label of ['8bit', '8BIT', '8Bit', 'binary', 'BINARY', 'Binary'])
    if (b.indexOf(label) >= 0) return false;
  let start = 0;
  for (;;) {
    const nl = b.indexOf(0x0a, start);
    const end = nl < 0 ? b.length : nl;
    if (end - start > 999) return false; // 998 octets + CR
    if (nl < 0) return true;
    start = nl + 1;
  }
}

function bytesAreCrlf(b: Buffer): boolean {
  for (let i = b.indexOf(0x0a); i >= 0; i = b.indexOf(0x0a, i + 1))
    if (i === 0 || b[i - 1] !== 0x0d) return false;
  for (let i = b.indexOf(0x0d); i >= 0; i = b.indexOf(0x0d, i + 1)) if (b[i + 1] !== 0x0a) return false;
  return true;
}

/**
 * Canonical form of an entity for signing (RFC 8551 §3.1): CRLF line ends everywhere, and every
 * leaf part that a 7-bit hop would re-encode (8-bit or NUL bytes, lines over 998 octets,
 * `8bit`/`binary` transfer encodings) re-encoded as base64 first, so the signed bytes survive
 * transport unchanged.
 */
export function canonicalizeEntity(entity: string, depth = 0): string {
  const { headers, body } = splitEntity(entity);
  const head = headers.map((h) => toCrlf(h.raw)).join('\r\n');
  const { type, params } = parseContentType(headerValue(headers, 'content-type'));
  const boundary = params.get('boundary');
  if (type.startsWith('multipart/') && boundary !== undefined && depth < MAX_MIME_DEPTH) {
    const split = splitMultipart(body, boundary);
    if (split !== undefined) {
      const parts = split.parts.map((p) => canonicalizeEntity(p, depth + 1));
      let out = head + '\r\n\r\n';
      out += split.preamble === '' ? '' : toCrlf(split.preamble) + '\r\n';
      for (const p of parts) out += `--${boundary}\r\n${p}\r\n`;
      out += `--${boundary}--`;
      out += split.epilogue === undefined ? '\r\n' : toCrlf(split.epilogue);
      return out;
    }
  }
  const cte = (headerValue(headers, 'content-transfer-encoding') ?? '7bit').toLowerCase();
  const needsEncoding =
    // eslint-disable-next-line no-control-regex -- NUL is exactly what must not travel unencoded
    cte === '8bit' || cte === 'binary' || /[\x80-\xff\x00]/.test(body) || hasLongLine(body);
  if (!needsEncoding || type.startsWith('message/') || type.startsWith('multipart/')) {
    return head + '\r\n\r\n' + toCrlf(body);
  }
  // Text keeps canonical CRLF line ends inside the base64 (RFC 2049 §4); other types their bytes.
  const bytes = Buffer.from(type.startsWith('text/') ? toCrlf(body) : body, 'latin1');
  const kept = headers.filter((h) => h.name !== 'content-transfer-encoding').map((h) => toCrlf(h.raw));
  kept.push('Content-Transfer-Encoding: base64');
  return kept.join('\r\n') + '\r\n\r\n' + base64Lines(bytes).toString('latin1');
}

/** A line over 998 octets (RFC 5322 §2.1.1), which some relays would break. */
function hasLongLine(s: string): boolean {
  let start = 0;
  for (;;) {
    const nl = s.indexOf('\n', start);
    const end = nl < 0 ? s.length : nl;
    if (end - start > 999) return true; // 998 + a possible CR
    if (nl < 0) return false;
    start = nl + 1;
  }
}

/**
 * The body parts of a multipart body (RFC 2046 §5.1.1): the CRLF before each delimiter belongs
 * to the delimiter, so a part's bytes are exactly what a signature covers. `undefined` when the
 * first delimiter is missing.
 */
export function splitMultipart(
  body: string,
  boundary: string,
): { preamble: string; parts: string[]; epilogue: string | undefined } | undefined {
  const escaped = boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`(^|\\r?\\n)--${escaped}(--)?[ \\t]*(\\r?\\n|$)`, 'g');
  let preamble: string | undefined;
  const parts: string[] = [];
  let from = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(body)) !== null) {
    const chunk = body.slice(from, m.index);
    if (preamble === undefined) preamble = chunk;
    else parts.push(chunk);
    from = m.index + m[0].length;
    if (m[2] === '--') return { preamble, parts, epilogue: (m[3] ?? '') + body.slice(from) };
    // The line end that closed this delimiter may be the start of the next match.
    re.lastIndex = from;
  }
  if (preamble === undefined) return undefined;
  // No close delimiter: take what is there (a truncated message still shows its parts).
  parts.push(body.slice(from));
  return { preamble, parts, epilogue: undefined };
}

export function randomBoundary(prefix: string): string {
  return `----=_${prefix}_${Buffer.from(crypto.getRandomValues(new Uint8Array(12))).toString('hex')}`;
}
