import type { ErrorDomain, ErrorKind } from '../../errors/kinds.js';
import type { ProviderEvent } from '../../schemas/events.js';
import { completedResult, errorEvent, exitMessage, httpStatusError, parseLine, raw, SIGNALLED_ONE_SHOT } from '../common.js';
import type { ProcessExit, ProviderLineOutput, ProviderProcess, ProviderRunInput } from '../types.js';
import { afterTurn } from './turns.js';

/**
 * Gemini CLI in headless stream-json mode, the transport of every cold run (docs/protocols.md, "## Gemini CLI"):
 *
 *   gemini --prompt=PROMPT --output-format stream-json --skip-trust [-m MODEL] [--approval-mode MODE] [--resume ID|latest]
 *
 * The prompt is the `--prompt=` value, never an argument of its own: a prompt that starts with "-"
 * must not become a flag. `--skip-trust`: headless mode in an untrusted folder exits 55 without it, and
 * an untrusted folder silently forces the approval mode back to default. stdin is closed (the CLI
 * appends stdin content to the prompt).
 *
 * Approvals: none in headless mode; the CLI turns every "ask" into a deny and does not even register
 * the shell and write tools unless the mode allows them. The session's permission_mode picks what is
 * allowed up front (normalized default, auto, bypass, plan):
 *   default   → (no flag)                  read-only tools; shell and writes are not registered
 *   auto_edit → --approval-mode auto_edit  edits and writes run; the shell stays unavailable
 *   yolo      → --approval-mode yolo       everything runs
 *   plan      → --approval-mode plan       plans only, no changes
 *
 * Interrupt: SIGINT to the process group. Signalling only the launcher does nothing (a relaunched
 * child does the work); the group's child shuts down gracefully and exits 0 with no `result` line,
 * which therefore means interrupted (user_cancelled).
 *
 * stdout line                         → ASM events
 * ---------------------------------------------------------------------------------------------
 * init                                → none; its session_id is captured (the continuation id)
 * message role user                   → user_message
 * message role assistant (delta)      → assistant_delta (the CLI streams text only as deltas)
 * tool_use / tool_result              → tool_use / tool_result (is_error for status "error")
 * error (warning or non-fatal error)  → raw; the run goes on
 * result status success               → result; usage from stats (per invocation; no cost); totals: the
 *                                       conversation's turn count (turns.ts), also after an error result
 * result status error                 → remembered: the process exits right after it, and its exit
 *                                       code says what failed (below), so the terminal error is made then
 * anything else                       → raw; a line that is not JSON → parse_error
 *
 * Exit codes: 1 general/API → provider_error, 41 → auth_error, 42 input → config_invalid,
 * 44 sandbox → config_invalid, 52 config → config_invalid, 53 turn limit → provider_error (guardrail),
 * 54 fatal tool error → provider_error (tool), 55 untrusted folder → config_invalid,
 * 130 → user_cancelled, 0 without a result → user_cancelled.
 */

interface GeminiLine {
  type?: string;
  session_id?: string;
  role?: string;
  content?: string;
  tool_name?: string;
  tool_id?: string;
  parameters?: unknown;
  status?: string;
  output?: string;
  error?: { type?: string; message?: string };
  stats?: { total_tokens?: number; input_tokens?: number; output_tokens?: number; cached?: number; duration_ms?: number; tool_calls?: number };
}

const EXIT_CODES: Record<number, { kind: ErrorKind; domain?: ErrorDomain; what: string }> = {
  1: { kind: 'provider_error', what: 'a general or API error' },
  41: { kind: 'auth_error', what: 'no usable authentication' },
  42: { kind: 'config_invalid', what: 'an input error' },
  44: { kind: 'config_invalid', what: 'a sandbox error' },
  52: { kind: 'config_invalid', what: 'a configuration error' },
  53: { kind: 'provider_error', domain: 'guardrail', what: 'the session turn limit' },
  54: { kind: 'provider_error', domain: 'tool', what: 'a fatal tool error' },
  55: { kind: 'config_invalid', what: 'an untrusted workspace' },
  130: { kind: 'user_cancelled', what: 'cancellation' },
};

export function createHeadlessProcess(input: ProviderRunInput): ProviderProcess {
  let deltaIndex = 0;
  /** An error result, turned into the terminal error once the exit code is known. */
  let failed: GeminiLine['error'] | null = null;

  function onLine(text: string): ProviderLineOutput {
    const parsed = parseLine<GeminiLine>('gemini', text);
    if (!('line' in parsed)) return parsed;
    const { line } = parsed;
    switch (line.type) {
      case 'init':
        return { providerSessionId: line.session_id };
      case 'message':
        if (line.role === 'assistant') return { events: [{ kind: 'assistant_delta', payload: { content: line.content ?? '', index: deltaIndex++ } }] };
        if (line.role === 'user') return { events: [{ kind: 'user_message', payload: { content: line.content ?? '' } }] };
        return { events: [raw(line)] };
      case 'tool_use':
        return { events: [{ kind: 'tool_use', payload: { tool_name: line.tool_name ?? '', tool_call_id: line.tool_id ?? '', input: line.parameters } }] };
      case 'tool_result':
        return {
          events: [
            {
              kind: 'tool_result',
              payload: {
                tool_call_id: line.tool_id ?? '',
                content: line.output ?? line.error?.message ?? null,
                is_error: line.status === 'error',
                ...(line.error?.type && { error_type: line.error.type }),
              },
            },
          ],
        };
      case 'result':
        if (line.status === 'success') return { events: [successResult(line)], totals: afterTurn(input.previousTotals) };
        failed = line.error ?? {};
        return { totals: afterTurn(input.previousTotals) };
      default:
        return { events: [raw(line)] };
    }
  }

  return {
    args: [
      `--prompt=${input.prompt}`,
      '--output-format',
      'stream-json',
      '--skip-trust',
      ...(input.model ? ['-m', input.model] : []),
      ...(input.permissionMode && input.permissionMode !== 'default' ? ['--approval-mode', input.permissionMode] : []),
      ...(input.providerSessionId ? ['--resume', input.providerSessionId] : input.continueLatest ? ['--resume', 'latest'] : []),
    ],
    ...SIGNALLED_ONE_SHOT,
    onLine,
    onExit(exit, sawTerminal) {
      return sawTerminal ? [] : [exitError(exit, failed)];
    },
  };
}

function successResult(line: GeminiLine): ProviderEvent {
  const stats = line.stats;
  const usage =
    typeof stats?.input_tokens === 'number' && typeof stats.output_tokens === 'number'
      ? {
          input_tokens: stats.input_tokens,
          output_tokens: stats.output_tokens,
          // input_tokens includes the cached part here (stats.input = input_tokens − cached).
          cache_read_input_tokens: stats.cached ?? 0,
          total_tokens: stats.total_tokens ?? stats.input_tokens + stats.output_tokens,
        }
      : null;
  return completedResult({
    stopReason: null,
    usage,
    costUsd: null,
    durationMs: stats?.duration_ms ?? null,
    extra: { tool_calls: stats?.tool_calls ?? null },
  });
}

/**
 * An API error ends 0.61 with the HTTP status as its exit code, truncated to 8 bits (401 → 145,
 * 429 → 173, 500 → 244, 529 → 17; observed in test/agents/gemini-cli.test.ts). Only an error result
 * before the exit makes such a code a status.
 */
function httpStatusOfExit(code: number | null): number | undefined {
  if (code === null) return undefined;
  for (const status of [code + 256, code + 512]) if (status >= 400 && status <= 599) return status;
  return undefined;
}

function exitError(exit: ProcessExit, failed: GeminiLine['error'] | null): ProviderEvent {
  if (exit.code === 0 && !failed) {
    return errorEvent('user_cancelled', 'gemini stopped without a result (its process group was signalled)');
  }
  const known = exit.code === null ? undefined : EXIT_CODES[exit.code];
  const detail = failed?.message ?? exit.stderr.trim();
  const extra = { exit_code: exit.code, ...(failed?.type && { error_type: failed.type }) };
  const status = failed && !known ? httpStatusOfExit(exit.code) : undefined;
  if (status !== undefined) {
    const { kind, retryable } = httpStatusError(status);
    return errorEvent(kind, `gemini: the model API answered HTTP ${status}: ${detail}`, { retryable, extra: { ...extra, api_error_status: status } });
  }
  if (exit.code === 1 && failed?.message?.includes('fetch failed')) {
    // The model endpoint could not be reached at all (no HTTP answer).
    return errorEvent('connection_failed', `gemini could not reach the model API: ${detail}`, { extra });
  }
  if (!known) return errorEvent('transport_error', exitMessage('gemini', exit));
  const message = `gemini exited with code ${exit.code} (${known.what})${detail ? `: ${detail}` : ''}`;
  return errorEvent(known.kind, message, { domain: known.domain, extra });
}
