import fs from 'node:fs';
import type { Config } from '../config/schema.ts';
import type { DirectoryStore } from '../directory/directory-store.ts';
import { openMailboxStore, type MailboxStore } from '../directory/mailbox-store.ts';
import {
  openDeliveryQueue,
  startDeliveryWorker,
  type DeliveryQueue,
  type DeliveryWorker,
} from '../queue/delivery-queue.ts';
import { recoverSpool } from '../queue/recovery.ts';
import { openSpool, type Spool } from '../queue/spool.ts';
import type { Deliverer, Notifier } from '../queue/types.ts';
import { createDeliverer } from './delivery.ts';
import { startDirectoryHttp, type DirectoryHttp } from './directory-http.ts';
import { createNotifier } from './dsn.ts';
import { ensureDataDir, type DataPaths } from './first-run.ts';
import { createLocalDelivery } from './local-delivery.ts';
import { createLogger, type Logger } from './log.ts';
import { startIngress, stopIngress, type Listener } from './smtp-ingress.ts';
import { openDirectory, StartupError } from './open-directory.ts';

export { StartupError };

/**
 * The composition root: builds every part from the config and hands each what it needs. Tests
 * pass overrides instead of mocking modules.
 */
export interface AppOverrides {
  logger?: Logger;
  deliverer?: Deliverer;
  notifier?: Notifier;
  /** Run the SMTP listeners (default true). */
  ingress?: boolean;
  /** Run the delivery worker (default true). */
  worker?: boolean;
}

export interface App {
  readonly config: Config;
  readonly logger: Logger;
  readonly paths: DataPaths;
  readonly spool: Spool;
  readonly queue: DeliveryQueue;
  readonly mailboxes: MailboxStore;
  /** The professional directory (config `directory`), hosted mailboxes marked; open while the JSON endpoint is on. */
  readonly directory?: DirectoryStore;
  /** The JSON search endpoint, when `directory.http.enabled`. */
  readonly directoryHttp?: DirectoryHttp;
  readonly listeners: Listener[];
  /** Port of the first listener of a kind, e.g. `port('submission')`. */
  port(kind: Listener['kind']): number;
  /** Re-queues spooled messages that have no job (also runs by itself, see config queue.*). */
  recover(): Promise<void>;
  /** Orderly shutdown: listeners answer 421, running deliveries finish, Redis is let go. */
  stop(): Promise<void>;
}

/** Starts a gateway. Resolves once every listener is bound. */
export async function startApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const logger = overrides.logger ?? createLogger(config.log.level);
  const paths = await ensureDataDir(config, logger);
  const spool = await openSpool(paths.spoolDir);
  // Read before anything is opened or listening: a missing file then leaves nothing behind.
  const tls = {
    key: fs.readFileSync(paths.tls.keyFile, 'utf8'),
    cert: fs.readFileSync(paths.tls.certFile, 'utf8'),
    ca: fs.readFileSync(paths.tls.caFile, 'utf8'),
    clientCert: fs.readFileSync(paths.tls.clientCertFile, 'utf8'),
    clientKey: fs.readFileSync(paths.tls.clientKeyFile, 'utf8'),
  };
  const mailboxes = openMailboxStore(paths.directoryFile);
  // The directory is opened for its only user in the gateway so far, the JSON endpoint: with the
  // endpoint off, a directory back-end that is down (PostgreSQL) does not stop mail.
  let directory: DirectoryStore | undefined;
  let directoryHttp: DirectoryHttp | undefined;
  if (config.directory.http.enabled) {
    try {
      directory = await openDirectory(config, paths, { hostedMailboxes: mailboxes });
    } catch (err) {
      mailboxes.close();
      throw err;
    }
    const { host, port, token } = config.directory.http;
    try {
      // The schema requires the token when enabled.
      directoryHttp = await startDirectoryHttp({
        store: directory,
        host,
        port,
        token: token!,
        logger: logger.child({ part: 'directory-http' }),
      });
    } catch (err) {
      await directory.close();
      mailboxes.close();
      throw new StartupError(
        `cannot start the directory HTTP endpoint on ${host}:${port}: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
    logger.info(
      { listener: 'directory-http', host: directoryHttp.host, port: directoryHttp.port },
      'listening',
    );
  }
  const queue = openDeliveryQueue({ redisUrl: config.redis.url, prefix: config.redis.prefix });

  const deliverer =
    overrides.deliverer ??
    createDeliverer({
      config,
      tls: { ca: tls.ca, cert: tls.clientCert, key: tls.clientKey },
      logger: logger.child({ part: 'delivery' }),
      local: createLocalDelivery({
        mailboxesDir: paths.mailboxesDir,
        isHosted: (a) => mailboxes.isHosted(a),
        hostname: config.hostname,
      }),
    });

  const notifier =
    overrides.notifier ??
    createNotifier({
      hostname: config.hostname,
      // A DSN is a message like any other: spooled, queued, retried; from the null sender, so it
      // is never bounced itself (RFC 5321 §4.5.5).
      async submit(mail) {
        const id = spool.newId();
        await spool.store(
          {
            id,
            mailFrom: '',
            recipients: [{ address: mail.to, notify: 'NEVER' }],
            receivedAt: Date.now(),
            source: { listener: 'internal' },
          },
          mail.data,
        );
        // If Redis is down now, recovery queues it when Redis is back.
        await queue
          .enqueue(id)
          .catch((err: unknown) => logger.warn({ err, queueId: id }, 'DSN queued on disk only'));
        return id;
      },
    });

  let worker: DeliveryWorker | undefined;
  if (overrides.worker !== false) {
    worker = startDeliveryWorker({
      redisUrl: config.redis.url,
      prefix: config.redis.prefix,
      spool,
      deliverer,
      notifier,
      retry: config.delivery.retry,
      concurrency: config.delivery.concurrency,
      lockDuration: config.queue.lockDuration,
      logger: logger.child({ part: 'worker' }),
      hostname: config.hostname,
    });
  }

  let recovering: Promise<void> | undefined;
  const recover = (): Promise<void> => {
    // One sweep at a time; a sweep asked for during one is covered by it.
    recovering ??= recoverSpool({
      spool,
      queue,
      logger: logger.child({ part: 'recovery' }),
      ...(worker ? { isActive: (id: string) => worker!.isActive(id) } : {}),
    })
      .then(() => undefined)
      .catch((err: unknown) => logger.warn({ err }, 'spool recovery failed; will try again'))
      .finally(() => {
        recovering = undefined;
      });
    return recovering;
  };
  // Redis may come back empty (restarted without persistence): re-queue from the spool each time
  // the connection is (re)established, including the first time.
  queue.connection.on('ready', () => void recover());
  if (queue.isReady()) void recover();
  const timers = [
    setInterval(() => void recover(), config.queue.recoveryInterval),
    setInterval(
      () =>
        void spool
          .pruneFinished(config.queue.keepFinishedFor)
          .catch((err: unknown) => logger.warn({ err }, 'pruning tracking records failed')),
      3_600_000,
    ),
  ];
  for (const t of timers) t.unref();

  let listeners: Listener[] = [];
  if (overrides.ingress !== false) {
    try {
      listeners = await startIngress({
        config,
        tls,
        spool,
        queue,
        mailboxes,
        logger: logger.child({ part: 'smtp' }),
      });
    } catch (err) {
      // Close what was opened, so the process can exit instead of lingering half started.
      for (const t of timers) clearInterval(t);
      await worker?.close();
      await recovering;
      await deliverer.close();
      await queue.close();
      await directoryHttp?.close();
      await directory?.close();
      mailboxes.close();
      throw new StartupError(
        `cannot start the SMTP listeners: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
    for (const l of listeners) logger.info({ listener: l.kind, host: l.host, port: l.port }, 'listening');
  }

  let stopping: Promise<void> | undefined;
  return {
    config,
    logger,
    paths,
    spool,
    queue,
    mailboxes,
    ...(directory ? { directory } : {}),
    ...(directoryHttp ? { directoryHttp } : {}),
    listeners,
    port(kind) {
      const l = listeners.find((x) => x.kind === kind);
      if (!l) throw new Error(`no ${kind} listener`);
      return l.port;
    },
    recover,
    stop() {
      stopping ??= (async () => {
        for (const t of timers) clearInterval(t);
        await stopIngress(listeners);
        await directoryHttp?.close();
        await worker?.close();
        await recovering;
        await deliverer.close();
        await queue.close();
        await directory?.close();
        mailboxes.close();
        logger.info({}, 'stopped');
      })();
      return stopping;
    },
  };
}
