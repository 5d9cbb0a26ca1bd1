import type { StructureKind } from './model.ts';

/**
 * A structure's kind guessed from its id type and its name, for both the extract and the RPPS
 * activity import; teams carry their own kind (model.ts).
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
