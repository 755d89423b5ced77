import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GEMINI_MODEL, offlineEnv, stopProcessesWith, spawnCli, untilGone, untilRunning, useDirectCli, type CliProcess } from './harness.js';
import { closedPortUrl } from './model-server.js';

/**
 * The real Gemini CLI spawned directly (no service in between) against the loopback model server:
 * proof that the Gemini streamGenerateContent dialect is what gemini-cli 0.61 needs. gemini.test.ts
 * runs the same scenarios through the service.
 */

const ctx = useDirectCli();
const { home, workspace } = ctx;

function gemini(prompt: string, extra: string[] = [], baseUrl = ctx.model.url): CliProcess {
  return spawnCli('gemini', ['-p', prompt, '-m', GEMINI_MODEL, '--output-format', 'stream-json', '--skip-trust', ...extra], {
    cwd: workspace,
    env: offlineEnv('gemini', home, baseUrl),
  });
}

const types = (lines: any[]) => lines.map((l) => (l.type === 'message' ? `message:${l.role}` : l.type));

describe('gemini (real CLI) against the model server', () => {
  it('answers a plain prompt with the model text (as deltas) and usage', async () => {
    ctx.model.script({ text: 'Hello from the model.', usage: { input: 120, output: 8 } });
    const cli = gemini('Say hello');
    expect(await cli.exited).toMatchObject({ code: 0 });
    expect(types(cli.lines)).toEqual(['init', 'message:user', 'message:assistant', 'message:assistant', 'result']);
    expect(cli.lines.filter((l) => l.role === 'assistant').map((l) => l.content).join('')).toBe('Hello from the model.');
    expect(cli.lines[4]).toMatchObject({ status: 'success', stats: { input_tokens: 120, output_tokens: 8 } });
    expect(ctx.model.requests).toHaveLength(1);
    expect(ctx.model.requests[0].headers['x-goog-api-key']).toBe('test-key');
    expect(ctx.model.requests[0].path).toBe(`/v1beta/models/${GEMINI_MODEL}:streamGenerateContent`);
  });

  it('runs run_shell_command in yolo mode and sends its output back to the model', async () => {
    ctx.model.script(
      { text: 'Running it.', shell: 'echo hello-from-shell', usage: { input: 120, output: 7 } },
      { text: 'It printed hello-from-shell.', usage: { input: 200, output: 9 } },
    );
    const cli = gemini('Run echo hello-from-shell', ['--approval-mode', 'yolo']);
    expect(await cli.exited).toMatchObject({ code: 0 });
    expect(types(cli.lines).filter((t) => t !== 'message:assistant')).toEqual(['init', 'message:user', 'tool_use', 'tool_result', 'result']);
    expect(cli.lines.find((l) => l.type === 'tool_result')).toMatchObject({ status: 'success', output: 'hello-from-shell' });
    expect(ctx.model.requests[1].toolResults.join('')).toContain('hello-from-shell');
    expect(cli.lines.at(-1)).toMatchObject({ status: 'success', stats: { input_tokens: 320, output_tokens: 16, tool_calls: 1 } });
  });

  it('cannot ask in headless mode: in the default mode the shell tool is not there and nothing runs', async () => {
    ctx.model.script({ text: 'Creating it.', shell: 'touch refused.txt' }, { text: 'I could not.' });
    const cli = gemini('Create refused.txt');
    expect(await cli.exited).toMatchObject({ code: 0 });
    expect(cli.lines.find((l) => l.type === 'tool_result')).toMatchObject({ status: 'error', error: { type: 'tool_not_registered' } });
    expect(existsSync(join(workspace, 'refused.txt'))).toBe(false);
    expect(ctx.model.requests[1].toolResults.join('')).toContain('not found');
    expect(cli.lines.at(-1)).toMatchObject({ type: 'result', status: 'success' });
  });

  // 0.61 exits with the HTTP status as its exit code, truncated to 8 bits (401 → 145, 429 → 173, 500 → 244).
  it.each([
    [401, 145, 'scripted 401'],
    [429, 173, 'scripted 429'],
    [500, 244, 'scripted 500'],
  ])('ends with an error result when the model answers HTTP %i', async (status, code, message) => {
    ctx.model.script({ httpStatus: status, message: `scripted ${status}` });
    const cli = gemini('Say hello');
    expect(await cli.exited).toMatchObject({ code });
    expect(types(cli.lines)).toEqual(['init', 'message:user', 'result']);
    expect(cli.lines[2]).toMatchObject({ status: 'error', error: { type: 'unknown' } });
    expect(cli.lines[2].error.message).toContain(message);
    expect(ctx.model.requests).toHaveLength(1);
  });

  it('ends with an error result when the model server is down', async () => {
    const cli = gemini('Say hello', [], await closedPortUrl());
    expect(await cli.exited).toMatchObject({ code: 1 });
    expect(cli.lines.at(-1)).toMatchObject({ type: 'result', status: 'error' });
    expect(cli.lines.at(-1).error.message).toContain('fetch failed');
  });

  it('stops on SIGINT to its process group in the middle of a tool: exit 0, no result, the command orphaned', async () => {
    const marker = 'sleep 49.5';
    ctx.model.script({ text: 'Starting the slow job.', shell: marker }, { text: 'never sent' });
    const cli = gemini('Run the slow job', ['--approval-mode', 'yolo']);
    await cli.line((l) => l.type === 'tool_use');
    await untilRunning(marker);
    process.kill(-cli.child.pid!, 'SIGINT');
    expect(await cli.exited).toMatchObject({ code: 0 });
    expect(cli.lines.some((l) => l.type === 'result')).toBe(false);
    expect(ctx.model.requests).toHaveLength(1);
    // 0.61 runs shell commands in a process group of their own and does not stop them when it is
    // interrupted, so the command outlives the CLI (docs/protocols.md, "## Gemini CLI";
    // test/agents/README.md).
    expect(stopProcessesWith(marker)).toBeGreaterThan(0);
    await untilGone(marker);
  });
});
