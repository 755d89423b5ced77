import type { AsmEvent, EventMetadata } from '../schemas/events.js';
import type { Page, PageRequest } from './paging.js';
import type { Continuation } from '../schemas/agent-options.js';
import type { Approval, ExecutionSurface, Run, Session } from '../schemas/api.js';
import type { McpServers } from '../schemas/mcp-servers.js';
import type { StoredDiff } from '../schemas/workspace.js';

/**
 * Persistence for sessions, runs, approvals and events. Embedded mode keeps them in memory; distributed
 * mode keeps them in Redis behind the same interface. Every method is async for that reason, and every
 * operation that must be atomic across API processes (seq assignment, resolving an approval) is one call.
 */

export interface SessionRecord extends Session {
  tenant: string;
  /**
   * The provider's cumulative totals for its conversation (ProviderTotals), from the last run that
   * reported any; given back to the next run that continues the conversation. Internal: not in the API.
   */
  provider_totals?: Record<string, number> | null;
  /**
   * The session's MCP servers as the caller gave them, secrets included: what its runs hand the CLI.
   * Internal: the API shows `mcp_servers`, the same servers with each secret value redacted.
   */
  mcp_server_config?: McpServers;
  /**
   * The node of the session's latest remote_node run to start: the provider's files of the
   * conversation are there, so a pooled run that continues it goes back to it. Internal.
   */
  conversation_node?: string | null;
}

/** The effective remote payload of a remote_node run, as nodes/remote-options.ts resolves it. */
export type BootstrapMode = 'require_prestarted' | 'ensure_started';

export interface RemoteOptions {
  /** A node name, or `pool:NAME` for any live node of that pool. */
  remote_node: string;
  /** Must equal the cookie the node was started with (`asm worker --cookie`); null when the node has none. */
  remote_cookie: string | null;
  /** How long to wait for a live node of that name (or pool) to be registered. */
  remote_connect_timeout_ms: number;
  /** How long the node may take to acknowledge the start. */
  remote_rpc_timeout_ms: number;
  /** ensure_started: how long a registered node may take to become ready. */
  remote_boot_lease_timeout_ms: number;
  remote_bootstrap_mode: BootstrapMode;
  /** Working directory on the node, inside its workspace root; null: the session's cwd, taken relative to the root. */
  remote_cwd: string | null;
  /** Acknowledgement bound of interrupts and approval decisions handed to the node. */
  remote_transport_call_timeout_ms: number;
  [forwardCompatible: string]: unknown;
}

/** The agent options of a run: its session's, overridden by the run's own (sessions/run-options.ts). */
export interface AgentRunOptions {
  model: string | null;
  permission_mode: string | null;
  provider_permission_mode: string;
  allowed_tools: string[];
  system_prompt: string | null;
  max_turns: number | null;
  reasoning_effort: string | null;
}

/** What a run was asked to do, fixed at submit time (after session defaults and per-run overrides). */
export interface RunOptions {
  lane: 'auto' | 'core' | 'sdk';
  execution_mode: 'local' | 'remote_node';
  driver_opts: Record<string, unknown>;
  continuation: Continuation;
  agent: AgentRunOptions;
  /** Where the CLI is placed, when not a local subprocess (backends/surfaces.ts). */
  execution_surface?: ExecutionSurface;
  /** The effective remote payload (nodes/remote-options.ts), resolved at submit; absent for a local run. */
  remote?: RemoteOptions;
  /**
   * The output the run may produce (bytes of event payloads): the server's limit, or the tenant's
   * quota where lower, resolved at submit where the tenant is known; a worker knows no tenants.
   */
  output_limit_bytes: number;
}

export interface RunRecord extends Run {
  tenant: string;
  options: RunOptions;
  /** Handed to the lane engine (counts against max_concurrent_runs), as opposed to waiting in the session's FIFO. */
  dispatched: boolean;
  /** Lane observability fields stamped on every event of the run. */
  observability: EventMetadata;
  /** Instance id of the process executing the run, set when execution begins; null before. */
  owner: string | null;
  /** An interrupt asked for while the run had no reachable owner; the executor checks it once it owns the run. */
  interrupt_requested: boolean;
  /** Its session's last seq when the run was created: every event of the run comes after it (run-events.ts). Absent on older records. */
  events_after?: number;
}

export interface ApprovalRecord extends Approval {
  tenant: string;
}

/**
 * An event before the log stamps it; `timestamp` may be fixed by the caller (a terminal event's result
 * uses it), and so may `id`: a caller that retries an append whose reply may have been lost (the
 * recorder, through a store outage) stamps the id once, and the Redis store keeps an append whose id
 * is that of its run's last append only once (redis-schema.ts, asmAppend).
 */
export type NewEvent = Omit<AsmEvent, 'id' | 'seq' | 'timestamp'> & { timestamp?: string; id?: string };

export interface SessionStore {
  /**
   * Stores a new session unless the store holds `limit` sessions already, closed ones included
   * (ASM_MAX_SESSIONS): false then, and nothing is stored. The check and the session's place in the
   * count are one step, so processes creating at once never hold more than `limit` between them.
   */
  create(session: SessionRecord, limit?: number): Promise<boolean>;
  get(id: string): Promise<SessionRecord | undefined>;
  /** A tenant's sessions in creation order, a page at a time (paging.ts). */
  page(tenant: string, request: PageRequest): Promise<Page<SessionRecord>>;
  update(id: string, patch: Partial<SessionRecord>): Promise<SessionRecord>;
  count(): Promise<number>;
}

/** What admission reads of a session (admission-slots.ts): how many of its runs are in flight and how many wait. */
export interface AdmissionCounts {
  inFlight: number;
  waiting: number;
}

export interface RunStore {
  create(run: RunRecord): Promise<void>;
  get(id: string): Promise<RunRecord | undefined>;
  update(id: string, patch: Partial<RunRecord>): Promise<RunRecord>;
  /**
   * The run, taken for `owner` in the same step where it is queued, owned by no process and not a
   * remote_node run (its worker takes one as it accepts it: nodes/accept.ts); `claimed` says whether
   * this call took it. Undefined when there is no run. What a run's executor reads first: its read
   * and its claim in one round trip in Redis mode (sessions/execution.ts).
   */
  claimLocal(id: string, owner: string): Promise<{ run: RunRecord; claimed: boolean } | undefined>;
  /** Every run of a session, oldest first: O(the session's history); not for a per-run path. */
  listBySession(sessionId: string): Promise<RunRecord[]>;
  /** The session's oldest waiting run, if any: O(1) in its history. */
  oldestWaiting(sessionId: string): Promise<RunRecord | undefined>;
  /** The session's runs not yet terminal (in flight or waiting), oldest first: O(those runs), not O(history). */
  listUnfinishedBySession(sessionId: string): Promise<RunRecord[]>;
  /**
   * Check the session's in-flight index against the records and drop what no longer holds (a
   * process that died between updating a run and its index); the corrected counts. O(in-flight runs).
   */
  recountInFlight(sessionId: string): Promise<AdmissionCounts>;
  /** A session's runs in creation order, a page at a time. */
  pageBySession(sessionId: string, request: PageRequest): Promise<Page<RunRecord>>;
  /** Runs not yet terminal (state queued or running) across all sessions: O(every queued run); for a reconcile after an outage. */
  listUnfinished(): Promise<RunRecord[]>;
  /**
   * Runs not yet terminal that some process has taken (`owner` set), across all sessions, for the
   * sweep that ends a lost process's runs: O(the runs executing), whatever the backlog of queued runs.
   */
  listOwnedUnfinished(): Promise<RunRecord[]>;
}

export type ResolveOutcome = { outcome: 'resolved'; approval: ApprovalRecord } | { outcome: 'not_found' } | { outcome: 'already_resolved'; approval: ApprovalRecord };

export interface ApprovalStore {
  create(approval: ApprovalRecord): Promise<void>;
  get(id: string): Promise<ApprovalRecord | undefined>;
  /** Atomically move a pending approval to resolved; a second decision sees already_resolved. */
  resolve(id: string, decision: NonNullable<Approval['decision']>, reason: string | null): Promise<ResolveOutcome>;
  listPending(filter: { sessionId?: string; runId?: string }): Promise<ApprovalRecord[]>;
  /** Pending approvals whose expires_at is at or before `now` (ms epoch), earliest deadline first, at most `limit`. */
  listExpired(now: number, limit: number): Promise<ApprovalRecord[]>;
}

export type EventListener = (event: AsmEvent) => void;

/**
 * Events as JSON (EventLog.readJson): each one's JSON, comma-separated, and the last one's seq. In the
 * form each store has it at hand: the embedded store the text it makes, Redis the bytes it stores,
 * each event's and each comma's. Made into the other's form, a page cost the server 17% more CPU in
 * Redis mode and 34% more embedded (bench/RESULTS.md, issue 14, thirty-sixth pass).
 */
export interface EventsJson {
  json: string | Buffer[];
  /** null when there are none. */
  lastSeq: number | null;
}

export interface EventLog {
  /** Assign the session's next seq (gap-free), an id and a timestamp; store; publish to subscribers. */
  append(event: NewEvent): Promise<AsmEvent>;
  /** Events of a session with seq > after, oldest first, optionally of one run only. */
  read(sessionId: string, opts: { after: number; runId?: string; limit: number }): Promise<AsmEvent[]>;
  /**
   * The events read() finds, as the JSON of their public form (what GET /v1/runs/{id}/events answers):
   * a page is written from it without parsing and serialising every event again.
   */
  readJson(sessionId: string, opts: { after: number; runId?: string; limit: number }): Promise<EventsJson>;
  lastSeq(sessionId: string): Promise<number>;
  /**
   * Live events of one session, or of all sessions when sessionId is null. Returns unsubscribe.
   * A listener sees each event appended after subscribe() returns, in seq order per session. In a
   * store shared by processes "after" means: after the next call this process makes to the store
   * reaches it (so read after subscribing, and nothing falls between, not even an append this process
   * issued before subscribing and has no answer to yet). Such a store may also hand a
   * listener a few events appended just before, so a listener that needs exactness compares seq (as
   * followEvents does).
   */
  subscribe(sessionId: string | null, listener: EventListener): () => void;
}

/** What a tenant holds at once against its quotas (src/sessions/quotas.ts); named as the tenants file names the quota. */
export type HoldingKind = 'sessions' | 'active_runs' | 'queued_runs' | 'connections';

/**
 * Each tenant's holdings of each kind: ids (a session's, a run's, an event stream's) with the time
 * each was taken. Taking one under a limit is one atomic step, so a quota holds across processes
 * without a lock and without counting the tenant's records.
 */
export interface HoldingStore {
  /** Hold `id` unless the tenant holds `limit` of this kind already; false then. An id held already stays held (true). */
  take(tenant: string, kind: HoldingKind, id: string, limit: number): Promise<boolean>;
  /** Hold `id` whatever the limit: a run taking over the slot of the run that ended before it. */
  add(tenant: string, kind: HoldingKind, id: string): Promise<void>;
  release(tenant: string, kind: HoldingKind, id: string): Promise<void>;
  /** The ids taken before `before` (ms epoch): what a check for holdings left behind by a dead process looks at. */
  takenBefore(tenant: string, kind: HoldingKind, before: number): Promise<string[]>;
}

/**
 * The workspace diffs: a run's (keyed by its id), and a session's since its first run (keyed by the
 * session's id), written where the run executed and read by any process. They go with their session.
 */
export interface DiffStore {
  put(id: string, diff: StoredDiff): Promise<void>;
  get(id: string): Promise<StoredDiff | undefined>;
}

/** What admission reads of a session at once (src/sessions/admission.ts). */
export interface AdmissionView {
  session: SessionRecord;
  /** Its runs in flight and waiting (admission-slots.ts), from indexes kept by the runs' create and update: O(1) in its history. */
  counts: AdmissionCounts;
  /** Its last seq (EventLog.lastSeq). */
  lastSeq: number;
}

export interface Store {
  sessions: SessionStore;
  runs: RunStore;
  approvals: ApprovalStore;
  events: EventLog;
  holdings: HoldingStore;
  diffs: DiffStore;
  /**
   * A session with its admission counts and its last seq, read together (one round trip in Redis,
   * where admission and the start of a waiting run read them at every run); undefined when there is
   * no such session.
   */
  admissionView(sessionId: string): Promise<AdmissionView | undefined>;
  /** Forget the longest-closed session with its runs, approvals and events; its id, or undefined if none is closed. */
  evictOldestClosed(): Promise<string | undefined>;
  /** Resolves when the backing store answers; rejects with AsmError kind 'not_ready' otherwise (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
