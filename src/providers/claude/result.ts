/** Claude Code's result line: the run's cost and usage, and its result or error. */
import type { ProviderEvent } from '../../schemas/events.js';
import { anthropicUsage, completedResult, costUpdate, errorEvent, httpStatusError, perRun, totalsUsage, usageTotals } from '../common.js';
import type { ProviderLineOutput, ProviderTotals } from '../types.js';
import type { ClaudeLine, PermissionDenial } from './messages.js';

/*
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
 */

/** What the run's earlier lines contribute to its result. */
export interface ResultContext {
  previousTotals: ProviderTotals | undefined;
  /** The `error` of the last synthetic API-error assistant line, for the error result's kind. */
  apiErrorHint: string | null;
  /** The system/permission_denied lines seen, for their messages. */
  denials: PermissionDenial[];
}

/** cost_update, then result or error; the turn is over, so the CLI's stdin is closed. */
export function resultOutput(line: ClaudeLine, context: ResultContext): ProviderLineOutput {
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
