#!/usr/bin/env -S node --max-semi-space-size=16
/**
 * `courrier`: the admin's entry point. `courrier serve` runs the gateway; the other commands work
 * on the same data folder and Redis, so they can be used while a gateway runs.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { ConfigError, loadConfig, printConfig } from '../config/index.ts';
import type { Config } from '../config/schema.ts';
import {
  MAILBOX_TYPES,
  MailboxError,
  openMailboxStore,
  type MailboxStore,
  type MailboxType,
} from '../directory/mailbox-store.ts';
import type { DeliveryQueue } from '../queue/delivery-queue.ts';
import { openSpool } from '../queue/spool.ts';
import {
  AdminError,
  holdMessage,
  listQueue,
  messageStatus,
  purgeMessage,
  releaseMessage,
  retryMessage,
  type MessageStatus,
} from './admin.ts';
import { StartupError } from './open-directory.ts';
import { CliError, registerDirectoryCommands, registerMailboxKeyCommands } from './directory-cli.ts';
import { ensureDataDir, type DataPaths } from './first-run.ts';
import { createLogger } from './log.ts';

/** A command's result, on stdout (the logger is for the gateway's own events, on serve). */
function out(text: string): void {
  process.stdout.write(`${text}\n`);
}

class UsageError extends Error {
  override readonly name = 'UsageError';
}

function configFrom(cmd: Command): Config {
  const opts = cmd.optsWithGlobals<{ config?: string }>();
  return loadConfig({ file: opts.config, env: process.env }).config;
}

function adminName(): string {
  return process.env.SUDO_USER ?? process.env.USER ?? 'admin';
}

function printJsonOr(json: boolean, value: unknown, text: () => string): void {
  out(json ? JSON.stringify(value, null, 2) : text());
}

function formatStatus(m: MessageStatus): string {
  if (m.status === 'unreadable') return `${m.id}  unreadable: ${m.problem ?? ''}`;
  const lines = [
    `${m.id}  ${m.status}  from ${m.mailFrom}  ${m.size} bytes  received ${m.receivedAt}  attempts ${m.attempts}` +
      (m.nextAttemptAt ? `  next ${m.nextAttemptAt}` : ''),
  ];
  for (const r of m.recipients) {
    lines.push(
      `  ${r.address}  ${r.state}${r.uncertain ? ' (possible duplicate)' : ''}` +
        (r.remoteId ? `  remote id ${r.remoteId}` : '') +
        (r.lastReply ? `  last reply: ${r.lastReply}` : ''),
    );
  }
  return lines.join('\n');
}

async function withQueue<T>(
  config: Config,
  fn: (ctx: { spool: Awaited<ReturnType<typeof openSpool>>; queue: DeliveryQueue }) => Promise<T>,
): Promise<T> {
  const spool = await openSpool(`${config.dataDir}/spool`);
  // Loaded on demand: directory and mailbox commands do not need BullMQ.
  const { openDeliveryQueue } = await import('../queue/delivery-queue.ts');
  const queue = openDeliveryQueue({ redisUrl: config.redis.url, prefix: config.redis.prefix });
  try {
    await waitReady(queue);
    return await fn({ spool, queue });
  } finally {
    await queue.close();
  }
}

async function waitReady(queue: DeliveryQueue): Promise<void> {
  for (let i = 0; i < 50 && !queue.isReady(); i++) await new Promise((r) => setTimeout(r, 100));
  if (!queue.isReady()) throw new AdminError('Redis is not reachable (check redis.url); nothing was changed');
}

/** Creates the data folder if needed; says so when that made the first (dev) mailbox. */
async function dataDir(config: Config): Promise<DataPaths> {
  const paths = await ensureDataDir(config, createLogger('error'));
  if (paths.devMailbox) {
    console.error(
      `courrier: created ${paths.dataDir} with a first mailbox ${paths.devMailbox.address}, ` +
        `password ${paths.devMailbox.password} (also in ${paths.dataDir}/dev-credentials.txt)`,
    );
  }
  return paths;
}

/** Runs `fn` with the mailbox store of the configured data folder, closing it afterwards. */
async function withMailboxes(cmd: Command, fn: (store: MailboxStore) => Promise<void>): Promise<void> {
  const paths = await dataDir(configFrom(cmd));
  const store = openMailboxStore(paths.directoryFile);
  try {
    await fn(store);
  } finally {
    store.close();
  }
}

function readPassword(opts: { passwordStdin?: boolean }): string | undefined {
  if (!opts.passwordStdin) return undefined;
  return readFileSync(0, 'utf8').replace(/\r?\n$/, '');
}

export function buildCli(): Command {
  const program = new Command('courrier')
    .description('Courrier: secure-mail gateway for health professionals')
    .option('-c, --config <file>', 'config file (default: $COURRIER_CONFIG or ./courrier.yaml)')
    .showHelpAfterError()
    .exitOverride();

  program
    .command('serve')
    .description('run the gateway (SMTP listeners and delivery workers)')
    .action(async (_opts, cmd: Command) => {
      const config = configFrom(cmd);
      const { startApp } = await import('./app.ts');
      const app = await startApp(config);
      const { devMailbox } = app.paths;
      console.error(
        [
          `Courrier is running (data in ${app.paths.dataDir}).`,
          ...app.listeners.map((l) => `  ${l.kind.padEnd(11)} smtp://${l.host}:${l.port}`),
          `  trust anchor (dev CA): ${app.paths.tls.caFile}`,
          ...(devMailbox
            ? [`  first mailbox: ${devMailbox.address}  password: ${devMailbox.password}  (shown once)`]
            : []),
          'Stop with Ctrl-C.',
        ].join('\n'),
      );
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        app.logger.info({ signal }, 'shutting down');
        app.stop().then(
          () => process.exit(0),
          (err: unknown) => {
            app.logger.error({ err }, 'shutdown failed');
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });

  program
    .command('init')
    .description('create the data folder, development PKI and first mailbox without starting')
    .action(async (_opts, cmd: Command) => {
      const config = configFrom(cmd);
      const paths = await dataDir(config);
      out(`data folder: ${paths.dataDir}`);
      if (paths.devMailbox) {
        out(`first mailbox: ${paths.devMailbox.address}  password: ${paths.devMailbox.password}`);
      }
    });

  const configCmd = program.command('config').description('inspect the configuration');
  configCmd
    .command('print')
    .description('print the effective configuration, secrets redacted')
    .action((_opts, cmd: Command) => {
      process.stdout.write(printConfig(configFrom(cmd)));
    });
  configCmd
    .command('check')
    .description('validate the configuration and exit')
    .action((_opts, cmd: Command) => {
      configFrom(cmd);
      out('configuration is valid');
    });

  program
    .command('message')
    .description('messages')
    .command('status <id>')
    .description('per-recipient delivery status of a message')
    .option('--json', 'machine-readable output')
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
      const config = configFrom(cmd);
      const spool = await openSpool(`${config.dataDir}/spool`);
      const status = messageStatus(spool, id);
      printJsonOr(Boolean(opts.json), status, () => formatStatus(status));
    });

  const queueCmd = program.command('queue').description('queue control');
  queueCmd
    .command('list')
    .description('messages waiting for delivery')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const config = configFrom(cmd);
      const spool = await openSpool(`${config.dataDir}/spool`);
      const list = listQueue(spool);
      printJsonOr(Boolean(opts.json), list, () =>
        list.length === 0 ? 'queue is empty' : list.map(formatStatus).join('\n'),
      );
    });
  const perId = (
    name: string,
    description: string,
    fn: (ctx: Parameters<Parameters<typeof withQueue>[1]>[0], id: string) => Promise<void>,
  ) =>
    queueCmd
      .command(`${name} <ids...>`)
      .description(description)
      .action(async (ids: string[], _opts, cmd: Command) => {
        const config = configFrom(cmd);
        await withQueue(config, async (ctx) => {
          for (const id of ids) {
            await fn(ctx, id);
            out(`${id}: ${name} done`);
          }
        });
      });
  perId('hold', 'stop delivery attempts until released', ({ spool, queue }, id) =>
    holdMessage(spool, queue, id, adminName()),
  );
  perId('release', 'release held messages and try them now', ({ spool, queue }, id) =>
    releaseMessage(spool, queue, id, adminName()),
  );
  perId('retry', 'try deferred messages now', ({ spool, queue }, id) => retryMessage(spool, queue, id));
  perId('purge', 'delete messages from the queue without delivering them (no DSN)', ({ spool, queue }, id) =>
    purgeMessage(spool, queue, id, adminName()),
  );

  const mailbox = program.command('mailbox').description('mailboxes hosted here');
  mailbox
    .command('add <address>')
    .description('add a mailbox (password read from stdin with --password-stdin)')
    .option('--type <type>', 'PER, ORG, APP or CAB', 'PER')
    .option('--name <displayName>', 'display name')
    .option('--password-stdin', 'read the password from standard input')
    .action((address: string, opts: { type: string; name?: string; passwordStdin?: boolean }, cmd: Command) =>
      withMailboxes(cmd, async (store) => {
        const type = opts.type.toUpperCase();
        if (!MAILBOX_TYPES.includes(type as MailboxType)) {
          throw new UsageError(`--type must be one of ${MAILBOX_TYPES.join(', ')}`);
        }
        const password = readPassword(opts);
        const m = await store.add(address, {
          type: type as MailboxType,
          ...(opts.name ? { displayName: opts.name } : {}),
          ...(password ? { password } : {}),
        });
        out(`added ${m.address} (${m.type})${m.hasPassword ? '' : ' without a password'}`);
      }),
    );
  mailbox
    .command('passwd <address>')
    .description('set a mailbox password (read from stdin)')
    .action((address: string, _opts, cmd: Command) =>
      withMailboxes(cmd, async (store) => {
        const password = readPassword({ passwordStdin: true });
        if (!password) throw new UsageError('give the password on standard input');
        await store.setPassword(address, password);
        out(`password set for ${address}`);
      }),
    );
  mailbox
    .command('list')
    .description('list mailboxes hosted here')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }, cmd: Command) =>
      withMailboxes(cmd, async (store) => {
        const list = store.list();
        printJsonOr(Boolean(opts.json), list, () => list.map((m) => `${m.address}  ${m.type}`).join('\n'));
      }),
    );
  mailbox
    .command('remove <address>')
    .description('remove a mailbox')
    .action((address: string, _opts, cmd: Command) =>
      withMailboxes(cmd, async (store) => {
        if (!store.remove(address)) throw new AdminError(`no mailbox ${address}`);
        out(`removed ${address}`);
      }),
    );
  const ctx = { configFrom, dataDir, out };
  registerMailboxKeyCommands(mailbox, ctx);
  registerDirectoryCommands(program, ctx);
  return program;
}

/** Runs the CLI; expected errors become one clear line and exit code 1 (2 for usage errors). */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof ConfigError) {
      console.error(`courrier: invalid configuration:\n  ${err.problems.join('\n  ')}`);
      process.exitCode = 2;
      return;
    }
    if (err instanceof UsageError) {
      console.error(`courrier: ${err.message}`);
      process.exitCode = 2;
      return;
    }
    if (
      err instanceof AdminError ||
      err instanceof MailboxError ||
      err instanceof StartupError ||
      err instanceof CliError
    ) {
      console.error(`courrier: ${err.message}`);
      process.exitCode = 1;
      return;
    }
    console.error('courrier: unexpected error:', err);
    process.exitCode = 1;
  }
}

if (import.meta.main) await main(process.argv);
