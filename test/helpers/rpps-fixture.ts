import { createWriteStream } from 'node:fs';
import { once } from 'node:events';

/**
 * Synthetic lines in the exact layout of `PS_LibreAcces_Personne_activite` (RPPS open data):
 * `|`-separated UTF-8, 56 columns, a trailing `|` on every line. No real person or structure.
 * Deterministic: the same (n, seed) always gives the same lines, so a bench can reuse it.
 */

export const RPPS_HEADER = [
  "Type d'identifiant PP",
  'Identifiant PP',
  'Identification nationale PP',
  "Code civilité d'exercice",
  "Libellé civilité d'exercice",
  'Code civilité',
  'Libellé civilité',
  "Nom d'exercice",
  "Prénom d'exercice",
  'Code profession',
  'Libellé profession',
  'Code catégorie professionnelle',
  'Libellé catégorie professionnelle',
  'Code type savoir-faire',
  'Libellé type savoir-faire',
  'Code savoir-faire',
  'Libellé savoir-faire',
  'Code mode exercice',
  'Libellé mode exercice',
  'Numéro SIRET site',
  'Numéro SIREN site',
  'Numéro FINESS site',
  'Numéro FINESS établissement juridique',
  'Identifiant technique de la structure',
  'Raison sociale site',
  'Enseigne commerciale site',
  'Complément destinataire (coord. structure)',
  'Complément point géographique (coord. structure)',
  'Numéro Voie (coord. structure)',
  'Indice répétition voie (coord. structure)',
  'Code type de voie (coord. structure)',
  'Libellé type de voie (coord. structure)',
  'Libellé Voie (coord. structure)',
  'Mention distribution (coord. structure)',
  'Bureau cedex (coord. structure)',
  'Code postal (coord. structure)',
  'Code commune (coord. structure)',
  'Libellé commune (coord. structure)',
  'Code pays (coord. structure)',
  'Libellé pays (coord. structure)',
  'Téléphone (coord. structure)',
  'Téléphone 2 (coord. structure)',
  'Télécopie (coord. structure)',
  'Adresse e-mail (coord. structure)',
  'Code Département (structure)',
  'Libellé Département (structure)',
  'Ancien identifiant de la structure',
  "Autorité d'enregistrement",
  "Code secteur d'activité",
  "Libellé secteur d'activité",
  'Code section tableau pharmaciens',
  'Libellé section tableau pharmaciens',
  'Code rôle',
  'Libellé rôle',
  'Code genre activité',
  'Libellé genre activité',
] as const;

export type RppsColumn = (typeof RPPS_HEADER)[number];

/** The header line, with its trailing `|`. */
export const RPPS_HEADER_LINE = `${RPPS_HEADER.join('|')}|`;

/** One line (trailing `|` included) from the given columns; the others are empty. */
export function activityLine(fields: Partial<Record<RppsColumn, string>>): string {
  return `${RPPS_HEADER.map((h) => fields[h] ?? '').join('|')}|`;
}

/** Column values of one line, by header name. */
export type ActivityFields = Partial<Record<RppsColumn, string>>;

/** A line of sampleActivity with `overrides`. */
export const sampleLine = (overrides: ActivityFields = {}): string => activityLine(sampleActivity(overrides));

/** The columns that make the sample line another person's (RPPS, national id = 8 + RPPS). */
export const person = (rpps: string, overrides: ActivityFields = {}): ActivityFields => ({
  'Identifiant PP': rpps,
  'Identification nationale PP': `8${rpps}`,
  ...overrides,
});

/** A médecin généraliste at a FINESS site, the base that tests edit. */
export function sampleActivity(
  overrides: Partial<Record<RppsColumn, string>> = {},
): Partial<Record<RppsColumn, string>> {
  return {
    "Type d'identifiant PP": '8',
    'Identifiant PP': '10000000001',
    'Identification nationale PP': '810000000001',
    "Code civilité d'exercice": 'DR',
    "Libellé civilité d'exercice": 'Docteur',
    'Code civilité': 'MME',
    'Libellé civilité': 'Madame',
    "Nom d'exercice": 'LEFÈVRE',
    "Prénom d'exercice": 'Maëlle',
    'Code profession': '10',
    'Libellé profession': 'Médecin',
    'Code catégorie professionnelle': 'C',
    'Libellé catégorie professionnelle': 'Civil',
    'Code type savoir-faire': 'S',
    'Libellé type savoir-faire': 'Spécialité ordinale',
    'Code savoir-faire': 'SM54',
    'Libellé savoir-faire': 'Médecine générale',
    'Code mode exercice': 'L',
    'Libellé mode exercice': 'Libéral',
    'Numéro SIRET site': '99999999900011',
    'Numéro SIREN site': '999999999',
    'Numéro FINESS site': '349999991',
    'Numéro FINESS établissement juridique': '349999990',
    'Identifiant technique de la structure': 'R10000000000001',
    'Raison sociale site': 'MAISON DE SANTE DES VIGNES',
    'Numéro Voie (coord. structure)': '9',
    'Indice répétition voie (coord. structure)': 'T',
    'Code type de voie (coord. structure)': 'BD',
    'Libellé type de voie (coord. structure)': 'Boulevard',
    'Libellé Voie (coord. structure)': 'JEAN JAURES',
    'Code postal (coord. structure)': '34800',
    'Code commune (coord. structure)': '34079',
    'Libellé commune (coord. structure)': 'CLERMONT-L’HÉRAULT',
    'Code pays (coord. structure)': '99000',
    'Libellé pays (coord. structure)': 'France',
    'Téléphone (coord. structure)': '0400000000',
    'Code Département (structure)': '34',
    'Libellé Département (structure)': 'Hérault',
    "Autorité d'enregistrement": 'CNOM/CNOM/CNOM',
    "Code secteur d'activité": 'SA07',
    "Libellé secteur d'activité": 'Cabinet individuel',
    'Code rôle': 'FON-01',
    'Libellé rôle': 'Titulaire de cabinet',
    'Code genre activité': 'GENR01',
    'Libellé genre activité': 'Activité standard',
    ...overrides,
  };
}

// ---------------------------------------------------------------------------------------------
// Generator

/** mulberry32: a small deterministic PRNG (not for secrets). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LAST_NAMES = ['LEFÈVRE', 'N’DIAYE', 'MARTIN', 'DUBOIS', 'ROUX', 'FONTAINE-MÉRIL', 'GARCÍA', 'LAURENT'];
const FIRST_NAMES = ['Maëlle', 'Élodie', 'Mathéo', 'Raphaël', 'Chloé', 'Noé', 'Inès', 'Jean-Loïc'];
const PROFESSIONS: [string, string, string, string, string][] = [
  // code, label, savoir-faire type, savoir-faire code, savoir-faire label
  ['10', 'Médecin', 'S', 'SM54', 'Médecine générale'],
  ['10', 'Médecin', 'S', 'SM15', 'Endocrinologie et métabolisme'],
  ['21', 'Pharmacien', '', '', ''],
  ['40', 'Chirurgien-Dentiste', 'S', 'SCD01', 'Orthopédie dento-faciale'],
  ['50', 'Sage-Femme', '', '', ''],
  ['60', 'Infirmier', '', '', ''],
  ['70', 'Masseur-Kinésithérapeute', '', '', ''],
  ['91', 'Orthophoniste', '', '', ''],
];
const CITIES: [string, string, string][] = [
  ['34800', 'CLERMONT-L’HÉRAULT', '34'],
  ['74000', 'ANNECY', '74'],
  ['11000', 'CARCASSONNE', '11'],
  ['20000', 'AJACCIO', '2A'],
  ['97400', 'SAINT-DENIS', '974'],
];
const SITE_NAMES = [
  'CABINET MÉDICAL',
  'MAISON DE SANTE',
  'CENTRE HOSPITALIER',
  'CLINIQUE',
  'PHARMACIE',
  'ESP',
];
const ROLES: [string, string][] = [
  ['FON-01', 'Titulaire de cabinet'],
  ['FON-05', 'Médecin salarié'],
  ['FON-07', 'Remplaçant'],
];
const MODES: [string, string][] = [
  ['L', 'Libéral'],
  ['S', 'Salarié'],
  ['B', 'Bénévole'],
];

const digits = (n: number, width: number) => String(n).padStart(width, '0');

/**
 * `n` data lines (no header), persons with one to three activities each, some without any
 * activity, at FINESS, SIRET-only, SIREN-only or technical-id-only sites. The ids are synthetic
 * (RPPS `18…`, no Luhn key; ADELI in department 99).
 */
export function* generateActivityLines(n: number, seed = 1): Generator<string> {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  let produced = 0;
  for (let person = 0; produced < n; person++) {
    const adeli = rand() < 0.1;
    const idType = adeli ? '0' : '8';
    const id = adeli ? `99${digits(person, 7)}` : `18${digits(person, 9)}`;
    const [pCode, pLabel, sfType, sfCode, sfLabel] = pick(PROFESSIONS);
    const person_ = {
      "Type d'identifiant PP": idType,
      'Identifiant PP': id,
      'Identification nationale PP': `${idType}${id}`,
      "Code civilité d'exercice": pCode === '10' || pCode === '21' ? 'DR' : '',
      'Code civilité': rand() < 0.5 ? 'M' : 'MME',
      "Nom d'exercice": pick(LAST_NAMES),
      "Prénom d'exercice": pick(FIRST_NAMES),
      'Code profession': pCode,
      'Libellé profession': pLabel,
      'Code catégorie professionnelle': 'C',
      'Libellé catégorie professionnelle': 'Civil',
      'Code type savoir-faire': sfType,
      'Code savoir-faire': sfCode,
      'Libellé savoir-faire': sfLabel,
    } satisfies Partial<Record<RppsColumn, string>>;
    if (rand() < 0.05) {
      // Registered, no activity: the activity columns are empty.
      produced++;
      yield activityLine(person_);
      continue;
    }
    const activities = 1 + Math.floor(rand() * rand() * 3);
    for (let a = 0; a < activities && produced < n; a++) {
      const site = Math.floor(rand() * Math.max(10, n / 4));
      const [postcode, city, department] = pick(CITIES);
      const idKind = rand();
      const [role, roleLabel] = ROLES[a % ROLES.length]!;
      const [mode, modeLabel] = pick(MODES);
      produced++;
      yield activityLine({
        ...person_,
        'Code mode exercice': mode,
        'Libellé mode exercice': modeLabel,
        'Numéro SIRET site': idKind < 0.7 ? `9${digits(site, 13)}` : '',
        'Numéro SIREN site': idKind < 0.8 ? `9${digits(site, 8)}` : '',
        'Numéro FINESS site': idKind < 0.3 ? `99${digits(site, 7)}` : '',
        'Identifiant technique de la structure': `R1${digits(site, 13)}`,
        'Raison sociale site': `${pick(SITE_NAMES)} ${digits(site, 4)}`,
        'Numéro Voie (coord. structure)': String(1 + (site % 120)),
        'Code type de voie (coord. structure)': 'R',
        'Libellé type de voie (coord. structure)': 'Rue',
        'Libellé Voie (coord. structure)': 'DES ÉCOLES',
        'Code postal (coord. structure)': postcode,
        'Libellé commune (coord. structure)': city,
        'Libellé pays (coord. structure)': 'France',
        'Code Département (structure)': department,
        "Code secteur d'activité": 'SA07',
        "Libellé secteur d'activité": 'Cabinet individuel',
        'Code rôle': role,
        'Libellé rôle': roleLabel,
        'Code genre activité': 'GENR01',
        'Libellé genre activité': 'Activité standard',
      });
    }
  }
}

/** Writes the header and `n` generated lines to `file` (streamed: fine for millions of lines). */
export async function writeActivityFile(file: string, n: number, seed = 1, eol = '\n'): Promise<void> {
  const out = createWriteStream(file);
  const write = async (s: string) => {
    if (!out.write(s)) await once(out, 'drain');
  };
  await write(`${RPPS_HEADER_LINE}${eol}`);
  for (const line of generateActivityLines(n, seed)) await write(`${line}${eol}`);
  out.end();
  await once(out, 'finish');
}
