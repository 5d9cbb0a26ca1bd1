import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CLOCK_TICKS, procStat } from './stats.ts';

/**
 * A private Postfix instance for the comparison: its own configuration, queue and data folders
 * under a temporary folder (`postfix -c`), the system's /etc/postfix untouched. It listens on a
 * free loopback port and relays everything to the bench sink over verified TLS, as the gateway
 * does. Differences from the gateway, said in the output: no SMTP AUTH (Postfix relays for
 * `mynetworks = 127.0.0.0/8` instead; Cyrus/Dovecot SASL is not set up), so the client skips AUTH.
 */
const run = promisify(execFile);
const POSTFIX = '/usr/sbin/postfix';

export interface PostfixInstance {
  port: number;
  version: string;
  /** CPU seconds used so far by the master, its live children and the children it reaped. */
  cpuSeconds(): number | undefined;
  stop(): Promise<void>;
}

export type PostfixSetup = { ok: true; instance: PostfixInstance } | { ok: false; reason: string };

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function mainCf(o: {
  queueDir: string;
  dataDir: string;
  sinkPort: number;
  certFile: string;
  keyFile: string;
  caFile: string;
}): string {
  return `# Courrier bench: a private relay instance, see bench/postfix.ts
compatibility_level = 3.6
queue_directory = ${o.queueDir}
data_directory = ${o.dataDir}
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = ${o.dataDir}
maillog_file = ${o.dataDir}/maillog
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
relay_domains =
alias_maps =
alias_database =
biff = no
# Relay for loopback clients without AUTH (the gateway requires AUTH: a difference).
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
# Clients must use STARTTLS, like the gateway's submission port.
smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = ${o.certFile}
smtpd_tls_key_file = ${o.keyFile}
smtpd_tls_session_cache_database =
# Everything goes to the sink, over TLS verified against the bench CA for the name localhost
# (the gateway's route has tlsServername: localhost).
relayhost = [127.0.0.1]:${o.sinkPort}
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = localhost
smtp_tls_CAfile = ${o.caFile}
# Keep TLS connections to the sink open between messages (Postfix >= 3.4; the gateway's
# nodemailer pool does the same).
smtp_tls_connection_reuse = yes
smtp_tls_session_cache_database =
`;
}

/** master.cf: the services a relay needs, none chrooted (the queue folder is not a chroot jail). */
function masterCf(port: number): string {
  return `127.0.0.1:${port} inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
tlsproxy unix - - n - 0 tlsproxy
postlog unix-dgram n - n - 1 postlogd
`;
}

/** Sets up and starts the instance; explains why not when it cannot. */
export async function startPostfix(opts: {
  sinkPort: number;
  cert: string;
  key: string;
  ca: string;
}): Promise<PostfixSetup> {
  if (!fs.existsSync(POSTFIX)) return { ok: false, reason: 'not installed (apt-get install postfix)' };
  if (process.getuid?.() !== 0) {
    return {
      ok: false,
      reason: 'installed, but starting a Postfix instance needs root (run the bench as root)',
    };
  }
  // Postfix daemons run as the postfix user: every folder on the way must be searchable by it.
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'courrier-bench-postfix-'));
  fs.chmodSync(base, 0o755);
  const etc = path.join(base, 'etc');
  const queueDir = path.join(base, 'queue');
  const dataDir = path.join(base, 'data');
  fs.mkdirSync(etc);
  fs.mkdirSync(queueDir, { mode: 0o755 });
  fs.mkdirSync(dataDir, { mode: 0o700 });
  try {
    const uid = Number((await run('id', ['-u', 'postfix'])).stdout.trim());
    const gid = Number((await run('id', ['-g', 'postfix'])).stdout.trim());
    fs.chownSync(dataDir, uid, gid); // the master's lock file and postlogd's log live here
  } catch (err) {
    fs.rmSync(base, { recursive: true, force: true });
    return { ok: false, reason: `installed, but no postfix user (${(err as Error).message})` };
  }
  fs.writeFileSync(path.join(etc, 'cert.pem'), opts.cert);
  fs.writeFileSync(path.join(etc, 'key.pem'), opts.key, { mode: 0o600 });
  fs.writeFileSync(path.join(etc, 'ca.pem'), opts.ca);
  const port = await freePort();
  fs.writeFileSync(
    path.join(etc, 'main.cf'),
    mainCf({
      queueDir,
      dataDir,
      sinkPort: opts.sinkPort,
      certFile: path.join(etc, 'cert.pem'),
      keyFile: path.join(etc, 'key.pem'),
      caFile: path.join(etc, 'ca.pem'),
    }),
  );
  fs.writeFileSync(path.join(etc, 'master.cf'), masterCf(port));
  const postfix = (...args: string[]) => run(POSTFIX, ['-c', etc, ...args], { timeout: 60_000 });
  const fail = async (what: string, err: unknown): Promise<PostfixSetup> => {
    const e = err as { stderr?: string; message?: string };
    let log = '';
    try {
      log = fs.readFileSync(path.join(dataDir, 'maillog'), 'utf8').split('\n').slice(-5).join('\n');
    } catch {
      // no log written yet
    }
    await postfix('abort').catch(() => undefined);
    fs.rmSync(base, { recursive: true, force: true });
    const detail = `${(e.stderr || e.message || String(err)).trim()}${log ? `\n${log}` : ''}`;
    return { ok: false, reason: `${what} failed: ${detail}` };
  };

  let version: string;
  try {
    version = (await run('/usr/sbin/postconf', ['-d', '-h', 'mail_version'])).stdout.trim();
    await postfix('start');
  } catch (err) {
    return fail('postfix start', err);
  }
  const pidFile = path.join(queueDir, 'pid', 'master.pid');
  // Wait for the master and its listener.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const listening = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (listening && fs.existsSync(pidFile)) break;
    if (Date.now() > deadline) return fail('waiting for the postfix listener', new Error('timed out'));
    await new Promise((r) => setTimeout(r, 100));
  }
  const masterPid = Number(fs.readFileSync(pidFile, 'utf8').trim());

  return {
    ok: true,
    instance: {
      port,
      version,
      cpuSeconds: () => postfixCpuSeconds(masterPid),
      async stop() {
        await postfix('stop').catch(() => postfix('abort').catch(() => undefined));
        fs.rmSync(base, { recursive: true, force: true });
      },
    },
  };
}

/** CPU seconds of the master, its live children and the children it has reaped (Linux /proc). */
function postfixCpuSeconds(masterPid: number): number | undefined {
  const master = procStat(masterPid);
  if (!master) return undefined;
  let ticks = master.utime + master.stime + master.cutime + master.cstime;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const child = procStat(Number(entry));
    if (child?.ppid === masterPid) ticks += child.utime + child.stime;
  }
  return ticks / CLOCK_TICKS;
}
