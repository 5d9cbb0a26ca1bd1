import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, issueCertificate, type IssueOptions, type KeyAndCert } from '../crypto/dev-pki.ts';

/**
 * Shared set-up of the S/MIME tests: a small PKI generated once per test file (RSA 2048 key
 * generation costs ~100 ms each, so keep the list short) and an `openssl` runner over temp files.
 */

export interface SmimePki {
  ca: KeyAndCert;
  alice: KeyAndCert;
  bob: KeyAndCert;
  carol: KeyAndCert;
}

export function makePki(): SmimePki {
  const ca = createCa({ commonName: 'Courrier Test S/MIME CA', organization: 'Courrier' });
  const person = (name: string, extra: Partial<IssueOptions> = {}) =>
    issueCertificate(ca, {
      commonName: name,
      emailAddresses: [`${name.toLowerCase()}@example.org`],
      usage: 'email',
      ...extra,
    });
  return { ca, alice: person('Alice'), bob: person('Bob'), carol: person('Carol') };
}

export function signingKey(k: KeyAndCert): { privateKey: string; certificate: string } {
  return { privateKey: k.keyPem, certificate: k.certPem };
}

export const sampleMessage =
  'From: Dr Alice <alice@example.org>\r\n' +
  'To: Dr Bob <bob@example.org>\r\n' +
  'Subject: Lettre de liaison\r\n' +
  'Content-Type: text/plain; charset=utf-8\r\n' +
  'Content-Transfer-Encoding: 8bit\r\n' +
  '\r\n' +
  'Cher confrère,\r\nCompte rendu ci-joint. Température 38,5 °C.\r\n';

/** A temp folder for openssl files; `dispose` removes it. */
export function tempDir(prefix: string): {
  dir: string;
  file: (name: string, content?: string | Uint8Array) => string;
  dispose: () => void;
} {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return {
    dir,
    file: (name, content) => {
      const path = join(dir, name);
      if (content !== undefined) writeFileSync(path, content);
      return path;
    },
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Runs the openssl CLI; returns status, stdout bytes and stderr text. */
export function openssl(args: string[], input?: Uint8Array): { ok: boolean; stdout: Buffer; stderr: string } {
  const r = spawnSync('openssl', args, { input, maxBuffer: 64 * 1024 * 1024 });
  return { ok: r.status === 0, stdout: r.stdout, stderr: r.stderr.toString() };
}

export function readBytes(path: string): Buffer {
  return readFileSync(path);
}
