import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { reply, startServer, StreamClient, type TestServer } from '../helpers/server.js';
import { tenant, tenantsFile } from '../helpers/tenants.js';

/** API keys and tenants: without a key nothing but health answers; a tenant sees only its own. */

const KEY_A = 'key-a-0123456789abcdef';
const KEY_B = 'key-b-fedcba9876543210';
const A = { authorization: `Bearer ${KEY_A}` };
const B = { authorization: `Bearer ${KEY_B}` };

let server: TestServer;
/** Tenant A's session, with one finished run. */
let a: { session: any; run: any };
const clients: StreamClient[] = [];

function stream(query: string, headers: Record<string, string> = {}): StreamClient {
  const client = new StreamClient(`${server.wsUrl}/v1/events?${query}`, headers);
  clients.push(client);
  return client;
}

function expectUnauthorized(res: { status: number; body: any }) {
  expect(res.status).toBe(401);
  expect(res.body.error).toMatchObject({ kind: 'unauthorized', domain: 'config', retryable: false });
}

function expectNotFound(res: { status: number; body: any }, id: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(404);
  expect(res.body.error.kind).toBe('not_found');
  expect(res.body.error.message).toContain(id);
}

describe('API keys and tenants', () => {
  beforeAll(async () => {
    // Both tenants run shell commands in these tests, which only a tenant granted shell may (README "Tenants").
    const grant = { providers: ['shell', 'claude'] };
    server = await startServer({ ASM_TENANTS_FILE: tenantsFile([tenant('tenant-a', KEY_A, grant), tenant('tenant-b', KEY_B, grant)]) });
    const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', metadata: { owner: 'a' } }, headers: A }));
    expect(session.status).toBe(201);
    const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'echo secret of a', wait: true }, headers: A }));
    expect(run.body.state).toBe('completed');
    a = { session: session.body, run: run.body };
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await server?.close();
  });

  describe('without a valid key', () => {
    it.each([
      ['GET', '/v1/sessions'],
      ['POST', '/v1/sessions'],
      ['GET', '/v1/queues'],
      ['GET', '/v1/providers'],
      ['GET', '/metrics'],
    ])('%s %s → 401 with no key, a wrong key, or a non-bearer scheme', async (method, path) => {
      const body = method === 'POST' ? { provider: 'shell' } : undefined;
      // Raw fetch: one table of methods and paths, and broken Authorization headers on purpose.
      const missing = await server.request(method, path, body);
      expectUnauthorized(missing);
      expect(missing.body.error.message).toContain('Authorization: Bearer');
      const wrong = await server.request(method, path, body, { authorization: 'Bearer not-a-key-of-this-server' });
      expectUnauthorized(wrong);
      expect(wrong.body.error.message).toBe('unknown API key');
      expectUnauthorized(await server.request(method, path, body, { authorization: `Basic ${KEY_A}` }));
      expectUnauthorized(await server.request(method, path, body, { authorization: `Bearer ${KEY_A.slice(0, -1)}` }));
    });

    it("refuses even for an existing id, without telling whether it exists", async () => {
      const res = await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: a.run.id } } }));
      expectUnauthorized(res);
      expect(JSON.stringify(res.body)).not.toContain(a.run.id);
    });

    it('created nothing with the refused requests', async () => {
      const sessions = await reply(server.client.GET('/v1/sessions', { headers: A }));
      expect(sessions.body.sessions.map((s: any) => s.id)).toEqual([a.session.id]);
    });

    it('answers /healthz, /readyz and /openapi.json without a key', async () => {
      expect(await reply(server.client.GET('/healthz'))).toMatchObject({ status: 200, body: { status: 'ok' } });
      expect(await reply(server.client.GET('/readyz'))).toMatchObject({ status: 200, body: { status: 'ready' } });
      // Raw fetch: the document does not describe itself.
      expect(await server.request('GET', '/openapi.json')).toMatchObject({ status: 200, body: { openapi: '3.1.0' } });
    });
  });

  describe("tenant B and tenant A's resources", () => {
    it('cannot see the session', async () => {
      expectNotFound(await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: a.session.id } }, headers: B })), a.session.id);
      expectNotFound(await reply(server.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: a.session.id } }, headers: B })), a.session.id);
      expectNotFound(await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: a.session.id } }, headers: B })), a.session.id);
    });

    it('cannot run in it or close it', async () => {
      expectNotFound(await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: a.session.id } }, body: { prompt: 'echo from b' }, headers: B })), a.session.id);
      expectNotFound(await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: a.session.id } }, headers: B })), a.session.id);
      const session = await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: a.session.id } }, headers: A }));
      expect(session.body.state).toBe('open');
      const runs = await reply(server.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: a.session.id } }, headers: A }));
      expect(runs.body.runs.map((r: any) => r.id)).toEqual([a.run.id]);
    });

    it('cannot read its run or its events, nor interrupt it', async () => {
      expectNotFound(await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: a.run.id } }, headers: B })), a.run.id);
      expectNotFound(await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: a.run.id } }, headers: B })), a.run.id);
      expectNotFound(await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: a.run.id } }, headers: { ...B, accept: 'text/event-stream' } })), a.run.id);
      expectNotFound(await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: a.run.id } }, headers: B })), a.run.id);
      // A reads them fine.
      const events = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: a.run.id } }, headers: A }));
      expect(events.status).toBe(200);
      expect(events.body.events.at(-1).kind).toBe('result');
    });

    it('lists only its own sessions', async () => {
      const own = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: B }));
      expect(own.status).toBe(201);
      const listB = await reply(server.client.GET('/v1/sessions', { headers: B }));
      expect(listB.body.sessions.map((s: any) => s.id)).toEqual([own.body.id]);
      const listA = await reply(server.client.GET('/v1/sessions', { headers: A }));
      expect(listA.body.sessions.map((s: any) => s.id)).toEqual([a.session.id]);
      await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: own.body.id } }, headers: B }));
    });

    it("cannot decide A's pending approval", async () => {
      const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude' }, headers: A }));
      const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: '[fixture:c2-approve] Say hello, then create a file' }, headers: A }));
      expect(run.status).toBe(202);
      let approvals: any[] = [];
      await expect
        .poll(async () => (approvals = (await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: session.body.id } }, headers: A }))).body.approvals).length, { timeout: 10_000 })
        .toBe(1);
      const approvalId = approvals[0].id;

      const byB = await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: approvalId } }, body: { decision: 'deny' }, headers: B }));
      expectNotFound(byB, approvalId);
      expectNotFound(await reply(server.client.GET('/v1/approvals/{id}', { params: { path: { id: approvalId } }, headers: B })), approvalId);
      expect((await reply(server.client.GET('/v1/approvals/{id}', { params: { path: { id: approvalId } }, headers: A }))).body).toMatchObject({ id: approvalId, state: 'pending' });
      const wsB = stream('', B);
      await wsB.next((f) => f.type === 'subscribed');
      wsB.send({ type: 'approve', approval_id: approvalId, decision: 'deny', request_id: 'b-1' });
      expect((await wsB.next((f) => f.request_id === 'b-1')).error.kind).toBe('not_found');

      // Still pending for A, who allows it: the run completes.
      const byA = await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: approvalId } }, body: { decision: 'allow' }, headers: A }));
      expect(byA.status).toBe(200);
      expect(byA.body).toMatchObject({ state: 'resolved', decision: 'allow' });
      await expect.poll(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.body.id } }, headers: A }))).body.state, { timeout: 10_000 }).toBe('completed');
      await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: session.body.id } }, headers: A }));
    });

    it("cannot interrupt A's running run, by HTTP or a WebSocket frame: it runs on until A interrupts it", async () => {
      const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: A }));
      const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'sleep 30' }, headers: A }));
      const runOf = async (headers: Record<string, string>) => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.body.id } }, headers }))).body;
      await expect.poll(async () => (await runOf(A)).state, { timeout: 10_000 }).toBe('running');
      // A run executing in the process asked is known there without a read: B is refused all the same.
      expectNotFound(await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: run.body.id } }, headers: B })), run.body.id);
      const wsB = stream('', B);
      await wsB.next((f) => f.type === 'subscribed');
      wsB.send({ type: 'interrupt', run_id: run.body.id, request_id: 'b-3' });
      expect((await wsB.next((f) => f.request_id === 'b-3')).error.kind).toBe('not_found');
      expect((await runOf(A)).state).toBe('running');

      const byA = await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: run.body.id } }, headers: A }));
      expect(byA).toMatchObject({ status: 202, body: { id: run.body.id, state: 'running' } });
      await expect.poll(async () => (await runOf(A)).state, { timeout: 10_000 }).toBe('interrupted');
      await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: session.body.id } }, headers: A }));
    });
  });

  describe('the WebSocket stream', () => {
    it('refuses a connection without a key, or with a wrong one', async () => {
      await expect(stream(`session_id=${a.session.id}`).opened).rejects.toThrow(/401/);
      await expect(stream(`session_id=${a.session.id}&token=not-a-key-of-this-server`).opened).rejects.toThrow(/401/);
      await expect(stream(`session_id=${a.session.id}`, { authorization: 'Bearer not-a-key-of-this-server' }).opened).rejects.toThrow(/401/);
    });

    it('closes the connection of a refused upgrade rather than leaving it open', async () => {
      const { port } = new URL(server.url);
      const socket = connect(Number(port), '127.0.0.1');
      let received = '';
      socket.on('data', (chunk) => (received += chunk.toString()));
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      socket.write(
        [
          `GET /v1/events?session_id=${a.session.id} HTTP/1.1`,
          `Host: 127.0.0.1:${port}`,
          'Connection: Upgrade',
          'Upgrade: websocket',
          'Sec-WebSocket-Version: 13',
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
          '',
          '',
        ].join('\r\n'),
      );
      // The server answers 401 and hangs up; the client never closes its side.
      await closed;
      expect(received).toMatch(/^HTTP\/1\.1 401/);
      expect(received).toContain('"kind":"unauthorized"');
    }, 5_000);

    it.each([
      ['?token=', `token=${KEY_A}`, {}],
      ['an Authorization header', '', A],
    ])('works with the key in %s', async (_how, token, headers) => {
      const ws = stream(`session_id=${a.session.id}&after=0${token ? `&${token}` : ''}`, headers);
      await ws.opened;
      const result = await ws.event('result');
      expect(result.run_id).toBe(a.run.id);
      expect(ws.events()[0].seq).toBe(1);
    });

    it("does not let B subscribe to A's session or run", async () => {
      const bySession = stream(`session_id=${a.session.id}&after=0`, B);
      const refused = await bySession.next((f) => f.type === 'error');
      expect(refused.error).toMatchObject({ kind: 'not_found', message: `session ${a.session.id} not found` });
      expect(bySession.socket.readyState).toBe(WebSocket.OPEN);

      const byRun = stream(`token=${KEY_B}`);
      await byRun.next((f) => f.type === 'subscribed');
      byRun.send({ type: 'subscribe', run_id: a.run.id, after: 0 });
      expect((await byRun.next((f) => f.type === 'error')).error.kind).toBe('not_found');
      byRun.send({ type: 'interrupt', run_id: a.run.id, request_id: 'b-2' });
      expect((await byRun.next((f) => f.request_id === 'b-2')).error.kind).toBe('not_found');

      await new Promise((resolve) => setTimeout(resolve, 100));
      expect([...bySession.events(), ...byRun.events()]).toEqual([]);
    });

    it("does not carry A's events on B's tenant-wide stream", async () => {
      const wsA = stream('', A);
      const wsB = stream('', B);
      await wsA.next((f) => f.type === 'subscribed');
      await wsB.next((f) => f.type === 'subscribed');

      const runA = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: a.session.id } }, body: { prompt: 'echo a again', wait: true }, headers: A }));
      const sessionB = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' }, headers: B }));
      const runB = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionB.body.id } }, body: { prompt: 'echo b', wait: true }, headers: B }));
      await wsA.event('result', (e) => e.run_id === runA.body.id);
      await wsB.event('result', (e) => e.run_id === runB.body.id);

      expect(new Set(wsA.events().map((e) => e.session_id))).toEqual(new Set([a.session.id]));
      expect(new Set(wsB.events().map((e) => e.session_id))).toEqual(new Set([sessionB.body.id]));
    });
  });
});
