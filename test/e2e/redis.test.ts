/**
 * Distributed mode against Redis trouble, through the whole service (in-process server, real Redis):
 * an outage in the middle of a run, and ACL users. And a `wait: true` submit answered from the end
 * this process recorded, without reading the run back.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { Redis } from 'ioredis';
import { createApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { startRedisServer, startTlsRedisServer, type RedisServer, type TlsRedisServer } from '../helpers/redis-server.js';
import { reply, startServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

describe('distributed mode: Redis goes away in the middle of a run', () => {
  let redis: RedisServer;
  let server: TestServer;
  beforeAll(async () => {
    redis = await startRedisServer({ args: (port) => ['--port', String(port), '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'] });
    server = await startServer({ REDIS_URL: redis.url, ASM_REDIS_COMMAND_TIMEOUT_MS: '300' });
  });
  afterAll(async () => {
    await server?.close();
    await redis?.dispose();
  });

  it('answers 503 not_ready meanwhile, reports not ready, and loses nothing of the run it had accepted', async () => {
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo first; sleep 1.5; echo during-outage; sleep 1; echo after' } }))).body;
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state === 'running', 'the run to start', 10_000);

    await redis.stop();
    const started = Date.now();
    const list = await reply(server.client.GET('/v1/sessions'));
    expect(list.status).toBe(503);
    expect(list.body.error).toMatchObject({ kind: 'not_ready', retryable: true });
    expect(list.body.error.message).toMatch(/^Redis is unreachable/);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect((await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).status).toBe(503);
    expect((await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo refused' } }))).status).toBe(503);
    expect(await reply(server.client.GET('/readyz'))).toMatchObject({ status: 503, body: { status: 'not_ready' } });
    expect((await reply(server.client.GET('/healthz'))).status).toBe(200);
    // The metrics still answer, and say why (docker/prometheus/alerts.yml AsmRedisUnreachable).
    const metrics = await reply(server.client.GET('/metrics', { parseAs: 'text' }));
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^asm_redis_up 0$/m);

    await new Promise((resolve) => setTimeout(resolve, 2_000)); // the run prints "during-outage" now
    await redis.start();
    await waitFor(async () => (await reply(server.client.GET('/readyz'))).status === 200, 'readiness', 10_000);
    expect((await reply(server.client.GET('/metrics', { parseAs: 'text' }))).body).toMatch(/^asm_redis_up 1$/m);

    const final = await waitFor(async () => {
      const res = await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }));
      return res.status === 200 && res.body.state !== 'running' ? res.body : undefined;
    }, 'the run to finish', 15_000);
    expect(final).toMatchObject({ state: 'completed', result: { text: 'first\nduring-outage\nafter\n' } });
    const events = (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id }, query: { limit: 100 } } }))).body.events;
    expect(events.map((e: any) => e.kind)).toEqual(['run_queued', 'run_started', 'assistant_delta', 'assistant_delta', 'assistant_delta', 'result']);
    expect(events.map((e: any) => e.seq)).toEqual(events.map((_: unknown, i: number) => events[0].seq + i));
    // The refused run was never accepted: the session holds only the one that was.
    expect((await reply(server.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: session.id } } }))).body.runs.map((r: any) => r.id)).toEqual([run.id]);
  }, 60_000);
});

describe('distributed mode: a `wait: true` submit of a run this process executes', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer({ REDIS_URL: inject('asmTestRedisUrl'), ASM_REDIS_PREFIX: `asmwait-${randomUUID().slice(0, 8)}` });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('is answered with the run as the recorder stored its end: the run is read once, by its start, which claims it', async () => {
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
    const submit = (prompt: string) => reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt, wait: true } }));
    expect((await submit('true')).status).toBe(200);
    const { runs } = server.app.store;
    const [get, claimLocal] = [runs.get.bind(runs), runs.claimLocal.bind(runs)];
    const reads: string[] = [];
    runs.get = (id: string) => {
      reads.push('get');
      return get(id);
    };
    runs.claimLocal = (id: string, owner: string) => {
      reads.push('claimLocal');
      return claimLocal(id, owner);
    };
    try {
      const answer = await submit('echo done');
      expect(answer).toMatchObject({ status: 200, body: { state: 'completed', result: { status: 'completed', text: 'done\n' } } });
      // The executor reads the run as it starts it, with its claim; the answer needs no read after the end.
      expect(reads).toEqual(['claimLocal']);
      expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: answer.body.id } } }))).body).toEqual(answer.body);
    } finally {
      Object.assign(runs, { get, claimLocal });
    }
  });
});

describe('distributed mode: an ACL user', () => {
  const url = inject('asmTestRedisUrl');
  const admin = new Redis(url);
  const prefix = `acl-${randomUUID().slice(0, 8)}`;
  const servers: TestServer[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.close();
  });
  afterAll(async () => {
    await admin.call('ACL', 'DELUSER', `${prefix}-ok`, `${prefix}-no`);
    await admin.quit();
  });

  it('serves with a user limited to its prefix, as the README documents it', async () => {
    await admin.call('ACL', 'SETUSER', `${prefix}-ok`, 'on', '>secret-pw', `~${prefix}:*`, `~{${prefix}}:*`, `&${prefix}:*`, '+@all');
    const server = await startServer({ REDIS_URL: url.replace('redis://', `redis://${prefix}-ok:secret-pw@`), ASM_REDIS_PREFIX: prefix });
    servers.push(server);
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
    const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo acl', wait: true } }));
    expect(run.body).toMatchObject({ state: 'completed', result: { text: 'acl\n' } });
    expect((await admin.keys(`${prefix}:*`)).length).toBeGreaterThan(0);
  }, 30_000);

  it('refuses to start with a user that may not touch the keys, naming the problem', async () => {
    await admin.call('ACL', 'SETUSER', `${prefix}-no`, 'on', '>secret-pw', '~other:*', '+@all');
    const config = loadConfig({ REDIS_URL: url.replace('redis://', `redis://${prefix}-no:secret-pw@`), ASM_REDIS_PREFIX: prefix });
    await expect(createApp(config, pino({ level: 'silent' }))).rejects.toMatchObject({ kind: 'not_ready', message: expect.stringMatching(/NOPERM|refused access/) });
  }, 30_000);
});

describe('distributed mode over TLS (rediss://) with a private CA', () => {
  let tls: TlsRedisServer;
  beforeAll(async () => {
    tls = await startTlsRedisServer();
  });
  afterAll(() => tls.dispose());

  it('runs sessions, lanes and events over TLS when ASM_REDIS_TLS_CA names the CA', async (context) => {
    if (!tls.server) return context.skip(tls.missing);
    const server = await startServer({ REDIS_URL: `rediss://127.0.0.1:${tls.server.port}`, ASM_REDIS_TLS_CA: tls.ca });
    try {
      const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body;
      const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'echo over-tls', wait: true } }));
      expect(run.body).toMatchObject({ state: 'completed', result: { text: 'over-tls\n' } });
      expect((await reply(server.client.GET('/readyz'))).body).toMatchObject({ status: 'ready', checks: { mode: 'distributed' } });
    } finally {
      await server.close();
    }
  }, 30_000);

  it('refuses to start without the CA, naming the certificate problem', async (context) => {
    if (!tls.server) return context.skip(tls.missing);
    const config = loadConfig({ REDIS_URL: `rediss://127.0.0.1:${tls.server.port}` });
    // At the first refusal, not after the 10 s start-up wait: the cause is the TLS error itself, not the wait's end.
    await expect(createApp(config, pino({ level: 'silent' }))).rejects.toMatchObject({
      kind: 'not_ready',
      message: expect.stringMatching(/TLS certificate is not trusted: .*certificate.*ASM_REDIS_TLS_CA/),
      cause: { code: 'SELF_SIGNED_CERT_IN_CHAIN' },
    });
  }, 30_000);
});
