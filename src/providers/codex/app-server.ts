/** Codex's app-server transport: `codex app-server`, JSON-RPC over stdio, with approvals and interrupts. */
import { VERSION } from '../../version.js';
import { errorEvent, exitMessage, jsonRpcLines, parseLine, raw } from '../common.js';
import type { ApprovalDecision, ApprovalRequest, HomeSetup, ProviderLineOutput, ProviderProcess, ProviderRunInput } from '../types.js';
import { ItemMapper, tokenTotals, turnFailed, type CodexItem } from './items.js';
import { codexMcpArgs } from './mcp.js';
import type { Mode } from './modes.js';

/*
 * `codex app-server` (docs/protocols.md, "## Codex"): JSON-RPC over stdio, one object per line, no
 * "jsonrpc" field.
 *   → initialize {clientInfo}          ← result            → initialized (notification)
 *   → thread/start {cwd, model, approvalPolicy, sandbox, developerInstructions}   (or thread/resume {threadId, …} to continue)
 *   ← result {thread.id}               → turn/start {threadId, input:[{type:"text", text}], effort}
 *   ← notifications until turn/completed; stdin is then closed and the server exits (a warm session
 *   keeps the server: its next run is the next turn/start on the same thread). A server prewarmed
 *   for a new session (ASM_PREWARM) is sent initialize when it starts; its first run sends initialized
 *   and thread/start then.
 *   Approvals are server→client requests item/commandExecution/requestApproval and
 *   item/fileChange/requestApproval, answered with {id, result:{decision}}: allow → "accept",
 *   allow_for_session → "acceptForSession", deny → "decline". An MCP tool call asks through
 *   mcpServer/elicitation/request with _meta.codex_approval_kind "mcp_tool_call" (subject
 *   mcp__<server>__<tool>, input the tool's arguments), answered {action: "accept" | "decline",
 *   content}, with _meta.persist "session" for allow_for_session. Other server requests get a
 *   JSON-RPC error so the turn never waits on us. Interrupt: turn/interrupt {threadId, turnId} → turn/completed
 *   with status "interrupted".
 */

interface RpcMessage {
  id?: number | string;
  method?: string;
  params?: Record<string, any>;
  result?: Record<string, any>;
  error?: { code?: number; message?: string };
}

/** ApprovalRequest.native for app-server: the server's request id, and whether it is an MCP tool call's elicitation. */
interface RpcApproval {
  id: number | string;
  elicitation?: boolean;
}

const DECISIONS: Record<ApprovalDecision, string> = { allow: 'accept', allow_for_session: 'acceptForSession', deny: 'decline' };

/** The answer to an MCP tool call's approval elicitation. */
function elicitationAnswer(decision: ApprovalDecision): Record<string, unknown> {
  if (decision === 'deny') return { action: 'decline', content: null };
  return { action: 'accept', content: {}, ...(decision === 'allow_for_session' && { _meta: { persist: 'session' } }) };
}

/** app-server item types (camelCase) → the exec names used throughout. */
const ITEM_TYPES: Record<string, string> = {
  agentMessage: 'agent_message',
  userMessage: 'user_message',
  commandExecution: 'command_execution',
  fileChange: 'file_change',
  mcpToolCall: 'mcp_tool_call',
  webSearch: 'web_search',
};

function fromAppServer(item: Record<string, any>): CodexItem {
  const type = ITEM_TYPES[item.type] ?? item.type;
  const text =
    type === 'reasoning'
      ? (item.summary ?? []).join('\n')
      : type === 'user_message'
        ? (item.content ?? []).map((part: { text?: string }) => part.text ?? '').join('')
        : item.text;
  return { ...item, type, text, aggregated_output: item.aggregatedOutput, exit_code: item.exitCode };
}

/** Notifications that only mirror state we get elsewhere (status flags, streamed output repeated in items). */
const PLUMBING = new Set([
  'thread/started',
  'thread/status/changed',
  'turn/started',
  'serverRequest/resolved',
  'account/rateLimits/updated',
  'remoteControl/status/changed',
  'item/reasoning/summaryTextDelta',
  'item/commandExecution/outputDelta',
  'item/fileChange/outputDelta',
]);

/** What ASM says first to app-server: who it is. */
const INITIALIZE_PARAMS = { clientInfo: { name: 'asm', title: 'Agent Session Manager', version: VERSION }, capabilities: null };

/**
 * app-server's first start in a new HOME, once per binary (ProviderDefinition.homeSetup): it creates
 * and migrates its SQLite databases under ~/.codex on initialize (made once, they took 59–220 ms off
 * a cold run in bench -- agents; bench/RESULTS.md, nineteenth pass) and exits when its stdin ends. Their schema is the
 * same for every session; what else it makes there (installation_id, the skills it unpacks,
 * sessions/) is not kept. A -wal file holds what its exit did not fold back into the database.
 */
export const APP_SERVER_HOME_SETUP: HomeSetup = {
  args: ['app-server'],
  input: [jsonRpcLines().request('initialize', INITIALIZE_PARAMS)],
  keep: /^\.codex\/[^/]+\.sqlite(-wal)?$/,
};

/**
 * The host's bwrap, which app-server does not find in ASM's sandbox (ProviderProcess.hides): before
 * it answers initialize it probes a bwrap on its PATH and polls the probe every 50 ms; hiding it took
 * 35–58 ms off a cold run in bench -- agents (bench/RESULTS.md, twentieth pass). Without one it
 * sandboxes its commands with the bubblewrap it ships (codex-resources/bwrap), as its docs say, and
 * says so in a notice on stderr and in a configWarning.
 */
const HIDDEN_BWRAP = { executables: ['bwrap'], notice: /Codex could not find bubblewrap on PATH/ };

export function createAppServerProcess(input: ProviderRunInput, mode: Mode): ProviderProcess {
  const items = new ItemMapper(input.previousTotals);
  const { message: line, request, answered, sentBefore } = jsonRpcLines();
  let threadId: string | null = null;
  let turnId: string | null = null;
  let interruptWanted = false;

  const interruptRequest = () => request('turn/interrupt', { threadId, turnId });
  const turnStart = () =>
    request('turn/start', {
      threadId,
      input: [{ type: 'text', text: input.prompt, text_elements: [] }],
      ...(input.reasoningEffort !== undefined && { effort: input.reasoningEffort }),
    });

  /** The process's first line, whether a run or a prewarm starts it. */
  const initialize = (): ProviderLineOutput => ({ write: [request('initialize', INITIALIZE_PARAMS)] });

  /** After initialize: initialized, and the thread opened (its answer starts the turn). */
  function openThread(): ProviderLineOutput {
    const thread = {
      cwd: input.cwd,
      approvalPolicy: mode.approvalPolicy,
      sandbox: mode.sandbox,
      ...(input.model && { model: input.model }),
      // The session's system_prompt: added as developer instructions, codex's own stay.
      ...(input.systemPrompt !== undefined && { developerInstructions: input.systemPrompt }),
    };
    const open = input.providerSessionId ? request('thread/resume', { threadId: input.providerSessionId, ...thread }) : request('thread/start', thread);
    return { write: [line({ method: 'initialized' }), open] };
  }

  function onResponse(message: RpcMessage): ProviderLineOutput {
    const method = answered(message.id);
    if (message.error) {
      const error = errorEvent('provider_error', `codex app-server refused ${method}: ${message.error.message ?? JSON.stringify(message.error)}`);
      return { events: [error], endInput: true };
    }
    const result = message.result ?? {};
    switch (method) {
      case 'initialize':
        return openThread();
      case 'thread/start':
      case 'thread/resume':
        threadId = result.thread?.id ?? input.providerSessionId ?? null;
        return { providerSessionId: threadId ?? undefined, write: [turnStart()] };
      case 'turn/start':
        turnId = result.turn?.id ?? turnId;
        return interruptWanted ? { write: [interruptRequest()] } : {};
      default:
        return {};
    }
  }

  function onServerRequest(message: RpcMessage): ProviderLineOutput {
    const params = message.params ?? {};
    const native: RpcApproval = { id: message.id! };
    if (message.method === 'item/commandExecution/requestApproval') {
      const toolInput = { command: params.command, cwd: params.cwd, reason: params.reason ?? null };
      return { approvals: [{ subject: 'command_execution', toolInput, native }] };
    }
    if (message.method === 'item/fileChange/requestApproval') {
      const toolInput = { changes: items.startedItem(params.itemId)?.changes ?? null, reason: params.reason ?? null, grant_root: params.grantRoot ?? null };
      return { approvals: [{ subject: 'file_change', toolInput, native }] };
    }
    if (message.method === 'mcpServer/elicitation/request' && params._meta?.codex_approval_kind === 'mcp_tool_call') {
      const subject = `mcp__${params.serverName}__${params._meta.tool_name}`;
      return { approvals: [{ subject, toolInput: params._meta.tool_params ?? null, native: { ...native, elicitation: true } }] };
    }
    // Nothing else was offered by us (no dynamic tools, no other elicitation): refuse, so the turn goes on.
    const refusal = { id: message.id, error: { code: -32601, message: `ASM does not handle ${message.method}` } };
    return { events: [raw(message)], write: [line(refusal)] };
  }

  function onNotification(message: RpcMessage): ProviderLineOutput {
    const params = message.params ?? {};
    switch (message.method) {
      case 'turn/started':
        turnId = params.turn?.id ?? turnId;
        return {};
      case 'item/started':
        return { events: items.itemStarted(fromAppServer(params.item ?? {})) };
      case 'item/completed':
        return { events: items.itemCompleted(fromAppServer(params.item ?? {})) };
      case 'item/agentMessage/delta':
        return { events: items.delta(String(params.delta ?? '')) };
      case 'thread/tokenUsage/updated':
        items.totals = tokenTotals(params.tokenUsage?.total ?? {}) ?? items.totals;
        return {};
      case 'turn/completed':
        return { ...turnCompleted(params.turn ?? {}), endInput: true };
      case 'configWarning':
        return HIDDEN_BWRAP.notice.test(String(params.summary ?? '')) ? {} : { events: [raw(message)] };
      default:
        return PLUMBING.has(message.method!) ? {} : { events: [raw(message)] };
    }
  }

  function turnCompleted(turn: { status?: string; error?: { message?: string } | null; durationMs?: number | null }): ProviderLineOutput {
    if (turn.status === 'completed') return items.completed(turn.durationMs ?? null);
    const totals = items.totals ? { totals: items.totals } : {};
    if (turn.status === 'interrupted') return { events: [errorEvent('user_cancelled', 'codex turn interrupted')], ...totals };
    return { events: [turnFailed(turn.error?.message ?? `codex turn ended ${turn.status}`)], ...totals };
  }

  return {
    args: ['app-server', ...codexMcpArgs(input)],
    stdin: 'control',
    hides: HIDDEN_BWRAP,
    start: initialize,
    onLine(text) {
      const parsed = parseLine<RpcMessage>('codex app-server', text);
      if (!('line' in parsed)) return parsed;
      const message = parsed.line;
      if (message.method === undefined) return onResponse(message);
      return message.id === undefined ? onNotification(message) : onServerRequest(message);
    },
    decide(approval: ApprovalRequest, decision: ApprovalDecision) {
      const { id, elicitation } = approval.native as RpcApproval;
      if (elicitation) return { write: [line({ id, result: elicitationAnswer(decision) })] };
      return { write: [line({ id, result: { decision: DECISIONS[decision] } })] };
    },
    interrupt() {
      // Before turn/start answered there is no turn to name: ask as soon as there is.
      if (threadId === null || turnId === null) {
        interruptWanted = true;
        return {};
      }
      return { write: [interruptRequest()] };
    },
    onExit(exit, sawTerminal) {
      return sawTerminal ? [] : [errorEvent('transport_error', exitMessage('codex app-server', exit))];
    },
    // A warm session's next turn: turn/start on the thread the kept server holds (its options were
    // given at thread/start: the key). Only a run that continues that thread can take it (core.ts).
    warm: {
      key: ['app-server', ...codexMcpArgs(input), JSON.stringify([mode.approvalPolicy, mode.sandbox, input.model ?? null, input.systemPrompt ?? null])],
      nextTurn() {
        threadId = input.providerSessionId ?? null;
        return { write: [turnStart()] };
      },
      // A server prewarmed for a new session is initialized; its first run, another provider, opens the thread.
      prewarm: {
        start: initialize,
        firstTurn: () => {
          sentBefore();
          return openThread();
        },
      },
    },
  };
}
