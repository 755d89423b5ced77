import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { untilGone, untilRunning, useServiceRig } from './harness.js';
import { closedPortUrl } from './model-server.js';

/**
 * The real Claude Code CLI (pinned in scripts/install-agents.ts) run by the service, against the
 * loopback model server: HTTP and WebSocket in front, the model's turns scripted per scenario. Every
 * scenario runs on both backend lanes with the same assertions, so the SDK lane is held to exactly
 * the events of the core lane:
 *
 *   core  the core backend spawning `claude -p --input-format stream-json …`
 *   sdk   the SDK backend: @anthropic-ai/claude-agent-sdk's query() driving the same pinned CLI
 */

const ctx = useServiceRig('claude');
const rig = ctx.rig;

const LANE_METADATA = {
  core: { requested_lane: 'core', lane: 'core', backend: 'core', lane_reason: 'explicit_core', sdk_runtime: null },
  sdk: { requested_lane: 'sdk', lane: 'sdk', backend: 'sdk', lane_reason: 'explicit_sdk', sdk_runtime: '@anthropic-ai/claude-agent-sdk@0.3.329' },
} as const;

/** The text of the newest user message the model received. */
function lastUserText(body: any): string {
  const user = [...body.messages].reverse().find((m: any) => m.role === 'user');
  return (typeof user.content === 'string' ? [{ text: user.content }] : user.content).map((b: any) => b.text ?? '').join('');
}

describe.each(['core', 'sdk'] as const)('claude (real CLI) through the service, lane %s', (lane) => {
  // Each run's events and result carry the lane it executed on.
  const session = async () => rig.session({ lane });
  const expectLane = (run: any, events: any[]) => {
    expect(run.result.metadata).toMatchObject(LANE_METADATA[lane]);
    for (const event of events) expect(event.metadata).toMatchObject(LANE_METADATA[lane]);
  };

  it('answers a plain prompt: text, usage and cost from the model', async () => {
    ctx.model.script({ text: 'Hello from the model.', usage: { input: 120, output: 8 } });
    const s = await session();
    const { run, kinds, events } = await rig.run(s, 'Say hello');

    expect(kinds).toEqual(['run_queued', 'run_started', 'assistant_message', 'cost_update', 'result']);
    expect(run.state).toBe('completed');
    expect(run.result.text).toBe('Hello from the model.');
    expect(run.result.usage).toMatchObject({ input_tokens: 120, output_tokens: 8 });
    expect(run.result.cost_usd).toBeGreaterThan(0);
    expect(ctx.model.requests).toHaveLength(1);
    expect(lastUserText(ctx.model.requests[0].body)).toContain('Say hello');
    expect(ctx.model.requests[0].headers['x-api-key']).toBe('test-key');
    // The same pinned CLI on both lanes; on the SDK lane the Agent SDK started it.
    expect(ctx.model.requests[0].headers['user-agent']).toContain(lane === 'sdk' ? 'claude-cli/2.1.329 (external, sdk-ts, agent-sdk/0.3.329)' : 'claude-cli/2.1.329');
    expectLane(run, events);
  });

  it('continues the conversation: the second run resumes the first one\'s session, usage per run', async () => {
    ctx.model.script({ text: 'First answer.', usage: { input: 120, output: 8 } }, { text: 'Second answer.', usage: { input: 300, output: 5 } });
    const s = await session();
    const first = await rig.run(s, 'First question');
    const second = await rig.run(s, 'Second question');

    const started = (r: typeof first) => r.events.find((e) => e.kind === 'run_started').payload.provider_session_id;
    expect(started(first)).toEqual(expect.any(String));
    expect(started(second)).toBe(started(first));
    expect(second.kinds).toEqual(['run_queued', 'run_started', 'assistant_message', 'cost_update', 'result']);
    expect(second.run.result.text).toBe('Second answer.');
    // claude reports cumulative totals across --resume: each run reports its own share.
    expect(first.run.result.usage).toMatchObject({ input_tokens: 120, output_tokens: 8 });
    expect(second.run.result.usage).toMatchObject({ input_tokens: 300, output_tokens: 5 });
    // The model saw the first exchange again: the session was resumed, not started afresh.
    const history = JSON.stringify(ctx.model.requests[1].body.messages);
    expect(history).toContain('First question');
    expect(history).toContain('First answer.');
    expectLane(second.run, second.events);
  });

  it('runs a shell tool call and sends its output back to the model', async () => {
    ctx.model.script(
      { text: 'Running it.', shell: 'echo hello-from-shell', usage: { input: 120, output: 7 } },
      { text: 'It printed hello-from-shell.', usage: { input: 200, output: 9 } },
    );
    const s = await session();
    const { run, kinds, events } = await rig.run(s, 'Run echo hello-from-shell');

    expect(kinds).toEqual([
      'run_queued', 'run_started', 'assistant_message', 'tool_use', 'tool_result', 'assistant_message', 'cost_update', 'result',
    ]);
    const toolUse = events.find((e) => e.kind === 'tool_use');
    expect(toolUse.payload).toMatchObject({ tool_name: 'Bash', input: { command: 'echo hello-from-shell' } });
    const toolResult = events.find((e) => e.kind === 'tool_result');
    expect(toolResult.payload).toMatchObject({ tool_call_id: toolUse.payload.tool_call_id, is_error: false });
    expect(JSON.stringify(toolResult.payload.content)).toContain('hello-from-shell');
    expect(ctx.model.requests.map((r) => r.toolResults)).toEqual([[], ['hello-from-shell']]);
    expect(run.state).toBe('completed');
    expect(run.result.text).toBe('Running it.\nIt printed hello-from-shell.');
    // Usage is the turn's: both model calls, summed.
    expect(run.result.usage).toMatchObject({ input_tokens: 320, output_tokens: 16 });
  });

  it('asks for approval of a write; allowed, the command runs', async () => {
    ctx.model.script({ text: 'Creating it.', shell: 'touch approved.txt' }, { text: 'Created approved.txt.' });
    const s = await session();
    const { run, kinds, events } = await rig.run(s, 'Create approved.txt', async (live) => {
      const requested = await live.event('approval_requested');
      expect(requested.payload).toMatchObject({ subject: 'Bash', details: { tool_input: { command: 'touch approved.txt' } } });
      const decided = await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' });
      expect(decided.status).toBe(200);
    });

    expect(kinds).toEqual([
      'run_queued', 'run_started', 'assistant_message', 'tool_use', 'approval_requested', 'approval_resolved',
      'tool_result', 'assistant_message', 'cost_update', 'result',
    ]);
    expect(events.find((e) => e.kind === 'tool_result').payload.is_error).toBe(false);
    expect(existsSync(join(s.cwd, 'approved.txt'))).toBe(true);
    expect(ctx.model.requests).toHaveLength(2);
    expect(ctx.model.requests[1].toolResults).toHaveLength(1);
    expect(run.state).toBe('completed');
    expect(run.result.text).toBe('Creating it.\nCreated approved.txt.');
    expectLane(run, events);
  });

  it('asks for approval of a write; denied, the command does not run and the model hears why', async () => {
    ctx.model.script({ text: 'Creating it.', shell: 'touch denied.txt' }, { text: 'I was not allowed to.' });
    const s = await session();
    const { run, kinds, events } = await rig.run(s, 'Create denied.txt', async (live) => {
      const requested = await live.event('approval_requested');
      await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'deny', reason: 'not in this repo' });
    });

    expect(kinds).toEqual([
      'run_queued', 'run_started', 'assistant_message', 'tool_use', 'approval_requested', 'approval_resolved',
      'tool_result', 'assistant_message', 'cost_update', 'result',
    ]);
    expect(events.find((e) => e.kind === 'approval_resolved').payload).toMatchObject({ decision: 'deny', reason: 'not in this repo' });
    expect(events.find((e) => e.kind === 'tool_result').payload.is_error).toBe(true);
    expect(existsSync(join(s.cwd, 'denied.txt'))).toBe(false);
    expect(ctx.model.requests[1].toolResults.join('')).toContain('not in this repo');
    expect(run.state).toBe('completed');
    expect(run.result.text).toBe('Creating it.\nI was not allowed to.');
  });

  it('interrupts a run in the middle of a slow tool: the tool is stopped, the run ends user_cancelled', async () => {
    // Claude refuses a standalone `sleep` ("use Monitor"), so the slow tool is a node one-liner,
    // which is not read-only and so needs an approval first.
    const marker = 'setTimeout(() => {}, 47500)';
    ctx.model.script({ text: 'Starting the slow job.', shell: `node -e '${marker}'` }, { text: 'never sent' });
    const s = await session();
    const { run, kinds, events, terminal } = await rig.run(s, 'Run the slow job', async (live) => {
      const requested = await live.event('approval_requested');
      await rig.server.request('POST', `/v1/approvals/${requested.payload.approval_id}`, { decision: 'allow' });
      await untilRunning(marker);
      expect((await rig.server.request('POST', `/v1/runs/${live.runId}/interrupt`)).status).toBe(202);
    });

    expect(kinds).toEqual([
      'run_queued', 'run_started', 'assistant_message', 'tool_use', 'approval_requested', 'approval_resolved',
      'tool_result', 'user_message', 'cost_update', 'error',
    ]);
    // The CLI reports the stopped tool as an error result and the turn as interrupted.
    expect(events.find((e) => e.kind === 'tool_result').payload.is_error).toBe(true);
    expect(events.find((e) => e.kind === 'user_message').payload.content).toContain('interrupted');
    expect(terminal.payload).toMatchObject({ kind: 'user_cancelled' });
    expect(run.state).toBe('interrupted');
    expect(run.result.error.kind).toBe('user_cancelled');
    await untilGone(marker);
    // The model was not asked again after the interrupt.
    expect(ctx.model.requests).toHaveLength(1);
    expectLane(run, events);
  });

  it.each([
    [401, 'auth_error', false],
    [429, 'rate_limit', true],
    [500, 'provider_error', true],
  ])('fails a run whose model answers HTTP %i with %s', async (status, kind, retryable) => {
    ctx.model.script({ httpStatus: status, message: `scripted ${status}` });
    const s = await session();
    const { run, kinds, events, terminal } = await rig.run(s, 'Say hello');

    expect(kinds).toEqual(['run_queued', 'run_started', 'raw', 'cost_update', 'error']);
    expectLane(run, events);
    expect(terminal.payload).toMatchObject({ kind, api_error_status: status });
    expect(terminal.payload.retryable).toBe(retryable);
    expect(terminal.payload.message).toContain(`scripted ${status}`);
    expect(run.state).toBe('failed');
    expect(run.result.error.kind).toBe(kind);
    expect(ctx.model.requests.length).toBeGreaterThan(0);
  });

  it('fails a run whose model server is down', async () => {
    rig.pointAt(await closedPortUrl());
    const s = await session();
    const { run, kinds, terminal } = await rig.run(s, 'Say hello');

    expect(kinds).toEqual(['run_queued', 'run_started', 'raw', 'cost_update', 'error']);
    expect(terminal.payload.kind).toBe('connection_failed');
    expect(run.state).toBe('failed');
    expect(ctx.model.requests).toHaveLength(0);
  });
});
