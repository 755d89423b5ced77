import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it, inject } from 'vitest';
import { loadConfig } from '../../../src/config.js';
import { reply, startServer, type TestServer } from '../../helpers/server.js';

/** One tenant cannot take the service's request capacity from another: requests are limited per tenant, deployment-wide. */

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';
const A = { authorization: `Bearer ${KEY_A}` };
const B = { authorization: `Bearer ${KEY_B}` };
const KEYS = { ASM_API_KEYS: `${KEY_A}:tenant-a,${KEY_B}:tenant-b`, ASM_RATE_LIMIT: '5/60000' };

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(env: Record<string, string> = {}): Promise<TestServer> {
  const server = await startServer({ ...KEYS, ...env });
  servers.push(server);
  return server;
}

function expectLimited(res: { status: number; body: any; headers: Headers }) {
  expect(res.status).toBe(429);
  expect(res.body.error).toMatchObject({ kind: 'rate_limit', domain: 'runtime', details: { limit: 5, window_ms: 60_000 } });
  expect(res.body.error.message).toContain('ASM_RATE_LIMIT');
  expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
}

describe('request rate limits per tenant', () => {
  it('answers 429 with Retry-After past the limit, and only to the tenant that spent it', async () => {
    const server = await start();
    for (let i = 0; i < 5; i++) expect((await reply(server.client.GET('/v1/sessions', { headers: A }))).status).toBe(200);
    expectLimited(await reply(server.client.GET('/v1/sessions', { headers: A })));
    expectLimited(await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: A })));
    expect((await reply(server.client.GET('/v1/sessions', { headers: B }))).status).toBe(200);
    expect((await reply(server.client.GET('/healthz'))).status).toBe(200);
  });

  it('counts a tenant across every process of a distributed deployment', async () => {
    const shared = { REDIS_URL: inject('asmTestRedisUrl'), ASM_REDIS_PREFIX: `t-${randomUUID().slice(0, 8)}` };
    const [one, two] = [await start(shared), await start(shared)];
    for (let i = 0; i < 5; i++) expect((await reply((i % 2 ? one : two).client.GET('/v1/sessions', { headers: A }))).status).toBe(200);
    expectLimited(await reply(one.client.GET('/v1/sessions', { headers: A })));
    expectLimited(await reply(two.client.GET('/v1/sessions', { headers: A })));
    expect((await reply(two.client.GET('/v1/sessions', { headers: B }))).status).toBe(200);
  });

  it('refuses a malformed ASM_RATE_LIMIT at start-up, naming it', () => {
    for (const bad of ['fast', '10', '0/1000', '10/5']) {
      expect(() => loadConfig({ ASM_RATE_LIMIT: bad })).toThrow(/^ASM_RATE_LIMIT: expected max\/window_ms/);
    }
    expect(loadConfig({}).rateLimit).toEqual({ max: 6000, windowMs: 60_000 });
  });

  it('is off with ASM_RATE_LIMIT=0', async () => {
    const server = await start({ ASM_RATE_LIMIT: '0' });
    for (let i = 0; i < 8; i++) expect((await reply(server.client.GET('/v1/sessions', { headers: A }))).status).toBe(200);
  });
});
