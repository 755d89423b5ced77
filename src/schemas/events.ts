import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ERROR_DOMAINS, ERROR_KIND_NAMES } from '../errors/kinds.js';
import { DiffSummary } from './workspace.js';

/**
 * The closed vocabulary of normalized events. Every provider maps its CLI's output onto these kinds;
 * unknown CLI output becomes `raw`, never dropped.
 */

const Usage = Type.Object(
  {
    input_tokens: Type.Integer({ minimum: 0 }),
    output_tokens: Type.Integer({ minimum: 0 }),
    cache_read_input_tokens: Type.Optional(Type.Integer({ minimum: 0 })),
    cache_creation_input_tokens: Type.Optional(Type.Integer({ minimum: 0 })),
    total_tokens: Type.Integer({ minimum: 0 }),
  },
);
export type Usage = Static<typeof Usage>;
export { Usage as UsageSchema };

const open = { additionalProperties: true } as const;

export const EventPayloads = {
  run_queued: Type.Object({ queue: Type.String(), position: Type.Optional(Type.Integer()) }, open),
  run_started: Type.Object(
    {
      provider_session_id: Type.Union([Type.String(), Type.Null()]),
      command: Type.String(),
      args: Type.Array(Type.String()),
      cwd: Type.String(),
      node: Type.String(),
      pid: Type.Optional(Type.Integer()),
      warm: Type.Optional(Type.Boolean({ description: "true: the run's turn went to a process already running (pid is that process): kept by its warm session, or prewarmed for the session's first run (ASM_PREWARM)" })),
    },
    open,
  ),
  assistant_delta: Type.Object({ content: Type.String(), index: Type.Integer({ minimum: 0 }) }, open),
  assistant_message: Type.Object({ content: Type.String(), model: Type.Union([Type.String(), Type.Null()]) }, open),
  user_message: Type.Object({ content: Type.String() }, open),
  thinking: Type.Object({ content: Type.String() }, open),
  tool_use: Type.Object({ tool_name: Type.String(), tool_call_id: Type.String(), input: Type.Unknown() }, open),
  tool_result: Type.Object({ tool_call_id: Type.String(), content: Type.Unknown(), is_error: Type.Boolean() }, open),
  approval_requested: Type.Object(
    {
      approval_id: Type.String(),
      subject: Type.String({ description: 'The tool name' }),
      details: Type.Object({ tool_input: Type.Unknown() }, open),
      expires_at: Type.String({ format: 'date-time' }),
    },
    open,
  ),
  approval_resolved: Type.Object(
    {
      approval_id: Type.String(),
      decision: Type.Union([Type.Literal('allow'), Type.Literal('allow_for_session'), Type.Literal('deny')]),
      reason: Type.Union([Type.String(), Type.Null()]),
    },
    open,
  ),
  cost_update: Type.Object(
    {
      input_tokens: Type.Integer({ minimum: 0 }),
      output_tokens: Type.Integer({ minimum: 0 }),
      total_tokens: Type.Integer({ minimum: 0 }),
      cost_usd: Type.Number({ minimum: 0 }),
    },
    open,
  ),
  stderr: Type.Object({ content: Type.String() }, open),
  raw: Type.Object({ stream: Type.String(), content: Type.Unknown() }, open),
  result: Type.Object(
    {
      status: Type.Literal('completed'),
      stop_reason: Type.Union([Type.String(), Type.Null()]),
      usage: Type.Union([Usage, Type.Null()]),
      cost_usd: Type.Union([Type.Number(), Type.Null()]),
      duration_ms: Type.Union([Type.Integer(), Type.Null()]),
    },
    open,
  ),
  error: Type.Object(
    {
      kind: Type.Union(ERROR_KIND_NAMES.map((k) => Type.Literal(k))),
      domain: Type.Union(ERROR_DOMAINS.map((d) => Type.Literal(d))),
      message: Type.String(),
      retryable: Type.Boolean(),
      details: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'e.g. reason: why a remote start failed' })),
    },
    open,
  ),
  run_completed: Type.Object({ status: Type.String() }, open),
  /** What the run changed in its workspace, before its terminal event; only when it changed something (GET /v1/runs/{id}/diff has the patch). */
  workspace_diff: Type.Object({ ...DiffSummary.properties, patch_truncated: Type.Boolean() }, open),
} satisfies Record<string, TSchema>;

export type EventKind = keyof typeof EventPayloads;
export const EVENT_KINDS = Object.keys(EventPayloads) as EventKind[];
export type EventPayload<K extends EventKind> = Static<(typeof EventPayloads)[K]>;

/** The kinds that end a run; exactly one of them is emitted per run, and nothing after it. */
export const TERMINAL_KINDS: ReadonlySet<EventKind> = new Set<EventKind>(['result', 'error', 'run_completed']);

/** What a backend or provider produces: a kind and its payload, before the service stamps the envelope. */
export type ProviderEvent = { [K in EventKind]: { kind: K; payload: EventPayload<K> } }[EventKind];

export const EventKindSchema = Type.Union(
  EVENT_KINDS.map((k) => Type.Literal(k)),
);

export const LaneMetadata = Type.Object(
  {
    requested_lane: Type.String(),
    preferred_lane: Type.String(),
    lane: Type.String(),
    backend: Type.String(),
    execution_mode: Type.String(),
    lane_reason: Type.String(),
    lane_fallback_reason: Type.Union([Type.String(), Type.Null()]),
    sdk_runtime: Type.Union([Type.String(), Type.Null()]),
    sdk_available: Type.Boolean(),
    capabilities: Type.Array(Type.String()),
    missing_capabilities: Type.Optional(
      Type.Array(Type.String(), { description: "What the session's options need that the provider's SDK lane lacks (then lane auto runs on core: lane_fallback_reason sdk_capability_missing)" }),
    ),
    node: Type.String(),
    queue: Type.String(),
    caller: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: "The caller's metadata: the session's, overridden key by key by the run's" })),
    request_id: Type.Optional(Type.String({ description: 'The x-request-id of the request that created the run' })),
    traceparent: Type.Optional(Type.String({ description: 'W3C trace context of the run, when tracing is on (README "Observability")' })),
  },
  { additionalProperties: true, $id: 'EventMetadata' },
);
export type EventMetadata = Static<typeof LaneMetadata>;

export const AsmEventSchema = Type.Object(
  {
    id: Type.String(),
    seq: Type.Integer({ minimum: 1, description: 'Per-session, strictly increasing and gap-free: the replay cursor' }),
    session_id: Type.String(),
    run_id: Type.String(),
    provider: Type.String(),
    kind: Type.Union(EVENT_KINDS.map((k) => Type.Literal(k))),
    payload: Type.Record(Type.String(), Type.Unknown()),
    timestamp: Type.String({ format: 'date-time' }),
    metadata: Type.Ref(LaneMetadata),
  },
  { $id: 'Event' },
);
export type AsmEvent = Static<typeof AsmEventSchema>;
