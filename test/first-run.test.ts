import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, configSchema, type Config, type ConfigInput } from '../config/index.ts';
import { createCa, issueCertificate } from '../crypto/dev-pki.ts';
import { openMailboxStore } from '../directory/index.ts';
import { ensureDataDir } from '../gateway/first-run.ts';
import { createLogger } from '../gateway/log.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'courrier-first-run-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function configFor(input: ConfigInput = {}): Config {
  return configSchema.parse({
    dataDir: join(dir, 'data'),
    hostname: 'mx.cabinet.test',
    localDomains: ['cabinet.test', 'hopital.test'],
    ...input,
  });
}

/** A real pino logger writing into a string. */
function capturingLogger(): { log: ReturnType<typeof createLogger>; text: () => string } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return { log: createLogger('debug', sink), text: () => chunks.join('') };
}

const mode = (file: string) => statSync(file).mode & 0o777;

/** Every file and folder under `root` with its mode (and, for files, size and mtime). */
function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const s = statSync(p);
      // A folder's mtime moves when SQLite's transient -wal/-shm files come and go: mode only.
      out[relative(root, p)] = s.isDirectory()
        ? (s.mode & 0o777).toString(8)
        : `${(s.mode & 0o777).toString(8)} ${s.size} ${s.mtimeMs}`;
      if (s.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out;
}

describe('ensureDataDir on an empty folder', () => {
  it('creates the folders, the development PKI and the first mailbox', async () => {
    const { log, text } = capturingLogger();
    const paths = await ensureDataDir(configFor(), log);
    const data = join(dir, 'data');
    const pki = join(data, 'pki');

    expect(paths).toEqual({
      dataDir: data,
      spoolDir: join(data, 'spool'),
      mailboxesDir: join(data, 'mailboxes'),
      directoryFile: join(data, 'directory.sqlite'),
      tls: {
        certFile: join(pki, 'server.pem'),
        keyFile: join(pki, 'server-key.pem'),
        caFile: join(pki, 'ca.pem'),
        clientCertFile: join(pki, 'server.pem'),
        clientKeyFile: join(pki, 'server-key.pem'),
      },
      createdPki: true,
      devMailbox: { address: 'dev@cabinet.test', password: expect.stringMatching(/^[A-Za-z2-9]{20}$/) },
    });
    expect(mode(data)).toBe(0o700);
    expect(mode(paths.spoolDir)).toBe(0o700);
    expect(mode(paths.mailboxesDir)).toBe(0o700);
    expect(mode(pki)).toBe(0o700);
    expect(mode(join(pki, 'ca-key.pem'))).toBe(0o600);
    expect(mode(join(pki, 'server-key.pem'))).toBe(0o600);
    expect(mode(paths.directoryFile)).toBe(0o600);
    expect(readdirSync(data).sort()).toEqual([
      'dev-credentials.txt',
      'directory.sqlite',
      'mailboxes',
      'pki',
      'spool',
    ]);

    // server.pem is the leaf then the CA, and verifies against ca.pem.
    const serverPem = readFileSync(paths.tls.certFile, 'utf8');
    expect(serverPem.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2);
    expect(serverPem.endsWith(readFileSync(paths.tls.caFile, 'utf8'))).toBe(true);
    const verify = spawnSync('openssl', ['verify', '-CAfile', paths.tls.caFile, paths.tls.certFile], {
      encoding: 'utf8',
    });
    expect(verify.stdout).toContain(': OK');
    const text509 = spawnSync(
      'openssl',
      ['x509', '-in', paths.tls.certFile, '-noout', '-ext', 'subjectAltName'],
      {
        encoding: 'utf8',
      },
    );
    expect(text509.stdout).toContain(
      'DNS:mx.cabinet.test, DNS:localhost, DNS:cabinet.test, DNS:hopital.test',
    );

    // The mailbox exists with that password, and the credentials file says so, owner-only.
    const password = paths.devMailbox!.password;
    const store = openMailboxStore(paths.directoryFile);
    try {
      expect(store.list().map((m) => m.address)).toEqual(['dev@cabinet.test']);
      expect(await store.verifyPassword('dev@cabinet.test', password)).toBe(true);
    } finally {
      store.close();
    }
    const credentials = join(data, 'dev-credentials.txt');
    expect(mode(credentials)).toBe(0o600);
    expect(readFileSync(credentials, 'utf8')).toContain(`address: dev@cabinet.test\npassword: ${password}\n`);

    // Logged: what happened; never a key or the password.
    const logged = text();
    expect(logged).toContain('generated development PKI');
    expect(logged).toContain('created development mailbox');
    expect(logged).not.toContain(password);
    expect(logged).not.toContain('PRIVATE KEY');
    expect(logged).not.toContain('BEGIN');
  });

  it('changes nothing the second time', async () => {
    const config = configFor();
    await ensureDataDir(config, createLogger('silent'));
    const before = snapshot(dir);
    const keyBefore = readFileSync(join(dir, 'data/pki/server-key.pem'), 'utf8');
    const again = await ensureDataDir(config, createLogger('silent'));
    expect(again.createdPki).toBe(false);
    expect(again.devMailbox).toBeUndefined();
    const after = snapshot(dir);
    expect(after).toEqual(before);
    expect(readFileSync(join(dir, 'data/pki/server-key.pem'), 'utf8')).toBe(keyBefore);
  });

  it('creates no development mailbox when the directory has mailboxes', async () => {
    const data = join(dir, 'data');
    mkdirSync(data, { mode: 0o700 });
    const store = openMailboxStore(join(data, 'directory.sqlite'));
    await store.add('someone@cabinet.test');
    store.close();
    const paths = await ensureDataDir(configFor(), createLogger('silent'));
    expect(paths.devMailbox).toBeUndefined();
    const reopened = openMailboxStore(paths.directoryFile);
    expect(reopened.list().map((m) => m.address)).toEqual(['someone@cabinet.test']);
    reopened.close();
  });

  it('creates no development mailbox without a local domain, and says so', async () => {
    const { log, text } = capturingLogger();
    const paths = await ensureDataDir(configFor({ localDomains: [] }), log);
    expect(paths.devMailbox).toBeUndefined();
    expect(text()).toContain('no local domain configured');
  });
});

describe('ensureDataDir with configured certificates', () => {
  function writeCerts(): { certFile: string; keyFile: string; caFile: string } {
    const ca = createCa({ commonName: 'Operator CA' });
    const leaf = issueCertificate(ca, {
      commonName: 'mx.cabinet.test',
      dnsNames: ['mx.cabinet.test'],
      usage: 'server+client',
    });
    const tlsDir = join(dir, 'tls');
    mkdirSync(tlsDir);
    const files = {
      certFile: join(tlsDir, 'server.pem'),
      keyFile: join(tlsDir, 'server-key.pem'),
      caFile: join(tlsDir, 'ca.pem'),
    };
    writeFileSync(files.certFile, leaf.certPem + ca.certPem);
    writeFileSync(files.keyFile, leaf.keyPem, { mode: 0o600 });
    writeFileSync(files.caFile, ca.certPem);
    return files;
  }

  it('uses them and generates no PKI', async () => {
    const files = writeCerts();
    const paths = await ensureDataDir(configFor({ tls: files }), createLogger('silent'));
    expect(paths.tls).toEqual({ ...files, clientCertFile: files.certFile, clientKeyFile: files.keyFile });
    expect(paths.createdPki).toBe(false);
    expect(readdirSync(paths.dataDir)).not.toContain('pki');
  });

  it('uses a configured client certificate and trust anchors with the development server certificate', async () => {
    const files = writeCerts();
    const paths = await ensureDataDir(
      configFor({
        tls: { caFile: files.caFile, clientCertFile: files.certFile, clientKeyFile: files.keyFile },
      }),
      createLogger('silent'),
    );
    expect(paths.createdPki).toBe(true);
    expect(paths.tls).toEqual({
      certFile: join(paths.dataDir, 'pki/server.pem'),
      keyFile: join(paths.dataDir, 'pki/server-key.pem'),
      caFile: files.caFile,
      clientCertFile: files.certFile,
      clientKeyFile: files.keyFile,
    });
  });

  it('lists every configured file that is missing', async () => {
    const missing = join(dir, 'nowhere');
    const err = await ensureDataDir(
      configFor({
        tls: { certFile: `${missing}/c.pem`, keyFile: `${missing}/k.pem`, caFile: `${missing}/ca.pem` },
      }),
      createLogger('silent'),
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      `tls.certFile: file not found: ${missing}/c.pem`,
      `tls.keyFile: file not found: ${missing}/k.pem`,
      `tls.caFile: file not found: ${missing}/ca.pem`,
      `tls.clientCertFile: file not found: ${missing}/c.pem`,
      `tls.clientKeyFile: file not found: ${missing}/k.pem`,
    ]);
  });
});

describe('ensureDataDir with an existing development PKI', () => {
  it('refuses to complete a partial PKI and overwrites nothing', async () => {
    const config = configFor();
    await ensureDataDir(config, createLogger('silent'));
    const pki = join(dir, 'data/pki');
    rmSync(join(pki, 'server-key.pem'));
    const caKey = readFileSync(join(pki, 'ca-key.pem'), 'utf8');
    await expect(ensureDataDir(config, createLogger('silent'))).rejects.toThrow(
      /incomplete development PKI in .*: server-key\.pem missing/,
    );
    expect(readFileSync(join(pki, 'ca-key.pem'), 'utf8')).toBe(caKey);
    expect(readdirSync(join(dir, 'data')).filter((n) => n.startsWith('.pki-'))).toEqual([]);
  });

  it('warns when the configured names are no longer in the certificate', async () => {
    await ensureDataDir(configFor(), createLogger('silent'));
    const { log, text } = capturingLogger();
    await ensureDataDir(configFor({ hostname: 'renamed.cabinet.test' }), log);
    expect(text()).toContain('development certificate does not cover these names');
    expect(text()).toContain('renamed.cabinet.test');
  });
});
