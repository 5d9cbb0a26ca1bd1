import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { readAsn1 } from '../../crypto/asn1-der.ts';
import { decrypt, encrypt, sign, verify } from '../../crypto/smime.ts';
import { CryptoError } from '../../crypto/types.ts';
import { makePki, signingKey, type SmimePki } from '../smime-fixtures.ts';

/**
 * Attack: hostile DER (random, truncated, absurd lengths, nesting bombs) aimed at the parser.
 * Every outcome must be a CryptoError (or a not-valid result), fast; never another exception,
 * a crash, or a hang.
 */

let pki: SmimePki;
let signedDer: Buffer;
let envelopedDer: Buffer;
beforeAll(async () => {
  pki = makePki();
  const body = (m: Uint8Array) => {
    const s = Buffer.from(m).toString('latin1');
    return Buffer.from(s.slice(s.indexOf('\r\n\r\n') + 4), 'base64');
  };
  signedDer = body(
    await sign({
      message: 'Content-Type: text/plain\r\n\r\nx\r\n',
      signingKeys: signingKey(pki.alice),
      detached: false,
    }),
  );
  envelopedDer = body(
    await encrypt({
      message: 'Content-Type: text/plain\r\n\r\nx\r\n',
      encryptionKeys: pki.bob.certPem,
      authenticated: true,
    }),
  );
});

const dk = () => ({ privateKey: pki.bob.keyPem, certificate: pki.bob.certPem });

/**
 * Runs verify and decrypt on `der`; returns the error codes (or 'ok' when a result came back;
 * 'valid' when verify accepted it, which only a flip in a field no signature covers and we do
 * not use can yield, and then only with the original content).
 */
async function outcome(der: Buffer): Promise<string[]> {
  const codes: string[] = [];
  for (const run of [
    () =>
      verify({ message: der, trustAnchors: [pki.ca.certPem] }).then((r) => {
        if (
          r.valid &&
          Buffer.from(r.content).toString('latin1') !== 'Content-Type: text/plain\r\n\r\nx\r\n'
        ) {
          throw new Error('a modified message was accepted with different content');
        }
        return r.valid ? 'valid' : 'ok';
      }),
    () =>
      decrypt({ message: der, decryptionKeys: dk() }).then((d) => {
        if (Buffer.from(d.data).toString('latin1') !== 'Content-Type: text/plain\r\n\r\nx\r\n') {
          throw new Error('a modified envelope decrypted to different content');
        }
        return 'ok';
      }),
  ]) {
    try {
      codes.push(await run());
    } catch (err) {
      if (!(err instanceof CryptoError)) throw new Error(`not a CryptoError: ${String(err)}`, { cause: err });
      codes.push(err.code);
    }
  }
  return codes;
}

describe('malformed DER', () => {
  it('random bytes starting like a SEQUENCE: malformed', async () => {
    for (let i = 0; i < 200; i++) {
      const junk = Buffer.concat([Buffer.from([0x30]), randomBytes(1 + (i % 97) * 7)]);
      const codes = await outcome(junk);
      expect(codes).toEqual(['malformed', 'malformed']);
    }
  });

  it('every truncation of a real SignedData and AuthEnvelopedData: a CryptoError, never a crash', async () => {
    for (const full of [signedDer, envelopedDer]) {
      const step = Math.max(1, Math.floor(full.length / 150));
      for (let len = 1; len < full.length; len += step) {
        const codes = await outcome(full.subarray(0, len));
        expect(codes[0]).toBe('malformed');
        expect(codes[1]).toBe('malformed');
      }
    }
  });

  it('nesting bomb (100 000 indefinite-length SEQUENCEs) and huge length fields: malformed, fast', async () => {
    const bomb = Buffer.alloc(200_000);
    for (let i = 0; i < bomb.length; i += 2) {
      bomb[i] = 0x30;
      bomb[i + 1] = 0x80;
    }
    const t0 = performance.now();
    expect(await outcome(bomb)).toEqual(['malformed', 'malformed']);
    const definite = Buffer.alloc(5000);
    for (let i = 0; i < definite.length; i += 2) {
      definite[i] = 0x30;
      definite[i + 1] = 0x7f;
    }
    expect(await outcome(definite)).toEqual(['malformed', 'malformed']);
    expect(await outcome(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x00]))).toEqual([
      'malformed',
      'malformed',
    ]);
    expect(await outcome(Buffer.from([0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]))).toEqual([
      'malformed',
      'malformed',
    ]);
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(() => readAsn1(bomb)).toThrow(/nested deeper/);
  });

  it('bit flips anywhere in real messages: CryptoError or a result, never an uncaught error or other content', async () => {
    let accepted = 0;
    for (const full of [signedDer, envelopedDer]) {
      for (let i = 0; i < 300; i++) {
        const copy = Buffer.from(full);
        const at = (i * 7919) % copy.length;
        copy[at]! ^= 1 << (i % 8);
        const codes = await outcome(copy);
        // Only flips in fields nothing relies on (versions, unused algorithm entries) pass, and
        // `outcome` has checked that the content is then the original one.
        if (codes[0] === 'valid' || (full === envelopedDer && codes[1] === 'ok')) accepted++;
      }
    }
    // Unsigned encoding details (e.g. a digestAlgorithms entry) are the only tolerated flips.
    expect(accepted).toBeLessThan(15);
  });

  it('a MIME message whose base64 body is garbage: malformed', async () => {
    const msg =
      'Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!notbase64$$$$\r\n';
    await expect(decrypt({ message: msg, decryptionKeys: dk() })).rejects.toMatchObject({
      code: 'malformed',
    });
    const signedMsg = msg.replace('enveloped-data', 'signed-data');
    await expect(verify({ message: signedMsg, trustAnchors: [] })).rejects.toMatchObject({
      code: 'malformed',
    });
  });
});
