import { z } from 'zod';

/**
 * The configuration schema: the single source of truth for every key, its type and its default.
 * Durations are written as `90s`, `5m`, `4h`, `5d` (or a number of seconds) and parsed to
 * milliseconds; sizes as `25MB`, `512KB` (or a number of bytes) and parsed to bytes.
 * docs/config.md documents every key; test/config.test.ts keeps the two in sync.
 */

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** A duration: `90s`, `5m`, `4h`, `5d`, `250ms`, or a number of seconds. Parsed to milliseconds. */
export const duration = z.union([z.number().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return Math.round(v * 1000);
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/i.exec(v);
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `not a duration: "${v}" (expected e.g. 90s, 5m, 4h, 5d)` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * (DURATION_UNITS_MS[m[2]!.toLowerCase()] ?? 0));
});

/** A size: `25MB`, `512KB`, `1GB`, or a number of bytes. Parsed to bytes (1 KB = 1024 bytes). */
export const size = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)\s*$/i.exec(v);
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `not a size: "${v}" (expected e.g. 512KB, 25MB)` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * (SIZE_UNITS[m[2]!.toLowerCase()] ?? 0));
});

const port = z.number().int().min(0).max(65535);
const domainName = z
  .string()
  .min(1)
  .regex(/^(\*|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)$/i, 'not a domain name')
  .transform((d) => d.toLowerCase());

/** A secret value: never printed (printConfig redacts it, see config/print.ts), never logged. */
const secretString = z.string().min(1);

const listenerBase = {
  enabled: z.boolean().default(true),
  host: z.string().default('127.0.0.1'),
};

const routeSchema = z.strictObject({
  /** Next hop host name (also the name checked in its TLS certificate unless tlsServername is set). */
  host: z.string().min(1),
  port: port.default(25),
  /** `starttls` (required, verified) or `implicit` (TLS from the first byte, e.g. port 465). */
  tls: z.enum(['starttls', 'implicit']).default('starttls'),
  /** Name to verify in the next hop's certificate when it differs from host (e.g. host is an IP). */
  tlsServername: z.string().optional(),
  auth: z.strictObject({ user: z.string().min(1), pass: secretString }).optional(),
});

export const configSchema = z.strictObject({
  /** Folder for the spool, the dev PKI, local stores and mailboxes. Created on first run. */
  dataDir: z.string().default('./data'),
  /** Name this gateway gives itself in banners, Received headers and DSNs. */
  hostname: z.string().min(1).default('courrier.localhost'),
  /** Domains whose mailboxes are hosted here (delivered locally, accepted on the relay listener). */
  localDomains: z
    .array(domainName.refine((d) => d !== '*', 'a local domain cannot be the wildcard *'))
    .default(['courrier.localhost']),

  redis: z
    .strictObject({
      url: z.string().default('redis://127.0.0.1:6379'),
      /** Key prefix: several gateways (or test runs) can share one Redis. */
      prefix: z.string().min(1).default('courrier'),
    })
    .prefault({}),

  tls: z
    .strictObject({
      /** Server certificate (PEM, with chain) and key for the SMTP listeners. Default: dev PKI. */
      certFile: z.string().optional(),
      keyFile: z.string().optional(),
      /** Trust anchors (PEM bundle) for verifying next hops and peer client certificates. Default: dev CA; required with certFile. */
      caFile: z.string().optional(),
      /** Client certificate presented to next hops (mutual TLS). Default: the server certificate. */
      clientCertFile: z.string().optional(),
      clientKeyFile: z.string().optional(),
      minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
    })
    .superRefine((t, ctx) => {
      // A certificate without its key (or the reverse) cannot be used; say so at boot.
      for (const [cert, key] of [
        ['certFile', 'keyFile'],
        ['clientCertFile', 'clientKeyFile'],
      ] as const) {
        if ((t[cert] === undefined) !== (t[key] === undefined)) {
          const missing = t[cert] === undefined ? cert : key;
          ctx.addIssue({
            code: 'custom',
            path: [missing],
            message: `required when ${missing === cert ? key : cert} is set`,
          });
        }
      }
      // The development CA only vouches for the development certificate; with real certificates
      // the trust anchors must be named (the system's public roots are not the trust space).
      if (t.certFile !== undefined && t.caFile === undefined) {
        ctx.addIssue({ code: 'custom', path: ['caFile'], message: 'required when certFile is set' });
      }
    })
    .prefault({}),

  smtp: z
    .strictObject({
      submission: z
        .strictObject({
          ...listenerBase,
          port: port.default(2587),
          /** Optional second listener with implicit TLS (RFC 8314), e.g. port 465. */
          implicitTlsPort: port.optional(),
        })
        .prefault({}),
      relay: z
        .strictObject({
          ...listenerBase,
          port: port.default(2525),
          /** Require a client certificate chaining to the trust anchors (mutual TLS between gateways). */
          requireClientCert: z.boolean().default(true),
        })
        .prefault({}),
      /** Largest message accepted (RFC 1870 SIZE); larger ones get 552 5.3.4. */
      maxMessageSize: size.prefault(26_214_400),
      maxRecipients: z.number().int().positive().default(100),
      /** Sessions closed after this long without a command. */
      socketTimeout: duration.prefault('5m'),
    })
    .prefault({}),

  delivery: z
    .strictObject({
      /** Static next hops per recipient domain; `*` is the default route. Others use DNS MX. */
      routes: z.record(domainName, routeSchema).default({}),
      /** Parallel deliveries (BullMQ worker concurrency) in this process. */
      concurrency: z.number().int().positive().default(10),
      /** Pooled connections per next hop. */
      maxConnectionsPerHost: z.number().int().positive().default(5),
      connectTimeout: duration.prefault('30s'),
      /** Longest wait for any single SMTP reply, including the final reply to DATA. */
      replyTimeout: duration.prefault('5m'),
      retry: z
        .strictObject({
          /** First retry delay; each later one doubles, capped at maxDelay (Postfix-like). */
          firstDelay: duration.prefault('5m'),
          maxDelay: duration.prefault('4h'),
          /** Give up and bounce after this long in the queue. */
          giveUpAfter: duration.prefault('5d'),
          /** Send a delay warning DSN (NOTIFY=DELAY) once a message has waited this long. */
          delayWarningAfter: duration.prefault('4h'),
        })
        .prefault({}),
    })
    .prefault({}),

  queue: z
    .strictObject({
      /** BullMQ job lock: a worker that dies holds its jobs this long before they are retried. */
      lockDuration: duration.prefault('30s'),
      /** How often the spool is compared with Redis and messages without a live job re-queued. */
      recoveryInterval: duration.prefault('5m'),
      /** How long tracking records of finished messages are kept. */
      keepFinishedFor: duration.prefault('30d'),
    })
    .prefault({}),

  directory: z
    .strictObject({
      /**
       * `sqlite`: `<dataDir>/directory.sqlite`, the hosted-mailbox file; `postgres`: shared by
       * several gateway instances.
       */
      backend: z.enum(['sqlite', 'postgres']).default('sqlite'),
      postgres: z
        .strictObject({
          /** `postgres://user:password@host:5432/db`; a password in it is a secret (redacted when printed). */
          url: z.string().min(1).optional(),
          /** Schema holding the directory tables, created if missing. */
          schema: z
            .string()
            .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'lower-case letters, digits and _, at most 63')
            .default('courrier_directory'),
        })
        .prefault({}),
      /** JSON search endpoint (GET /directory/...), off by default. */
      http: z
        .strictObject({
          enabled: z.boolean().default(false),
          host: z.string().default('127.0.0.1'),
          port: port.default(8025),
          /** Bearer token the clients send (`Authorization: Bearer <token>`); required when enabled. */
          token: secretString.optional(),
        })
        .superRefine((h, ctx) => {
          if (h.enabled && h.token === undefined) {
            ctx.addIssue({ code: 'custom', path: ['token'], message: 'required when http.enabled is true' });
          }
          // A guessable token on an endpoint that lists professionals is no protection.
          if (h.token !== undefined && h.token.length < 16) {
            ctx.addIssue({ code: 'custom', path: ['token'], message: 'at least 16 characters' });
          }
        })
        .prefault({}),
    })
    .superRefine((d, ctx) => {
      if (d.backend === 'postgres' && d.postgres.url === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['postgres', 'url'],
          message: 'required when directory.backend is postgres',
        });
      }
    })
    .prefault({}),

  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
});

/** Raw config as written in the file (before defaults and parsing). */
export type ConfigInput = z.input<typeof configSchema>;
/** The validated, fully defaulted configuration. Durations are in ms, sizes in bytes. */
export type Config = z.output<typeof configSchema>;
export type RouteConfig = z.output<typeof routeSchema>;
export type DirectoryConfig = Config['directory'];
