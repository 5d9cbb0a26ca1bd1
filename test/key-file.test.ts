import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueCertificate } from '../crypto/dev-pki.ts';
import { openSqliteDirectory } from '../directory/index.ts';
import { detectKeyFormat, KeyFileError, parseKeyData, readKeyFile } from '../directory/key-file.ts';
import { testPki } from './helpers/pki.ts';

const ADDRESS = 'maelle.michel4@ch-exemple.mssante.fr';
let dir: string;
let pgp: { publicKey: string; privateKey: string; fingerprint: string };
let pgpExpired: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'courrier-keyfile-'));
  const k = await openpgp.generateKey({
    type: 'ecc',
    curve: 'curve25519Legacy',
    userIDs: [{ name: 'Maëlle Michel', email: 'Maelle.Michel4@ch-exemple.mssante.fr' }],
    format: 'armored',
  });
  const key = await openpgp.readKey({ armoredKey: k.publicKey });
  pgp = { publicKey: k.publicKey, privateKey: k.privateKey, fingerprint: key.getFingerprint().toUpperCase() };
  const old = await openpgp.generateKey({
    type: 'ecc',
    curve: 'curve25519Legacy',
    userIDs: [{ email: ADDRESS }],
    date: new Date(Date.now() - 10 * 86_400_000),
    keyExpirationTime: 86_400,
    format: 'armored',
  });
  pgpExpired = old.publicKey;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function emailCert(emails: string[], opts: { validFrom?: Date; validDays?: number } = {}) {
  return issueCertificate(testPki().ca, {
    commonName: 'Maëlle Michel',
    emailAddresses: emails,
    usage: 'email',
    keyType: 'ec-p256',
    ...opts,
  });
}

const bytes = (s: string) => new TextEncoder().encode(s);
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('detectKeyFormat', () => {
  it('tells certificates, OpenPGP keys and private keys apart', async () => {
    const cert = emailCert([ADDRESS]);
    expect(detectKeyFormat(bytes(cert.certPem))).toBe('smime');
    expect(detectKeyFormat(new X509Certificate(cert.certPem).raw)).toBe('smime');
    expect(detectKeyFormat(bytes(cert.keyPem))).toBe('private');
    expect(detectKeyFormat(bytes(pgp.publicKey))).toBe('openpgp');
    expect(detectKeyFormat(bytes(pgp.privateKey))).toBe('private');
    const binary = (await openpgp.readKey({ armoredKey: pgp.publicKey })).write();
    expect(detectKeyFormat(binary)).toBe('openpgp');
    const binaryPrivate = (await openpgp.readPrivateKey({ armoredKey: pgp.privateKey })).write();
    expect(detectKeyFormat(binaryPrivate)).toBe('private');
    expect(detectKeyFormat(bytes('hello'))).toBeUndefined();
  });
});

describe('S/MIME certificates', () => {
  it('reads a PEM certificate: validity, e-mail, fingerprint the store uses', async () => {
    const cert = emailCert([ADDRESS]);
    const r = await parseKeyData(bytes(cert.certPem), { address: ADDRESS.toUpperCase() });
    const x = new X509Certificate(cert.certPem);
    expect(r).toMatchObject({
      format: 'smime',
      emails: [ADDRESS],
      notBefore: x.validFromDate.getTime(),
      notAfter: x.validToDate.getTime(),
      warnings: [],
    });
    expect(r.identity).toContain('CN=Maëlle Michel');
    expect(r.fingerprint).toBe(sha256(r.data));

    const store = await openSqliteDirectory(join(dir, 'keys.sqlite'));
    try {
      const saved = await store.attachKey(ADDRESS, { ...r, preferred: true });
      expect(saved.fingerprint).toBe(r.fingerprint);
      expect(await store.keysFor(ADDRESS)).toHaveLength(1);
    } finally {
      await store.close();
    }
  });

  it('reads DER, keeps the first of several PEM certificates, and warns', async () => {
    const cert = emailCert(['autre@ch-exemple.mssante.fr']);
    const der = new X509Certificate(cert.certPem).raw;
    const fromDer = await parseKeyData(der, { address: ADDRESS });
    expect(Buffer.from(fromDer.data).equals(der)).toBe(true);
    expect(fromDer.warnings).toEqual([`the certificate is for autre@ch-exemple.mssante.fr, not ${ADDRESS}`]);

    const chain = await parseKeyData(bytes(`${cert.certPem}\n${testPki().server.certPem}`));
    expect(new X509Certificate(Buffer.from(chain.data)).fingerprint256).toBe(
      new X509Certificate(cert.certPem).fingerprint256,
    );
    expect(chain.warnings).toEqual([
      'the file holds 2 certificates: the first one was taken (the chain is not stored)',
    ]);
  });

  it('warns about an expired certificate, one not for e-mail, and one without address', async () => {
    const expired = emailCert([ADDRESS], {
      validFrom: new Date(Date.now() - 20 * 86_400_000),
      validDays: 10,
    });
    const r = await parseKeyData(bytes(expired.certPem), { address: ADDRESS });
    expect(r.warnings).toEqual([expect.stringMatching(/^expired on \d{4}-/)]);

    const server = await parseKeyData(bytes(testPki().server.certPem), { address: ADDRESS });
    expect(server.warnings).toEqual([
      'the certificate is not for e-mail (no emailProtection extended key usage)',
      `the certificate names no e-mail address (expected ${ADDRESS})`,
    ]);
  });

  it('refuses private keys, CA certificates and garbage with a clear error', async () => {
    const cert = emailCert([ADDRESS]);
    await expect(parseKeyData(bytes(cert.keyPem))).rejects.toThrow(/this is a private key/);
    await expect(parseKeyData(bytes(`${cert.keyPem}${cert.certPem}`))).rejects.toThrow(
      /this is a private key/,
    );
    await expect(parseKeyData(bytes(testPki().ca.certPem))).rejects.toThrow(/this is a CA certificate/);
    await expect(parseKeyData(bytes('hello'))).rejects.toThrow(
      'neither a certificate (PEM or DER) nor an OpenPGP public key (armored or binary)',
    );
    await expect(parseKeyData(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]))).rejects.toThrow(
      /not a readable X\.509 certificate/,
    );
    // A forced format that does not match the content.
    await expect(parseKeyData(bytes(cert.certPem), { format: 'openpgp' })).rejects.toThrow(
      /not a readable OpenPGP public key/,
    );
  });
});

describe('OpenPGP keys', () => {
  it('reads an armored and a binary public key', async () => {
    const r = await parseKeyData(bytes(pgp.publicKey), { address: ADDRESS });
    expect(r).toMatchObject({
      format: 'openpgp',
      emails: [ADDRESS],
      keyFingerprint: pgp.fingerprint,
      warnings: [],
    });
    expect(r.notAfter).toBeUndefined();
    expect(r.identity).toBe('Maëlle Michel <Maelle.Michel4@ch-exemple.mssante.fr>');
    const binary = (await openpgp.readKey({ armoredKey: pgp.publicKey })).write();
    const b = await parseKeyData(binary, { address: 'autre@example.fr' });
    expect(b.keyFingerprint).toBe(pgp.fingerprint);
    expect(b.warnings).toEqual([`the key is for ${ADDRESS}, not autre@example.fr`]);
  });

  it('warns about an expired key and refuses a private one', async () => {
    const r = await parseKeyData(bytes(pgpExpired), { address: ADDRESS });
    expect(r.notAfter).toBeLessThan(Date.now());
    expect(r.warnings[0]).toMatch(/^expired on /);
    await expect(parseKeyData(bytes(pgp.privateKey))).rejects.toThrow(/this is a private key/);
    const binaryPrivate = (await openpgp.readPrivateKey({ armoredKey: pgp.privateKey })).write();
    await expect(parseKeyData(binaryPrivate, { format: 'openpgp' })).rejects.toThrow(/this is a private key/);
  });
});

describe('readKeyFile', () => {
  it('names the file in its errors', async () => {
    const file = join(dir, 'private.asc');
    writeFileSync(file, pgp.privateKey);
    await expect(readKeyFile(file)).rejects.toThrow(`${file}: this is a private key`);
    await expect(readKeyFile(join(dir, 'none.pem'))).rejects.toThrow(KeyFileError);
    await expect(readKeyFile(join(dir, 'none.pem'))).rejects.toThrow(/cannot read .*none\.pem: ENOENT/);
  });
});
