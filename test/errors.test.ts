import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERRORS, SmtpError, smtpError, toSmtpReply } from '../gateway/errors.ts';

const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');

describe('error catalogue', () => {
  it('documents every entry with its codes in docs/errors.md, and nothing else', () => {
    const rows = [...doc.matchAll(/^\|\s*`([A-Z_]+)`\s*\|\s*(\d{3})\s*\|\s*(\d\.\d+\.\d+)\s*\|/gm)].map(
      (m) => [m[1], Number(m[2]), m[3]],
    );
    expect(rows).toEqual(Object.entries(ERRORS).map(([name, spec]) => [name, spec.code, spec.enhanced]));
  });

  it('keeps reply class and enhanced class consistent (RFC 3463 §3.1)', () => {
    for (const [name, spec] of Object.entries(ERRORS)) {
      expect(spec.enhanced[0], name).toBe(String(spec.code)[0]);
    }
  });

  it('puts the enhanced code at the head of the message and sets responseCode', () => {
    const e = smtpError('RELAY_DENIED');
    expect(e).toBeInstanceOf(SmtpError);
    expect(e.responseCode).toBe(550);
    expect(e.message).toBe('5.7.1 Relay access denied: recipient is not hosted here');
    expect(e.temporary).toBe(false);
    expect(smtpError('QUEUE_UNAVAILABLE').temporary).toBe(true);
  });

  it('turns unknown errors into a temporary 451 4.3.0 and keeps the cause', () => {
    const cause = new Error('boom');
    const e = toSmtpReply(cause);
    expect(e.responseCode).toBe(451);
    expect(e.enhanced).toBe('4.3.0');
    expect(e.cause).toBe(cause);
    expect(toSmtpReply('a string').responseCode).toBe(451);
  });

  it('maps a full disk to 452 4.3.1', () => {
    const err = Object.assign(new Error('no space'), { code: 'ENOSPC' });
    expect(toSmtpReply(err).enhanced).toBe('4.3.1');
    expect(toSmtpReply(err).responseCode).toBe(452);
  });
});
