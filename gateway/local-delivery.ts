import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { DeliveryOutcome, Envelope, EnvelopeRecipient } from '../queue/types.ts';

/** Final delivery into mailboxes hosted here. */
export interface LocalDelivery {
  /** Never throws: an unknown mailbox is a `reject`, a disk problem a `defer`. */
  deliver(envelope: Envelope, messagePath: string, recipient: EnvelopeRecipient): Promise<DeliveryOutcome>;
}

export interface LocalDeliveryOptions {
  /** Root of the Maildirs: `<mailboxesDir>/<domain>/<localpart>/{tmp,new,cur}`. */
  mailboxesDir: string;
  /** Whether a mailbox exists for this address (the directory decides). */
  isHosted: (address: string) => boolean;
  /** Our name, used in Maildir file names. */
  hostname: string;
}

// RFC 5322 dot-atom: no quoted local parts, no leading, trailing or doubled dots, so a local
// part can never be `.`, `..` or contain a path separator.
const DOT_ATOM = /^[a-z0-9!#$%&'*+=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+=?^_`{|}~-]+)*$/i;
const DOMAIN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** Splits and checks an address for use as a mailbox path; null when it cannot be one. */
export function mailboxPathParts(address: string): { localPart: string; domain: string } | null {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return null;
  const localPart = address.slice(0, at).toLowerCase();
  const domain = address.slice(at + 1).toLowerCase();
  if (localPart.length > 64 || domain.length > 253) return null;
  if (!DOT_ATOM.test(localPart) || !DOMAIN.test(domain)) return null;
  return { localPart, domain };
}

/**
 * The Maildir file name for (queue id, recipient): the same on every attempt, so a delivery
 * repeated after a crash finds the message already there. The address is hashed: file names
 * show up in listings and logs. `:` and `/` never occur (Maildir reserves them).
 */
export function maildirFileName(queueId: string, address: string, hostname: string): string {
  const rcpt = createHash('sha256').update(address.toLowerCase()).digest('hex').slice(0, 16);
  const safe = (s: string): string => s.replace(/[^A-Za-z0-9_-]/g, '_');
  return `${safe(queueId)}.${rcpt}.${safe(hostname)}`;
}

function outcome(
  address: string,
  result: DeliveryOutcome['result'],
  reply: string,
  status: string,
  extra: Partial<DeliveryOutcome> = {},
): DeliveryOutcome {
  return { address, result, reply, status, local: true, dsnPassedOn: false, ...extra };
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** A mail reader moves messages from new/ to cur/ and appends `:2,<flags>` to the name. */
async function inCur(curDir: string, name: string): Promise<boolean> {
  let dir;
  try {
    dir = await fs.opendir(curDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  for await (const entry of dir) {
    if (entry.name === name || entry.name.startsWith(`${name}:`)) return true;
  }
  return false;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Maildir delivery (https://cr.yp.to/proto/maildir.html): write to tmp/, fsync, link into new/
 * (link, not rename: it fails instead of overwriting when the name exists), fsync new/.
 * `Return-Path:` (RFC 5321 §4.4) and `Delivered-To:` are prepended.
 */
export function createLocalDelivery(opts: LocalDeliveryOptions): LocalDelivery {
  const root = path.resolve(opts.mailboxesDir);

  return {
    async deliver(envelope, messagePath, recipient) {
      const address = recipient.address;
      const parts = mailboxPathParts(address);
      if (!parts) {
        return outcome(address, 'reject', `553 5.1.3 mailbox name not allowed`, '5.1.3', {
          category: 'recipient',
        });
      }
      if (!opts.isHosted(address)) {
        return outcome(address, 'reject', `550 5.1.1 no such mailbox here`, '5.1.1', {
          category: 'recipient',
        });
      }
      // Envelope addresses come from SMTP commands and cannot hold line breaks; a header
      // built from them must not either.
      if (/[\r\n]/.test(envelope.mailFrom) || /[\r\n]/.test(address)) {
        return outcome(address, 'reject', `501 5.1.7 bad address syntax`, '5.1.7', { category: 'recipient' });
      }

      const mailbox = path.join(root, parts.domain, parts.localPart);
      // Belt and braces: the checks above already keep the path inside the root.
      if (!mailbox.startsWith(root + path.sep)) {
        return outcome(address, 'reject', `553 5.1.3 mailbox name not allowed`, '5.1.3', {
          category: 'recipient',
        });
      }
      const name = maildirFileName(envelope.id, address, opts.hostname);
      const newPath = path.join(mailbox, 'new', name);
      const delivered = (again: boolean): DeliveryOutcome =>
        outcome(
          address,
          'delivered',
          `250 2.0.0 delivered to mailbox${again ? ' (already there)' : ''}`,
          '2.0.0',
          {
            remoteId: name,
          },
        );

      let tmpPath: string | undefined;
      try {
        if ((await exists(newPath)) || (await inCur(path.join(mailbox, 'cur'), name))) return delivered(true);
        for (const sub of ['tmp', 'new', 'cur']) {
          await fs.mkdir(path.join(mailbox, sub), { recursive: true, mode: 0o700 });
        }
        tmpPath = path.join(mailbox, 'tmp', `${name}.${process.pid}.${randomBytes(6).toString('hex')}`);
        const fh = await fs.open(tmpPath, 'wx', 0o600);
        try {
          const trace = `Return-Path: <${envelope.mailFrom}>\r\nDelivered-To: ${address}\r\n`;
          await fh.write(Buffer.from(trace, 'utf8'));
          // Streamed chunk by chunk: a message is never held whole in memory.
          for await (const chunk of createReadStream(messagePath)) await fh.write(chunk as Buffer);
          await fh.sync();
        } finally {
          await fh.close();
        }
        try {
          await fs.link(tmpPath, newPath);
        } catch (err) {
          // Another attempt for the same (queue id, recipient) won the race: one copy only.
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          await fs.unlink(tmpPath);
          tmpPath = undefined;
          return delivered(true);
        }
        await fs.unlink(tmpPath);
        tmpPath = undefined;
        await fsyncDir(path.join(mailbox, 'new'));
        return delivered(false);
      } catch (err) {
        // Best-effort cleanup; the error that matters is `err`, reported below. A leftover tmp/
        // file is harmless (Maildir readers ignore tmp/).
        if (tmpPath) await fs.rm(tmpPath, { force: true }).catch(() => undefined);
        const code = (err as NodeJS.ErrnoException).code ?? 'error';
        // A full disk is the mail system's storage (RFC 3463 X.3.1); anything else is a local
        // error in processing (X.3.0). Both are temporary.
        const status = code === 'ENOSPC' || code === 'EDQUOT' ? '4.3.1' : '4.3.0';
        return outcome(address, 'defer', `451 ${status} local delivery failed: ${code}`, status, {
          category: 'other',
        });
      }
    },
  };
}
