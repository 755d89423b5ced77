import { randomUUID } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import { relative } from 'node:path';
import type { Logger } from 'pino';
import type { AsmConfig } from '../config.js';
import { AsmError, badField, type ErrorBody } from '../errors.js';
import type { Backend, BackendRun, InterruptReason } from '../backends/types.js';
import { buildCliEnv } from '../providers/env.js';
import { checkSurface, LOCAL_SURFACE } from '../backends/surfaces.js';
import { LaneError, type CommandContext, type DeadLetter, type LaneEngine } from '../lanes/types.js';
import { resolveBinary } from '../providers/registry.js';
import type { ApprovalDecision, ProviderDefinition } from '../providers/types.js';
import type { CreateRunBody, CreateSessionBody, ExecutionSurface, RunResult } from '../schemas/api.js';
import { TERMINAL_KINDS, type AsmEvent, type EventKind, type EventMetadata, type EventPayload, type ProviderEvent } from '../schemas/events.js';
import type { ApprovalRecord, RunRecord, SessionRecord, Store } from '../store/types.js';
import { ApprovalBook } from './approvals.js';
import { needsSdkProbe, resolveLane, type ExecutionMode, type RequestedLane } from './lane-resolution.js';
import type { SdkLoader } from '../backends/sdk-loader.js';
import { isTerminalRunState, projectResult, type ProjectableEvent } from './projection.js';
import { KeyedSerializer } from './serial.js';
import { OwnerUnreachable, type Cluster, type ControlReply, type ControlRequest } from '../nodes/cluster.js';
import { remoteTarget, resolveRemoteOptions, type RemoteOptions } from '../nodes/remote-options.js';
import { preflightOnWorker, remoteFailure, startOnNode } from '../nodes/remote-start.js';
import { VERSION } from '../version.js';
import { resolveWorkspaceDir } from './workspace.js';

/**
 * Sessions, runs, approvals and interrupts. Every operation is a command on a queue lane: session
 * changes on `session`, interrupts and approval decisions on `control`, runs on their queue (`prompt`,
 * `skill`, …). So control traffic overtakes agent work however busy the agent lanes are.
 *
 * Per-session admission sits above the lanes: a session runs at most max_concurrent_runs at once and
 * holds at most max_queued_runs more in its own FIFO; beyond that a submit is refused with at_capacity.
 *
 * Across processes (distributed mode) the lane command may execute on another API process than the
 * one that took the request. A run belongs to the process executing it (`owner`); interrupts and
 * approval decisions are handed to that owner through the cluster, because only it holds the CLI
 * and serialises the run's events. When an owner stops heartbeating, a sweep ends its runs with
 * `node_lost`, and approval deadlines are kept by a sweep that any process may perform.
 *
 * A remote_node run is admitted by an API process like any other; its lane command then hands it
 * to a worker (nodes/remote-start.ts) instead of executing it. The worker, an `asm worker` process
 * running this same service, queues it on its own engine and becomes its owner: it executes it
 * with the code path of a local run, so routing to the owner and the sweeps apply unchanged.
 */

/** The one lane of a worker's own engine: the runs handed to it. */
export const WORKER_LANE = 'remote';

const SESSION_DEFAULTS = {
  lane: 'auto',
  execution_mode: 'local',
  max_concurrent_runs: 1,
  max_queued_runs: 10,
  approval_timeout_ms: 120_000,
  run_deadline_ms: 600_000,
} as const;

/** Command types this service registers on the lane engine. */
const COMMANDS = {
  createSession: 'session.create',
  closeSession: 'session.close',
  executeRun: 'run.execute',
  interruptRun: 'run.interrupt',
  decideApproval: 'approval.decide',
} as const;

/** Expired approvals handled per sweep; the rest wait for the next one. */
const SWEEP_BATCH = 100;
/** Long enough for one process to record a lost run's end before another may try. */
const ORPHAN_CLAIM_MS = 60_000;

/** User-facing commands answer with a value or an error body, so a refused request is not a failed command. */
type Outcome<T> = { ok: true; value: T } | { ok: false; error: ErrorBody };

interface ActiveRun {
  /** Set once the backend is started; absent only for the instant between registration and start. */
  backend?: BackendRun;
  /** Events of this run so far, for the projection. */
  events: AsmEvent[];
  ended: boolean;
  /** The cluster's heartbeat-lapse count when this run was last confirmed to be this process's. */
  checkedLapses: number;
}

export interface SessionServiceDeps {
  config: AsmConfig;
  store: Store;
  engine: LaneEngine;
  providers: Map<string, ProviderDefinition>;
  /** Backends by lane: `core` always, `sdk` where the SDK lane is served. */
  backends: { core: Backend; sdk?: Backend };
  sdks: SdkLoader;
  cluster: Cluster;
  logger: Logger;
}

export class SessionService {
  private readonly config: AsmConfig;
  private readonly store: Store;
  private readonly engine: LaneEngine;
  private readonly providers: Map<string, ProviderDefinition>;
  private readonly backends: { core: Backend; sdk?: Backend };
  private readonly sdks: SdkLoader;
  private readonly cluster: Cluster;
  private readonly log: Logger;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private readonly approvals: ApprovalBook;
  /** Runs executing in this process. */
  private readonly active = new Map<string, ActiveRun>();
  /** A worker's runs: accepted (queued on its engine or executing), until they end. */
  private readonly accepted = new Set<string>();
  /** The events of one run, serialised (run id → chain). */
  private readonly runEvents = new KeyedSerializer();

  constructor(deps: SessionServiceDeps) {
    this.config = deps.config;
    this.store = deps.store;
    this.engine = deps.engine;
    this.providers = deps.providers;
    this.backends = deps.backends;
    this.sdks = deps.sdks;
    this.cluster = deps.cluster;
    this.log = deps.logger;
    this.approvals = new ApprovalBook(
      this.store,
      {
        withRun: (runId, work) => this.runEvents.run(runId, work),
        emit: (runId, kind, payload) => this.emitForRun(runId, kind, payload),
        forward: (runId, approvalId, decision, reason) => this.forwardDecision(runId, approvalId, decision, reason),
      },
    );
  }

  registerCommands(): void {
    const userFacing = <P, T>(fn: (payload: P) => Promise<T>) => async (payload: P): Promise<Outcome<T>> => {
      try {
        return { ok: true, value: await fn(payload) };
      } catch (err) {
        return { ok: false, error: AsmError.from(err).toBody() };
      }
    };
    this.engine.register(COMMANDS.createSession, userFacing((p: { tenant: string; body: CreateSessionBody }) => this.doCreateSession(p.tenant, p.body)));
    this.engine.register(COMMANDS.closeSession, userFacing((p: { id: string }) => this.doCloseSession(p.id)));
    this.engine.register(COMMANDS.interruptRun, userFacing((p: { id: string }) => this.doInterrupt(p.id)));
    this.engine.register(
      COMMANDS.decideApproval,
      userFacing((p: { id: string; decision: ApprovalDecision; reason: string | null }) => this.doDecide(p.id, p.decision, p.reason)),
    );
    this.engine.register(COMMANDS.executeRun, (p: { run_id: string }, ctx: CommandContext) => this.executeRun(p.run_id, ctx));
  }

  // ---------------------------------------------------------------- public API (HTTP, WebSocket, CLI)

  createSession(tenant: string, body: CreateSessionBody): Promise<SessionRecord> {
    return this.command('session', COMMANDS.createSession, { tenant, body });
  }

  async getSession(tenant: string, id: string): Promise<SessionRecord> {
    const session = await this.store.sessions.get(id);
    if (!session || session.tenant !== tenant) throw new AsmError('not_found', `session ${id} not found`);
    return session;
  }

  listSessions(tenant: string): Promise<SessionRecord[]> {
    return this.store.sessions.list(tenant);
  }

  async closeSession(tenant: string, id: string): Promise<SessionRecord> {
    await this.getSession(tenant, id);
    return this.command('session', COMMANDS.closeSession, { id });
  }

  async submitRun(tenant: string, sessionId: string, body: CreateRunBody): Promise<RunRecord> {
    const session = await this.getSession(tenant, sessionId);
    if (Buffer.byteLength(body.prompt) > this.config.limits.promptBytes) {
      throw new AsmError('payload_too_large', `prompt: larger than ${this.config.limits.promptBytes} bytes (ASM_MAX_PROMPT_BYTES)`, {
        details: { field: 'prompt' },
      });
    }
    return this.withSession(session.id, () => this.admit(session.id, body));
  }

  async getRun(tenant: string, id: string): Promise<RunRecord> {
    const run = await this.store.runs.get(id);
    if (!run || run.tenant !== tenant) throw new AsmError('not_found', `run ${id} not found`);
    return run;
  }

  async listRuns(tenant: string, sessionId: string): Promise<RunRecord[]> {
    await this.getSession(tenant, sessionId);
    return this.store.runs.listBySession(sessionId);
  }

  async interruptRun(tenant: string, id: string): Promise<RunRecord> {
    await this.getRun(tenant, id);
    return this.command('control', COMMANDS.interruptRun, { id });
  }

  async getApproval(tenant: string, id: string): Promise<ApprovalRecord> {
    const approval = await this.store.approvals.get(id);
    if (!approval || approval.tenant !== tenant) throw new AsmError('not_found', `approval ${id} not found`, { domain: 'approval' });
    return approval;
  }

  async decideApproval(tenant: string, id: string, decision: ApprovalDecision, reason: string | null): Promise<ApprovalRecord> {
    await this.getApproval(tenant, id);
    return this.command('control', COMMANDS.decideApproval, { id, decision, reason });
  }

  async listPendingApprovals(tenant: string, sessionId: string): Promise<ApprovalRecord[]> {
    await this.getSession(tenant, sessionId);
    return this.store.approvals.listPending({ sessionId });
  }

  /** Resolve with the run once it is terminal, or as it stands after timeoutMs. */
  async waitForRun(runId: string, timeoutMs: number): Promise<RunRecord> {
    const run = await this.store.runs.get(runId);
    if (!run) throw new AsmError('not_found', `run ${runId} not found`);
    if (isTerminalRunState(run.state)) return run;
    return new Promise<RunRecord>((resolve) => {
      let unsubscribe = () => {};
      const finish = () => {
        clearTimeout(timer);
        unsubscribe();
        this.store.runs.get(runId).then((r) => resolve(r ?? run), () => resolve(run));
      };
      const timer = setTimeout(finish, timeoutMs);
      unsubscribe = this.store.events.subscribe(run.session_id, (event) => {
        if (event.run_id === runId && TERMINAL_KINDS.has(event.kind)) finish();
      });
      // The run may have ended between the first read and the subscription.
      this.store.runs.get(runId).then((r) => r && isTerminalRunState(r.state) && finish());
    });
  }

  /** Dead letters the tenant may see: failed runs of its own sessions. */
  async deadLetters(tenant: string): Promise<DeadLetter[]> {
    const letters = await this.engine.deadLetters();
    const visible: DeadLetter[] = [];
    for (const letter of letters) if (await this.ownsLetter(tenant, letter)) visible.push(letter);
    return visible;
  }

  /**
   * Retry a dead letter. A failed run is never re-executed (a run has exactly one terminal event):
   * its prompt is submitted again as a new run of the same session, through normal admission.
   */
  async retryDeadLetter(tenant: string, id: string): Promise<{ command_id: string; run_id: string | null }> {
    const letter = await this.findLetter(tenant, id);
    const runId = runIdOf(letter);
    if (!runId) return { command_id: (await this.engine.retryDeadLetter(id)).id, run_id: null };
    const failed = (await this.store.runs.get(runId))!;
    const retry = await this.submitRun(tenant, failed.session_id, {
      prompt: failed.prompt,
      queue: failed.queue,
      lane: failed.options.lane,
      execution_mode: failed.options.execution_mode,
      driver_opts: failed.options.driver_opts,
      continuation: failed.options.continuation,
      metadata: { ...failed.metadata, retry_of: failed.id },
    });
    await this.engine.deleteDeadLetter(id);
    return { command_id: retry.id, run_id: retry.id };
  }

  async deleteDeadLetter(tenant: string, id: string): Promise<void> {
    await this.findLetter(tenant, id);
    await this.engine.deleteDeadLetter(id);
  }

  private async findLetter(tenant: string, id: string): Promise<DeadLetter> {
    const letter = (await this.engine.deadLetters()).find((l) => l.commandId === id);
    if (!letter || !(await this.ownsLetter(tenant, letter))) throw new AsmError('not_found', `dead letter ${id} not found`);
    return letter;
  }

  private async ownsLetter(tenant: string, letter: DeadLetter): Promise<boolean> {
    const runId = runIdOf(letter);
    const run = runId ? await this.store.runs.get(runId) : undefined;
    return run?.tenant === tenant;
  }

  /** Where a run with these options would execute (POST /v1/providers/{name}/resolve). */
  async resolveLane(providerName: string, requestedLane: RequestedLane, executionMode: ExecutionMode, queue?: string): Promise<EventMetadata> {
    const provider = this.providers.get(providerName);
    if (!provider) throw new AsmError('not_found', `provider ${providerName} not found`);
    const lane = queue ?? provider.defaultQueue;
    this.assertQueue(lane);
    return this.resolveLaneFor(provider, requestedLane, executionMode, lane);
  }

  /** Runs executing in this process now. */
  activeRuns(): number {
    return this.active.size;
  }

  /** Runs a worker accepted and has not finished: its load, as the API balances a pool by it. */
  acceptedRuns(): number {
    return this.accepted.size;
  }

  /** Interrupt every run this process executes (graceful shutdown). */
  async interruptAll(reason: InterruptReason): Promise<void> {
    const running = [...this.active.values()].flatMap((run) => (run.backend ? [run.backend] : []));
    await Promise.all(running.map((backend) => backend.interrupt(reason).catch(() => undefined)));
    await Promise.all(running.map((backend) => backend.done));
  }

  /** Serve control requests addressed to this process, and start the deadline and orphan sweeps. */
  async start(): Promise<void> {
    await this.cluster.start((request) => this.onControlRequest(request));
    this.sweepTimer = setInterval(() => void this.sweep(), this.config.cluster.sweepMs);
    this.sweepTimer.unref();
  }

  close(): void {
    clearInterval(this.sweepTimer);
  }

  // ---------------------------------------------------------------- sessions

  private async doCreateSession(tenant: string, body: CreateSessionBody): Promise<SessionRecord> {
    const provider = this.providers.get(body.provider);
    if (!provider) {
      throw badField('provider', `unknown provider "${body.provider}"; known: ${[...this.providers.keys()].sort().join(', ')}`);
    }
    if (this.config.disabledProviders.has(provider.name)) {
      throw new AsmError('forbidden', `provider: ${provider.name} is disabled on this server (ASM_DISABLED_PROVIDERS)`, {
        details: { field: 'provider' },
      });
    }
    if (body.permission_mode !== undefined && !provider.permissionModes.includes(body.permission_mode)) {
      throw badField(
        'permission_mode',
        provider.permissionModes.length
          ? `must be one of ${provider.permissionModes.join(', ')} for ${provider.name}`
          : `${provider.name} has no permission modes`,
      );
    }
    const queue = body.queue ?? provider.defaultQueue;
    this.assertQueue(queue);
    // Resolve now so a session that could never run is refused at creation, not at its first run.
    const executionMode = body.execution_mode ?? SESSION_DEFAULTS.execution_mode;
    const lane = await this.resolveLaneFor(provider, body.lane ?? SESSION_DEFAULTS.lane, executionMode, queue);
    const executionSurface = body.execution_surface ?? LOCAL_SURFACE;
    assertSurface(executionSurface, executionMode, lane, this.config.sshHosts);
    if (executionMode === 'remote_node') resolveRemoteOptions([this.config.remoteDefaults, body.driver_opts]);
    if ((await this.store.sessions.count()) >= this.config.limits.maxSessions) {
      // Closed sessions give way to new ones, oldest first; only open sessions can fill the server.
      const evicted = await this.store.evictOldestClosed();
      if (!evicted) {
        throw new AsmError('at_capacity', `the server holds its maximum of ${this.config.limits.maxSessions} open sessions (ASM_MAX_SESSIONS)`);
      }
      this.log.info({ sessionId: evicted }, 'evicted the oldest closed session to make room');
    }
    const session: SessionRecord = {
      id: `ses_${randomUUID()}`,
      tenant,
      provider: provider.name,
      lane: body.lane ?? SESSION_DEFAULTS.lane,
      execution_mode: executionMode,
      driver_opts: body.driver_opts ?? {},
      execution_surface: executionSurface,
      cwd: await resolveWorkspaceDir(this.config.workspaceRoot, body.cwd),
      model: body.model ?? null,
      permission_mode: body.permission_mode ?? null,
      queue,
      max_concurrent_runs: body.max_concurrent_runs ?? SESSION_DEFAULTS.max_concurrent_runs,
      max_queued_runs: body.max_queued_runs ?? SESSION_DEFAULTS.max_queued_runs,
      approval_timeout_ms: body.approval_timeout_ms ?? SESSION_DEFAULTS.approval_timeout_ms,
      run_deadline_ms: body.run_deadline_ms ?? SESSION_DEFAULTS.run_deadline_ms,
      metadata: body.metadata ?? {},
      state: 'open',
      provider_session_id: null,
      allowed_tools: [],
      last_seq: 0,
      created_at: new Date().toISOString(),
      closed_at: null,
    };
    await this.store.sessions.create(session);
    this.log.info({ sessionId: session.id, provider: session.provider, tenant }, 'session created');
    return session;
  }

  /** Close: refuse new runs, end queued runs as interrupted, interrupt active ones, wait for them. */
  private async doCloseSession(id: string): Promise<SessionRecord> {
    const session = await this.store.sessions.get(id);
    if (!session) throw new AsmError('not_found', `session ${id} not found`);
    if (session.state === 'closed') return session;
    await this.withSession(id, () => this.store.sessions.update(id, { state: 'closing' }));
    const runs = (await this.store.runs.listBySession(id)).filter((r) => !isTerminalRunState(r.state));
    await Promise.all(runs.map((r) => this.doInterrupt(r.id).catch(() => undefined)));
    const bound = this.config.limits.interruptGraceMs + this.config.limits.killGraceMs + this.config.limits.exitGraceMs + 1_000;
    await Promise.all(runs.map((r) => this.waitForRun(r.id, bound)));
    const closed = await this.store.sessions.update(id, {
      state: 'closed',
      closed_at: new Date().toISOString(),
      last_seq: await this.store.events.lastSeq(id),
    });
    this.log.info({ sessionId: id, interruptedRuns: runs.length }, 'session closed');
    return closed;
  }

  // ---------------------------------------------------------------- admission

  private async admit(sessionId: string, body: CreateRunBody): Promise<RunRecord> {
    const session = await this.store.sessions.get(sessionId);
    if (!session) throw new AsmError('not_found', `session ${sessionId} not found`);
    if (session.state !== 'open') throw new AsmError('conflict', `session ${sessionId} is ${session.state}; it takes no new runs`);
    const provider = this.providers.get(session.provider)!;
    const queue = body.queue ?? session.queue;
    if (body.queue !== undefined) this.assertQueue(body.queue);
    const lane = body.lane ?? session.lane;
    const executionMode = body.execution_mode ?? session.execution_mode;
    const observability = await this.resolveLaneFor(provider, lane, executionMode, queue);
    const remote = executionMode === 'remote_node' ? await this.remoteOptions(session, body) : undefined;
    const surface = body.execution_surface ?? session.execution_surface;
    assertSurface(surface, executionMode, observability, this.config.sshHosts);

    const runs = await this.store.runs.listBySession(sessionId);
    const { inFlight, waiting } = admissionState(runs);
    const dispatchNow = inFlight < session.max_concurrent_runs;
    if (!dispatchNow && waiting >= session.max_queued_runs) {
      throw new AsmError('at_capacity', `session ${sessionId} is at capacity: ${inFlight} running, ${waiting} queued (max_queued_runs ${session.max_queued_runs})`, {
        details: { running: inFlight, queued: waiting },
      });
    }

    const run: RunRecord = {
      id: `run_${randomUUID()}`,
      session_id: sessionId,
      tenant: session.tenant,
      provider: session.provider,
      state: 'queued',
      queue,
      prompt: body.prompt,
      metadata: body.metadata ?? {},
      created_at: new Date().toISOString(),
      started_at: null,
      finished_at: null,
      result: null,
      dispatched: false,
      owner: null,
      interrupt_requested: false,
      observability,
      options: {
        lane,
        execution_mode: executionMode,
        driver_opts: { ...session.driver_opts, ...(body.driver_opts ?? {}) },
        continuation: body.continuation ?? true,
        ...(remote && { remote }),
        ...(surface.kind !== 'local_subprocess' && { execution_surface: surface }),
      },
    };
    await this.store.runs.create(run);
    await this.runEvents.run(run.id, () => this.append(run, 'run_queued', { queue, position: dispatchNow ? 0 : waiting + 1 }));
    if (dispatchNow) await this.dispatch(run);
    return run;
  }

  /**
   * The remote payload of a run (remote-options.ts), above one default of our own: without a
   * remote_cwd the run works in the session's directory taken relative to the workspace root, so
   * nodes with the same layout under their own root find it.
   */
  private async remoteOptions(session: SessionRecord, body: CreateRunBody): Promise<RemoteOptions> {
    const sessionDir = relative(await realpath(this.config.workspaceRoot), session.cwd) || '.';
    return resolveRemoteOptions([{ remote_cwd: sessionDir }, this.config.remoteDefaults, session.driver_opts, body.driver_opts]);
  }

  private async dispatch(run: RunRecord): Promise<void> {
    await this.store.runs.update(run.id, { dispatched: true });
    try {
      const handle = await this.engine.submit(run.queue, { type: COMMANDS.executeRun, payload: { run_id: run.id }, id: run.id });
      // The outcome is recorded by the run's own events; a failed command only feeds the DLQ and metrics.
      handle.result.catch(() => undefined);
    } catch (err) {
      await this.finishWithoutStart(run.id, laneErrorToAsm(err));
    }
  }

  /** A slot of the session freed up: start its oldest waiting run. */
  private pump(sessionId: string): void {
    void this
      .withSession(sessionId, async () => {
        const session = await this.store.sessions.get(sessionId);
        if (!session || session.state !== 'open') return;
        const runs = await this.store.runs.listBySession(sessionId);
        const { inFlight, waiting } = admissionState(runs);
        if (waiting > 0 && inFlight < session.max_concurrent_runs) await this.dispatch(runs.find(isWaiting)!);
      })
      .catch((err) => this.log.error({ err, sessionId }, 'failed to start the next queued run'));
  }

  // ---------------------------------------------------------------- execution

  private async executeRun(runId: string, ctx: CommandContext): Promise<{ run_id: string; state: string }> {
    const run = await this.store.runs.get(runId);
    if (!run) throw new AsmError('not_found', `run ${runId} not found`);
    if (run.state === 'running') {
      // The lane job came back: the process that ran it stopped holding it (it died, or stalled
      // beyond its lock). A run is never started twice, so it is only ended if its owner is gone.
      if (run.owner !== null && run.owner !== this.cluster.self && (await this.cluster.isAlive(run.owner))) return { run_id: runId, state: run.state };
      await this.endOrphan(run);
      return { run_id: runId, state: (await this.store.runs.get(runId))!.state };
    }
    if (run.state !== 'queued') return { run_id: runId, state: run.state };
    const session = (await this.store.sessions.get(run.session_id))!;
    const provider = this.providers.get(session.provider)!;
    if (ctx.signal.aborted) {
      await this.finishWithoutStart(runId, abortToError(ctx.signal.reason, 'before it started'));
      return { run_id: runId, state: 'interrupted' };
    }
    if (run.options.remote && !this.config.worker) {
      await this.handOff(run, session, ctx);
      return this.outcome(runId);
    }
    const backend = run.observability.backend === 'sdk' ? this.backends.sdk : this.backends.core;
    if (!backend) {
      await this.finishWithoutStart(runId, new AsmError('config_invalid', `lane: this process does not serve the ${run.observability.backend} lane`));
      return { run_id: runId, state: 'failed' };
    }
    let cwd = session.cwd;
    if (run.options.remote) {
      // Checked again at the start: the run may have waited in this worker's queue since it was accepted.
      try {
        cwd = await this.workerPreflight(run, provider);
      } catch (err) {
        await this.finishWithoutStart(runId, AsmError.from(err));
        return this.outcome(runId);
      }
    }

    const active: ActiveRun = { events: [], ended: false, checkedLapses: this.cluster.heartbeatLapses() };
    this.active.set(runId, active);
    try {
      // Ownership is taken before the interrupt flag is read, and an interrupter sets the flag before
      // it reads the owner: whichever write lands second sees the other, so no interrupt is lost.
      const owned = await this.store.runs.update(runId, { owner: this.cluster.self });
      if (owned.interrupt_requested) {
        await this.finishWithoutStart(runId, cancelled('before it started'));
        return { run_id: runId, state: 'interrupted' };
      }
      const continuing = run.options.continuation && session.provider_session_id !== null;
      const backendRun = backend.start(
        {
          provider,
          runId,
          sessionId: session.id,
          prompt: run.prompt,
          cwd,
          model: session.model ?? undefined,
          permissionMode: session.permission_mode ?? undefined,
          providerSessionId: continuing ? session.provider_session_id! : undefined,
          previousTotals: continuing ? session.provider_totals ?? undefined : undefined,
          binary: resolveBinary(provider, this.config.binaries),
          surface: run.options.execution_surface ?? LOCAL_SURFACE,
          env: buildCliEnv(process.env, provider.env, this.config.passEnv),
          node: this.config.nodeName,
          deadlineMs: session.run_deadline_ms,
          approvalTimeoutMs: session.approval_timeout_ms,
        },
        (event) => {
          void this.runEvents.run(runId, () => this.onBackendEvent(run, active, event)).catch((err) =>
            this.log.error({ err, runId, kind: event.kind }, 'failed to record a run event'),
          );
        },
      );
      active.backend = backendRun;
      const onAbort = () => void backendRun.interrupt(abortReason(ctx.signal.reason));
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      await backendRun.done;
      ctx.signal.removeEventListener('abort', onAbort);
      // Wait for the run's queued event appends to land before reporting the outcome.
      await this.runEvents.run(runId, async () => undefined);
    } finally {
      this.active.delete(runId);
    }
    return this.outcome(runId);
  }

  /** A run command's outcome, from the run's record. */
  private async outcome(runId: string): Promise<{ run_id: string; state: string }> {
    const final = (await this.store.runs.get(runId))!;
    if (final.state === 'failed') {
      // Failing the command records the run in the lane's metrics and dead-letter queue.
      throw new Error(final.result?.error ? `${final.result.error.kind}: ${final.result.error.message}` : 'run failed');
    }
    return { run_id: runId, state: final.state };
  }

  // ---------------------------------------------------------------- remote_node runs

  /** API side: place the run on a worker, which owns it from its acknowledgement on; a failed start ends it here. */
  private async handOff(run: RunRecord, session: SessionRecord, ctx: CommandContext): Promise<void> {
    const options = run.options.remote!;
    const continuing = run.options.continuation && session.provider_session_id !== null;
    const pooled = remoteTarget(options.remote_node).kind === 'pool';
    try {
      const node = await startOnNode({
        cluster: this.cluster,
        runId: run.id,
        provider: run.provider,
        version: VERSION,
        options,
        affinity: pooled && continuing ? await this.conversationNode(run) : null,
        signal: ctx.signal,
      });
      this.log.info({ runId: run.id, node: node.name, instance: node.id }, 'run handed to a worker');
    } catch (err) {
      await this.finishWithoutStart(run.id, ctx.signal.aborted ? abortToError(ctx.signal.reason, 'before it started') : AsmError.from(err));
      return;
    }
    // Interrupted while the node was acknowledging: the node owns the run now, so the interrupt goes there.
    if (ctx.signal.aborted) {
      await this.interruptElsewhere(run.id).catch((err) => this.log.warn({ err, runId: run.id }, 'could not hand an interrupt to the worker'));
    }
  }

  /** The node of the session's latest remote run that started: the provider's files of the conversation are there. */
  private async conversationNode(run: RunRecord): Promise<string | null> {
    const started = (await this.store.runs.listBySession(run.session_id)).filter((r) => r.id !== run.id && r.options.remote && r.started_at !== null);
    started.sort((a, b) => a.started_at!.localeCompare(b.started_at!));
    return started.at(-1)?.observability.node ?? null;
  }

  /** Worker side of the start: check, take ownership, queue the run on this worker's own engine, acknowledge. */
  private async acceptRemoteRun(runId: string): Promise<{ node: string }> {
    const worker = this.config.worker;
    if (!worker) throw new AsmError('conflict', `${this.cluster.self} is an API process; only workers take remote_node runs`);
    const run = await this.store.runs.get(runId);
    if (!run?.options.remote) throw new AsmError('not_found', `remote_node run ${runId} not found`);
    if (run.state !== 'queued' || (run.owner !== null && run.owner !== this.cluster.self)) {
      throw new AsmError('conflict', `run ${runId} is ${run.state}${run.owner ? ` and owned by ${run.owner}` : ''}`);
    }
    const provider = this.providers.get(run.provider);
    if (!provider || this.config.disabledProviders.has(run.provider) || !(worker.providers ?? [run.provider]).includes(run.provider)) {
      throw remoteFailure('remote_capability_mismatch', `node ${this.config.nodeName} does not serve provider ${run.provider}`, { missing: [run.provider] });
    }
    await this.workerPreflight(run, provider);
    await this.store.runs.update(runId, { owner: this.cluster.self, observability: { ...run.observability, node: this.config.nodeName } });
    let handle;
    try {
      handle = await this.engine.submit(WORKER_LANE, { type: COMMANDS.executeRun, payload: { run_id: runId }, id: runId });
    } catch (err) {
      await this.store.runs.update(runId, { owner: null });
      throw remoteFailure('remote_connect_failed', `node ${this.config.nodeName} takes no new runs: ${AsmError.from(err).message}`);
    }
    this.accepted.add(runId);
    void handle.result
      .catch(() => undefined)
      .finally(() => {
        this.accepted.delete(runId);
        return this.cluster.announce().catch(() => undefined);
      });
    // The new load is published before the acknowledgement, so the next placement in a pool sees it.
    await this.cluster.announce();
    return { node: this.config.nodeName };
  }

  /** Can this worker start the run's CLI, and where: the run's cwd on this node. */
  private workerPreflight(run: RunRecord, provider: ProviderDefinition): Promise<string> {
    return preflightOnWorker({
      binary: resolveBinary(provider, this.config.binaries),
      workspaceRoot: this.config.workspaceRoot,
      remoteCwd: run.options.remote!.remote_cwd,
      path: process.env.PATH ?? '',
    });
  }

  /** One event from the backend, in order (serialised per run). */
  private async onBackendEvent(run: RunRecord, active: ActiveRun, event: ProviderEvent): Promise<void> {
    if (active.ended) return;
    if (TERMINAL_KINDS.has(event.kind)) {
      active.ended = true;
      await this.approvals.closeForRun(run.id);
      await this.rememberConversation(run, event.payload);
      await this.finish(run, active.events, event);
      return;
    }
    // The approval exists before its event does: a client that answers the event at once finds it.
    if (event.kind === 'approval_requested') await this.onApprovalRequested(run, event.payload);
    const stored = await this.append(run, event.kind, event.payload);
    active.events.push(stored);
    if (event.kind === 'run_started') {
      const providerSessionId = event.payload.provider_session_id;
      await this.durably(run.id, () => this.store.runs.update(run.id, { state: 'running', started_at: stored.timestamp }));
      if (providerSessionId) await this.durably(run.id, () => this.store.sessions.update(run.session_id, { provider_session_id: providerSessionId }));
    }
  }

  /**
   * The terminal event carries the provider's session id (some CLIs only print it mid-run) and the
   * conversation's cumulative totals after this run (none for a new conversation that reported none):
   * both are kept on the session, for the next run that continues the conversation.
   */
  private async rememberConversation(run: RunRecord, payload: Record<string, unknown>): Promise<void> {
    const totals = (payload.provider_totals as Record<string, number> | undefined) ?? null;
    const sessionId = payload.provider_session_id;
    await this.durably(run.id, () =>
      this.store.sessions.update(run.session_id, {
        provider_totals: totals,
        ...(typeof sessionId === 'string' && { provider_session_id: sessionId }),
      }),
    );
  }

  private async onApprovalRequested(run: RunRecord, payload: EventPayload<'approval_requested'>): Promise<void> {
    const approval: ApprovalRecord = {
      id: payload.approval_id,
      tenant: run.tenant,
      session_id: run.session_id,
      run_id: run.id,
      subject: payload.subject,
      tool_input: payload.details.tool_input,
      state: 'pending',
      decision: null,
      reason: null,
      requested_at: new Date().toISOString(),
      expires_at: payload.expires_at,
      resolved_at: null,
    };
    // Its deadline lives in the record: the sweep expires it from whichever process is alive then.
    await this.durably(run.id, () => this.store.approvals.create(approval));
    const session = await this.store.sessions.get(run.session_id);
    if (session?.allowed_tools.includes(payload.subject)) {
      // Decided outside this event's turn of the run's serialiser, which the decision itself joins:
      // so its approval_resolved follows the approval_requested appended in this turn.
      void this.approvals.decide(payload.approval_id, 'allow', 'allowed_for_session').catch((err) =>
        this.log.warn({ err, approvalId: payload.approval_id }, 'auto-allow failed'),
      );
    }
  }

  /** Record the terminal event: the run's result is projected from its events, including this one. */
  private async finish(run: RunRecord, eventsSoFar: readonly ProjectableEvent[], terminal: ProviderEvent): Promise<void> {
    const timestamp = new Date().toISOString();
    const provisional = this.envelope(run, terminal.kind, terminal.payload, timestamp);
    const result = projectResult([...eventsSoFar, provisional]);
    await this.durably(run.id, () => this.store.runs.update(run.id, { state: result.status, finished_at: timestamp, result }));
    await this.durably(run.id, () => this.store.events.append(provisional));
    this.log.info({ runId: run.id, sessionId: run.session_id, state: result.status, error: result.error?.kind }, 'run finished');
    this.pump(run.session_id);
  }

  /**
   * End a run that has no backend here: it never reached one (interrupted while queued, refused by
   * its lane), or the process that ran it is gone.
   */
  private async finishWithoutStart(runId: string, error: AsmError): Promise<void> {
    await this.runEvents.run(runId, async () => {
      const run = (await this.store.runs.get(runId))!;
      if (isTerminalRunState(run.state)) return;
      await this.approvals.closeForRun(runId);
      const eventsSoFar = await this.store.events.read(run.session_id, { after: 0, runId, limit: Number.MAX_SAFE_INTEGER });
      await this.finish(run, eventsSoFar, {
        kind: 'error',
        payload: { kind: error.kind, domain: error.domain, message: error.message, retryable: error.retryable, ...(error.details && { details: error.details }) },
      });
    });
  }

  // ---------------------------------------------------------------- interrupts and approvals

  private async doInterrupt(runId: string): Promise<RunRecord> {
    const run = await this.store.runs.get(runId);
    if (!run) throw new AsmError('not_found', `run ${runId} not found`);
    if (isTerminalRunState(run.state)) throw new AsmError('conflict', `run ${runId} already ended (${run.state})`);
    const local = this.active.get(runId);
    if (local?.backend) {
      await local.backend.interrupt('user');
    } else if (!run.dispatched) {
      await this.finishWithoutStart(runId, cancelled('before it started'));
    } else {
      const where = await this.engine.cancel(runId, 'user');
      if (where === 'pending') await this.finishWithoutStart(runId, cancelled('before it started'));
      else if (where === 'unknown') await this.interruptElsewhere(runId);
    }
    return (await this.store.runs.get(runId))!;
  }

  /** The run's lane job is held by another process, or is between processes: reach it through the flag and its owner. */
  private async interruptElsewhere(runId: string): Promise<void> {
    const flagged = await this.store.runs.update(runId, { interrupt_requested: true });
    const owner = flagged.owner;
    if (owner === null) return; // its executor reads the flag when it takes the run
    if (owner === this.cluster.self) return this.interruptHere(runId);
    const reply = await this.toOwner(owner, { kind: 'interrupt', runId }, this.controlTimeout(flagged));
    if (reply && !reply.ok) throw new AsmError(reply.error.kind, reply.error.message, reply.error);
  }

  /** Approval decisions go to the process running the approval's run, which holds its CLI. */
  private async doDecide(approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<ApprovalRecord> {
    const approval = await this.store.approvals.get(approvalId);
    if (!approval) throw new AsmError('not_found', `approval ${approvalId} not found`, { domain: 'approval' });
    const run = await this.store.runs.get(approval.run_id);
    const owner = run?.owner;
    if (owner && owner !== this.cluster.self && !isTerminalRunState(run.state)) {
      const reply = await this.toOwner(owner, { kind: 'decide', approvalId, decision, reason }, this.controlTimeout(run));
      if (reply) {
        if (!reply.ok) throw new AsmError(reply.error.kind, reply.error.message, reply.error);
        return reply.value as ApprovalRecord;
      }
    }
    return this.approvals.decide(approvalId, decision, reason);
  }

  /** A control request for the owner of a run; undefined when the owner is gone (the caller acts itself). */
  private async toOwner(owner: string, request: ControlRequest, timeoutMs: number): Promise<ControlReply | undefined> {
    try {
      return await this.cluster.send(owner, request, timeoutMs);
    } catch (err) {
      if (err instanceof OwnerUnreachable) return undefined;
      throw err;
    }
  }

  /** How long a run's owner may take to acknowledge a control request: remote_transport_call_timeout_ms for a remote run. */
  private controlTimeout(run: RunRecord): number {
    return run.options.remote?.remote_transport_call_timeout_ms ?? this.config.cluster.controlTimeoutMs;
  }

  /** An interrupt for a run this process owns: its CLI, or (a worker) the run still queued on its own engine. */
  private async interruptHere(runId: string): Promise<void> {
    const local = this.active.get(runId);
    if (local) await local.backend?.interrupt('user');
    else if ((await this.engine.cancel(runId, 'user')) === 'pending') await this.finishWithoutStart(runId, cancelled('before it started'));
  }

  /** A control request another process handed to this one, as the owner of its run (or the worker asked to start one). */
  private async onControlRequest(request: ControlRequest): Promise<ControlReply> {
    try {
      if (request.kind === 'start') return { ok: true, value: await this.acceptRemoteRun(request.runId) };
      if (request.kind === 'interrupt') {
        await this.interruptHere(request.runId);
        return { ok: true, value: null };
      }
      return { ok: true, value: await this.approvals.decide(request.approvalId, request.decision, request.reason) };
    } catch (err) {
      return { ok: false, error: AsmError.from(err).toBody() };
    }
  }

  // ---------------------------------------------------------------- sweeps

  /** Approval deadlines and orphaned runs. Any process may sweep; the store and claims make each outcome happen once. */
  private async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      await this.expireApprovals();
      if (this.cluster.distributed) {
        await this.fenceLostRuns();
        await this.endOrphans();
      }
    } catch (err) {
      this.log.warn({ err }, 'sweep failed; retrying on the next one');
    } finally {
      this.sweeping = false;
    }
  }

  private async expireApprovals(): Promise<void> {
    for (const approval of await this.store.approvals.listExpired(Date.now(), SWEEP_BATCH)) {
      await this.doDecide(approval.id, 'deny', 'timeout').catch((err) => {
        if (!(err instanceof AsmError && err.kind === 'conflict')) this.log.error({ err, approvalId: approval.id }, 'approval timeout failed');
      });
    }
  }

  /**
   * Runs whose owner stopped heartbeating end with node_lost; their CLIs went down with the owner.
   * A queued run with an owner counts too: its owner took it (a worker's queue, or the instant
   * before its CLI started), and nobody else will.
   */
  private async endOrphans(): Promise<void> {
    for (const run of await this.store.runs.listUnfinished()) {
      if (run.owner === null || run.owner === this.cluster.self) continue;
      if (await this.cluster.isAlive(run.owner)) continue;
      await this.endOrphan(run);
    }
  }

  private async endOrphan(run: RunRecord): Promise<void> {
    if (!(await this.cluster.claim(`orphan:${run.id}`, ORPHAN_CLAIM_MS))) return;
    this.log.warn({ runId: run.id, owner: run.owner }, 'run lost its node; ending it');
    await this.finishWithoutStart(
      run.id,
      new AsmError('node_lost', `the node instance running this run (${run.owner ?? 'unknown'}) stopped heartbeating`, { details: { node: run.owner } }),
    );
  }

  private async forwardDecision(runId: string, approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<void> {
    if (decision === 'allow_for_session') await this.allowForSession(approvalId);
    const active = this.active.get(runId);
    if (!active?.backend || active.ended) return;
    await active.backend.decide(approvalId, decision, reason).catch((err) => {
      // The CLI may have withdrawn the request or the run may be ending; the decision is recorded either way.
      if (!(err instanceof AsmError && err.kind === 'not_found')) throw err;
    });
  }

  /** Later approvals for the same tool in this session are allowed without asking. */
  private async allowForSession(approvalId: string): Promise<void> {
    const approval = await this.store.approvals.get(approvalId);
    if (!approval) return;
    await this.withSession(approval.session_id, async () => {
      const session = await this.store.sessions.get(approval.session_id);
      if (session && !session.allowed_tools.includes(approval.subject)) {
        await this.store.sessions.update(session.id, { allowed_tools: [...session.allowed_tools, approval.subject] });
      }
    });
  }

  private async emitForRun<K extends EventKind>(runId: string, kind: K, payload: EventPayload<K>): Promise<boolean> {
    const run = await this.store.runs.get(runId);
    if (!run || isTerminalRunState(run.state)) return false;
    const stored = await this.append(run, kind, payload);
    this.active.get(runId)?.events.push(stored);
    return true;
  }

  // ---------------------------------------------------------------- helpers

  private envelope<K extends EventKind>(run: RunRecord, kind: K, payload: EventPayload<K>, timestamp: string) {
    return {
      session_id: run.session_id,
      run_id: run.id,
      provider: run.provider,
      kind,
      payload: payload as Record<string, unknown>,
      metadata: run.observability as EventMetadata,
      timestamp,
    };
  }

  private append<K extends EventKind>(run: RunRecord, kind: K, payload: EventPayload<K>): Promise<AsmEvent> {
    const { timestamp: _unused, ...event } = this.envelope(run, kind, payload, '');
    return this.durably(run.id, () => this.store.events.append(event));
  }

  /**
   * A write a run cannot do without (its events, its state). While the store is unreachable it is
   * retried, up to ASM_REDIS_OUTAGE_MS, so a short Redis outage delays a run's events but loses none;
   * requests meanwhile are refused with 503. (A write whose reply was lost with the connection may
   * land twice; that needs the outage to fall between Redis applying it and answering.) A run this
   * process executes is first checked to still be its own after a heartbeat lapse (see stillOwned).
   */
  private async durably<T>(runId: string, write: () => Promise<T>): Promise<T> {
    const giveUpAt = Date.now() + this.config.outageMs;
    for (let pause = 50; ; pause = Math.min(pause * 2, 1_000)) {
      try {
        const active = this.active.get(runId);
        if (active && !(await this.stillOwned(runId, active))) {
          throw new AsmError('node_lost', `run ${runId} was ended elsewhere while this instance could not reach Redis; its later events are dropped`);
        }
        return await write();
      } catch (err) {
        if (!(err instanceof AsmError && err.kind === 'not_ready') || Date.now() + pause > giveUpAt) throw err;
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  /**
   * After this instance's heartbeat lapsed (a partition, a long Redis outage), other instances may
   * have declared it lost and ended its runs with node_lost. Before such a run writes again, the
   * instance heartbeats first (so nobody can declare it lost after the check) and then reads the run:
   * a run ended elsewhere, or owned by someone else now, is fenced here: it writes nothing more and
   * its CLI is stopped. Costs nothing while heartbeats are on time.
   */
  private async stillOwned(runId: string, active: ActiveRun): Promise<boolean> {
    const lapses = this.cluster.heartbeatLapses();
    if (lapses === active.checkedLapses) return true;
    await this.cluster.announce();
    const run = await this.store.runs.get(runId);
    if (run && !isTerminalRunState(run.state) && run.owner === this.cluster.self) {
      active.checkedLapses = lapses;
      return true;
    }
    if (!active.ended) {
      active.ended = true;
      this.log.warn({ runId, endedAs: run?.state }, 'run was ended elsewhere while this instance was unreachable; stopping it here');
      void active.backend?.interrupt('shutdown').catch(() => undefined);
    }
    return false;
  }

  /** Runs this process executes, checked after a heartbeat lapse even if they have nothing to write. */
  private async fenceLostRuns(): Promise<void> {
    for (const [runId, active] of this.active) {
      if (!active.ended) await this.stillOwned(runId, active);
    }
  }

  /** Lane resolution with the provider's SDK discovered first, unless the request cannot use it. */
  private async resolveLaneFor(provider: ProviderDefinition, requestedLane: RequestedLane, executionMode: ExecutionMode, queue: string): Promise<EventMetadata> {
    const sdk = needsSdkProbe(provider, requestedLane) ? await this.sdks.status(provider) : null;
    return resolveLane({ provider, requestedLane, executionMode, remoteAvailable: this.cluster.distributed, sdk, node: this.config.nodeName, queue });
  }

  /** A session's admission and record changes, one at a time across every process. */
  private withSession<T>(sessionId: string, work: () => Promise<T>): Promise<T> {
    return this.cluster.withLock(`session:${sessionId}`, work);
  }

  private assertQueue(queue: string): void {
    if (!this.engine.lanes().some((l) => l.id === queue)) {
      throw badField('queue', `unknown queue lane "${queue}"; lanes: ${this.engine.lanes().map((l) => l.id).join(', ')}`);
    }
  }

  private async command<T>(lane: string, type: string, payload: unknown): Promise<T> {
    let outcome: Outcome<T>;
    try {
      const handle = await this.engine.submit(lane, { type, payload });
      outcome = (await handle.result) as Outcome<T>;
    } catch (err) {
      throw laneErrorToAsm(err);
    }
    if (!outcome.ok) throw new AsmError(outcome.error.kind, outcome.error.message, outcome.error);
    return outcome.value;
  }
}

/** A run waits in its session's FIFO until admission hands it to the lane engine. */
/**
 * A session's or run's execution surface, checked where it is chosen: its fields (files only when the
 * CLI starts on this process; a remote_node run finds them on the node), the operator's host
 * allowlist, and a lane that spawns a CLI.
 */
function assertSurface(surface: ExecutionSurface, executionMode: ExecutionMode, lane: EventMetadata, sshHosts: string[]): void {
  checkSurface(surface, 'execution_surface', executionMode === 'local');
  // The server's own network position and keys are the operator's to lend: only hosts they listed.
  if (surface.kind === 'ssh' && !sshHosts.includes(surface.host!)) {
    throw new AsmError('forbidden', `execution_surface.host: ${surface.host} is not one of the hosts this server may ssh to (ASM_SSH_HOSTS)`, {
      details: { field: 'execution_surface.host' },
    });
  }
  if (surface.kind !== 'local_subprocess' && lane.backend === 'sdk') {
    throw badField('execution_surface', `kind ${surface.kind} needs the core lane: the sdk lane runs the agent inside this process`);
  }
}

function isWaiting(run: RunRecord): boolean {
  return run.state === 'queued' && !run.dispatched;
}

/** In flight: running, or handed to the lane engine; these count against max_concurrent_runs. */
function admissionState(runs: readonly RunRecord[]): { inFlight: number; waiting: number } {
  let inFlight = 0;
  let waiting = 0;
  for (const run of runs) {
    if (isWaiting(run)) waiting++;
    else if (run.state === 'running' || run.state === 'queued') inFlight++;
  }
  return { inFlight, waiting };
}

function runIdOf(letter: DeadLetter): string | undefined {
  return letter.commandType === COMMANDS.executeRun ? (letter.payload as { run_id?: string })?.run_id : undefined;
}

function cancelled(when: string): AsmError {
  return new AsmError('user_cancelled', `Run interrupted ${when}`, { retryable: false });
}

function abortReason(reason: unknown): InterruptReason {
  return reason instanceof LaneError && reason.code === 'timeout' ? 'timeout' : 'user';
}

function abortToError(reason: unknown, when: string): AsmError {
  return abortReason(reason) === 'timeout' ? new AsmError('timeout', `run timed out in its queue lane ${when}`) : cancelled(when);
}

function laneErrorToAsm(err: unknown): AsmError {
  if (!(err instanceof LaneError)) return AsmError.from(err);
  switch (err.code) {
    case 'queue_full':
      return new AsmError('queue_full', err.message);
    case 'shutdown_in_progress':
      return new AsmError('shutting_down', err.message);
    case 'lane_not_found':
      return badField('queue', err.message);
    case 'timeout':
      return new AsmError('timeout', err.message);
    case 'cancelled':
      return cancelled('before it started');
    case 'unavailable':
      return new AsmError('not_ready', err.message);
    default:
      return new AsmError('unknown', err.message);
  }
}

export type { RunResult };
