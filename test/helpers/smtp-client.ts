import net from 'node:net';
import tls from 'node:tls';

/**
 * A small SMTP client for tests and benchmarks that need to see every reply as it is on the wire
 * (nodemailer hides most of them) or to send what a well-behaved client would not (bare LF).
 * TLS is always verified against the given CA.
 */
export interface SmtpReply {
  code: number;
  /** Every line of the reply without the code, joined with '\n'. */
  text: string;
  /** The enhanced status code of the first line, if any. */
  enhanced?: string;
}

export interface RawSmtpClientOptions {
  host?: string;
  port: number;
  /** TLS from the first byte (port 465 style). */
  implicitTls?: boolean;
  ca?: string | Buffer;
  /** Client certificate for mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  servername?: string;
  timeoutMs?: number;
}

export class RawSmtpClient {
  private socket: net.Socket;
  private buffer = '';
  private lines: string[] = [];
  private waiters: Array<() => void> = [];
  private closed = false;
  private closeError: Error | undefined;
  readonly opts: RawSmtpClientOptions;

  private constructor(socket: net.Socket, opts: RawSmtpClientOptions) {
    this.socket = socket;
    this.opts = opts;
    this.attach(socket);
  }

  static async connect(opts: RawSmtpClientOptions): Promise<{ client: RawSmtpClient; greeting: SmtpReply }> {
    const host = opts.host ?? '127.0.0.1';
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = opts.implicitTls
        ? tls.connect({
            host,
            port: opts.port,
            ca: opts.ca,
            cert: opts.cert,
            key: opts.key,
            servername: opts.servername ?? 'localhost',
          })
        : net.connect({ host, port: opts.port });
      s.once(opts.implicitTls ? 'secureConnect' : 'connect', () => resolve(s));
      s.once('error', reject);
    });
    const client = new RawSmtpClient(socket, opts);
    const greeting = await client.read();
    return { client, greeting };
  }

  private attach(socket: net.Socket): void {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let i: number;
      while ((i = this.buffer.indexOf('\r\n')) >= 0) {
        this.lines.push(this.buffer.slice(0, i));
        this.buffer = this.buffer.slice(i + 2);
      }
      this.wake();
    });
    socket.on('error', (err) => {
      this.closeError = err;
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Reads one (possibly multi-line) reply. Rejects if the connection closes first. */
  async read(): Promise<SmtpReply> {
    const deadline = Date.now() + (this.opts.timeoutMs ?? 30_000);
    const collected: string[] = [];
    for (;;) {
      while (this.lines.length > 0) {
        const line = this.lines.shift()!;
        collected.push(line);
        if (line.length < 4 || line[3] !== '-') {
          const code = Number(line.slice(0, 3));
          const text = collected.map((l) => l.slice(4)).join('\n');
          const m = /^([245]\.\d{1,3}\.\d{1,3}) /.exec(collected[0]!.slice(4));
          return { code, text, ...(m ? { enhanced: m[1] } : {}) };
        }
      }
      if (this.closed) {
        throw new Error(
          `connection closed while waiting for a reply${this.closeError ? `: ${this.closeError.message}` : ''}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for an SMTP reply');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends raw bytes (no CRLF added). */
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) =>
      this.socket.write(data, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Sends a command line and reads its reply. */
  async command(line: string): Promise<SmtpReply> {
    await this.write(`${line}\r\n`);
    return this.read();
  }

  /** EHLO + STARTTLS + EHLO, verifying the server certificate. */
  async startTls(ehloName = 'client.test'): Promise<void> {
    const ehlo = await this.command(`EHLO ${ehloName}`);
    if (ehlo.code !== 250) throw new Error(`EHLO failed: ${ehlo.code} ${ehlo.text}`);
    const r = await this.command('STARTTLS');
    if (r.code !== 220) throw new Error(`STARTTLS refused: ${r.code} ${r.text}`);
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({
        socket: plain,
        ca: this.opts.ca,
        cert: this.opts.cert,
        key: this.opts.key,
        servername: this.opts.servername ?? 'localhost',
      });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    const again = await this.command(`EHLO ${ehloName}`);
    if (again.code !== 250) throw new Error(`EHLO after STARTTLS failed: ${again.code} ${again.text}`);
  }

  /** AUTH PLAIN. Returns the reply (235 on success). */
  authPlain(user: string, password: string): Promise<SmtpReply> {
    const token = Buffer.from(`\0${user}\0${password}`).toString('base64');
    return this.command(`AUTH PLAIN ${token}`);
  }

  /**
   * Sends a message body after DATA's 354: dot-stuffs lines, terminates with CRLF.CRLF and returns
   * the final reply. `raw` skips the CRLF normalisation (to test bare LF handling).
   */
  async data(body: string | Buffer, opts: { raw?: boolean } = {}): Promise<SmtpReply> {
    const r = await this.command('DATA');
    if (r.code !== 354) return r;
    return this.sendBody(body, opts);
  }

  async sendBody(body: string | Buffer, opts: { raw?: boolean } = {}): Promise<SmtpReply> {
    let text = Buffer.isBuffer(body) ? body.toString('latin1') : body;
    if (!opts.raw) text = text.replace(/\r?\n/g, '\r\n');
    text = text.replace(/(^|\r\n)\./g, '$1..');
    if (!text.endsWith('\r\n')) text += '\r\n';
    await this.write(Buffer.from(`${text}.\r\n`, 'latin1'));
    return this.read();
  }

  async quit(): Promise<void> {
    if (this.closed) return;
    try {
      await this.command('QUIT');
    } catch {
      // the server may close first; either way the session is over
    }
    this.socket.destroy();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A minimal RFC 5322 message with CRLF line endings. */
export function makeMessage(opts: {
  from: string;
  to: string;
  subject?: string;
  messageId?: string;
  bodySize?: number;
}): string {
  const lines = [
    `From: <${opts.from}>`,
    `To: <${opts.to}>`,
    `Subject: ${opts.subject ?? 'test'}`,
    `Message-ID: <${opts.messageId ?? `${Date.now()}.${Math.random().toString(36).slice(2)}@test`}>`,
    `Date: ${new Date().toUTCString()}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
  ];
  const size = opts.bodySize ?? 100;
  const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.';
  let body = '';
  while (body.length < size) body += `${line}\r\n`;
  return `${lines.join('\r\n')}\r\n${body}`;
}
