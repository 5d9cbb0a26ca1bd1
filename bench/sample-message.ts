import { randomBytes } from 'node:crypto';

/**
 * A MIME entity of about `bytes`, as a practice application would hand one over for signing and
 * encryption: a short text part and a base64 "PDF" of random bytes (incompressible), CRLF lines.
 */
export function mimeEntity(bytes: number): string {
  const b64 = randomBytes(Math.floor((bytes * 3) / 4))
    .toString('base64')
    .replace(/.{76}/g, '$&\r\n');
  return (
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nCompte rendu ci-joint.\r\n' +
    '--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
    b64 +
    '\r\n--b--\r\n'
  );
}
