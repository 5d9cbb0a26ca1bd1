import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import type { ConfigInput } from '../../config/schema.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Runs the real gateway (`node gateway/cli.ts serve`) as a child process, the way an admin does,
 * so tests and benchmarks can kill it with SIGKILL and start it again on the same data folder.
 * Listener ports are 0 in the config; the bound ports are read from the JSON log.
 */
export interface GatewayProcess {
  child: ChildProcess;
  ports: Partial<Record<'submission' | 'submissions' | 'relay', number>>;
  /** Every JSON log line so far. */
  logs: Array<Record<string, unknown>>;
  /** Resolves with the exit code or signal. */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): Promise<number | string>;
}

export function writeConfig(dir: string, config: ConfigInput): string {
  const file = path.join(dir, 'courrier.yaml');
  fs.writeFileSync(file, YAML.stringify(config));
  return file;
}

export async function startGatewayProcess(configFile: string, timeoutMs = 30_000): Promise<GatewayProcess> {
  const child = spawn(
    process.execPath,
    [path.join(ROOT, 'gateway/cli.ts'), 'serve', '--config', configFile],
    {
      cwd: ROOT,
      env: { ...process.env, COURRIER_CONFIG: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const gw: GatewayProcess = {
    child,
    ports: {},
    logs: [],
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code ?? -1))),
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return gw.exited;
    },
  };
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  let buffer = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`gateway did not start in ${timeoutMs} ms:\n${stderr}`)),
      timeoutMs,
    );
    child.stdout!.on('data', (d: Buffer) => {
      buffer += d.toString();
      let i: number;
      while ((i = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          gw.logs.push(entry);
          if (
            entry.msg === 'listening' &&
            typeof entry.listener === 'string' &&
            typeof entry.port === 'number'
          ) {
            gw.ports[entry.listener as 'submission'] = entry.port;
          }
          if (entry.msg === 'listening' && entry.listener === 'submission') {
            clearTimeout(timer);
            resolve();
          }
        } catch {
          // not JSON: ignore
        }
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${signal ?? code}) before listening:\n${stderr}`));
    });
  });
  await ready;
  return gw;
}
