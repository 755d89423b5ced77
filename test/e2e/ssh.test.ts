import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { RequestBody } from '../../src/client/index.js';
import { readJsonLines } from '../helpers/json-lines.js';
import { freePort } from '../helpers/ports.js';
import { reply, startServer, TERMINAL, type TestServer } from '../helpers/server.js';
import { sshdUnavailable, startSshd, type TestSshd } from '../helpers/sshd.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The ssh execution surface end to end: the service starts the fake claude on a real sshd on
 * 127.0.0.1 through the ssh client, and the whole control protocol (initialize, the user turn,
 * approvals, interrupt) travels over the ssh connection. The fake checks every stdin line.
 */

let server: TestServer;
let stdinLog: string;

function written(): any[] {
  return readJsonLines(stdinLog);
}

/** Processes of this test's run, local or remote: the stdin log path is in their command line or environment. */
function processesOfRun(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid)) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmdline.includes(stdinLog) || readFileSync(`/proc/${pid}/environ`, 'utf8').includes(stdinLog)) found.push(`${pid}: ${cmdline}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

beforeEach(async () => {
  stdinLog = join(mkdtempSync(join(tmpdir(), 'asm-ssh-')), 'stdin.jsonl');
  process.env.FAKE_CLAUDE_LOG = stdinLog;
  server = await startServer({ ASM_PASS_ENV: 'FAKE_CLAUDE_LOG', ASM_SSH_HOSTS: '127.0.0.1', ASM_SSH_FILES_DIR: tmpdir() });
});
afterEach(async () => {
  await server.close();
  delete process.env.FAKE_CLAUDE_LOG;
});

type Surface = NonNullable<RequestBody<'/v1/sessions', 'post'>['execution_surface']>;

async function run(surface: Surface, prompt: string) {
  const session = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', execution_surface: surface } }));
  expect(session.status).toBe(201);
  expect(session.body.execution_surface).toEqual(surface);
  const ws = server.stream(`session_id=${session.body.id}&after=0`);
  const created = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.body.id } }, body: { prompt } }));
  expect(created.status).toBe(202);
  return { ws, runId: created.body.id as string };
}

describe('execution_surface validation and an unreachable host', () => {
  it.each([
    [{ kind: 'ssh', user: 'root' }, 'execution_surface.host'],
    [{ kind: 'ssh', host: '127.0.0.1', user: 'root', port: 70000 }, 'execution_surface.port'],
    [{ kind: 'ssh', host: '-oProxyCommand=x', user: 'root' }, 'execution_surface.host'],
    [{ kind: 'ssh', host: '127.0.0.1', user: 'root', identity_file: '/nonexistent/key' }, 'execution_surface.identity_file'],
    [{ kind: 'local_subprocess', host: '127.0.0.1' }, 'execution_surface.host'],
    [{ kind: 'telnet' }, 'execution_surface.kind'],
  ])('refuses %j with a 400 naming %s', async (surface, field) => {
    // Raw fetch: these surfaces are malformed on purpose, which the client's types refuse.
    const res = await server.request('POST', '/v1/sessions', { provider: 'claude', execution_surface: surface });
    expect(res.status).toBe(400);
    expect(res.body.error.details.field).toBe(field);
  });

  it('refuses a host the operator did not list in ASM_SSH_HOSTS with a 403 naming the host', async () => {
    const res = await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude', execution_surface: { kind: 'ssh', host: '10.0.0.9', user: 'root' } } }));
    expect(res.status).toBe(403);
    expect(res.body.error).toMatchObject({ kind: 'forbidden', details: { field: 'execution_surface.host' } });
    expect(res.body.error.message).toContain('ASM_SSH_HOSTS');
  });

  it('refuses a bad per-run surface the same way', async () => {
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'claude' } }))).body;
    const res = await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: 'x', execution_surface: { kind: 'ssh', host: 'h' } } }));
    expect(res.status).toBe(400);
    expect(res.body.error.details.field).toBe('execution_surface.user');
  });

  it('ends a run on a host nobody answers with connection_failed', async () => {
    const port = await freePort();
    const { ws, runId } = await run({ kind: 'ssh', host: '127.0.0.1', port, user: 'root' }, 'hello [fixture:c1-hello]');
    const terminal = await ws.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    expect(terminal.event.payload).toMatchObject({ kind: 'connection_failed' });
    expect(terminal.event.payload.message).toContain(`ssh to root@127.0.0.1:${port} failed`);
    expect(terminal.event.payload.message).toContain('Connection refused');
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: runId } } }))).body.state).toBe('failed');
  });
});

const unavailable = sshdUnavailable();
if (unavailable) console.warn(`skipping the ssh surface tests against a real sshd: ${unavailable}`);

describe.skipIf(unavailable !== null)('claude over the ssh surface (a real sshd on 127.0.0.1)', () => {
  let sshd: TestSshd;
  let surface: Surface;
  beforeAll(async () => {
    sshd = await startSshd();
    surface = { kind: 'ssh', host: '127.0.0.1', port: sshd.port, user: sshd.user, identity_file: sshd.identityFile, known_hosts_file: sshd.knownHostsFile };
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  it('runs a turn on the host: same events and result as a local run', async () => {
    const { ws, runId } = await run(surface, 'Say hello [fixture:c1-hello]');
    await ws.event('result');
    expect(ws.events().map((e) => e.kind)).toEqual(['run_queued', 'run_started', 'assistant_message', 'tool_use', 'tool_result', 'assistant_message', 'cost_update', 'result']);
    const final = (await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: runId } } }))).body;
    expect(final.state).toBe('completed');
    expect(final.result.text).toBe('Hello! Let me run that command.\nThe command printed `hello-from-shell`. All done!');
    expect(written().map((l) => l.type)).toEqual(['control_request', 'user']);
    await waitFor(() => processesOfRun().length === 0, 'the run to leave no process', 10_000);
  });

  it('carries an approval decision to the CLI over ssh', async () => {
    const { ws, runId } = await run(surface, 'create a file [fixture:c2-approve]');
    const requested = await ws.event('approval_requested');
    expect((await reply(server.client.POST('/v1/approvals/{id}', { params: { path: { id: requested.payload.approval_id } }, body: { decision: 'allow' } }))).status).toBe(200);
    await ws.event('result');
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: runId } } }))).body.state).toBe('completed');
    const answer = written().find((l) => l.type === 'control_response');
    expect(answer.response.response).toMatchObject({ behavior: 'allow' });
  });

  it('interrupts mid-tool: user_cancelled, and nothing of the run is left on the host', async () => {
    const { ws, runId } = await run(surface, 'Run the slow job [fixture:c3-interrupt]');
    await ws.event('tool_use');
    expect(processesOfRun().length).toBeGreaterThan(0);
    expect((await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: runId } } }))).status).toBe(202);
    const terminal = await ws.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    expect(terminal.event.payload).toMatchObject({ kind: 'user_cancelled' });
    expect(written().some((l) => l.type === 'control_request' && l.request.subtype === 'interrupt')).toBe(true);
    expect((await reply(server.client.GET('/v1/runs/{id}', { params: { path: { id: runId } } }))).body.state).toBe('interrupted');
    await waitFor(() => processesOfRun().length === 0, 'the run to leave no process', 10_000);
  });

  it('stops a remote CLI that ignores SIGINT and SIGTERM once its ssh client is gone', async () => {
    // A CLI that ignores SIGINT and SIGTERM and leaves a tool behind: the node stops its ssh client,
    // and the remote wrapper must then stop the CLI's group on its own.
    const hang = join(mkdtempSync(join(tmpdir(), 'asm-ssh-hang-')), 'hang.sh');
    writeFileSync(hang, '#!/bin/sh\ntrap "" TERM INT\nsleep 300 &\nwhile :; do sleep 1; done\n', { mode: 0o755 });
    const session = (await reply(server.client.POST('/v1/sessions', { body: { provider: 'shell', execution_surface: surface } }))).body;
    const ws = server.stream(`session_id=${session.id}&after=0`);
    const created = (await reply(server.client.POST('/v1/sessions/{id}/runs', { params: { path: { id: session.id } }, body: { prompt: `FAKE_CLAUDE_LOG=${stdinLog} exec ${hang}` } }))).body;
    await ws.event('run_started');
    await waitFor(() => processesOfRun().some((p) => p.includes('sleep 300')), 'the remote CLI to start', 10_000);
    await reply(server.client.POST('/v1/runs/{id}/interrupt', { params: { path: { id: created.id } } }));
    await ws.next((f) => f.type === 'event' && TERMINAL.has(f.event.kind));
    // The run is over here, but the remote tool ignores SIGTERM: the wrapper's grace, then SIGKILL, ends it.
    expect(processesOfRun().some((p) => p.includes('sleep 300'))).toBe(true);
    await waitFor(() => processesOfRun().length === 0, 'the run to leave no process', 15_000);
  });
});
