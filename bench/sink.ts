import { fork, type ChildProcess } from 'node:child_process';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';
import { nowMs } from './stats.ts';

/**
 * The benchmark's next hop: a counting SMTP sink in its own process, so that it does not share
 * the bench client's event loop and is measured apart from the gateway. Unlike
 * test/helpers/smtp-sink.ts it keeps no message bytes: for each message it notes the Message-ID
 * and the time the final dot arrived (monotonic clock shared by all processes, see nowMs).
 * STARTTLS with the test PKI certificate; no AUTH; DSN, PIPELINING and 8BITMIME like Postfix.
 *
 * Run as `node bench/sink.ts` by startSinkProcess(); it speaks to its parent over IPC.
 */

export interface Arrivals {
  /** Message-IDs without angle brackets, in arrival order ('' when a message had none). */
  ids: string[];
  /** Arrival times (ms, nowMs clock), same order. */
  times: number[];
}

export interface SinkProcess {
  port: number;
  pid: number;
  /** Arrivals since the previous call. */
  collect(): Promise<Arrivals>;
  close(): Promise<void>;
}

type ToSink = { type: 'start'; key: string; cert: string } | { type: 'collect' } | { type: 'stop' };
type FromSink = { type: 'ready'; port: number } | ({ type: 'arrivals' } & Arrivals);

/** Reads at most this much of a message looking for its Message-ID header (bytes). */
const HEADER_SCAN_LIMIT = 16 * 1024;
const MESSAGE_ID = /^Message-ID:[ \t]*<([^>\r\n]*)>/im;

export async function startSinkProcess(tls: { key: string; cert: string }): Promise<SinkProcess> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const pending: Array<(m: FromSink) => void> = [];
  child.on('message', (m: FromSink) => pending.shift()?.(m));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ask = (msg: ToSink): Promise<FromSink> =>
    new Promise((resolve, reject) => {
      if (!child.connected) return reject(new Error('bench sink process is gone'));
      pending.push(resolve);
      child.send(msg);
    });
  const ready = await Promise.race([
    ask({ type: 'start', key: tls.key, cert: tls.cert }),
    exited.then(() => {
      throw new Error('bench sink process exited before listening');
    }),
  ]);
  if (ready.type !== 'ready') throw new Error(`bench sink: unexpected ${ready.type}`);
  return {
    port: ready.port,
    pid: child.pid!,
    async collect() {
      const m = await ask({ type: 'collect' });
      if (m.type !== 'arrivals') throw new Error(`bench sink: unexpected ${m.type}`);
      return { ids: m.ids, times: m.times };
    },
    async close() {
      if (child.connected) child.send({ type: 'stop' } satisfies ToSink);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function runSink(): void {
  let ids: string[] = [];
  let times: number[] = [];
  let server: SMTPServer | undefined;
  const sockets = new Set<net.Socket>();
  const send = (m: FromSink) => process.send!(m);

  process.on('message', (m: ToSink) => {
    if (m.type === 'start') {
      server = new SMTPServer({
        key: m.key,
        cert: m.cert,
        name: 'sink.bench.test',
        banner: 'bench sink',
        authOptional: true,
        disabledCommands: ['AUTH'],
        hideDSN: false,
        disableReverseLookup: true,
        logger: false,
        closeTimeout: 100,
        onData(stream, _session, callback) {
          let head: Buffer[] | undefined = [];
          let headBytes = 0;
          let id = '';
          stream.on('data', (chunk: Buffer) => {
            if (!head) return;
            head.push(chunk);
            headBytes += chunk.length;
            const text = Buffer.concat(head).toString('latin1');
            const end = text.indexOf('\r\n\r\n');
            const found = MESSAGE_ID.exec(end >= 0 ? text.slice(0, end) : text);
            if (found || end >= 0 || headBytes >= HEADER_SCAN_LIMIT) {
              id = found?.[1] ?? '';
              head = undefined;
            }
          });
          stream.on('end', () => {
            ids.push(id);
            times.push(nowMs());
            callback(null, `2.0.0 Ok: queued as ${ids.length}`);
          });
        },
      });
      server.on('error', () => {}); // a client going away mid-session is not the sink's problem
      server.server.on('connection', (s: net.Socket) => {
        sockets.add(s);
        s.once('close', () => sockets.delete(s));
      });
      server.listen(0, '127.0.0.1', () => {
        send({ type: 'ready', port: (server!.server.address() as net.AddressInfo).port });
      });
    } else if (m.type === 'collect') {
      send({ type: 'arrivals', ids, times });
      ids = [];
      times = [];
    } else if (m.type === 'stop') {
      for (const s of sockets) s.destroy();
      if (server) server.close(() => process.exit(0));
      else process.exit(0);
    }
  });
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) runSink();
