import { randomUUID } from 'node:crypto';
import type { ProviderEvent } from '../schemas/events.js';
import {
  anthropicUsage,
  assistantBlockEvent,
  completedResult,
  costUpdate,
  errorEvent,
  exitMessage,
  httpStatusError,
  parseLine,
  perRun,
  raw,
  totalsUsage,
  usageTotals,
  userBlockEvent,
  type AnthropicUsage,
  type ContentBlock,
} from './common.js';
import type {
  ApprovalDecision,
  ApprovalRequest,
  ProviderDefinition,
  ProviderLineOutput,
  ProviderProcess,
  ProviderRunInput,
  ProviderTotals,
  SdkRunInput,
  SdkTurn,
} from './types.js';

/**
 * `claude`: Claude Code in bidirectional stream-json mode (docs/protocols.md, "## Claude Code"), the
 * only headless mode with approvals and clean interrupts:
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
 * system/permission_denied                      → raw; also listed in the result's permission_denials
 * control_response success, keep_alive          → none (answers to our requests, liveness)
 * assistant block: text | thinking | tool_use   → assistant_message | thinking | tool_use
 * assistant, synthetic API error message        → raw; its `error` hint refines the error kind
 * user block: tool_result | text (or a string)  → tool_result | user_message
 * stream_event content_block_delta text_delta   → assistant_delta
 * control_request can_use_tool                  → an approval (the backend emits approval_requested)
 * control_request, any other subtype            → raw, and answered with a control_response error
 * result, is_error false                        → cost_update, result; stdin closed
 * result, is_error true (whatever the subtype)  → cost_update, error (kind below); stdin closed
 * any other type, subtype or content block      → raw
 * a line that is not JSON                       → error parse_error (ends the run)
 *
 * An error result's kind: API errors arrive as subtype "success" with is_error true, so only is_error
 * tells. api_error_status 401/403 → auth_error, 429 → rate_limit, 5xx → provider_error (retryable),
 * other → provider_error; without a status, the synthetic assistant line's `error`
 * (authentication_failed, rate_limit, overloaded, …) decides. terminal_reason aborted_tools /
 * aborted_streaming (an interrupt; that result has no `result` key) → user_cancelled;
 * error_max_turns / error_max_budget_usd → provider_error in the guardrail domain.
 *
 * Usage and cost: total_cost_usd and modelUsage are cumulative for the conversation, also across
 * --resume, so they are kept as the provider's totals and the run reports its difference to the totals
 * of the previous run (ProviderRunInput.previousTotals). `usage` alone would miss subagents' tokens.
 *
 * The process exits without a result line       → error transport_error, the stderr tail appended
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

/** One stdout line, as far as we read it (docs/protocols.md, "## Claude Code"). */
interface ClaudeLine {
  type?: string;
  subtype?: string;
  session_id?: string;
  /** An Anthropic message on assistant and user lines; the denial text on system/permission_denied. */
  message?: { model?: string; content?: string | ContentBlock[] } | string;
  /** On a synthetic assistant line that reports an API error (model "<synthetic>"). */
  is_api_error_message?: boolean;
  error?: string;
  tool_name?: string;
  tool_use_id?: string;
  event?: { type?: string; delta?: { type?: string; text?: string } };
  request_id?: string;
  request?: { subtype?: string; tool_name?: string; input?: unknown; permission_suggestions?: PermissionUpdate[] };
  response?: { subtype?: string };
  is_error?: boolean;
  result?: string;
  errors?: string[];
  stop_reason?: string | null;
  terminal_reason?: string;
  api_error_status?: number | null;
  /** The CLI's own classification of an API failure, e.g. "connection_failed" (no HTTP status then). */
  api_error?: string;
  usage?: AnthropicUsage;
  modelUsage?: Record<string, ModelUsage>;
  total_cost_usd?: number;
  duration_ms?: number;
  num_turns?: number;
  permission_denials?: PermissionDenial[];
}

/** result.modelUsage[model]: cumulative for the conversation. */
interface ModelUsage {
  inputTokens?: number;
  outputTokens?: number;
  cacheReadInputTokens?: number;
  cacheCreationInputTokens?: number;
}

/** An entry of result.permission_denials; `message` added from the matching system/permission_denied line. */
interface PermissionDenial {
  tool_name?: string;
  tool_use_id?: string;
  tool_input?: unknown;
  message?: string;
}


/** The CLI's suggested permission changes ("always allow"); passed back as they are. */
type PermissionUpdate = Record<string, unknown>;

/** What we need to answer a can_use_tool request (ApprovalRequest.native). */
interface ToolPermissionRequest {
  request_id: string;
  input: unknown;
  permission_suggestions: PermissionUpdate[];
}

/**
 * The stream-json message → ASM mapping of one run, shared by both lanes: the core lane feeds it the
 * CLI's stdout lines, the SDK lane the messages query() yields (the same objects, without the
 * control_* and keep_alive lines, which the SDK consumes itself).
 */
function createClaudeMapper(input: ProviderRunInput): (line: ClaudeLine) => ProviderLineOutput {
  let deltaIndex = 0;
  /** The `error` of the last synthetic API-error assistant line, for the error result's kind. */
  let apiErrorHint: string | null = null;
  const denials: PermissionDenial[] = [];

  return (line) => {
    switch (line.type) {
      case 'system':
        if (line.subtype === 'init') return { providerSessionId: line.session_id };
        if (line.subtype === 'session_state_changed' || line.subtype === 'status') return {};
        if (line.subtype === 'permission_denied') {
          const message = typeof line.message === 'string' ? line.message : undefined;
          denials.push({ tool_name: line.tool_name, tool_use_id: line.tool_use_id, message });
        }
        return { events: [raw(line)] };
      case 'assistant':
        if (line.is_api_error_message) {
          apiErrorHint = line.error ?? null;
          return { events: [raw(line)] };
        }
        return { events: blocks(line).map((block) => assistantBlockEvent(block, messageOf(line)?.model ?? null)) };
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
        return resultOutput(line, { previousTotals: input.previousTotals, apiErrorHint, denials });
      default:
        return { events: [raw(line)] };
    }
  };
}

/** `--permission-mode`: 'default' is the CLI's normal mode, but its flag does not accept that name. */
function explicitPermissionMode(input: ProviderRunInput): string | undefined {
  return input.permissionMode && input.permissionMode !== 'default' ? input.permissionMode : undefined;
}

function createClaudeProcess(input: ProviderRunInput): ProviderProcess {
  // A fresh conversation gets its id from us (--session-id), so it is known before the CLI prints init.
  const sessionId = input.providerSessionId ?? randomUUID();
  const map = createClaudeMapper(input);
  const permissionMode = explicitPermissionMode(input);
  let interruptCount = 0;

  return {
    args: [
      ...BASE_ARGS,
      ...(input.model ? ['--model', input.model] : []),
      ...(permissionMode ? ['--permission-mode', permissionMode] : []),
      ...(input.providerSessionId ? ['--resume', sessionId] : ['--session-id', sessionId]),
    ],
    stdin: 'control',
    providerSessionId: sessionId,
    start() {
      return {
        write: [
          JSON.stringify({ type: 'control_request', request_id: INITIALIZE_REQUEST_ID, request: { subtype: 'initialize' } }),
          JSON.stringify(userTurn(input.prompt)),
        ],
      };
    },
    onLine(text) {
      const parsed = parseLine<ClaudeLine>('claude', text);
      return 'line' in parsed ? map(parsed.line) : parsed;
    },
    decide(approval, decision, reason) {
      const request = approval.native as ToolPermissionRequest;
      const answer = permissionAnswer(request.input, request.permission_suggestions, decision, reason);
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
      return sawTerminal ? [] : [errorEvent('transport_error', exitMessage('claude', exit))];
    },
  };
}

function userTurn(prompt: string): Record<string, unknown> {
  return { type: 'user', message: { role: 'user', content: [{ type: 'text', text: prompt }] }, parent_tool_use_id: null, session_id: '' };
}

/** The answer to a can_use_tool request (a PermissionResult), the same on both lanes. */
function permissionAnswer(input: unknown, suggestions: PermissionUpdate[], decision: ApprovalDecision, reason: string | null): Record<string, unknown> {
  if (decision === 'deny') return { behavior: 'deny', message: reason ?? 'Denied by the user', interrupt: false };
  return {
    behavior: 'allow',
    // Always sent: the CLI's MCP permission path requires it.
    updatedInput: input,
    // "Allow for this session": the CLI's own suggestions, kept out of its settings files.
    ...(decision === 'allow_for_session' && {
      updatedPermissions: suggestions.map((update) => ({ ...update, destination: 'session' })),
    }),
  };
}

function messageOf(line: ClaudeLine): Exclude<ClaudeLine['message'], string> {
  return typeof line.message === 'string' ? undefined : line.message;
}

function blocks(line: ClaudeLine): ContentBlock[] {
  const content = messageOf(line)?.content;
  return Array.isArray(content) ? content : [];
}


function userEvents(line: ClaudeLine): ProviderEvent[] {
  const content = messageOf(line)?.content;
  if (typeof content === 'string') return [{ kind: 'user_message', payload: { content } }];
  return blocks(line).map(userBlockEvent);
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

interface ResultContext {
  previousTotals: ProviderTotals | undefined;
  apiErrorHint: string | null;
  denials: PermissionDenial[];
}

function resultOutput(line: ClaudeLine, context: ResultContext): ProviderLineOutput {
  const totals = cumulativeTotals(line);
  const run = totals ? perRun(totals, context.previousTotals) : null;
  const usage = run ? totalsUsage(run) : null;
  const cost = run?.cost_usd ?? null;
  // Tokens are spent whether or not the turn succeeded, so the cost is reported either way.
  const events = costUpdate(usage, cost);
  // API errors come back as subtype "success" with is_error true: only is_error tells.
  if (line.is_error === true) {
    events.push(resultError(line, context.apiErrorHint));
  } else {
    events.push(
      completedResult({
        stopReason: line.stop_reason ?? null,
        usage,
        costUsd: cost,
        durationMs: line.duration_ms ?? null,
        extra: { num_turns: line.num_turns ?? null, permission_denials: withMessages(line.permission_denials ?? [], context.denials) },
      }),
    );
  }
  return { events, endInput: true, ...(totals && { totals }) };
}

/**
 * The conversation's cumulative totals: modelUsage summed over models (it counts subagents too), else
 * the turn's `usage`; total_cost_usd as the cost.
 */
function cumulativeTotals(line: ClaudeLine): ProviderTotals | null {
  const models = Object.values(line.modelUsage ?? {});
  const usage = anthropicUsage(
    models.length > 0
      ? {
          input_tokens: sum(models, (m) => m.inputTokens),
          output_tokens: sum(models, (m) => m.outputTokens),
          cache_read_input_tokens: sum(models, (m) => m.cacheReadInputTokens),
          cache_creation_input_tokens: sum(models, (m) => m.cacheCreationInputTokens),
        }
      : line.usage,
  );
  return usage && usageTotals(usage, typeof line.total_cost_usd === 'number' ? line.total_cost_usd : null);
}

function sum<T>(items: T[], pick: (item: T) => number | undefined): number {
  return items.reduce((total, item) => total + (pick(item) ?? 0), 0);
}

/** The result's denials, each with the message of its system/permission_denied line; denials only seen there are added. */
function withMessages(listed: PermissionDenial[], seen: PermissionDenial[]): PermissionDenial[] {
  const messages = new Map(seen.map((denial) => [denial.tool_use_id, denial.message]));
  const merged = listed.map((denial) => {
    const message = messages.get(denial.tool_use_id);
    return message === undefined ? denial : { ...denial, message };
  });
  const listedIds = new Set(listed.map((denial) => denial.tool_use_id));
  return [...merged, ...seen.filter((denial) => !listedIds.has(denial.tool_use_id))];
}

/** The synthetic assistant line's `error` values, for API errors that carry no status. */
const API_ERROR_HINTS: Record<string, ReturnType<typeof httpStatusError>> = {
  authentication_failed: { kind: 'auth_error' },
  billing_error: { kind: 'auth_error' },
  rate_limit: { kind: 'rate_limit' },
  overloaded: { kind: 'provider_error', retryable: true },
  server_error: { kind: 'provider_error', retryable: true },
  // A model endpoint that cannot be reached: no HTTP status at all (2.1.329).
  connection_failed: { kind: 'connection_failed' },
};

function resultError(line: ClaudeLine, apiErrorHint: string | null): ProviderEvent {
  // After an interrupt or a limit there is no `result` text, only `errors` (claude-code#94741).
  const message = line.result || line.errors?.join('; ') || `claude turn failed (${line.subtype}, ${line.terminal_reason})`;
  const extra = { terminal_reason: line.terminal_reason ?? null, api_error_status: line.api_error_status ?? null };
  if (line.terminal_reason === 'aborted_tools' || line.terminal_reason === 'aborted_streaming') {
    return errorEvent('user_cancelled', message, { extra });
  }
  if (line.subtype === 'error_max_turns' || line.subtype === 'error_max_budget_usd') {
    return errorEvent('provider_error', message, { domain: 'guardrail', extra });
  }
  const hint = line.api_error ?? apiErrorHint;
  const { kind, retryable } =
    line.api_error_status == null && hint != null && API_ERROR_HINTS[hint] ? API_ERROR_HINTS[hint] : httpStatusError(line.api_error_status ?? undefined);
  return errorEvent(kind, message, { retryable, extra });
}

// ---------------------------------------------------------------- SDK lane (@anthropic-ai/claude-agent-sdk)

/**
 * The Agent SDK's query() (docs/protocols.md, "## SDK lane") runs the same CLI in the same
 * bidirectional mode; what differs is who holds the control channel:
 *
 *   query({prompt: <one user message, then held open>, options})
 *     pathToClaudeCodeExecutable  the configured CLI (SdkRunInput.binary)
 *     env                         the allowlisted environment (the SDK replaces, never merges, it)
 *     cwd, model, permissionMode  as on the core lane ('default' left to the CLI)
 *     sessionId | resume          a fresh id up front, or the conversation to continue
 *     canUseTool                  approvals: each call is reported as an approval; decide() settles it
 *                                 with the same PermissionResult the core lane writes
 *     abortController             stop(): the SDK kills the CLI
 *   interrupt()                   query.interrupt(), the interrupt control request
 *
 * The prompt stream stays open until the turn's result (mapped with endInput), because the SDK
 * closes the CLI's stdin, the control channel, when it ends. Messages go through the core lane's
 * mapper; an exception from the SDK (the CLI died, an abort) ends the run as transport_error, as the
 * core lane's exit without a result does.
 */

/** The part of the SDK's module we use (typed here: the package is optional, its types may be absent). */
interface ClaudeSdkModule {
  query(params: { prompt: AsyncIterable<unknown>; options: Record<string, unknown> }): AsyncIterable<ClaudeLine> & {
    interrupt(): Promise<unknown>;
  };
}

/** ApprovalRequest.native on the SDK lane: the pending canUseTool call. */
interface PendingToolPermission {
  settle: (result: Record<string, unknown>) => void;
  input: unknown;
  suggestions: PermissionUpdate[];
}

function runClaudeSdk(module: unknown, input: SdkRunInput, report: (output: ProviderLineOutput) => void): SdkTurn {
  const sessionId = input.providerSessionId ?? randomUUID();
  const map = createClaudeMapper(input);
  const permissionMode = explicitPermissionMode(input);
  const abort = new AbortController();
  let endPrompt!: () => void;
  const promptEnded = new Promise<void>((resolve) => (endPrompt = resolve));
  async function* prompt(): AsyncGenerator<unknown> {
    yield userTurn(input.prompt);
    await promptEnded;
  }

  const query = (module as ClaudeSdkModule).query({
    prompt: prompt(),
    options: {
      pathToClaudeCodeExecutable: input.binary,
      env: input.env,
      cwd: input.cwd,
      ...(input.model && { model: input.model }),
      ...(permissionMode && { permissionMode }),
      ...(permissionMode === 'bypassPermissions' && { allowDangerouslySkipPermissions: true }),
      ...(input.providerSessionId ? { resume: sessionId } : { sessionId }),
      abortController: abort,
      canUseTool: (toolName: string, toolInput: unknown, options: { suggestions?: PermissionUpdate[] }) =>
        new Promise((settle) => {
          const native: PendingToolPermission = { settle, input: toolInput, suggestions: options.suggestions ?? [] };
          report({ approvals: [{ subject: toolName, toolInput, native }] });
        }),
      stderr: (chunk: string) => {
        const lines = chunk.split('\n').filter((line) => line.trim() !== '');
        report({ events: lines.map((content) => ({ kind: 'stderr', payload: { content } })) });
      },
    },
  });

  const done = (async () => {
    try {
      for await (const message of query) report(map(message));
    } catch (err) {
      report({ events: [errorEvent('transport_error', `claude (Agent SDK): ${err instanceof Error ? err.message : String(err)}`)] });
    }
  })();

  return {
    providerSessionId: sessionId,
    done,
    decide(approval, decision, reason) {
      const pending = approval.native as PendingToolPermission;
      pending.settle(permissionAnswer(pending.input, pending.suggestions, decision, reason));
    },
    interrupt() {
      // A failed interrupt request leaves the backend's grace period to stop the CLI.
      query.interrupt().catch(() => undefined);
    },
    endInput: endPrompt,
    stop: () => abort.abort(),
  };
}

const claude: ProviderDefinition = {
  name: 'claude',
  displayName: 'Claude Code',
  defaultBinary: 'claude',
  // Auth, endpoint and model overrides. Cloud credentials for Bedrock or Vertex (AWS_*, Google ADC)
  // are the operator's choice: pass them with ASM_PASS_ENV.
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
  sdk: {
    package: '@anthropic-ai/claude-agent-sdk',
    // The Agent SDK adds session control to what the CLI lane does.
    capabilities: ['approvals', 'interrupt', 'continuation', 'usage', 'cost', 'session_history', 'session_resume', 'session_pause', 'session_intervene'],
    run: runClaudeSdk,
  },
  versionArgs: ['--version'],
  create: createClaudeProcess,
};

export default claude;
