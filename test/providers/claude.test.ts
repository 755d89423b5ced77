import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildCliEnv } from '../../src/providers/env.js';
import type { BackendRunSpec } from '../../src/backends/types.js';
import claude from '../../src/providers/claude/index.js';
import type { EventPayload } from '../../src/schemas/events.js';
import { readJsonLines } from '../helpers/json-lines.js';
import { scratchDir } from '../helpers/sandbox.js';
import { kinds, makeSpec, runToEnd, startRun, terminalError, terminalOf } from '../backends/harness.js';

/**
 * The core backend driving the fake claude (test/fixtures/bin/fake-claude.mjs), which replays the real
 * transcripts of test/fixtures/claude/ and checks every line we write to its stdin.
 */

const FAKE_CLAUDE = fileURLToPath(new URL('../fixtures/bin/fake-claude.mjs', import.meta.url));
const TOOL_INPUT = { command: 'touch created-by-claude.txt', description: 'Create an empty file' };
const CAN_USE_TOOL_ID = '62f54bb9-058e-443f-aaa8-b05fb591d03a';

/** A claude run spec on the fake, and the lines the fake read from its stdin. */
function fakeClaude(prompt: string, overrides: Partial<BackendRunSpec> = {}) {
  const log = join(scratchDir('asm-fake-claude-'), 'stdin.jsonl');
  const spec = makeSpec(claude, {
    prompt,
    binary: FAKE_CLAUDE,
    env: buildCliEnv({ ...process.env, FAKE_CLAUDE_LOG: log }, claude.env, ['FAKE_CLAUDE_LOG']),
    ...overrides,
  });
  const stdinLines = (): Array<Record<string, any>> =>
    readJsonLines(log);
  return { spec, stdinLines };
}

function argAfter(args: string[], flag: string): string | undefined {
  const at = args.indexOf(flag);
  return at === -1 ? undefined : args[at + 1];
}

describe('claude provider on the fake CLI', () => {
  it('c1: a turn with an auto-allowed tool, in order, with usage and cost', async () => {
    const { spec, stdinLines } = fakeClaude('Say hello, then run: echo hello-from-shell');
    const events = await runToEnd(spec);

    expect(kinds(events)).toEqual([
      'run_started',
      'assistant_message',
      'tool_use',
      'tool_result',
      'assistant_message',
      'cost_update',
      'result',
    ]);
    const started = events[0].payload as EventPayload<'run_started'>;
    const sessionId = argAfter(started.args, '--session-id');
    expect(sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(started).toMatchObject({ provider_session_id: sessionId, command: FAKE_CLAUDE, node: 'test-node' });
    expect(started.args.slice(0, 8)).toEqual([
      '-p',
      '--input-format',
      'stream-json',
      '--output-format',
      'stream-json',
      '--verbose',
      '--permission-prompt-tool',
      'stdio',
    ]);

    expect(events[1].payload).toEqual({ content: 'Hello! Let me run that command.', model: 'claude-opus-5-5' });
    expect(events[2].payload).toEqual({
      tool_name: 'Bash',
      tool_call_id: 'toolu_01633670bef47c4569bb9963',
      input: { command: 'echo hello-from-shell', description: 'Print a greeting' },
    });
    expect(events[3].payload).toEqual({ tool_call_id: 'toolu_01633670bef47c4569bb9963', content: 'hello-from-shell', is_error: false });
    expect(events[5].payload).toEqual({ input_tokens: 6, output_tokens: 96, total_tokens: 30502, cost_usd: 0.019544 });
    const usage = { input_tokens: 6, output_tokens: 96, cache_read_input_tokens: 28000, cache_creation_input_tokens: 2400, total_tokens: 30502 };
    expect(terminalOf(events).payload).toEqual({
      status: 'completed',
      stop_reason: 'end_turn',
      usage,
      cost_usd: 0.019544,
      duration_ms: 275,
      num_turns: 2,
      permission_denials: [],
      provider_session_id: sessionId,
      // The conversation's cumulative figures (modelUsage, total_cost_usd), kept for the next run.
      // A first run's own figures are the conversation's totals.
      provider_totals: { ...usage, cost_usd: 0.019544 },
    });

    const [initialize, turn] = stdinLines();
    expect(initialize).toMatchObject({ type: 'control_request', request: { subtype: 'initialize' } });
    expect(turn).toEqual({
      type: 'user',
      message: { role: 'user', content: [{ type: 'text', text: 'Say hello, then run: echo hello-from-shell' }] },
      parent_tool_use_id: null,
      session_id: '',
    });
  });

  it('continues a conversation with --resume and reports that id', async () => {
    const { spec } = fakeClaude('Go on', { providerSessionId: 'e42ed43c-99dd-4482-aaec-7ae69cff0e09' });
    const events = await runToEnd(spec);
    const started = events[0].payload as EventPayload<'run_started'>;
    expect(argAfter(started.args, '--resume')).toBe('e42ed43c-99dd-4482-aaec-7ae69cff0e09');
    expect(started.args).not.toContain('--session-id');
    expect(started.provider_session_id).toBe('e42ed43c-99dd-4482-aaec-7ae69cff0e09');
    expect(terminalOf(events).payload).toMatchObject({ provider_session_id: 'e42ed43c-99dd-4482-aaec-7ae69cff0e09' });
  });

  it('c2: an approval allowed over stdio', async () => {
    const { spec, stdinLines } = fakeClaude('[fixture:c2-approve] Say hello, then create a file');
    const { run, events, waitFor } = startRun(spec);
    const approval = await waitFor('approval_requested');
    expect(approval).toMatchObject({ subject: 'Bash', details: { tool_input: TOOL_INPUT } });
    expect(approval.approval_id).toMatch(/^apr_[0-9a-f-]{36}$/);
    const expiresIn = Date.parse(approval.expires_at) - Date.now();
    expect(expiresIn).toBeGreaterThan(55_000);
    expect(expiresIn).toBeLessThanOrEqual(60_000);

    await run.decide(approval.approval_id, 'allow', null);
    await run.done;

    expect(stdinLines()[2]).toEqual({
      type: 'control_response',
      response: { subtype: 'success', request_id: CAN_USE_TOOL_ID, response: { behavior: 'allow', updatedInput: TOOL_INPUT } },
    });
    expect(kinds(events)).toEqual([
      'run_started',
      'assistant_message',
      'tool_use',
      'approval_requested',
      'tool_result',
      'assistant_message',
      'cost_update',
      'result',
    ]);
    await expect(run.decide(approval.approval_id, 'allow', null)).rejects.toMatchObject({ kind: 'not_found' });
  });

  it('c2: allow for the session passes the suggestions back, scoped to the session', async () => {
    const { spec, stdinLines } = fakeClaude('[fixture:c2-approve] Say hello, then create a file');
    const { run, waitFor } = startRun(spec);
    await run.decide((await waitFor('approval_requested')).approval_id, 'allow_for_session', null);
    await run.done;
    const answer = stdinLines()[2].response.response;
    expect(answer.behavior).toBe('allow');
    expect(answer.updatedInput).toEqual(TOOL_INPUT);
    expect(answer.updatedPermissions).toEqual([
      { type: 'addRules', rules: [{ toolName: 'Bash', ruleContent: 'touch created-by-claude.txt' }], behavior: 'allow', destination: 'session' },
      { type: 'addDirectories', directories: ['/workspace/repo'], destination: 'session' },
      { type: 'setMode', mode: 'acceptEdits', destination: 'session' },
    ]);
  });

  it('c2-deny: a denied approval ends in a tool error and a completed turn', async () => {
    const { spec, stdinLines } = fakeClaude('[fixture:c2-deny] Say hello, then create a file');
    const { run, events, waitFor } = startRun(spec);
    await run.decide((await waitFor('approval_requested')).approval_id, 'deny', 'not in this repo');
    await run.done;

    expect(stdinLines()[2].response).toEqual({
      subtype: 'success',
      request_id: CAN_USE_TOOL_ID,
      response: { behavior: 'deny', message: 'not in this repo', interrupt: false },
    });
    const toolResult = events.find((e) => e.kind === 'tool_result')!.payload as EventPayload<'tool_result'>;
    expect(toolResult).toMatchObject({ tool_call_id: 'toolu_01cbecaaecaef54f37902e2d', is_error: true });
    expect(terminalOf(events).payload).toMatchObject({
      status: 'completed',
      permission_denials: [{ tool_name: 'Bash', tool_use_id: 'toolu_01cbecaaecaef54f37902e2d', tool_input: TOOL_INPUT }],
    });
  });

  it('c3: an interrupt while a tool runs ends user_cancelled, through the control channel', async () => {
    const { spec, stdinLines } = fakeClaude('[fixture:c3-interrupt] Run the slow job');
    const { run, events, waitFor } = startRun(spec, { interruptGraceMs: 5_000 });
    await waitFor('tool_use');
    const interruptedAt = Date.now();
    await run.interrupt('user');
    await run.done;

    // Well before the grace: the CLI itself ended the turn, no signal was needed.
    expect(Date.now() - interruptedAt).toBeLessThan(2_000);
    expect(stdinLines().at(-1)).toEqual({ type: 'control_request', request_id: 'int_1', request: { subtype: 'interrupt' } });
    // These lines only come once the fake has read the interrupt.
    expect(events).toContainEqual({ kind: 'user_message', payload: { content: '[Request interrupted by user for tool use]' } });
    expect(events.find((e) => e.kind === 'tool_result')!.payload).toMatchObject({ is_error: true });
    expect(terminalError(events)).toMatchObject({ kind: 'user_cancelled', domain: 'runtime', message: 'Run interrupted', retryable: false });
  });

  it('rejects a decision on an approval it does not hold', async () => {
    const { spec } = fakeClaude('hello');
    const { run } = startRun(spec);
    await expect(run.decide('apr_unknown', 'allow', null)).rejects.toMatchObject({ kind: 'not_found' });
    await run.done;
  });

  it('notices a protocol mistake: the fake exits 3 and the run fails with its message', async () => {
    // c2-approve expects an allow; a deny is a mismatch.
    const { spec } = fakeClaude('[fixture:c2-approve] Say hello, then create a file');
    const { run, events, waitFor } = startRun(spec);
    await run.decide((await waitFor('approval_requested')).approval_id, 'deny', null);
    await run.done;
    const error = terminalError(events);
    expect(error.kind).toBe('transport_error');
    expect(error.message).toMatch(/^claude exited with code 3: fake-claude: protocol mismatch/);
  });

  it('fails a line that is not JSON with parse_error', async () => {
    const events = await runToEnd(fakeClaude('[fixture:not-json]').spec);
    expect(terminalError(events)).toMatchObject({
      kind: 'parse_error',
      domain: 'parser',
      message: 'claude printed a line that is not JSON: Segmentation fault (core dumped)',
    });
  });

  it('fails a CLI that dies without a result, with its stderr', async () => {
    const events = await runToEnd(fakeClaude('[fixture:dies-mid-run]').spec);
    expect(events.map((e) => e.kind)).toContain('assistant_message');
    expect(terminalError(events)).toMatchObject({
      kind: 'transport_error',
      message: 'claude exited with code 2: fatal: lost the connection to the model API',
    });
  });

  it('times out a CLI that never prints', async () => {
    const events = await runToEnd(fakeClaude('[fixture:never-prints]', { deadlineMs: 500 }).spec, { interruptGraceMs: 200 });
    expect(kinds(events)).toEqual(['run_started', 'error']);
    expect(terminalError(events)).toMatchObject({ kind: 'timeout', message: 'run exceeded its deadline of 500ms' });
  });

  it('the fake refuses stream-json output without --verbose, like the real CLI', async () => {
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(FAKE_CLAUDE, ['-p', '--output-format', 'stream-json'], (err, _stdout, stderr) =>
        resolve({ code: err ? (err.code as number) : 0, stderr }),
      );
    });
    expect(result).toEqual({ code: 1, stderr: 'Error: When using --print, --output-format=stream-json requires --verbose\n' });
  });
});
