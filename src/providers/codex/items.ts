/** Codex's items, turn failures and token counts → ASM events and totals, the same on both transports. */
import type { ProviderEvent } from '../../schemas/events.js';
import { completedResult, errorEvent, httpStatusError, perRun, raw, totalsUsage, usageTotals } from '../common.js';
import type { ProviderLineOutput, ProviderTotals } from '../types.js';

/*
 * Both transports yield the same items (exec in snake_case, app-server in camelCase, converted by
 * app-server.ts):
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

/** An item in exec's snake_case shape; app-server items are converted to it. */
export interface CodexItem {
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
export class ItemMapper {
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
export function turnFailed(message: string): ProviderEvent {
  if (/missing environment variable|api key|unauthori[sz]ed|authentication/i.test(message)) return errorEvent('auth_error', message);
  if (/rate.?limit/i.test(message)) return errorEvent('rate_limit', message);
  const status = /\b(401|403|429|5\d\d)\b/.exec(message)?.[1];
  const { kind, retryable } = httpStatusError(status === undefined ? undefined : Number(status));
  return errorEvent(kind, message, { retryable });
}

/** Thread token counts (exec snake_case or app-server camelCase) as totals. input_tokens includes the cached part. */
export function tokenTotals(counts: Record<string, number | undefined>): ProviderTotals | null {
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
