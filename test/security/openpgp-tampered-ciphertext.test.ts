/**
 * Attack class: modified ciphertext (EFAIL-style malleability, bit flips in transit). Every
 * change to the encrypted data must end in `integrity-failed` (MDC for SEIPDv1, AEAD tag for
 * SEIPDv2), and messages without any integrity protection (SED, tag 9) are refused.
 */
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import { pgpDecrypt, pgpEncrypt } from '../../crypto/openpgp-mime.ts';
import { buildMultipartEncrypted } from '../../crypto/pgp-mime.ts';
import type { CryptoError } from '../../crypto/types.ts';
import { cryptoError, pgpPair, type PgpPair } from '../helpers/openpgp-fixture.ts';

const PART = 'Content-Type: text/plain\r\n\r\nPatient: rendez-vous annule.\r\n'.repeat(20);

let v4: PgpPair;
let v6: PgpPair;

const pair = (profile: 'gnupg-2.2' | 'rfc9580') => pgpPair(`${profile}@example.org`, { profile });

/** Binary OpenPGP message inside one of our multipart/encrypted entities (armor undone by hand). */
function messageBytes(entity: Uint8Array): Uint8Array {
  const text = Buffer.from(entity).toString('latin1');
  const armored = text.slice(
    text.indexOf('-----BEGIN PGP MESSAGE-----'),
    text.indexOf('-----END PGP MESSAGE-----'),
  );
  const body = armored.slice(armored.indexOf('\r\n\r\n') + 4).replace(/^=.{4}\r\n$/m, '');
  return new Uint8Array(Buffer.from(body.replace(/\s+/g, ''), 'base64'));
}

/** Armor without the optional CRC-24 (RFC 9580 §6.1), as a tampering attacker would re-armor. */
function envelope(binary: Uint8Array | Uint8Array[]): string {
  const bytes = Buffer.concat(Array.isArray(binary) ? binary : [binary]);
  const b64 = (bytes.toString('base64').match(/.{1,64}/g) ?? []).join('\r\n');
  return buildMultipartEncrypted(
    `-----BEGIN PGP MESSAGE-----\r\n\r\n${b64}\r\n-----END PGP MESSAGE-----\r\n`,
  );
}

function decryptError(entity: string, keys: PgpPair): Promise<CryptoError> {
  return cryptoError(pgpDecrypt(entity, { decryptionKeys: keys.priv, verificationKeys: keys.pub }));
}

beforeAll(async () => {
  [v4, v6] = await Promise.all([pair('gnupg-2.2'), pair('rfc9580')]);
});

describe('tampered ciphertext', () => {
  for (const profile of ['v4 (SEIPDv1 + MDC)', 'v6 (SEIPDv2, AEAD)'] as const) {
    it(`${profile}: a flipped bit anywhere in the encrypted data is integrity-failed`, async () => {
      const keys = profile.startsWith('v4') ? v4 : v6;
      const entity = await pgpEncrypt(PART, { encryptionKeys: keys.pub, signingKeys: keys.priv });
      const original = messageBytes(entity);
      // The encrypted data packet is last: flip bits in its middle and near its end (MDC / tag).
      for (const offsetFromEnd of [original.length >> 2, 40, 5, 1]) {
        const tampered = original.slice();
        tampered[tampered.length - offsetFromEnd]! ^= 0x01;
        const err = await decryptError(envelope(tampered), keys);
        expect(err.code, `${offsetFromEnd}: ${err.message}`).toBe('integrity-failed');
      }
    });
  }

  it('the untampered message decrypts (control)', async () => {
    const entity = await pgpEncrypt(PART, { encryptionKeys: v4.pub, signingKeys: v4.priv });
    const res = await pgpDecrypt(envelope(messageBytes(entity)), {
      decryptionKeys: v4.priv,
      verificationKeys: v4.pub,
    });
    expect(res.verification.valid).toBe(true);
  });

  it('a message without integrity protection (SED, packet tag 9) is refused as integrity-failed', async () => {
    const sessionKey = await openpgp.generateSessionKey({ encryptionKeys: v4.pub });
    const withKey = await openpgp.encryptSessionKey({
      ...sessionKey,
      encryptionKeys: v4.pub,
      format: 'object',
    });
    // OpenPGP.js (rightly) offers no API to write SED packets: use its packet classes directly.
    const literal = new openpgp.LiteralDataPacket() as unknown as {
      setBytes(bytes: Uint8Array, format: openpgp.enums.literal): void;
    };
    literal.setBytes(new TextEncoder().encode(PART), openpgp.enums.literal.binary);
    const sed = new openpgp.SymmetricallyEncryptedDataPacket() as unknown as openpgp.AnyPacket & {
      packets: openpgp.PacketList<openpgp.AnyPacket>;
      encrypt(algorithm: openpgp.enums.symmetric, key: Uint8Array, config: object): Promise<void>;
    };
    sed.packets = new openpgp.PacketList();
    sed.packets.push(literal as unknown as openpgp.AnyPacket);
    const algorithm = openpgp.enums.symmetric[sessionKey.algorithm as keyof typeof openpgp.enums.symmetric];
    await sed.encrypt(algorithm, sessionKey.data, { ...openpgp.config, allowUnauthenticatedMessages: true });
    const packets = new openpgp.PacketList();
    packets.push(...withKey.packets, sed);
    const err = await decryptError(envelope(packets.write() as Uint8Array | Uint8Array[]), v4);
    expect(err.code).toBe('integrity-failed');
    expect(err.message).toMatch(/not authenticated/i);
  });

  it('a tampered session key packet is decryption-failed, not a crash', async () => {
    const entity = await pgpEncrypt(PART, { encryptionKeys: v4.pub });
    const tampered = messageBytes(entity).slice();
    tampered[30]! ^= 0x80; // inside the PKESK's ephemeral key / wrapped session key
    const err = await decryptError(envelope(tampered), v4);
    expect(['decryption-failed', 'malformed', 'integrity-failed']).toContain(err.code);
  });
});
