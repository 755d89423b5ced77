import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import amp from '../../src/providers/amp.js';
import type { ProviderRunInput } from '../../src/providers/types.js';
import { interruptAfter, kinds, makeSpec, runToEnd, terminalError, terminalOf } from '../backends/harness.js';

/** Amp: argv, auth check, line mapping, and the core backend driving the fake amp (test/fixtures/amp). */

const FAKE_AMP = fileURLToPath(new URL('../fixtures/bin/fake-amp.mjs', import.meta.url));
const INPUT: ProviderRunInput = { runId: 'run_1', sessionId: 'ses_1', prompt: 'hi', cwd: '/tmp', env: { AMP_API_KEY: 'k' } };
const THREAD = 'T-019d2a4e-6b1c-7c3e-9f4a-2b8d1e0c5a77';

function spec(prompt: string, overrides: Partial<Parameters<typeof makeSpec>[1]> = {}) {
  return makeSpec(amp, { prompt, binary: FAKE_AMP, env: { PATH: process.env.PATH!, AMP_API_KEY: 'test-key' }, ...overrides });
}

describe('amp argv and auth', () => {
  it('passes the prompt as the --execute= value, continues a thread, maps the permission mode', () => {
    expect(amp.create({ ...INPUT, prompt: '--dangerously-allow-all' }).args).toEqual(['--execute=--dangerously-allow-all', '--stream-json']);
    expect(amp.create({ ...INPUT, providerSessionId: THREAD, permissionMode: 'dangerously-allow-all' }).args).toEqual([
      'threads',
      'continue',
      THREAD,
      '--execute=hi',
      '--stream-json',
      '--dangerously-allow-all',
    ]);
  });

  it('refuses to start without AMP_API_KEY (amp would wait on an interactive login)', () => {
    expect(() => amp.create({ ...INPUT, env: {} })).toThrow(expect.objectContaining({ kind: 'auth_error' }));
  });
});

describe('amp lines', () => {
  it('maps error results precisely', () => {
    const errorOf = (error: string) =>
      amp.create(INPUT).onLine(JSON.stringify({ type: 'result', subtype: 'error_during_execution', is_error: true, error, num_turns: 1 })).events![0].payload;
    expect(errorOf('User cancelled (SIGINT/SIGTERM)')).toMatchObject({ kind: 'user_cancelled' });
    expect(errorOf('The following tools require user approval, which is not supported in stream JSON mode: Bash')).toMatchObject({
      kind: 'approval_denied',
      domain: 'approval',
    });
    expect(errorOf('model overloaded')).toMatchObject({ kind: 'provider_error', message: 'model overloaded' });
  });

  it('keeps thinking and unknown blocks, and knows a lost server from its stderr', () => {
    const process = amp.create(INPUT);
    const events = process.onLine(JSON.stringify({ type: 'assistant', message: { content: [{ type: 'thinking', thinking: 'hm' }, { type: 'image' }] } })).events;
    expect(events).toEqual([
      { kind: 'thinking', payload: { content: 'hm' } },
      { kind: 'raw', payload: { stream: 'stdout', content: { type: 'image' } } },
    ]);
    const exit = (stderr: string) => process.onExit({ code: 1, signal: null, stderr }, false)[0].payload;
    expect(exit("Couldn't connect to the Amp server at https://ampcode.com/")).toMatchObject({ kind: 'connection_failed' });
    expect(exit('boom')).toMatchObject({ kind: 'transport_error', message: 'amp exited with code 1: boom' });
  });
});

describe('amp on the fake CLI', () => {
  it('A1: text and tool calls in order; usage summed from the assistant lines', async () => {
    const events = await runToEnd(spec('Run: echo hello-from-shell'));
    expect(kinds(events)).toEqual(['run_started', 'user_message', 'assistant_message', 'tool_use', 'tool_result', 'assistant_message', 'result']);
    expect(events[3].payload).toEqual({ tool_name: 'Bash', tool_call_id: 'toolu_01HqZ8cJ3vYk2Lw9NfT4pRsA', input: { cmd: 'echo hello-from-shell' } });
    expect(events[4].payload).toEqual({ tool_call_id: 'toolu_01HqZ8cJ3vYk2Lw9NfT4pRsA', content: '{"output":"hello-from-shell\\n","exitCode":0}', is_error: false });
    expect(terminalOf(events).payload).toEqual({
      status: 'completed',
      stop_reason: 'end_turn',
      // (14 + 8) input, (58 + 12) output, (16546 + 16607) cache read, (61 + 96) cache creation
      usage: { input_tokens: 22, output_tokens: 70, cache_read_input_tokens: 33153, cache_creation_input_tokens: 157, total_tokens: 33402 },
      cost_usd: null,
      duration_ms: 8734,
      num_turns: 2,
      provider_session_id: THREAD,
    });
  });

  it('continues a thread with `threads continue`', async () => {
    const events = await runToEnd(spec('again', { providerSessionId: 'T-0000-continued' }));
    expect((events[0].payload as { args: string[] }).args.slice(0, 3)).toEqual(['threads', 'continue', 'T-0000-continued']);
    expect(terminalOf(events).payload).toMatchObject({ status: 'completed', provider_session_id: 'T-0000-continued' });
  });

  it('a tool that needs approval fails the run with approval_denied', async () => {
    expect(terminalError(await runToEnd(spec('Create a file [fixture:a-approval]')))).toMatchObject({
      kind: 'approval_denied',
      message: 'The following tools require user approval, which is not supported in stream JSON mode: Bash',
    });
  });

  it('interrupt: SIGINT, and amp reports the cancellation', async () => {
    const { events, endedInMs } = await interruptAfter(spec('Run the slow job [fixture:a-interrupt]'), 'tool_use');
    expect(terminalError(events)).toMatchObject({ kind: 'user_cancelled' });
    // amp ended on the SIGINT itself: the backend's SIGTERM comes only after interruptGraceMs (2 s here).
    expect(endedInMs).toBeLessThan(1_500);
  });

  it('without AMP_API_KEY the run fails at once with auth_error and nothing is spawned', async () => {
    const started = Date.now();
    const events = await runToEnd(spec('hi', { env: { PATH: process.env.PATH! } }));
    expect(kinds(events)).toEqual(['error']);
    expect(events[0].payload).toMatchObject({ kind: 'auth_error' });
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});
