import { DiffSummary, WorkspaceSpec } from './workspace.js';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ERROR_DOMAINS, ERROR_KIND_NAMES } from '../errors/kinds.js';
import { AgentOptionFields, Continuation } from './agent-options.js';
import { McpServers } from './mcp-servers.js';
import { AsmEventSchema, LaneMetadata, UsageSchema } from './events.js';

/**
 * Every request and response body of the HTTP API. These schemas validate the routes, type the handlers
 * and generate openapi/openapi.json; nothing else defines the API's shape.
 */

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
export const Id = Type.String({ minLength: 1, maxLength: 128 });
const Timestamp = Type.String({ format: 'date-time' });
const Metadata = Type.Record(Type.String({ maxLength: 128 }), Type.Unknown(), {
  description: 'Caller data, returned as given',
  maxProperties: 64,
});

export const ErrorResponse = Type.Object({
  error: Type.Object({
    kind: Type.Union(ERROR_KIND_NAMES.map((k) => Type.Literal(k))),
    domain: Type.Union(ERROR_DOMAINS.map((d) => Type.Literal(d))),
    message: Type.String(),
    retryable: Type.Boolean(),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  }),
}, { $id: 'Error' });

export const BackendLane = Type.Union([Type.Literal('auto'), Type.Literal('core'), Type.Literal('sdk')]);
export const ExecutionMode = Type.Union([Type.Literal('local'), Type.Literal('remote_node')]);
export const DriverOpts = Type.Record(Type.String(), Type.Unknown(), {
  description: 'Remote execution options (remote_node, remote_cookie, timeouts…); unknown keys are kept',
});
export const ExecutionSurface = Type.Object(
  {
    kind: Type.Union([Type.Literal('local_subprocess'), Type.Literal('ssh')]),
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$', description: 'ssh: host name or address (required)' })),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'ssh: default 22' })),
    user: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z_][A-Za-z0-9_.-]*$', description: 'ssh: remote account (required)' })),
    identity_file: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'ssh: absolute path of the private key, on the node that runs the CLI' })),
    known_hosts_file: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: "ssh: absolute path of the known_hosts file; default ssh's own" })),
    host_key_checking: Type.Optional(Type.Union([Type.Literal('strict'), Type.Literal('accept_new')], { description: 'ssh: strict (default) refuses unknown hosts' })),
  },
  { additionalProperties: false, description: 'Where the node places the CLI process: here (default) or on a host over ssh' },
);
export type ExecutionSurface = Static<typeof ExecutionSurface>;
const QueueName = Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9_.-]+$' });


// ---- sessions ----

export const CreateSessionBody = Type.Object(
  {
    provider: Type.String({ minLength: 1, maxLength: 64 }),
    lane: Type.Optional(BackendLane),
    execution_mode: Type.Optional(ExecutionMode),
    driver_opts: Type.Optional(DriverOpts),
    execution_surface: Type.Optional(ExecutionSurface),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Relative to, and inside, the workspace root' })),
    ...AgentOptionFields,
    workspace: Type.Optional(WorkspaceSpec),
    queue: Type.Optional(QueueName),
    max_concurrent_runs: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    max_queued_runs: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
    approval_timeout_ms: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })),
    run_deadline_ms: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })),
    idle_timeout_ms: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 86_400_000, description: 'How long the agent may print nothing before it is stopped with idle_timeout; 0: never. Default: ASM_IDLE_TIMEOUT_MS' }),
    ),
    warm: Type.Optional(Type.Boolean({ description: "Keep the agent's process between runs (providers with the warm capability, core lane, local runs)" })),
    warm_idle_ms: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000, description: 'With warm: how long the kept process waits idle; default ASM_WARM_IDLE_MS' })),
    metadata: Type.Optional(Metadata),
    mcp_servers: Type.Optional(McpServers),
  },
  { additionalProperties: false },
);
export type CreateSessionBody = Static<typeof CreateSessionBody>;

export const SessionState = Type.Union([Type.Literal('open'), Type.Literal('closing'), Type.Literal('closed')]);

export const Session = Type.Object({
  id: Type.String(),
  provider: Type.String(),
  lane: BackendLane,
  execution_mode: ExecutionMode,
  driver_opts: DriverOpts,
  execution_surface: ExecutionSurface,
  cwd: Type.String({ description: 'Absolute working directory' }),
  model: Nullable(Type.String()),
  permission_mode: Nullable(Type.String({ description: 'The normalized mode; null for a native mode none of them maps to' })),
  provider_permission_mode: Type.String({ description: 'The mode the CLI is given' }),
  approval_posture: Nullable(Type.String()),
  allowed_tools: Type.Array(Type.String(), { description: 'The guardrail (empty: any tool)' }),
  system_prompt: Nullable(Type.String()),
  max_turns: Nullable(Type.Integer()),
  reasoning_effort: Nullable(Type.String()),
  queue: Type.String(),
  max_concurrent_runs: Type.Integer(),
  max_queued_runs: Type.Integer(),
  approval_timeout_ms: Type.Integer(),
  run_deadline_ms: Type.Integer(),
  idle_timeout_ms: Type.Integer({ minimum: 0 }),
  warm: Type.Boolean(),
  warm_idle_ms: Nullable(Type.Integer({ description: 'With warm: how long the kept process waits idle' })),
  metadata: Metadata,
  mcp_servers: Type.Optional(McpServers),
  state: SessionState,
  provider_session_id: Nullable(Type.String()),
  granted_tools: Type.Array(Type.String(), {
    description: 'Tools an allow_for_session decision allowed without asking for the rest of the session (always within allowed_tools)',
  }),
  last_seq: Type.Integer({ minimum: 0 }),
  created_at: Timestamp,
  closed_at: Nullable(Timestamp),
}, { $id: 'Session' });
export type Session = Static<typeof Session>;

/** Every list answers a page: `limit` items at most (default 100), and the cursor of the next page. */
export const PAGE_DEFAULT = 100;
export const PAGE_MAX = 1000;
export const PageQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: PAGE_MAX, description: `Items per page (default ${PAGE_DEFAULT})` })),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'next_cursor of the previous page' })),
  },
  { additionalProperties: false },
);
export type PageQuery = Static<typeof PageQuery>;
const NextCursor = Nullable(Type.String({ description: 'Pass as `cursor` for the next page; null on the last page' }));

export const SessionList = Type.Object({ sessions: Type.Array(Type.Ref(Session)), next_cursor: NextCursor });
export const SessionParams = Type.Object({ id: Id });

// ---- runs ----

export const RunState = Type.Union([
  Type.Literal('queued'),
  Type.Literal('running'),
  Type.Literal('completed'),
  Type.Literal('failed'),
  Type.Literal('interrupted'),
]);
export type RunState = Static<typeof RunState>;

export function isTerminalRunState(state: RunState): boolean {
  return state === 'completed' || state === 'failed' || state === 'interrupted';
}

export const CreateRunBody = Type.Object(
  {
    prompt: Type.String({ minLength: 1 }),
    lane: Type.Optional(BackendLane),
    execution_mode: Type.Optional(ExecutionMode),
    driver_opts: Type.Optional(DriverOpts),
    execution_surface: Type.Optional(ExecutionSurface),
    queue: Type.Optional(QueueName),
    ...AgentOptionFields,
    continuation: Type.Optional(Continuation),
    metadata: Type.Optional(Metadata),
    wait: Type.Optional(Type.Boolean({ description: 'Answer with the final result instead of 202' })),
  },
  { additionalProperties: false },
);
export type CreateRunBody = Static<typeof CreateRunBody>;

export const RunError = Type.Object({
  kind: Type.String(),
  domain: Type.String(),
  message: Type.String(),
  retryable: Type.Boolean(),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});

export const RunResult = Type.Object({
  status: RunState,
  text: Type.String({ description: 'Assistant text of the run, concatenated' }),
  stop_reason: Nullable(Type.String()),
  usage: Nullable(UsageSchema),
  cost_usd: Nullable(Type.Number()),
  error: Nullable(RunError),
  duration_ms: Nullable(Type.Integer()),
  provider_session_id: Nullable(Type.String()),
  metadata: Nullable(Type.Ref(LaneMetadata)),
}, { $id: 'RunResult' });
export type RunResult = Static<typeof RunResult>;

export const Run = Type.Object({
  id: Type.String(),
  session_id: Type.String(),
  provider: Type.String(),
  state: RunState,
  queue: Type.String(),
  prompt: Type.String(),
  metadata: Metadata,
  created_at: Timestamp,
  started_at: Nullable(Timestamp),
  finished_at: Nullable(Timestamp),
  result: Nullable(Type.Ref(RunResult)),
}, { $id: 'Run' });
export type Run = Static<typeof Run>;

export const RunList = Type.Object({ runs: Type.Array(Type.Ref(Run)), next_cursor: NextCursor });
export const RunParams = Type.Object({ id: Id });

export const EventsQuery = Type.Object(
  {
    after: Type.Optional(Type.Integer({ minimum: 0, description: 'Return events with seq greater than this' })),
    limit: Type.Optional(Type.Integer({ minimum: 1 })),
    token: Type.Optional(Type.String({ description: 'API key, for clients that cannot set headers (EventSource)' })),
  },
  { additionalProperties: false },
);

export const EventPage = Type.Object({
  events: Type.Array(Type.Ref(AsmEventSchema)),
  next_after: Type.Integer({ description: 'Pass as `after` to continue' }),
  run_state: RunState,
});

// ---- approvals ----

export const ApprovalDecisionValue = Type.Union([
  Type.Literal('allow'),
  Type.Literal('allow_for_session'),
  Type.Literal('deny'),
]);

export const DecideApprovalBody = Type.Object(
  {
    decision: ApprovalDecisionValue,
    reason: Type.Optional(Type.String({ maxLength: 2000 })),
  },
  { additionalProperties: false },
);
export type DecideApprovalBody = Static<typeof DecideApprovalBody>;

export const ApprovalState = Type.Union([Type.Literal('pending'), Type.Literal('resolved')]);

export const Approval = Type.Object({
  id: Type.String(),
  session_id: Type.String(),
  run_id: Type.String(),
  subject: Type.String(),
  tool_input: Type.Unknown(),
  state: ApprovalState,
  decision: Nullable(ApprovalDecisionValue),
  reason: Nullable(Type.String()),
  requested_at: Timestamp,
  expires_at: Timestamp,
  resolved_at: Nullable(Timestamp),
}, { $id: 'Approval' });
export type Approval = Static<typeof Approval>;
export const ApprovalList = Type.Object({ approvals: Type.Array(Type.Ref(Approval)), next_cursor: NextCursor });

// ---- queues ----

const Latency = Type.Object({
  count: Type.Integer(),
  p50: Type.Number(),
  p90: Type.Number(),
  p95: Type.Number(),
  p99: Type.Number(),
});

export const QueueInfo = Type.Object({
  name: Type.String(),
  priority: Type.Integer(),
  min_concurrency: Type.Integer(),
  max_concurrency: Type.Integer(),
  pending: Type.Integer(),
  active: Type.Integer(),
  delayed: Type.Integer(),
  completed: Type.Integer(),
  failed: Type.Integer(),
  timed_out: Type.Integer(),
  retried: Type.Integer(),
  dead_lettered: Type.Integer(),
  cancelled: Type.Integer(),
  pressure: Type.Boolean(),
  paused: Type.Boolean(),
  latency_ms: Latency,
  wait_ms: Latency,
}, { $id: 'QueueInfo' });
export const QueueList = Type.Object({ queues: Type.Array(Type.Ref(QueueInfo)), next_cursor: NextCursor });
export const QueueParams = Type.Object({ lane: Type.String({ minLength: 1, maxLength: 64 }) });

export const DeadLetterInfo = Type.Object({
  id: Type.String(),
  type: Type.String(),
  queue: Type.String(),
  payload: Type.Unknown(),
  error: Type.String(),
  attempts: Type.Integer(),
  failed_at: Timestamp,
}, { $id: 'DeadLetter' });
export const DeadLetterList = Type.Object({ dead_letters: Type.Array(Type.Ref(DeadLetterInfo)), next_cursor: NextCursor });
export const DlqParams = Type.Object({ id: Id });

// ---- providers and nodes ----

export const ProviderInfo = Type.Object({
  name: Type.String(),
  display_name: Type.String(),
  binary: Type.String(),
  installed: Type.Boolean(),
  version: Nullable(Type.String()),
  enabled: Type.Boolean(),
  default_queue: Type.String(),
  capabilities: Type.Array(Type.String()),
  permission_modes: Type.Record(Type.String(), Type.String(), { description: 'Normalized permission mode → the native mode it runs as; absent modes are refused' }),
  provider_permission_modes: Type.Array(Type.String(), { description: 'Native modes accepted as provider_permission_mode' }),
  options: Type.Object(
    {
      system_prompt: Type.Boolean(),
      max_turns: Type.Boolean(),
      reasoning_effort: Type.Array(Type.String(), { description: 'Accepted levels; empty: not supported' }),
      continuation_latest: Type.Boolean(),
    },
    { description: 'Which session options its CLI takes; the others are refused with config_invalid' },
  ),
  lanes: Type.Array(Type.String(), { description: 'Backend lanes this provider has: core, and sdk where its vendor ships an SDK' }),
  sdk_available: Type.Boolean({ description: 'Whether the SDK can run here: its package loads and the CLI it drives is found (then lane auto runs on sdk, unless the session needs a capability it lacks)' }),
  sdk: Nullable(
    Type.Object({
      package: Type.String(),
      runtime: Nullable(Type.String({ description: 'package@version when it loads' })),
      capabilities: Type.Array(Type.String()),
      error: Nullable(Type.String({ description: 'Why it does not load' })),
    }),
  ),
}, { $id: 'ProviderInfo' });
export const LaneInfo = Type.Object(
  {
    provider: Type.String(),
    preferred_lane: Type.String({ description: 'What lane auto picks for a local run that needs nothing the SDK lane lacks' }),
    lanes: Type.Array(
      Type.Object({
        lane: Type.Union([Type.Literal('core'), Type.Literal('sdk')]),
        available: Type.Boolean({ description: 'core: the CLI is found; sdk: the package loads and the CLI is found' }),
        execution_modes: Type.Array(ExecutionMode, { description: 'Where the lane can run: sdk is local only' }),
        capabilities: Type.Array(Type.String()),
        runtime: Nullable(Type.String({ description: 'The CLI version (core) or package@version (sdk)' })),
        error: Nullable(Type.String({ description: 'Why it is unavailable' })),
      }),
    ),
  },
  { $id: 'LaneInfo' },
);
export const ProviderList = Type.Object({ providers: Type.Array(Type.Ref(ProviderInfo)), next_cursor: NextCursor });
export const ProviderParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) });
export const ResolveLaneBody = Type.Object(
  {
    lane: Type.Optional(BackendLane),
    execution_mode: Type.Optional(ExecutionMode),
    queue: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    permission_mode: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'What a session would ask for: some modes need capabilities a lane lacks (missing_capabilities)' })),
    provider_permission_mode: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'A native mode instead (the escape hatch)' })),
    driver_opts: Type.Optional(DriverOpts),
  },
  { additionalProperties: false },
);
export type ResolveLaneBody = Static<typeof ResolveLaneBody>;

export const NodeInfo = Type.Object({
  id: Type.String({ description: 'Instance id, unique per process; runs record it as their owner' }),
  name: Type.String({ description: 'Configured node name (ASM_NODE_NAME)' }),
  role: Type.Union([Type.Literal('api'), Type.Literal('worker')]),
  started_at: Timestamp,
  version: Type.String(),
  node_version: Type.String({ description: 'The Node.js version it runs on; remote_node runs go only to nodes of the API\'s Node.js major' }),
  providers: Type.Array(Type.String()),
  missing_clis: Type.Array(Type.Object({ provider: Type.String(), binary: Type.String() }), {
    description: 'Providers it serves whose CLI it did not find at start-up: a session for one of them on this node alone is refused with cli_not_found',
  }),
  capacity: Type.Integer(),
  load: Type.Integer(),
  last_heartbeat: Timestamp,
  state: Type.Union([Type.Literal('starting'), Type.Literal('ready'), Type.Literal('draining'), Type.Literal('lost')]),
  pool: Type.String(),
  sandbox: Type.Union([Type.Literal('bwrap'), Type.Literal('none')], {
    description: 'The sandbox this instance runs agent CLIs in (ASM_SANDBOX); `none` runs them as the service user, seeing what it sees',
  }),
  files_url: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'Where a worker serves the workspaces it holds to the API processes (asm worker --files-port); null: the files API cannot reach its sessions\' workspaces' })),
}, { $id: 'NodeInfo' });
export const NodeList = Type.Object({ nodes: Type.Array(Type.Ref(NodeInfo)), next_cursor: NextCursor });

export const Health = Type.Object({ status: Type.String(), checks: Type.Optional(Type.Record(Type.String(), Type.String())) });

/**
 * Schemas with an $id: registered once with Fastify, referenced by routes with Type.Ref, and published as
 * named components in openapi.json (so generated clients get named types). Referenced ones come first.
 */
export const SHARED_SCHEMAS = [LaneMetadata, AsmEventSchema, ErrorResponse, RunResult, Run, Session, Approval, QueueInfo, DeadLetterInfo, ProviderInfo, LaneInfo, NodeInfo, DiffSummary];
