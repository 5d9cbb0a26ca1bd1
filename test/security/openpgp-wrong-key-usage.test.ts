/**
 * Attack class: wrong key usage. A key is used only for what its key flags allow (RFC 9580
 * §5.2.3.29): no encrypting to a key without an encryption-capable (sub)key, no signing with a key
 * without the signing flag. Both are `wrong-key-usage`, checked before any cryptography runs.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CryptoError } from '../../crypto/types.ts';
import { checkPgpKey, readPgpPrivateKey } from '../../crypto/openpgp-keys.ts';
import { pgpEncrypt, pgpSign } from '../../crypto/openpgp-mime.ts';

const PART = 'Content-Type: text/plain\r\n\r\nResultats biologiques.\r\n';
let home: string;

async function code(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CryptoError);
  return (err as CryptoError).code;
}

function gpg(args: string[]): string {
  const res = spawnSync(
    'gpg',
    ['--homedir', home, '--batch', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', '', ...args],
    { encoding: 'latin1', timeout: 30_000 },
  );
  if (res.status !== 0) throw new Error(`gpg ${args.join(' ')}: ${res.stderr}`);
  return res.stdout;
}

beforeAll(() => {
  home = mkdtempSync(join(tmpdir(), 'courrier-gpg-usage-'));
});
afterAll(() => {
  spawnSync('gpgconf', ['--homedir', home, '--kill', 'gpg-agent']);
  rmSync(home, { recursive: true, force: true });
});

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
    expect(await code(pgpEncrypt(PART, { encryptionKeys: publicKey }))).toBe('wrong-key-usage');
  });

  it('a primary key alone (certify+sign) cannot be encrypted to', async () => {
    const { publicKey } = await openpgp.generateKey({
      type: 'ecc',
      curve: 'ed25519Legacy',
      userIDs: [{ email: 'primary-only@example.org' }],
      subkeys: [],
      format: 'object',
    });
    expect(await code(pgpEncrypt(PART, { encryptionKeys: publicKey }))).toBe('wrong-key-usage');
  });

  it('a GnuPG key whose primary is certify-only and whose subkey is encrypt-only cannot sign', async () => {
    gpg(['--quick-gen-key', 'Cert Only <cert-only@example.org>', 'ed25519', 'cert', 'never']);
    const fpr = gpg(['--with-colons', '--list-keys', 'cert-only@example.org'])
      .split('\n')
      .find((l) => l.startsWith('fpr:'))!
      .split(':')[9]!;
    gpg(['--quick-add-key', fpr, 'cv25519', 'encr', 'never']);
    const key = await readPgpPrivateKey(gpg(['--armor', '--export-secret-keys', fpr]));
    expect((await checkPgpKey(key, 'sign')).status).toBe('wrong-key-usage');
    expect(await code(pgpSign(PART, { signingKeys: key }))).toBe('wrong-key-usage');
    // and it is fine as a recipient
    expect((await checkPgpKey(key.toPublic(), 'encrypt')).status).toBe('trusted');
  });
});
