import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readJsonLines } from '../helpers/json-lines.js';
import { scratchDir } from '../helpers/sandbox.js';
import { reply, startServer, TERMINAL, terminalEvents, type TestServer } from '../helpers/server.js';

/**
 * codex, gemini and amp end to end through the service: HTTP + WebSocket in front, the core backend
 * spawning the fake CLIs, which replay test/fixtures/<provider> and check what ASM passes and writes.
 */

const bin = (name: string) => fileURLToPath(new URL(`../fixtures/bin/fake-${name}.mjs`, import.meta.url));
const CREDENTIALS = { GEMINI_API_KEY: 'test-gemini-key', AMP_API_KEY: 'test-amp-key' };

let server: TestServer;
let codexLog: string;

function codexStdin(): any[] {
  return readJsonLines(codexLog);
}

async function session(provider: string, extra: Record<string, unknown> = {}) {
  const res = await reply(server.client.POST('/v1/sessions', { body: { provider, ...extra } }));
  expect(res.status).toBe(201);
  return res.body;
}

async function runAndWait(sessionId: string, prompt: string) {
  const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { prompt, wait: true } }));
  expect(res.status).toBe(200);
  return res.body;
}

async function runStarted(runId: string) {
  return (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: runId } } }))).body.events.find((e: any) => e.kind === 'run_started');
}

describe('codex, gemini and amp end to end (fake CLIs replaying real transcripts)', () => {
  beforeEach(async () => {
    codexLog = join(scratchDir('asm-codex-'), 'stdin.jsonl');
    Object.assign(process.env, CREDENTIALS, { FAKE_CODEX_LOG: codexLog });
    server = await startServer({
      ASM_CODEX_BIN: bin('codex'),
      ASM_GEMINI_BIN: bin('gemini'),
      ASM_AMP_BIN: bin('amp'),
      ASM_PASS_ENV: 'FAKE_CODEX_LOG',
    });
  });
  afterEach(async () => {
    await server.close();
    for (const name of [...Object.keys(CREDENTIALS), 'FAKE_CODEX_LOG']) delete process.env[name];
  });

  it('lists the providers with their capabilities and permission modes', async () => {
    const { providers } = (await reply(server.client.GET('/v1/providers'))).body;
    const byName = Object.fromEntries(providers.map((p: any) => [p.name, p]));
    expect(byName.codex).toMatchObject({
      binary: bin('codex'),
      installed: true,
      capabilities: ['approvals', 'interrupt', 'continuation', 'usage', 'warm', 'prewarm'],
      permission_modes: { default: 'read-only', auto: 'full-auto', bypass: 'danger-full-access', plan: 'read-only-never' },
      provider_permission_modes: ['read-only', 'full-auto', 'danger-full-access', 'read-only-never', 'untrusted'],
      options: { system_prompt: true, max_turns: false, reasoning_effort: ['none', 'minimal', 'low', 'medium', 'high', 'xhigh'], continuation_latest: false },
    });
    expect(byName.gemini).toMatchObject({
      capabilities: ['interrupt', 'continuation', 'usage', 'warm', 'prewarm'],
      permission_modes: { default: 'default', auto: 'auto_edit', bypass: 'yolo', plan: 'plan' },
    });
    expect(byName.amp).toMatchObject({ capabilities: ['interrupt', 'continuation', 'usage'], permission_modes: { default: 'default', bypass: 'dangerously-allow-all' } });
    const refused = await reply(server.client.POST('/v1/sessions', { body: { provider: 'amp', permission_mode: 'plan' } }));
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ kind: 'config_invalid', details: { field: 'permission_mode', provider: 'amp', mode: 'plan' } });
  });

  it('codex exec: a plain run, then a continuation that resumes the thread and reports its own usage', async () => {
    const s = await session('codex', { permission_mode: 'plan' });
    const first = await runAndWait(s.id, 'Say hello, then run: echo hello-from-shell');
    expect(first.state).toBe('completed');
    expect(first.result.text).toBe('Hello! Running the command now.\nThe command printed `hello-from-shell`. Done.');
    expect(first.result.usage).toMatchObject({ input_tokens: 18240, output_tokens: 192 });
    expect(first.result.cost_usd).toBeNull();
    expect((await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: s.id } } }))).body.provider_session_id).toBe('01a1fb5c-9184-75a1-b4ba-d2e9db4a1566');

    const second = await runAndWait(s.id, 'again [fixture:x1-resume]');
    expect(second.state).toBe('completed');
    const args = (await runStarted(second.id)).payload.args;
    expect(args.slice(args.indexOf('resume'), args.indexOf('resume') + 2)).toEqual(['resume', '01a1fb5c-9184-75a1-b4ba-d2e9db4a1566']);
    // The thread's cumulative 27360 input tokens, less the first run's 18240.
    expect(second.result.usage).toMatchObject({ input_tokens: 9120, output_tokens: 96, total_tokens: 9216 });
  });

  it('codex app-server: an approval allowed over REST reaches the CLI as "accept"', async () => {
    const s = await session('codex', { permission_mode: 'default' });
    const ws = server.stream(`session_id=${s.id}&after=0`);
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'Say hello, then create a file [fixture:x2-approve]' } }))).body;
    const requested = await ws.event('approval_requested');
    expect(requested.payload).toMatchObject({ subject: 'command_execution', details: { tool_input: { command: "/bin/bash -lc 'touch created-by-codex.txt'" } } });
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'allow' } }))).status).toBe(200);
    await ws.event('result');
    expect(codexStdin().at(-1)).toEqual({ id: 0, result: { decision: 'accept' } });
    const final = (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body;
    expect(final.state).toBe('completed');
    expect(final.result.text).toBe('Hello! Creating the file now.\nCreated `created-by-codex.txt`.');
  });

  it('codex app-server: a deny over the WebSocket reaches the CLI as "decline"; the turn goes on', async () => {
    const s = await session('codex');
    const ws = server.stream(`session_id=${s.id}&after=0`);
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'create a file [fixture:x2-decline]' } }))).body;
    const requested = await ws.event('approval_requested');
    ws.send({ type: 'approve', approval_id: requested.payload.approval_id, decision: 'deny', reason: 'not here', request_id: 'd1' });
    await ws.event('result');
    expect(codexStdin().at(-1)).toEqual({ id: 0, result: { decision: 'decline' } });
    expect(ws.events().find((e) => e.kind === 'tool_result').payload).toMatchObject({ is_error: true, status: 'declined' });
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state).toBe('completed');
  });

  it('codex app-server: an interrupt mid-tool sends turn/interrupt and the run ends interrupted', async () => {
    const s = await session('codex');
    const ws = server.stream(`session_id=${s.id}&after=0`);
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'Run the slow job [fixture:x2-interrupt]' } }))).body;
    await ws.event('tool_use');
    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: run.id } } }))).status).toBe(202);
    const terminal = await ws.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    expect(terminal.event.payload).toMatchObject({ kind: 'user_cancelled' });
    expect(terminalEvents(ws.events(), run.id)).toHaveLength(1);
    expect(codexStdin().at(-1)).toMatchObject({ method: 'turn/interrupt' });
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state).toBe('interrupted');
  });

  it('codex app-server: the next run resumes the thread with thread/resume', async () => {
    const s = await session('codex');
    const first = await runAndWait(s.id, 'Say hello');
    expect(first.result.usage).toMatchObject({ input_tokens: 9120, total_tokens: 9216 });
    const second = await runAndWait(s.id, 'Say hello again [fixture:x2-resume-hello]');
    expect(second.state).toBe('completed');
    const resume = codexStdin().filter((l) => l.method === 'thread/resume');
    expect(resume).toHaveLength(1);
    expect(resume[0].params.threadId).toBe(first.result.provider_session_id);
    // The thread's cumulative usage after two calls, less the first run's one.
    expect(second.result.usage).toMatchObject({ input_tokens: 9120, total_tokens: 9216 });
  });

  it('gemini: a run in yolo mode, then a continuation with --resume', async () => {
    const s = await session('gemini', { permission_mode: 'yolo', model: 'gemini-2.5-flash' });
    const first = await runAndWait(s.id, 'say hello, then run echo hello-from-shell');
    expect(first.state).toBe('completed');
    expect(first.result.text).toBe("Hello! I'll run a quick command.\nThe command printed `hello-from-shell`.");
    expect(first.result.usage).toMatchObject({ input_tokens: 16310, output_tokens: 41 });
    const args = (await runStarted(first.id)).payload.args;
    expect(args).toEqual(expect.arrayContaining(['--approval-mode', 'yolo', '--skip-trust']));
    const second = await runAndWait(s.id, 'again');
    const resumed = (await runStarted(second.id)).payload.args;
    expect(resumed.slice(resumed.indexOf('--resume'))).toEqual(['--resume', 'e56b295f-5276-45ca-9898-f86175f76054']);
  });

  it('gemini: an interrupt mid-tool signals the group and the run ends interrupted', async () => {
    const s = await session('gemini', { permission_mode: 'yolo' });
    const ws = server.stream(`session_id=${s.id}&after=0`);
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'slow [fixture:g-interrupt]' } }))).body;
    await ws.event('tool_use');
    await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: run.id } } }));
    await ws.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.result.error.kind).toBe('user_cancelled');
  });

  it('gemini: exit codes map to error kinds (41 → auth_error)', async () => {
    delete process.env.GEMINI_API_KEY;
    const s = await session('gemini');
    const run = await runAndWait(s.id, 'hi');
    expect(run.state).toBe('failed');
    expect(run.result.error).toMatchObject({ kind: 'auth_error', domain: 'provider' });
  });

  it('amp: a run, then a continuation with `threads continue`', async () => {
    const s = await session('amp');
    const first = await runAndWait(s.id, 'Run: echo hello-from-shell');
    expect(first.state).toBe('completed');
    expect(first.result.text).toBe('Running it.\nIt printed `hello-from-shell`.');
    expect(first.result.usage).toMatchObject({ input_tokens: 22, output_tokens: 70 });
    const second = await runAndWait(s.id, 'again');
    expect((await runStarted(second.id)).payload.args.slice(0, 3)).toEqual(['threads', 'continue', 'T-019d2a4e-6b1c-7c3e-9f4a-2b8d1e0c5a77']);
  });

  it('amp: a tool needing approval fails the run with approval_denied', async () => {
    const s = await session('amp');
    const run = await runAndWait(s.id, 'Create a file [fixture:a-approval]');
    expect(run.state).toBe('failed');
    expect(run.result.error).toMatchObject({ kind: 'approval_denied', domain: 'approval' });
  });

  it('amp without AMP_API_KEY: auth_error at once, never a hang', async () => {
    delete process.env.AMP_API_KEY;
    const s = await session('amp');
    const started = Date.now();
    const run = await runAndWait(s.id, 'hi');
    expect(run.state).toBe('failed');
    expect(run.result.error).toMatchObject({ kind: 'auth_error' });
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
