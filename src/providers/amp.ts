import { AsmError } from '../errors/kinds.js';
import type { ProviderEvent, Usage } from '../schemas/events.js';
import {
  anthropicUsage,
  assistantBlockEvent,
  completedResult,
  errorEvent,
  exitMessage,
  parseLine,
  raw,
  SIGNALLED_ONE_SHOT,
  userBlockEvent,
  type AnthropicUsage,
  type ContentBlock,
} from './common.js';
import { jsonServers, mcpFilePath } from './mcp.js';
import type { ProviderDefinition, ProviderLineOutput, ProviderProcess, ProviderRunInput } from './types.js';

/**
 * `amp`: Sourcegraph Amp in execute mode with Claude-compatible stream JSON (docs/protocols.md,
 * "## Amp"):
 *
 *   amp --execute=PROMPT --stream-json [--dangerously-allow-all]
 *   amp threads continue <thread id> --execute=PROMPT --stream-json [--dangerously-allow-all]
 *
 * The prompt is the `--execute=` value (`-x PROMPT` in the docs), never an argument of its own: a
 * prompt that starts with "-" must not become a flag (think `--dangerously-allow-all`). stdin is closed.
 *
 * Auth: without AMP_API_KEY, `amp -x` starts an interactive login and waits on stdin forever, so a run
 * whose environment lacks it fails at once with auth_error and nothing is spawned.
 *
 * Approvals: none. A tool that needs approval makes the run fail ("The following tools require user
 * approval, which is not supported in stream JSON mode: Bash") → approval_denied. permission_mode:
 *   default               → (no flag)                the user's amp.permissions rules; anything that asks fails the run
 *   dangerously-allow-all → --dangerously-allow-all  no confirmations at all
 *
 * Interrupt: SIGINT to the process group; amp answers with an error result "User cancelled …".
 *
 * stdout line                          → ASM events
 * ---------------------------------------------------------------------------------------------
 * system/init                          → none; its session_id (T-…) is the thread to continue
 * user: text | tool_result             → user_message | tool_result (content is a string)
 * assistant: text | thinking | tool_use → assistant_message | thinking | tool_use (one line holds a
 *                                        whole model message; its usage is added to the run's)
 * result success                       → result with the summed usage (amp reports no cost)
 * result error_during_execution        → error: "User cancelled" → user_cancelled; tools requiring
 *                                        approval → approval_denied; anything else → provider_error
 * anything else                        → raw; a line that is not JSON → parse_error
 *
 * Exit without a result: "Couldn't connect to the Amp server" on stderr → connection_failed, else
 * transport_error with the stderr tail.
 */

interface AmpLine {
  type?: string;
  subtype?: string;
  session_id?: string;
  message?: { content?: ContentBlock[]; stop_reason?: string | null; usage?: AnthropicUsage };
  duration_ms?: number;
  num_turns?: number;
  is_error?: boolean;
  error?: string;
}

function createAmpProcess(input: ProviderRunInput): ProviderProcess {
  if (!input.env.AMP_API_KEY) {
    throw new AsmError(
      'auth_error',
      'AMP_API_KEY is not set in the environment given to amp; without it amp waits forever on an interactive login',
    );
  }
  /** The run's usage: amp reports it only per assistant message, so it is summed here. */
  let usage: Usage | null = null;
  let stopReason: string | null = null;

  function onLine(text: string): ProviderLineOutput {
    const parsed = parseLine<AmpLine>('amp', text);
    if (!('line' in parsed)) return parsed;
    const { line } = parsed;
    switch (line.type) {
      case 'system':
        return line.subtype === 'init' ? { providerSessionId: line.session_id } : { events: [raw(line)] };
      case 'assistant':
        usage = addUsage(usage, anthropicUsage(line.message?.usage));
        stopReason = line.message?.stop_reason ?? stopReason;
        return { events: (line.message?.content ?? []).map((block) => assistantBlockEvent(block, null)) };
      case 'user':
        return { events: (line.message?.content ?? []).map(userBlockEvent) };
      case 'result':
        if (line.subtype === 'success' && line.is_error !== true) {
          return {
            events: [
              completedResult({
                stopReason,
                usage,
                costUsd: null,
                durationMs: line.duration_ms ?? null,
                extra: { num_turns: line.num_turns ?? null },
              }),
            ],
          };
        }
        return { events: [resultError(line)] };
      default:
        return { events: [raw(line)] };
    }
  }

  const mcpConfig = mcpFilePath(input, AMP_MCP_FILE);
  const run = [
    `--execute=${input.prompt}`,
    '--stream-json',
    ...(input.permissionMode === 'dangerously-allow-all' ? ['--dangerously-allow-all'] : []),
    ...(mcpConfig ? ['--mcp-config', mcpConfig] : []),
  ];
  return {
    args: input.providerSessionId ? ['threads', 'continue', input.providerSessionId, ...run] : run,
    ...SIGNALLED_ONE_SHOT,
    onLine,
    onExit(exit, sawTerminal) {
      if (sawTerminal) return [];
      if (/couldn't connect to the amp server/i.test(exit.stderr)) return [errorEvent('connection_failed', exitMessage('amp', exit))];
      return [errorEvent('transport_error', exitMessage('amp', exit))];
    },
  };
}

function addUsage(sum: Usage | null, message: Usage | null): Usage | null {
  if (!sum || !message) return sum ?? message;
  return {
    input_tokens: sum.input_tokens + message.input_tokens,
    output_tokens: sum.output_tokens + message.output_tokens,
    cache_read_input_tokens: (sum.cache_read_input_tokens ?? 0) + (message.cache_read_input_tokens ?? 0),
    cache_creation_input_tokens: (sum.cache_creation_input_tokens ?? 0) + (message.cache_creation_input_tokens ?? 0),
    total_tokens: sum.total_tokens + message.total_tokens,
  };
}

function resultError(line: AmpLine): ProviderEvent {
  const message = line.error ?? `amp run failed (${line.subtype})`;
  const extra = { num_turns: line.num_turns ?? null };
  if (/^user cancelled/i.test(message)) return errorEvent('user_cancelled', message, { extra });
  if (/require user approval/i.test(message)) return errorEvent('approval_denied', message, { extra });
  return errorEvent('provider_error', message, { extra });
}

const AMP_MCP_FILE = 'amp-mcp.json';

const amp: ProviderDefinition = {
  name: 'amp',
  displayName: 'Amp',
  defaultBinary: 'amp',
  install: 'npm install -g @sourcegraph/amp',
  env: ['AMP_API_KEY', 'AMP_URL'],
  defaultQueue: 'prompt',
  capabilities: ['interrupt', 'continuation', 'usage'],
  // amp has no mode that lets edits through but asks for the rest, nor a plan mode (docs/protocols.md, "## Amp").
  permissionModes: { default: 'default', bypass: 'dangerously-allow-all' },
  nativePermissionModes: ['default', 'dangerously-allow-all'],
  options: {},
  // `--mcp-config FILE` (docs/protocols.md, "## Amp"): its settings' `amp.mcpServers` shape.
  mcp: { files: (servers) => [{ name: AMP_MCP_FILE, content: JSON.stringify(jsonServers(servers, 'url')) }] },
  versionArgs: ['--version'],
  create: createAmpProcess,
};

export default amp;
