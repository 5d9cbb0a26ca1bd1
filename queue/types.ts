/**
 * Types shared by the spool, the queue worker and the delivery code that the gateway injects.
 * Job data in Redis only ever holds a queue id: message bytes and envelopes stay in the spool.
 */

/** RFC 3461 §4.1 NOTIFY values; `NEVER` stands alone. */
export type DsnNotify = 'SUCCESS' | 'FAILURE' | 'DELAY';

export interface EnvelopeRecipient {
  /** The forward-path as given at RCPT TO (domain lower-cased). */
  address: string;
  /** RFC 3461 NOTIFY; undefined means the default (FAILURE and DELAY, §4.1). */
  notify?: DsnNotify[] | 'NEVER';
  /** RFC 3461 §4.2 ORCPT, as `addr-type;xtext-decoded-address`. */
  orcpt?: string;
}

/** What the SMTP transaction established, written to the spool before the 250. */
export interface Envelope {
  id: string;
  /** Reverse-path; '' is the null sender (bounces), which is never bounced itself. */
  mailFrom: string;
  recipients: EnvelopeRecipient[];
  /** RFC 3461 §4.3 RET and §4.4 ENVID. */
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  /** ms since epoch. */
  receivedAt: number;
  /** Bytes of the stored message. */
  size: number;
  source: {
    listener: 'submission' | 'relay' | 'internal';
    clientIp?: string;
    /** Authenticated submission user (a mailbox address). */
    user?: string;
    tls?: boolean;
  };
}

export type RecipientState = 'queued' | 'inflight' | 'deferred' | 'delivered' | 'bounced' | 'purged';

/** Per-recipient delivery status, kept in the spool and shown by `courrier message status`. */
export interface RecipientStatus {
  address: string;
  state: RecipientState;
  attempts: number;
  lastAttemptAt?: number;
  /** Last reply from the next hop, e.g. `451 4.7.1 try later`, or our own reason. */
  lastReply?: string;
  /** RFC 3463 enhanced status of the last outcome, e.g. `4.4.1`. */
  status?: string;
  remoteMta?: string;
  /** Queue id or message id the next hop gave in its 250 reply. */
  remoteId?: string;
  /** Delivered into a mailbox hosted here (final delivery), not relayed to a next hop. */
  local?: boolean;
  /** A delivery was in flight when the process died: the next hop may already have it. */
  uncertain?: boolean;
  delayNotified?: boolean;
  /** A DSN for the final outcome of this recipient has been queued (or was not requested). */
  reported?: boolean;
  finishedAt?: number;
}

/** Outcome of one delivery attempt for one recipient. */
export interface DeliveryOutcome {
  address: string;
  result: 'delivered' | 'defer' | 'reject';
  /** The remote reply (or our own reason) as one line: `550 5.1.1 <x@y>: user unknown`. */
  reply: string;
  /** RFC 3463 enhanced status code, e.g. `5.1.1`; derived from the reply when the next hop gives none. */
  status: string;
  /** Classification of the failure (zone-mta style), e.g. `recipient`, `network`, `tls`, `policy`. */
  category?: string;
  remoteMta?: string;
  remoteId?: string;
  /**
   * The next hop advertised DSN (RFC 3461) and took our NOTIFY/ORCPT/ENVID/RET parameters, so it
   * reports success itself; when false and NOTIFY has SUCCESS we send a `relayed` DSN (§6.2.1.c).
   * Local deliveries set false (we are the final MTA and report `delivered`).
   */
  dsnPassedOn?: boolean;
  /** True for deliveries into a local mailbox (final delivery: DSN action `delivered`). */
  local?: boolean;
}

export interface DeliveryRequest {
  envelope: Envelope;
  /** Path of the stored message (RFC 5322 bytes, CRLF line endings); stream it, never read it whole. */
  messagePath: string;
  /** The recipients to attempt now (a subset of envelope.recipients). */
  recipients: EnvelopeRecipient[];
}

/** Delivers to next hops or local mailboxes. Implemented in gateway/, injected into the worker. */
export interface Deliverer {
  /** One outcome per requested recipient; never throws for remote failures (they are outcomes). */
  deliver(request: DeliveryRequest): Promise<DeliveryOutcome[]>;
  close(): Promise<void>;
}

/** What a DSN (RFC 3464) reports about one recipient. */
export interface DsnRecipientReport {
  recipient: EnvelopeRecipient;
  action: 'failed' | 'delayed' | 'delivered' | 'relayed' | 'expanded';
  /** RFC 3463 status, e.g. `5.1.1`. */
  status: string;
  remoteMta?: string;
  /** The remote reply or our reason (goes into Diagnostic-Code: smtp; ...). */
  diagnostic?: string;
  lastAttemptAt?: number;
  /** For delayed: when we give up. */
  willRetryUntil?: number;
}

/** Builds and queues DSNs to the original sender. Implemented in gateway/, injected into the worker. */
export interface Notifier {
  /** Queues a DSN for these recipients of the message (never for the null sender). */
  report(envelope: Envelope, messagePath: string, reports: DsnRecipientReport[]): Promise<void>;
}

/** The mutable delivery state of a queued message (one file in the spool, rewritten atomically). */
export interface MessageState {
  id: string;
  /** Delivery attempts made so far (the number of times the worker ran deliveries). */
  attempt: number;
  /** When the next attempt is due (ms since epoch); absent before the first attempt. */
  nextAttemptAt?: number;
  recipients: RecipientStatus[];
  updatedAt: number;
}

/** Admin decisions about a queued message (written by the CLI, read by the worker). */
export interface MessageControl {
  held?: boolean;
  purge?: boolean;
  /** Attempt again as soon as the running attempt ends (admin `retry`/`release` during one). */
  retryNow?: boolean;
  /** Who asked and when, for the audit log. */
  by?: string;
  at?: number;
}

/** What is kept of a message once every recipient is final (no message bytes). */
export interface FinishedRecord {
  id: string;
  envelope: Envelope;
  state: MessageState;
  finishedAt: number;
  /** Why the message left the queue: every recipient final, or purged by an admin. */
  reason: 'final' | 'purged';
}
