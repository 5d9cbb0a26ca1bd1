import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importExtract, openSqliteDirectory, type DirectoryStore } from '../directory/index.ts';
import { StartupError, startApp } from '../gateway/app.ts';
import { startDirectoryHttp, type DirectoryHttp } from '../gateway/directory-http.ts';
import { createLogger } from '../gateway/log.ts';
import { issueCertificate } from '../crypto/dev-pki.ts';
import { dropRedisPrefix, testConfig } from './helpers/gateway-fixture.ts';
import { testPki } from './helpers/pki.ts';

const SAMPLE = fileURLToPath(
  new URL('../../shared/fixtures/Extraction_Correspondance_MSSante_sample.txt', import.meta.url),
);
const TOKEN = 'test-token-0123456789abcdef';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Record<string, unknown>;
}

/** A real HTTP request to the endpoint. */
function get(
  port: number,
  path: string,
  opts: { token?: string | null; method?: string } = {},
): Promise<Reply> {
  const token = opts.token === undefined ? TOKEN : opts.token;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        agent: false,
        headers: token === null ? {} : { Authorization: `Bearer ${token}` },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

let dir: string;
let store: DirectoryStore;
let http: DirectoryHttp;
let port: number;
const logged: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'courrier-dirhttp-'));
  store = await openSqliteDirectory(join(dir, 'directory.sqlite'));
  await importExtract(store, SAMPLE);
  await store.setHidden('elodie.roux1@infirmier.mssante.fr', true);
  await store.saveTeam({
    id: 'cpts-sud',
    kind: 'CPTS',
    name: 'CPTS Sud',
    address: 'equipe@cpts-sud.mssante.fr',
  });
  await store.addTeamMember('cpts-sud', { kind: 'professional', nationalId: '819990000004' });
  await store.addTeamMember('cpts-sud', { kind: 'professional', nationalId: '819990000003' });
  await store.addTeamMember('cpts-sud', { kind: 'professional', nationalId: '810000000000' });
  const cert = issueCertificate(testPki().ca, {
    commonName: 'Maëlle Michel',
    emailAddresses: ['maelle.michel4@ch-exemple.mssante.fr'],
    usage: 'email',
    keyType: 'ec-p256',
  });
  await store.attachKey('maelle.michel4@ch-exemple.mssante.fr', {
    format: 'smime',
    data: new TextEncoder().encode(cert.certPem),
  });
  const logger = createLogger('error', {
    write: (line: string) => {
      logged.push(line);
      return true;
    },
  } as unknown as NodeJS.WritableStream);
  http = await startDirectoryHttp({ store, host: '127.0.0.1', port: 0, token: TOKEN, logger });
  port = http.port;
});

afterAll(async () => {
  await http?.close();
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('directory HTTP endpoint', () => {
  it('searches accent- and case-insensitively', async () => {
    const r = await get(port, '/directory/search?name=lefevre');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(r.body.count).toBe(1);
    const [m] = r.body.results as Record<string, unknown>[];
    expect(m).toMatchObject({
      address: 'maelle.lefevre2@msp-des-vignes.mssante.fr',
      type: 'PER',
      owner: { lastName: 'LEFÈVRE', firstName: 'Maëlle', nationalId: '819990000002' },
    });
    expect(m?.updatedAt).toMatch(/^\d{4}-\d{2}-\d{2}T/);

    const byCity = await get(
      port,
      `/directory/search?name=${encodeURIComponent('MATHÉO')}&city=annecy&limit=5`,
    );
    expect(byCity.status).toBe(200);
    for (const x of byCity.body.results as { owner: { firstName: string } }[]) {
      expect(x.owner.firstName).toBe('Mathéo');
    }
  });

  it('never returns hidden mailboxes in search, nor by national id', async () => {
    const r = await get(port, '/directory/search?name=roux');
    const addresses = (r.body.results as { address: string }[]).map((x) => x.address);
    expect(addresses).toContain('anais.roux21@msp-des-vignes.mssante.fr');
    expect(addresses).not.toContain('elodie.roux1@infirmier.mssante.fr');
    const p = await get(port, '/directory/professionals/819990000001');
    expect(p.status).toBe(200);
    expect(p.body).toMatchObject({ professional: { lastName: 'ROUX' }, mailboxes: [] });
    // By its own address it still resolves (as over SMTP), marked hidden.
    const m = await get(port, '/directory/mailboxes/elodie.roux1@infirmier.mssante.fr');
    expect(m.body).toMatchObject({ address: 'elodie.roux1@infirmier.mssante.fr', hidden: true });
  });

  it('never tells a hidden address through a team, by professional or by mailbox member', async () => {
    await store.saveTeam({ id: 'esp-rouge', kind: 'ESP', name: 'ESP avec liste rouge' });
    await store.addTeamMember('esp-rouge', { kind: 'professional', nationalId: '819990000001' });
    await store.addTeamMember('esp-rouge', { kind: 'mailbox', address: 'elodie.roux1@infirmier.mssante.fr' });
    await store.addTeamMember('esp-rouge', { kind: 'professional', nationalId: '819990000004' });
    // The store still expands to the hidden mailbox: the gateway must deliver to it.
    const expansion = await store.expandTeam('esp-rouge');
    expect(expansion?.recipients.map((r) => r.address)).toContain('elodie.roux1@infirmier.mssante.fr');
    const t = await get(port, '/directory/teams/esp-rouge');
    expect(t.status).toBe(200);
    expect(JSON.stringify(t.body)).not.toContain('elodie.roux1');
    expect(t.body.hiddenRecipients).toBe(1);
    expect((t.body.recipients as { address: string }[]).map((r) => r.address)).toEqual([
      'maelle.michel4@ch-exemple.mssante.fr',
    ]);
    expect(
      (t.body.members as { kind: string; nationalId?: string }[]).map((m) => [m.kind, m.nationalId]),
    ).toEqual([
      ['professional', '819990000001'],
      ['professional', '819990000004'],
    ]);
  });

  it('answers a mailbox with its keys, a professional, a team', async () => {
    const m = await get(port, '/directory/mailboxes/Maelle.Michel4%40CH-EXEMPLE.mssante.fr');
    expect(m.status).toBe(200);
    expect(m.body).toMatchObject({ address: 'maelle.michel4@ch-exemple.mssante.fr', hidden: false });
    const keys = m.body.keys as Record<string, unknown>[];
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({
      format: 'smime',
      preferred: false,
      fingerprint: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(Buffer.from(String(keys[0]?.data), 'base64').toString()).toContain('BEGIN CERTIFICATE');

    const p = await get(port, '/directory/professionals/19990000003');
    expect(p.body).toMatchObject({
      professional: { nationalId: '819990000003', lastName: "N'DIAYE" },
      mailboxes: [{ address: 'matheo.ndiaye3@cpts-sud-exemple.mssante.fr' }],
    });

    const t = await get(port, '/directory/teams/equipe@cpts-sud.mssante.fr');
    expect(t.status).toBe(200);
    expect(t.body).toMatchObject({ id: 'cpts-sud', kind: 'CPTS', name: 'CPTS Sud' });
    expect((t.body.recipients as { address: string }[]).map((r) => r.address).sort()).toEqual([
      'maelle.michel4@ch-exemple.mssante.fr',
      'matheo.ndiaye3@cpts-sud-exemple.mssante.fr',
    ]);
    expect(t.body.unreachable).toEqual([{ kind: 'professional', nationalId: '810000000000' }]);
    const doctors = await get(port, '/directory/teams/cpts-sud?profession=10');
    expect((doctors.body.recipients as unknown[]).length).toBe(1);
  });

  it('401 without or with a wrong token, before anything else', async () => {
    for (const token of [null, 'wrong', `${TOKEN}x`, '']) {
      const r = await get(port, '/directory/search?name=roux', { token });
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Bearer realm="courrier-directory"');
      expect(r.body).toEqual({ error: { code: 'unauthorized', message: 'missing or wrong bearer token' } });
    }
    expect((await get(port, '/nowhere', { token: null })).status).toBe(401);
  });

  it('400 for a bad query, with what was wrong', async () => {
    const cases: [string, string][] = [
      [
        '/directory/search?nom=roux',
        'unknown parameter "nom" (name, profession, city, structure, type, limit)',
      ],
      ['/directory/search?name=roux&limit=0', 'limit must be a whole number from 1 to 500'],
      ['/directory/search?name=roux&limit=abc', 'limit must be a whole number from 1 to 500'],
      ['/directory/search?type=XYZ', 'type must be one of PER, ORG, APP, CAB'],
      ['/directory/search?limit=5', 'give at least one of name, profession, city, structure, type'],
      ['/directory/search?name=a&name=b', 'parameter "name" given twice'],
      [`/directory/search?name=${'a'.repeat(201)}`, 'parameter "name" is longer than 200 characters'],
      ['/directory/professionals/12345', 'not a national id: "12345" (8 + RPPS, 0 + ADELI, or an RPPS)'],
      ['/directory/mailboxes/%E0%A4%A', 'malformed percent-encoding in the path'],
      ['/directory/teams/cpts-sud?role=x', 'unknown parameter "role" (profession)'],
    ];
    for (const [path, message] of cases) {
      const r = await get(port, path);
      expect({ path, status: r.status, body: r.body }).toEqual({
        path,
        status: 400,
        body: { error: { code: 'bad-request', message } },
      });
    }
    const typeOnly = await get(port, '/directory/search?type=org');
    expect(typeOnly.status).toBe(200);
    expect((typeOnly.body.results as { type: string }[]).every((m) => m.type === 'ORG')).toBe(true);
  });

  it('404 for unknown resources, 405 for other methods', async () => {
    expect((await get(port, '/directory/mailboxes/personne@nulle-part.fr')).body).toEqual({
      error: { code: 'not-found', message: 'no mailbox personne@nulle-part.fr' },
    });
    expect((await get(port, '/directory/professionals/810000000000')).status).toBe(404);
    expect((await get(port, '/directory/teams/nope')).status).toBe(404);
    expect((await get(port, '/directory')).status).toBe(404);
    expect((await get(port, '/directory/mailboxes/a@b.fr/keys')).status).toBe(404);
    const post = await get(port, '/directory/search?name=roux', { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
    const head = await get(port, '/directory/search?name=roux', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body).toEqual({});
  });

  it('500 without internals when the store fails, logged without the URL', async () => {
    const broken = await openSqliteDirectory(join(dir, 'broken.sqlite'));
    const logger = createLogger('error', {
      write: (line: string) => {
        logged.push(line);
        return true;
      },
    } as unknown as NodeJS.WritableStream);
    const h = await startDirectoryHttp({ store: broken, host: '127.0.0.1', port: 0, token: TOKEN, logger });
    try {
      await broken.close(); // every query now fails inside the driver
      const r = await get(h.port, '/directory/mailboxes/secret.person@example.fr');
      expect(r.status).toBe(500);
      expect(r.body).toEqual({ error: { code: 'internal', message: 'internal error' } });
      const line = logged.find((l) => l.includes('directory HTTP request failed'));
      expect(line).toBeDefined();
      expect(line).toContain('"route":"mailboxes"');
      expect(line).not.toContain('secret.person');
    } finally {
      await h.close();
    }
  });
});

describe('the gateway starts and stops the endpoint', () => {
  it('serves while the app runs; a port in use is a StartupError', async () => {
    const env = testConfig({ directory: { http: { enabled: true, port: 0, token: TOKEN } } });
    const app = await startApp(env.config, { logger: env.logger, ingress: false, worker: false });
    try {
      expect(app.directoryHttp).toBeDefined();
      const r = await get(app.directoryHttp!.port, '/directory/search?name=dev');
      expect(r.status).toBe(200);
    } finally {
      await app.stop();
    }
    await expect(get(app.directoryHttp!.port, '/directory/search?name=dev')).rejects.toThrow(/ECONNREFUSED/);

    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const busy = (taken.address() as { port: number }).port;
    const env2 = testConfig({ directory: { http: { enabled: true, port: busy, token: TOKEN } } });
    try {
      const err = await startApp(env2.config, { logger: env2.logger, ingress: false, worker: false }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StartupError);
      expect((err as Error).message).toBe(
        `cannot start the directory HTTP endpoint on 127.0.0.1:${busy}: listen EADDRINUSE: address already in use 127.0.0.1:${busy}`,
      );
    } finally {
      await new Promise((resolve) => taken.close(resolve));
      for (const e of [env, env2]) {
        await dropRedisPrefix(e.config.redis.url, e.prefix);
        e.cleanup();
      }
    }
  });
});
