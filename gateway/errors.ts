/**
 * The one catalogue of errors the gateway answers with (fastify lib/errors.js is the model).
 * Each entry has its SMTP reply code, its RFC 3463 enhanced status code, whether the client may
 * retry (4xx) and a one-line meaning. docs/errors.md lists the same table; test/errors.test.ts
 * keeps the two in sync. `toSmtpReply` is the one function that turns any error into a reply:
 * anything not in the catalogue is a temporary `451 4.3.0`, never smtp-server's default 550/554.
 */

export interface ErrorSpec {
  /** SMTP reply code (RFC 5321 §4.2). */
  code: number;
  /** Enhanced status code (RFC 3463). */
  enhanced: string;
  /** Text sent to the client. */
  message: string;
}

export const ERRORS = {
  // Connection and session
  // Sent by smtp-server itself when the gateway stops (its text and code; listed for the docs).
  SHUTTING_DOWN: { code: 421, enhanced: '4.4.2', message: 'Server shutting down' },
  TLS_REQUIRED: { code: 530, enhanced: '5.7.0', message: 'Must issue a STARTTLS command first' },
  CLIENT_CERT_REQUIRED: {
    code: 530,
    enhanced: '5.7.0',
    message: 'A client certificate trusted by this gateway is required on this port',
  },
  AUTH_REQUIRED: { code: 530, enhanced: '5.7.0', message: 'Authentication required' },
  AUTH_FAILED: { code: 535, enhanced: '5.7.8', message: 'Authentication credentials invalid' },
  AUTH_TEMPORARY: {
    code: 454,
    enhanced: '4.7.0',
    message: 'Temporary authentication failure, try again later',
  },
  AUTH_THROTTLED: {
    code: 454,
    enhanced: '4.7.0',
    message: 'Too many failed authentications from this address, try again later',
  },
  // Envelope
  SENDER_NOT_OWNED: {
    code: 550,
    enhanced: '5.7.1',
    message: 'Sender address rejected: not owned by the authenticated mailbox',
  },
  RELAY_DENIED: {
    code: 550,
    enhanced: '5.7.1',
    message: 'Relay access denied: recipient is not hosted here',
  },
  RECIPIENT_UNKNOWN: {
    code: 550,
    enhanced: '5.1.1',
    message: 'Recipient address rejected: no such mailbox here',
  },
  RECIPIENT_SYNTAX: { code: 553, enhanced: '5.1.3', message: 'Recipient address syntax not accepted' },
  // Sent by smtp-server itself past smtp.maxRecipients (RFC 5321 §4.5.3.1.10: 452, not 552).
  TOO_MANY_RECIPIENTS: { code: 452, enhanced: '4.5.3', message: 'Error: too many recipients' },
  DIRECTORY_UNAVAILABLE: {
    code: 451,
    enhanced: '4.4.3',
    message: 'Directory temporarily unavailable, try again later',
  },
  // Message data
  MESSAGE_TOO_BIG: {
    code: 552,
    enhanced: '5.3.4',
    message: 'Message exceeds the maximum size of this gateway',
  },
  BARE_LINE_ENDING: {
    code: 554,
    enhanced: '5.6.0',
    message: 'Bare LF or CR in message data is not allowed, use CRLF (RFC 5321 §2.3.8)',
  },
  // Storage and queue
  QUEUE_UNAVAILABLE: {
    code: 451,
    enhanced: '4.3.0',
    message: 'Queue temporarily unavailable, try again later',
  },
  SPOOL_FULL: { code: 452, enhanced: '4.3.1', message: 'Insufficient system storage, try again later' },
  LOCAL_ERROR: { code: 451, enhanced: '4.3.0', message: 'Local error in processing, try again later' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorName = keyof typeof ERRORS;

/** An error that carries its SMTP reply. smtp-server reads `responseCode`. */
export class SmtpError extends Error {
  override readonly name = 'SmtpError';
  readonly errorName: ErrorName;
  readonly responseCode: number;
  readonly enhanced: string;

  constructor(errorName: ErrorName, detail?: string, options?: { cause?: unknown }) {
    const spec: ErrorSpec = ERRORS[errorName];
    // The enhanced code leads the text; gateway/smtp-replies.ts sends it as the reply's code.
    super(`${spec.enhanced} ${detail ? `${spec.message}: ${detail}` : spec.message}`, options);
    this.errorName = errorName;
    this.responseCode = spec.code;
    this.enhanced = spec.enhanced;
  }

  get temporary(): boolean {
    return this.responseCode < 500;
  }
}

/** Builds the catalogue error `name`, optionally with a short detail (never patient data). */
export function smtpError(name: ErrorName, detail?: string, cause?: unknown): SmtpError {
  return new SmtpError(name, detail, cause === undefined ? undefined : { cause });
}

/** Any error → the error smtp-server should answer with; unknown errors become `451 4.3.0`. */
export function toSmtpReply(err: unknown): SmtpError {
  if (err instanceof SmtpError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return smtpError('SPOOL_FULL', undefined, err);
  return smtpError('LOCAL_ERROR', undefined, err);
}
