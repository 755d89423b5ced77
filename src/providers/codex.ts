import { AsmError } from '../errors/kinds.js';
import type { ProviderEvent } from '../schemas/events.js';
import { VERSION } from '../version.js';
import { completedResult, errorEvent, exitMessage, httpStatusError, parseLine, perRun, raw, totalsUsage, usageTotals } from './common.js';
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
 * `codex`: OpenAI Codex CLI (docs/protocols.md, "## Codex"), on one of two transports chosen by the
 * session's permission_mode:
 *
 *   permission_mode      transport    approval policy / sandbox                 can ask?
 *   default              app-server   on-request, workspace-write               yes
 *   read-only            app-server   on-request, read-only                     yes (anything that writes)
 *   untrusted            app-server   untrusted, workspace-write                yes (all but trusted commands)
 *   full-auto            exec         -s workspace-write -c approval_policy="never"   no
 *   danger-full-access   exec         --dangerously-bypass-approvals-and-sandbox      no
 *
 * Why two: `codex exec --json` cannot ask for approval at all (its policy is forced to never and an
 * escalation is refused without a trace in the JSONL), so every mode that may ask runs on
 * `codex app-server`, where approvals are JSON-RPC requests. The modes that can never ask use exec:
 * one process per turn, nothing to hold open.
 *
 * app-server: `codex app-server`, JSON-RPC over stdio, one object per line, no "jsonrpc" field.
 *   → initialize {clientInfo}          ← result            → initialized (notification)
 *   → thread/start {cwd, model, approvalPolicy, sandbox}   (or thread/resume {threadId, …} to continue)
 *   ← result {thread.id}               → turn/start {threadId, input:[{type:"text", text}]}
 *   ← notifications until turn/completed; stdin is then closed and the server exits.
 *   Approvals are server→client requests item/commandExecution/requestApproval and
 *   item/fileChange/requestApproval, answered with {id, result:{decision}}: allow → "accept",
 *   allow_for_session → "acceptForSession", deny → "decline". Other server requests get a JSON-RPC error
 *   so the turn never waits on us. Interrupt: turn/interrupt {threadId, turnId} → turn/completed
 *   with status "interrupted".
 *
 * exec: `codex exec --json --skip-git-repo-check [-m MODEL] <mode flags> [resume <thread id>] -- PROMPT`.
 *   stdin is closed (/dev/null): exec reads a piped stdin to EOF before it starts. The prompt follows
 *   `--`, so one that starts with "-" is not a flag. Interrupt: SIGINT, after which exec prints no
 *   final event, so an exit after an interrupt is user_cancelled.
 *
 * Both transports yield the same items (exec in snake_case, app-server in camelCase; normalized here):
 *   agent_message → assistant_message · reasoning → thinking · user_message → user_message
 *   command_execution, file_change, mcp_tool_call, web_search: started → tool_use, completed → tool_result
 *     (is_error when failed or declined); tool names are the item types, and the approval subjects too
 *   error item, todo_list, top-level `error` (often a retry notice, not fatal), warnings → raw
 *   turn completed → result · turn failed → error (auth_error / rate_limit / provider_error from the
 *   message) · app-server turn interrupted → user_cancelled
 *
 * Usage: both report the thread's cumulative token counts (exec `turn.completed.usage`, app-server
 * `thread/tokenUsage/updated.total`), also across resume. They are the provider's totals, and the run
 * reports its difference to the previous run's. Codex reports no cost.
 */

type Transport = 'app-server' | 'exec';

interface Mode {
  transport: Transport;
  approvalPolicy?: 'on-request' | 'untrusted';
  /** The sandbox: app-server's thread/start, and the SDK lane's for every mode. */
  sandbox: 'read-only' | 'workspace-write' | 'danger-full-access';
  execArgs?: string[];
}

const MODES: Record<string, Mode> = {
  default: { transport: 'app-server', approvalPolicy: 'on-request', sandbox: 'workspace-write' },
  'read-only': { transport: 'app-server', approvalPolicy: 'on-request', sandbox: 'read-only' },
  untrusted: { transport: 'app-server', approvalPolicy: 'untrusted', sandbox: 'workspace-write' },
  'full-auto': { transport: 'exec', sandbox: 'workspace-write', execArgs: ['-s', 'workspace-write', '-c', 'approval_policy="never"'] },
  'danger-full-access': { transport: 'exec', sandbox: 'danger-full-access', execArgs: ['--dangerously-bypass-approvals-and-sandbox'] },
};

/** An item in exec's snake_case shape; app-server items are converted to it. */
interface CodexItem {
  id?: string;
  type?: string;
  text?: string;
  command?: string;
  cwd?: string;
  aggregated_output?: string | null;
  exit_code?: number | null;
  status?: string;
  changes?: unknown;
  server?: string;
  tool?: string;
  arguments?: unknown;
  result?: unknown;
  error?: { message?: string } | null;
  query?: string;
  content?: unknown;
}

const TOOL_ITEMS = new Set(['command_execution', 'file_change', 'mcp_tool_call', 'web_search']);

/** Items, tool calls in flight and token totals: the state both transports share. */
class ItemMapper {
  private readonly started = new Map<string, CodexItem>();
  private deltaIndex = 0;
  totals: ProviderTotals | null = null;

  constructor(private readonly previousTotals: ProviderTotals | undefined) {}

  itemStarted(item: CodexItem): ProviderEvent[] {
    if (!TOOL_ITEMS.has(item.type ?? '')) return item.type === 'todo_list' ? [raw(item)] : [];
    this.started.set(item.id ?? '', item);
    return [toolUse(item)];
  }

  itemCompleted(item: CodexItem): ProviderEvent[] {
    switch (item.type) {
      case 'agent_message':
        return [{ kind: 'assistant_message', payload: { content: item.text ?? '', model: null } }];
      case 'reasoning':
        // Empty reasoning summaries carry nothing to show.
        return item.text ? [{ kind: 'thinking', payload: { content: item.text } }] : [];
      case 'user_message':
        return [{ kind: 'user_message', payload: { content: item.text ?? '' } }];
    }
    if (!TOOL_ITEMS.has(item.type ?? '')) return [raw(item)];
    const events = this.started.delete(item.id ?? '') ? [] : [toolUse(item)];
    events.push(toolResult(item));
    return events;
  }

  /** A tool item that started and has not completed yet. */
  startedItem(id: string | undefined): CodexItem | undefined {
    return this.started.get(id ?? '');
  }

  delta(content: string): ProviderEvent[] {
    return [{ kind: 'assistant_delta', payload: { content, index: this.deltaIndex++ } }];
  }

  /** The turn's result: usage is this run's share of the thread's cumulative counts. */
  completed(durationMs: number | null): ProviderLineOutput {
    const usage = this.totals ? totalsUsage(perRun(this.totals, this.previousTotals)) : null;
    return {
      events: [completedResult({ stopReason: 'completed', usage, costUsd: null, durationMs })],
      ...(this.totals && { totals: this.totals }),
    };
  }
}

function toolName(item: CodexItem): string {
  return item.type === 'mcp_tool_call' ? `mcp__${item.server}__${item.tool}` : item.type!;
}

function toolInput(item: CodexItem): unknown {
  switch (item.type) {
    case 'command_execution':
      return { command: item.command, ...(item.cwd && { cwd: item.cwd }) };
    case 'file_change':
      return { changes: item.changes };
    case 'mcp_tool_call':
      return item.arguments;
    default:
      return { query: item.query };
  }
}

function toolUse(item: CodexItem): ProviderEvent {
  return { kind: 'tool_use', payload: { tool_name: toolName(item), tool_call_id: item.id ?? '', input: toolInput(item) } };
}

function toolResult(item: CodexItem): ProviderEvent {
  let content: unknown = null;
  if (item.type === 'command_execution') content = item.aggregated_output ?? null;
  else if (item.type === 'file_change') content = item.changes;
  else if (item.type === 'mcp_tool_call') content = item.error?.message ?? item.result;
  const isError = item.status === 'failed' || item.status === 'declined' || Boolean(item.error);
  return {
    kind: 'tool_result',
    payload: {
      tool_call_id: item.id ?? '',
      content,
      is_error: isError,
      ...(item.status && { status: item.status }),
      ...(item.exit_code !== undefined && { exit_code: item.exit_code }),
    },
  };
}

/** A failed turn's message (a raw HTTP body, or text such as "Missing environment variable: `X`."). */
function turnFailed(message: string): ProviderEvent {
  if (/missing environment variable|api key|unauthori[sz]ed|authentication/i.test(message)) return errorEvent('auth_error', message);
  if (/rate.?limit/i.test(message)) return errorEvent('rate_limit', message);
  const status = /\b(401|403|429|5\d\d)\b/.exec(message)?.[1];
  const { kind, retryable } = httpStatusError(status === undefined ? undefined : Number(status));
  return errorEvent(kind, message, { retryable });
}

/** Thread token counts (exec snake_case or app-server camelCase) as totals. input_tokens includes the cached part. */
function tokenTotals(counts: Record<string, number | undefined>): ProviderTotals | null {
  const input = counts.input_tokens ?? counts.inputTokens;
  const output = counts.output_tokens ?? counts.outputTokens;
  if (input === undefined || output === undefined) return null;
  return usageTotals({
    input_tokens: input,
    output_tokens: output,
    cache_read_input_tokens: counts.cached_input_tokens ?? counts.cachedInputTokens ?? 0,
    cache_creation_input_tokens: counts.cache_write_input_tokens ?? counts.cacheWriteInputTokens ?? 0,
    total_tokens: counts.totalTokens ?? input + output,
  });
}

// ---------------------------------------------------------------- codex exec --json

interface ExecLine {
  type?: string;
  thread_id?: string;
  item?: CodexItem;
  usage?: Record<string, number>;
  error?: { message?: string };
}

/**
 * exec's JSONL event → ASM mapping of one run, shared by both lanes that run exec: the core lane
 * feeds it stdout lines, the SDK lane the events runStreamed() yields (the same objects, parsed).
 */
function createExecMapper(input: ProviderRunInput): (line: ExecLine) => ProviderLineOutput {
  const items = new ItemMapper(input.previousTotals);
  return (line) => {
    switch (line.type) {
      case 'thread.started':
        return { providerSessionId: line.thread_id };
      case 'turn.started':
        return {};
      case 'item.started':
        return { events: items.itemStarted(line.item ?? {}) };
      case 'item.completed':
        return { events: items.itemCompleted(line.item ?? {}) };
      case 'turn.completed':
        items.totals = tokenTotals(line.usage ?? {});
        return items.completed(null);
      case 'turn.failed':
        return { events: [turnFailed(line.error?.message ?? 'codex turn failed')] };
      default:
        // item.updated, and top-level `error` lines, which are often retries ("Reconnecting... 2/5").
        return { events: [raw(line)] };
    }
  };
}

function createExecProcess(input: ProviderRunInput, mode: Mode): ProviderProcess {
  const map = createExecMapper(input);
  let interrupted = false;

  return {
    args: [
      'exec',
      '--json',
      '--skip-git-repo-check',
      ...(input.model ? ['-m', input.model] : []),
      ...mode.execArgs!,
      ...(input.providerSessionId ? ['resume', input.providerSessionId] : []),
      '--',
      input.prompt,
    ],
    stdin: 'closed',
    start: () => ({}),
    onLine(text) {
      const parsed = parseLine<ExecLine>('codex', text);
      return 'line' in parsed ? map(parsed.line) : parsed;
    },
    // exec never asks, so there is never anything to answer.
    decide: () => ({}),
    interrupt() {
      interrupted = true;
      return { signal: 'SIGINT' };
    },
    onExit(exit, sawTerminal) {
      if (sawTerminal) return [];
      // exec prints no final event when it is stopped: SIGINT gives exit 1, SIGTERM 143.
      if (interrupted || exit.signal === 'SIGINT' || exit.code === 130) {
        return [errorEvent('user_cancelled', exitMessage('codex exec', exit, 'after an interrupt'))];
      }
      // 2 is an argument error (clap): this build does not take the flags we pass.
      if (exit.code === 2) return [errorEvent('config_invalid', exitMessage('codex exec', exit))];
      return [errorEvent('transport_error', exitMessage('codex exec', exit))];
    },
  };
}

// ---------------------------------------------------------------- codex app-server

interface RpcMessage {
  id?: number | string;
  method?: string;
  params?: Record<string, any>;
  result?: Record<string, any>;
  error?: { code?: number; message?: string };
}

/** ApprovalRequest.native for app-server: the server's request id. */
interface RpcApproval {
  id: number | string;
}

const DECISIONS: Record<ApprovalDecision, string> = { allow: 'accept', allow_for_session: 'acceptForSession', deny: 'decline' };

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

function createAppServerProcess(input: ProviderRunInput, mode: Mode): ProviderProcess {
  const items = new ItemMapper(input.previousTotals);
  /** Our requests in flight, by id. */
  const pending = new Map<number, string>();
  let nextId = 0;
  let threadId: string | null = null;
  let turnId: string | null = null;
  let interruptWanted = false;

  const request = (method: string, params: unknown): string => {
    const id = nextId++;
    pending.set(id, method);
    return JSON.stringify({ id, method, params });
  };
  const interruptRequest = () => request('turn/interrupt', { threadId, turnId });

  function onResponse(message: RpcMessage): ProviderLineOutput {
    const method = pending.get(Number(message.id));
    pending.delete(Number(message.id));
    if (message.error) {
      const error = errorEvent('provider_error', `codex app-server refused ${method}: ${message.error.message ?? JSON.stringify(message.error)}`);
      return { events: [error], endInput: true };
    }
    const result = message.result ?? {};
    switch (method) {
      case 'initialize': {
        const thread = { cwd: input.cwd, approvalPolicy: mode.approvalPolicy, sandbox: mode.sandbox, ...(input.model && { model: input.model }) };
        const open = input.providerSessionId
          ? request('thread/resume', { threadId: input.providerSessionId, ...thread })
          : request('thread/start', thread);
        return { write: [JSON.stringify({ method: 'initialized' }), open] };
      }
      case 'thread/start':
      case 'thread/resume':
        threadId = result.thread?.id ?? input.providerSessionId ?? null;
        return {
          providerSessionId: threadId ?? undefined,
          write: [request('turn/start', { threadId, input: [{ type: 'text', text: input.prompt, text_elements: [] }] })],
        };
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
    // Nothing else was offered by us (no dynamic tools, no elicitation): refuse, so the turn goes on.
    const refusal = { id: message.id, error: { code: -32601, message: `ASM does not handle ${message.method}` } };
    return { events: [raw(message)], write: [JSON.stringify(refusal)] };
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
    args: ['app-server'],
    stdin: 'control',
    start: () => ({ write: [request('initialize', { clientInfo: { name: 'asm', title: 'Agent Session Manager', version: VERSION }, capabilities: null })] }),
    onLine(text) {
      const parsed = parseLine<RpcMessage>('codex app-server', text);
      if (!('line' in parsed)) return parsed;
      const message = parsed.line;
      if (message.method === undefined) return onResponse(message);
      return message.id === undefined ? onNotification(message) : onServerRequest(message);
    },
    decide(approval: ApprovalRequest, decision: ApprovalDecision) {
      const { id } = approval.native as RpcApproval;
      return { write: [JSON.stringify({ id, result: { decision: DECISIONS[decision] } })] };
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
  };
}

function modeOf(input: ProviderRunInput): Mode {
  const mode = MODES[input.permissionMode ?? 'default'];
  if (!mode) throw new AsmError('config_invalid', `codex has no permission mode "${input.permissionMode}"`);
  return mode;
}

function createCodexProcess(input: ProviderRunInput): ProviderProcess {
  const mode = modeOf(input);
  return mode.transport === 'exec' ? createExecProcess(input, mode) : createAppServerProcess(input, mode);
}

// ---------------------------------------------------------------- SDK lane (@openai/codex-sdk)

/**
 * The Codex TypeScript SDK (docs/protocols.md, "## SDK lane") spawns `codex exec --experimental-json`
 * per turn, so its events are exec's and go through the exec mapper:
 *
 *   new Codex({codexPathOverride: <the configured CLI>, env: <the allowlisted environment>})
 *     .startThread(options) | .resumeThread(<provider session id>, options)
 *     .runStreamed(prompt, {signal})
 *   options: {model, workingDirectory: cwd, skipGitRepoCheck, sandboxMode: <the mode's sandbox>,
 *             approvalPolicy: "never"}
 *
 * exec cannot ask for approval (see the transports at the top of this file), so the SDK lane has
 * no approvals: every permission mode runs with its own sandbox and approval policy "never", which
 * means a command the modes default, read-only and untrusted would have asked about is refused
 * instead (the model is told). Sessions that need a person to approve use `lane: core` (codex
 * app-server).
 *
 * Interrupt and stop are the SDK's abort (it SIGTERMs the CLI): exec has no gentler channel, and it
 * prints no final event when stopped, so the backend ends the run user_cancelled (or timeout).
 */

/** The part of the SDK's module we use (typed here: the package is optional, its types may be absent). */
interface CodexSdkModule {
  Codex: new (options: Record<string, unknown>) => {
    startThread(options: Record<string, unknown>): CodexSdkThread;
    resumeThread(id: string, options: Record<string, unknown>): CodexSdkThread;
  };
}

interface CodexSdkThread {
  runStreamed(input: string, options: { signal: AbortSignal }): Promise<{ events: AsyncIterable<ExecLine> }>;
}

function runCodexSdk(module: unknown, input: SdkRunInput, report: (output: ProviderLineOutput) => void): SdkTurn {
  const { sandbox } = modeOf(input);
  const map = createExecMapper(input);
  const abort = new AbortController();
  const codex = new (module as CodexSdkModule).Codex({ codexPathOverride: input.binary, env: input.env });
  const options = {
    ...(input.model && { model: input.model }),
    workingDirectory: input.cwd,
    skipGitRepoCheck: true,
    sandboxMode: sandbox,
    approvalPolicy: 'never',
  };
  const thread = input.providerSessionId ? codex.resumeThread(input.providerSessionId, options) : codex.startThread(options);

  const done = (async () => {
    try {
      const { events } = await thread.runStreamed(input.prompt, { signal: abort.signal });
      for await (const event of events) report(map(event));
    } catch (err) {
      // After turn.failed the SDK throws too (exec exits 1); the backend has its terminal event by then.
      report({ events: [errorEvent('transport_error', `codex (SDK): ${err instanceof Error ? err.message : String(err)}`)] });
    }
  })();

  return {
    providerSessionId: input.providerSessionId,
    done,
    // Never called: nothing on this lane asks.
    decide: () => undefined,
    interrupt: () => abort.abort(),
    // The SDK closed exec's stdin when it wrote the prompt; the turn ends with the process.
    endInput: () => undefined,
    stop: () => abort.abort(),
  };
}

const codex: ProviderDefinition = {
  name: 'codex',
  displayName: 'Codex CLI',
  defaultBinary: 'codex',
  // Auth (CODEX_API_KEY is what the SDK sets; OPENAI_API_KEY works too) and where codex keeps its
  // login, config and sessions.
  env: ['CODEX_API_KEY', 'OPENAI_API_KEY', 'CODEX_ACCESS_TOKEN', 'CODEX_HOME'],
  defaultQueue: 'prompt',
  capabilities: ['approvals', 'interrupt', 'continuation', 'usage'],
  permissionModes: Object.keys(MODES),
  sdk: {
    package: '@openai/codex-sdk',
    // No approvals (exec cannot ask, see runCodexSdk); the thread resumes by id.
    capabilities: ['interrupt', 'continuation', 'usage', 'session_resume'],
    run: runCodexSdk,
  },
  versionArgs: ['--version'],
  create: createCodexProcess,
};

export default codex;
