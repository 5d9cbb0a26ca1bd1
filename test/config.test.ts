import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, configSchema, loadConfig, printConfig, type Config } from '../config/index.ts';
import { schemaLeafPaths } from '../config/load.ts';

const repo = join(import.meta.dirname, '..');
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'courrier-config-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** The ConfigError thrown by `fn` (fails the test if it does not throw one). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

describe('loadConfig: sources', () => {
  it('uses the schema defaults when there is no file and no override', () => {
    const { config, file } = loadConfig({ env: {}, cwd: dir });
    expect(file).toBeUndefined();
    expect(config).toEqual({ ...configSchema.parse({}), dataDir: join(dir, 'data') });
    expect(config.smtp.socketTimeout).toBe(300_000);
    expect(config.smtp.maxMessageSize).toBe(25 * 1024 * 1024);
  });

  it('reads courrier.yaml from the working directory when it exists', () => {
    const file = write('courrier.yaml', 'hostname: mx.from-cwd.test\n');
    const loaded = loadConfig({ env: {}, cwd: dir });
    expect(loaded.file).toBe(file);
    expect(loaded.config.hostname).toBe('mx.from-cwd.test');
  });

  it('prefers the file option over COURRIER_CONFIG over ./courrier.yaml', () => {
    write('courrier.yaml', 'hostname: cwd.test\n');
    write('env.yaml', 'hostname: env.test\n');
    write('option.yaml', 'hostname: option.test\n');
    expect(loadConfig({ env: { COURRIER_CONFIG: 'env.yaml' }, cwd: dir }).config.hostname).toBe('env.test');
    expect(
      loadConfig({ file: 'option.yaml', env: { COURRIER_CONFIG: 'env.yaml' }, cwd: dir }).config.hostname,
    ).toBe('option.test');
  });

  it('lets the environment win over the file, key by key', () => {
    const file = write(
      'c.yaml',
      'hostname: file.test\nsmtp:\n  submission:\n    port: 3000\n    host: 0.0.0.0\n',
    );
    const { config } = loadConfig({ file, env: { COURRIER_SMTP__SUBMISSION__PORT: '2600' } });
    expect(config.smtp.submission.port).toBe(2600);
    expect(config.smtp.submission.host).toBe('0.0.0.0');
    expect(config.hostname).toBe('file.test');
    expect(config.smtp.relay.port).toBe(2525);
  });

  it('reports an explicitly named file that does not exist', () => {
    const e1 = configError(() => loadConfig({ file: 'missing.yaml', env: {}, cwd: dir }));
    expect(e1.problems).toEqual([
      `${join(dir, 'missing.yaml')}: config file not found (named by the file option)`,
    ]);
    const e2 = configError(() => loadConfig({ env: { COURRIER_CONFIG: '/nowhere/c.yaml' }, cwd: dir }));
    expect(e2.problems).toEqual(['/nowhere/c.yaml: config file not found (named by COURRIER_CONFIG)']);
    expect(e2.name).toBe('ConfigError');
    expect(e2.cause).toMatchObject({ code: 'ENOENT' });
  });

  it('resolves dataDir and *File paths against the config file folder', () => {
    mkdirSync(join(dir, 'etc'));
    const file = write(
      'etc/c.yaml',
      'dataDir: ../var\ntls:\n  certFile: tls/server.pem\n  keyFile: /abs/key.pem\n  caFile: ./ca.pem\n',
    );
    const { config } = loadConfig({ file, env: {} });
    expect(config.dataDir).toBe(join(dir, 'var'));
    expect(config.tls.certFile).toBe(join(dir, 'etc/tls/server.pem'));
    expect(config.tls.keyFile).toBe('/abs/key.pem');
    expect(config.tls.caFile).toBe(join(dir, 'etc/ca.pem'));
    // Without a file: against cwd, env values included.
    const fromEnv = loadConfig({ env: { COURRIER_DATADIR: 'state' }, cwd: dir });
    expect(fromEnv.config.dataDir).toBe(join(dir, 'state'));
  });

  it('treats a section with every key commented out as absent', () => {
    const file = write('c.yaml', 'smtp:\n  # maxRecipients: 5\ndelivery:\n  routes:\n');
    const { config } = loadConfig({ file, env: {} });
    expect(config.smtp.maxRecipients).toBe(100);
    expect(config.delivery.routes).toEqual({});
  });
});

describe('loadConfig: environment overrides', () => {
  it('converts nested keys, lists, booleans, numbers and durations, case-insensitively', () => {
    const { config } = loadConfig({
      cwd: dir,
      env: {
        COURRIER_SMTP__SUBMISSION__PORT: '2600',
        COURRIER_LOCALDOMAINS: 'A.fr, b.fr,',
        COURRIER_SMTP__RELAY__REQUIRECLIENTCERT: 'FALSE',
        courrier_smtp__submission__enabled: 'false',
        COURRIER_DELIVERY__RETRY__FIRSTDELAY: '90',
        COURRIER_QUEUE__LOCKDURATION: '2m',
        COURRIER_SMTP__MAXMESSAGESIZE: '10MB',
        COURRIER_LOG__LEVEL: 'debug',
        COURRIER_REDIS__URL: 'redis://u:p@redis.test:6380',
        PATH: '/usr/bin',
      },
    });
    expect(config.smtp.submission.port).toBe(2600);
    expect(config.localDomains).toEqual(['a.fr', 'b.fr']);
    expect(config.smtp.relay.requireClientCert).toBe(false);
    expect(config.smtp.submission.enabled).toBe(false);
    expect(config.delivery.retry.firstDelay).toBe(90_000);
    expect(config.queue.lockDuration).toBe(120_000);
    expect(config.smtp.maxMessageSize).toBe(10 * 1024 * 1024);
    expect(config.log.level).toBe('debug');
    expect(config.redis.url).toBe('redis://u:p@redis.test:6380');
  });

  it('sets route entries by domain, merged with the file', () => {
    const file = write(
      'c.yaml',
      'delivery:\n  routes:\n    hopital.test:\n      host: mx.hopital.test\n      auth: { user: gw }\n',
    );
    const { config } = loadConfig({
      file,
      env: {
        'COURRIER_DELIVERY__ROUTES__HOPITAL.TEST__AUTH__PASS': 'from-env',
        'COURRIER_DELIVERY__ROUTES__*__HOST': 'relay.test',
      },
    });
    expect(config.delivery.routes['hopital.test']).toEqual({
      host: 'mx.hopital.test',
      port: 25,
      tls: 'starttls',
      auth: { user: 'gw', pass: 'from-env' },
    });
    expect(config.delivery.routes['*']?.host).toBe('relay.test');
  });

  it('rejects unknown keys, sections and unconvertible values, naming the variable', () => {
    const err = configError(() =>
      loadConfig({
        cwd: dir,
        env: {
          COURRIER_SMTP__SUBMISION__PORT: '1',
          COURRIER_REDIS: 'x',
          COURRIER_SMTP__RELAY__REQUIRECLIENTCERT: 'yes',
          COURRIER_SMTP__MAXRECIPIENTS: 'many',
          COURRIER_HOSTNAME__X: 'y',
        },
      }),
    );
    expect(err.problems).toEqual([
      'COURRIER_HOSTNAME__X: hostname is a value, it has no key "X"',
      'COURRIER_REDIS: redis is a section; set its keys one by one (NAME__KEY)',
      'smtp.maxRecipients: expected a number, got "many" (env COURRIER_SMTP__MAXRECIPIENTS)',
      'smtp.relay.requireClientCert: expected true or false, got "yes" (env COURRIER_SMTP__RELAY__REQUIRECLIENTCERT)',
      'COURRIER_SMTP__SUBMISION__PORT: unknown key "SUBMISION" in smtp (known: submission, relay, maxMessageSize, maxRecipients, socketTimeout)',
    ]);
  });

  it('names the variable when the schema rejects its value', () => {
    const err = configError(() => loadConfig({ cwd: dir, env: { COURRIER_SMTP__RELAY__PORT: '70000' } }));
    expect(err.problems).toHaveLength(1);
    expect(err.problems[0]).toMatch(/^smtp\.relay\.port: .*65535.* \(env COURRIER_SMTP__RELAY__PORT\)$/);
  });
});

describe('loadConfig: validation', () => {
  it('lists every problem of a file at once, with its line', () => {
    const file = write(
      'c.yaml',
      [
        'hostname: mx.test',
        'smtp:',
        '  submission:',
        '    port: "not a port"',
        '  socketTimeout: forever',
        'log:',
        '  level: loud',
        '',
      ].join('\n'),
    );
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.problems).toHaveLength(3);
    expect(err.problems[0]).toMatch(
      new RegExp(`^smtp\\.submission\\.port: .*expected number.* \\(${file}:4\\)$`),
    );
    expect(err.problems[1]).toBe(
      `smtp.socketTimeout: not a duration: "forever" (expected e.g. 90s, 5m, 4h, 5d) (${file}:5)`,
    );
    expect(err.problems[2]).toMatch(new RegExp(`^log\\.level: .*"info".* \\(${file}:7\\)$`));
    for (const p of err.problems) expect(err.message).toContain(p);
  });

  it('rejects unknown keys in the file', () => {
    const file = write('c.yaml', 'hostname: a.test\nsmtp:\n  relay:\n    tls: true\nhostnme: typo.test\n');
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.problems).toEqual([
      `smtp.relay.tls: unknown key (${file}:4)`,
      `hostnme: unknown key (${file}:5)`,
    ]);
  });

  it('gives the line and column of YAML syntax errors', () => {
    const file = write('c.yaml', 'hostname: a.test\nsmtp:\n  relay: {port: 25\n');
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.problems.length).toBeGreaterThan(0);
    expect(err.problems[0]).toMatch(new RegExp(`^${file}:\\d+:\\d+: YAML syntax error: `));
    const dup = configError(() =>
      loadConfig({ file: write('d.yaml', 'hostname: a\nhostname: b\n'), env: {} }),
    );
    expect(dup.problems[0]).toMatch(
      new RegExp(`^${join(dir, 'd.yaml')}:2:1: YAML syntax error: .*[Mm]ap keys must be unique`),
    );
  });

  it('rejects a top level that is not a mapping', () => {
    const file = write('c.yaml', '- a\n- b\n');
    expect(configError(() => loadConfig({ file, env: {} })).problems).toEqual([
      `${file}: the top level must be a mapping of keys, got a list`,
    ]);
  });

  it('rejects the wildcard as a local domain, a certificate without its key or trust anchors', () => {
    const file = write('c.yaml', "localDomains: ['*']\ntls:\n  certFile: a.pem\n  clientKeyFile: k.pem\n");
    const err = configError(() => loadConfig({ file, env: {} }));
    expect(err.problems).toEqual([
      `localDomains[0]: a local domain cannot be the wildcard * (${file}:1)`,
      `tls.keyFile: required when certFile is set (${file}:2)`,
      `tls.clientCertFile: required when clientKeyFile is set (${file}:2)`,
      `tls.caFile: required when certFile is set (${file}:2)`,
    ]);
  });
});

describe('printConfig', () => {
  function loadWithSecrets(): Config {
    const file = write(
      'c.yaml',
      [
        'redis:',
        '  url: redis://courrier:redis-s3cret@redis.test:6379/2',
        'delivery:',
        '  routes:',
        "    '*':",
        '      host: relay.test',
        '      auth: { user: gw, pass: route-s3cret }',
        '  retry:',
        '    firstDelay: 1500ms',
        'smtp:',
        '  maxMessageSize: 1000',
        '',
      ].join('\n'),
    );
    return loadConfig({ file, env: {} }).config;
  }

  it('redacts secrets', () => {
    const text = printConfig(loadWithSecrets());
    expect(text).not.toContain('s3cret');
    expect(text).toContain('url: redis://courrier:[redacted]@redis.test:6379/2');
    expect(text).toContain('pass: "[redacted]"');
    expect(text).toContain('user: gw');
  });

  it('redacts a password-only redis URL too', () => {
    const { config } = loadConfig({ cwd: dir, env: { COURRIER_REDIS__URL: 'redis://:only-s3cret@r.test' } });
    expect(printConfig(config)).toContain('url: redis://:[redacted]@r.test');
    const bare = loadConfig({ cwd: dir, env: { COURRIER_REDIS__URL: 'redis://s3cret@r.test' } }).config;
    expect(printConfig(bare)).toContain('url: redis://[redacted]@r.test');
  });

  it('shows durations and sizes in human units and says so', () => {
    const text = printConfig(loadWithSecrets());
    expect(text).toMatch(/^# .*Durations are shown in human units/m);
    expect(text).toContain('socketTimeout: 5m');
    expect(text).toContain('giveUpAfter: 5d');
    expect(text).toContain('firstDelay: 1500ms');
    expect(text).toContain('maxMessageSize: 1000B');
    expect(text).toContain('keepFinishedFor: 30d');
    expect(printConfig(loadConfig({ cwd: dir, env: {} }).config)).toContain('maxMessageSize: 25MB');
  });

  it('prints YAML that loads back to the same config, secrets aside', () => {
    const config = loadWithSecrets();
    const again = loadConfig({ file: write('printed.yaml', printConfig(config)), env: {} }).config;
    expect(again).toEqual({
      ...config,
      redis: { ...config.redis, url: 'redis://courrier:[redacted]@redis.test:6379/2' },
      delivery: {
        ...config.delivery,
        routes: { '*': { ...config.delivery.routes['*'], auth: { user: 'gw', pass: '[redacted]' } } },
      },
    });
  });
});

describe('documentation and example stay in sync with the schema', () => {
  const leaves = schemaLeafPaths().map((l) => l.path);
  const docs = readFileSync(join(repo, 'docs/config.md'), 'utf8');
  const examplePath = join(repo, 'config/courrier.example.yaml');
  const example = readFileSync(examplePath, 'utf8');

  it('finds the leaf keys of the schema', () => {
    expect(leaves).toContain('smtp.submission.port');
    expect(leaves).toContain('delivery.routes.<domain>.auth.pass');
    expect(leaves).not.toContain('smtp');
    expect(leaves.length).toBeGreaterThan(35);
  });

  it('documents every key in docs/config.md, and only those', () => {
    const rows = [...docs.matchAll(/^\|\s*`([^`]+)`\s*\|/gm)].map((m) => m[1]);
    expect(rows.sort()).toEqual([...leaves].sort());
  });

  it('has a docs example that loads', () => {
    const block = /```yaml\n([\s\S]*?)```/.exec(docs)?.[1];
    expect(block).toBeDefined();
    const file = write('docs-example.yaml', block ?? '');
    const { config } = loadConfig({ file, env: { 'COURRIER_DELIVERY__ROUTES__*__AUTH__PASS': 'p' } });
    expect(config.delivery.routes['*']?.auth).toEqual({ user: 'cabinet-martin', pass: 'p' });
    expect(config.tls.certFile).toBe(join(dir, 'tls/server.pem'));
  });

  it('has an example file that loads cleanly', () => {
    const { config } = loadConfig({ file: examplePath, env: {} });
    expect({ ...config, dataDir: './data' }).toEqual(configSchema.parse({}));
  });

  it('has every key in the example file, the optional ones commented out as "#key:"', () => {
    // "# text" is prose; "#key:" (no space, or indentation after #) is a disabled setting.
    const enabled = example.replace(/^(\s*)#(?! \S)/gm, '$1');
    const file = write('example-enabled.yaml', enabled);
    const { config } = loadConfig({ file, env: {} });
    expect(config.tls.certFile).toBe('/etc/courrier/tls/server.pem');
    const raw: unknown = parse(enabled);
    for (const leaf of leaves) {
      let node: unknown = raw;
      for (const key of leaf.split('.')) {
        const obj = node as Record<string, unknown>;
        node = key === '<domain>' ? Object.values(obj)[0] : obj[key];
      }
      expect(node, `${leaf} in config/courrier.example.yaml`).toBeDefined();
    }
  });
});
