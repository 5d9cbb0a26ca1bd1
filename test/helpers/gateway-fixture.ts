import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { configSchema, type Config, type ConfigInput } from '../../config/schema.ts';
import { testPki } from './pki.ts';
import { createLogger, type Logger } from '../../gateway/log.ts';

/** A fresh data folder, a unique Redis prefix and port-0 listeners: tests never collide. */
export interface TestEnv {
  dir: string;
  prefix: string;
  config: Config;
  logger: Logger;
  cleanup(): void;
}

/** Builds a validated config for a test, on loopback, with a Redis prefix of its own. */
export function testConfig(overrides: ConfigInput = {}): TestEnv {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'courrier-test-'));
  const prefix = `courrier-test-${randomBytes(6).toString('hex')}`;
  const input: ConfigInput = {
    dataDir: dir,
    hostname: 'gw.courrier.test',
    localDomains: ['courrier.test'],
    ...overrides,
    redis: {
      url: process.env.COURRIER_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379',
      prefix,
      ...overrides.redis,
    },
    smtp: {
      ...overrides.smtp,
      submission: { port: 0, ...overrides.smtp?.submission },
      relay: { port: 0, ...overrides.smtp?.relay },
    },
  };
  const config = configSchema.parse(input);
  const logger = createLogger(process.env.COURRIER_TEST_LOG ?? 'silent');
  return { dir, prefix, config, logger, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Writes the test PKI's server certificate (with its chain), key and CA into the test's folder and
 * points the config at them, so the gateway and the test sink trust each other.
 */
export function useTestTls(env: TestEnv): { caFile: string; certFile: string; keyFile: string } {
  const pki = testPki();
  const dir = path.join(env.dir, 'tls');
  fs.mkdirSync(dir, { recursive: true });
  const files = {
    caFile: path.join(dir, 'ca.pem'),
    certFile: path.join(dir, 'cert.pem'),
    keyFile: path.join(dir, 'key.pem'),
  };
  fs.writeFileSync(files.caFile, pki.ca.certPem);
  fs.writeFileSync(files.certFile, pki.server.certPem + pki.ca.certPem);
  fs.writeFileSync(files.keyFile, pki.server.keyPem, { mode: 0o600 });
  Object.assign(env.config.tls, files);
  return files;
}

/** Removes every Redis key of a test prefix. */
export async function dropRedisPrefix(redisUrl: string, prefix: string): Promise<void> {
  const { Redis } = await import('ioredis');
  const r = new Redis(redisUrl);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `ms`. */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  ms = 20_000,
  what = 'condition',
): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v as Exclude<T, false | undefined>;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
