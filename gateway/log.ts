import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The process logger. JSON lines on stdout; one child per SMTP session and per job, joined by the
 * queue id. Never log bodies, subjects or attachment names: sizes, counts, domains and ids only.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'courrier' },
      redact: { paths: ['*.password', '*.pass', '*.key', 'password', 'pass'], censor: '[redacted]' },
    },
    destination as pino.DestinationStream | undefined,
  );
}
