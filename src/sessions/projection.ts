import type { RunResult, RunState } from '../schemas/api.js';
import { TERMINAL_KINDS, type AsmEvent, type EventPayload, type Usage } from '../schemas/events.js';

/**
 * A run's result is a projection of its events and nothing else, so a client that replays the event
 * stream can compute exactly what GET /runs/{id} reports.
 *
 * - text: the assistant_delta contents concatenated when the run streamed deltas; otherwise the
 *   assistant_message contents joined by newlines (a provider that streams both would double the text).
 * - usage and cost: from the `result` event; failing that, the sum of `cost_update` events.
 * - status: result/run_completed → completed; error user_cancelled → interrupted; other error → failed.
 * - duration_ms: from run_started (or the first event) to the terminal event.
 * - provider_session_id: from the terminal event, else from run_started.
 */
export type ProjectableEvent = Pick<AsmEvent, 'kind' | 'payload' | 'timestamp' | 'metadata'>;

export function projectResult(events: readonly ProjectableEvent[]): RunResult {
  const deltas: string[] = [];
  const messages: string[] = [];
  const summed = { input: 0, output: 0, total: 0, cost: 0, seen: false };
  let status: RunState = 'queued';
  let startedAt: string | null = null;
  let providerSessionId: string | null = null;
  let terminal: ProjectableEvent | null = null;

  for (const event of events) {
    if (terminal) break;
    const payload = event.payload as Record<string, unknown>;
    switch (event.kind) {
      case 'run_started':
        status = 'running';
        startedAt = event.timestamp;
        providerSessionId = (payload.provider_session_id as string | null) ?? null;
        break;
      case 'assistant_delta':
        deltas.push(String(payload.content ?? ''));
        break;
      case 'assistant_message':
        messages.push(String(payload.content ?? ''));
        break;
      case 'cost_update': {
        const cost = payload as EventPayload<'cost_update'>;
        summed.input += cost.input_tokens;
        summed.output += cost.output_tokens;
        summed.total += cost.total_tokens;
        summed.cost += cost.cost_usd;
        summed.seen = true;
        break;
      }
    }
    if (TERMINAL_KINDS.has(event.kind)) terminal = event;
  }

  const text = deltas.length > 0 ? deltas.join('') : messages.join('\n');
  const result: RunResult = {
    status,
    text,
    stop_reason: null,
    usage: summed.seen
      ? { input_tokens: summed.input, output_tokens: summed.output, total_tokens: summed.total }
      : null,
    cost_usd: summed.seen ? summed.cost : null,
    error: null,
    duration_ms: null,
    provider_session_id: providerSessionId,
    metadata: null,
  };
  if (!terminal) return result;

  const start = startedAt ?? events[0].timestamp;
  result.duration_ms = Math.max(0, Date.parse(terminal.timestamp) - Date.parse(start));
  result.metadata = terminal.metadata;
  const payload = terminal.payload as Record<string, unknown>;
  // CLIs that print their session id mid-run (codex, gemini, amp) have it stamped on the terminal event.
  if (typeof payload.provider_session_id === 'string') result.provider_session_id = payload.provider_session_id;
  switch (terminal.kind) {
    case 'result': {
      const done = payload as EventPayload<'result'>;
      result.status = 'completed';
      result.stop_reason = done.stop_reason;
      if (done.usage) result.usage = done.usage as Usage;
      if (done.cost_usd !== null && done.cost_usd !== undefined) result.cost_usd = done.cost_usd;
      break;
    }
    case 'run_completed':
      result.status = 'completed';
      break;
    case 'error': {
      const err = payload as EventPayload<'error'>;
      result.status = err.kind === 'user_cancelled' ? 'interrupted' : 'failed';
      result.stop_reason = err.kind;
      result.error = { kind: err.kind, domain: err.domain, message: err.message, retryable: err.retryable, ...(err.details && { details: err.details }) };
      break;
    }
  }
  return result;
}

