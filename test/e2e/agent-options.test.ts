import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RequestBody } from '../../src/client/index.js';
import { readJsonLines } from '../helpers/json-lines.js';
import { scratchDir } from '../helpers/sandbox.js';
import { reply, startServer, type TestServer } from '../helpers/server.js';

/**
 * The seeds' session options through the service, on the fake CLIs (which record the argv they get,
 * and codex app-server the JSON-RPC it is sent): per-run permission_mode and model, the native escape
 * hatch, approval_posture, system_prompt, max_turns, reasoning_effort, continuation by id or latest,
 * the allowed_tools guardrail beside allow_for_session grants, and caller metadata on events.
 */

const bin = (name: string) => fileURLToPath(new URL(`../fixtures/bin/fake-${name}.mjs`, import.meta.url));

let server: TestServer;
let argvLog: string;
let codexLog: string;

beforeAll(async () => {
  const scratch = scratchDir('asm-options-');
  argvLog = join(scratch, 'argv.jsonl');
  codexLog = join(scratch, 'codex-stdin.jsonl');
  Object.assign(process.env, { GEMINI_API_KEY: 'test-gemini-key', FAKE_ARGV_LOG: argvLog, FAKE_CODEX_LOG: codexLog });
  server = await startServer({ ASM_CODEX_BIN: bin('codex'), ASM_GEMINI_BIN: bin('gemini'), ASM_PASS_ENV: 'FAKE_ARGV_LOG,FAKE_CODEX_LOG' });
});
afterAll(async () => {
  await server.close();
  for (const name of ['GEMINI_API_KEY', 'FAKE_ARGV_LOG', 'FAKE_CODEX_LOG']) delete process.env[name];
});

/** The argv the CLI recorded last (the tests here run one at a time). */
const lastArgv = (cli: string): string[] => readJsonLines(argvLog).filter((line) => line.cli === cli).at(-1)!.argv;
const flagValue = (argv: string[], name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);

async function session(body: RequestBody<'/v1/sessions', 'post'>) {
  const res = await reply(server.client.POST('/v1/sessions', { body }));
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}
async function run(sessionId: string, body: RequestBody<'/v1/sessions/{id}/runs', 'post'>) {
  const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { wait: true, ...body } }));
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}
const events = async (runId: string) => (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: runId } } }))).body.events as Array<Record<string, any>>;

describe('permission modes per session and per run', () => {
  it('a run overrides its session\'s permission_mode and model; the next run is back to the session\'s', async () => {
    const s = await session({ provider: 'claude', permission_mode: 'default', model: 'sonnet' });
    expect(await run(s.id, { prompt: 'hi', permission_mode: 'PLAN', model: 'opus' })).toMatchObject({ state: 'completed' });
    let argv = lastArgv('claude');
    expect([flagValue(argv, '--permission-mode'), flagValue(argv, '--model')]).toEqual(['plan', 'opus']);
    await run(s.id, { prompt: 'hi' });
    argv = lastArgv('claude');
    expect([flagValue(argv, '--permission-mode'), flagValue(argv, '--model')]).toEqual([undefined, 'sonnet']);
  });

  it('provider_permission_mode reaches the CLI as given; the session shows both fields', async () => {
    const s = await session({ provider: 'claude', provider_permission_mode: 'dontAsk' });
    expect(s).toMatchObject({ permission_mode: null, provider_permission_mode: 'dontAsk' });
    await run(s.id, { prompt: 'hi' });
    expect(flagValue(lastArgv('claude'), '--permission-mode')).toBe('dontAsk');
    const mapped = await session({ provider: 'claude', permission_mode: 'bypass_permissions' });
    expect(mapped).toMatchObject({ permission_mode: 'bypass', provider_permission_mode: 'bypassPermissions' });
    const both = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', permission_mode: 'plan', provider_permission_mode: 'dontAsk' } }));
    expect(both.body.error).toMatchObject({ kind: 'config_invalid', details: { field: 'provider_permission_mode', provider: 'claude', mode: 'dontAsk' } });
  });

  it('approval_posture picks the mode when none is named; an explicit permission_mode wins', async () => {
    expect(await session({ provider: 'claude', approval_posture: 'auto' })).toMatchObject({ approval_posture: 'auto', permission_mode: 'auto', provider_permission_mode: 'acceptEdits' });
    expect(await session({ provider: 'gemini', approval_posture: 'manual' })).toMatchObject({ permission_mode: 'default', provider_permission_mode: 'default' });
    expect(await session({ provider: 'claude', approval_posture: 'manual', permission_mode: 'bypass' })).toMatchObject({ permission_mode: 'bypass' });
    const s = await session({ provider: 'claude' });
    await run(s.id, { prompt: 'hi', approval_posture: 'auto' });
    expect(flagValue(lastArgv('claude'), '--permission-mode')).toBe('acceptEdits');
    const none = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'hi', approval_posture: 'none' } }));
    expect(none).toMatchObject({ status: 400, body: { error: { kind: 'config_invalid', details: { field: 'approval_posture' } } } });
  });
});

describe('system_prompt, max_turns, reasoning_effort', () => {
  it('claude: --system-prompt, --max-turns and --effort, a run overriding one of them', async () => {
    const s = await session({ provider: 'claude', system_prompt: 'Be terse.', max_turns: 3, reasoning_effort: 'high' });
    expect(s).toMatchObject({ system_prompt: 'Be terse.', max_turns: 3, reasoning_effort: 'high' });
    await run(s.id, { prompt: 'hi' });
    let argv = lastArgv('claude');
    expect([flagValue(argv, '--system-prompt'), flagValue(argv, '--max-turns'), flagValue(argv, '--effort')]).toEqual(['Be terse.', '3', 'high']);
    await run(s.id, { prompt: 'hi', reasoning_effort: 'low', max_turns: 9 });
    argv = lastArgv('claude');
    expect([flagValue(argv, '--system-prompt'), flagValue(argv, '--max-turns'), flagValue(argv, '--effort')]).toEqual(['Be terse.', '9', 'low']);
  });

  it('codex app-server: developerInstructions on thread/start, effort on turn/start', async () => {
    const s = await session({ provider: 'codex', system_prompt: 'Be terse.', reasoning_effort: 'high' });
    const before = readJsonLines(codexLog).length;
    expect(await run(s.id, { prompt: 'Say hello' })).toMatchObject({ state: 'completed' });
    const sent = readJsonLines(codexLog).slice(before);
    expect(sent.find((line) => line.method === 'thread/start')!.params).toMatchObject({ developerInstructions: 'Be terse.' });
    expect(sent.find((line) => line.method === 'turn/start')!.params).toMatchObject({ effort: 'high' });
  });

  it('codex exec: -c developer_instructions and -c model_reasoning_effort, as TOML strings', async () => {
    const s = await session({ provider: 'codex', permission_mode: 'plan', system_prompt: 'Say "hi"\nthen stop.', reasoning_effort: 'minimal' });
    expect(await run(s.id, { prompt: 'Say hello, then run: echo hello-from-shell' })).toMatchObject({ state: 'completed' });
    const argv = lastArgv('codex');
    expect(argv).toEqual(expect.arrayContaining(['-c', 'developer_instructions="Say \\"hi\\"\\nthen stop."', '-c', 'model_reasoning_effort="minimal"']));
  });
});

describe('continuation', () => {
  it('claude: the session\'s conversation, an exact id, the latest, or a new one', async () => {
    const s = await session({ provider: 'claude' });
    const first = await run(s.id, { prompt: 'hi' });
    const id = first.result.provider_session_id as string;
    expect(flagValue(lastArgv('claude'), '--session-id')).toBe(id);
    await run(s.id, { prompt: 'hi', continuation: { strategy: 'exact', provider_session_id: id } });
    expect(flagValue(lastArgv('claude'), '--resume')).toBe(id);
    await run(s.id, { prompt: 'hi', continuation: { strategy: 'latest' } });
    expect(lastArgv('claude')).toContain('--continue');
    expect(lastArgv('claude')).not.toContain('--session-id');
    await run(s.id, { prompt: 'hi', continuation: false });
    expect(flagValue(lastArgv('claude'), '--session-id')).not.toBe(id);
    const flagLike = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'hi', continuation: { strategy: 'exact', provider_session_id: '--dangerously-skip-permissions' } } }));
    expect(flagLike.body.error).toMatchObject({ kind: 'config_invalid', details: { field: 'continuation.provider_session_id' } });
  });

  it('gemini continues its latest with --resume latest; codex has no latest and says so', async () => {
    const g = await session({ provider: 'gemini' });
    expect(await run(g.id, { prompt: 'say hello [fixture:g-text]', continuation: { strategy: 'latest' } })).toMatchObject({ state: 'completed' });
    expect(flagValue(lastArgv('gemini'), '--resume')).toBe('latest');
    const c = await session({ provider: 'codex' });
    const refused = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: c.id } }, body: { prompt: 'hi', continuation: { strategy: 'latest' } } }));
    expect(refused).toMatchObject({ status: 400, body: { error: { kind: 'config_invalid', details: { field: 'continuation', provider: 'codex' } } } });
  });
});

describe('the allowed_tools guardrail', () => {
  const blocked = async (provider: RequestBody<'/v1/sessions', 'post'>, prompt: string, tool: string) => {
    const s = await session({ ...provider, allowed_tools: ['Read'] });
    const ended = await run(s.id, { prompt });
    expect(ended.state).toBe('failed');
    expect(ended.result.error).toMatchObject({ kind: 'guardrail_blocked', domain: 'guardrail', details: { tool_name: tool, allowed_tools: ['Read'] } });
    const kinds = (await events(ended.id)).map((event) => event.kind);
    // Stopped at the tool_use: nothing after it but the one terminal error, and no approval was asked.
    expect(kinds.slice(kinds.indexOf('tool_use'))).toEqual(['tool_use', 'error']);
  };

  it('claude: a tool outside the list ends the run with guardrail_blocked before it is approved', () =>
    blocked({ provider: 'claude' }, 'touch a file [fixture:c2-approve]', 'Bash'));
  it('codex app-server: the same, for its command_execution', () => blocked({ provider: 'codex' }, 'create a file [fixture:x2-approve]', 'command_execution'));
  it('gemini (which cannot be asked): the same, for run_shell_command', () =>
    blocked({ provider: 'gemini', permission_mode: 'yolo', model: 'gemini-2.5-flash' }, 'say hello, then run echo hello-from-shell', 'run_shell_command'));

  it('a listed tool is asked about as usual; allow_for_session grants it, and a run whose own list leaves it out is still blocked', async () => {
    const s = await session({ provider: 'claude', allowed_tools: ['Bash'] });
    const ws = server.stream(`session_id=${s.id}&after=0`);
    const pending = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'touch a file [fixture:c2-approve]' } }))).body;
    const requested = await ws.event('approval_requested');
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'allow_for_session' } }))).status).toBe(200);
    await ws.event('result');
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: pending.id } } }))).body.state).toBe('completed');
    expect((await reply(server.client.GET('/v1/sessions/{id}', { params: { path: { id: s.id } } }))).body).toMatchObject({ allowed_tools: ['Bash'], granted_tools: ['Bash'] });
    const narrowed = await run(s.id, { prompt: 'touch a file [fixture:c2-approve]', allowed_tools: ['Read'] });
    expect(narrowed.result.error).toMatchObject({ kind: 'guardrail_blocked', details: { tool_name: 'Bash' } });
  });
});

describe('caller metadata', () => {
  it("rides on every event and on the result: the session's, overridden key by key by the run's", async () => {
    const s = await session({ provider: 'shell', metadata: { team: 'search', ticket: 'S-1' } });
    const done = await run(s.id, { prompt: 'echo hi', metadata: { ticket: 'R-7' } });
    const caller = { team: 'search', ticket: 'R-7' };
    expect(done.result.metadata).toMatchObject({ lane: 'core', caller });
    const all = await events(done.id);
    expect(all.length).toBeGreaterThan(2);
    for (const event of all) expect(event.metadata.caller).toEqual(caller);
  });
});

describe('the agent options on the SDK lane', () => {
  let sdkServer: TestServer;
  beforeAll(async () => {
    sdkServer = await startServer({ ASM_PASS_ENV: 'FAKE_ARGV_LOG' }, { sdks: true });
  });
  afterAll(() => sdkServer.close());

  // The SDK sends the system prompt in its initialize request, not in argv, so it is not seen here.
  it("claude: the Agent SDK is given them and renders them into the CLI's argv", async () => {
    const body: RequestBody<'/v1/sessions', 'post'> = { provider: 'claude', lane: 'sdk', permission_mode: 'auto', model: 'opus', system_prompt: 'Be terse.', max_turns: 4, reasoning_effort: 'max' };
    const s = (await reply(sdkServer.client.POST('/v1/sessions', { body }))).body;
    // The fake claude speaks the core lane's argv only, so the run fails; what matters is what the SDK started it with.
    await reply(sdkServer.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'hi', wait: true, continuation: { strategy: 'latest' } } }));
    const argv = lastArgv('claude');
    expect(argv.join(' ')).toMatch(/--permission-mode[= ]acceptEdits/);
    expect(argv.join(' ')).toMatch(/--model[= ]opus/);
    expect(argv.join(' ')).toMatch(/--max-turns[= ]4/);
    expect(argv.join(' ')).toMatch(/--effort[= ]max/);
    expect(argv).toContain('--continue');
  });
});
