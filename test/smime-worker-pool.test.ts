import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { threadId } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSmimeWorkerPool, type SmimeWorkerPool } from '../crypto/worker-pool.ts';
import { decrypt, verify } from '../crypto/smime.ts';
import { makePki, signingKey, type SmimePki } from './smime-fixtures.ts';

let pki: SmimePki;
let pool: SmimeWorkerPool;
beforeAll(() => {
  pki = makePki();
  pool = createSmimeWorkerPool({ size: 2 });
});
afterAll(() => pool.close());

/** A 2 MB message: a text part and a base64 attachment. */
function bigMessage(): string {
  const attachment = randomBytes(1_500_000).toString('base64').replace(/.{76}/g, '$&\r\n');
  return (
    'From: a@example.org\r\nTo: b@example.org\r\nSubject: imaging\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' +
    '--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n' +
    attachment +
    '\r\n--b--\r\n'
  );
}

describe('S/MIME worker pool', () => {
  it('runs 2 MB sign+encrypt jobs in worker threads while the main loop keeps ticking', async () => {
    const message = bigMessage();
    expect(message.length).toBeGreaterThan(2_000_000);
    const histogram = monitorEventLoopDelay({ resolution: 5 });
    histogram.enable();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const jobs = Array.from({ length: 6 }, () =>
      pool.signAndEncrypt({
        message,
        sign: { signingKeys: signingKey(pki.alice) },
        encrypt: { encryptionKeys: [pki.bob.certPem], authenticated: true },
      }),
    );
    // Any tick recorded before the last job finishes happened while work was pending.
    const results = await Promise.all(jobs);
    clearInterval(timer);
    histogram.disable();

    // The work happened in other threads, spread over the pool.
    const byThread = pool.completedByThread();
    expect([...byThread.keys()]).not.toContain(threadId);
    expect([...byThread.values()].reduce((a, b) => a + b, 0)).toBe(6);
    expect(byThread.size).toBe(2);
    // The main loop was free to run timers during the jobs (had the work been on this thread,
    // no timer could fire between the submits and the last result).
    expect(ticks).toBeGreaterThan(0);
    // Recorded for information; not asserted (wall-clock, shared CI machine).
    console.info(
      `max event-loop delay during 6 x 2 MB sign+encrypt: ${(histogram.max / 1e6).toFixed(1)} ms, ${ticks} ticks`,
    );

    // The results are real: decrypt and verify one on this thread.
    const d = await decrypt({
      message: results[0]!,
      decryptionKeys: { privateKey: pki.bob.keyPem, certificate: pki.bob.certPem },
    });
    const v = await verify({ message: d.data, trustAnchors: [pki.ca.certPem], expectSigned: true });
    expect(v.valid).toBe(true);
  });

  it('verify and decrypt through the pool, errors keep their CryptoError code', async () => {
    const signed = await pool.sign({
      message: 'Content-Type: text/plain\r\n\r\nhi\r\n',
      signingKeys: signingKey(pki.alice),
    });
    const v = await pool.verify({ message: signed, trustAnchors: [pki.ca.certPem] });
    expect(v.valid).toBe(true);
    const enc = await pool.encrypt({ message: 'x', encryptionKeys: pki.bob.certPem });
    await expect(
      pool.decrypt({
        message: enc,
        decryptionKeys: { privateKey: pki.carol.keyPem, certificate: pki.carol.certPem },
      }),
    ).rejects.toMatchObject({
      name: 'CryptoError',
      code: 'no-matching-key',
    });
  });
});
