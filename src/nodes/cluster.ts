import type { ErrorBody } from '../errors/kinds.js';
import type { ApprovalDecision } from '../providers/types.js';

/**
 * What the API processes of one deployment know of each other. Embedded mode is a cluster of one
 * (local.ts); distributed mode keeps it in Redis (redis.ts). The session service asks three things
 * of it: which process owns a run and whether that process is alive, how to hand a control request
 * (interrupt, approval decision) to that owner, and how to serialise decisions that span processes
 * (a session's admission, the one sweeper that may end an orphaned run).
 */

export interface NodeSnapshot {
  /** Instance id: unique per process, and the `owner` recorded on the runs it executes. */
  id: string;
  /** The configured node name (ASM_NODE_NAME); several instances may share it. */
  name: string;
  role: 'api' | 'worker';
  version: string;
  /** The Node.js version this process runs on (`process.versions.node`); a run goes only to a node of the API's major. */
  node_version: string;
  providers: string[];
  /** Providers it serves whose CLI is not found here (at start-up), with the binary it looked for. */
  missing_clis: MissingCli[];
  capacity: number;
  load: number;
  pool: string;
  /** starting: registered, not yet taking runs (a worker's boot); draining: taking no new runs. */
  state: 'starting' | 'ready' | 'draining';
  /** The sandbox this process runs agent CLIs in (ASM_SANDBOX). */
  sandbox: 'bwrap' | 'none';
  /** sha256 of the worker's cookie (asm worker --cookie), null without one. Internal: not in GET /v1/nodes. */
  cookie?: string | null;
  /** Where a worker serves the files of the workspaces it holds (asm worker --files-port; nodes/worker-files.ts); null: nowhere. */
  files_url?: string | null;
  /** The bearer token that endpoint asks for, random per instance. Internal: not in GET /v1/nodes. */
  files_token?: string | null;
  started_at: string;
  last_heartbeat: string;
}

export interface MissingCli {
  provider: string;
  binary: string;
}

/**
 * A control request executed by the process that owns the run it targets; `start` hands a
 * remote_node run to a worker, which acknowledges once the run is queued there (remote-start.ts).
 */
export type ControlRequest =
  | { kind: 'interrupt'; runId: string }
  | { kind: 'decide'; approvalId: string; decision: ApprovalDecision; reason: string | null }
  | { kind: 'start'; runId: string };

export type ControlReply = { ok: true; value: unknown } | { ok: false; error: ErrorBody };

export type ControlHandler = (request: ControlRequest) => Promise<ControlReply>;

/** The owner did not take the request: it is gone, or not listening. The caller acts in its place. */
export class OwnerUnreachable extends Error {
  constructor(readonly owner: string) {
    super(`node instance ${owner} is not reachable`);
    this.name = 'OwnerUnreachable';
  }
}

export interface Cluster {
  readonly self: string;
  /** False for the embedded cluster of one process. */
  readonly distributed: boolean;
  /** Register this process, start heartbeats, and serve control requests addressed to it. */
  start(handler: ControlHandler): Promise<void>;
  nodes(): Promise<NodeSnapshot[]>;
  /** Whether the instance's heartbeat is current. */
  isAlive(id: string): Promise<boolean>;
  /**
   * Execute a control request on the instance `id` and return its reply. Rejects with OwnerUnreachable
   * when nobody listens for that instance, and with AsmError `timeout` after timeoutMs without a reply.
   */
  send(id: string, request: ControlRequest, timeoutMs: number): Promise<ControlReply>;
  /** Run `work` while holding the deployment-wide lock `key`; one holder at a time across processes. */
  withLock<T>(key: string, work: () => Promise<T>): Promise<T>;
  /** Whether the lock `key` is held, or waited for, now: by this process or, in Redis mode, by another. */
  lockHeld(key: string): Promise<boolean>;
  /** True for exactly one caller per key within ttlMs, across processes. */
  claim(key: string, ttlMs: number): Promise<boolean>;
  /** Mark this instance starting, ready or draining (it takes no new work). */
  setState(state: NodeSnapshot['state']): void;
  /** Publish this instance's snapshot now rather than at the next heartbeat (its load changed). */
  announce(): Promise<void>;
  /**
   * How many times this instance's own heartbeat has lapsed (gone longer than the TTL allows without
   * reaching Redis), counting one in progress. After a lapse other instances may have declared it
   * lost and ended its runs, so a run it still executes must be checked before it writes again.
   */
  heartbeatLapses(): number;
  /**
   * The deployment's clock, in ms since the epoch: Redis's in distributed mode, this process's in
   * embedded mode. A time one process stamps and another compares (an approval's expires_at, read by
   * the API processes' sweeps) is on this clock, so a process whose own clock is off neither expires
   * another's deadline early nor has its own expired late.
   */
  now(): number;
  /** Deregister and release connections. */
  close(): Promise<void>;
}

/** What a process reports of itself on every heartbeat. */
export type SelfReport = () => Pick<NodeSnapshot, 'name' | 'role' | 'version' | 'node_version' | 'providers' | 'missing_clis' | 'capacity' | 'load' | 'pool' | 'cookie' | 'sandbox' | 'files_url' | 'files_token'>;
