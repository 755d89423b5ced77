/** Gemini CLI's ACP transport: `gemini --acp`, the Agent Client Protocol over stdio, kept by warm sessions. */
import type { ProviderEvent } from '../../schemas/events.js';
import { completedResult, errorEvent, exitMessage, httpStatusError, jsonRpcLines, parseLine, raw } from '../common.js';
import type { ApprovalDecision, ApprovalRequest, ProviderActions, ProviderLineOutput, ProviderProcess, ProviderRunInput } from '../types.js';
import { afterTurn } from './turns.js';

/*
 * `gemini --acp --skip-trust [-m MODEL] [--approval-mode MODE]` (docs/protocols.md, "## Gemini CLI",
 * ACP): JSON-RPC 2.0, one object per line, "jsonrpc":"2.0" on every message. ASM's ids count from 0.
 *   → initialize {protocolVersion:1, clientCapabilities}   ← result {agentCapabilities, authMethods}
 *   → session/new {cwd, mcpServers:[]}                       ← result {sessionId}  (the provider session id)
 *   → session/prompt {sessionId, prompt:[{type:"text", text}]}
 *   ← session/update notifications; the prompt's answer {stopReason, _meta.quota.token_count} ends the
 *     turn, not the process: a warm session's next run is the next session/prompt on the same session.
 *   A process prewarmed for a new warm session (ASM_PREWARM) is sent initialize when it starts; the
 *   session's first run sends session/new then.
 * The client offers no file system and no terminal, so the CLI reads, writes and runs tools itself.
 *
 * session/update                       → ASM events
 * ---------------------------------------------------------------------------------------------
 * agent_message_chunk (text)           → assistant_delta (text only ever arrives as chunks, as headless)
 * agent_thought_chunk                  → thinking
 * user_message_chunk                   → user_message
 * tool_call                            → tool_use (tool_result too when it comes already completed or failed)
 * tool_call_update completed / failed  → tool_result (the content's text; is_error for failed)
 * available_commands_update, current_mode_update → nothing
 * anything else                        → raw
 * The prompt is echoed as user_message when it is sent (ACP does not echo it; headless runs do).
 *
 * Approvals: server→client session/request_permission {toolCall, options}, sent where the CLI's
 * policy asks (the default mode: the shell and writes). It comes in place of a tool_call update, so
 * it also gives the tool_use. Answer {outcome:{outcome:"selected", optionId}}: allow → the option of
 * kind allow_once, allow_for_session → allow_always, deny → reject_once. A rejected call gets no
 * tool_call_update (the model is told "Tool … was canceled by the user."), so the deny gives its
 * tool_result. The subject is the tool's name: the part of the call id before "__" (0.61 names calls
 * `<tool>__<model call id>`). Other server requests get a JSON-RPC error, so the turn never waits on us.
 *
 * Interrupt: session/cancel {sessionId} (a notification) → the prompt answers stopReason "cancelled"
 * and the running tool is stopped; the process and its session stay usable.
 *
 * End of a turn: stopReason end_turn → result (stop_reason end_turn, usage from _meta.quota.token_count,
 * which counts this prompt only; duration measured from the prompt to its answer; no cost, no cached
 * tokens); cancelled → user_cancelled; max_turn_requests (turn limit, loop detected) → provider_error
 * in the guardrail domain; anything else → provider_error. Every answer to the prompt counts a turn
 * of the conversation (its totals, turns.ts). An error answer carries the model API's
 * HTTP status as its code (429, 401, 500…) → the HTTP rule, except "fetch failed" (no answer at all,
 * code 500) → connection_failed; session/new's -32000 (no usable auth) → auth_error; else provider_error.
 */

interface RpcMessage {
  jsonrpc?: string;
  id?: number | string;
  method?: string;
  params?: Record<string, any>;
  result?: Record<string, any>;
  error?: { code?: number; message?: string; data?: unknown };
}

interface AcpToolCall {
  toolCallId?: string;
  title?: string;
  kind?: string;
  status?: string;
  content?: { type?: string; content?: { type?: string; text?: string } }[];
  locations?: unknown[];
}

interface PermissionOption {
  optionId: string;
  kind?: string;
}

/** ApprovalRequest.native: the CLI's request id, its options and the tool call it asks about. */
interface AcpApproval {
  id: number | string;
  options: PermissionOption[];
  toolCallId: string;
}

const OPTION_KINDS: Record<ApprovalDecision, string> = { allow: 'allow_once', allow_for_session: 'allow_always', deny: 'reject_once' };
/** gemini-cli 0.61's option ids for each kind, should an offer lack one. */
const OPTION_IDS: Record<ApprovalDecision, string> = { allow: 'proceed_once', allow_for_session: 'proceed_always', deny: 'cancel' };

const PLUMBING = new Set(['available_commands_update', 'current_mode_update']);

export function createAcpProcess(input: ProviderRunInput): ProviderProcess {
  const { message, request, answered, sentBefore } = jsonRpcLines({ jsonrpc: '2.0' });
  let sessionId: string | null = null;
  let deltaIndex = 0;
  let toolCalls = 0;
  let promptSentAt = 0;
  let prompting = false;
  let cancelWanted = false;

  const cancel = () => message({ method: 'session/cancel', params: { sessionId } });
  /** The process's first line, whether a run or a prewarm starts it. */
  const initialize = (): ProviderActions => ({
    write: [request('initialize', { protocolVersion: 1, clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false } })],
  });

  /** After initialize: the ACP session (its answer sends the prompt). */
  function newSession(): ProviderActions {
    return { write: [request('session/new', { cwd: input.cwd, mcpServers: [] })] };
  }

  /** This run's turn: the prompt, echoed as the user message a headless run prints. */
  function prompt(): ProviderActions {
    if (cancelWanted) return { events: [errorEvent('user_cancelled', 'gemini turn interrupted before it started')], endInput: true };
    prompting = true;
    promptSentAt = Date.now();
    return {
      events: [{ kind: 'user_message', payload: { content: input.prompt } }],
      write: [request('session/prompt', { sessionId, prompt: [{ type: 'text', text: input.prompt }] })],
    };
  }

  function onResponse(response: RpcMessage): ProviderLineOutput {
    const method = answered(response.id);
    if (response.error) {
      // A refused prompt may still have left the user's message in the conversation: it counts as a turn.
      const totals = method === 'session/prompt' ? { totals: afterTurn(input.previousTotals) } : {};
      return { events: [refusal(method, response.error)], endInput: true, ...totals };
    }
    const result = response.result ?? {};
    switch (method) {
      case 'initialize':
        return newSession();
      case 'session/new':
        sessionId = typeof result.sessionId === 'string' ? result.sessionId : null;
        return { providerSessionId: sessionId ?? undefined, ...prompt() };
      case 'session/prompt':
        prompting = false;
        return { events: [turnEnded(result)], endInput: true, totals: afterTurn(input.previousTotals) };
      default:
        return {};
    }
  }

  function turnEnded(result: Record<string, any>): ProviderEvent {
    switch (result.stopReason) {
      case 'end_turn': {
        const count = result._meta?.quota?.token_count ?? {};
        const usage =
          typeof count.input_tokens === 'number' && typeof count.output_tokens === 'number'
            ? { input_tokens: count.input_tokens, output_tokens: count.output_tokens, total_tokens: count.input_tokens + count.output_tokens }
            : null;
        return completedResult({ stopReason: 'end_turn', usage, costUsd: null, durationMs: Date.now() - promptSentAt, extra: { tool_calls: toolCalls } });
      }
      case 'cancelled':
        return errorEvent('user_cancelled', 'gemini turn interrupted');
      case 'max_turn_requests':
        return errorEvent('provider_error', 'gemini stopped the turn: the session turn limit, or a loop detected', { domain: 'guardrail', extra: { stop_reason: result.stopReason } });
      default:
        return errorEvent('provider_error', `gemini stopped the turn: ${result.stopReason}`, { extra: { stop_reason: result.stopReason } });
    }
  }

  function onServerRequest(req: RpcMessage): ProviderLineOutput {
    const params = req.params ?? {};
    if (req.method === 'session/request_permission') {
      const call: AcpToolCall = params.toolCall ?? {};
      const native: AcpApproval = { id: req.id!, options: params.options ?? [], toolCallId: call.toolCallId ?? '' };
      return { events: [toolUse(call)], approvals: [{ subject: toolName(call), toolInput: toolInput(call), native }] };
    }
    // No file system, terminal or other client method was offered: refuse, so the turn goes on.
    const refused = message({ id: req.id, error: { code: -32601, message: `ASM does not handle ${req.method}` } });
    return { events: [raw(req)], write: [refused] };
  }

  function onUpdate(update: Record<string, any>): ProviderLineOutput {
    switch (update.sessionUpdate) {
      case 'agent_message_chunk':
        if (update.content?.type !== 'text') return { events: [raw(update)] };
        return { events: [{ kind: 'assistant_delta', payload: { content: update.content.text ?? '', index: deltaIndex++ } }] };
      case 'agent_thought_chunk':
        return { events: [{ kind: 'thinking', payload: { content: update.content?.text ?? '' } }] };
      case 'user_message_chunk':
        return { events: [{ kind: 'user_message', payload: { content: update.content?.text ?? '' } }] };
      case 'tool_call': {
        const done = toolResult(update);
        return { events: [toolUse(update), ...(done ? [done] : [])] };
      }
      case 'tool_call_update': {
        const done = toolResult(update);
        return { events: [done ?? raw(update)] };
      }
      default:
        return PLUMBING.has(update.sessionUpdate) ? {} : { events: [raw(update)] };
    }
  }

  function toolUse(call: AcpToolCall): ProviderEvent {
    toolCalls += 1;
    return { kind: 'tool_use', payload: { tool_name: toolName(call), tool_call_id: call.toolCallId ?? '', input: toolInput(call) } };
  }

  return {
    args: [
      '--acp',
      '--skip-trust',
      ...(input.model ? ['-m', input.model] : []),
      ...(input.permissionMode && input.permissionMode !== 'default' ? ['--approval-mode', input.permissionMode] : []),
    ],
    stdin: 'control',
    start: initialize,
    onLine(text) {
      const parsed = parseLine<RpcMessage>('gemini --acp', text);
      if (!('line' in parsed)) return parsed;
      const line = parsed.line;
      if (line.method === undefined) return onResponse(line);
      if (line.id !== undefined) return onServerRequest(line);
      if (line.method === 'session/update') return onUpdate(line.params?.update ?? {});
      return { events: [raw(line)] };
    },
    decide(approval: ApprovalRequest, decision: ApprovalDecision, reason: string | null) {
      const { id, options, toolCallId } = approval.native as AcpApproval;
      const optionId = options.find((o) => o.kind === OPTION_KINDS[decision])?.optionId ?? OPTION_IDS[decision];
      const answer = message({ id, result: { outcome: { outcome: 'selected', optionId } } });
      if (decision !== 'deny') return { write: [answer] };
      const denied: ProviderEvent = { kind: 'tool_result', payload: { tool_call_id: toolCallId, content: reason ?? 'Denied by the user', is_error: true } };
      return { events: [denied], write: [answer] };
    },
    interrupt() {
      // Before the prompt is sent there is no turn to cancel: the run ends instead of sending it.
      if (!prompting) {
        cancelWanted = true;
        return {};
      }
      return { write: [cancel()] };
    },
    onExit(exit, sawTerminal) {
      return sawTerminal ? [] : [errorEvent('transport_error', exitMessage('gemini --acp', exit))];
    },
    // A warm session's next turn: session/prompt on the session the kept process holds (model, mode
    // and MCP settings were fixed at its start: the key). Only a run that continues it takes it (core.ts).
    warm: {
      key: ['--acp', JSON.stringify([input.model ?? null, input.permissionMode ?? null, input.mcp?.dir ?? null])],
      nextTurn() {
        sessionId = input.providerSessionId ?? null;
        return prompt();
      },
      // A process prewarmed for a new warm session is initialized; its first run, another provider, asks for the ACP session.
      prewarm: {
        start: initialize,
        firstTurn: () => {
          sentBefore();
          return newSession();
        },
      },
    },
  };
}

/** The tool's name: gemini-cli 0.61 names a call `<tool>__<model call id>`; else its ACP kind. */
function toolName(call: AcpToolCall): string {
  const id = call.toolCallId ?? '';
  const cut = id.indexOf('__');
  return cut > 0 ? id.slice(0, cut) : (call.kind ?? 'other');
}

/** ACP gives no tool arguments: what it shows instead (the title is the command or the path). */
function toolInput(call: AcpToolCall): Record<string, unknown> {
  return { title: call.title ?? null, kind: call.kind ?? null, description: contentText(call) ?? null, locations: call.locations ?? [] };
}

function contentText(call: AcpToolCall): string | undefined {
  const texts = (call.content ?? []).map((c) => c.content?.text).filter((t): t is string => typeof t === 'string');
  return texts.length > 0 ? texts.join('\n') : undefined;
}

function toolResult(call: AcpToolCall): ProviderEvent | null {
  if (call.status !== 'completed' && call.status !== 'failed') return null;
  return { kind: 'tool_result', payload: { tool_call_id: call.toolCallId ?? '', content: contentText(call) ?? null, is_error: call.status === 'failed' } };
}

function refusal(method: string | undefined, error: NonNullable<RpcMessage['error']>): ProviderEvent {
  const detail = error.message ?? JSON.stringify(error);
  // The model endpoint could not be reached at all (answered with code 500, no HTTP status of the API's).
  if (detail.includes('fetch failed')) return errorEvent('connection_failed', `gemini could not reach the model API: ${detail}`);
  const status = typeof error.code === 'number' && error.code >= 400 && error.code <= 599 ? error.code : undefined;
  if (status !== undefined) {
    const { kind, retryable } = httpStatusError(status);
    return errorEvent(kind, `gemini: the model API answered HTTP ${status}: ${detail}`, { retryable, extra: { api_error_status: status } });
  }
  if (method === 'session/new' && error.code === -32000) return errorEvent('auth_error', `gemini could not authenticate: ${detail}`);
  return errorEvent('provider_error', `gemini --acp refused ${method}: ${detail}`, { extra: { rpc_error_code: error.code ?? null } });
}
