import { AsmError, type ErrorDomain, type ErrorKind } from '../errors/kinds.js';
import type { EventPayload, ProviderEvent, Usage } from '../schemas/events.js';
import type { ProcessExit, ProviderProcess, ProviderTotals } from './types.js';

/**
 * Pieces every stream-json provider needs the same way: framing a line as a JSON object, keeping
 * unknown output as `raw`, shaping terminal events, and turning a CLI's cumulative counters into the
 * per-run figures a result reports. Not a provider (the registry skips this file).
 */

/**
 * The protocol of a CLI that takes its prompt in argv and never asks (gemini, amp): stdin closed,
 * nothing to write at start, no approval to answer, SIGINT to its process group to stop it.
 */
export const SIGNALLED_ONE_SHOT = {
  stdin: 'closed',
  start: () => ({}),
  decide: () => ({}),
  interrupt: () => ({ signal: 'SIGINT' }),
} as const satisfies Partial<ProviderProcess>;

/** Unknown CLI output: kept, never dropped. */
export function raw(content: unknown): ProviderEvent {
  return { kind: 'raw', payload: { stream: 'stdout', content } };
}

/** A content block of an Anthropic-shaped message (claude, and amp's Claude-compatible stream JSON). */
export interface ContentBlock {
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

/** An assistant message's block: text | thinking | tool_use → assistant_message | thinking | tool_use; others raw. */
export function assistantBlockEvent(block: ContentBlock, model: string | null): ProviderEvent {
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

/** A user message's block: tool_result | text → tool_result | user_message; others raw. */
export function userBlockEvent(block: ContentBlock): ProviderEvent {
  if (block.type === 'tool_result') {
    return { kind: 'tool_result', payload: { tool_call_id: block.tool_use_id ?? '', content: block.content, is_error: block.is_error === true } };
  }
  if (block.type === 'text') return { kind: 'user_message', payload: { content: block.text ?? '' } };
  return raw(block);
}

export function errorEvent(
  kind: ErrorKind,
  message: string,
  opts: { domain?: ErrorDomain; retryable?: boolean; extra?: Record<string, unknown> } = {},
): ProviderEvent {
  const body = new AsmError(kind, message, { domain: opts.domain, retryable: opts.retryable }).toBody();
  return { kind: 'error', payload: { ...body, ...opts.extra } };
}

/**
 * One stdout line as a JSON object. A blank line is nothing; a line that is not JSON is the run's
 * terminal parse_error; JSON that is not an object is kept as raw.
 */
export function parseLine<T>(cli: string, text: string): { line: T } | { events?: ProviderEvent[] } {
  if (text.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { events: [errorEvent('parse_error', `${cli} printed a line that is not JSON: ${text.slice(0, 200)}`)] };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { events: [raw(parsed)] };
  return { line: parsed as T };
}

export function completedResult(fields: {
  stopReason: string | null;
  usage: Usage | null;
  costUsd: number | null;
  durationMs: number | null;
  extra?: Record<string, unknown>;
}): ProviderEvent {
  const payload: EventPayload<'result'> = {
    status: 'completed',
    stop_reason: fields.stopReason,
    usage: fields.usage,
    cost_usd: fields.costUsd,
    duration_ms: fields.durationMs,
    ...fields.extra,
  };
  return { kind: 'result', payload };
}

/** "codex exited with code 1: <stderr tail>", or how the process was stopped. */
export function exitMessage(cli: string, { code, signal, stderr }: ProcessExit, what = 'before the turn ended'): string {
  let text: string;
  if (signal) text = `${cli} was stopped by ${signal} ${what}`;
  else if (code === 130 || code === 143) text = `${cli} exited with code ${code} (stopped by a signal) ${what}`;
  else if (code !== 0) text = `${cli} exited with code ${code}`;
  else text = `${cli} exited without a result`;
  const tail = stderr.trim();
  return tail ? `${text}: ${tail}` : text;
}

/** The error kind an HTTP status of the model API means (claude's api_error_status, codex's messages). */
export function httpStatusError(status: number | undefined): { kind: ErrorKind; retryable?: boolean } {
  if (status === 401 || status === 403) return { kind: 'auth_error' };
  if (status === 429) return { kind: 'rate_limit' };
  // Overloaded or failing upstream (500, 502, 503, 529): the request itself was fine, so try again.
  if (status !== undefined && status >= 500) return { kind: 'provider_error', retryable: true };
  return { kind: 'provider_error' };
}

// ---------------------------------------------------------------- usage and totals

/**
 * Totals are the conversation's cumulative counters as the CLI reports them, stored between runs as
 * ProviderTotals. Field names follow Usage, plus cost_usd when the CLI reports a cost.
 */
const USAGE_FIELDS = ['input_tokens', 'output_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens', 'total_tokens'] as const;

/** Anthropic-shaped usage (claude, amp): input_tokens excludes the cached part, reported in the two cache fields. */
export interface AnthropicUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_read_input_tokens?: number;
  cache_creation_input_tokens?: number;
}

/** Anthropic-shaped usage as Usage; total_tokens counts every token the model processed, cached ones included. */
export function anthropicUsage(usage: AnthropicUsage | undefined): Usage | null {
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

export function usageTotals(usage: Usage, costUsd: number | null = null): ProviderTotals {
  const totals: ProviderTotals = {};
  for (const field of USAGE_FIELDS) {
    const value = usage[field];
    if (value !== undefined) totals[field] = value;
  }
  if (costUsd !== null) totals.cost_usd = costUsd;
  return totals;
}

/**
 * This run's share of cumulative counters: current minus what the conversation had before it. A
 * counter lower than before means the CLI started counting afresh (a new thread, a fork), so the
 * current values are this run's own.
 */
export function perRun(current: ProviderTotals, previous: ProviderTotals | undefined): ProviderTotals {
  if (!previous || Object.entries(current).some(([field, value]) => value < (previous[field] ?? 0))) return current;
  // Rounded so that a cost difference reads 0.010456, not 0.010456000000000001.
  return Object.fromEntries(Object.entries(current).map(([field, value]) => [field, round(value - (previous[field] ?? 0))]));
}

function round(value: number): number {
  return Math.round(value * 1e10) / 1e10;
}

/** The Usage part of totals (cost_usd left out), or null when they hold no token counts. */
export function totalsUsage(totals: ProviderTotals): Usage | null {
  if (totals.input_tokens === undefined || totals.output_tokens === undefined) return null;
  const usage: Usage = {
    input_tokens: totals.input_tokens,
    output_tokens: totals.output_tokens,
    total_tokens: totals.total_tokens ?? totals.input_tokens + totals.output_tokens,
  };
  if (totals.cache_read_input_tokens !== undefined) usage.cache_read_input_tokens = totals.cache_read_input_tokens;
  if (totals.cache_creation_input_tokens !== undefined) usage.cache_creation_input_tokens = totals.cache_creation_input_tokens;
  return usage;
}

/** A cost_update for the run's usage and cost; none when the CLI reports no cost. */
export function costUpdate(usage: Usage | null, costUsd: number | null): ProviderEvent[] {
  if (!usage || costUsd === null) return [];
  return [
    {
      kind: 'cost_update',
      payload: { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens, total_tokens: usage.total_tokens, cost_usd: costUsd },
    },
  ];
}

/**
 * What a provider writes to a CLI that speaks JSON-RPC over stdio, one object per line (codex's
 * app-server, gemini's ACP): messages with `envelope` on each (ACP's `"jsonrpc":"2.0"`; codex's
 * app-server leaves it out), and requests numbered from 0, each remembered by its method until the
 * response to it is taken.
 */
export function jsonRpcLines(envelope: Record<string, unknown> = {}) {
  const pending = new Map<number, string>();
  let nextId = 0;
  const message = (body: Record<string, unknown>): string => JSON.stringify({ ...envelope, ...body });
  return {
    message,
    request(method: string, params: unknown): string {
      const id = nextId++;
      pending.set(id, method);
      return message({ id, method, params });
    },
    /**
     * Counts a request another provider sent on the same process before this one took it over (a
     * prewarmed process's initialize, WarmTurn.prewarm): this one's ids go on after it, and an answer
     * to it that comes only now is answered() as nothing.
     */
    sentBefore(): void {
      nextId++;
    },
    /** The method of the request that response `id` answers; it is pending no more. */
    answered(id: unknown): string | undefined {
      const method = pending.get(Number(id));
      pending.delete(Number(id));
      return method;
    },
  };
}
