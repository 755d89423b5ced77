import { randomUUID } from 'node:crypto';
import { AsmError, type ErrorKind } from '../errors.js';
import type { EventPayload, ProviderEvent, Usage } from '../schemas/events.js';
import type {
  ApprovalRequest,
  ProcessExit,
  ProviderDefinition,
  ProviderLineOutput,
  ProviderProcess,
  ProviderRunInput,
} from './types.js';

/**
 * `claude`: Claude Code in bidirectional stream-json mode (reference/cli-formats.md §2), the only
 * headless mode with approvals and clean interrupts:
 *
 *   claude -p --input-format stream-json --output-format stream-json --verbose --permission-prompt-tool stdio
 *          [--model M] [--permission-mode M] (--session-id <new uuid> | --resume <provider session id>)
 *
 * On start we write an `initialize` control_request and the user turn to stdin. stdin stays open as
 * the control channel (approvals, interrupt) until the turn's result, then it is closed so the CLI exits.
 *
 * stdout line                                   → ASM events
 * ----------------------------------------------------------------------------------------------
 * system/init                                   → none; its session_id is captured
 * system/session_state_changed, system/status   → none (protocol plumbing)
 * control_response success, keep_alive          → none (answers to our requests, liveness)
 * assistant block: text | thinking | tool_use   → assistant_message | thinking | tool_use
 * user block: tool_result | text (or a string)  → tool_result | user_message
 * stream_event content_block_delta text_delta   → assistant_delta
 * control_request can_use_tool                  → an approval (the backend emits approval_requested)
 * control_request, any other subtype            → raw, and answered with a control_response error
 * result, is_error false                        → cost_update, result; stdin closed
 * result, is_error true (whatever the subtype)  → cost_update, error (kind from api_error_status, or
 *                                                 connection_failed from api_error); stdin closed
 * any other type, subtype or content block      → raw
 * a line that is not JSON                       → error parse_error (ends the run)
 *
 * The process exits without a result line       → error transport_error, the stderr tail appended
 * ----------------------------------------------------------------------------------------------
 * killed by a signal                            → "claude was stopped by SIGTERM before the turn ended"
 * exit 130 / 143 (SIGINT / SIGTERM)             → "claude exited with code 143 (stopped by a signal) …"
 * exit N ≠ 0                                    → "claude exited with code N"
 * exit 0                                        → "claude exited without a result"
 */

const BASE_ARGS = [
  '-p',
  '--input-format',
  'stream-json',
  '--output-format',
  'stream-json',
  '--verbose',
  '--permission-prompt-tool',
  'stdio',
];

/** Our own control_request ids only need to be unique within the process. */
const INITIALIZE_REQUEST_ID = 'init_1';

/** One stdout line, as far as we read it (cli-formats.md §2.2, §2.4, §2.7). */
interface ClaudeLine {
  type?: string;
  subtype?: string;
  session_id?: string;
  message?: { model?: string; content?: string | ContentBlock[] };
  event?: { type?: string; delta?: { type?: string; text?: string } };
  request_id?: string;
  request?: { subtype?: string; tool_name?: string; input?: unknown; permission_suggestions?: PermissionUpdate[] };
  response?: { subtype?: string };
  is_error?: boolean;
  result?: string;
  errors?: string[];
  stop_reason?: string | null;
  terminal_reason?: string;
  api_error_status?: number;
  /** The CLI's own classification of an API failure, e.g. "connection_failed" (no HTTP status then). */
  api_error?: string;
  usage?: { input_tokens?: number; output_tokens?: number; cache_read_input_tokens?: number; cache_creation_input_tokens?: number };
  total_cost_usd?: number;
  duration_ms?: number;
  num_turns?: number;
  permission_denials?: unknown[];
}

interface ContentBlock {
  type?: string;
  text?: string;
  thinking?: string;
  id?: string;
  name?: string;
  input?: unknown;
  tool_use_id?: string;
  content?: unknown;
  is_error?: boolean;
}

/** The CLI's suggested permission changes ("always allow"); passed back as they are. */
type PermissionUpdate = Record<string, unknown>;

/** What we need to answer a can_use_tool request (ApprovalRequest.native). */
interface ToolPermissionRequest {
  request_id: string;
  input: unknown;
  permission_suggestions: PermissionUpdate[];
}

function createClaudeProcess(input: ProviderRunInput): ProviderProcess {
  // A fresh conversation gets its id from us (--session-id), so it is known before the CLI prints init.
  const sessionId = input.providerSessionId ?? randomUUID();
  let deltaIndex = 0;
  let interruptCount = 0;

  function onLine(text: string): ProviderLineOutput {
    if (text.trim() === '') return {};
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      const error = new AsmError('parse_error', `claude printed a line that is not JSON: ${text.slice(0, 200)}`);
      return { events: [{ kind: 'error', payload: error.toBody() }] };
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { events: [raw(parsed)] };
    const line = parsed as ClaudeLine;

    switch (line.type) {
      case 'system':
        if (line.subtype === 'init') return { providerSessionId: line.session_id };
        if (line.subtype === 'session_state_changed' || line.subtype === 'status') return {};
        return { events: [raw(line)] };
      case 'assistant':
        return { events: blocks(line).map((block) => assistantEvent(block, line.message?.model ?? null)) };
      case 'user':
        return { events: userEvents(line) };
      case 'stream_event':
        if (line.event?.type === 'content_block_delta' && line.event.delta?.type === 'text_delta') {
          return { events: [{ kind: 'assistant_delta', payload: { content: line.event.delta.text ?? '', index: deltaIndex++ } }] };
        }
        return { events: [raw(line)] };
      case 'control_request':
        return controlRequest(line);
      case 'control_response':
        return line.response?.subtype === 'success' ? {} : { events: [raw(line)] };
      case 'keep_alive':
        return {};
      case 'result':
        return { events: resultEvents(line), endInput: true };
      default:
        return { events: [raw(line)] };
    }
  }

  return {
    args: [
      ...BASE_ARGS,
      ...(input.model ? ['--model', input.model] : []),
      // 'default' is the CLI's normal mode, but its --permission-mode flag does not accept that name.
      ...(input.permissionMode && input.permissionMode !== 'default' ? ['--permission-mode', input.permissionMode] : []),
      ...(input.providerSessionId ? ['--resume', sessionId] : ['--session-id', sessionId]),
    ],
    stdin: 'control',
    providerSessionId: sessionId,
    start() {
      return {
        write: [
          JSON.stringify({ type: 'control_request', request_id: INITIALIZE_REQUEST_ID, request: { subtype: 'initialize' } }),
          JSON.stringify({
            type: 'user',
            message: { role: 'user', content: [{ type: 'text', text: input.prompt }] },
            parent_tool_use_id: null,
            session_id: '',
          }),
        ],
      };
    },
    onLine,
    decide(approval, decision, reason) {
      const request = approval.native as ToolPermissionRequest;
      const answer =
        decision === 'deny'
          ? { behavior: 'deny', message: reason ?? 'Denied by the user', interrupt: false }
          : {
              behavior: 'allow',
              // Always sent: the CLI's MCP permission path requires it (cli-formats.md §2.7).
              updatedInput: request.input,
              // "Allow for this session": the CLI's own suggestions, kept out of its settings files.
              ...(decision === 'allow_for_session' && {
                updatedPermissions: request.permission_suggestions.map((update) => ({ ...update, destination: 'session' })),
              }),
            };
      return { write: [controlResponse(request.request_id, { subtype: 'success', response: answer })] };
    },
    interrupt() {
      interruptCount += 1;
      return {
        write: [
          JSON.stringify({ type: 'control_request', request_id: `int_${interruptCount}`, request: { subtype: 'interrupt' } }),
        ],
      };
    },
    onExit(exit, sawTerminal) {
      if (sawTerminal) return [];
      return [{ kind: 'error', payload: new AsmError('transport_error', exitMessage(exit)).toBody() }];
    },
  };
}

function blocks(line: ClaudeLine): ContentBlock[] {
  const content = line.message?.content;
  return Array.isArray(content) ? content : [];
}

function assistantEvent(block: ContentBlock, model: string | null): ProviderEvent {
  switch (block.type) {
    case 'text':
      return { kind: 'assistant_message', payload: { content: block.text ?? '', model } };
    case 'thinking':
      return { kind: 'thinking', payload: { content: block.thinking ?? '' } };
    case 'tool_use':
      return { kind: 'tool_use', payload: { tool_name: block.name ?? '', tool_call_id: block.id ?? '', input: block.input } };
    default:
      return raw(block);
  }
}

function userEvents(line: ClaudeLine): ProviderEvent[] {
  const content = line.message?.content;
  if (typeof content === 'string') return [{ kind: 'user_message', payload: { content } }];
  return blocks(line).map((block): ProviderEvent => {
    if (block.type === 'tool_result') {
      return {
        kind: 'tool_result',
        payload: { tool_call_id: block.tool_use_id ?? '', content: block.content, is_error: block.is_error === true },
      };
    }
    if (block.type === 'text') return { kind: 'user_message', payload: { content: block.text ?? '' } };
    return raw(block);
  });
}

function controlRequest(line: ClaudeLine): ProviderLineOutput {
  const request = line.request ?? {};
  if (request.subtype === 'can_use_tool' && line.request_id) {
    const native: ToolPermissionRequest = {
      request_id: line.request_id,
      input: request.input,
      permission_suggestions: request.permission_suggestions ?? [],
    };
    const approval: ApprovalRequest = { subject: request.tool_name ?? '', toolInput: request.input, native };
    return { approvals: [approval] };
  }
  // We register no hooks or SDK MCP servers, so nothing else should be asked; if it is, the CLI must
  // not wait forever for an answer.
  return {
    events: [raw(line)],
    write: [controlResponse(line.request_id, { subtype: 'error', error: `ASM does not handle ${request.subtype} requests` })],
  };
}

function controlResponse(requestId: string | undefined, body: Record<string, unknown>): string {
  return JSON.stringify({ type: 'control_response', response: { ...body, request_id: requestId } });
}

function resultEvents(line: ClaudeLine): ProviderEvent[] {
  const usage = normalizeUsage(line.usage);
  const cost = typeof line.total_cost_usd === 'number' ? line.total_cost_usd : null;
  const events: ProviderEvent[] = [];
  // Tokens are spent whether or not the turn succeeded, so the cost is reported either way.
  if (usage && cost !== null) {
    events.push({
      kind: 'cost_update',
      payload: {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        total_tokens: usage.total_tokens,
        cost_usd: cost,
      },
    });
  }
  // API errors come back as subtype "success" with is_error true: only is_error tells (§2.4).
  if (line.is_error === true) {
    events.push(resultError(line));
    return events;
  }
  const result: EventPayload<'result'> & { num_turns: number | null; permission_denials: unknown[] } = {
    status: 'completed',
    stop_reason: line.stop_reason ?? null,
    usage,
    cost_usd: cost,
    duration_ms: line.duration_ms ?? null,
    num_turns: line.num_turns ?? null,
    permission_denials: line.permission_denials ?? [],
  };
  events.push({ kind: 'result', payload: result });
  return events;
}

function resultError(line: ClaudeLine): ProviderEvent {
  const status = line.api_error_status;
  let kind: ErrorKind = 'provider_error';
  // A model endpoint that cannot be reached has no status; 2.1.329 says so in api_error.
  if (line.api_error === 'connection_failed') kind = 'connection_failed';
  else if (status === 401 || status === 403) kind = 'auth_error';
  else if (status === 429) kind = 'rate_limit';
  const retryable = typeof status === 'number' && status >= 500 ? true : undefined;
  // After an interrupt or a limit there is no `result` text, only `errors` (claude-code#94741).
  const message = line.result || line.errors?.join('; ') || `claude turn failed (${line.subtype}, ${line.terminal_reason})`;
  const error: EventPayload<'error'> & { terminal_reason: string | null; api_error_status: number | null } = {
    ...new AsmError(kind, message, { retryable }).toBody(),
    terminal_reason: line.terminal_reason ?? null,
    api_error_status: status ?? null,
  };
  return { kind: 'error', payload: error };
}

/**
 * The turn's usage. total_tokens counts every token the model processed: Anthropic's input_tokens
 * excludes the cached part, which is reported in the two cache fields.
 */
function normalizeUsage(usage: ClaudeLine['usage']): Usage | null {
  if (typeof usage?.input_tokens !== 'number' || typeof usage.output_tokens !== 'number') return null;
  const cacheRead = usage.cache_read_input_tokens ?? 0;
  const cacheCreation = usage.cache_creation_input_tokens ?? 0;
  return {
    input_tokens: usage.input_tokens,
    output_tokens: usage.output_tokens,
    cache_read_input_tokens: cacheRead,
    cache_creation_input_tokens: cacheCreation,
    total_tokens: usage.input_tokens + usage.output_tokens + cacheRead + cacheCreation,
  };
}

function exitMessage({ code, signal, stderr }: ProcessExit): string {
  let what: string;
  if (signal) what = `claude was stopped by ${signal} before the turn ended`;
  else if (code === 130 || code === 143) what = `claude exited with code ${code} (stopped by a signal) before the turn ended`;
  else if (code !== 0) what = `claude exited with code ${code}`;
  else what = 'claude exited without a result';
  const tail = stderr.trim();
  return tail ? `${what}: ${tail}` : what;
}

function raw(content: unknown): ProviderEvent {
  return { kind: 'raw', payload: { stream: 'stdout', content } };
}

const claude: ProviderDefinition = {
  name: 'claude',
  displayName: 'Claude Code',
  defaultBinary: 'claude',
  // Auth, endpoint and model overrides (cli-formats.md §2.10). Cloud credentials for Bedrock or
  // Vertex (AWS_*, Google ADC) are the operator's choice: pass them with ASM_PASS_ENV.
  env: [
    'ANTHROPIC_API_KEY',
    'CLAUDE_CODE_OAUTH_TOKEN',
    'ANTHROPIC_AUTH_TOKEN',
    'ANTHROPIC_BASE_URL',
    'ANTHROPIC_CUSTOM_HEADERS',
    'ANTHROPIC_MODEL',
    'ANTHROPIC_DEFAULT_OPUS_MODEL',
    'ANTHROPIC_DEFAULT_SONNET_MODEL',
    'ANTHROPIC_DEFAULT_HAIKU_MODEL',
    'CLAUDE_CODE_USE_BEDROCK',
    'CLAUDE_CODE_USE_VERTEX',
    'ANTHROPIC_VERTEX_PROJECT_ID',
    'CLAUDE_CODE_USE_FOUNDRY',
    'CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC',
    'DISABLE_AUTOUPDATER',
  ],
  defaultQueue: 'prompt',
  capabilities: ['approvals', 'interrupt', 'continuation', 'usage', 'cost'],
  permissionModes: ['default', 'acceptEdits', 'bypassPermissions', 'plan', 'dontAsk', 'auto'],
  versionArgs: ['--version'],
  create: createClaudeProcess,
};

export default claude;
