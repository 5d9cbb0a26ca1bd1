import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { configSchema, duration, size, type Config } from './schema.ts';

/**
 * Reads the configuration once at boot: YAML file, then `COURRIER_*` environment overrides, then
 * schema validation with every problem listed. The composition root gets the result and hands
 * each part its piece; nothing reads the environment or the file later.
 */

/** Invalid configuration: `problems` lists every problem found, one line each. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly problems: string[];

  constructor(problems: string[], options?: ErrorOptions) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`, options);
    this.problems = problems;
  }
}

export interface LoadConfigOptions {
  /** Config file. Relative to `cwd`. Default: `COURRIER_CONFIG`, else `./courrier.yaml` if it exists. */
  file?: string;
  /** Default: process.env. */
  env?: NodeJS.ProcessEnv;
  /** Default: process.cwd(). */
  cwd?: string;
}

/** Prefix of override variables; `__` separates nesting levels. */
export const ENV_PREFIX = 'COURRIER_';
/** Names the config file; not an override. */
export const ENV_CONFIG_FILE = 'COURRIER_CONFIG';
const DEFAULT_FILE = 'courrier.yaml';

/**
 * Loads, merges and validates the configuration. Precedence: schema defaults < file < environment.
 * `dataDir` and every `*File` path come back absolute, resolved against the config file's folder
 * (or `cwd` when there is no file). Throws ConfigError listing every problem.
 */
export function loadConfig(opts: LoadConfigOptions = {}): { config: Config; file?: string } {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const problems: string[] = [];

  const file = chooseFile(opts.file, env, cwd);
  let raw: Record<string, unknown> = {};
  let yaml: { doc: Document.Parsed; lines: LineCounter; label: string } | undefined;
  if (file !== undefined) {
    const read = readYaml(file.path, file.explicitBy);
    if ('problems' in read)
      throw new ConfigError(read.problems, read.cause === undefined ? undefined : { cause: read.cause });
    yaml = { doc: read.doc, lines: read.lines, label: file.path };
    const contents: unknown = read.doc.toJS();
    if (contents === null || contents === undefined) raw = {};
    else if (isPlainObject(contents)) raw = dropEmptySections(contents, []);
    else problems.push(`${file.path}: the top level must be a mapping of keys, got ${describe(contents)}`);
  }

  const envSources = applyEnvOverrides(raw, env, problems);

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      for (const p of describeIssue(issue)) {
        problems.push(`${p.path}: ${p.message} (${sourceOf(p.segments, envSources, yaml)})`);
      }
    }
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);

  const config = resolvePaths(parsed.data, file === undefined ? cwd : dirname(file.path));
  return file === undefined ? { config } : { config, file: file.path };
}

// ---------------------------------------------------------------------------------------------
// File

function chooseFile(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv,
  cwd: string,
): { path: string; explicitBy?: string } | undefined {
  if (explicit !== undefined) return { path: resolve(cwd, explicit), explicitBy: 'the file option' };
  const fromEnv = env[ENV_CONFIG_FILE];
  if (fromEnv !== undefined && fromEnv !== '')
    return { path: resolve(cwd, fromEnv), explicitBy: ENV_CONFIG_FILE };
  const implicit = resolve(cwd, DEFAULT_FILE);
  return existsSync(implicit) ? { path: implicit } : undefined;
}

function readYaml(
  path: string,
  explicitBy: string | undefined,
): { doc: Document.Parsed; lines: LineCounter } | { problems: string[]; cause?: unknown } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      return {
        problems: [`${path}: config file not found (named by ${explicitBy ?? 'default'})`],
        cause: err,
      };
    }
    return { problems: [`${path}: cannot read config file: ${(err as Error).message}`], cause: err };
  }
  const lines = new LineCounter();
  // YAML 1.2 core schema: `no` stays a string (no Norway problem); duplicate keys are errors.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      problems: doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0]);
        return `${path}:${pos.line}:${pos.col}: YAML syntax error: ${e.message}`;
      }),
    };
  }
  return { doc, lines };
}

/**
 * `smtp:` with every key below it commented out reads as null; treat such an empty section as
 * absent rather than as an error.
 */
function dropEmptySections(node: Record<string, unknown>, path: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    const schema = schemaAt([...path, key]);
    const section = schema !== undefined && isSection(schema);
    if (value === null && section) continue;
    out[key] = section && isPlainObject(value) ? dropEmptySections(value, [...path, key]) : value;
  }
  return out;
}

function isSection(schema: z.ZodType): boolean {
  const node = unwrap(schema);
  return node instanceof z.ZodObject || node instanceof z.ZodRecord;
}

// ---------------------------------------------------------------------------------------------
// Environment overrides

/**
 * Applies `COURRIER_A__B__C=value` to `raw`, matching each level case-insensitively against the
 * schema's keys and converting the value to what the schema wants there. Returns which variable
 * set which path, for error messages.
 */
function applyEnvOverrides(
  raw: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  problems: string[],
): Map<string, string> {
  const sources = new Map<string, string>();
  const names = Object.keys(env)
    .filter((n) => n.toUpperCase().startsWith(ENV_PREFIX) && n.toUpperCase() !== ENV_CONFIG_FILE)
    .sort();
  for (const name of names) {
    const value = env[name];
    if (value === undefined) continue;
    const located = locateEnvKey(name.slice(ENV_PREFIX.length).split('__'));
    if ('problem' in located) {
      problems.push(`${name}: ${located.problem}`);
      continue;
    }
    const converted = convertEnvValue(value, located.schema);
    if ('problem' in converted) {
      problems.push(`${located.path.join('.')}: ${converted.problem} (env ${name})`);
      continue;
    }
    setIn(raw, located.path, converted.value);
    sources.set(located.path.join('.'), name);
  }
  return sources;
}

function locateEnvKey(segments: string[]): { path: string[]; schema: z.ZodType } | { problem: string } {
  let schema: z.ZodType = configSchema;
  const path: string[] = [];
  for (const segment of segments) {
    const node = unwrap(schema);
    if (segment === '') return { problem: 'empty key segment (use `__` only between names)' };
    if (node instanceof z.ZodObject) {
      const shape = node.shape as Record<string, z.ZodType>;
      const key = Object.keys(shape).find((k) => k.toLowerCase() === segment.toLowerCase());
      if (key === undefined) {
        const where = path.length === 0 ? 'at the top level' : `in ${path.join('.')}`;
        return { problem: `unknown key "${segment}" ${where} (known: ${Object.keys(shape).join(', ')})` };
      }
      path.push(key);
      schema = shape[key]!;
    } else if (node instanceof z.ZodRecord) {
      // Record keys are domain names: case-insensitive.
      path.push(segment.toLowerCase());
      schema = node.valueType as z.ZodType;
    } else {
      return { problem: `${path.join('.')} is a value, it has no key "${segment}"` };
    }
  }
  if (isSection(schema)) {
    return {
      problem: `${path.join('.') || 'the top level'} is a section; set its keys one by one (NAME__KEY)`,
    };
  }
  return { path, schema };
}

type Converted = { value: unknown } | { problem: string };

function convertEnvValue(text: string, schema: z.ZodType): Converted {
  const node = unwrap(schema);
  if (node instanceof z.ZodArray) {
    // Comma-separated; an empty value is an empty list.
    const items = text
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    const values: unknown[] = [];
    for (const item of items) {
      const c = convertEnvValue(item, node.element as z.ZodType);
      if ('problem' in c) return c;
      values.push(c.value);
    }
    return { value: values };
  }
  switch (leafKind(node)) {
    case 'boolean':
      if (/^true$/i.test(text.trim())) return { value: true };
      if (/^false$/i.test(text.trim())) return { value: false };
      return { problem: `expected true or false, got "${text}"` };
    case 'number':
      return NUMBER.test(text) ? { value: Number(text) } : { problem: `expected a number, got "${text}"` };
    case 'duration':
    case 'size':
      // A bare number means seconds or bytes, as in the file; otherwise the schema parses units.
      return { value: NUMBER.test(text) ? Number(text) : text };
    default:
      return { value: text };
  }
}

const NUMBER = /^\s*-?\d+(\.\d+)?\s*$/;

function setIn(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (isPlainObject(next)) {
      node = next;
    } else {
      const created: Record<string, unknown> = {};
      node[key] = created;
      node = created;
    }
  }
  node[path[path.length - 1]!] = value;
}

// ---------------------------------------------------------------------------------------------
// Schema introspection (also used by print.ts and the docs sync test)

export type LeafKind = 'duration' | 'size' | 'boolean' | 'number' | 'string' | 'enum' | 'array' | 'other';

/** Strips default/prefault/optional wrappers. */
export function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  for (;;) {
    if (
      s instanceof z.ZodDefault ||
      s instanceof z.ZodPrefault ||
      s instanceof z.ZodOptional ||
      s instanceof z.ZodNullable
    ) {
      s = s.def.innerType as z.ZodType;
    } else {
      return s;
    }
  }
}

export function leafKind(schema: z.ZodType): LeafKind {
  const s = unwrap(schema);
  if (s === duration) return 'duration';
  if (s === size) return 'size';
  if (s instanceof z.ZodPipe) return leafKind(s.def.in as z.ZodType);
  if (s instanceof z.ZodBoolean) return 'boolean';
  if (s instanceof z.ZodNumber) return 'number';
  if (s instanceof z.ZodString) return 'string';
  if (s instanceof z.ZodEnum) return 'enum';
  if (s instanceof z.ZodArray) return 'array';
  return 'other';
}

/**
 * Every leaf key of the schema as a dotted path; record entries appear as `<domain>`
 * (e.g. `delivery.routes.<domain>.host`).
 */
export function schemaLeafPaths(
  schema: z.ZodType = configSchema,
  prefix = '',
): { path: string; kind: LeafKind }[] {
  const node = unwrap(schema);
  if (node instanceof z.ZodObject) {
    return Object.entries(node.shape as Record<string, z.ZodType>).flatMap(([key, child]) =>
      schemaLeafPaths(child, prefix === '' ? key : `${prefix}.${key}`),
    );
  }
  if (node instanceof z.ZodRecord) return schemaLeafPaths(node.valueType as z.ZodType, `${prefix}.<domain>`);
  return [{ path: prefix, kind: leafKind(node) }];
}

/** The schema at a concrete path of the config (record keys match any name), if any. */
export function schemaAt(
  path: readonly PropertyKey[],
  schema: z.ZodType = configSchema,
): z.ZodType | undefined {
  let s: z.ZodType = schema;
  for (const key of path) {
    const node = unwrap(s);
    if (node instanceof z.ZodObject) {
      const child = (node.shape as Record<string, z.ZodType>)[String(key)];
      if (child === undefined) return undefined;
      s = child;
    } else if (node instanceof z.ZodRecord) {
      s = node.valueType as z.ZodType;
    } else if (node instanceof z.ZodArray) {
      s = node.element as z.ZodType;
    } else {
      return undefined;
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Problems

function describeIssue(
  issue: z.core.$ZodIssue,
): { path: string; segments: PropertyKey[]; message: string }[] {
  const segments = [...issue.path];
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => ({
      path: dotted([...segments, k]),
      segments: [...segments, k],
      message: 'unknown key',
    }));
  }
  if (issue.code === 'invalid_key') {
    const inner = issue.issues.map((i) => i.message).join('; ');
    return [{ path: dotted(segments), segments, message: `invalid key: ${inner}` }];
  }
  return [{ path: dotted(segments), segments, message: issue.message }];
}

function dotted(segments: readonly PropertyKey[]): string {
  if (segments.length === 0) return '(top level)';
  return segments
    .map((s) => (typeof s === 'number' ? `[${s}]` : String(s)))
    .join('.')
    .replaceAll('.[', '[');
}

/** Where the offending value came from: an env variable, a line of the file, or the defaults. */
function sourceOf(
  segments: readonly PropertyKey[],
  envSources: Map<string, string>,
  yaml: { doc: Document.Parsed; lines: LineCounter; label: string } | undefined,
): string {
  const keys = segments.map(String);
  for (let n = keys.length; n > 0; n--) {
    const name = envSources.get(keys.slice(0, n).join('.'));
    if (name !== undefined) return `env ${name}`;
  }
  if (yaml !== undefined) {
    const offset = yamlOffset(yaml.doc, segments);
    if (offset !== undefined) return `${yaml.label}:${yaml.lines.linePos(offset).line}`;
  }
  return 'defaults';
}

/** Offset of the deepest node along `segments` that the file has (the key, for mapping entries). */
function yamlOffset(doc: Document.Parsed, segments: readonly PropertyKey[]): number | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined;
  for (const segment of segments) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (pair === undefined) break;
      if (isScalar(pair.key) && pair.key.range) offset = pair.key.range[0];
      node = pair.value;
    } else if (node !== null && typeof node === 'object' && 'items' in node && Array.isArray(node.items)) {
      const item: unknown = node.items[Number(segment)];
      if (item === undefined) break;
      if (isScalar(item) && item.range) offset = item.range[0];
      node = item;
    } else {
      break;
    }
  }
  return offset;
}

// ---------------------------------------------------------------------------------------------
// Paths

/** `dataDir` and every `*File` value resolved against `base`. */
function resolvePaths(config: Config, base: string): Config {
  const walk = (value: unknown, key: string): unknown => {
    if (typeof value === 'string' && (key === 'dataDir' || /File$/.test(key))) {
      return isAbsolute(value) ? value : resolve(base, value);
    }
    if (Array.isArray(value)) return value.map((v) => walk(v, ''));
    if (isPlainObject(value))
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v, k)]));
    return value;
  };
  return walk(config, '') as Config;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function describe(value: unknown): string {
  return Array.isArray(value) ? 'a list' : typeof value;
}
