import type { MailboxType } from './mailbox-store.ts';

/**
 * The directory model: who a recipient is. Timestamps are milliseconds since the epoch.
 * Identifiers follow the Annuaire Santé (../docs/directory.md): a person's national id is the
 * id type prefix followed by the number (`8` + RPPS, `0` + ADELI).
 */

/** TRE_G15 profession codes seen in the extracts (10 médecin, 21 pharmacien, 60 infirmier, ...). */
export type ProfessionCode = string;

export interface Professional {
  /** `8` + 11-digit RPPS or `0` + ADELI. */
  nationalId: string;
  idType: '8' | '0';
  civility?: string;
  lastName: string;
  firstName: string;
  professionCode?: ProfessionCode;
  professionLabel?: string;
  /** TRE_R38 specialty (savoir-faire), e.g. `SM54` médecine générale. */
  specialtyCode?: string;
  specialtyLabel?: string;
}

export type StructureKind = 'hospital' | 'msp' | 'esp' | 'cpts' | 'practice' | 'other';

/** Structure id type: 0 ADELI practice, 1 FINESS, 2 SIREN, 3 SIRET, 4 RPPS practice. */
export type StructureIdType = '0' | '1' | '2' | '3' | '4';

export interface Structure {
  /** `<id type>:<identification>`, e.g. `1:1340000000`; stable across imports. */
  key: string;
  idType: StructureIdType;
  identification: string;
  name: string;
  kind: StructureKind;
}

/** One mailbox's attachment to a structure, as one line of the extract gives it. */
export interface MailboxStructure {
  structure: Structure;
  service?: string;
  /** Postal address lines of the structure on that line, joined with ", ". */
  street?: string;
  postcode?: string;
  city?: string;
  department?: string;
  country?: string;
}

export interface DirectoryMailbox {
  /** Lower-cased (see mailbox-store.ts for why the local part is too). */
  address: string;
  domain: string;
  type: MailboxType;
  /** `extract`: from the public extract; `local`: added here. */
  source: 'extract' | 'local';
  owner?: Professional;
  structures: MailboxStructure[];
  /** Liste rouge: never returned by search, still resolvable by address. */
  hidden: boolean;
  /** Hosted by this gateway (the hosted-mailbox store knows it), otherwise at another operator. */
  hosted: boolean;
  /** "Dématérialisation" column: accepts dematerialised documents (O/N), unknown when empty. */
  dematerialisation?: boolean;
  displayName?: string;
  /** Set when the mailbox disappeared from the latest extract; it is kept for history. */
  retiredAt?: number;
  updatedAt: number;
}

export type TeamKind = 'ESP' | 'CPTS' | 'MSP';
export const TEAM_KINDS: readonly TeamKind[] = ['ESP', 'CPTS', 'MSP'];

export interface Team {
  /** Short stable id chosen by the operator, e.g. `cpts-sud-exemple`. */
  id: string;
  kind: TeamKind;
  name: string;
  /** The structure that carries the team, when it has one. */
  structureKey?: string;
  /** The address that expands to the members. */
  address?: string;
}

/** A member is a professional (by national id) or a mailbox (a hospital service, an EHPAD...). */
export type TeamMember =
  | { kind: 'professional'; nationalId: string; role?: string; professionCode?: string }
  | { kind: 'mailbox'; address: string; role?: string; professionCode?: string };

export interface TeamExpansion {
  team: Team;
  /** One address per member, deduplicated. */
  recipients: { address: string; member: TeamMember }[];
  /** Members with no live mailbox. */
  unreachable: TeamMember[];
}

export type KeyFormat = 'smime' | 'openpgp';

export interface MailboxKey {
  address: string;
  format: KeyFormat;
  /** SHA-256 of the bytes, lower-case hex. */
  fingerprint: string;
  /** The certificate (DER or PEM) or the OpenPGP public key (binary or armored), as given. */
  data: Uint8Array;
  notBefore?: number;
  notAfter?: number;
  preferred: boolean;
  addedAt: number;
}

export interface SearchQuery {
  /** Words of a person's name or of an ORG mailbox's service, any order, accents and case ignored. */
  name?: string;
  /** A TRE_G15 code (`10`) or words of the label (`infirmier`). */
  profession?: string;
  /** City name words, or a postcode (prefix). */
  city?: string;
  /** Words of the structure name, or a structure key (`1:1340000000`). */
  structure?: string;
  type?: MailboxType;
  includeHidden?: boolean;
  includeRetired?: boolean;
  /** Default 50, at most 500. */
  limit?: number;
}

export interface TrustDomainEntry {
  domain: string;
  /** Subject DN of the operator MTA's certificate, as published. */
  operatorDn: string;
  description?: string;
  updatedAt?: string;
}

/**
 * One activity of a professional, from a `PS_LibreAcces_Personne_activite` line (RPPS open data):
 * where (the site, as a structure) and how (role, mode, sector) they practise.
 */
export interface Activity {
  nationalId: string;
  /**
   * Identifies the activity within the person across imports:
   * `<structure key>|<mode code>|<role code>|<genre code>` (see rpps-import.ts).
   */
  activityKey: string;
  /** The site; absent when the line gives no site identifier. */
  structure?: Structure;
  /** The site's name on that line (raison sociale, else enseigne). */
  siteName?: string;
  /** e.g. `FON-01` Titulaire de cabinet. */
  roleCode?: string;
  roleLabel?: string;
  /** Mode of practice, e.g. `L` libéral, `S` salarié, `B` bénévole. */
  modeCode?: string;
  modeLabel?: string;
  /** Sector of the site, e.g. `SA07` cabinet individuel. */
  sectorCode?: string;
  sectorLabel?: string;
  /** Postal address lines of the site, joined with ", ". */
  street?: string;
  postcode?: string;
  city?: string;
  department?: string;
  country?: string;
  /** Set when the activity disappeared from the latest complete import; kept for history. */
  retiredAt?: number;
}
