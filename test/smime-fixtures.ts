import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCrl } from '../crypto/cert-crl.ts';
import { parseCertificate } from '../crypto/cert-path.ts';
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

/** Eve: a mail certificate with an EC P-256 key (the ECDSA paths), from the test CA. */
export function issueEcPerson(pki: SmimePki): KeyAndCert {
  return issueCertificate(pki.ca, {
    commonName: 'Eve EC',
    emailAddresses: ['eve@example.org'],
    usage: 'email',
    keyType: 'ec-p256',
  });
}

/** A DER CRL by the test CA listing `revoked` as revoked a day ago (update times as given or default). */
export function crlRevoking(
  pki: SmimePki,
  revoked: KeyAndCert[],
  updates: { thisUpdate?: Date; nextUpdate?: Date } = {},
): Buffer {
  return createCrl({
    ca: pki.ca,
    caInfo: parseCertificate(pki.ca.certPem),
    revoked: revoked.map((k) => ({
      serial: parseCertificate(k.certPem).serial,
      date: new Date(Date.now() - 86_400_000),
    })),
    ...updates,
  });
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

/**
 * Issues a certificate with the openssl CLI, for shapes the dev PKI refuses to make (RSA-1024,
 * SHA-1 signatures, odd extensions). `ext` is an openssl extension section body.
 */
export function opensslIssue(
  ca: KeyAndCert,
  opts: { commonName: string; bits?: number; md?: string; ext?: string },
): KeyAndCert {
  const t = tempDir('courrier-smime-issue-');
  try {
    const caCert = t.file('ca.pem', ca.certPem);
    const caKey = t.file('ca.key', ca.keyPem);
    const key = t.file('leaf.key');
    const csr = t.file('leaf.csr');
    const cert = t.file('leaf.pem');
    const ext = t.file(
      'ext.cnf',
      `[v3]\n${opts.ext ?? 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection'}\n`,
    );
    const run = (args: string[]) => {
      const r = openssl(args);
      if (!r.ok) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
    };
    run(['genpkey', '-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${opts.bits ?? 2048}`, '-out', key]);
    run(['req', '-new', '-key', key, '-subj', `/CN=${opts.commonName}`, '-out', csr]);
    run([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      caCert,
      '-CAkey',
      caKey,
      '-set_serial',
      String(Date.now()),
      '-days',
      '30',
      `-${opts.md ?? 'sha256'}`,
      '-extfile',
      ext,
      '-extensions',
      'v3',
      '-out',
      cert,
    ]);
    return { keyPem: readFileSync(key, 'utf8'), certPem: readFileSync(cert, 'utf8') };
  } finally {
    t.dispose();
  }
}

/** Signs with the openssl CLI (any digest, any certificate: openssl does not check purpose here). */
export function opensslSign(signer: KeyAndCert, content: string, args: string[] = []): Buffer {
  const t = tempDir('courrier-smime-sign-');
  try {
    const r = openssl([
      'cms',
      '-sign',
      '-in',
      t.file('in.txt', content),
      '-signer',
      t.file('s.pem', signer.certPem),
      '-inkey',
      t.file('s.key', signer.keyPem),
      ...args,
    ]);
    if (!r.ok) throw new Error(`openssl cms -sign failed: ${r.stderr}`);
    return r.stdout;
  } finally {
    t.dispose();
  }
}

/** One line of an openssl CA `index.txt` (the responder's database), for `opensslOcspRespond`. */
export function ocspIndexLine(certPem: string, status: 'V' | { revokedAt: Date; reason?: string }): string {
  const cert = new X509Certificate(certPem);
  const stamp = (d: Date) => d.toISOString().slice(2, 19).replace(/[-:T]/g, '') + 'Z';
  const revoked =
    status === 'V'
      ? ''
      : `${stamp(status.revokedAt)}${status.reason === undefined ? '' : `,${status.reason}`}`;
  return [
    status === 'V' ? 'V' : 'R',
    stamp(cert.validToDate),
    revoked,
    cert.serialNumber.toUpperCase(),
    'unknown',
    '/' + cert.subject.split('\n').join('/'),
  ].join('\t');
}

/**
 * Answers an OCSP request with the `openssl ocsp` responder in one-shot mode (request and
 * response as files, no network): `index` is the openssl CA database, `signer` the responder
 * (the CA itself or a delegated responder), `args` extra flags (`-ndays 1`, `-rmd sha1`,
 * `-resp_key_id`, `-resp_no_certs`...).
 */
export function opensslOcspRespond(opts: {
  ca: KeyAndCert;
  signer: KeyAndCert;
  index: string[];
  request: Uint8Array;
  args?: string[];
}): Buffer {
  const t = tempDir('courrier-ocsp-');
  try {
    const out = t.file('resp.der');
    const r = openssl([
      'ocsp',
      '-index',
      t.file('index.txt', opts.index.map((l) => l + '\n').join('')),
      '-CA',
      t.file('ca.pem', opts.ca.certPem),
      '-rsigner',
      t.file('rsigner.pem', opts.signer.certPem),
      '-rkey',
      t.file('rsigner.key', opts.signer.keyPem),
      '-reqin',
      t.file('req.der', opts.request),
      '-respout',
      out,
      ...(opts.args ?? ['-ndays', '1']),
    ]);
    if (!r.ok) throw new Error(`openssl ocsp failed: ${r.stderr}`);
    return readFileSync(out);
  } finally {
    t.dispose();
  }
}
