/** Text and identifier helpers shared by the stores and the importers. */

/**
 * The searchable form of a name: NFD, combining marks stripped, lower case, apostrophes removed
 * (`N'DIAYE` → `ndiaye`), other punctuation as spaces, spaces collapsed. "lefevre" finds "LEFÈVRE".
 */
export function normaliseText(s: string): string {
  return s
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/œ/g, 'oe')
    .replace(/æ/g, 'ae')
    .replace(/ß/g, 'ss')
    .replace(/['’`]/g, '')
    .replace(/[^\p{L}\p{N}]+/gu, ' ')
    .trim();
}

/** Luhn (ISO/IEC 7812-1 annex B) over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (d < 0 || d > 9) return false;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return digits.length > 0 && sum % 10 === 0;
}

export const RPPS = /^\d{11}$/;
/** ADELI: 9 characters starting with the department (2A/2B for Corsica). */
export const ADELI = /^(\d{2}|2[AB])\d{7}$/;

/**
 * Accepts a national id (`8` + RPPS, `0` + ADELI) or a bare 11-digit RPPS; returns the national id,
 * or undefined when it has neither form.
 */
export function toNationalId(id: string): string | undefined {
  const s = id.trim().toUpperCase();
  if (RPPS.test(s)) return `8${s}`;
  if (s.startsWith('8') && RPPS.test(s.slice(1))) return s;
  if (s.startsWith('0') && ADELI.test(s.slice(1))) return s;
  return undefined;
}

/** Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern. */
export function likeEscape(s: string): string {
  return s.replace(/[\\%_]/g, (c) => `\\${c}`);
}
