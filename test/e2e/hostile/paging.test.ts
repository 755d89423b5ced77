import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVER_MODES, startServer, type TestServer } from '../../helpers/server.js';

/** Lists answer pages: a tenant with many sessions cannot make one response unbounded, and a forged cursor is a 400. */

describe.each(SERVER_MODES)('list routes page (%s)', (_mode, modeEnv) => {
  let server: TestServer;
  const created: string[] = [];

  beforeAll(async () => {
    server = await startServer(modeEnv());
    for (let i = 0; i < 5; i++) created.push((await server.request('POST', '/v1/sessions', { provider: 'shell' })).body.id);
  });
  afterAll(() => server.close());

  it('pages GET /v1/sessions with limit and cursor: every session once, in creation order', async () => {
    const seen: string[] = [];
    let path = '/v1/sessions?limit=2';
    for (let pages = 1; ; pages++) {
      const res = await server.request('GET', path);
      expect(res.status).toBe(200);
      expect(res.body.sessions.length).toBeLessThanOrEqual(2);
      seen.push(...res.body.sessions.map((s: { id: string }) => s.id));
      if (res.body.next_cursor === null) {
        expect(pages).toBe(3);
        break;
      }
      path = `/v1/sessions?limit=2&cursor=${encodeURIComponent(res.body.next_cursor)}`;
    }
    expect(seen).toEqual(created);
    expect((await server.request('GET', '/v1/sessions')).body).toMatchObject({ next_cursor: null });
  });

  it("pages a session's runs", async () => {
    const session = created[0];
    for (let i = 0; i < 3; i++) await server.request('POST', `/v1/sessions/${session}/runs`, { prompt: `echo ${i}`, wait: true });
    const first = (await server.request('GET', `/v1/sessions/${session}/runs?limit=2`)).body;
    expect(first.runs).toHaveLength(2);
    const rest = (await server.request('GET', `/v1/sessions/${session}/runs?limit=2&cursor=${encodeURIComponent(first.next_cursor)}`)).body;
    expect(rest.runs.map((r: { prompt: string }) => r.prompt)).toEqual(['echo 2']);
    expect(rest.next_cursor).toBeNull();
  });

  it('refuses a forged cursor and an out-of-range limit with a 400 naming the field', async () => {
    const forged = await server.request('GET', '/v1/sessions?cursor=eyJvZmZzZXQiOi0xfQ');
    expect(forged.status).toBe(400);
    expect(forged.body.error).toMatchObject({ kind: 'bad_request', details: { field: 'query.cursor' } });
    for (const limit of ['0', '1001', 'x']) {
      const res = await server.request('GET', `/v1/sessions?limit=${limit}`);
      expect(res.status).toBe(400);
      expect(res.body.error.details.field).toBe('query.limit');
    }
  });
});
