/**
 * Attack class: wrong key usage. A key is used only for what its key flags allow (RFC 9580
 * §5.2.3.29): no encrypting to a key without an encryption-capable (sub)key, no signing with a key
 * without the signing flag. Both are `wrong-key-usage`, checked before any cryptography runs.
 */
import * as openpgp from 'openpgp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkPgpKey, readPgpPrivateKey } from '../../crypto/openpgp-keys.ts';
import { pgpEncrypt, pgpSign } from '../../crypto/openpgp-mime.ts';
import {
  cryptoErrorCode,
  gpgFingerprint,
  makeGpgHome,
  mustGpg,
  removeGpgHome,
} from '../helpers/openpgp-fixture.ts';

const PART = 'Content-Type: text/plain\r\n\r\nResultats biologiques.\r\n';
let home: string;

beforeAll(() => {
  home = makeGpgHome('usage');
});
afterAll(() => removeGpgHome(home));

describe('wrong key usage', () => {
  it('a key with a signing subkey and no encryption subkey cannot be encrypted to', async () => {
    const { publicKey } = await openpgp.generateKey({
      type: 'ecc',
      curve: 'ed25519Legacy',
      userIDs: [{ email: 'sign-only@example.org' }],
      subkeys: [{ sign: true }],
      format: 'object',
    });
    expect((await checkPgpKey(publicKey, 'encrypt')).status).toBe('wrong-key-usage');
    expect(await cryptoErrorCode(pgpEncrypt(PART, { encryptionKeys: publicKey }))).toBe('wrong-key-usage');
  });

  it('a primary key alone (certify+sign) cannot be encrypted to', async () => {
    const { publicKey } = await openpgp.generateKey({
      type: 'ecc',
      curve: 'ed25519Legacy',
      userIDs: [{ email: 'primary-only@example.org' }],
      subkeys: [],
      format: 'object',
    });
    expect(await cryptoErrorCode(pgpEncrypt(PART, { encryptionKeys: publicKey }))).toBe('wrong-key-usage');
  });

  it('a GnuPG key whose primary is certify-only and whose subkey is encrypt-only cannot sign', async () => {
    mustGpg(home, ['--quick-gen-key', 'Cert Only <cert-only@example.org>', 'ed25519', 'cert', 'never']);
    const fpr = gpgFingerprint(home, 'cert-only@example.org');
    mustGpg(home, ['--quick-add-key', fpr, 'cv25519', 'encr', 'never']);
    const key = await readPgpPrivateKey(mustGpg(home, ['--armor', '--export-secret-keys', fpr]));
    expect((await checkPgpKey(key, 'sign')).status).toBe('wrong-key-usage');
    expect(await cryptoErrorCode(pgpSign(PART, { signingKeys: key }))).toBe('wrong-key-usage');
    // and it is fine as a recipient
    expect((await checkPgpKey(key.toPublic(), 'encrypt')).status).toBe('trusted');
  });
});
