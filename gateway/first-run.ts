import { X509Certificate, randomInt } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ConfigError, type Config } from '../config/index.ts';
import { generateDevPki } from '../crypto/dev-pki.ts';
import { openMailboxStore } from '../directory/index.ts';
import type { Logger } from './log.ts';

/**
 * First run: makes the data folder usable so that `courrier serve` works with no setup at all. It
 * creates the folders, a development PKI when no certificate is configured, the mailbox directory
 * and, when that directory is empty, one development mailbox whose password is returned (for the
 * CLI to show once) and written to `dev-credentials.txt`. Every step only creates what is missing:
 * a second run changes nothing.
 */

export interface TlsPaths {
  /** Server certificate, leaf then chain. */
  certFile: string;
  keyFile: string;
  /** Trust anchors for next hops and client certificates. */
  caFile: string;
  /** Client certificate for mutual TLS with next hops (the server certificate unless configured). */
  clientCertFile: string;
  clientKeyFile: string;
}

export interface DataPaths {
  dataDir: string;
  spoolDir: string;
  mailboxesDir: string;
  directoryFile: string;
  /** Effective certificate files: the configured ones, else the development PKI's. */
  tls: TlsPaths;
  /** True when this call generated the development PKI. */
  createdPki: boolean;
  /** Set only by the call that created it: show it once, it is not kept anywhere else in clear. */
  devMailbox?: { address: string; password: string };
}

export const PKI_FILES = {
  caCert: 'ca.pem',
  caKey: 'ca-key.pem',
  serverCert: 'server.pem',
  serverKey: 'server-key.pem',
} as const;
export const DEV_CREDENTIALS_FILE = 'dev-credentials.txt';
const DEV_PASSWORD_LENGTH = 20;
/** No 0/O, 1/l/I: the password is read off a terminal. 56 symbols, 20 of them ≈ 116 bits. */
const PASSWORD_ALPHABET = 'abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
/** Warn when the development certificate has less than this left (ms). */
const EXPIRY_WARNING_MS = 30 * 86_400_000;

/** Creates what is missing in `config.dataDir` and returns the paths the gateway runs on. */
export async function ensureDataDir(config: Config, log: Logger): Promise<DataPaths> {
  const dataDir = resolve(config.dataDir);
  ensureDir(dataDir, log);
  const spoolDir = join(dataDir, 'spool');
  const mailboxesDir = join(dataDir, 'mailboxes');
  ensureDir(spoolDir, log);
  ensureDir(mailboxesDir, log);

  const { tls, createdPki } = ensureTls(config, dataDir, log);
  const directoryFile = join(dataDir, 'directory.sqlite');
  const devMailbox = await ensureDevMailbox(config, dataDir, directoryFile, log);

  const paths: DataPaths = { dataDir, spoolDir, mailboxesDir, directoryFile, tls, createdPki };
  if (devMailbox !== undefined) paths.devMailbox = devMailbox;
  return paths;
}

function ensureDir(dir: string, log: Logger): void {
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new Error(`${dir} exists and is not a directory`);
    // The operator's choice, but say it: this folder holds messages and keys.
    if ((statSync(dir).mode & 0o077) !== 0)
      log.warn({ dir }, 'data folder readable by other users (expected mode 0700)');
    return;
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  log.info({ dir }, 'created data folder');
}

// ---------------------------------------------------------------------------------------------
// TLS

function ensureTls(config: Config, dataDir: string, log: Logger): { tls: TlsPaths; createdPki: boolean } {
  const configured = config.tls;
  if (
    configured.certFile !== undefined &&
    configured.keyFile !== undefined &&
    configured.caFile !== undefined
  ) {
    const tls: TlsPaths = {
      certFile: configured.certFile,
      keyFile: configured.keyFile,
      caFile: configured.caFile,
      clientCertFile: configured.clientCertFile ?? configured.certFile,
      clientKeyFile: configured.clientKeyFile ?? configured.keyFile,
    };
    checkConfiguredFiles(tls);
    return { tls, createdPki: false };
  }

  const pkiDir = join(dataDir, 'pki');
  const dev = {
    caFile: join(pkiDir, PKI_FILES.caCert),
    certFile: join(pkiDir, PKI_FILES.serverCert),
    keyFile: join(pkiDir, PKI_FILES.serverKey),
  };
  const createdPki = ensureDevPki(config, pkiDir, log);
  if (!createdPki) checkDevCertificate(config, dev.certFile, log);
  log.warn(
    { pkiDir },
    'using the development PKI: not for production (set tls.certFile, tls.keyFile, tls.caFile)',
  );

  const tls: TlsPaths = {
    certFile: dev.certFile,
    keyFile: dev.keyFile,
    caFile: configured.caFile ?? dev.caFile,
    clientCertFile: configured.clientCertFile ?? dev.certFile,
    clientKeyFile: configured.clientKeyFile ?? dev.keyFile,
  };
  checkConfiguredFiles(tls);
  return { tls, createdPki };
}

/** Config names files that must exist: list every missing one at once, as config errors. */
function checkConfiguredFiles(tls: TlsPaths): void {
  const problems = Object.entries(tls)
    .filter(([, file]) => !existsSync(file))
    .map(([key, file]) => `tls.${key}: file not found: ${file}`);
  if (problems.length > 0) throw new ConfigError(problems);
}

/** Generates the development PKI into `pkiDir` unless it is there. True if it was generated. */
function ensureDevPki(config: Config, pkiDir: string, log: Logger): boolean {
  const names = Object.values(PKI_FILES);
  const present = names.filter((n) => existsSync(join(pkiDir, n)));
  if (present.length === names.length) return false;
  if (present.length > 0) {
    // Regenerating only part would pair a key with the wrong certificate, or change the CA that
    // peers trust without saying so.
    const missing = names.filter((n) => !present.includes(n));
    throw new Error(
      `incomplete development PKI in ${pkiDir}: ${missing.join(', ')} missing. ` +
        'Remove the folder to generate a new one (peers will then need the new ca.pem).',
    );
  }

  const { ca, server } = generateDevPki({ hostname: config.hostname, localDomains: config.localDomains });
  // Written to a fresh folder, then renamed into place: never a half-written PKI.
  const staging = join(dirname(pkiDir), `.pki-${process.pid}-${Date.now()}`);
  mkdirSync(staging, { mode: 0o700 });
  try {
    writeFileSync(join(staging, PKI_FILES.caKey), ca.keyPem, { mode: 0o600, flag: 'wx' });
    writeFileSync(join(staging, PKI_FILES.serverKey), server.keyPem, { mode: 0o600, flag: 'wx' });
    writeFileSync(join(staging, PKI_FILES.caCert), ca.certPem, { mode: 0o644, flag: 'wx' });
    // Leaf then chain, as TLS servers send it (RFC 8446 §4.4.2).
    writeFileSync(join(staging, PKI_FILES.serverCert), server.certPem + ca.certPem, {
      mode: 0o644,
      flag: 'wx',
    });
    // rename() replaces an empty folder, fails on a non-empty one.
    if (existsSync(pkiDir) && readdirSync(pkiDir).length > 0) throw new Error(`${pkiDir} is not empty`);
    renameSync(staging, pkiDir);
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw new Error(`cannot write the development PKI to ${pkiDir}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  log.info(
    { pkiDir, hostname: config.hostname, localDomains: config.localDomains },
    'generated development PKI',
  );
  return true;
}

/** The development certificate was made for the config of its first run: say when it no longer fits. */
function checkDevCertificate(config: Config, certFile: string, log: Logger): void {
  // X509Certificate reads the first PEM block: the leaf.
  const cert = new X509Certificate(readFileSync(certFile));
  const names = [config.hostname, ...config.localDomains].filter((n) => cert.checkHost(n) === undefined);
  if (names.length > 0) {
    log.warn(
      { certFile, names },
      'development certificate does not cover these names; remove the pki folder to regenerate it',
    );
  }
  const left = Date.parse(cert.validTo) - Date.now();
  if (left < EXPIRY_WARNING_MS) {
    log.warn(
      { certFile, validTo: cert.validTo },
      left < 0 ? 'development certificate has expired' : 'development certificate expires soon',
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Directory and development mailbox

async function ensureDevMailbox(
  config: Config,
  dataDir: string,
  directoryFile: string,
  log: Logger,
): Promise<{ address: string; password: string } | undefined> {
  const store = openMailboxStore(directoryFile);
  try {
    if (store.list().length > 0) return undefined;
    const domain = config.localDomains[0];
    if (domain === undefined) {
      log.warn('no local domain configured: no development mailbox created');
      return undefined;
    }
    const address = `dev@${domain}`;
    const password = randomPassword();
    // Credentials first: if we stop before the mailbox exists, the next run starts over; the
    // reverse order could leave a mailbox whose password nobody knows.
    const credentialsFile = join(dataDir, DEV_CREDENTIALS_FILE);
    writeFileAtomic(
      credentialsFile,
      [
        `# Courrier development mailbox, created ${new Date().toISOString()}.`,
        '# Change the password (courrier mailbox passwd) and delete this file once noted.',
        `address: ${address}`,
        `password: ${password}`,
        '',
      ].join('\n'),
      0o600,
    );
    await store.add(address, { type: 'PER', displayName: 'Development mailbox', password });
    log.info({ domain, credentialsFile }, 'created development mailbox');
    return { address, password };
  } finally {
    store.close();
  }
}

function randomPassword(): string {
  let password = '';
  // randomInt draws without modulo bias.
  for (let i = 0; i < DEV_PASSWORD_LENGTH; i++)
    password += PASSWORD_ALPHABET[randomInt(PASSWORD_ALPHABET.length)];
  return password;
}

function writeFileAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  // A leftover from a crash would keep its old mode: start from nothing.
  rmSync(tmp, { force: true });
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  renameSync(tmp, file);
}
