import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { CryptoError } from './types.ts';

/**
 * Key store helpers for S/MIME: private keys and certificates from PEM files and PKCS#12
 * (.p12/.pfx) bundles. Keys come back as `KeyObject`s, which never print their material
 * (`String(key)` is `[object KeyObject]`); errors name the problem, never the key or passphrase.
 * PKCS#12 is decoded by node-forge (OpenSSL 3 loads it only through the CLI), keys are then
 * handed to node:crypto.
 */

export interface PemMaterial {
  privateKeys: KeyObject[];
  certificates: X509Certificate[];
}

export interface Pkcs12Material {
  privateKey: KeyObject;
  /** The certificate matching the private key. */
  certificate: X509Certificate;
  /** The other certificates of the bundle (usually the issuing CAs). */
  chain: X509Certificate[];
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/** Reads every certificate and private key of a PEM text (encrypted keys need `passphrase`). */
export function loadPem(text: string, passphrase?: string): PemMaterial {
  const out: PemMaterial = { privateKeys: [], certificates: [] };
  for (const m of text.matchAll(PEM_BLOCK)) {
    const label = m[1]!;
    const block = m[0];
    if (label === 'CERTIFICATE') {
      try {
        out.certificates.push(new X509Certificate(block));
      } catch (cause) {
        throw new CryptoError(
          'malformed',
          `PEM: certificate #${out.certificates.length + 1} could not be parsed`,
          { cause },
        );
      }
    } else if (label.endsWith('PRIVATE KEY')) {
      const encrypted = label === 'ENCRYPTED PRIVATE KEY' || /Proc-Type: 4,ENCRYPTED/.test(block);
      if (encrypted && passphrase === undefined) {
        throw new CryptoError(
          'passphrase-required',
          'PEM: the private key is encrypted and no passphrase was given',
        );
      }
      try {
        out.privateKeys.push(createPrivateKey(passphrase === undefined ? block : { key: block, passphrase }));
      } catch (cause) {
        throw encrypted
          ? new CryptoError(
              'passphrase-required',
              'PEM: the private key could not be decrypted (wrong passphrase?)',
              { cause },
            )
          : new CryptoError('malformed', 'PEM: a private key could not be read', { cause });
      }
    }
  }
  if (out.privateKeys.length === 0 && out.certificates.length === 0) {
    throw new CryptoError('malformed', 'PEM: no certificate or private key found');
  }
  return out;
}

/** Reads a PKCS#12 bundle: one private key, its certificate and the rest of the chain. */
export function loadPkcs12(bytes: Uint8Array, passphrase: string): Pkcs12Material {
  let p12: forge.pkcs12.Pkcs12Pfx;
  try {
    const asn1 = forge.asn1.fromDer(Buffer.from(bytes).toString('binary'));
    p12 = forge.pkcs12.pkcs12FromAsn1(asn1, true, passphrase);
  } catch (cause) {
    const wrongPassword =
      cause instanceof Error && /MAC could not be verified|Invalid password/i.test(cause.message);
    throw wrongPassword
      ? new CryptoError('passphrase-required', 'PKCS#12: wrong or missing passphrase', { cause })
      : new CryptoError('malformed', 'PKCS#12: the bundle could not be read', { cause });
  }
  const keys: KeyObject[] = [];
  const certs: X509Certificate[] = [];
  try {
    for (const type of [forge.pki.oids.pkcs8ShroudedKeyBag!, forge.pki.oids.keyBag!]) {
      for (const bag of p12.getBags({ bagType: type })[type] ?? []) {
        // forge parses RSA keys; for others (EC) it leaves the decrypted PrivateKeyInfo in `asn1`.
        const info = bag.key
          ? forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(bag.key))
          : (bag.asn1 as forge.asn1.Asn1 | undefined);
        if (info === undefined) continue;
        const der = Buffer.from(forge.asn1.toDer(info).getBytes(), 'binary');
        keys.push(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }));
      }
    }
    const certType = forge.pki.oids.certBag!;
    for (const bag of p12.getBags({ bagType: certType })[certType] ?? []) {
      const asn1 = bag.cert
        ? forge.pki.certificateToAsn1(bag.cert)
        : (bag.asn1 as forge.asn1.Asn1 | undefined);
      if (asn1 === undefined) continue;
      certs.push(new X509Certificate(Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary')));
    }
  } catch (cause) {
    throw new CryptoError('malformed', 'PKCS#12: a key or certificate in the bundle could not be read', {
      cause,
    });
  }
  const privateKey = keys[0];
  if (privateKey === undefined)
    throw new CryptoError('no-matching-key', 'PKCS#12: the bundle holds no private key');
  if (keys.length > 1)
    throw new CryptoError('unsupported', `PKCS#12: ${keys.length} private keys in one bundle`);
  const certificate = certs.find((c) => c.checkPrivateKey(privateKey));
  if (certificate === undefined)
    throw new CryptoError('no-matching-key', 'PKCS#12: no certificate matches the private key');
  return { privateKey, certificate, chain: certs.filter((c) => c !== certificate) };
}
