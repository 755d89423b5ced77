/** Claude Code's stream-json messages → ASM events, approvals and writes, for one run on either lane. */
import type { ProviderEvent } from '../../schemas/events.js';
import { assistantBlockEvent, raw, userBlockEvent, type ContentBlock } from '../common.js';
import type { ProviderLineOutput, ProviderRunInput } from '../types.js';
import { controlRequest } from './control.js';
import type { ClaudeLine, PermissionDenial } from './messages.js';
import { resultOutput } from './result.js';

/*
 * stdout line                                   → ASM events (docs/protocols.md, "## Claude Code")
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
 * result, is_error true (whatever the subtype)  → cost_update, error (kind in result.ts); stdin closed
 * any other type, subtype or content block      → raw
 */

/**
 * The stream-json message → ASM mapping of one run, shared by both lanes: the core lane feeds it the
 * CLI's stdout lines, the SDK lane the messages query() yields (the same objects, without the
 * control_* and keep_alive lines, which the SDK consumes itself).
 */
export function createClaudeMapper(input: ProviderRunInput): (line: ClaudeLine) => ProviderLineOutput {
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
