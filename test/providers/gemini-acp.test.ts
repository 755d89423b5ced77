import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import gemini from '../../src/providers/gemini/index.js';
import type { ProviderRunInput } from '../../src/providers/types.js';
import { kinds, makeSpec, runToEnd, startRun, terminalError, terminalOf } from '../backends/harness.js';

/**
 * Gemini's ACP transport (src/providers/gemini/acp.ts), taken by warm sessions: the transport chosen
 * per run, and the core backend driving the fake gemini through real captures of `gemini --acp`
 * (test/fixtures/gemini/ga-*). The warm process's reuse is test/e2e/warm.test.ts's.
 */

const FAKE_GEMINI = fileURLToPath(new URL('../fixtures/bin/fake-gemini.mjs', import.meta.url));
const INPUT: ProviderRunInput = { runId: 'run_1', sessionId: 'ses_1', prompt: 'hi', cwd: '/tmp', env: {} };
const WARM = { idleMs: 60_000 };
const SESSION = '6d7a005f-e159-463c-bf03-64b5cf508118'; // ga-hello's session, which the fake hands out

function spec(prompt: string, overrides: Partial<Parameters<typeof makeSpec>[1]> = {}) {
  return makeSpec(gemini, { prompt, binary: FAKE_GEMINI, env: { PATH: process.env.PATH!, GEMINI_API_KEY: 'test-key' }, warm: WARM, ...overrides });
}

describe('gemini transport per run', () => {
  it('a cold run is headless; a warm session\'s new conversation is ACP, with the mode and model in argv', () => {
    expect(gemini.create(INPUT).args[0]).toMatch(/^--prompt=/);
    const acp = gemini.create({ ...INPUT, warm: WARM, model: 'gemini-2.5-flash', permissionMode: 'auto_edit' });
    expect(acp.args).toEqual(['--acp', '--skip-trust', '-m', 'gemini-2.5-flash', '--approval-mode', 'auto_edit']);
    expect(acp.stdin).toBe('control');
    expect(acp.warm?.key).toBeDefined();
    // The latest conversation is headless `--resume latest`: ACP cannot name it.
    expect(gemini.create({ ...INPUT, warm: WARM, continueLatest: true }).args.slice(-2)).toEqual(['--resume', 'latest']);
  });

  it('a warm session\'s continued conversation is headless --resume unless a kept process takes it', () => {
    const run = gemini.create({ ...INPUT, warm: WARM, providerSessionId: SESSION });
    expect(run.args.slice(-2)).toEqual(['--resume', SESSION]);
    expect(run.warm?.key).toEqual(gemini.create({ ...INPUT, warm: WARM }).warm?.key);
    // Taken by a kept process: the next session/prompt, and its answer is read as ACP.
    const turn = run.warm!.nextTurn();
    expect(turn.events).toEqual([{ kind: 'user_message', payload: { content: 'hi' } }]);
    expect(JSON.parse(turn.write![0])).toMatchObject({ jsonrpc: '2.0', method: 'session/prompt', params: { sessionId: SESSION, prompt: [{ type: 'text', text: 'hi' }] } });
    const answer = { jsonrpc: '2.0', id: 0, result: { stopReason: 'end_turn', _meta: { quota: { token_count: { input_tokens: 5, output_tokens: 2 } } } } };
    expect(run.onLine(JSON.stringify(answer))).toMatchObject({ endInput: true, events: [{ kind: 'result', payload: { usage: { input_tokens: 5, output_tokens: 2, total_tokens: 7 } } }] });
  });
});

describe('gemini --acp on the fake CLI', () => {
  it('ga-hello: the handshake, the prompt echoed, text as deltas, usage of this prompt from _meta.quota', async () => {
    const events = await runToEnd(spec('First question'));
    expect(kinds(events)).toEqual(['run_started', 'user_message', 'assistant_delta', 'assistant_delta', 'result']);
    expect(events.filter((e) => e.kind === 'assistant_delta').map((e) => (e.payload as { content: string }).content).join('')).toBe('First answer.');
    expect(terminalOf(events).payload).toMatchObject({
      status: 'completed',
      stop_reason: 'end_turn',
      usage: { input_tokens: 120, output_tokens: 8, total_tokens: 128 },
      cost_usd: null,
      tool_calls: 0,
      provider_session_id: SESSION,
      provider_totals: { turns: 1 },
    });
  });

  it('counts the conversation\'s turns as its totals, so a kept process that missed a turn elsewhere is not taken', async () => {
    const events = await runToEnd(spec('First question', { previousTotals: { turns: 4 } }));
    expect(terminalOf(events).payload).toMatchObject({ provider_totals: { turns: 5 } });
  });

  it('ga-shell: a tool the mode runs without asking is tool_call in_progress → tool_use, tool_call_update completed → tool_result', async () => {
    const events = await runToEnd(spec('Run echo hi [fixture:ga-shell]'));
    expect(kinds(events)).toEqual(['run_started', 'user_message', 'assistant_delta', 'assistant_delta', 'tool_use', 'tool_result', 'assistant_delta', 'assistant_delta', 'result']);
    const id = 'run_shell_command__run_shell_command_1796300036424_0';
    expect(events[4].payload).toMatchObject({ tool_name: 'run_shell_command', tool_call_id: id, input: { title: 'echo hi', kind: 'execute' } });
    expect(events[5].payload).toEqual({ tool_call_id: id, content: 'hi', is_error: false });
    expect(terminalOf(events).payload).toMatchObject({ usage: { input_tokens: 240, output_tokens: 16 }, tool_calls: 1 });
  });

  it.each([
    ['allow', 'ga-approve', false],
    ['deny', 'ga-deny', true],
  ] as const)('%s: session/request_permission is an approval (tool_use first), answered with the matching option', async (decision, fixture, isError) => {
    const { run, events, waitFor } = startRun(spec(`Create approved.txt [fixture:${fixture}]`));
    const approval = await waitFor('approval_requested');
    expect(approval).toMatchObject({ subject: 'run_shell_command', details: { tool_input: { title: 'touch approved.txt', kind: 'execute' } } });
    await run.decide(approval.approval_id, decision, null);
    await run.done;
    expect(kinds(events).filter((k) => k.startsWith('tool') || k.startsWith('approval'))).toEqual(['tool_use', 'approval_requested', 'tool_result']);
    expect(events.find((e) => e.kind === 'tool_result')!.payload).toMatchObject({ is_error: isError });
    expect(terminalOf(events).kind).toBe('result');
  });

  it('ga-interrupt: an interrupt is session/cancel; the prompt answers cancelled → user_cancelled, without a stop', async () => {
    const { run, events, waitFor } = startRun(spec('Run the slow job [fixture:ga-interrupt]'));
    await run.decide((await waitFor('approval_requested')).approval_id, 'allow', null);
    const interruptedAt = Date.now();
    await run.interrupt('user');
    await run.done;
    expect(terminalError(events)).toMatchObject({ kind: 'user_cancelled' });
    expect(events.find((e) => e.kind === 'tool_result')!.payload).toMatchObject({ content: 'Command cancelled by user.' });
    // The CLI answered the cancel itself: the backend's stop comes only after interruptGraceMs (2 s here).
    expect(Date.now() - interruptedAt).toBeLessThan(1_500);
  });

  it('ga-api-error: the prompt\'s JSON-RPC error code is the HTTP status → the HTTP rule', async () => {
    expect(terminalError(await runToEnd(spec('Say hello [fixture:ga-api-error]')))).toMatchObject({ kind: 'rate_limit', retryable: true, api_error_status: 429 });
  });

  it('the fake refuses a mode the capture was not made in (so --approval-mode is what reaches the CLI)', async () => {
    const error = terminalError(await runToEnd(spec('Create approved.txt [fixture:ga-approve]', { permissionMode: 'yolo' })));
    expect(error.message).toContain('protocol mismatch');
  });
});
