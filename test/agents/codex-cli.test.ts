import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CODEX_MODEL, offlineEnv, spawnCli, untilGone, untilRunning, useDirectCli, type CliProcess } from './harness.js';
import { closedPortUrl } from './model-server.js';

/**
 * The real Codex CLI spawned directly (no service in between) against the loopback model server:
 * proof that the OpenAI Responses dialect is what codex 0.169 needs, for `codex exec --json` and for
 * `codex app-server` (the only mode that asks for approval). codex.test.ts runs the same scenarios
 * through the service.
 */

const ctx = useDirectCli();
const { home, workspace } = ctx;

function exec(prompt: string, baseUrl = ctx.model.url): CliProcess {
  // stdin is /dev/null: exec reads a piped stdin to EOF before it starts.
  return spawnCli('codex', ['exec', '--json', '--skip-git-repo-check', prompt], { cwd: workspace, env: offlineEnv('codex', home, baseUrl) });
}

const types = (lines: any[]) => lines.map((l) => (l.item ? `${l.type}:${l.item.type}` : l.type));

describe('codex exec --json (real CLI) against the model server', () => {
  it('answers a plain prompt with the model text and usage', async () => {
    ctx.model.script({ text: 'Hello from the model.', usage: { input: 120, output: 8 } });
    const cli = exec('Say hello');
    expect(await cli.exited).toMatchObject({ code: 0 });
    expect(types(cli.lines)).toEqual(['thread.started', 'turn.started', 'item.completed:agent_message', 'turn.completed']);
    expect(cli.lines[2].item.text).toBe('Hello from the model.');
    expect(cli.lines[3].usage).toMatchObject({ input_tokens: 120, output_tokens: 8 });
    expect(ctx.model.requests).toHaveLength(1);
    expect(ctx.model.requests[0].headers.authorization).toBe('Bearer test-key');
    expect(ctx.model.requests[0].body.model).toBe(CODEX_MODEL);
  });

  it('runs the exec_command tool and sends its output back to the model', async () => {
    ctx.model.script(
      { text: 'Running it.', shell: 'echo hello-from-shell', usage: { input: 120, output: 7 } },
      { text: 'It printed hello-from-shell.', usage: { input: 200, output: 9 } },
    );
    const cli = exec('Run echo hello-from-shell');
    expect(await cli.exited).toMatchObject({ code: 0 });
    expect(types(cli.lines)).toEqual([
      'thread.started', 'turn.started', 'item.completed:agent_message', 'item.started:command_execution',
      'item.completed:command_execution', 'item.completed:agent_message', 'turn.completed',
    ]);
    expect(cli.lines[4].item).toMatchObject({ aggregated_output: 'hello-from-shell\n', exit_code: 0, status: 'completed' });
    expect(ctx.model.requests[1].toolResults.join('')).toContain('hello-from-shell');
    // Cumulative over the thread: both model calls.
    expect(cli.lines[6].usage).toMatchObject({ input_tokens: 320, output_tokens: 16 });
  });

  // What 0.169 says for each status (only the 401 body is passed through); codex.test.ts relies on it.
  it.each([
    [401, 'unexpected status 401 Unauthorized: scripted 401'],
    [429, 'exceeded retry limit, last status: 429 Too Many Requests'],
    [500, 'experiencing high demand'],
  ])('fails the turn when the model answers HTTP %i', async (status, message) => {
    ctx.model.script({ httpStatus: status, message: `scripted ${status}` });
    const cli = exec('Say hello');
    expect(await cli.exited).toMatchObject({ code: 1 });
    expect(types(cli.lines)).toEqual(['thread.started', 'turn.started', 'error', 'turn.failed']);
    expect(cli.lines[3].error.message).toContain(message);
    expect(ctx.model.requests).toHaveLength(1);
  });

  it('keeps waiting for the network when the model server is down: non-fatal errors, no terminal event', async () => {
    const cli = exec('Say hello', await closedPortUrl());
    // 0.169 retries a refused connection forever ("waiting for network"), whatever request_max_retries says.
    await cli.line((l) => l.type === 'error' && l.message.includes('waiting for network'));
    expect(cli.lines.some((l) => l.type === 'turn.failed' || l.type === 'turn.completed')).toBe(false);
    process.kill(-cli.child.pid!, 'SIGTERM');
    expect(await cli.exited).not.toMatchObject({ code: 0 });
  });

  it('stops on SIGINT in the middle of a command, with no terminal event', async () => {
    const marker = 'sleep 47.5';
    ctx.model.script({ text: 'Starting the slow job.', shell: marker }, { text: 'never sent' });
    const cli = exec('Run the slow job');
    await cli.line((l) => l.type === 'item.started' && l.item.type === 'command_execution');
    await untilRunning(marker);
    process.kill(-cli.child.pid!, 'SIGINT');
    const exit = await cli.exited;
    expect(exit.code !== 0 || exit.signal !== null).toBe(true);
    expect(cli.lines.some((l) => l.type === 'turn.completed' || l.type === 'turn.failed')).toBe(false);
    await untilGone(marker);
    expect(ctx.model.requests).toHaveLength(1);
  });
});

/** A JSON-RPC client of `codex app-server` (no "jsonrpc" field; docs/protocols.md, "## Codex"). */
class AppServer {
  readonly cli = spawnCli('codex', ['app-server'], { cwd: workspace, env: offlineEnv('codex', home, ctx.model.url), stdin: 'pipe' });
  private nextId = 1;

  async request(method: string, params: unknown): Promise<any> {
    const id = this.nextId++;
    this.cli.send({ id, method, params });
    const reply = await this.cli.line((l) => l.id === id && !l.method);
    if (reply.error) throw new Error(`${method}: ${JSON.stringify(reply.error)}`);
    return reply.result;
  }

  /** initialize, initialized, thread/start (asking before escalations), turn/start. */
  async startTurn(prompt: string): Promise<{ threadId: string; turnId: string }> {
    await this.request('initialize', { clientInfo: { name: 'asm-test', title: null, version: '0.0.1' }, capabilities: null });
    this.cli.send({ method: 'initialized' });
    const thread = await this.request('thread/start', { model: CODEX_MODEL, cwd: workspace, approvalPolicy: 'on-request', sandbox: 'read-only' });
    const turn = await this.request('turn/start', { threadId: thread.thread.id, input: [{ type: 'text', text: prompt, text_elements: [] }] });
    return { threadId: thread.thread.id, turnId: turn.turn.id };
  }

  turnCompleted(): Promise<any> {
    return this.cli.line((l) => l.method === 'turn/completed');
  }

  async close(): Promise<void> {
    this.cli.child.stdin!.end();
    await this.cli.exited;
  }
}

describe('codex app-server (real CLI) against the model server', () => {
  it.each([
    ['accept', 'completed', true],
    ['decline', 'declined', false],
  ])('asks before an escalated command; %s', async (decision, status, created) => {
    const file = `${decision}.txt`;
    ctx.model.script({ text: 'Creating it.', shell: `touch ${file}`, escalate: true }, { text: 'Done.' });
    const server = new AppServer();
    try {
      await server.startTurn(`Create ${file}`);
      const ask = await server.cli.line((l) => l.method === 'item/commandExecution/requestApproval');
      expect(ask.params.command).toContain(`touch ${file}`);
      server.cli.send({ id: ask.id, result: { decision } });
      const turn = await server.turnCompleted();
      expect(turn.params.turn.status).toBe('completed');
      const item = server.cli.lines.find((l) => l.method === 'item/completed' && l.params.item.type === 'commandExecution');
      expect(item.params.item.status).toBe(status);
      expect(existsSync(join(workspace, file))).toBe(created);
      // Either way the model hears about the call before it answers.
      expect(ctx.model.requests).toHaveLength(2);
      expect(ctx.model.requests[1].toolResults).toHaveLength(1);
    } finally {
      await server.close();
    }
  });

  it('interrupts a turn in the middle of a command with turn/interrupt', async () => {
    const marker = 'sleep 48.5';
    ctx.model.script({ text: 'Starting the slow job.', shell: marker }, { text: 'never sent' });
    const server = new AppServer();
    try {
      const { threadId, turnId } = await server.startTurn('Run the slow job');
      await untilRunning(marker);
      await server.request('turn/interrupt', { threadId, turnId });
      expect((await server.turnCompleted()).params.turn.status).toBe('interrupted');
      await untilGone(marker);
    } finally {
      await server.close();
    }
  });
});
