import { X509Certificate } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type {
  DecryptOptions,
  DecryptResult,
  EncryptOptions,
  SignOptions,
  SmimeVerificationResult,
  VerifyOptions,
} from './smime.ts';
import { CryptoError, type CryptoErrorCode } from './types.ts';
import type { WorkReply, WorkRequest } from './worker-pool-worker.ts';

/**
 * A small pool of worker threads for the S/MIME verbs, so RSA and AES on megabyte messages
 * never hold the SMTP event loop (a 2 MB sign+encrypt is ~10 ms of CPU; forty of them in a burst
 * would be 400 ms of no replies on any connection). Same API as crypto/smime.ts; jobs queue FIFO
 * and each worker runs one at a time. A worker that dies fails its job and is replaced.
 *
 * KeyObjects and bytes cross threads by structured clone; X509Certificate objects are sent as
 * their DER.
 */

export interface SmimeWorkerPool {
  sign(options: SignOptions): Promise<Uint8Array>;
  encrypt(options: EncryptOptions): Promise<Uint8Array>;
  decrypt(options: DecryptOptions): Promise<DecryptResult>;
  verify(options: VerifyOptions): Promise<SmimeVerificationResult>;
  /** Sign then encrypt in one round trip (the usual outbound path). */
  signAndEncrypt(options: {
    message: string | Uint8Array;
    sign: Omit<SignOptions, 'message'>;
    encrypt: Omit<EncryptOptions, 'message'>;
  }): Promise<Uint8Array>;
  /** Jobs completed per worker thread id (for tests and metrics). */
  completedByThread(): ReadonlyMap<number, number>;
  readonly size: number;
  /** Waits for running jobs, then stops the workers; queued jobs are rejected. */
  close(): Promise<void>;
}

interface Job {
  request: WorkRequest;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
}

const WORKER_URL = new URL('./worker-pool-worker.ts', import.meta.url);

/** Replaces X509Certificate instances (not cloneable) by their DER, deeply. */
function cloneable(value: unknown): unknown {
  if (value instanceof X509Certificate) return new Uint8Array(value.raw);
  if (Array.isArray(value)) return value.map(cloneable);
  if (value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, cloneable(v)]));
  }
  return value;
}

export function createSmimeWorkerPool(options: { size?: number } = {}): SmimeWorkerPool {
  const size = Math.max(1, options.size ?? Math.max(1, availableParallelism() - 1));
  const queue: Job[] = [];
  const slots: Slot[] = [];
  const completed = new Map<number, number>();
  let nextId = 1;
  let closing = false;

  const spawn = (): Slot => {
    const slot: Slot = { worker: new Worker(WORKER_URL), job: undefined };
    slot.worker.on('message', (reply: WorkReply) => {
      const job = slot.job;
      slot.job = undefined;
      if (job === undefined || job.request.id !== reply.id) return;
      completed.set(reply.threadId, (completed.get(reply.threadId) ?? 0) + 1);
      if (reply.ok) job.resolve(reply.result);
      else if (reply.error.code !== undefined)
        job.reject(new CryptoError(reply.error.code as CryptoErrorCode, reply.error.message));
      else job.reject(new Error(`S/MIME worker: ${reply.error.message}`));
      pump();
    });
    const fail = (cause: unknown) => {
      const job = slot.job;
      slot.job = undefined;
      const i = slots.indexOf(slot);
      if (i >= 0) slots.splice(i, 1);
      job?.reject(new Error('S/MIME worker stopped while running a job', { cause }));
      if (!closing) {
        slots.push(spawn());
        pump();
      }
    };
    slot.worker.on('error', fail);
    slot.worker.on('exit', (code) => {
      if (slots.includes(slot)) fail(new Error(`worker exited with code ${code}`));
    });
    return slot;
  };
  for (let i = 0; i < size; i++) slots.push(spawn());

  function pump(): void {
    for (const slot of slots) {
      if (slot.job !== undefined) continue;
      const job = queue.shift();
      if (job === undefined) return;
      slot.job = job;
      slot.worker.postMessage(job.request);
    }
  }

  function submit<T>(verb: WorkRequest['verb'], opts: object): Promise<T> {
    if (closing) return Promise.reject(new Error('S/MIME worker pool is closed'));
    return new Promise<T>((resolve, reject) => {
      queue.push({
        request: { id: nextId++, verb, options: cloneable(opts) as Record<string, unknown> },
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      pump();
    });
  }

  return {
    size,
    sign: (o) => submit('sign', o),
    encrypt: (o) => submit('encrypt', o),
    decrypt: (o) => submit('decrypt', o),
    verify: (o) => submit('verify', o),
    signAndEncrypt: (o) => submit('signAndEncrypt', o),
    completedByThread: () => completed,
    async close() {
      closing = true;
      for (const job of queue.splice(0)) job.reject(new Error('S/MIME worker pool closed'));
      // Let running jobs finish (they resolve through the message handler), then terminate.
      while (slots.some((s) => s.job !== undefined)) await new Promise((r) => setTimeout(r, 5));
      const all = slots.splice(0);
      await Promise.all(all.map((s) => s.worker.terminate()));
    },
  };
}
