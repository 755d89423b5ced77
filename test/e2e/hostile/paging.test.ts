import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reply, SERVER_MODES, startServer, type TestServer } from '../../helpers/server.js';
import { waitFor } from '../../helpers/wait.js';

/** Lists answer pages: a tenant with many sessions cannot make one response unbounded, and a forged cursor is a 400. */

/** Every item of a list route, page by page of `limit`, and how many pages it took. */
/** Raw fetch: one loop over several list routes, which the client's per-path types cannot share. */
async function everyPage(server: TestServer, path: string, field: string, limit: number): Promise<{ items: any[]; pages: number }> {
  const items: any[] = [];
  for (let pages = 1, cursor: string | null = null; ; pages++) {
    const res = await server.request('GET', `${path}?limit=${limit}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body[field].length).toBeLessThanOrEqual(limit);
    items.push(...res.body[field]);
    cursor = res.body.next_cursor;
    if (cursor === null) return { items, pages };
  }
}

describe.each(SERVER_MODES)('list routes page (%s)', (_mode, modeEnv) => {
  let server: TestServer;
  /** A second process of the deployment, in distributed mode, so there are nodes to page. */
  let peer: TestServer | undefined;
  const created: string[] = [];

  beforeAll(async () => {
    const env = modeEnv();
    server = await startServer(env);
    if (env.REDIS_URL) peer = await startServer(env);
    for (let i = 0; i < 5; i++) created.push((await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }))).body.id);
  });
  afterAll(async () => {
    await peer?.close();
    await server.close();
  });

  it('pages GET /v1/sessions with limit and cursor: every session once, in creation order', async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let pages = 1; ; pages++) {
      const res = await reply(server.client.GET('/v1/sessions', { params: { query: { limit: 2, cursor } } }));
      expect(res.status).toBe(200);
      expect(res.body.sessions.length).toBeLessThanOrEqual(2);
      seen.push(...res.body.sessions.map((s: { id: string }) => s.id));
      if (res.body.next_cursor === null) {
        expect(pages).toBe(3);
        break;
      }
      cursor = res.body.next_cursor;
    }
    expect(seen).toEqual(created);
    expect((await reply(server.client.GET('/v1/sessions'))).body).toMatchObject({ next_cursor: null });
  });

  it("pages a session's runs", async () => {
    const session = created[0];
    for (let i = 0; i < 3; i++) await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session } }, body: { prompt: `echo ${i}`, wait: true } }));
    const first = (await reply(server.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: session }, query: { limit: 2 } } }))).body;
    expect(first.runs).toHaveLength(2);
    const rest = (await reply(server.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: session }, query: { limit: 2, cursor: first.next_cursor } } }))).body;
    expect(rest.runs.map((r: { prompt: string }) => r.prompt)).toEqual(['echo 2']);
    expect(rest.next_cursor).toBeNull();
  });

  it('pages the dead letters, the queue lanes, the providers and the nodes, each item once', async () => {
    const session = created[1];
    for (let i = 0; i < 3; i++) await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session } }, body: { prompt: `exit ${i + 1}`, wait: true } }));
    await waitFor(async () => (await reply(server.client.GET('/v1/dlq'))).body.dead_letters.length === 3, 'three dead letters');
    for (const [path, field, key] of [
      ['/v1/dlq', 'dead_letters', 'id'],
      ['/v1/queues', 'queues', 'name'],
      ['/v1/providers', 'providers', 'name'],
      ['/v1/nodes', 'nodes', 'id'],
    ]) {
      const whole = (await server.request('GET', path)).body; // raw, as in everyPage
      expect(whole.next_cursor, path).toBeNull();
      const { items, pages } = await everyPage(server, path, field, 2);
      expect(items.map((item) => item[key]), path).toEqual(whole[field].map((item: any) => item[key]));
      expect(pages, path).toBe(Math.ceil(whole[field].length / 2));
      if (path === '/v1/nodes') expect(items).toHaveLength(peer ? 2 : 1);
    }
    const forged = await reply(server.client.GET('/v1/queues', { params: { query: { cursor: 'bm90LWEtY3Vyc29y' } } }));
    expect(forged.body.error).toMatchObject({ kind: 'bad_request', details: { field: 'query.cursor' } });
  });

  it('refuses a forged cursor and an out-of-range limit with a 400 naming the field', async () => {
    const forged = await reply(server.client.GET('/v1/sessions', { params: { query: { cursor: 'eyJvZmZzZXQiOi0xfQ' } } }));
    expect(forged.status).toBe(400);
    expect(forged.body.error).toMatchObject({ kind: 'bad_request', details: { field: 'query.cursor' } });
    for (const limit of ['0', '1001', 'x']) {
      // Raw fetch: limits out of range or not numbers, which the client's types refuse.
      const res = await server.request('GET', `/v1/sessions?limit=${limit}`);
      expect(res.status).toBe(400);
      expect(res.body.error.details.field).toBe('query.limit');
    }
  });
});
