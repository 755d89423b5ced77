import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import gemini from '../../src/providers/gemini/index.js';
import type { ProviderRunInput } from '../../src/providers/types.js';
import type { EventPayload } from '../../src/schemas/events.js';
import { interruptAfter, kinds, makeSpec, runToEnd, terminalError, terminalOf } from '../backends/harness.js';

/** Gemini: the line mapping, and the core backend driving the fake gemini (recorded transcripts). */

const FAKE_GEMINI = fileURLToPath(new URL('../fixtures/bin/fake-gemini.mjs', import.meta.url));
const AUTH = { GEMINI_API_KEY: 'test-key' };
const INPUT: ProviderRunInput = { runId: 'run_1', sessionId: 'ses_1', prompt: 'hi', cwd: '/tmp', env: {} };
const line = (value: unknown) => JSON.stringify(value);

function spec(prompt: string, overrides: Partial<Parameters<typeof makeSpec>[1]> = {}) {
  return makeSpec(gemini, { prompt, binary: FAKE_GEMINI, env: { PATH: process.env.PATH!, ...AUTH }, ...overrides });
}

describe('gemini argv', () => {
  it('passes the prompt as the --prompt= value, maps permission_mode to --approval-mode, resumes by id', () => {
    const fresh = gemini.create({ ...INPUT, prompt: '--yolo please', model: 'gemini-2.5-flash', permissionMode: 'auto_edit' });
    expect(fresh.args).toEqual(['--prompt=--yolo please', '--output-format', 'stream-json', '--skip-trust', '-m', 'gemini-2.5-flash', '--approval-mode', 'auto_edit']);
    expect(fresh.stdin).toBe('closed');
    expect(gemini.create({ ...INPUT, permissionMode: 'default' }).args).not.toContain('--approval-mode');
    expect(gemini.create({ ...INPUT, providerSessionId: 'e56b' }).args.slice(-2)).toEqual(['--resume', 'e56b']);
  });
});

describe('gemini lines', () => {
  it('keeps warnings and unknown lines as raw, and a non-JSON line is a parse_error', () => {
    const process = gemini.create(INPUT);
    const warning = { type: 'error', severity: 'warning', message: 'Loop detected, stopping execution' };
    expect(process.onLine(line(warning)).events).toEqual([{ kind: 'raw', payload: { stream: 'stdout', content: warning } }]);
    expect(process.onLine('Loaded cached credentials.').events![0].payload).toMatchObject({ kind: 'parse_error' });
  });

  it('maps exit codes to error kinds, with the error result message when there was one', () => {
    const exit = (code: number | null, result?: unknown, signal: NodeJS.Signals | null = null) => {
      const process = gemini.create(INPUT);
      // An error result counts a turn of the conversation (src/providers/gemini/turns.ts); the error waits for the exit.
      if (result) expect(process.onLine(line(result))).toEqual({ totals: { turns: 1 } });
      return process.onExit({ code, signal, stderr: 'stderr tail' }, false)[0].payload as EventPayload<'error'> & Record<string, unknown>;
    };
    expect(exit(41)).toMatchObject({ kind: 'auth_error', message: 'gemini exited with code 41 (no usable authentication): stderr tail', exit_code: 41 });
    expect(exit(42).kind).toBe('config_invalid');
    expect(exit(44).kind).toBe('config_invalid');
    expect(exit(52).kind).toBe('config_invalid');
    expect(exit(55).kind).toBe('config_invalid');
    expect(exit(53)).toMatchObject({ kind: 'provider_error', domain: 'guardrail' });
    expect(exit(54)).toMatchObject({ kind: 'provider_error', domain: 'tool' });
    expect(exit(130).kind).toBe('user_cancelled');
    expect(exit(0).kind).toBe('user_cancelled');
    expect(exit(null, undefined, 'SIGKILL')).toMatchObject({ kind: 'transport_error', message: 'gemini was stopped by SIGKILL before the turn ended: stderr tail' });
    expect(exit(7).kind).toBe('transport_error');
    const failed = { type: 'result', status: 'error', error: { type: 'unknown', message: '[API Error: boom]' } };
    expect(exit(1, failed)).toMatchObject({ kind: 'provider_error', message: 'gemini exited with code 1 (a general or API error): [API Error: boom]', error_type: 'unknown' });
    // After an error result, an HTTP status truncated to 8 bits is the exit code (seen with the real 0.61).
    expect(exit(145, failed)).toMatchObject({ kind: 'auth_error', api_error_status: 401 });
    expect(exit(173, failed)).toMatchObject({ kind: 'rate_limit', api_error_status: 429, retryable: true });
    expect(exit(244, failed)).toMatchObject({ kind: 'provider_error', api_error_status: 500, retryable: true });
    expect(exit(17, failed)).toMatchObject({ kind: 'provider_error', api_error_status: 529 });
    expect(exit(145).kind).toBe('transport_error'); // no error result: just an unknown code
    const unreachable = { ...failed, error: { type: 'unknown', message: 'exception TypeError: fetch failed sending request' } };
    expect(exit(1, unreachable)).toMatchObject({ kind: 'connection_failed' });
  });
});

describe('gemini on the fake CLI', () => {
  it('G1: deltas, a shell tool call and usage from stats, in yolo mode', async () => {
    const events = await runToEnd(spec('say hello, then run echo hello-from-shell', { permissionMode: 'yolo', model: 'gemini-2.5-flash' }));
    expect(kinds(events)).toEqual(['run_started', 'user_message', 'assistant_delta', 'assistant_delta', 'tool_use', 'tool_result', 'assistant_delta', 'result']);
    expect(events[4].payload).toEqual({
      tool_name: 'run_shell_command',
      tool_call_id: 'run_shell_command__run_shell_command_1795218103541_0',
      input: { command: 'echo hello-from-shell', description: 'Print a greeting' },
    });
    expect(events[5].payload).toEqual({ tool_call_id: 'run_shell_command__run_shell_command_1795218103541_0', content: 'hello-from-shell', is_error: false });
    expect(terminalOf(events).payload).toEqual({
      status: 'completed',
      stop_reason: null,
      usage: { input_tokens: 16310, output_tokens: 41, cache_read_input_tokens: 14000, total_tokens: 16351 },
      cost_usd: null,
      duration_ms: 87,
      tool_calls: 1,
      provider_session_id: 'e56b295f-5276-45ca-9898-f86175f76054',
      // The conversation's turn count: what a warm session's kept process is checked against.
      provider_totals: { turns: 1 },
    });
  });

  it('G1-headless-default: without an approval mode the shell is not registered; the run still completes', async () => {
    const events = await runToEnd(spec('run echo hello-from-shell [fixture:g1-headless-default]'));
    const result = events.find((e) => e.kind === 'tool_result')!.payload as Record<string, unknown>;
    expect(result).toMatchObject({ is_error: true, error_type: 'tool_not_registered' });
    expect(terminalOf(events).kind).toBe('result');
  });

  it('the fake refuses a run in another approval mode than the capture (so the mapping is tested)', async () => {
    const error = terminalError(await runToEnd(spec('x [fixture:g1-headless-default]', { permissionMode: 'yolo' })));
    expect(error).toMatchObject({ kind: 'transport_error' });
    expect(error.message).toContain('protocol mismatch');
  });

  it('resumes with --resume: the init session id is the continued one', async () => {
    const events = await runToEnd(spec('again', { permissionMode: 'yolo', providerSessionId: 'b7a95950-c740-41df-8c82-d1a69383183a' }));
    expect(terminalOf(events).payload).toMatchObject({ status: 'completed', provider_session_id: 'b7a95950-c740-41df-8c82-d1a69383183a' });
  });

  it('interrupt: SIGINT to the group, exit 0 without a result → user_cancelled', async () => {
    const { events, endedInMs } = await interruptAfter(spec('slow [fixture:g-interrupt]', { permissionMode: 'yolo' }), 'tool_use');
    expect(terminalError(events)).toMatchObject({ kind: 'user_cancelled' });
    // gemini ended on the SIGINT itself: the backend's SIGTERM comes only after interruptGraceMs (2 s here).
    expect(endedInMs).toBeLessThan(1_500);
  });

  it('an error result and exit 1 → provider_error with the API message; exit 53 → guardrail', async () => {
    expect(terminalError(await runToEnd(spec('x [fixture:g-api-error]')))).toMatchObject({
      kind: 'provider_error',
      domain: 'provider',
      message: 'gemini exited with code 1 (a general or API error): [API Error: quota exceeded for this project]',
    });
    const limit = await runToEnd(spec('x [fixture:g-turn-limit]'));
    expect(kinds(limit)).toContain('raw');
    expect(terminalError(limit)).toMatchObject({ kind: 'provider_error', domain: 'guardrail', exit_code: 53 });
  });

  it('no auth in its environment: exit 41 → auth_error', async () => {
    const error = terminalError(await runToEnd(spec('x', { env: { PATH: process.env.PATH! } })));
    expect(error).toMatchObject({ kind: 'auth_error', exit_code: 41 });
    expect(error.message).toContain('GEMINI_API_KEY');
  });
});
