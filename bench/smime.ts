/**
 * `node bench/smime.ts`: S/MIME sign+encrypt and decrypt+verify throughput at 100 KB and 2 MB,
 * one message at a time on one core, for three implementations in the same run:
 * - ours: crypto/smime.ts (node:crypto + DER writer), in process, no worker pool;
 * - node-forge 1.4.3 pkcs7, in process (createSignedData + createEnvelopedData; forge has
 *   no pkcs7 verify, so its decrypt+verify is its decrypt plus a SHA-256 of the content and an
 *   RSA signature check with forge primitives: the same work a verify does, minus chain checks);
 * - the openssl cms CLI, two processes per message (sign | encrypt, decrypt | verify), as a
 *   gateway shelling out would run it.
 * Ours signs RSA-2048 PKCS#1 v1.5 SHA-256 (detached) and encrypts RSA-OAEP + AES-256-GCM; forge
 * and openssl use their nearest defaults (forge: RSA PKCS#1 v1.5 + AES-256-CBC; openssl:
 * PKCS#1 v1.5 key transport + AES-256-GCM). Method and recorded figures: docs/smime.md.
 *
 * Tunables (environment): BENCH_SMIME_SECONDS (time per cell, default 2),
 * BENCH_SMIME_SIZES (KB, default "100,2048"), BENCH_SMIME_TOOLS (default "ours,forge,openssl").
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { createCa, issueCertificate } from '../crypto/dev-pki.ts';
import { decrypt, encrypt, sign, verify } from '../crypto/smime.ts';
import { mimeEntity } from './sample-message.ts';
import { throughput, type ThroughputCell as Cell } from './stats.ts';

const SECONDS = Number(process.env.BENCH_SMIME_SECONDS ?? 2);
const SIZES_KB = (process.env.BENCH_SMIME_SIZES ?? '100,2048').split(',').map(Number);
const TOOLS = (process.env.BENCH_SMIME_TOOLS ?? 'ours,forge,openssl').split(',');
const MIN_ITERATIONS = 3;

async function measure(tool: string, operation: string, sizeKb: number, run: () => unknown): Promise<Cell> {
  const t = await throughput(run, SECONDS, MIN_ITERATIONS);
  return {
    tool,
    operation,
    sizeKb,
    perSecond: t.perSecond,
    msPerMessage: t.msPerMessage,
    iterations: t.iterations,
  };
}

function openssl(args: string[], input: Uint8Array | string): Buffer {
  const r = spawnSync('openssl', args, { input, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`openssl ${args.slice(0, 2).join(' ')}: ${r.stderr.toString()}`);
  return r.stdout;
}

async function main(): Promise<void> {
  const ca = createCa({ commonName: 'Bench CA' });
  const alice = issueCertificate(ca, {
    commonName: 'Alice',
    emailAddresses: ['alice@example.org'],
    usage: 'email',
  });
  const bob = issueCertificate(ca, {
    commonName: 'Bob',
    emailAddresses: ['bob@example.org'],
    usage: 'email',
  });
  const dir = mkdtempSync(join(tmpdir(), 'courrier-bench-smime-'));
  const file = (name: string, content: string) => {
    const p = join(dir, name);
    writeFileSync(p, content);
    return p;
  };
  const f = {
    ca: file('ca.pem', ca.certPem),
    aliceCert: file('alice.pem', alice.certPem),
    aliceKey: file('alice.key', alice.keyPem),
    bobCert: file('bob.pem', bob.certPem),
    bobKey: file('bob.key', bob.keyPem),
  };
  const forgeAliceKey = forge.pki.privateKeyFromPem(alice.keyPem);
  const forgeAliceCert = forge.pki.certificateFromPem(alice.certPem);
  const forgeBobKey = forge.pki.privateKeyFromPem(bob.keyPem);
  const forgeBobCert = forge.pki.certificateFromPem(bob.certPem);
  const cells: Cell[] = [];

  try {
    for (const kb of SIZES_KB) {
      const message = mimeEntity(kb * 1024);
      if (TOOLS.includes('ours')) {
        const signingKeys = { privateKey: alice.keyPem, certificate: alice.certPem };
        const seal = async () =>
          encrypt({
            message: await sign({ message, signingKeys }),
            encryptionKeys: bob.certPem,
            authenticated: true,
          });
        cells.push(await measure('ours (node:crypto)', 'sign+encrypt', kb, seal));
        const sealed = await seal();
        const decryptionKeys = { privateKey: bob.keyPem, certificate: bob.certPem };
        cells.push(
          await measure('ours (node:crypto)', 'decrypt+verify', kb, async () => {
            const d = await decrypt({ message: sealed, decryptionKeys });
            const v = await verify({ message: d.data, trustAnchors: [ca.certPem] });
            if (!v.valid) throw new Error('bench: our verification failed');
          }),
        );
      }
      if (TOOLS.includes('forge')) {
        const forgeSeal = () => {
          const p7 = forge.pkcs7.createSignedData();
          p7.content = forge.util.createBuffer(message, 'raw');
          p7.addCertificate(forgeAliceCert);
          p7.addSigner({
            key: forgeAliceKey,
            certificate: forgeAliceCert,
            digestAlgorithm: forge.pki.oids.sha256!,
            authenticatedAttributes: [
              { type: forge.pki.oids.contentType!, value: forge.pki.oids.data! },
              { type: forge.pki.oids.messageDigest! },
              { type: forge.pki.oids.signingTime!, value: new Date() as never },
            ],
          });
          p7.sign({ detached: true });
          const signature = forge.asn1.toDer(p7.toAsn1()).getBytes();
          const signed = `${message}\r\n${forge.util.encode64(signature, 76)}`;
          const env = forge.pkcs7.createEnvelopedData();
          env.addRecipient(forgeBobCert);
          env.content = forge.util.createBuffer(signed, 'raw');
          env.encrypt(undefined, forge.pki.oids['aes256-CBC']);
          return forge.asn1.toDer(env.toAsn1()).getBytes();
        };
        cells.push(await measure('node-forge pkcs7', 'sign+encrypt', kb, forgeSeal));
        const sealed = forgeSeal();
        // A signature over a SHA-256 digest, to check the way verify would.
        const md0 = forge.md.sha256.create();
        md0.update(message, 'raw');
        const sig = forgeAliceKey.sign(md0);
        cells.push(
          await measure('node-forge pkcs7', 'decrypt+verify', kb, () => {
            const env = forge.pkcs7.messageFromAsn1(
              forge.asn1.fromDer(sealed),
            ) as forge.pkcs7.PkcsEnvelopedData;
            const recipient = env.findRecipient(forgeBobCert);
            if (recipient === null) throw new Error('bench: forge found no recipient');
            env.decrypt(recipient, forgeBobKey);
            const content = (env.content as forge.util.ByteStringBuffer).getBytes();
            const md = forge.md.sha256.create();
            md.update(content.slice(0, message.length), 'raw');
            if (!(forgeAliceCert.publicKey as forge.pki.rsa.PublicKey).verify(md.digest().getBytes(), sig)) {
              throw new Error('bench: forge verification failed');
            }
          }),
        );
      }
      if (TOOLS.includes('openssl')) {
        const opensslSeal = () => {
          const signed = openssl(
            ['cms', '-sign', '-signer', f.aliceCert, '-inkey', f.aliceKey, '-md', 'sha256'],
            message,
          );
          return openssl(['cms', '-encrypt', '-aes-256-gcm', '-recip', f.bobCert], signed);
        };
        cells.push(await measure('openssl cms CLI', 'sign+encrypt', kb, opensslSeal));
        const sealed = opensslSeal();
        cells.push(
          await measure('openssl cms CLI', 'decrypt+verify', kb, () => {
            const d = openssl(['cms', '-decrypt', '-recip', f.bobCert, '-inkey', f.bobKey], sealed);
            openssl(['cms', '-verify', '-CAfile', f.ca, '-out', '/dev/null'], d);
          }),
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const rows = cells.map((c) => {
    const ours = cells.find(
      (o) => o.tool.startsWith('ours') && o.operation === c.operation && o.sizeKb === c.sizeKb,
    );
    const ratio = ours === undefined || ours === c ? '' : `${(ours.perSecond / c.perSecond).toFixed(1)}x`;
    return [
      c.operation,
      `${c.sizeKb} KB`,
      c.tool,
      c.perSecond.toFixed(1),
      c.msPerMessage.toFixed(2),
      String(c.iterations),
      ratio,
    ];
  });
  const header = ['operation', 'size', 'implementation', 'msg/s', 'ms/msg', 'runs', 'ours is'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((v, i) => v.padEnd(widths[i]!)).join(' | ')} |`;
  const out = [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)];
  process.stdout.write(
    `S/MIME throughput, one message at a time, ${SECONDS} s per cell (node ${process.version})\n`,
  );
  process.stdout.write(out.join('\n') + '\n');
}

await main();
