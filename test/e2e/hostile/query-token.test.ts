import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reply, startServer, type TestServer } from '../../helpers/server.js';
import { tenant, tenantsFile } from '../../helpers/tenants.js';

/**
 * A key in the URL ends up in access logs, proxies and browser histories. `?token=` is accepted only
 * where a browser has no other way to send it: the event streams (the WebSocket GET /v1/events, and
 * GET /v1/runs/{id}/events for EventSource). Everywhere else it is refused, even beside a valid
 * header, with a message saying to use the Authorization header.
 */

const KEY_B = 'key-b-fedcba9876543210';
const B = { authorization: `Bearer ${KEY_B}` };

let server: TestServer;
let run: any;

describe('hostile tenant: the key in the query string', () => {
  beforeAll(async () => {
    server = await startServer({ ASM_TENANTS_FILE: tenantsFile([tenant('tenant-b', KEY_B, { providers: ['shell'] })]) });
    const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: B }));
    run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'echo streamed', wait: true }, headers: B }))).body;
    expect(run.state).toBe('completed');
  });
  afterAll(() => server?.close());

  it.each([
    ['GET', '/v1/sessions'],
    ['POST', '/v1/sessions'],
    ['GET', '/v1/queues'],
    ['GET', '/v1/providers'],
    ['GET', '/v1/runs/$run'],
    ['POST', '/v1/runs/$run/interrupt'],
    ['GET', '/v1/no-such-route'],
  ])('%s %s?token=<key> → 401 naming the Authorization header, with or without the header too', async (method, route) => {
    const path = `${route.replace('$run', run.id)}?token=${KEY_B}`;
    const body = method === 'POST' ? { provider: 'shell' } : undefined;
    for (const headers of [{}, B]) {
      // Raw fetch: a key in the query string where no route takes one, and a route that does not exist.
      const res = await server.request(method, path, body, headers);
      expect(res.status, JSON.stringify(res.body)).toBe(401);
      expect(res.body.error.kind).toBe('unauthorized');
      expect(res.body.error.message).toContain('send Authorization: Bearer <key>');
      expect(res.body.error.message).toContain('only on the event streams');
    }
    expect((await reply(server.client.GET('/v1/sessions', { headers: B }))).body.sessions).toHaveLength(1);
  });

  it('is accepted on GET /v1/runs/{id}/events, as JSON and as SSE', async () => {
    const page = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id }, query: { token: KEY_B } } }));
    expect(page.status).toBe(200);
    expect(page.body.events.at(-1).kind).toBe('result');
    const sse = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id }, query: { token: KEY_B } }, headers: { accept: 'text/event-stream' }, parseAs: 'text' }));
    expect(sse.status).toBe(200);
    expect(sse.body).toContain('event: result');
    expect((await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.id }, query: { token: 'not-a-key-of-this-server' } } }))).status).toBe(401);
  });

  it('is accepted on the WebSocket GET /v1/events', async () => {
    const ws = server.stream(`run_id=${run.id}&after=0&token=${KEY_B}`);
    expect((await ws.event('result')).run_id).toBe(run.id);
    await expect(server.stream(`run_id=${run.id}&token=not-a-key-of-this-server`).opened).rejects.toThrow(/401/);
  });
});
