/**
 * The MIME side of PGP/MIME (RFC 3156, RFC 1847): byte-exact parsing and building of
 * `multipart/signed` and `multipart/encrypted` entities, canonical CRLF line endings, and the
 * 7-bit-safe re-encoding a part needs before it is clear-signed. No cryptography here: the verbs
 * are in `openpgp-mime.ts`.
 *
 * Bytes are handled as latin1 strings (one char per byte) so that offsets found by string search
 * are byte offsets, and a signed part is handed to OpenPGP exactly as it stands in the message.
 */
import { randomBytes } from 'node:crypto';
import { CryptoError } from './types.ts';

export interface MimeHeader {
  name: string;
  value: string;
}

export interface ContentType {
  /** Lower-cased `type/subtype`, `text/plain` when the header is missing (RFC 2045 §5.2). */
  mediaType: string;
  /** Parameter names lower-cased, values unquoted. */
  params: Record<string, string>;
}

export interface MimeEntity {
  headers: MimeHeader[];
  contentType: ContentType;
  /** The body, exactly as it stands (latin1, one char per byte). */
  body: string;
}

export function toBytes(input: Uint8Array | string): Uint8Array {
  return typeof input === 'string' ? new TextEncoder().encode(input) : input;
}

export function bytesToLatin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

export function latin1ToBytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'latin1'));
}

/** Bare LF and bare CR become CRLF: the canonical form of MIME text (RFC 2045 §2.7, RFC 3156 §5). */
export function canonicalCrlf(text: string): string {
  // Fast paths (a 2 MB message spends tens of ms in the general regex): already CRLF, or LF only.
  if (!/\r(?!\n)|(?<!\r)\n/.test(text)) return text;
  if (!text.includes('\r')) return text.replaceAll('\n', '\r\n');
  return text.replace(/\r\n|\r|\n/g, '\r\n');
}

/** Splits an entity (latin1, CRLF) into its header block and body. */
export function parseEntity(text: string): MimeEntity {
  let headerText: string;
  let body: string;
  if (text.startsWith('\r\n')) {
    headerText = '';
    body = text.slice(2);
  } else {
    const end = text.indexOf('\r\n\r\n');
    if (end < 0) {
      // Headers only, no body (RFC 5322 allows it).
      headerText = text;
      body = '';
    } else {
      headerText = text.slice(0, end);
      body = text.slice(end + 4);
    }
  }
  const headers: MimeHeader[] = [];
  for (const line of headerText.split('\r\n')) {
    if (line === '') continue;
    if (/^[ \t]/.test(line)) {
      const last = headers[headers.length - 1];
      if (last === undefined)
        throw new CryptoError('malformed', 'MIME header block starts with a continuation line');
      last.value += ' ' + line.trim(); // RFC 5322 §2.2.3 unfolding
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new CryptoError('malformed', 'MIME header line without a field name');
    headers.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
  }
  const ct = headerValue(headers, 'content-type');
  return { headers, contentType: parseContentType(ct ?? 'text/plain'), body };
}

export function headerValue(headers: readonly MimeHeader[], name: string): string | undefined {
  return headers.find((h) => h.name.toLowerCase() === name)?.value;
}

/** RFC 2045 §5.1 `type/subtype; name=value; name="quoted value"` (no RFC 2231 continuations). */
export function parseContentType(value: string): ContentType {
  const semi = value.indexOf(';');
  const mediaType = (semi < 0 ? value : value.slice(0, semi)).trim().toLowerCase();
  const params: Record<string, string> = {};
  if (semi >= 0) {
    const re = /;\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))/g;
    const rest = value.slice(semi);
    for (let m = re.exec(rest); m !== null; m = re.exec(rest)) {
      const name = (m[1] ?? '').toLowerCase();
      params[name] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
    }
  }
  return { mediaType, params };
}

export interface MultipartBody {
  /** Each body part exactly as it stands between `--boundary CRLF` and `CRLF --boundary`. */
  parts: string[];
}

/**
 * Splits a multipart body on its boundary (RFC 2046 §5.1.1): the CRLF before a delimiter belongs
 * to the delimiter, so a part is exactly the bytes a `multipart/signed` signature covers
 * (RFC 1847 §2.1, RFC 3156 §5).
 */
export function splitMultipart(body: string, boundary: string): MultipartBody {
  if (boundary === '' || boundary.length > 70) {
    throw new CryptoError('malformed', 'multipart boundary missing or longer than 70 characters');
  }
  const delimiter = '--' + boundary;
  // The first delimiter may open the body; later ones follow a CRLF.
  let pos: number;
  if (body.startsWith(delimiter)) pos = 0;
  else {
    const first = body.indexOf('\r\n' + delimiter);
    if (first < 0) throw new CryptoError('malformed', 'multipart body without its boundary');
    pos = first + 2;
  }
  const parts: string[] = [];
  for (;;) {
    // pos is at "--boundary"; what follows is "--" (close) or transport padding then CRLF.
    const afterDelimiter = pos + delimiter.length;
    if (body.startsWith('--', afterDelimiter)) return { parts };
    const lineEnd = body.indexOf('\r\n', afterDelimiter);
    if (lineEnd < 0 || body.slice(afterDelimiter, lineEnd).trim() !== '') {
      throw new CryptoError('malformed', 'multipart delimiter line is malformed or unterminated');
    }
    const start = lineEnd + 2;
    const next = body.indexOf('\r\n' + delimiter, start - 2);
    if (next < 0) throw new CryptoError('malformed', 'multipart body without its closing boundary');
    // A part that is empty has its delimiter CRLF shared with the previous line's end.
    parts.push(next < start ? '' : body.slice(start, next));
    pos = next + 2;
  }
}

export function newBoundary(content: string): string {
  for (;;) {
    const boundary = '----=_courrier_' + randomBytes(18).toString('base64url');
    if (!content.includes(boundary)) return boundary;
  }
}

/** RFC 4880 §9.4 hash names, lower-cased with the `pgp-` prefix (RFC 3156 §5). */
export function micalgFor(hashNames: readonly string[]): string {
  const names = [...new Set(hashNames.map((n) => 'pgp-' + n.toLowerCase()))];
  return names.join(',');
}

/** RFC 3156 §5: the signed part, then the detached signature, as Thunderbird writes them. */
export function buildMultipartSigned(signedPart: string, armoredSignature: string, micalg: string): string {
  const boundary = newBoundary(signedPart);
  return (
    `Content-Type: multipart/signed; micalg=${micalg};\r\n` +
    ` protocol="application/pgp-signature";\r\n boundary="${boundary}"\r\n` +
    '\r\n' +
    'This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n' +
    `--${boundary}\r\n` +
    signedPart +
    `\r\n--${boundary}\r\n` +
    'Content-Type: application/pgp-signature; name="signature.asc"\r\n' +
    'Content-Description: OpenPGP digital signature\r\n' +
    'Content-Disposition: attachment; filename="signature.asc"\r\n' +
    '\r\n' +
    canonicalCrlf(armoredSignature.trimEnd()) +
    `\r\n--${boundary}--\r\n`
  );
}

/** RFC 3156 §4: the version part, then the armored OpenPGP message. */
export function buildMultipartEncrypted(armoredMessage: string): string {
  const boundary = newBoundary(armoredMessage);
  return (
    'Content-Type: multipart/encrypted;\r\n' +
    ` protocol="application/pgp-encrypted";\r\n boundary="${boundary}"\r\n` +
    '\r\n' +
    'This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n' +
    `--${boundary}\r\n` +
    'Content-Type: application/pgp-encrypted\r\n' +
    'Content-Description: PGP/MIME version identification\r\n' +
    '\r\n' +
    'Version: 1\r\n' +
    '\r\n' +
    `--${boundary}\r\n` +
    'Content-Type: application/octet-stream; name="encrypted.asc"\r\n' +
    'Content-Description: OpenPGP encrypted message\r\n' +
    'Content-Disposition: inline; filename="encrypted.asc"\r\n' +
    '\r\n' +
    canonicalCrlf(armoredMessage.trimEnd()) +
    `\r\n--${boundary}--\r\n`
  );
}

export type InlinePgp = 'signed' | 'encrypted';

/** Inline PGP (armor in a text body instead of PGP/MIME): what kind, if any. */
export function detectInlinePgp(text: string): InlinePgp | undefined {
  if (/^-----BEGIN PGP MESSAGE-----[ \t]*\r?$/m.test(text)) return 'encrypted';
  if (/^-----BEGIN PGP SIGNED MESSAGE-----[ \t]*\r?$/m.test(text)) return 'signed';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// 7-bit-safe re-encoding for clear-signing (RFC 3156 §3 and §5): a relay that converts 8bit to
// 7bit, strips trailing whitespace, rewraps long lines or munges "From " breaks the signature, so
// the part is given a transfer encoding that survives all of these before it is signed.

const MAX_SAFE_LINE = 76; // octets; RFC 2045 §6.7 keeps encoded lines at 76, far under SMTP's 998

function lineIsSafe(line: string): boolean {
  return (
    line.length <= MAX_SAFE_LINE &&
    !/[^\t\x20-\x7e]/.test(line) &&
    !/[ \t]$/.test(line) &&
    !line.startsWith('From ') &&
    // A lone dot is SMTP's end of data: relays escape it, some badly.
    line !== '.'
  );
}

function bodyIsSafe(body: string): boolean {
  return body.split('\r\n').every(lineIsSafe);
}

/** Quoted-printable (RFC 2045 §6.7) of CRLF text, line breaks kept as hard breaks. */
export function encodeQuotedPrintable(text: string): string {
  const out: string[] = [];
  for (const line of text.split('\r\n')) {
    let encoded = '';
    let lineLength = 0; // octets on the current encoded line
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      const last = i === line.length - 1;
      // "From " at the start of a line and a lone "." are escaped too (mbox, SMTP).
      const escapeFirst = i === 0 && (line.startsWith('From ') || line === '.');
      const literal = !escapeFirst && ((c >= 33 && c <= 126 && c !== 61) || ((c === 32 || c === 9) && !last));
      const piece = literal ? line[i]! : '=' + c.toString(16).toUpperCase().padStart(2, '0');
      if (lineLength + piece.length > MAX_SAFE_LINE - 1) {
        encoded += '=\r\n'; // soft line break
        lineLength = 0;
      }
      encoded += piece;
      lineLength += piece.length;
    }
    out.push(encoded);
  }
  return out.join('\r\n');
}

function encodeBase64Lines(data: string): string {
  const b64 = Buffer.from(data, 'latin1').toString('base64');
  return (b64.match(/.{1,76}/g) ?? []).join('\r\n') + '\r\n';
}

function serializeHeaders(headers: readonly MimeHeader[]): string {
  return headers.map((h) => `${h.name}: ${h.value}\r\n`).join('');
}

/**
 * Returns the entity (latin1, CRLF) with every leaf part given a 7-bit-safe transfer encoding
 * (quoted-printable for text, base64 otherwise). Parts that are already safe are left as they
 * are, byte for byte.
 */
export function makeSevenBitSafe(entityText: string): string {
  const entity = parseEntity(entityText);
  const headerBlock = entityText.slice(0, entityText.length - entity.body.length);
  if (/[^\t\r\n\x20-\x7e]/.test(headerBlock)) {
    throw new CryptoError(
      'unsupported',
      'part to sign has 8-bit header bytes: encode them (RFC 2047/2231) before signing',
    );
  }
  if (bodyIsSafe(entity.body)) return entityText;

  const { mediaType, params } = entity.contentType;
  if (mediaType.startsWith('multipart/')) {
    const boundary = params['boundary'] ?? '';
    const { parts } = splitMultipart(entity.body, boundary);
    const rebuilt =
      parts.map((p) => `--${boundary}\r\n${makeSevenBitSafe(p)}\r\n`).join('') + `--${boundary}--\r\n`;
    return headerBlock + rebuilt;
  }
  if (mediaType.startsWith('message/')) {
    // RFC 2046 §5.2: message/* may not be base64 or quoted-printable encoded.
    throw new CryptoError(
      'unsupported',
      `part to sign is ${mediaType} with 8-bit content; it cannot be re-encoded`,
    );
  }
  const cte = (headerValue(entity.headers, 'content-transfer-encoding') ?? '7bit').toLowerCase();
  if (!['7bit', '8bit', 'binary'].includes(cte)) {
    throw new CryptoError('malformed', `part to sign declares ${cte} but its body is not 7-bit safe`);
  }
  const isText = mediaType.startsWith('text/');
  const headers = entity.headers.filter((h) => h.name.toLowerCase() !== 'content-transfer-encoding');
  headers.push({ name: 'Content-Transfer-Encoding', value: isText ? 'quoted-printable' : 'base64' });
  const body = isText ? encodeQuotedPrintable(entity.body) : encodeBase64Lines(entity.body);
  return serializeHeaders(headers) + '\r\n' + body;
}
