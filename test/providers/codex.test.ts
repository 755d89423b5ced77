import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { BackendRunSpec } from '../../src/backends/types.js';
import codex from '../../src/providers/codex/index.js';
import type { ProviderDefinition, ProviderRunInput } from '../../src/providers/types.js';
import { readJsonLines } from '../helpers/json-lines.js';
import { scratchDir } from '../helpers/sandbox.js';
import { interruptAfter, kinds, makeSpec, runToEnd, startRun, terminalError, terminalOf } from '../backends/harness.js';

/**
 * Codex on both transports: argv and line mapping, and the core backend driving the fake codex, which
 * replays test/fixtures/codex and checks every JSON-RPC line ASM writes to app-server.
 */

const FAKE_CODEX = fileURLToPath(new URL('../fixtures/bin/fake-codex.mjs', import.meta.url));
const INPUT: ProviderRunInput = { runId: 'run_1', sessionId: 'ses_1', prompt: 'hi', cwd: '/tmp', env: {} };
const X1_THREAD = '01a1fb5c-9184-75a1-b4ba-d2e9db4a1566';
const X2_THREAD = '01a1fb5d-8a60-7850-a77a-e8d9cec71621';

/** A codex spec on the fake, and the lines the fake read from its stdin. */
function fakeCodex(prompt: string, overrides: Partial<BackendRunSpec> = {}) {
  const log = join(scratchDir('asm-fake-codex-'), 'stdin.jsonl');
  const spec = makeSpec(codex, { prompt, binary: FAKE_CODEX, env: { PATH: process.env.PATH!, FAKE_CODEX_LOG: log }, ...overrides });
  const stdinLines = (): Array<Record<string, any>> =>
    readJsonLines(log);
  return { spec, stdinLines };
}

describe('codex transports and argv', () => {
  it('runs app-server for the modes that may ask, exec for those that never do', () => {
    for (const mode of [undefined, 'read-only', 'full-auto', 'untrusted']) {
      const process = codex.create({ ...INPUT, permissionMode: mode });
      expect([process.args, process.stdin]).toEqual([['app-server'], 'control']);
    }
    expect(codex.create({ ...INPUT, prompt: '-h', permissionMode: 'read-only-never', model: 'gpt-5-codex' }).args).toEqual([
      'exec', '--json', '--skip-git-repo-check', '-m', 'gpt-5-codex', '-s', 'read-only', '-c', 'approval_policy="never"', '--', '-h',
    ]);
    const resumed = codex.create({ ...INPUT, permissionMode: 'danger-full-access', providerSessionId: X1_THREAD });
    expect(resumed.args).toEqual(['exec', '--json', '--skip-git-repo-check', '--dangerously-bypass-approvals-and-sandbox', 'resume', X1_THREAD, '--', 'hi']);
    expect(resumed.stdin).toBe('closed');
  });

  it('classifies failed turns by their message', () => {
    const failed = (message: string) => codex.create({ ...INPUT, permissionMode: 'read-only-never' }).onLine(JSON.stringify({ type: 'turn.failed', error: { message } })).events![0].payload;
    expect(failed('Missing environment variable: `OPENAI_API_KEY`.')).toMatchObject({ kind: 'auth_error' });
    expect(failed('unexpected status 401 Unauthorized')).toMatchObject({ kind: 'auth_error' });
    expect(failed('unexpected status 429 Too Many Requests')).toMatchObject({ kind: 'rate_limit' });
    expect(failed('unexpected status 503 Service Unavailable')).toMatchObject({ kind: 'provider_error', retryable: true });
    expect(failed('bad request')).toMatchObject({ kind: 'provider_error', retryable: false });
  });

  it('keeps exec retries and warnings as raw, and names MCP tools', () => {
    const process = codex.create({ ...INPUT, permissionMode: 'read-only-never' });
    const retry = { type: 'error', message: 'Reconnecting... 2/5 (unexpected status 404)' };
    expect(process.onLine(JSON.stringify(retry)).events).toEqual([{ kind: 'raw', payload: { stream: 'stdout', content: retry } }]);
    const mcp = { id: 'item_4', type: 'mcp_tool_call', server: 'docs', tool: 'search', arguments: { q: 'x' }, result: null, error: { message: 'no index' }, status: 'failed' };
    expect(process.onLine(JSON.stringify({ type: 'item.completed', item: mcp })).events).toEqual([
      { kind: 'tool_use', payload: { tool_name: 'mcp__docs__search', tool_call_id: 'item_4', input: { q: 'x' } } },
      { kind: 'tool_result', payload: { tool_call_id: 'item_4', content: 'no index', is_error: true, status: 'failed' } },
    ]);
  });

  it('answers server requests it does not handle with a JSON-RPC error, and streams agent deltas', () => {
    const process = codex.create(INPUT);
    const output = process.onLine(JSON.stringify({ id: 7, method: 'item/tool/requestUserInput', params: {} }));
    expect(output.events![0].kind).toBe('raw');
    expect(JSON.parse(output.write![0])).toEqual({ id: 7, error: { code: -32601, message: 'ASM does not handle item/tool/requestUserInput' } });
    expect(process.onLine(JSON.stringify({ method: 'item/agentMessage/delta', params: { itemId: 'm', delta: 'Hel' } })).events).toEqual([
      { kind: 'assistant_delta', payload: { content: 'Hel', index: 0 } },
    ]);
  });

  it('app-server: the host\'s bwrap is hidden from it; the configWarning that follows makes no event, any other stays raw', () => {
    const process = codex.create(INPUT);
    expect(process.hides!.executables).toEqual(['bwrap']);
    // The line codex 0.169 printed on stderr in the sandbox, colours and all.
    expect(process.hides!.notice.test('\x1b[2m2026-12-05T19:11:08.227051Z\x1b[0m \x1b[31mERROR\x1b[0m \x1b[2mcodex_app_server\x1b[0m\x1b[2m:\x1b[0m Codex could not find bubblewrap on PATH. Install bubblewrap with your OS package manager.')).toBe(true);
    const warning = (summary: string) => process.onLine(JSON.stringify({ method: 'configWarning', params: { summary, details: null } }));
    expect(warning('Codex could not find bubblewrap on PATH. Install bubblewrap with your OS package manager.')).toEqual({});
    const other = { method: 'configWarning', params: { summary: 'Unknown key `foo` in config.toml', details: null } };
    expect(warning(other.params.summary).events).toEqual([{ kind: 'raw', payload: { stream: 'stdout', content: other } }]);
    expect(codex.create({ ...INPUT, permissionMode: 'read-only-never' }).hides).toBeUndefined();
  });

  it('passes the session\'s MCP servers as -c overrides without their secrets, on both transports', () => {
    const mcp = { dir: '/run/asm-mcp', servers: { docs: { command: 'node', args: ['d.mjs'], env: { TOKEN: 's3cret' } }, web: { url: 'https://x.test/mcp', headers: { 'X-Key': 'k3y' } } } };
    const overrides = [
      '-c', 'mcp_servers.docs.command="node"', '-c', 'mcp_servers.docs.args=["d.mjs"]', '-c', 'mcp_servers.docs.env_vars=["TOKEN"]',
      '-c', 'mcp_servers.web.url="https://x.test/mcp"', '-c', 'mcp_servers.web.env_http_headers={"X-Key" = "ASM_MCP_1_HEADER_0"}',
    ];
    expect(codex.create({ ...INPUT, mcp }).args).toEqual(['app-server', ...overrides]);
    const exec = codex.create({ ...INPUT, mcp, permissionMode: 'danger-full-access' }).args;
    expect(exec[0]).toBe('exec');
    // The overrides are options of exec, before the prompt.
    expect(exec.slice(-overrides.length - 2)).toEqual([...overrides, '--', 'hi']);
    expect(codex.mcp!.env!(mcp.servers, mcp.dir)).toEqual({ TOKEN: 's3cret', ASM_MCP_1_HEADER_0: 'k3y' });
  });

  it('asks for an MCP tool call\'s approval elicitation like for any tool, and answers it accept or decline', () => {
    const process = codex.create(INPUT);
    const elicitation = (id: number) => ({
      id,
      method: 'mcpServer/elicitation/request',
      params: { serverName: 'shouter', mode: 'form', _meta: { codex_approval_kind: 'mcp_tool_call', tool_name: 'shout', tool_params: { text: 'ping' } }, requestedSchema: { type: 'object', properties: {} } },
    });
    const asked = process.onLine(JSON.stringify(elicitation(3)));
    expect(asked.approvals).toEqual([{ subject: 'mcp__shouter__shout', toolInput: { text: 'ping' }, native: { id: 3, elicitation: true } }]);
    expect(JSON.parse(process.decide(asked.approvals![0], 'allow', null).write![0])).toEqual({ id: 3, result: { action: 'accept', content: {} } });
    expect(JSON.parse(process.decide(asked.approvals![0], 'allow_for_session', null).write![0])).toEqual({ id: 3, result: { action: 'accept', content: {}, _meta: { persist: 'session' } } });
    expect(JSON.parse(process.decide(asked.approvals![0], 'deny', 'no').write![0])).toEqual({ id: 3, result: { action: 'decline', content: null } });
    // An elicitation of the server's own (not codex's approval) is still refused.
    const own = process.onLine(JSON.stringify({ id: 4, method: 'mcpServer/elicitation/request', params: { serverName: 'shouter', mode: 'form', message: 'Your name?' } }));
    expect(JSON.parse(own.write![0]).error.code).toBe(-32601);
  });
});

describe('codex exec on the fake CLI', () => {
  it('X1: reasoning, messages and a command, usage from the cumulative turn.completed', async () => {
    const { spec } = fakeCodex('Say hello, then run: echo hello-from-shell', { permissionMode: 'read-only-never' });
    const events = await runToEnd(spec);
    expect(kinds(events)).toEqual(['run_started', 'thinking', 'assistant_message', 'tool_use', 'tool_result', 'assistant_message', 'result']);
    expect(events[3].payload).toEqual({ tool_name: 'command_execution', tool_call_id: 'item_2', input: { command: "/bin/bash -lc 'echo hello-from-shell'" } });
    expect(events[4].payload).toEqual({ tool_call_id: 'item_2', content: 'hello-from-shell\n', is_error: false, status: 'completed', exit_code: 0 });
    const totals = { input_tokens: 18240, output_tokens: 192, cache_read_input_tokens: 16128, cache_creation_input_tokens: 0, total_tokens: 18432 };
    expect(terminalOf(events).payload).toEqual({
      status: 'completed',
      stop_reason: 'completed',
      usage: totals,
      cost_usd: null,
      duration_ms: null,
      provider_session_id: X1_THREAD,
      provider_totals: totals,
    });
  });

  it('resume: `exec resume <thread>`, and the run reports its share of the thread totals', async () => {
    const previousTotals = { input_tokens: 18240, output_tokens: 192, cache_read_input_tokens: 16128, cache_creation_input_tokens: 0, total_tokens: 18432 };
    const { spec } = fakeCodex('Again [fixture:x1-resume]', { permissionMode: 'read-only-never', providerSessionId: X1_THREAD, previousTotals });
    const events = await runToEnd(spec);
    expect((events[0].payload as { args: string[] }).args).toEqual(expect.arrayContaining(['resume', X1_THREAD]));
    expect(terminalOf(events).payload).toMatchObject({
      usage: { input_tokens: 9120, output_tokens: 96, cache_read_input_tokens: 8064, cache_creation_input_tokens: 0, total_tokens: 9216 },
      provider_totals: { input_tokens: 27360, output_tokens: 288, total_tokens: 27648 },
    });
  });

  it('X1-failed: turn.failed → provider_error with the API body', async () => {
    const error = terminalError(await runToEnd(fakeCodex('x [fixture:x1-failed]', { permissionMode: 'read-only-never' }).spec));
    expect(error.kind).toBe('provider_error');
    expect(error.message).toContain('invalid_request_error');
  });

  it('interrupt: SIGINT, no final event, exit 1 → user_cancelled', async () => {
    const { events, endedInMs } = await interruptAfter(fakeCodex('slow [fixture:x1-interrupt]', { permissionMode: 'read-only-never' }).spec, 'tool_use');
    expect(terminalError(events)).toMatchObject({ kind: 'user_cancelled' });
    expect(endedInMs).toBeLessThan(1_500);
  });
});

describe('codex app-server on the fake CLI', () => {
  it('X2: the handshake, an approval accepted, and usage from thread/tokenUsage/updated', async () => {
    const { spec, stdinLines } = fakeCodex('Say hello, then create a file [fixture:x2-approve]', { permissionMode: 'read-only' });
    const { run, events, waitFor } = startRun(spec);
    const approval = await waitFor('approval_requested');
    expect(approval).toMatchObject({
      subject: 'command_execution',
      details: { tool_input: { command: "/bin/bash -lc 'touch created-by-codex.txt'", cwd: '/workspace/repo', reason: 'Need to create a file in the workspace' } },
    });
    await run.decide(approval.approval_id, 'allow', null);
    await run.done;
    expect(kinds(events)).toEqual(['run_started', 'thinking', 'assistant_message', 'tool_use', 'approval_requested', 'tool_result', 'assistant_message', 'result']);
    expect(terminalOf(events).payload).toMatchObject({
      status: 'completed',
      usage: { input_tokens: 18240, output_tokens: 192, cache_read_input_tokens: 16128, total_tokens: 18432 },
      duration_ms: 229,
      provider_session_id: X2_THREAD,
    });
    const written = stdinLines();
    expect(written.map((l) => l.method ?? 'answer')).toEqual(['initialize', 'initialized', 'thread/start', 'turn/start', 'answer']);
    expect(written[2].params).toMatchObject({ approvalPolicy: 'on-request', sandbox: 'read-only', cwd: spec.cwd });
    expect(written[4]).toEqual({ id: 0, result: { decision: 'accept' } });
  });

  it('allow_for_session answers acceptForSession; deny answers decline and the item is declined', async () => {
    const session = fakeCodex('x [fixture:x2-approve]');
    const first = startRun(session.spec);
    await first.run.decide((await first.waitFor('approval_requested')).approval_id, 'allow_for_session', null);
    await first.run.done;
    // x2-approve was recorded with "accept": the fake reports the other decision as a mismatch.
    expect(terminalError(first.events).message).toContain('expected decision accept, got {"decision":"acceptForSession"}');
    expect(session.stdinLines().at(-1)).toEqual({ id: 0, result: { decision: 'acceptForSession' } });

    const denied = fakeCodex('x [fixture:x2-decline]');
    const second = startRun(denied.spec);
    await second.run.decide((await second.waitFor('approval_requested')).approval_id, 'deny', 'no');
    await second.run.done;
    expect(second.events.find((e) => e.kind === 'tool_result')!.payload).toMatchObject({ is_error: true, status: 'declined', exit_code: null });
    expect(terminalOf(second.events).kind).toBe('result');
    expect(denied.stdinLines().at(-1)).toEqual({ id: 0, result: { decision: 'decline' } });
  });

  it('finds no bwrap in the sandbox; its notice about that makes no event', async () => {
    // The fake, like codex, says so on stderr and in a configWarning when it finds none.
    const unfiltered: ProviderDefinition = { ...codex, create: (input) => ({ ...codex.create(input), hides: { executables: ['bwrap'], notice: /^$/ } }) };
    const noticed = await runToEnd({ ...fakeCodex('Say hello').spec, provider: unfiltered });
    expect(noticed.filter((e) => e.kind === 'stderr').map((e) => e.payload.content)).toEqual([expect.stringContaining('Codex could not find bubblewrap on PATH')]);
    const events = await runToEnd(fakeCodex('Say hello').spec);
    expect(kinds(events)).toEqual(kinds(noticed).filter((kind) => kind !== 'stderr'));
    expect(JSON.stringify(events)).not.toContain('bubblewrap');
  });

  it('interrupt: turn/interrupt naming the thread and turn → user_cancelled', async () => {
    const { spec, stdinLines } = fakeCodex('slow [fixture:x2-interrupt]');
    const { run, events, waitFor } = startRun(spec);
    await waitFor('tool_use');
    await run.interrupt('user');
    await run.done;
    expect(terminalError(events)).toMatchObject({ kind: 'user_cancelled' });
    expect(stdinLines().at(-1)).toMatchObject({ method: 'turn/interrupt', params: { threadId: X2_THREAD, turnId: '01a1fb5d-8a80-7e42-bc16-6179c3dd2d13' } });
  });

  it('continuation: thread/resume with the thread id, per-run usage from the previous totals', async () => {
    const previousTotals = { input_tokens: 9120, output_tokens: 96, cache_read_input_tokens: 8064, cache_creation_input_tokens: 0, total_tokens: 9216 };
    const { spec, stdinLines } = fakeCodex('again [fixture:x2-resume-hello]', { providerSessionId: 'thread-from-before', previousTotals });
    const events = await runToEnd(spec);
    expect(stdinLines()[2]).toMatchObject({ method: 'thread/resume', params: { threadId: 'thread-from-before' } });
    expect(stdinLines()[3]).toMatchObject({ method: 'turn/start', params: { threadId: 'thread-from-before' } });
    expect(terminalOf(events).payload).toMatchObject({
      usage: { input_tokens: 9120, output_tokens: 96, total_tokens: 9216 },
      provider_session_id: 'thread-from-before',
      provider_totals: { input_tokens: 18240, total_tokens: 18432 },
    });
  });
});
