import { CryptoError } from './types.ts';

/**
 * A small ASN.1 reader and DER writer for the CMS structures of S/MIME (RFC 5652).
 *
 * Why not node-forge's asn1 here: forge works on binary strings (a 2 MB message becomes a 2 MB JS
 * string copied at each level), recurses without a depth bound, and the CMS we read from OpenSSL
 * and Outlook is often BER with indefinite lengths and chunked (constructed) OCTET STRINGs. This
 * reader works on Buffer views (no copies), accepts those BER forms, and turns every defect
 * (truncation, overlong lengths, nesting deeper than `maxDepth`) into `CryptoError('malformed')`.
 * X.509 certificates themselves are parsed by OpenSSL (`X509Certificate`); PKCS#12 by node-forge.
 */

export const Tag = {
  BOOLEAN: 1,
  INTEGER: 2,
  BIT_STRING: 3,
  OCTET_STRING: 4,
  NULL: 5,
  OID: 6,
  UTF8_STRING: 12,
  SEQUENCE: 16,
  SET: 17,
  PRINTABLE_STRING: 19,
  UTC_TIME: 23,
  GENERALIZED_TIME: 24,
} as const;

export const TagClass = { UNIVERSAL: 0, APPLICATION: 1, CONTEXT: 2, PRIVATE: 3 } as const;

export interface Asn1Node {
  /** Tag class, 0..3 (see TagClass). */
  cls: number;
  /** Tag number. */
  tag: number;
  constructed: boolean;
  /** The whole input the node was read from. */
  buf: Buffer;
  /** Offset of the identifier octet. */
  headerStart: number;
  /** Offset of the first content octet. */
  start: number;
  /** Offset after the last content octet (before the end-of-contents octets, when indefinite). */
  end: number;
  /** Offset after the whole encoding (including end-of-contents octets, when indefinite). */
  tlvEnd: number;
  indefinite: boolean;
  children: Asn1Node[];
}

export interface ReadOptions {
  /** Default 48: CMS nests ~15 deep, certificates ~10. */
  maxDepth?: number;
  /** Default 200 000 nodes: bounds the work on hostile input. */
  maxNodes?: number;
}

/** Reads one ASN.1 value (BER or DER) that must span the whole input. */
export function readAsn1(input: Uint8Array, options: ReadOptions = {}): Asn1Node {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const state = { nodes: 0, maxNodes: options.maxNodes ?? 200_000, maxDepth: options.maxDepth ?? 48 };
  const node = readNode(buf, 0, buf.length, 0, state);
  if (node.tlvEnd !== buf.length)
    throw malformed(`${buf.length - node.tlvEnd} trailing byte(s) after the value`);
  return node;
}

function malformed(why: string): CryptoError {
  return new CryptoError('malformed', `malformed ASN.1: ${why}`);
}

function readNode(
  buf: Buffer,
  offset: number,
  limit: number,
  depth: number,
  state: { nodes: number; maxNodes: number; maxDepth: number },
): Asn1Node {
  if (depth > state.maxDepth) throw malformed(`nested deeper than ${state.maxDepth} levels`);
  if (++state.nodes > state.maxNodes) throw malformed(`more than ${state.maxNodes} elements`);
  let p = offset;
  if (p >= limit) throw malformed('truncated (identifier)');
  const id = buf[p++]!;
  const cls = id >> 6;
  const constructed = (id & 0x20) !== 0;
  let tag = id & 0x1f;
  if (tag === 0x1f) {
    // High tag number form (X.690 §8.1.2.4); 4 octets are plenty for any real tag.
    tag = 0;
    for (let i = 0; ; i++) {
      if (p >= limit || i >= 4) throw malformed('bad high tag number');
      const b = buf[p++]!;
      tag = tag * 128 + (b & 0x7f);
      if ((b & 0x80) === 0) break;
    }
  }
  if (p >= limit) throw malformed('truncated (length)');
  const first = buf[p++]!;
  let length = -1;
  if (first < 0x80) length = first;
  else if (first === 0x80) {
    if (!constructed) throw malformed('indefinite length on a primitive value');
  } else {
    const n = first & 0x7f;
    if (n > 4 || n === 0x7f) throw malformed('length field too long');
    if (p + n > limit) throw malformed('truncated (length)');
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + buf[p++]!;
  }
  const start = p;
  const node: Asn1Node = {
    cls,
    tag,
    constructed,
    buf,
    headerStart: offset,
    start,
    end: 0,
    tlvEnd: 0,
    indefinite: length < 0,
    children: [],
  };
  if (length >= 0) {
    if (start + length > limit) throw malformed('length runs past the end of the input');
    node.end = start + length;
    node.tlvEnd = node.end;
    if (constructed) {
      let q = start;
      while (q < node.end) {
        const child = readNode(buf, q, node.end, depth + 1, state);
        node.children.push(child);
        q = child.tlvEnd;
      }
    }
    return node;
  }
  // Indefinite length: children until the end-of-contents octets 00 00 (X.690 §8.1.5).
  let q = start;
  for (;;) {
    if (q + 2 > limit) throw malformed('truncated (missing end-of-contents)');
    if (buf[q] === 0 && buf[q + 1] === 0) {
      node.end = q;
      node.tlvEnd = q + 2;
      return node;
    }
    const child = readNode(buf, q, limit, depth + 1, state);
    node.children.push(child);
    q = child.tlvEnd;
  }
}

/** The content octets of a primitive node (a view, not a copy). */
export function contentOf(node: Asn1Node): Buffer {
  return node.buf.subarray(node.start, node.end);
}

/** The whole encoding of a node (a view). */
export function encodingOf(node: Asn1Node): Buffer {
  return node.buf.subarray(node.headerStart, node.tlvEnd);
}

/** Is `node` of this universal tag (or context tag when `cls` is given)? */
export function is(
  node: Asn1Node | undefined,
  tag: number,
  cls: number = TagClass.UNIVERSAL,
): node is Asn1Node {
  return node !== undefined && node.tag === tag && node.cls === cls;
}

/** Throws `malformed` unless `node` has this tag; `what` names the field in the message. */
export function expectTag(
  node: Asn1Node | undefined,
  tag: number,
  what: string,
  cls: number = TagClass.UNIVERSAL,
): Asn1Node {
  if (!is(node, tag, cls)) throw malformed(`expected ${what}`);
  return node;
}

/** Child `i`, or a `malformed` error naming the field. */
export function child(node: Asn1Node, i: number, what: string): Asn1Node {
  const c = node.children[i];
  if (c === undefined) throw malformed(`missing ${what}`);
  return c;
}

/**
 * OCTET STRING contents, joining the chunks of a constructed (BER) encoding; works for
 * IMPLICIT-tagged octet strings too (any tag).
 */
export function octetsOf(node: Asn1Node): Buffer {
  if (!node.constructed) return contentOf(node);
  const parts: Buffer[] = [];
  for (const c of node.children) parts.push(octetsOf(c));
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

export function oidOf(node: Asn1Node | undefined): string {
  const n = expectTag(node, Tag.OID, 'an OBJECT IDENTIFIER');
  const bytes = contentOf(n);
  if (bytes.length === 0 || bytes.length > 64) throw malformed('bad OBJECT IDENTIFIER');
  const arcs: number[] = [];
  let value = 0;
  for (const b of bytes) {
    value = value * 128 + (b & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw malformed('OBJECT IDENTIFIER arc too large');
    if ((b & 0x80) === 0) {
      if (arcs.length === 0) {
        const first = value < 80 ? Math.floor(value / 40) : 2;
        arcs.push(first, value - first * 40);
      } else arcs.push(value);
      value = 0;
    }
  }
  if ((bytes[bytes.length - 1]! & 0x80) !== 0) throw malformed('truncated OBJECT IDENTIFIER');
  return arcs.join('.');
}

/** A small non-negative INTEGER (versions, tag lengths). */
export function smallIntOf(node: Asn1Node | undefined): number {
  const bytes = contentOf(expectTag(node, Tag.INTEGER, 'an INTEGER'));
  if (bytes.length === 0 || bytes.length > 4 || (bytes[0]! & 0x80) !== 0)
    throw malformed('INTEGER out of range');
  return bytes.readUIntBE(0, bytes.length);
}

/** UTCTime or GeneralizedTime (RFC 5280 §4.1.2.5 forms: Z, seconds present). */
export function timeOf(node: Asn1Node | undefined): Date {
  if (node === undefined) throw malformed('missing time');
  const s = contentOf(node).toString('latin1');
  let m: RegExpExecArray | null;
  if (node.tag === Tag.UTC_TIME && (m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?Z$/.exec(s))) {
    const yy = Number(m[1]);
    return new Date(
      Date.UTC(
        yy < 50 ? 2000 + yy : 1900 + yy,
        Number(m[2]) - 1,
        Number(m[3]),
        Number(m[4]),
        Number(m[5]),
        Number(m[6] ?? 0),
      ),
    );
  }
  if (
    node.tag === Tag.GENERALIZED_TIME &&
    (m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.\d+)?Z$/.exec(s))
  ) {
    return new Date(
      Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])),
    );
  }
  throw malformed('bad time value');
}

// ---------------------------------------------------------------------------------------------
// DER writer: each function returns the complete encoding as a Buffer.

function lengthOctets(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** A TLV with a one-octet identifier (tag numbers < 31, which is all CMS needs). */
export function tlv(identifier: number, ...content: Buffer[]): Buffer {
  let len = 0;
  for (const c of content) len += c.length;
  return Buffer.concat([Buffer.from([identifier]), lengthOctets(len), ...content]);
}

/**
 * A TLV as a list of chunks (header, then the parts as given): nests large contents (a 2 MB
 * ciphertext) without copying them at every level; `Buffer.concat` once at the end.
 */
export function tlvChunks(identifier: number, parts: Buffer[]): Buffer[] {
  let len = 0;
  for (const p of parts) len += p.length;
  return [Buffer.concat([Buffer.from([identifier]), lengthOctets(len)]), ...parts];
}

export const der = {
  sequence: (...items: Buffer[]): Buffer => tlv(0x30, ...items),
  /** SET with the given order (use `setOf` for DER's sorted SET OF). */
  set: (...items: Buffer[]): Buffer => tlv(0x31, ...items),
  /** DER SET OF: elements sorted by their encodings (X.690 §11.6). */
  setOf: (...items: Buffer[]): Buffer => tlv(0x31, ...[...items].sort(Buffer.compare)),
  octetString: (bytes: Uint8Array): Buffer =>
    tlv(0x04, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)),
  /** BIT STRING of whole octets (no unused bits): signatures, keys. */
  bitString: (bytes: Uint8Array): Buffer => tlv(0x03, Buffer.from([0]), Buffer.from(bytes)),
  null: (): Buffer => Buffer.from([0x05, 0x00]),
  /** Non-negative INTEGER from a number or from unsigned big-endian bytes. */
  integer: (value: number | Uint8Array): Buffer => {
    let bytes: Buffer;
    if (typeof value === 'number') {
      const out: number[] = [];
      let v = value;
      do {
        out.unshift(v & 0xff);
        v = Math.floor(v / 256);
      } while (v > 0);
      bytes = Buffer.from(out);
    } else bytes = Buffer.from(value);
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0 && (bytes[i + 1]! & 0x80) === 0) i++;
    bytes = bytes.subarray(i);
    if ((bytes[0]! & 0x80) !== 0) bytes = Buffer.concat([Buffer.from([0]), bytes]);
    return tlv(0x02, bytes);
  },
  oid: (dotted: string): Buffer => {
    const arcs = dotted.split('.').map(Number);
    const out: number[] = [];
    const push = (v: number) => {
      const stack = [v & 0x7f];
      for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) stack.unshift((x & 0x7f) | 0x80);
      out.push(...stack);
    };
    push(arcs[0]! * 40 + arcs[1]!);
    for (const a of arcs.slice(2)) push(a);
    return tlv(0x06, Buffer.from(out));
  },
  /** UTCTime through 2049, GeneralizedTime after (RFC 5280 §4.1.2.5, RFC 5652 §11.3). */
  time: (date: Date): Buffer => {
    const iso = date.toISOString();
    const compact = iso.slice(0, 19).replace(/[-:T]/g, '') + 'Z';
    const year = date.getUTCFullYear();
    return year >= 1950 && year < 2050
      ? tlv(0x17, Buffer.from(compact.slice(2), 'latin1'))
      : tlv(0x18, Buffer.from(compact, 'latin1'));
  },
  /** Context-specific [n], constructed (EXPLICIT tagging, or IMPLICIT over a constructed type). */
  explicit: (n: number, ...content: Buffer[]): Buffer => tlv(0xa0 | n, ...content),
  /** Context-specific [n], primitive (IMPLICIT over a primitive type). */
  implicitPrimitive: (n: number, content: Buffer): Buffer => tlv(0x80 | n, content),
  /** Re-tags an encoding (IMPLICIT): replaces its identifier octet. */
  retag: (encoding: Buffer, identifier: number): Buffer => {
    const out = Buffer.from(encoding);
    out[0] = identifier;
    return out;
  },
  /** Already-encoded bytes, passed through (certificates, names). */
  raw: (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
};
