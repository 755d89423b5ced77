/** The shapes of the stream-json messages Claude Code prints, as far as we read them. */
import type { AnthropicUsage, ContentBlock } from '../common.js';

/** One stdout line (docs/protocols.md, "## Claude Code"); the SDK lane's messages are the same objects. */
export interface ClaudeLine {
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
export interface ModelUsage {
  inputTokens?: number;
  outputTokens?: number;
  cacheReadInputTokens?: number;
  cacheCreationInputTokens?: number;
}

/** An entry of result.permission_denials; `message` added from the matching system/permission_denied line. */
export interface PermissionDenial {
  tool_name?: string;
  tool_use_id?: string;
  tool_input?: unknown;
  message?: string;
}

/** The CLI's suggested permission changes ("always allow"); passed back as they are. */
export type PermissionUpdate = Record<string, unknown>;
