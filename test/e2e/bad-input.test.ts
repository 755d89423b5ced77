import { mkdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ERROR_DOMAINS } from '../../src/errors/kinds.js';
import { reply, startServer, StreamClient, type TestServer } from '../helpers/server.js';

/**
 * Bad input over real HTTP and WebSocket: every refusal is a 4xx with the one error body, names the
 * offending field, leaks no stack, and leaves the server and the data it holds as they were.
 *
 * The bad requests go by raw fetch (server.request), not the generated client: they are malformed on
 * purpose, which the client's types refuse to send. The well-formed ones around them use the client.
 */

const LIMITS = { ASM_MAX_BODY_BYTES: '16384', ASM_MAX_PROMPT_BYTES: '1024', ASM_EVENT_PAGE_MAX: '50' };

let server: TestServer;
/** A session and a finished run made before any bad request, to check nothing touched them. */
let before: { session: any; run: any; events: any[] };

interface Case {
  name: string;
  method: string;
  /** `$session` and `$run` stand for the ids made in beforeAll. */
  path: string;
  /** A string is sent as is; anything else as JSON. */
  body?: unknown;
  headers?: Record<string, string>;
  status: number;
  kind: string;
  /** details.field, which the message also starts with. */
  field: string;
}

function resolvePath(path: string): string {
  return path.replace('$session', before.session.id).replace('$run', before.run.id);
}

/**
 * The error body contract, `{error: {kind, domain, message, retryable, details}}` (src/http/errors.ts),
 * with the field named in details and in the message.
 */
function expectError(res: { status: number; body: any; headers: Headers }, status: number, kind: string, field?: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers.get('content-type')).toContain('application/json');
  expect(Object.keys(res.body)).toEqual(['error']);
  const { error } = res.body;
  expect(error).toMatchObject({ kind, message: expect.any(String), retryable: false });
  expect(ERROR_DOMAINS).toContain(error.domain);
  expect(Object.keys(error).every((k) => ['kind', 'domain', 'message', 'retryable', 'details'].includes(k))).toBe(true);
  if (field !== undefined) {
    expect(error.details?.field).toBe(field);
    expect(error.message.startsWith(`${field}:`), error.message).toBe(true);
  }
  expectNoStack(res.body);
}

function expectNoStack(body: unknown) {
  const text = JSON.stringify(body);
  expect(text).not.toMatch(/"stack"|\n\s+at |node_modules|\.[jt]s:\d+:\d+/);
}

async function send(c: Pick<Case, 'method' | 'path' | 'body' | 'headers'>) {
  return server.request(c.method, resolvePath(c.path), c.body, c.headers);
}

function runCases(cases: Case[]) {
  it.each(cases)('$name → $status $kind ($field)', async (c) => {
    expectError(await send(c), c.status, c.kind, c.field);
  });
}

describe('bad input over HTTP', () => {
  beforeAll(async () => {
    server = await startServer(LIMITS);
    mkdirSync(join(server.workspace, 'inside'));
    // A symlink inside the root that leads out of it.
    symlinkSync(tmpdir(), join(server.workspace, 'escape'));
    const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', metadata: { owner: 'before' } } }));
    expect(session.status).toBe(201);
    const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt: 'echo before', wait: true } }));
    expect(run.body.state).toBe('completed');
    const events = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.body.id } } }));
    // As it stands after its run (its last_seq counts the run's events).
    const sessionAfterRun = await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: session.body.id } } }));
    expect(sessionAfterRun.body.last_seq).toBe(events.body.events.at(-1)!.seq);
    before = { session: sessionAfterRun.body, run: run.body, events: events.body.events };
  });
  afterAll(async () => {
    await server?.close();
  });

  describe('bodies that are not a JSON object', () => {
    runCases([
      { name: 'malformed JSON', method: 'POST', path: '/v1/sessions', body: '{"provider": "shell",', status: 400, kind: 'bad_request', field: 'body' },
      { name: 'empty body with content-type json', method: 'POST', path: '/v1/sessions', body: '', status: 400, kind: 'bad_request', field: 'body' },
      { name: 'a JSON array', method: 'POST', path: '/v1/sessions', body: '[{"provider":"shell"}]', status: 400, kind: 'bad_request', field: 'body' },
      { name: 'a JSON string', method: 'POST', path: '/v1/sessions', body: '"shell"', status: 400, kind: 'bad_request', field: 'body' },
      { name: 'JSON null', method: 'POST', path: '/v1/sessions', body: 'null', status: 400, kind: 'bad_request', field: 'body' },
      { name: 'JSON null as a run', method: 'POST', path: '/v1/sessions/$session/runs', body: 'null', status: 400, kind: 'bad_request', field: 'body' },
      {
        name: 'text/plain content type',
        method: 'POST',
        path: '/v1/sessions',
        body: '{"provider":"shell"}',
        headers: { 'content-type': 'text/plain' },
        status: 415,
        kind: 'bad_request',
        field: 'body',
      },
      {
        name: 'form content type',
        method: 'POST',
        path: '/v1/sessions',
        body: 'provider=shell',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        status: 415,
        kind: 'bad_request',
        field: 'body',
      },
    ]);
  });

  describe('fields of the wrong type, unknown, missing, out of range or not in the enum', () => {
    runCases([
      { name: 'provider: 5', method: 'POST', path: '/v1/sessions', body: { provider: 5 }, status: 400, kind: 'bad_request', field: 'provider' },
      { name: 'max_concurrent_runs: "2"', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', max_concurrent_runs: '2' }, status: 400, kind: 'bad_request', field: 'max_concurrent_runs' },
      { name: 'wait: "yes"', method: 'POST', path: '/v1/sessions/$session/runs', body: { prompt: 'echo x', wait: 'yes' }, status: 400, kind: 'bad_request', field: 'wait' },
      { name: 'prompt: 123', method: 'POST', path: '/v1/sessions/$session/runs', body: { prompt: 123 }, status: 400, kind: 'bad_request', field: 'prompt' },
      { name: 'metadata: an array', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', metadata: [1] }, status: 400, kind: 'bad_request', field: 'metadata' },
      { name: 'unknown top-level field', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', colour: 'blue' }, status: 400, kind: 'bad_request', field: 'colour' },
      { name: 'unknown field in a run', method: 'POST', path: '/v1/sessions/$session/runs', body: { prompt: 'echo x', priority: 1 }, status: 400, kind: 'bad_request', field: 'priority' },
      { name: 'unknown field in an approval decision', method: 'POST', path: '/v1/approvals/apr_x', body: { decision: 'allow', note: 'hi' }, status: 400, kind: 'bad_request', field: 'note' },
      { name: 'missing provider', method: 'POST', path: '/v1/sessions', body: { model: 'x' }, status: 400, kind: 'bad_request', field: 'provider' },
      { name: 'missing prompt', method: 'POST', path: '/v1/sessions/$session/runs', body: { wait: true }, status: 400, kind: 'bad_request', field: 'prompt' },
      { name: 'empty prompt', method: 'POST', path: '/v1/sessions/$session/runs', body: { prompt: '' }, status: 400, kind: 'bad_request', field: 'prompt' },
      { name: 'missing decision', method: 'POST', path: '/v1/approvals/apr_x', body: { reason: 'why' }, status: 400, kind: 'bad_request', field: 'decision' },
      { name: 'max_concurrent_runs: 0', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', max_concurrent_runs: 0 }, status: 400, kind: 'bad_request', field: 'max_concurrent_runs' },
      { name: 'approval_timeout_ms: 5', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', approval_timeout_ms: 5 }, status: 400, kind: 'bad_request', field: 'approval_timeout_ms' },
      { name: 'lane: "fast"', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', lane: 'fast' }, status: 400, kind: 'bad_request', field: 'lane' },
      { name: 'decision: "maybe"', method: 'POST', path: '/v1/approvals/apr_x', body: { decision: 'maybe' }, status: 400, kind: 'bad_request', field: 'decision' },
      { name: 'execution_mode: "x"', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', execution_mode: 'x' }, status: 400, kind: 'bad_request', field: 'execution_mode' },
      { name: 'execution_mode: "x" on a run', method: 'POST', path: '/v1/sessions/$session/runs', body: { prompt: 'echo x', execution_mode: 'x' }, status: 400, kind: 'bad_request', field: 'execution_mode' },
    ]);

    it('says which values an enum takes', async () => {
      const res = await server.request('POST', '/v1/sessions', { provider: 'shell', lane: 'fast' });
      expect(res.body.error.message).toBe('lane: must be one of "auto", "core", "sdk"');
    });
  });

  describe('values the service refuses', () => {
    runCases([
      { name: 'unknown provider', method: 'POST', path: '/v1/sessions', body: { provider: 'gpt-9' }, status: 400, kind: 'bad_request', field: 'provider' },
      { name: 'permission_mode shell does not have', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', permission_mode: 'yolo' }, status: 400, kind: 'config_invalid', field: 'permission_mode' },
      { name: 'permission_mode that is no mode', method: 'POST', path: '/v1/sessions', body: { provider: 'claude', permission_mode: 'sometimes' }, status: 400, kind: 'config_invalid', field: 'permission_mode' },
      { name: 'provider_permission_mode claude does not have', method: 'POST', path: '/v1/sessions', body: { provider: 'claude', provider_permission_mode: 'yolo' }, status: 400, kind: 'config_invalid', field: 'provider_permission_mode' },
      { name: 'approval_posture none', method: 'POST', path: '/v1/sessions', body: { provider: 'claude', approval_posture: 'none' }, status: 400, kind: 'config_invalid', field: 'approval_posture' },
      { name: 'system_prompt for shell', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', system_prompt: 'be brief' }, status: 400, kind: 'config_invalid', field: 'system_prompt' },
      { name: 'max_turns for gemini', method: 'POST', path: '/v1/sessions', body: { provider: 'gemini', max_turns: 3 }, status: 400, kind: 'config_invalid', field: 'max_turns' },
      { name: 'reasoning_effort codex does not take', method: 'POST', path: '/v1/sessions', body: { provider: 'codex', reasoning_effort: 'max' }, status: 400, kind: 'config_invalid', field: 'reasoning_effort' },
      { name: 'permission_mode on a run', method: 'POST', path: '/v1/sessions/$session/runs', body: { prompt: 'echo x', permission_mode: 'plan' }, status: 400, kind: 'config_invalid', field: 'permission_mode' },
      { name: 'continuation of a shell run', method: 'POST', path: '/v1/sessions/$session/runs', body: { prompt: 'echo x', continuation: { strategy: 'exact', provider_session_id: 'abc' } }, status: 400, kind: 'config_invalid', field: 'continuation' },
      { name: 'unknown queue on a session', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', queue: 'express' }, status: 400, kind: 'bad_request', field: 'queue' },
      { name: 'unknown queue on a run', method: 'POST', path: '/v1/sessions/$session/runs', body: { prompt: 'echo x', queue: 'express' }, status: 400, kind: 'bad_request', field: 'queue' },
      { name: 'cwd "../.."', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', cwd: '../..' }, status: 403, kind: 'forbidden', field: 'cwd' },
      { name: 'cwd absolute outside the root', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', cwd: tmpdir() }, status: 403, kind: 'forbidden', field: 'cwd' },
      { name: 'cwd inside/../.. (escapes after normalising)', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', cwd: 'inside/../..' }, status: 403, kind: 'forbidden', field: 'cwd' },
      { name: 'cwd a symlink leading outside', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', cwd: 'escape' }, status: 403, kind: 'forbidden', field: 'cwd' },
      { name: 'cwd that does not exist', method: 'POST', path: '/v1/sessions', body: { provider: 'shell', cwd: 'inside/missing' }, status: 400, kind: 'bad_request', field: 'cwd' },
    ]);

    it('names the known providers and queues in the refusal', async () => {
      const provider = await server.request('POST', '/v1/sessions', { provider: 'gpt-9' });
      expect(provider.body.error.message).toContain('known: amp, claude, codex, gemini, shell');
      const queue = await server.request('POST', '/v1/sessions', { provider: 'shell', queue: 'express' });
      expect(queue.body.error.message).toMatch(/lanes: .*prompt/);
    });

    it('still takes a cwd inside the root', async () => {
      const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', cwd: 'inside' } }));
      expect(res.status).toBe(201);
      expect(res.body.cwd.endsWith('/inside')).toBe(true);
      await server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: res.body.id } } });
    });
  });

  describe('sizes', () => {
    it('refuses a body over ASM_MAX_BODY_BYTES with 413', async () => {
      const res = await server.request('POST', '/v1/sessions', { provider: 'shell', metadata: { blob: 'x'.repeat(20_000) } });
      expectError(res, 413, 'payload_too_large', 'body');
    });

    it('refuses a prompt over ASM_MAX_PROMPT_BYTES (counted in bytes) with 413 naming prompt, waited for or not', async () => {
      for (const wait of [false, true]) {
        // 600 characters, 1200 UTF-8 bytes: over the 1024-byte prompt limit, far under the body limit.
        const res = await server.request('POST', `/v1/sessions/${before.session.id}/runs`, { prompt: `echo ${'é'.repeat(600)}`, wait });
        expectError(res, 413, 'payload_too_large', 'prompt');
        expect(res.body.error.message).toContain('ASM_MAX_PROMPT_BYTES');
      }
    });

    it('refuses a value nested so deep it could not be serialised back', async () => {
      const deep = `{"provider":"shell","metadata":{"a":${'['.repeat(5000)}${']'.repeat(5000)}}}`;
      expectError(await server.request('POST', '/v1/sessions', deep), 400, 'bad_request', 'metadata');
    });
  });

  describe('unknown ids and routes', () => {
    it.each([
      ['GET', '/v1/sessions/ses_missing'],
      ['DELETE', '/v1/sessions/ses_missing'],
      ['GET', '/v1/sessions/ses_missing/runs'],
      ['POST', '/v1/sessions/ses_missing/runs'],
      ['GET', '/v1/runs/run_missing'],
      ['GET', '/v1/runs/run_missing/events'],
      ['POST', '/v1/runs/run_missing/interrupt'],
      ['POST', '/v1/approvals/apr_missing'],
    ])('%s %s → 404 not_found naming the id', async (method, path) => {
      const body = method === 'POST' && path.includes('/approvals/') ? { decision: 'allow' } : path.endsWith('/runs') && method === 'POST' ? { prompt: 'echo x' } : undefined;
      const res = await server.request(method, path, body);
      expectError(res, 404, 'not_found');
      expect(res.body.error.message).toContain(path.split('/')[3]);
    });

    it('answers a waited-for submit to an unknown session 404 not_found naming it', async () => {
      const res = await server.request('POST', '/v1/sessions/ses_missing/runs', { prompt: 'echo x', wait: true });
      expectError(res, 404, 'not_found');
      expect(res.body.error.message).toContain('ses_missing');
    });

    it('answers an unknown route with a JSON 404', async () => {
      for (const [method, path] of [
        ['GET', '/v1/nothing-here'],
        ['PUT', '/v1/sessions'],
        ['GET', '/'],
      ]) {
        const res = await server.request(method, path);
        expectError(res, 404, 'not_found');
        expect(res.body.error.message).toBe(`no route ${method} ${path}`);
      }
    });

    it('answers a malformed or over-long path with the error body, not Fastify\'s', async () => {
      expectError(await server.request('GET', '/v1/sessions/%E0%A4%A'), 400, 'bad_request', 'url');
      expectError(await server.request('GET', `/v1/sessions/${'x'.repeat(300)}`), 414, 'bad_request', 'url');
    });
  });

  describe('query parameters', () => {
    runCases([
      { name: 'after=abc', method: 'GET', path: '/v1/runs/$run/events?after=abc', status: 400, kind: 'bad_request', field: 'query.after' },
      { name: 'after=-1', method: 'GET', path: '/v1/runs/$run/events?after=-1', status: 400, kind: 'bad_request', field: 'query.after' },
      { name: 'limit=0', method: 'GET', path: '/v1/runs/$run/events?limit=0', status: 400, kind: 'bad_request', field: 'query.limit' },
      { name: 'limit above ASM_EVENT_PAGE_MAX', method: 'GET', path: '/v1/runs/$run/events?limit=51', status: 400, kind: 'bad_request', field: 'query.limit' },
      { name: 'unknown query parameter', method: 'GET', path: '/v1/runs/$run/events?since=3', status: 400, kind: 'bad_request', field: 'query.since' },
      {
        name: 'Last-Event-ID that is not a seq',
        method: 'GET',
        path: '/v1/runs/$run/events',
        headers: { accept: 'text/event-stream', 'last-event-id': 'abc' },
        status: 400,
        kind: 'bad_request',
        field: 'header.last-event-id',
      },
    ]);

    it('takes limit=ASM_EVENT_PAGE_MAX, and without a limit pages at no more than it', async () => {
      const s = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }));
      const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.body.id } }, body: { prompt: 'seq 1 60', wait: true } }));
      const full = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.body.id }, query: { limit: 50 } } }));
      expect(full.status).toBe(200);
      expect(full.body.events).toHaveLength(50);
      const byDefault = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.body.id } } }));
      expect(byDefault.status).toBe(200);
      expect(byDefault.body.events).toEqual(full.body.events);
      expect(byDefault.body.next_after).toBe(50);
      await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: s.body.id } } }));
    });
  });

  describe('prototype pollution', () => {
    it.each([
      ['__proto__ at the top level', '{"provider":"shell","__proto__":{"polluted":"yes"}}'],
      ['__proto__ inside metadata', '{"provider":"shell","metadata":{"__proto__":{"polluted":"yes"}}}'],
      ['constructor.prototype', '{"provider":"shell","constructor":{"prototype":{"polluted":"yes"}}}'],
    ])('%s → 400, Object.prototype untouched', async (_name, body) => {
      const res = await server.request('POST', '/v1/sessions', body);
      expectError(res, 400, 'bad_request', 'body');
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(Object.prototype).not.toHaveProperty('polluted');
    });
  });

  describe('bad WebSocket input on /v1/events', () => {
    const clients: StreamClient[] = [];
    const connect = (query: string) => {
      const client = new StreamClient(`${server.wsUrl}/v1/events?${query}`);
      clients.push(client);
      return client;
    };
    afterAll(() => {
      for (const c of clients) c.close();
    });

    function expectErrorFrame(frame: any, field: string) {
      expect(frame).toMatchObject({ type: 'error', error: { kind: 'bad_request', domain: 'config', retryable: false, details: { field } } });
      expect(frame.error.message.startsWith(`${field}:`), frame.error.message).toBe(true);
      expectNoStack(frame);
    }

    it('answers bad frames with an error frame naming the field, and keeps the socket open', async () => {
      const ws = connect(`session_id=${before.session.id}`);
      await ws.next((f) => f.type === 'subscribed');

      ws.socket.send('this is not JSON');
      expectErrorFrame(await ws.next((f) => f.type === 'error' && f.error.details?.field === 'frame'), 'frame');

      ws.send({ type: 'shout', session_id: before.session.id });
      const unknownType = await ws.next((f) => f.type === 'error' && f.error.details?.field === 'type');
      expectErrorFrame(unknownType, 'type');
      expect(unknownType.error.message).toContain('"subscribe"');

      ws.send({ type: 'approve', decision: 'allow', request_id: 'req-1' });
      const missing = await ws.next((f) => f.type === 'error' && f.request_id === 'req-1');
      expectErrorFrame(missing, 'approval_id');

      ws.send({ type: 'approve', approval_id: 'apr_x', decision: 'maybe', request_id: 'req-2' });
      expectErrorFrame(await ws.next((f) => f.type === 'error' && f.request_id === 'req-2'), 'decision');

      ws.send({ type: 'subscribe', session_id: before.session.id, kinds: ['not_a_kind'] });
      expectErrorFrame(await ws.next((f) => f.type === 'error' && f.error.details?.field === 'kinds.0'), 'kinds.0');

      ws.send({ type: 'subscribe', after: 0 });
      expectErrorFrame(await ws.next((f) => f.type === 'error' && f.error.details?.field === 'after'), 'after');

      // Still open and still working: a valid subscribe replays the session.
      expect(ws.socket.readyState).toBe(WebSocket.OPEN);
      ws.send({ type: 'subscribe', session_id: before.session.id, after: 0 });
      await ws.event('result');
      expect(ws.events().map((e) => e.seq)).toEqual(before.events.map((e) => e.seq));
    });

    it('answers an unknown kind in the query with an error frame', async () => {
      const ws = connect(`session_id=${before.session.id}&kinds=result,not_a_kind`);
      const frame = await ws.next((f) => f.type === 'error');
      expectErrorFrame(frame, 'query.kinds');
      expect(frame.error.message).toContain('not_a_kind');
      expect(ws.socket.readyState).toBe(WebSocket.OPEN);
    });

    it('answers `after` without a session with an error frame', async () => {
      const ws = connect('after=3');
      expectErrorFrame(await ws.next((f) => f.type === 'error'), 'after');
      expect(ws.socket.readyState).toBe(WebSocket.OPEN);
    });

    it('answers an unknown session with an error frame not_found', async () => {
      const ws = connect('session_id=ses_missing');
      const frame = await ws.next((f) => f.type === 'error');
      expect(frame.error).toMatchObject({ kind: 'not_found', message: 'session ses_missing not found' });
    });

    it('refuses the upgrade when the query has the wrong type', async () => {
      const ws = connect('session_id=x&after=abc');
      await expect(ws.opened).rejects.toThrow(/400/);
    });
  });

  describe('afterwards', () => {
    it('still answers, and what existed before the bad requests is unchanged', async () => {
      expect((await reply(server.client.GET('/healthz'))).body).toEqual({ status: 'ok' });
      expect((await reply(server.client.GET('/readyz'))).body).toMatchObject({ status: 'ready', checks: { store: 'ok', mode: 'embedded', spawner: 'posix_spawn' } });

      // No bad request created a session; the good one made by a test was closed.
      const sessions = (await reply(server.client.GET('/v1/sessions'))).body.sessions;
      expect(sessions.filter((s: any) => s.state === 'open').map((s: any) => s.id)).toEqual([before.session.id]);
      const session = await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: before.session.id } } }));
      expect(session.body).toEqual(before.session);
      const runs = await reply(server.client.GET('/v1/sessions/{id}/runs', { params: { path: { id: before.session.id } } }));
      expect(runs.body.runs).toEqual([before.run]);
      const events = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: before.run.id } } }));
      expect(events.body.events).toEqual(before.events);
      const queues = await reply(server.client.GET('/v1/queues'));
      expect(queues.body.queues.find((q: any) => q.name === 'skill')).toMatchObject({ active: 0, pending: 0, failed: 0 });

      // And a normal run still works, in the old session and in a new one.
      const again = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: before.session.id } }, body: { prompt: 'echo still here', wait: true } }));
      expect(again.status).toBe(200);
      expect(again.body.result).toMatchObject({ status: 'completed', text: 'still here\n' });
      const fresh = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell' } }));
      expect(fresh.status).toBe(201);
      const run = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: fresh.body.id } }, body: { prompt: 'printf ok', wait: true } }));
      expect(run.body.result).toMatchObject({ status: 'completed', text: 'ok\n' });
    });
  });
});
