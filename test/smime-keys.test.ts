import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { issueCertificate, type KeyAndCert } from '../crypto/dev-pki.ts';
import { loadPem, loadPkcs12 } from '../crypto/smime-keys.ts';
import { sign, verify } from '../crypto/smime.ts';
import { makePki, openssl, tempDir, type SmimePki } from './smime-fixtures.ts';

let pki: SmimePki;
let ec: KeyAndCert;
let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  pki = makePki();
  ec = issueCertificate(pki.ca, { commonName: 'Eve EC', usage: 'email', keyType: 'ec-p256' });
  tmp = tempDir('courrier-smime-keys-');
});
afterAll(() => tmp.dispose());

function p12(k: KeyAndCert, pass: string, extra: string[] = []): Buffer {
  const r = openssl([
    'pkcs12',
    '-export',
    '-inkey',
    tmp.file(`k${pass}.key`, k.keyPem),
    '-in',
    tmp.file(`c${pass}.pem`, k.certPem),
    '-certfile',
    tmp.file('ca.pem', pki.ca.certPem),
    '-passout',
    `pass:${pass}`,
    ...extra,
  ]);
  if (!r.ok) throw new Error(r.stderr);
  return r.stdout;
}

describe('key store', () => {
  it('loads keys and certificates from PEM, encrypted keys with their passphrase', () => {
    const m = loadPem(pki.alice.keyPem + pki.alice.certPem + pki.ca.certPem);
    expect(m.privateKeys).toHaveLength(1);
    expect(m.certificates).toHaveLength(2);
    const encrypted = m.privateKeys[0]!.export({
      type: 'pkcs8',
      format: 'pem',
      cipher: 'aes-256-cbc',
      passphrase: 's3cret',
    }).toString();
    expect(loadPem(encrypted, 's3cret').privateKeys).toHaveLength(1);
    expect(() => loadPem(encrypted)).toThrow(expect.objectContaining({ code: 'passphrase-required' }));
    const err = (() => {
      try {
        loadPem(encrypted, 'hunter2');
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    expect(err).toMatchObject({ code: 'passphrase-required' });
    expect(err!.message).not.toContain('hunter2');
    expect(() => loadPem('nothing here')).toThrow(expect.objectContaining({ code: 'malformed' }));
  });

  it('loads an openssl PKCS#12 (AES-256/PBKDF2, SHA-256 MAC) for RSA and EC, and signs with it', async () => {
    for (const k of [pki.alice, ec]) {
      const m = loadPkcs12(p12(k, 'pa55'), 'pa55');
      expect(m.certificate.checkPrivateKey(m.privateKey)).toBe(true);
      expect(m.chain.map((c) => c.subject)).toEqual([expect.stringContaining('Courrier Test S/MIME CA')]);
      const signed = await sign({
        message: 'x',
        signingKeys: { privateKey: m.privateKey, certificate: m.certificate, chain: m.chain },
      });
      expect((await verify({ message: signed, trustAnchors: [pki.ca.certPem] })).valid).toBe(true);
    }
  });

  it('a wrong PKCS#12 passphrase is passphrase-required, and says nothing of the passphrase or key', () => {
    const bundle = p12(pki.alice, 'right');
    try {
      loadPkcs12(bundle, 'guess');
      expect.unreachable();
    } catch (e) {
      expect(e).toMatchObject({ code: 'passphrase-required' });
      expect((e as Error).message).not.toMatch(/guess|right|BEGIN/);
    }
    expect(() => loadPkcs12(Buffer.from('not a p12'), 'x')).toThrow(
      expect.objectContaining({ code: 'malformed' }),
    );
  });
});
