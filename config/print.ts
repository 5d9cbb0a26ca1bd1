import { Document } from 'yaml';
import { leafKind, schemaAt } from './load.ts';
import type { Config } from './schema.ts';

/** What a secret looks like when printed. */
export const REDACTED = '[redacted]';

/** Keys whose values are secrets wherever they appear (today: `delivery.routes.<domain>.auth.pass`). */
const SECRET_KEY = /^(pass|password|secret|token|apikey)$/i;

const HEADER = [
  'Effective configuration (defaults < file < COURRIER_* environment).',
  'Durations are shown in human units (ms, s, m, h, d) and sizes in B, KB, MB, GB (1 KB = 1024 bytes),',
  'both as the loader reads them; secrets are shown as [redacted].',
].join('\n');

/**
 * The effective configuration as YAML, for `courrier config print` and support requests: secrets
 * redacted, durations and sizes in the units a person writes. The output loads back as a config
 * file (with the secrets replaced by the literal `[redacted]`).
 */
export function printConfig(config: Config): string {
  const doc = new Document(present(config, []));
  doc.commentBefore = HEADER.split('\n')
    .map((l) => ` ${l}`)
    .join('\n');
  return doc.toString({ lineWidth: 0 });
}

function present(value: unknown, path: string[]): unknown {
  const key = path[path.length - 1] ?? '';
  if (typeof value === 'string') {
    if (SECRET_KEY.test(key)) return REDACTED;
    return redactUrlPassword(value);
  }
  if (Array.isArray(value)) return value.map((v, i) => present(v, [...path, String(i)]));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, present(v, [...path, k])]));
  }
  if (typeof value === 'number') {
    const schema = schemaAt(path);
    const kind = schema === undefined ? 'other' : leafKind(schema);
    if (kind === 'duration') return formatDuration(value);
    if (kind === 'size') return formatSize(value);
  }
  return value;
}

/**
 * `redis://user:secret@host:6379/0` → `redis://user:[redacted]@host:6379/0`. Userinfo without a
 * colon is redacted whole: some clients read `redis://secret@host` as a password.
 */
export function redactUrlPassword(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)@/i, (_m, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return colon === -1 ? `${scheme}${REDACTED}@` : `${scheme}${userinfo.slice(0, colon)}:${REDACTED}@`;
  });
}

const DURATION_UNITS: [string, number][] = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1000],
];

/** Milliseconds in the largest unit that divides them exactly: 300000 → `5m`, 1500 → `1500ms`. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  for (const [unit, factor] of DURATION_UNITS) if (ms % factor === 0) return `${ms / factor}${unit}`;
  return `${ms}ms`;
}

const SIZE_UNITS: [string, number][] = [
  ['GB', 1024 ** 3],
  ['MB', 1024 ** 2],
  ['KB', 1024],
];

/** Bytes in the largest unit that divides them exactly: 26214400 → `25MB`, 1000 → `1000B`. */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of SIZE_UNITS) if (bytes % factor === 0) return `${bytes / factor}${unit}`;
  return `${bytes}B`;
}
