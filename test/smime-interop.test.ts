import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyAndCert } from '../crypto/dev-pki.ts';
import { decrypt, encrypt, sign, verify } from '../crypto/smime.ts';
import {
  issueEcPerson,
  makePki,
  openssl,
  sampleMessage,
  signingKey,
  tempDir,
  type SmimePki,
} from './smime-fixtures.ts';

/**
 * Interoperability with the OpenSSL CLI (`openssl cms`), both directions. The matrix is bounded
 * (sequential, ~40 openssl runs) and listed in docs/smime.md:
 * - encryption: {RSA-OAEP-SHA256, RSA PKCS#1 v1.5} x {AES-128-CBC, AES-256-CBC, AES-256-GCM},
 *   1 recipient each way; 3 recipients for OAEP+GCM and v1.5+CBC each way.
 * - signatures: RSA PKCS#1 v1.5 with SHA-256/384/512, RSA-PSS SHA-256, ECDSA P-256 SHA-256/384,
 *   detached and opaque, each way.
 */

let pki: SmimePki;
let ec: KeyAndCert;
let tmp: ReturnType<typeof tempDir>;
let files: Record<string, string>;
let n = 0;
beforeAll(() => {
  pki = makePki();
  ec = issueEcPerson(pki);
  tmp = tempDir('courrier-smime-interop-');
  files = {
    ca: tmp.file('ca.pem', pki.ca.certPem),
    aliceCert: tmp.file('alice.pem', pki.alice.certPem),
    aliceKey: tmp.file('alice.key', pki.alice.keyPem),
    bobCert: tmp.file('bob.pem', pki.bob.certPem),
    bobKey: tmp.file('bob.key', pki.bob.keyPem),
    carolCert: tmp.file('carol.pem', pki.carol.certPem),
    carolKey: tmp.file('carol.key', pki.carol.keyPem),
    ecCert: tmp.file('ec.pem', ec.certPem),
    ecKey: tmp.file('ec.key', ec.keyPem),
  };
});
afterAll(() => tmp.dispose());

const next = (ext: string) => tmp.file(`m${++n}.${ext}`);
const dk = (k: KeyAndCert) => ({ privateKey: k.keyPem, certificate: k.certPem });
const text = (b: Uint8Array) => Buffer.from(b).toString('utf8');

function opensslOk(args: string[], input?: Uint8Array): Buffer {
  const r = openssl(args, input);
  if (!r.ok) throw new Error(`openssl ${args.slice(0, 2).join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

describe('our signatures verify with openssl cms -verify', () => {
  const cases = [
    { name: 'RSA PKCS#1 v1.5 SHA-256 detached', key: 'alice', digest: 'sha256', detached: true },
    { name: 'RSA PKCS#1 v1.5 SHA-384 detached', key: 'alice', digest: 'sha384', detached: true },
    { name: 'RSA PKCS#1 v1.5 SHA-512 opaque', key: 'alice', digest: 'sha512', detached: false },
    { name: 'RSA-PSS SHA-256 detached', key: 'alice', digest: 'sha256', detached: true, pss: true },
    { name: 'ECDSA P-256 SHA-256 detached', key: 'ec', digest: 'sha256', detached: true },
    { name: 'ECDSA P-256 SHA-384 opaque', key: 'ec', digest: 'sha384', detached: false },
  ] as const;
  for (const c of cases) {
    it(c.name, async () => {
      const signed = await sign({
        message: sampleMessage,
        signingKeys: signingKey(c.key === 'ec' ? ec : pki.alice),
        digest: c.digest,
        detached: c.detached,
        ...('pss' in c ? { rsaPadding: 'pss' as const } : {}),
      });
      const out = opensslOk(['cms', '-verify', '-CAfile', files.ca!, '-purpose', 'smimesign'], signed);
      // The canonical form carries the 8-bit text as base64.
      expect(out.toString('utf8')).toContain(
        'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64',
      );
    });
  }
});

describe('openssl signatures verify with ours', () => {
  const cases = [
    { name: 'SHA-256 detached', args: ['-md', 'sha256'], key: 'alice' },
    { name: 'SHA-384 detached', args: ['-md', 'sha384'], key: 'alice' },
    { name: 'SHA-256 opaque', args: ['-md', 'sha256', '-nodetach'], key: 'alice' },
    {
      name: 'RSA-PSS SHA-256 detached',
      args: ['-md', 'sha256', '-keyopt', 'rsa_padding_mode:pss'],
      key: 'alice',
    },
    { name: 'ECDSA SHA-384 detached', args: ['-md', 'sha384'], key: 'ec' },
  ] as const;
  for (const c of cases) {
    it(c.name, async () => {
      const input = next('txt');
      tmp.file(input.slice(tmp.dir.length + 1), 'Content-Type: text/plain\r\n\r\nBonjour\r\n');
      const cert = c.key === 'ec' ? files.ecCert! : files.aliceCert!;
      const key = c.key === 'ec' ? files.ecKey! : files.aliceKey!;
      // -keyopt applies to the preceding -signer, so the signer comes first.
      const signed = opensslOk(['cms', '-sign', '-in', input, '-signer', cert, '-inkey', key, ...c.args]);
      const r = await verify({ message: signed, trustAnchors: [pki.ca.certPem], expectSigned: true });
      expect(r.valid).toBe(true);
      expect(text(r.content)).toContain('Bonjour');
    });
  }
});

describe('encryption matrix with openssl cms', () => {
  const transports = ['rsa-oaep', 'rsa-pkcs1'] as const;
  const ciphers = [
    { name: 'aes-128-cbc', bits: 128, authenticated: false },
    { name: 'aes-256-cbc', bits: 256, authenticated: false },
    { name: 'aes-256-gcm', bits: 256, authenticated: true },
  ] as const;
  const oaepArgs = [
    '-keyopt',
    'rsa_padding_mode:oaep',
    '-keyopt',
    'rsa_oaep_md:sha256',
    '-keyopt',
    'rsa_mgf1_md:sha256',
  ];

  for (const kt of transports) {
    for (const c of ciphers) {
      const threeRecipients =
        (kt === 'rsa-oaep' && c.name === 'aes-256-gcm') || (kt === 'rsa-pkcs1' && c.name === 'aes-256-cbc');
      const recipients = threeRecipients ? ['alice', 'bob', 'carol'] : ['bob'];
      const label = `${kt} x ${c.name}, ${recipients.length} recipient(s)`;

      it(`ours -> openssl -decrypt: ${label}`, async () => {
        const certs = recipients.map((r) => pki[r as 'alice'].certPem);
        const enc = await encrypt({
          message: sampleMessage,
          encryptionKeys: certs,
          keyTransport: kt,
          aesKeyBits: c.bits,
          authenticated: c.authenticated,
        });
        // The last recipient decrypts with openssl.
        const who = recipients[recipients.length - 1] as 'bob';
        const out = opensslOk(
          ['cms', '-decrypt', '-recip', files[`${who}Cert`]!, '-inkey', files[`${who}Key`]!],
          enc,
        );
        expect(out.toString('utf8')).toContain('Température 38,5 °C.');
      });

      it(`openssl -encrypt -> ours: ${label}`, async () => {
        const input = tmp.file(
          `plain${++n}.txt`,
          'Content-Type: text/plain; charset=utf-8\r\n\r\nCompte rendu\r\n',
        );
        const recipArgs = recipients.flatMap((r) => [
          '-recip',
          files[`${r}Cert`]!,
          ...(kt === 'rsa-oaep' ? oaepArgs : []),
        ]);
        const enc = opensslOk(['cms', '-encrypt', '-in', input, `-${c.name}`, ...recipArgs]);
        for (const r of recipients) {
          const d = await decrypt({ message: enc, decryptionKeys: dk(pki[r as 'alice']) });
          expect(text(d.data)).toContain('Compte rendu');
          expect(d.algorithms).toEqual({ keyTransport: kt, contentEncryption: c.name });
        }
      });
    }
  }

  it('openssl sign+encrypt -> our decrypt+verify, and ours -> openssl decrypt+verify', async () => {
    const input = tmp.file('se.txt', 'Content-Type: text/plain\r\n\r\nSigned then encrypted\r\n');
    const signed = opensslOk([
      'cms',
      '-sign',
      '-in',
      input,
      '-signer',
      files.aliceCert!,
      '-inkey',
      files.aliceKey!,
    ]);
    const enc = opensslOk(['cms', '-encrypt', '-aes-256-gcm', '-recip', files.bobCert!], signed);
    const d = await decrypt({ message: enc, decryptionKeys: dk(pki.bob) });
    const v = await verify({ message: d.data, trustAnchors: [pki.ca.certPem], expectSigned: true });
    expect(text(v.content)).toContain('Signed then encrypted');

    const ours = await encrypt({
      message: await sign({ message: sampleMessage, signingKeys: signingKey(pki.alice) }),
      encryptionKeys: pki.bob.certPem,
      authenticated: true,
    });
    const dec = opensslOk(['cms', '-decrypt', '-recip', files.bobCert!, '-inkey', files.bobKey!], ours);
    const out = opensslOk(['cms', '-verify', '-CAfile', files.ca!], dec);
    expect(out.toString('utf8')).toContain('Content-Transfer-Encoding: base64');
  });
});
