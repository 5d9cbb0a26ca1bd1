import type { StructureKind } from './model.ts';

/**
 * A structure's kind guessed from its id type and its name; teams carry their own kind (model.ts).
 * The same rules as the private `structureKind` of extract-import.ts, here so that the RPPS
 * activity import can use them without touching that file; extract-import.ts may switch to this.
 */
export function guessStructureKind(idType: string, name: string): StructureKind {
  const n = name.toUpperCase();
  if (/^(MSP|MAISON DE SANTE)\b/.test(n)) return 'msp';
  if (/^CPTS\b/.test(n)) return 'cpts';
  if (/^ESP\b/.test(n)) return 'esp';
  if (/\b(CH|CHU|CHR|CHI|CENTRE HOSPITALIER|HOPITAL|HÔPITAL|CLINIQUE)\b/.test(n)) return 'hospital';
  if (idType === '0' || idType === '4' || /^CABINET\b/.test(n)) return 'practice';
  return 'other';
}
