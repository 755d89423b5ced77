import type { Logger } from 'pino';
import type { AgentMemoryGate } from '../backends/agent-memory.js';
import type { Backend, InterruptReason } from '../backends/types.js';
import type { SdkLoader } from '../backends/sdk-loader.js';
import { ShadowRepos, shadowLimits } from '../backends/shadow-git.js';
import type { AsmConfig } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import { runLanes } from '../lanes/policies.js';
import type { DeadLetter, LaneEngine } from '../lanes/types.js';
import { RemoteAcceptor, WORKER_LANE } from '../nodes/accept.js';
import type { Cluster } from '../nodes/cluster.js';
import { resolveRemoteOptions } from '../nodes/remote-options.js';
import { defaultPermission, resolvePermission } from '../providers/permission-modes.js';
import type { ApprovalDecision, ProviderDefinition } from '../providers/types.js';
import type { CreateRunBody, CreateSessionBody, ResolveLaneBody } from '../schemas/api.js';
import type { EventMetadata } from '../schemas/events.js';
import type { Page, PageRequest } from '../store/paging.js';
import type { ApprovalRecord, RunRecord, SessionRecord, Store } from '../store/types.js';
import type { TenantDirectory } from '../tenants.js';
import type { ActiveRuns } from './active-runs.js';
import { Admission, type RequestOrigin } from './admission.js';
import { ApprovalBook, notFound } from './approvals.js';
import { CommandBus, type CommandHandlers } from './commands.js';
import { ControlRouter } from './control.js';
import { DeadLetters, type DlqViewer } from './dead-letters.js';
import { RunExecutor } from './execution.js';
import { Placement } from './placement.js';
import { Quotas } from './quotas.js';
import { RunRecorder, type RecordedEventListener } from './recorder.js';
import { RunDiffs } from './run-diffs.js';
import { SessionFiles } from './session-files.js';
import { SESSION_DEFAULTS, SessionLifecycle } from './session-lifecycle.js';
import { Sweeper } from './sweeps.js';
import { RunEnds, waitForRun } from './wait-for-run.js';

export interface SessionServiceDeps {
  config: AsmConfig;
  store: Store;
  engine: LaneEngine;
  providers: Map<string, ProviderDefinition>;
  tenants: TenantDirectory;
  /** Backends by name: `core` always, `sdk` where the SDK lane is served. */
  backends: { core: Backend; sdk?: Backend };
  /** Admission by memory (backends/agent-memory.ts). */
  memory: AgentMemoryGate;
  sdks: SdkLoader;
  cluster: Cluster;
  logger: Logger;
}

/**
 * What the routes, the WebSocket and the CLI call: sessions, runs, approvals, interrupts and dead
 * letters, each checked against the caller's tenant. Changes that wait on runs or reach other
 * processes are commands on a queue lane (commands.ts): closing a session on `session`, interrupts
 * and approval decisions on `control`, runs on their queue, so control traffic overtakes agent work
 * however busy the agent lanes are. Creating a session is a direct call: it waits on nothing and
 * touches only its own new record and its tenant's holding (one atomic quota take), so a lane would
 * add only its hop (in Redis mode a BullMQ job, 40 Redis commands per create; bench/RESULTS.md,
 * issue 14). The layers below do the work; docs/architecture.md says how a run, a decision and an
 * event travel.
 */
export class SessionService {
  private readonly store: Store;
  private readonly commands: CommandBus;
  private readonly active: ActiveRuns = new Map();
  private readonly placement: Placement;
  private readonly quotas: Quotas;
  private readonly control: ControlRouter;
  private readonly lifecycle: SessionLifecycle;
  private readonly admission: Admission;
  private readonly executor: RunExecutor;
  private readonly letters: DeadLetters;
  private readonly sweeper: Sweeper;
  private readonly acceptor: RemoteAcceptor | undefined;
  private readonly recorder: RunRecorder;
  /** The shadow repositories of this process's sessions (their runs' diffs); app.ts sweeps those of closed sessions. */
  readonly shadow: ShadowRepos;
  /** The files API's view of a session's workspace. */
  readonly files: SessionFiles;
  private readonly diffs: RunDiffs;
  private intakeStopped = false;

  constructor(private readonly deps: SessionServiceDeps) {
    const { config, store, engine, cluster, providers, tenants, logger: log } = deps;
    this.store = store;
    const active = this.active;
    this.commands = new CommandBus(engine, config.limits.commandWaitMs);
    const recorder = new RunRecorder({ store, cluster, active, outageMs: config.outageMs, log });
    this.recorder = recorder;
    const decideOnControlLane = (id: string, decision: ApprovalDecision, reason: string) => this.commands.call('control', 'approval.decide', { id, decision, reason });
    const approvals = new ApprovalBook({ store, recorder, active, cluster, decideOnControlLane, log });
    this.acceptor = config.worker
      ? new RemoteAcceptor({ config, store, cluster, providers, enqueue: (run) => this.commands.submitRun(WORKER_LANE, run) })
      : undefined;
    this.control = new ControlRouter({
      store,
      engine,
      cluster,
      recorder,
      approvals,
      active,
      controlTimeoutMs: config.cluster.controlTimeoutMs,
      acceptRemoteRun: this.acceptor && ((runId) => this.acceptor!.accept(runId)),
    });
    this.placement = new Placement({
      engine,
      cluster,
      binaries: config.binaries,
      sdks: deps.sdks,
      remoteAvailable: cluster.distributed,
      nodeName: config.nodeName,
      ssh: { hosts: config.sshHosts, filesDir: config.sshFilesDir },
      runLanes: runLanes(config.laneOverrides),
    });
    this.quotas = new Quotas({ store, cluster, tenants, log });
    const { placement, quotas } = this;
    this.lifecycle = new SessionLifecycle({ config, store, cluster, providers, tenants, placement, quotas, control: this.control, log, prewarm: (session) => this.prewarm(session) });
    this.admission = new Admission({ config, store, cluster, commands: this.commands, recorder, placement, quotas, providers, tenants, log });
    this.shadow = new ShadowRepos(config.workspaces.shadowRoot, shadowLimits(config.workspaces));
    this.files = new SessionFiles({ config, tenants, cluster });
    this.diffs = new RunDiffs({ shadow: this.shadow, store, enabled: config.workspaces.diffs, log });
    this.executor = new RunExecutor({ config, store, cluster, providers, backends: deps.backends, memory: deps.memory, recorder, tenants, approvals, control: this.control, active, diffs: this.diffs, log });
    this.letters = new DeadLetters({ engine, store, submitRun: (tenant, sessionId, body) => this.submitRun(tenant, sessionId, body) });
    this.sweeper = new Sweeper({ store, cluster, recorder, commands: this.commands, active, executing: this.executor.executing, sweepMs: config.cluster.sweepMs, ownRunsOnly: config.worker !== undefined, log });
    // Only API processes hand runs to the run lanes (a worker's engine has its own lane only, app.ts).
    if (config.worker === undefined) this.sweeper.onStoreBack(() => this.admission.resumeQueued());
  }

  /** Every lane command and its handler; register before the engine starts. */
  registerCommands(): void {
    const handlers: CommandHandlers = {
      'session.close': async (p) => {
        const closed = await this.lifecycle.close(p.id, p.request_id);
        // Its runs are over: a process kept for it (a warm session) goes too. Other processes' sweeps find theirs.
        this.deps.backends.core.releaseSession?.(p.id);
        return closed;
      },
      'run.interrupt': (p) => this.control.interrupt(p.id),
      'approval.decide': (p) => this.control.decide(p.id, p.decision, p.reason),
      'node.end_lost_runs': (p) => this.sweeper.endLostRuns(p.run_ids),
      'run.execute': (p, ctx) => this.executor.execute(p.run_id, ctx, p.session_id),
    };
    this.commands.registerAll(handlers);
  }

  /** Serve control requests addressed to this process, and start the sweeps. */
  async start(): Promise<void> {
    await this.deps.cluster.start((request) => this.control.handle(request));
    this.sweeper.start();
  }

  /** Shutting down: no new sessions (the lane engine's shutdown stops every other intake). */
  stopIntake(): void {
    this.intakeStopped = true;
  }

  close(): void {
    this.sweeper.stop();
  }

  // ---------------------------------------------------------------- sessions

  async createSession(tenant: string, body: CreateSessionBody, origin: RequestOrigin = {}): Promise<SessionRecord> {
    // The one change the lanes' intake does not stop (it is no lane command): refused as a submit would be.
    if (this.intakeStopped) throw new AsmError('shutting_down', 'the server is shutting down; it takes no new sessions');
    this.quotas.assertMetadata(tenant, body.metadata);
    const session = await this.lifecycle.create(tenant, body, origin.requestId);
    // A workspace of its own was just filled (a clone); a shared cwd is left to its first run. A
    // worker primes a remote_node session's own workspace itself when it makes it.
    if (body.workspace && session.execution_mode === 'local') this.primeSnapshot(session.id, session.cwd);
    return session;
  }

  /**
   * ASM_PREWARM: the CLI of a new local session on the core lane (SessionLifecycle.create tells which)
   * starts now, off the request's path, and waits for the session's first run (RunExecutor.prewarm).
   * Best effort: a CLI that cannot start now fails its first run as it would have anyway.
   */
  private prewarm(session: SessionRecord): void {
    const { config, logger } = this.deps;
    if (!config.prewarm[session.provider]) return;
    void this.executor
      .prewarm(session)
      .catch((err: unknown) => logger.warn({ err, sessionId: session.id }, "could not prewarm the session's agent process (ASM_PREWARM); its first run starts it"));
  }

  /**
   * A session's workspace here changed outside its runs (created, uploaded to): its next snapshot is
   * prepared now. `cwd` is the folder on this process: a local session's, or on a worker the one the
   * files endpoint wrote to.
   */
  primeSnapshot(sessionId: string, cwd: string): void {
    this.diffs.prime(sessionId, cwd);
  }

  async getSession(tenant: string, id: string): Promise<SessionRecord> {
    const session = await this.store.sessions.get(id);
    if (!session || session.tenant !== tenant) throw new AsmError('not_found', `session ${id} not found`);
    return session;
  }

  listSessions(tenant: string, page: PageRequest): Promise<Page<SessionRecord>> {
    return this.store.sessions.page(tenant, page);
  }

  async closeSession(tenant: string, id: string, origin: RequestOrigin = {}): Promise<SessionRecord> {
    await this.getSession(tenant, id);
    return this.commands.call('session', 'session.close', { id, ...(origin.requestId && { request_id: origin.requestId }) });
  }

  // ---------------------------------------------------------------- runs

  async submitRun(tenant: string, sessionId: string, body: CreateRunBody, origin?: RequestOrigin): Promise<RunRecord> {
    this.assertRunBody(tenant, body);
    return this.admission.submit(tenant, sessionId, body, origin);
  }

  /** Submit a prompt and resolve with its run once it is terminal, or as it stands after timeoutMs. */
  async submitRunAndWait(tenant: string, sessionId: string, body: CreateRunBody, timeoutMs: number, origin?: RequestOrigin): Promise<RunRecord> {
    this.assertRunBody(tenant, body);
    // Watched before the run exists, so its end is heard without a read of the run (wait-for-run.ts);
    // where this process executes it, as the recorder stores the end.
    const ends = new RunEnds(this.store, sessionId, this.recorder);
    try {
      return await ends.until(await this.admission.submit(tenant, sessionId, body, origin), timeoutMs);
    } finally {
      ends.stop();
    }
  }

  /** The bounds of a prompt and its metadata, checked before anything is read or watched. */
  private assertRunBody(tenant: string, body: CreateRunBody): void {
    const { promptBytes } = this.deps.config.limits;
    if (Buffer.byteLength(body.prompt) > promptBytes) {
      throw new AsmError('payload_too_large', `prompt: larger than ${promptBytes} bytes (ASM_MAX_PROMPT_BYTES)`, { details: { field: 'prompt' } });
    }
    this.quotas.assertMetadata(tenant, body.metadata);
  }

  async getRun(tenant: string, id: string): Promise<RunRecord> {
    const run = await this.store.runs.get(id);
    if (!run || run.tenant !== tenant) throw new AsmError('not_found', `run ${id} not found`);
    return run;
  }

  async listRuns(tenant: string, sessionId: string, page: PageRequest): Promise<Page<RunRecord>> {
    await this.getSession(tenant, sessionId);
    return this.store.runs.pageBySession(sessionId, page);
  }

  async interruptRun(tenant: string, id: string): Promise<RunRecord> {
    // A run executing here is known to be the tenant's without a read (ActiveRun.record).
    if (this.active.get(id)?.record.tenant !== tenant) await this.getRun(tenant, id);
    return this.commands.call('control', 'run.interrupt', { id });
  }

  /** Resolve with the run once it is terminal, or as it stands after timeoutMs; `sessionId`, where known, saves a read (wait-for-run.ts). */
  waitForRun(runId: string, timeoutMs: number, sessionId?: string): Promise<RunRecord> {
    return waitForRun(this.store, runId, timeoutMs, sessionId);
  }

  /** Where a run with these options would execute (POST /v1/providers/{name}/resolve), driver_opts resolved as a run's are. */
  async resolveLane(providerName: string, body: ResolveLaneBody): Promise<EventMetadata> {
    const provider = this.deps.providers.get(providerName);
    if (!provider) throw new AsmError('not_found', `provider ${providerName} not found`);
    const queue = body.queue ?? provider.defaultQueue;
    this.placement.assertQueue(queue);
    const executionMode = body.execution_mode ?? SESSION_DEFAULTS.execution_mode;
    const requested = body.lane ?? SESSION_DEFAULTS.lane;
    const permission = resolvePermission(provider, body) ?? defaultPermission(provider);
    const placed = await this.placement.resolve(provider, { requested, executionMode, queue, providerPermissionMode: permission.provider_permission_mode });
    if (executionMode === 'remote_node') {
      await this.placement.assertRemoteCli(provider, resolveRemoteOptions([this.deps.config.remoteDefaults, body.driver_opts]).remote_node);
    }
    return placed;
  }

  // ---------------------------------------------------------------- approvals

  async getApproval(tenant: string, id: string): Promise<ApprovalRecord> {
    const approval = await this.store.approvals.get(id);
    if (!approval || approval.tenant !== tenant) throw notFound(id);
    return approval;
  }

  async decideApproval(tenant: string, id: string, decision: ApprovalDecision, reason: string | null): Promise<ApprovalRecord> {
    await this.getApproval(tenant, id);
    return this.commands.call('control', 'approval.decide', { id, decision, reason });
  }

  async listPendingApprovals(tenant: string, sessionId: string): Promise<ApprovalRecord[]> {
    await this.getSession(tenant, sessionId);
    return this.store.approvals.listPending({ sessionId });
  }

  // ---------------------------------------------------------------- dead letters

  deadLetters(viewer: DlqViewer): Promise<DeadLetter[]> {
    return this.letters.list(viewer);
  }

  retryDeadLetter(viewer: DlqViewer, id: string): Promise<{ command_id: string; run_id: string | null }> {
    return this.letters.retry(viewer, id);
  }

  deleteDeadLetter(viewer: DlqViewer, id: string): Promise<void> {
    return this.letters.delete(viewer, id);
  }

  // ---------------------------------------------------------------- event streams

  /** Hold one of the tenant's event streams until the returned function is called; quota_exceeded beyond its quota. */
  holdConnection(tenant: string): Promise<() => void> {
    return this.quotas.holdConnection(tenant);
  }

  // ---------------------------------------------------------------- this process

  /** Each event this process records, with its run (metrics); returns the unsubscribe. */
  onEventRecorded(listener: RecordedEventListener): () => void {
    return this.recorder.onEventRecorded(listener);
  }

  /** Runs executing in this process now. */
  activeRuns(): number {
    return this.active.size;
  }

  /** Runs a worker accepted and has not finished: its load, as the API balances a pool by it. */
  acceptedRuns(): number {
    return this.acceptor?.acceptedRuns ?? 0;
  }

  /** Interrupt every run this process executes (graceful shutdown). */
  async interruptAll(reason: InterruptReason): Promise<void> {
    const running = [...this.active.values()].flatMap((run) => (run.backend ? [run.backend] : []));
    await Promise.all(running.map((backend) => backend.interrupt(reason).catch(() => undefined)));
    await Promise.all(running.map((backend) => backend.done));
  }
}
