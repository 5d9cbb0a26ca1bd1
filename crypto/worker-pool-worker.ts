import { parentPort, threadId } from 'node:worker_threads';
import { decrypt, encrypt, sign, verify } from './smime.ts';
import { CryptoError } from './types.ts';

/** Worker side of worker-pool.ts: runs one S/MIME verb per message and answers with its id. */

export interface WorkRequest {
  id: number;
  verb: 'sign' | 'encrypt' | 'decrypt' | 'verify' | 'signAndEncrypt';
  options: Record<string, unknown>;
}

export type WorkReply =
  | { id: number; ok: true; result: unknown; threadId: number }
  | { id: number; ok: false; error: { code?: string; message: string }; threadId: number };

async function run(req: WorkRequest): Promise<unknown> {
  const o = req.options as never;
  switch (req.verb) {
    case 'sign':
      return sign(o);
    case 'encrypt':
      return encrypt(o);
    case 'decrypt':
      return decrypt(o);
    case 'verify':
      return verify(o);
    case 'signAndEncrypt': {
      const {
        sign: signOptions,
        encrypt: encryptOptions,
        message,
      } = req.options as {
        sign: Record<string, unknown>;
        encrypt: Record<string, unknown>;
        message: Uint8Array | string;
      };
      const signed = await sign({ ...signOptions, message } as never);
      return encrypt({ ...encryptOptions, message: signed } as never);
    }
    default:
      throw new Error(`unknown verb ${String(req.verb)}`);
  }
}

parentPort?.on('message', (req: WorkRequest) => {
  run(req).then(
    (result) => {
      // Transfer result bytes instead of copying them back.
      const transfer = result instanceof Uint8Array ? [result.buffer as ArrayBuffer] : [];
      const reply: WorkReply = { id: req.id, ok: true, result, threadId };
      parentPort!.postMessage(
        reply,
        transfer.filter((b) => b.byteLength === (result as Uint8Array).byteLength),
      );
    },
    (err: unknown) => {
      const reply: WorkReply = {
        id: req.id,
        ok: false,
        error:
          err instanceof CryptoError
            ? { code: err.code, message: err.message }
            : { message: err instanceof Error ? err.message : String(err) },
        threadId,
      };
      parentPort!.postMessage(reply);
    },
  );
});
