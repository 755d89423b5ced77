import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Ajv } from 'ajv';
import { EventPage } from '../../src/schemas/api.js';
import { AsmEventSchema, LaneMetadata } from '../../src/schemas/events.js';
import { projectResult } from '../../src/sessions/projection.js';
import { groupAlive, reply, SERVER_MODES, startServer, TERMINAL, terminalEvents, type TestServer } from '../helpers/server.js';

let server: TestServer;
const stream = (query: string) => server.stream(query);

async function session(body: Record<string, unknown> = {}): Promise<any> {
  const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', ...body } }));
  expect(res.status).toBe(201);
  return res.body;
}

async function submit(sessionId: string, prompt: string, extra: Record<string, unknown> = {}) {
  return reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { prompt, ...extra } }));
}

function expectGapFree(events: any[]) {
  for (let i = 1; i < events.length; i++) expect(events[i].seq).toBe(events[i - 1].seq + 1);
}

describe.each(SERVER_MODES)('shell provider end to end, %s (HTTP + WebSocket)', (_mode, modeEnv) => {
  beforeEach(async () => {
    server = await startServer({ ASM_WS_HEARTBEAT_MS: '200', ...modeEnv() });
  });
  afterEach(async () => {
    await server.close();
  });

  it('streams a run in order over the WebSocket and projects the result from the events', async () => {
    const s = await session();
    const ws = stream(`session_id=${s.id}`);
    await ws.next((f) => f.type === 'subscribed');
    const submitted = await submit(s.id, 'echo alpha; echo beta; echo warn >&2');
    expect(submitted.status).toBe(202);
    expect(submitted.body.state).toBe('queued');
    const terminal = await ws.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    expect(terminal.event.kind).toBe('result');

    const events = ws.events();
    expect(events[0].seq).toBe(1);
    expectGapFree(events);
    const kinds = events.map((e) => e.kind);
    expect(kinds[0]).toBe('run_queued');
    expect(kinds[1]).toBe('run_started');
    expect(kinds.at(-1)).toBe('result');
    expect(events.filter((e) => e.kind === 'assistant_delta').map((e) => e.payload.content)).toEqual(['alpha\n', 'beta\n']);
    expect(kinds).toContain('stderr');
    expect(terminalEvents(events, submitted.body.id)).toHaveLength(1);
    for (const e of events) {
      expect(e.metadata).toMatchObject({ lane: 'core', requested_lane: 'auto', execution_mode: 'local', node: 'test-node', queue: 'skill' });
    }

    const run = await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: submitted.body.id } } }));
    expect(run.body.state).toBe('completed');
    expect(run.body.result).toMatchObject({ status: 'completed', text: 'alpha\nbeta\n', error: null });
    const page = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: submitted.body.id }, query: { after: 0 } } }));
    // The page is written from the events' stored JSON (routes/runs.ts): the events as streamed, in the declared shape.
    expect(page.body.events).toEqual(events);
    expect(page.body.run_state).toBe('completed');
    expect(page.body.next_after).toBe(events.at(-1).seq);
    expect(page.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const validPage = new Ajv({ strict: false, validateFormats: false }).addSchema([AsmEventSchema, LaneMetadata]).compile(EventPage);
    expect(validPage(page.body), JSON.stringify(validPage.errors)).toBe(true);
    expect(projectResult(page.body.events)).toEqual(run.body.result);
    const empty = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: submitted.body.id }, query: { after: events.at(-1).seq } } }));
    expect(empty.body).toEqual({ events: [], next_after: events.at(-1).seq, run_state: 'completed' });
  });

  it('answers wait: true with the final result', async () => {
    const s = await session();
    const res = await submit(s.id, 'printf done', { wait: true });
    expect(res.status).toBe(200);
    expect(res.body.result).toMatchObject({ status: 'completed', text: 'done\n' });
  });

  it('fails a run whose command exits non-zero, with exactly one terminal error', async () => {
    const s = await session();
    const res = await submit(s.id, 'echo oops >&2; exit 3', { wait: true });
    expect(res.body.state).toBe('failed');
    expect(res.body.result.error).toMatchObject({ kind: 'provider_error' });
    expect(res.body.result.error.message).toContain('3');
    const page = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: res.body.id } } }));
    expect(terminalEvents(page.body.events, res.body.id).map((e) => e.kind)).toEqual(['error']);
  });

  it('replays from a cursor and goes live with no gap and no duplicate at the seam', async () => {
    const s = await session();
    const run = await submit(s.id, 'for i in $(seq 1 30); do echo line-$i; sleep 0.01; done');
    const early = stream(`session_id=${s.id}&after=0`);
    await early.event('assistant_delta', (e) => e.payload.content === 'line-5\n');
    // Join mid-run from seq 3: the replay covers 4..now, the live tail the rest.
    const late = stream(`run_id=${run.body.id}&after=3`);
    await late.event('result');
    await early.event('result');
    const all = early.events();
    const tail = late.events();
    expect(all[0].seq).toBe(1);
    expectGapFree(all);
    expect(tail[0].seq).toBe(4);
    expectGapFree(tail);
    expect(tail.map((e) => e.id)).toEqual(all.slice(3).map((e) => e.id));
    expect(all.filter((e) => e.kind === 'assistant_delta')).toHaveLength(30);
  });

  it('serves the run as SSE from Last-Event-ID and ends after the terminal event', async () => {
    const s = await session();
    const run = await submit(s.id, 'echo one; echo two; echo three', { wait: true });
    const response = await fetch(`${server.url}/v1/runs/${run.body.id}/events`, {
      headers: { accept: 'text/event-stream', 'last-event-id': '2' },
    });
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    const text = await response.text();
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    const page = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: run.body.id }, query: { after: 2 } } }));
    expect(ids).toEqual(page.body.events.map((e: any) => e.seq));
    expect(text).toMatch(/event: result\n/);
  });

  it('admits max_concurrent_runs, queues max_queued_runs and refuses the rest with 429 at_capacity', async () => {
    const s = await session({ max_concurrent_runs: 1, max_queued_runs: 1 });
    const first = await submit(s.id, 'sleep 5');
    const second = await submit(s.id, 'echo second');
    const third = await submit(s.id, 'echo third');
    expect([first.status, second.status]).toEqual([202, 202]);
    expect(third.status).toBe(429);
    expect(third.body.error.kind).toBe('at_capacity');

    const interruptQueued = await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: second.body.id } } }));
    expect(interruptQueued.status).toBe(202);
    expect(interruptQueued.body.state).toBe('interrupted');
    // The freed queue slot takes a new run again.
    expect((await submit(s.id, 'echo fourth')).status).toBe(202);
  });

  it('tells a waiter on a queued run that it was interrupted', async () => {
    const s = await session({ max_concurrent_runs: 1 });
    await submit(s.id, 'sleep 5');
    const queued = await submit(s.id, 'echo later');
    const waiting = server.app.sessions.waitForRun(queued.body.id, 10_000);
    await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: queued.body.id } } }));
    const run = await waiting;
    expect(run.state).toBe('interrupted');
    expect(run.result?.error?.kind).toBe('user_cancelled');
    const page = await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: queued.body.id } } }));
    expect(page.body.events.map((e: any) => e.kind)).toEqual(['run_queued', 'error']);
  });

  it('interrupts an active run: it ends user_cancelled and its process group is gone', async () => {
    const s = await session();
    const ws = stream(`session_id=${s.id}&after=0`);
    const run = await submit(s.id, 'echo $$; sleep 30 & sleep 30');
    const pidLine = await ws.event('assistant_delta');
    const shellPid = Number(pidLine.payload.content.trim());
    const res = await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: run.body.id } } }));
    expect(res.status).toBe(202);
    const terminal = await ws.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    expect(terminal.event.kind).toBe('error');
    expect(terminal.event.payload.kind).toBe('user_cancelled');
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.body.id } } }))).body.state).toBe('interrupted');
    await expect.poll(() => groupAlive(shellPid), { timeout: 3_000 }).toBe(false);
    const again = await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: run.body.id } } }));
    expect(again.status).toBe(409);
  });

  it('interrupts through a WebSocket frame and acknowledges it', async () => {
    const s = await session();
    const ws = stream(`session_id=${s.id}&after=0`);
    const run = await submit(s.id, 'sleep 30');
    await ws.event('run_started');
    ws.send({ type: 'interrupt', run_id: run.body.id, request_id: 'r1' });
    const ack = await ws.next((f) => f.type === 'ack' && f.request_id === 'r1');
    expect(ack.run.id).toBe(run.body.id);
    expect((await ws.event('error')).payload.kind).toBe('user_cancelled');
  });

  it('enforces the run deadline', async () => {
    const s = await session({ run_deadline_ms: 300 });
    const res = await submit(s.id, 'sleep 10', { wait: true });
    expect(res.body.state).toBe('failed');
    expect(res.body.result.error.kind).toBe('timeout');
  });

  it('closes a session: queued runs end interrupted, active runs are interrupted, new runs are refused', async () => {
    const s = await session({ max_concurrent_runs: 1 });
    const active = await submit(s.id, 'sleep 30');
    const queued = await submit(s.id, 'echo never');
    const closed = await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: s.id } } }));
    expect(closed.status).toBe(200);
    expect(closed.body.state).toBe('closed');
    for (const id of [active.body.id, queued.body.id]) {
      const run = await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id } } }));
      expect(run.body.state).toBe('interrupted');
      expect(run.body.result.error.kind).toBe('user_cancelled');
    }
    const refused = await submit(s.id, 'echo after close');
    expect(refused.status).toBe(409);
  });

  it('filters by kinds and carries queue events when asked', async () => {
    const s = await session();
    const ws = stream(`session_id=${s.id}&kinds=result,run_started&queue_events=true`);
    await ws.next((f) => f.type === 'subscribed');
    await submit(s.id, 'echo x');
    await ws.event('result');
    // The command completes once its handler returns, which may be a moment after the run's terminal event.
    await ws.next((f) => f.type === 'queue_event' && f.event.key === 'queue.command.completed');
    expect(new Set(ws.events().map((e) => e.kind))).toEqual(new Set(['run_started', 'result']));
    const queueKeys = ws.frames.filter((f) => f.type === 'queue_event').map((f) => f.event.key);
    expect(queueKeys).toContain('queue.command.submitted');
    expect(queueKeys).toContain('queue.command.completed');
  });

  it('terminates a peer that stops answering pings', async () => {
    const s = await session();
    const silent = new WebSocket(`${server.wsUrl}/v1/events?session_id=${s.id}`, { autoPong: false });
    const closed = new Promise<number>((resolve) => silent.once('close', (code) => resolve(code)));
    await new Promise((resolve) => silent.once('open', resolve));
    const started = Date.now();
    expect(await closed).toBe(1006);
    expect(Date.now() - started).toBeLessThan(5_000);
    // A peer that answers (the default) stays connected across several heartbeats.
    const polite = stream(`session_id=${s.id}`);
    await polite.opened;
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(polite.socket.readyState).toBe(WebSocket.OPEN);
  });
});

describe('slow WebSocket consumers', () => {
  beforeEach(async () => {
    server = await startServer({ ASM_WS_MAX_BUFFER_BYTES: '2048' });
  });
  afterEach(async () => {
    await server.close();
  });

  it('closes a consumer that falls behind with 4008 and its last seq, and it can resume from there', async () => {
    const s = await session();
    const slow = stream(`session_id=${s.id}&after=0`);
    await slow.opened;
    // Stop reading: the server's send buffer fills up.
    (slow.socket as any)._socket.pause();
    // ~8 MB of output, far beyond what loopback socket buffers absorb.
    const run = await submit(s.id, `yes "$(printf '%01000d' 0)" | head -n 8000`, { wait: true });
    expect(run.body.state).toBe('completed');
    (slow.socket as any)._socket.resume();
    const { code, reason } = await slow.closed;
    expect(code).toBe(4008);
    expect((await reply(server.client.GET('/metrics', { parseAs: 'text' }))).body).toMatch(/^asm_event_stream_slow_consumer_closes_total\{transport="websocket"\} 1$/m);
    const { last_seq } = JSON.parse(reason);
    expect(last_seq).toBeGreaterThan(0);
    const received = slow.events();
    expect(received.at(-1).seq).toBe(last_seq);

    const resumed = stream(`session_id=${s.id}&after=${last_seq}`);
    await resumed.event('result');
    const rest = resumed.events();
    expect(rest[0].seq).toBe(last_seq + 1);
    expectGapFree([...received, ...rest]);
  });
});
