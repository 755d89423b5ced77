/**
 * The queue-lane engine contract. It knows nothing about agents: commands are JSON (`type` + `payload`)
 * routed to handlers registered by type, so that an engine backed by Redis (BullMQ) can carry them
 * across processes. The in-process engine and the BullMQ engine both implement this interface and
 * pass one conformance suite (test/lanes/conformance.ts).
 */

export interface RetryPolicy {
  /** Retries after the first attempt; total executions are maxRetries + 1. */
  maxRetries: number;
  initialDelayMs: number;
  maxDelayMs: number;
  multiplier: number;
}

export interface RateLimit {
  /** Commands allowed per window; enforced when a command is dispatched, never at submit. */
  maxCommands: number;
  windowMs: number;
}

export interface PriorityBoost {
  /** Deadline measured from the lane head's submit time. */
  deadlineMs: number;
  /** [remaining-time threshold in ms, priority boost]; sorted largest threshold first. */
  intervals: Array<[number, number]>;
}

export interface LaneConfig {
  id: string;
  /** Lower number runs first. */
  priority: number;
  /** Slots reserved for this lane under the engine's global concurrency cap. */
  minConcurrency: number;
  /** Commands of this lane running at once on one engine (per node when engines share Redis). */
  maxConcurrency: number;
  /**
   * BullMQ engine: commands of this lane running at once across every engine on the same Redis and
   * prefix (BullMQ's queue-wide global concurrency). The in-process engine ignores it.
   */
  clusterMaxConcurrency?: number;
  timeoutMs?: number;
  retry?: RetryPolicy;
  rateLimit?: RateLimit;
  boost?: PriorityBoost;
  /** Pending count at which `queue.lane.pressure` fires; `queue.lane.idle` fires when it drains to 0. */
  pressureThreshold?: number;
  /** Beyond this many pending commands a submit fails with `queue_full`. */
  maxPending?: number;
}

export interface EngineOptions {
  lanes: LaneConfig[];
  /** Cap on commands running at once across all lanes; unset means each lane is capped only by its own max. */
  globalConcurrency?: number;
  /** Dead letters kept; the oldest is evicted beyond this. 0 disables the DLQ. */
  dlqSize?: number;
}

export interface CommandSpec {
  type: string;
  payload: unknown;
  /** Caller-chosen id (idempotency key); generated when absent. */
  id?: string;
}

export interface CommandContext {
  id: string;
  lane: string;
  type: string;
  /** 1 for the first execution. */
  attempt: number;
  /** How many more executions the lane's retry policy allows after this one, if this one fails retryably. */
  retriesLeft: number;
  /** Aborted on timeout, on cancel, and on close. */
  signal: AbortSignal;
}

export type CommandHandler = (payload: any, ctx: CommandContext) => unknown | Promise<unknown>;

export interface CommandHandle {
  id: string;
  /** Settles with the handler's value, or rejects with the command's last error (LaneError or the handler's own). */
  result: Promise<unknown>;
}

export type LaneEventKey =
  | 'queue.command.submitted'
  | 'queue.command.started'
  | 'queue.command.completed'
  | 'queue.command.retry'
  | 'queue.command.dead_lettered'
  | 'queue.command.failed'
  | 'queue.command.timeout'
  | 'queue.command.cancelled'
  | 'queue.lane.pressure'
  | 'queue.lane.idle'
  | 'queue.shutdown.started'
  | 'queue.shutdown.complete';

export interface LaneEvent {
  key: LaneEventKey;
  payload: Record<string, unknown> | null;
  timestamp: number;
}

export type LaneEventListener = (event: LaneEvent) => void;

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
}

export interface LaneMetrics {
  id: string;
  priority: number;
  pending: number;
  active: number;
  /** Retries waiting out their backoff: neither pending nor active, but drain waits for them. */
  delayed: number;
  paused: boolean;
  pressured: boolean;
  submitted: number;
  completed: number;
  failed: number;
  timeout: number;
  retried: number;
  deadLettered: number;
  cancelled: number;
  /** Execution time of completed commands, ms. */
  latencyMs: LatencySummary;
  /** Time from submit to start, ms. */
  waitMs: LatencySummary;
}

export interface DeadLetter {
  commandId: string;
  commandType: string;
  laneId: string;
  payload: unknown;
  error: string;
  attempts: number;
  failedAt: number;
}

export interface LaneEngine {
  /** Route commands of this type to this handler; register before start. */
  register(type: string, handler: CommandHandler): void;
  start(): Promise<void>;
  submit(lane: string, command: CommandSpec): Promise<CommandHandle>;
  /**
   * Cancel a command: a pending one is removed and its result rejects with `CommandCancelled`;
   * an active one has its signal aborted. Returns where it was found.
   */
  cancel(commandId: string, reason?: string): Promise<'pending' | 'active' | 'unknown'>;
  subscribe(listener: LaneEventListener, filter?: (event: LaneEvent) => boolean): () => void;
  lanes(): LaneConfig[];
  metrics(): Promise<LaneMetrics[]>;
  pause(lane: string): Promise<void>;
  resume(lane: string): Promise<void>;
  deadLetters(): Promise<DeadLetter[]>;
  /** Submit a dead letter again to its lane; it leaves the DLQ. */
  retryDeadLetter(commandId: string): Promise<CommandHandle>;
  deleteDeadLetter(commandId: string): Promise<boolean>;
  /** Stop intake: later submits fail with `ShutdownInProgress`; queued and running work goes on. */
  shutdown(): Promise<void>;
  /** Resolve once nothing is pending, active or waiting to retry; reject with DrainTimeout after timeoutMs. */
  drain(timeoutMs: number): Promise<void>;
  /** Shutdown, abort whatever still runs, release everything. Idempotent. */
  close(): Promise<void>;
}

export type LaneErrorCode =
  | 'lane_not_found'
  | 'queue_full'
  | 'shutdown_in_progress'
  | 'timeout'
  | 'drain_timeout'
  | 'cancelled'
  | 'config_invalid'
  | 'unknown_command_type'
  /** The store (Redis) did not answer in time; nothing was submitted. */
  | 'unavailable';

/** Errors the engine itself produces. A handler's own errors pass through unchanged. */
export class LaneError extends Error {
  constructor(
    readonly code: LaneErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'LaneError';
  }
}
