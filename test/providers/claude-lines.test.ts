import { describe, expect, it } from 'vitest';
import claude from '../../src/providers/claude/index.js';
import type { ProviderRunInput } from '../../src/providers/types.js';

/** The claude line mapping and control messages, without a process. */

const INPUT: ProviderRunInput = { runId: 'run_1', sessionId: 'ses_1', prompt: 'hi', cwd: '/tmp', env: {} };
const create = (input: Partial<ProviderRunInput> = {}) => claude.create({ ...INPUT, ...input });
const line = (value: unknown) => JSON.stringify(value);

const resultLine = (fields: Record<string, unknown>) =>
  line({ type: 'result', subtype: 'success', is_error: false, duration_ms: 10, num_turns: 1, stop_reason: 'end_turn', ...fields });

describe('claude argv', () => {
  it('adds the model, a permission mode other than default, and a fresh session id', () => {
    const process = create({ model: 'opus', permissionMode: 'acceptEdits' });
    expect(process.args).toEqual(expect.arrayContaining(['--model', 'opus', '--permission-mode', 'acceptEdits']));
    expect(process.args[process.args.indexOf('--session-id') + 1]).toBe(process.providerSessionId);
    expect(create({ permissionMode: 'default' }).args).not.toContain('--permission-mode');
    expect(process.stdin).toBe('control');
  });
});

describe('claude line mapping', () => {
  it('captures the session id from init and consumes plumbing without events', () => {
    const process = create();
    expect(process.onLine(line({ type: 'system', subtype: 'init', session_id: 'abc' }))).toEqual({ providerSessionId: 'abc' });
    for (const plumbing of [
      { type: 'system', subtype: 'session_state_changed', state: 'idle' },
      { type: 'system', subtype: 'status', status: 'requesting' },
      { type: 'control_response', response: { subtype: 'success', request_id: 'init_1', response: {} } },
      { type: 'keep_alive' },
    ]) {
      expect(process.onLine(line(plumbing))).toEqual({});
    }
    expect(process.onLine('')).toEqual({});
  });

  it('maps thinking blocks, user text and text deltas', () => {
    const process = create();
    expect(process.onLine(line({ type: 'assistant', message: { model: 'm', content: [{ type: 'thinking', thinking: 'hmm' }] } })).events).toEqual([
      { kind: 'thinking', payload: { content: 'hmm' } },
    ]);
    expect(process.onLine(line({ type: 'user', message: { role: 'user', content: 'plain' } })).events).toEqual([
      { kind: 'user_message', payload: { content: 'plain' } },
    ]);
    const delta = { type: 'stream_event', event: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hel' } } };
    expect(process.onLine(line(delta)).events).toEqual([{ kind: 'assistant_delta', payload: { content: 'Hel', index: 0 } }]);
    expect(process.onLine(line(delta)).events).toEqual([{ kind: 'assistant_delta', payload: { content: 'Hel', index: 1 } }]);
  });

  it('keeps unknown types, subtypes and blocks as raw', () => {
    const process = create();
    const rateLimit = { type: 'rate_limit_event', rate_limit_info: { status: 'allowed' } };
    expect(process.onLine(line(rateLimit)).events).toEqual([{ kind: 'raw', payload: { stream: 'stdout', content: rateLimit } }]);
    const retry = { type: 'system', subtype: 'api_retry', attempt: 1 };
    expect(process.onLine(line(retry)).events).toEqual([{ kind: 'raw', payload: { stream: 'stdout', content: retry } }]);
    const block = { type: 'server_tool_use', id: 'x' };
    expect(process.onLine(line({ type: 'assistant', message: { content: [block] } })).events).toEqual([
      { kind: 'raw', payload: { stream: 'stdout', content: block } },
    ]);
  });

  it('answers a control request it does not handle, so the CLI does not wait forever', () => {
    const output = create().onLine(line({ type: 'control_request', request_id: 'r1', request: { subtype: 'hook_callback' } }));
    expect(output.events?.[0].kind).toBe('raw');
    expect(JSON.parse(output.write![0])).toEqual({
      type: 'control_response',
      response: { subtype: 'error', error: 'ASM does not handle hook_callback requests', request_id: 'r1' },
    });
  });

  it('turns a non-JSON line into a terminal parse_error with the first 200 characters', () => {
    const garbage = `oops ${'x'.repeat(300)}`;
    expect(create().onLine(garbage).events).toEqual([
      {
        kind: 'error',
        payload: { kind: 'parse_error', domain: 'parser', message: `claude printed a line that is not JSON: ${garbage.slice(0, 200)}`, retryable: false },
      },
    ]);
  });

  it('closes stdin after a result', () => {
    expect(create().onLine(resultLine({})).endInput).toBe(true);
  });

  it('reads is_error, not the subtype: an API error with subtype success is an error', () => {
    const output = create().onLine(
      resultLine({ is_error: true, result: 'API Error: 429 rate limited', api_error_status: 429, terminal_reason: 'api_error' }),
    );
    expect(output.events).toEqual([
      {
        kind: 'error',
        payload: {
          kind: 'rate_limit',
          domain: 'provider',
          message: 'API Error: 429 rate limited',
          retryable: true,
          terminal_reason: 'api_error',
          api_error_status: 429,
        },
      },
    ]);
    expect(output.endInput).toBe(true);
  });

  it('maps the API status to the error kind', () => {
    const kindOf = (status: number) => {
      const payload = create().onLine(resultLine({ is_error: true, result: 'x', api_error_status: status })).events![0].payload;
      return [(payload as { kind: string }).kind, (payload as { retryable: boolean }).retryable];
    };
    expect(kindOf(401)).toEqual(['auth_error', false]);
    expect(kindOf(403)).toEqual(['auth_error', false]);
    expect(kindOf(529)).toEqual(['provider_error', true]);
    expect(kindOf(400)).toEqual(['provider_error', false]);
  });

  it('reports an unreachable model endpoint as connection_failed (api_error, no status)', () => {
    const message = 'API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)';
    const payload = create().onLine(
      resultLine({ is_error: true, result: message, api_error_status: null, api_error: 'connection_failed', terminal_reason: 'api_error' }),
    ).events![0].payload;
    expect(payload).toMatchObject({ kind: 'connection_failed', domain: 'transport', retryable: true, message });
  });

  it('handles the interrupt result without a `result` key, reporting its cost first', () => {
    const events = create().onLine(
      line({
        type: 'result',
        subtype: 'error_during_execution',
        is_error: true,
        total_cost_usd: 0.009772,
        usage: { input_tokens: 3, cache_creation_input_tokens: 1200, cache_read_input_tokens: 14000, output_tokens: 48 },
        errors: ['[ede_diagnostic] result_type=user'],
        terminal_reason: 'aborted_tools',
      }),
    ).events!;
    expect(events.map((e) => e.kind)).toEqual(['cost_update', 'error']);
    // The interrupt's result: aborted_tools means the user stopped the turn.
    expect(events[1].payload).toMatchObject({ kind: 'user_cancelled', domain: 'runtime', message: '[ede_diagnostic] result_type=user' });
  });

  it('reports a result without usage or cost as nulls, and no cost_update', () => {
    const events = create().onLine(resultLine({})).events!;
    expect(events).toHaveLength(1);
    expect(events[0].payload).toMatchObject({ status: 'completed', usage: null, cost_usd: null });
  });
});

describe('claude control messages', () => {
  it('numbers its interrupts', () => {
    const process = create();
    expect(JSON.parse(process.interrupt().write![0])).toEqual({ type: 'control_request', request_id: 'int_1', request: { subtype: 'interrupt' } });
    expect(JSON.parse(process.interrupt().write![0]).request_id).toBe('int_2');
  });

  it('denies with a default message when no reason is given', () => {
    const process = create();
    const [approval] = process.onLine(
      line({ type: 'control_request', request_id: 'r9', request: { subtype: 'can_use_tool', tool_name: 'Edit', input: { path: 'a' } } }),
    ).approvals!;
    expect(approval).toEqual({ subject: 'Edit', toolInput: { path: 'a' }, native: { request_id: 'r9', input: { path: 'a' }, permission_suggestions: [] } });
    expect(JSON.parse(process.decide(approval, 'deny', null).write![0]).response).toEqual({
      subtype: 'success',
      request_id: 'r9',
      response: { behavior: 'deny', message: 'Denied by the user', interrupt: false },
    });
  });
});

describe('claude exit without a result', () => {
  const exitError = (code: number | null, signal: NodeJS.Signals | null, stderr = '') =>
    create().onExit({ code, signal, stderr }, false)[0].payload as { kind: string; message: string };

  it('fails by exit status, with the stderr tail', () => {
    expect(exitError(null, 'SIGKILL')).toMatchObject({ kind: 'transport_error', message: 'claude was stopped by SIGKILL before the turn ended' });
    expect(exitError(143, null).message).toBe('claude exited with code 143 (stopped by a signal) before the turn ended');
    expect(exitError(1, null, 'Error: bad flag\n').message).toBe('claude exited with code 1: Error: bad flag');
    expect(exitError(0, null).message).toBe('claude exited without a result');
  });

  it('adds nothing once the run has its terminal event', () => {
    expect(create().onExit({ code: 0, signal: null, stderr: '' }, true)).toEqual([]);
  });
});

describe('claude edges: cumulative totals, error kinds, denials', () => {
  const cumulative = (cost: number, input: number, output: number) =>
    resultLine({
      total_cost_usd: cost,
      usage: { input_tokens: 1, output_tokens: 1 },
      modelUsage: {
        'claude-opus-5-5': { inputTokens: input, outputTokens: output, cacheReadInputTokens: 100, cacheCreationInputTokens: 0, costUSD: cost },
      },
    });

  it('reports a resumed run its own cost and usage, and the new cumulative totals', () => {
    const first = create().onLine(cumulative(0.02, 6, 96));
    expect(first.totals).toEqual({ input_tokens: 6, output_tokens: 96, cache_read_input_tokens: 100, cache_creation_input_tokens: 0, total_tokens: 202, cost_usd: 0.02 });
    const second = create({ providerSessionId: 's', previousTotals: first.totals }).onLine(cumulative(0.035, 10, 150));
    expect(second.events![0].payload).toEqual({ input_tokens: 4, output_tokens: 54, total_tokens: 58, cost_usd: 0.015 });
    expect(second.events![1].payload).toMatchObject({ usage: { input_tokens: 4, output_tokens: 54, cache_read_input_tokens: 0, total_tokens: 58 }, cost_usd: 0.015 });
    expect(second.totals).toMatchObject({ input_tokens: 10, cost_usd: 0.035 });
  });

  it('takes lower cumulative figures as a conversation that started afresh', () => {
    const output = create({ previousTotals: { input_tokens: 50, output_tokens: 500, total_tokens: 550, cost_usd: 1 } }).onLine(cumulative(0.02, 6, 96));
    expect(output.events![1].payload).toMatchObject({ cost_usd: 0.02, usage: { input_tokens: 6, output_tokens: 96 } });
  });

  it('uses the synthetic API-error line to classify an error result without a status', () => {
    const process = create();
    const synthetic = { type: 'assistant', is_api_error_message: true, error: 'authentication_failed', message: { model: '<synthetic>', content: [{ type: 'text', text: 'Not logged in · Please run /login' }] } };
    expect(process.onLine(line(synthetic)).events![0].kind).toBe('raw');
    const events = process.onLine(resultLine({ is_error: true, result: 'Not logged in · Please run /login' })).events!;
    expect(events.at(-1)!.payload).toMatchObject({ kind: 'auth_error', message: 'Not logged in · Please run /login' });
  });

  it('maps turn and budget limits to the guardrail domain', () => {
    const payload = create().onLine(line({ type: 'result', subtype: 'error_max_turns', is_error: true, errors: ['max turns'], terminal_reason: 'max_turns' })).events![0].payload;
    expect(payload).toMatchObject({ kind: 'provider_error', domain: 'guardrail', message: 'max turns' });
  });

  it('lists auto-denied tools in the result with the reason from system/permission_denied', () => {
    const process = create({ permissionMode: 'dontAsk' });
    const denied = { type: 'system', subtype: 'permission_denied', tool_name: 'Bash', tool_use_id: 'toolu_1', message: 'touch needs approval' };
    expect(process.onLine(line(denied)).events).toEqual([{ kind: 'raw', payload: { stream: 'stdout', content: denied } }]);
    const result = process.onLine(resultLine({ permission_denials: [{ tool_name: 'Bash', tool_use_id: 'toolu_1', tool_input: { command: 'touch x' } }] })).events![0];
    expect(result.payload).toMatchObject({
      permission_denials: [{ tool_name: 'Bash', tool_use_id: 'toolu_1', tool_input: { command: 'touch x' }, message: 'touch needs approval' }],
    });
  });
});
