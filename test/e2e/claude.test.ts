import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readJsonLines } from '../helpers/json-lines.js';
import { scratchDir } from '../helpers/sandbox.js';
import { reply, SERVER_MODES, startServer, TERMINAL, terminalEvents, type TestServer } from '../helpers/server.js';

/**
 * Claude end to end through the service: HTTP + WebSocket in front, the core backend spawning the fake
 * claude (which replays real transcripts and checks every line ASM writes to its stdin; a wrong line
 * makes it exit 3, which would fail these runs).
 */

let server: TestServer;
let stdinLog: string;
const stream = (query: string) => server.stream(query);

/** What ASM wrote to the fake CLI's stdin, parsed. */
function written(): any[] {
  return readJsonLines(stdinLog);
}

async function claudeSession(extra: Record<string, unknown> = {}) {
  const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', ...extra } }));
  expect(res.status).toBe(201);
  return res.body;
}

async function submit(sessionId: string, prompt: string) {
  const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { prompt } }));
  expect(res.status).toBe(202);
  return res.body;
}

describe.each(SERVER_MODES)('claude end to end, %s (fake CLI replaying real transcripts)', (_mode, modeEnv) => {
  beforeEach(async () => {
    stdinLog = join(scratchDir('asm-claude-'), 'stdin.jsonl');
    process.env.FAKE_CLAUDE_LOG = stdinLog;
    server = await startServer({ ASM_PASS_ENV: 'FAKE_CLAUDE_LOG', ...modeEnv() });
  });
  afterEach(async () => {
    await server.close();
    delete process.env.FAKE_CLAUDE_LOG;
  });

  it('runs a turn: events in order, usage and cost in the result, the provider session id captured', async () => {
    const s = await claudeSession();
    const ws = stream(`session_id=${s.id}&after=0`);
    const run = await submit(s.id, 'Say hello, then run: echo hello-from-shell [fixture:c1-hello]');
    await ws.event('result');
    const kinds = ws.events().map((e) => e.kind);
    expect(kinds).toEqual(['run_queued', 'run_started', 'assistant_message', 'tool_use', 'tool_result', 'assistant_message', 'cost_update', 'result']);
    const final = (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body;
    expect(final.state).toBe('completed');
    expect(final.result.text).toBe('Hello! Let me run that command.\nThe command printed `hello-from-shell`. All done!');
    expect(final.result.usage).toMatchObject({ input_tokens: 6, output_tokens: 96 });
    expect(final.result.cost_usd).toBeCloseTo(0.019544);
    expect(final.result.provider_session_id).toMatch(/^[0-9a-f-]{36}$/);
    expect((await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: s.id } } }))).body.provider_session_id).toBe(final.result.provider_session_id);
    expect(written().map((l) => l.type)).toEqual(['control_request', 'user']);
  });

  it('allows an approval over REST: the decision reaches the CLI and the run completes', async () => {
    const s = await claudeSession();
    const ws = stream(`session_id=${s.id}&after=0`);
    const run = await submit(s.id, 'Say hello, then create a file [fixture:c2-approve]');
    const requested = await ws.event('approval_requested');
    expect(requested.payload).toMatchObject({ subject: 'Bash', details: { tool_input: { command: 'touch created-by-claude.txt' } } });
    expect(Date.parse(requested.payload.expires_at)).toBeGreaterThan(Date.now());

    const pending = await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: s.id } } }));
    expect(pending.body.approvals.map((a: any) => a.id)).toEqual([requested.payload.approval_id]);
    expect(pending.body.approvals[0].run_id).toBe(run.id);

    const decided = await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'allow' } }));
    expect(decided.status).toBe(200);
    expect(decided.body).toMatchObject({ state: 'resolved', decision: 'allow' });
    await ws.event('result');
    const again = await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'deny' } }));
    expect(again.status).toBe(409);

    const events = ws.events();
    const resolvedAt = events.findIndex((e) => e.kind === 'approval_resolved');
    expect(events[resolvedAt].payload).toMatchObject({ decision: 'allow', reason: null });
    expect(events.findIndex((e) => e.kind === 'tool_result')).toBeGreaterThan(resolvedAt);
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state).toBe('completed');
    const answer = written().find((l) => l.type === 'control_response');
    expect(answer.response.response).toEqual({ behavior: 'allow', updatedInput: { command: 'touch created-by-claude.txt', description: 'Create an empty file' } });
    expect((await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: s.id } } }))).body.approvals).toEqual([]);
  });

  it('denies an approval over the WebSocket with a reason the CLI receives', async () => {
    const s = await claudeSession();
    const ws = stream(`session_id=${s.id}&after=0`);
    const run = await submit(s.id, 'Say hello, then create a file [fixture:c2-deny]');
    const requested = await ws.event('approval_requested');
    ws.send({ type: 'approve', approval_id: requested.payload.approval_id, decision: 'deny', reason: 'not in this repo', request_id: 'a1' });
    const ack = await ws.next((f) => f.type === 'ack' && f.request_id === 'a1');
    expect(ack.approval.decision).toBe('deny');
    await ws.event('result');
    const toolResult = ws.events().find((e) => e.kind === 'tool_result');
    expect(toolResult.payload.is_error).toBe(true);
    const answer = written().find((l) => l.type === 'control_response');
    expect(answer.response.response).toMatchObject({ behavior: 'deny', message: 'not in this repo' });
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state).toBe('completed');
  });

  it('denies an approval nobody answers once approval_timeout_ms passes', async () => {
    const s = await claudeSession({ approval_timeout_ms: 300 });
    const ws = stream(`session_id=${s.id}&after=0`);
    const run = await submit(s.id, 'Say hello, then create a file [fixture:c2-deny]');
    const requested = await ws.event('approval_requested');
    const resolved = await ws.event('approval_resolved');
    expect(resolved.payload).toEqual({ approval_id: requested.payload.approval_id, decision: 'deny', reason: 'timeout' });
    await ws.event('result');
    expect(written().find((l) => l.type === 'control_response').response.response.behavior).toBe('deny');
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'allow' } }))).status).toBe(409);
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state).toBe('completed');
  });

  it('interrupts a run in the middle of a tool: control_request interrupt, then user_cancelled', async () => {
    const s = await claudeSession();
    const ws = stream(`session_id=${s.id}&after=0`);
    const run = await submit(s.id, 'Run the slow job [fixture:c3-interrupt]');
    await ws.event('tool_use');
    const res = await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: run.id } } }));
    expect(res.status).toBe(202);
    const terminal = await ws.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    expect(terminal.event.kind).toBe('error');
    expect(terminal.event.payload).toMatchObject({ kind: 'user_cancelled' });
    expect(terminalEvents(ws.events(), run.id)).toHaveLength(1);
    expect(written().some((l) => l.type === 'control_request' && l.request.subtype === 'interrupt')).toBe(true);
    const final = (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body;
    expect(final.state).toBe('interrupted');
    expect(final.result.error.kind).toBe('user_cancelled');
  });

  it("continues the provider's session on the next run", async () => {
    const s = await claudeSession();
    const first = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'hello [fixture:c1-hello]', wait: true } }))).body;
    const second = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'again [fixture:c1-hello]', wait: true } }))).body;
    expect(second.state).toBe('completed');
    expect(second.result.provider_session_id).toBe(first.result.provider_session_id);
    const started = (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: second.id } } }))).body.events.find((e: any) => e.kind === 'run_started');
    expect(started.payload.args).toContain('--resume');
    expect(started.payload.args[started.payload.args.indexOf('--resume') + 1]).toBe(first.result.provider_session_id);
  });

  it('allow_for_session answers later requests for the same tool without asking', async () => {
    const s = await claudeSession();
    const ws = stream(`session_id=${s.id}&after=0`);
    await submit(s.id, 'create a file [fixture:c2-approve]');
    const first = await ws.event('approval_requested');
    await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: first.payload.approval_id } }, body: { decision: 'allow_for_session' } }));
    await ws.event('result');
    expect((await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: s.id } } }))).body.granted_tools).toEqual(['Bash']);

    const second = await submit(s.id, 'create it again [fixture:c2-approve]');
    const auto = await ws.event('approval_resolved', (e) => e.run_id === second.id);
    expect(auto.payload).toMatchObject({ decision: 'allow', reason: 'allowed_for_session' });
    await ws.event('result', (e) => e.run_id === second.id);
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: second.id } } }))).body.state).toBe('completed');
  });

  it('fails a run whose CLI breaks the protocol, with one precise terminal error', async () => {
    const s = await claudeSession();
    const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'x [fixture:not-json]', wait: true } }));
    expect(res.body.state).toBe('failed');
    expect(res.body.result.error.kind).toBe('parse_error');
  });
});
