import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readJsonLines } from '../helpers/json-lines.js';
import { scratchDir } from '../helpers/sandbox.js';
import { processesWith } from '../faults/processes.js';
import { FAKE_CLAUDE, groupAlive, reply, SERVER_MODES, startServer, type TestServer } from '../helpers/server.js';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../helpers/wait.js';

/**
 * Warm sessions through the service: the fake claude keeps reading stdin in stream-json input mode
 * and replays one transcript per user message (test/fixtures/bin/fake-claude.mjs), so a second run on
 * the same process shows as the same pid in run_started and one initialize on the process's stdin.
 * The fake codex (app-server) and the fake gemini (`--acp`) serve turn after turn the same way.
 */

const FAKE_CODEX = fileURLToPath(new URL('../fixtures/bin/fake-codex.mjs', import.meta.url));
const FAKE_GEMINI = fileURLToPath(new URL('../fixtures/bin/fake-gemini.mjs', import.meta.url));

let server: TestServer;
let stdinLog: string;
let closed = false;

/** What ASM wrote to the fake CLI's stdin (every process of the test), parsed. */
function written(): any[] {
  return readJsonLines(stdinLog);
}

async function warmSession(extra: Record<string, unknown> = {}) {
  const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', lane: 'core', warm: true, ...extra } }));
  expect(res.status).toBe(201);
  return res.body;
}

/** Submit and wait for the run's end; returns the run and its run_started payload. */
async function runToEnd(sessionId: string, prompt: string, extra: Record<string, unknown> = {}) {
  const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: sessionId } }, body: { prompt, wait: true, ...extra } }));
  expect(res.status).toBe(200);
  return { run: res.body, started: await runStarted(res.body.id) };
}

async function runStarted(runId: string): Promise<any> {
  const events = (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: runId }, query: { after: 0 } } }))).body.events;
  return events.find((e: any) => e.kind === 'run_started').payload;
}

describe.each(SERVER_MODES)('warm sessions, %s (fake claude)', (_mode, modeEnv) => {
  beforeEach(async () => {
    stdinLog = join(scratchDir('asm-warm-'), 'stdin.jsonl');
    process.env.FAKE_CLAUDE_LOG = stdinLog;
    closed = false;
    // In distributed mode a node's load is published at its heartbeat: a short one, so the tests of the load wait less.
    server = await startServer({ ASM_PASS_ENV: 'FAKE_CLAUDE_LOG', ASM_NODE_HEARTBEAT_MS: '200', ...modeEnv() });
  });
  afterEach(async () => {
    if (!closed) await server.close();
    delete process.env.FAKE_CLAUDE_LOG;
  });

  it('a second run reuses the process: same pid, one initialize, the next user message on the same stdin', async () => {
    const s = await warmSession();
    expect(s).toMatchObject({ warm: true, warm_idle_ms: 300_000 });
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    expect(first.run.state).toBe('completed');
    expect(first.started.warm).toBeUndefined();
    expect(groupAlive(first.started.pid)).toBe(true);

    const second = await runToEnd(s.id, 'Again [fixture:c1-hello]');
    expect(second.run.state).toBe('completed');
    expect(second.started).toMatchObject({ pid: first.started.pid, warm: true, provider_session_id: first.run.result.provider_session_id });
    expect(second.run.result.text).toBe(first.run.result.text);
    expect(second.run.result.provider_session_id).toBe(first.run.result.provider_session_id);
    expect(written().map((l) => l.request?.subtype ?? l.type)).toEqual(['initialize', 'user', 'user']);
  });

  it('approvals and interrupts work on a warm process, which stays warm after them', async () => {
    const s = await warmSession();
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    const pid = first.started.pid;

    const approving = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'Create a file [fixture:c2-approve]' } }));
    const approval = await waitFor(async () => (await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: s.id } } }))).body.approvals[0], 'the approval');
    expect(await runStarted(approving.body.id)).toMatchObject({ pid, warm: true });
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: approval.id } }, body: { decision: 'allow' } }))).status).toBe(200);
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: approving.body.id } } }))).body.state === 'completed', 'the approved run to complete');

    const slow = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'Run the slow job [fixture:c3-interrupt]' } }));
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: slow.body.id }, query: { after: 0 } } }))).body.events.some((e: any) => e.kind === 'tool_use'), 'the slow tool');
    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: slow.body.id } } }))).status).toBeLessThan(300);
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: slow.body.id } } }))).body.state === 'interrupted', 'the interrupted run');
    expect(await runStarted(slow.body.id)).toMatchObject({ pid, warm: true });

    const after = await runToEnd(s.id, 'And again [fixture:c1-hello]');
    expect(after.run.state).toBe('completed');
    expect(after.started).toMatchObject({ pid, warm: true });
    const sent = written().map((l) => l.request?.subtype ?? l.response?.response?.behavior ?? l.type);
    expect(sent).toEqual(['initialize', 'user', 'user', 'allow', 'user', 'interrupt', 'user']);
  });

  it('an idle warm process ends after warm_idle_ms; the next run starts a new one', async () => {
    const s = await warmSession({ warm_idle_ms: 300 });
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    await waitFor(() => !groupAlive(first.started.pid), 'the kept process to go', 10_000);
    const second = await runToEnd(s.id, 'Again [fixture:c1-hello]');
    expect(second.run.state).toBe('completed');
    expect(second.started.pid).not.toBe(first.started.pid);
    expect(second.started.warm).toBeUndefined();
    // The new process continues the conversation the cold way.
    expect(second.started.args).toContain('--resume');
  });

  it('a run that starts a new conversation does not take the kept process, which is stopped', async () => {
    const s = await warmSession();
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    const fresh = await runToEnd(s.id, 'Start over [fixture:c1-hello]', { continuation: false });
    expect(fresh.started.pid).not.toBe(first.started.pid);
    expect(fresh.started.warm).toBeUndefined();
    await waitFor(() => !groupAlive(first.started.pid), 'the kept process to go', 10_000);
  });

  it('a closed session leaves no process; a kept process counts in the node\'s load until then', async () => {
    const load = async () => (await server.app.cluster.nodes()).find((n) => n.id === server.app.cluster.self)?.load;
    const s = await warmSession();
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    expect(groupAlive(first.started.pid)).toBe(true);
    await waitFor(async () => (await load()) === 1, 'the kept process in the load');
    expect((await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: s.id } } }))).status).toBe(200);
    await waitFor(() => !groupAlive(first.started.pid), 'the kept process to go', 10_000);
    await waitFor(async () => (await load()) === 0, 'the load without it');
  });

  it('the service stops its warm processes when it shuts down', async () => {
    const s = await warmSession();
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    expect(groupAlive(first.started.pid)).toBe(true);
    closed = true;
    await server.close();
    expect(groupAlive(first.started.pid)).toBe(false);
  });
});

/**
 * The processes of the fake CLI `bin` ASM started that run now: each leads its process group (its
 * sandbox's bwrap, or the CLI itself), unlike the one-off start that seeds a new HOME (home-seeds.ts);
 * with the conversation it was started with (claude's `--session-id`).
 */
function cliGroups(bin = FAKE_CLAUDE): Array<{ group: number; conversation: string | undefined }> {
  const leaders: Array<{ group: number; conversation: string | undefined }> = [];
  for (const pid of processesWith(bin)) {
    try {
      const group = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[2]);
      if (group !== pid) continue;
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const at = args.indexOf('--session-id');
      leaders.push({ group, conversation: at >= 0 ? args[at + 1] : undefined });
    } catch {
      // gone meanwhile
    }
  }
  return leaders;
}

/** How many claude processes ASM initialized (every process of the test). */
function initializes(): number {
  return written().filter((l) => l.request?.subtype === 'initialize').length;
}

describe.each(SERVER_MODES)('prewarmed sessions (ASM_PREWARM=claude:1), %s (fake claude)', (_mode, modeEnv) => {
  beforeEach(async () => {
    stdinLog = join(scratchDir('asm-prewarm-'), 'stdin.jsonl');
    process.env.FAKE_CLAUDE_LOG = stdinLog;
    server = await startServer({ ASM_PASS_ENV: 'FAKE_CLAUDE_LOG', ASM_PREWARM: 'claude:1', ASM_NODE_HEARTBEAT_MS: '200', ...modeEnv() });
  });
  afterEach(async () => {
    await server.close();
    delete process.env.FAKE_CLAUDE_LOG;
  });

  /** A new claude session and the process prewarmed for it, once that process is initialized. */
  async function prewarmedSession(extra: Record<string, unknown> = {}) {
    const before = initializes();
    const s = await session(extra);
    await waitFor(() => initializes() === before + 1, 'the prewarmed process to be initialized');
    const prewarmed = cliGroups();
    expect(prewarmed).toHaveLength(1);
    return { s, ...prewarmed[0]! };
  }

  async function session(extra: Record<string, unknown> = {}) {
    const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', lane: 'core', ...extra } }));
    expect(res.status).toBe(201);
    return res.body;
  }

  it("a new session's first run takes the process started with the session: its pid, its one initialize, its new conversation", async () => {
    const { s, group, conversation } = await prewarmedSession();
    expect(conversation).toMatch(/^[0-9a-f-]{36}$/);
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    expect(first.run.state).toBe('completed');
    expect(first.started).toMatchObject({ pid: group, warm: true, provider_session_id: conversation });
    expect(first.started.args).toEqual(expect.arrayContaining(['--session-id', conversation]));
    expect(written().map((l) => l.request?.subtype ?? l.type)).toEqual(['initialize', 'user']);
    // A cold session keeps nothing: the process ends with its run, and the next run continues the conversation cold.
    await waitFor(() => !groupAlive(group), 'the process to end with its run', 10_000);
    const second = await runToEnd(s.id, 'Again [fixture:c1-hello]');
    expect(second.started.warm).toBeUndefined();
    expect(second.started.args).toEqual(expect.arrayContaining(['--resume', first.run.result.provider_session_id]));
  });

  it('a first run submitted as its session is created waits for the process starting for it, rather than start another', async () => {
    const s = await session();
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    expect(first.run.state).toBe('completed');
    expect(first.started.warm).toBe(true);
    expect(written().map((l) => l.request?.subtype ?? l.type)).toEqual(['initialize', 'user']);
    await waitFor(() => cliGroups().length === 0, 'no claude process left', 10_000);
  });

  it('approvals and interrupts work on a prewarmed process; a warm session keeps it after its first run', async () => {
    const approving = await prewarmedSession({ warm: true });
    const run = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: approving.s.id } }, body: { prompt: 'Create a file [fixture:c2-approve]' } }))).body;
    const approval = await waitFor(async () => (await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: approving.s.id } } }))).body.approvals[0], 'the approval');
    expect(await runStarted(run.id)).toMatchObject({ pid: approving.group, warm: true });
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: approval.id } }, body: { decision: 'allow' } }))).status).toBe(200);
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: run.id } } }))).body.state === 'completed', 'the approved run to complete');
    // Warm: kept for the next run, no longer a prewarmed one, so the pool prewarms the next session.
    expect((await runToEnd(approving.s.id, 'Again [fixture:c1-hello]')).started).toMatchObject({ pid: approving.group, warm: true });

    const interrupting = await session();
    await waitFor(() => initializes() === 2, 'the next session\'s process to be prewarmed');
    const group = cliGroups().find((g) => g.group !== approving.group)!.group;
    const slow = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: interrupting.id } }, body: { prompt: 'Run the slow job [fixture:c3-interrupt]' } }))).body;
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: slow.id }, query: { after: 0 } } }))).body.events.some((e: any) => e.kind === 'tool_use'), 'the slow tool');
    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: slow.id } } }))).status).toBeLessThan(300);
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: slow.id } } }))).body.state === 'interrupted', 'the interrupted run');
    expect(await runStarted(slow.id)).toMatchObject({ pid: group, warm: true });
  });

  it('at most ASM_PREWARM processes wait: a session created while one waits starts its first run cold', async () => {
    const { s: first, group } = await prewarmedSession();
    const second = await session();
    const cold = await runToEnd(second.id, 'Say hello [fixture:c1-hello]');
    expect(cold.started.warm).toBeUndefined();
    expect(cold.started.pid).not.toBe(group);
    expect((await runToEnd(first.id, 'Say hello [fixture:c1-hello]')).started).toMatchObject({ pid: group, warm: true });
    // Taken, its place in the pool is free again.
    const third = await prewarmedSession();
    expect((await runToEnd(third.s.id, 'Say hello [fixture:c1-hello]')).started).toMatchObject({ pid: third.group, warm: true });
    expect(initializes()).toBe(3);
  });

  it('a first run started differently (another model) does not take the prewarmed process, which is stopped', async () => {
    const { s, group } = await prewarmedSession();
    const other = await runToEnd(s.id, 'Say hello [fixture:c1-hello]', { model: 'claude-other' });
    expect(other.run.state).toBe('completed');
    expect(other.started.warm).toBeUndefined();
    expect(other.started.pid).not.toBe(group);
    await waitFor(() => !groupAlive(group), 'the prewarmed process to go', 10_000);
  });

  it("an idle prewarmed process ends after the session's warm_idle_ms, and the first run starts cold", async () => {
    const { s, group } = await prewarmedSession({ warm: true, warm_idle_ms: 300 });
    await waitFor(() => !groupAlive(group), 'the idle process to go', 10_000);
    const first = await runToEnd(s.id, 'Say hello [fixture:c1-hello]');
    expect(first.run.state).toBe('completed');
    expect(first.started.warm).toBeUndefined();
  });

  it('starts none while the node\'s agents use ASM_MAX_AGENT_MEMORY_MB or more: a session created then starts its first run cold', async () => {
    await server.close();
    server = await startServer({ ASM_PASS_ENV: 'FAKE_CLAUDE_LOG', ASM_PREWARM: 'claude:2', ASM_MAX_AGENT_MEMORY_MB: '1', ...modeEnv() });
    // With no agent running, the first is prewarmed; then the node's agents (that one) use more than 1 MiB.
    const { s: first, group } = await prewarmedSession();
    const second = await session();
    // The first run first: a run that waits for memory stops idle processes, this one too.
    expect((await runToEnd(first.id, 'Say hello [fixture:c1-hello]')).started).toMatchObject({ pid: group, warm: true });
    const cold = await runToEnd(second.id, 'Say hello [fixture:c1-hello]');
    expect(cold.started.warm).toBeUndefined();
    expect(initializes()).toBe(2);
  });

  it("a closed session leaves no process; a prewarmed process counts in the node's load until then", async () => {
    const load = async () => (await server.app.cluster.nodes()).find((n) => n.id === server.app.cluster.self)?.load;
    const { s, group } = await prewarmedSession();
    await waitFor(async () => (await load()) === 1, 'the prewarmed process in the load');
    expect((await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: s.id } } }))).status).toBe(200);
    await waitFor(() => !groupAlive(group), 'the prewarmed process to go', 10_000);
    await waitFor(async () => (await load()) === 0, 'the load without it');
  });
});

describe('prewarmed sessions (ASM_PREWARM=codex:1), codex app-server (fake codex)', () => {
  let codexLog: string;
  const methods = () => readJsonLines(codexLog).map((line) => line.method ?? 'answer');
  beforeEach(async () => {
    codexLog = join(scratchDir('asm-prewarm-codex-'), 'stdin.jsonl');
    process.env.FAKE_CODEX_LOG = codexLog;
    server = await startServer({ ASM_CODEX_BIN: FAKE_CODEX, ASM_PASS_ENV: 'FAKE_CODEX_LOG', ASM_PREWARM: 'codex:1' });
  });
  afterEach(async () => {
    await server.close();
    delete process.env.FAKE_CODEX_LOG;
  });

  const codexSession = async () => (await reply(server.client.POST('/v1/sessions', { body: { provider: 'codex', lane: 'core', permission_mode: 'default' } }))).body;

  it('the first run opens its thread on the server started with the session, which was initialized then', async () => {
    const s = await codexSession();
    await waitFor(() => methods().length === 1, 'the prewarmed server to be sent initialize');
    const [prewarmed] = cliGroups(FAKE_CODEX);
    const first = await runToEnd(s.id, 'Say hello [fixture:x2-hello]');
    expect(first.run.state).toBe('completed');
    expect(first.started).toMatchObject({ pid: prewarmed!.group, warm: true });
    expect(methods()).toEqual(['initialize', 'initialized', 'thread/start', 'turn/start']);
    // The thread it opened is the session's conversation: the next (cold) run resumes it.
    expect(first.run.result.provider_session_id).toEqual(expect.any(String));
    await runToEnd(s.id, 'Again [fixture:x2-hello]');
    expect(methods().slice(4)).toEqual(['initialize', 'initialized', 'thread/resume', 'turn/start']);
  });

  it("a first run submitted at once takes the server before it answers initialize, and knows that answer for what it is", async () => {
    const s = await codexSession();
    const first = await runToEnd(s.id, 'Say hello [fixture:x2-hello]');
    expect(first.run.state).toBe('completed');
    expect(first.started.warm).toBe(true);
    expect(methods()).toEqual(['initialize', 'initialized', 'thread/start', 'turn/start']);
  });
});

describe('warm sessions, codex app-server (fake codex)', () => {
  let codexLog: string;
  beforeEach(async () => {
    codexLog = join(scratchDir('asm-warm-codex-'), 'stdin.jsonl');
    process.env.FAKE_CODEX_LOG = codexLog;
    server = await startServer({ ASM_CODEX_BIN: FAKE_CODEX, ASM_PASS_ENV: 'FAKE_CODEX_LOG' });
  });
  afterEach(async () => {
    await server.close();
    delete process.env.FAKE_CODEX_LOG;
  });

  it('the next run is the next turn/start on the same thread of the same server; approvals and interrupts on it', async () => {
    const s = await warmSession({ provider: 'codex', permission_mode: 'default' });
    const first = await runToEnd(s.id, 'Say hello [fixture:x2-hello]');
    expect(first.run.state).toBe('completed');

    const approving = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'Say hello, then create a file [fixture:x2-approve]' } }))).body;
    const approval = await waitFor(async () => (await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: s.id } } }))).body.approvals[0], 'the approval');
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: approval.id } }, body: { decision: 'allow' } }))).status).toBe(200);
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: approving.id } } }))).body.state === 'completed', 'the approved run to complete');
    expect(await runStarted(approving.id)).toMatchObject({ pid: first.started.pid, warm: true, provider_session_id: first.run.result.provider_session_id });

    const slow = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'Run the slow job [fixture:x2-interrupt]' } }))).body;
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}/events', { params: { path: { id: slow.id }, query: { after: 0 } } }))).body.events.some((e: any) => e.kind === 'tool_use'), 'the slow tool');
    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: slow.id } } }))).status).toBeLessThan(300);
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: slow.id } } }))).body.state === 'interrupted', 'the interrupted run');
    expect(await runStarted(slow.id)).toMatchObject({ pid: first.started.pid, warm: true });

    const methods = readJsonLines(codexLog).map((line) => line.method ?? 'answer');
    expect(methods).toEqual(['initialize', 'initialized', 'thread/start', 'turn/start', 'turn/start', 'answer', 'turn/start', 'turn/interrupt']);
  });
});

describe('prewarmed sessions (ASM_PREWARM=gemini:1), gemini over ACP (fake gemini)', () => {
  let geminiLog: string;
  beforeEach(async () => {
    geminiLog = join(scratchDir('asm-prewarm-gemini-'), 'stdin.jsonl');
    Object.assign(process.env, { FAKE_GEMINI_LOG: geminiLog, GEMINI_API_KEY: 'test-gemini-key' });
    server = await startServer({ ASM_GEMINI_BIN: FAKE_GEMINI, ASM_PASS_ENV: 'FAKE_GEMINI_LOG', ASM_PREWARM: 'gemini:1' });
  });
  afterEach(async () => {
    await server.close();
    delete process.env.FAKE_GEMINI_LOG;
    delete process.env.GEMINI_API_KEY;
  });
  const methods = () => readJsonLines(geminiLog).map((line) => line.method);

  it("a warm session's first run, submitted at once, asks for its ACP session on the process started with the session", async () => {
    const s = await warmSession({ provider: 'gemini' });
    const first = await runToEnd(s.id, 'First question');
    expect(first.run.state).toBe('completed');
    expect(first.started).toMatchObject({ warm: true });
    expect(first.started.args).toContain('--acp');
    expect(methods()).toEqual(['initialize', 'session/new', 'session/prompt']);
    expect(first.run.result.provider_session_id).toEqual(expect.any(String));
  });

  it('a cold session gets none: its runs are headless, the prompt in their argv', async () => {
    // bypass (yolo): the mode the fake's headless transcript was captured in.
    const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'gemini', lane: 'core', permission_mode: 'bypass' } }));
    const first = await runToEnd(res.body.id, 'First question');
    expect(first.run.state).toBe('completed');
    expect(first.started.warm).toBeUndefined();
    expect(first.started.args).not.toContain('--acp');
    expect(methods()).toEqual([]);
  });
});

describe('warm sessions, gemini over ACP (fake gemini)', () => {
  let geminiLog: string;
  beforeEach(async () => {
    geminiLog = join(scratchDir('asm-warm-gemini-'), 'stdin.jsonl');
    Object.assign(process.env, { FAKE_GEMINI_LOG: geminiLog, GEMINI_API_KEY: 'test-gemini-key' });
    server = await startServer({ ASM_GEMINI_BIN: FAKE_GEMINI, ASM_PASS_ENV: 'FAKE_GEMINI_LOG' });
  });
  afterEach(async () => {
    await server.close();
    delete process.env.FAKE_GEMINI_LOG;
    delete process.env.GEMINI_API_KEY;
  });
  const methods = () => readJsonLines(geminiLog).map((line) => line.method ?? line.result?.outcome?.optionId);

  it('the next run is the next session/prompt on the same ACP session of the same process; approvals and interrupts on it', async () => {
    const s = await warmSession({ provider: 'gemini' });
    const first = await runToEnd(s.id, 'First question');
    expect(first.run.state).toBe('completed');
    expect(first.started.args).toContain('--acp');
    expect(groupAlive(first.started.pid)).toBe(true);

    const second = await runToEnd(s.id, 'Again');
    expect(second.run.state).toBe('completed');
    expect(second.started).toMatchObject({ pid: first.started.pid, warm: true, provider_session_id: first.run.result.provider_session_id });
    expect(second.run.result).toMatchObject({ text: 'First answer.', usage: { input_tokens: 120, output_tokens: 8 } });

    const approving = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'Create approved.txt [fixture:ga-approve]' } }))).body;
    const approval = await waitFor(async () => (await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: s.id } } }))).body.approvals[0], 'the approval');
    expect(approval.subject).toBe('run_shell_command');
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: approval.id } }, body: { decision: 'allow' } }))).status).toBe(200);
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: approving.id } } }))).body.state === 'completed', 'the approved run to complete');
    expect(await runStarted(approving.id)).toMatchObject({ pid: first.started.pid, warm: true });

    const slow = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: s.id } }, body: { prompt: 'Run the slow job [fixture:ga-interrupt]' } }))).body;
    const asked = await waitFor(async () => (await reply(server.client.GET('/v1/sessions/{id}/approvals', { params: { path: { id: s.id } } }))).body.approvals[0], 'the slow job\'s approval');
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: asked.id } }, body: { decision: 'allow' } }))).status).toBe(200);
    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: slow.id } } }))).status).toBeLessThan(300);
    await waitFor(async () => (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: slow.id } } }))).body.state === 'interrupted', 'the interrupted run');
    expect(await runStarted(slow.id)).toMatchObject({ pid: first.started.pid, warm: true });

    // An interrupted turn leaves the process warm.
    const after = await runToEnd(s.id, 'And again');
    expect(after.run.state).toBe('completed');
    expect(after.started).toMatchObject({ pid: first.started.pid, warm: true });
    expect(methods()).toEqual(['initialize', 'session/new', 'session/prompt', 'session/prompt', 'session/prompt', 'proceed_once', 'session/prompt', 'proceed_once', 'session/cancel', 'session/prompt']);
  });

  it('an idle warm process ends after warm_idle_ms; the conversation goes on cold, headless with --resume', async () => {
    const s = await warmSession({ provider: 'gemini', warm_idle_ms: 300 });
    const first = await runToEnd(s.id, 'First question');
    await waitFor(() => !groupAlive(first.started.pid), 'the kept process to go', 10_000);
    const second = await runToEnd(s.id, 'Again [fixture:g-text]');
    expect(second.run.state).toBe('completed');
    expect(second.started.pid).not.toBe(first.started.pid);
    expect(second.started.warm).toBeUndefined();
    expect(second.started.args).toEqual(expect.arrayContaining(['--resume', first.run.result.provider_session_id]));
    expect(second.run.result.provider_session_id).toBe(first.run.result.provider_session_id);
  });

  it('a closed session leaves no process', async () => {
    const s = await warmSession({ provider: 'gemini' });
    const first = await runToEnd(s.id, 'First question');
    expect(groupAlive(first.started.pid)).toBe(true);
    expect((await reply(server.client.DELETE('/v1/sessions/{id}', { params: { path: { id: s.id } } }))).status).toBe(200);
    await waitFor(() => !groupAlive(first.started.pid), 'the kept process to go', 10_000);
  });
});

describe('warm session options', () => {
  beforeEach(async () => {
    server = await startServer();
  });
  afterEach(async () => {
    await server.close();
  });

  it.each([
    [{ provider: 'shell', warm: true }, 'warm', /shell cannot keep its process/],
    [{ provider: 'claude', warm_idle_ms: 1_000 }, 'warm_idle_ms', /only with warm: true/],
    [{ provider: 'claude', warm: true, max_concurrent_runs: 2 }, 'max_concurrent_runs', /one run at a time/],
  ])('refuses %j with config_invalid naming %s', async (body, field, message) => {
    const res = await reply(server.client.POST('/v1/sessions', { body }));
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ kind: 'config_invalid', details: { field } });
    expect(res.body.error.message).toMatch(message);
  });

  it('bounds warm_idle_ms', async () => {
    const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', warm: true, warm_idle_ms: 10 } }));
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(/warm_idle_ms/);
  });

  it.each([
    ['amp:1', /ASM_PREWARM: amp cannot be prewarmed; these can: claude, codex, gemini/],
    ['nobody:1', /ASM_PREWARM: unknown provider nobody; these can: claude, codex, gemini/],
    ['claude', /ASM_PREWARM: expected provider:count entries/],
  ])('refuses to start with ASM_PREWARM=%s', async (value, message) => {
    await expect(startServer({ ASM_PREWARM: value })).rejects.toThrow(message);
  });

  it('a cold session says so', async () => {
    const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude' } }));
    expect(res.body).toMatchObject({ warm: false, warm_idle_ms: null });
  });
});
