import { context } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { buildCliEnv } from '../providers/env.js';
import { confineSshFiles, LOCAL_SURFACE } from '../backends/surfaces.js';
import { resolveWorkspaceDir } from '../backends/workspace.js';
import type { AgentMemoryGate } from '../backends/agent-memory.js';
import type { Backend, BackendRunSpec, InterruptReason } from '../backends/types.js';
import type { AsmConfig } from '../config.js';
import { runLogFields } from '../logger.js';
import { AsmError, cancelledRun, isErrorKind } from '../errors/kinds.js';
import { abortedByTimeout, fromLaneAbort } from '../errors/from-lanes.js';
import type { CommandContext } from '../lanes/types.js';
import { workerPreflight } from '../nodes/accept.js';
import type { Cluster } from '../nodes/cluster.js';
import { handOff } from '../nodes/hand-off.js';
import { resolveBinary, resolveLaunch } from '../providers/registry.js';
import type { DirectLaunch, ProviderDefinition } from '../providers/types.js';
import { isTerminalRunState, type ExecutionSurface } from '../schemas/api.js';
import { TERMINAL_KINDS, type ProviderEvent } from '../schemas/events.js';
import type { AgentRunOptions, RunRecord, SessionRecord, Store } from '../store/types.js';
import type { TenantDirectory } from '../tenants.js';
import type { ActiveRun, ActiveRuns } from './active-runs.js';
import type { ApprovalBook } from './approvals.js';
import type { RunOutcome } from './commands.js';
import type { ControlRouter } from './control.js';
import type { RunRecorder } from './recorder.js';
import { inSpan } from './tracing.js';
import { waitForRun } from './wait-for-run.js';
import type { RunDiffs } from './run-diffs.js';
import { conversationOf, guardrailBlock, runAgentOptions } from './run-options.js';

export interface RunExecutorDeps {
  config: AsmConfig;
  store: Store;
  cluster: Cluster;
  providers: Map<string, ProviderDefinition>;
  /** Backends by name: `core` always, `sdk` where the SDK lane is served. */
  backends: { core: Backend; sdk?: Backend };
  /** Admission by memory: a run waits here before its agent starts (ASM_MAX_AGENT_MEMORY_MB). */
  memory: AgentMemoryGate;
  recorder: RunRecorder;
  /** Each session's cwd must stay inside its tenant's root. */
  tenants: TenantDirectory;
  approvals: ApprovalBook;
  control: ControlRouter;
  active: ActiveRuns;
  diffs: RunDiffs;
  log: Logger;
}

/**
 * A run's lane command: it starts the run's backend in this process (or, for a remote_node run on
 * an API process, hands it to a worker) and records the backend's events in order. The command
 * fails when the run failed, which puts it in the lane's metrics and dead-letter queue.
 */
export class RunExecutor {
  constructor(private readonly deps: RunExecutorDeps) {}

  /**
   * The runs whose lane command executes in this process now, from before its first read to its
   * return: the reconcile after an outage leaves them to it (sweeps.ts), since one taken here may not
   * have become active yet (its claim came back, its start has not begun).
   */
  readonly executing = new Set<string>();

  /** `sessionId`, where the command carries it, is read with the run rather than after it. */
  async execute(runId: string, ctx: CommandContext, sessionId?: string): Promise<RunOutcome> {
    // A retry of an attempt its lane timed out while the run goes on here, or its job back in the
    // lane after Redis lost the write that took it: the run keeps its one end, which this attempt
    // waits for and reports (never retried further: the agent started).
    if (this.executing.has(runId)) return this.awaitEnd(runId, sessionId);
    this.executing.add(runId);
    try {
      return await this.executeOnce(runId, ctx, sessionId);
    } finally {
      this.executing.delete(runId);
    }
  }

  private async executeOnce(runId: string, ctx: CommandContext, sessionId: string | undefined): Promise<RunOutcome> {
    const { store, cluster, recorder, config } = this.deps;
    const [read, sessionRead] = await Promise.all([this.readClaiming(runId, ctx), sessionId === undefined ? undefined : store.sessions.get(sessionId)]);
    if (!read) throw new AsmError('not_found', `run ${runId} not found`);
    const { run, claimed } = read;
    const session = (sessionRead ?? (await store.sessions.get(run.session_id)))!;
    // Taken by another live process (its CLI starts there, or its worker queued it): never started twice.
    if (run.state === 'queued' && run.owner !== null && run.owner !== cluster.self && (await cluster.isAlive(run.owner))) return { run_id: runId, state: run.state };
    // Owned by this process, which does not execute it (no claim of this command's): the store lost
    // the writes that followed its owner's (its start, its end). Whether its CLI started is unknown
    // when it is still queued, and a run never starts twice, so it ends, as the reconcile after an
    // outage ends it (sweeps.ts). A start that failed before its CLI and left the run to its lane's
    // retry gave the run up first (retryStart, readClaiming), so its retry finds it owned by nobody; a
    // remote_node run is its worker's from its acceptance on (nodes/accept.ts), queued there until its CLI starts.
    const lostHere = !claimed && run.owner === cluster.self && (run.state === 'running' || (run.state === 'queued' && !run.options.remote));
    if (run.state === 'running' || lostHere) {
      // The lane job came back: the process that ran it stopped holding it (it died, or stalled
      // beyond its lock). A run is never started twice, so it is only ended if its owner is gone.
      if (run.owner !== null && run.owner !== cluster.self && (await cluster.isAlive(run.owner))) return { run_id: runId, state: run.state };
      await (lostHere ? recorder.endLostEnd(run) : recorder.endOrphan(run));
      return { run_id: runId, state: (await store.runs.get(runId))!.state };
    }
    // Ended already (a retry of a run that failed is still the failed run: its command fails again, into the DLQ).
    if (run.state !== 'queued') return this.outcome(runId);
    // Under the lane command's span, itself in the trace of the request that created the run (commands.ts).
    const attributes = { 'asm.run_id': runId, 'asm.provider': run.provider, 'asm.backend': run.observability.backend, 'asm.queue': run.queue, 'asm.node': config.nodeName };
    return inSpan('run', context.active(), attributes, async (span) => {
      const outcome = await this.start(run, session, ctx, claimed).catch((err: unknown) => this.endUnstarted(run, err, ctx));
      span.setAttribute('asm.run_state', outcome.state);
      return outcome;
    });
  }

  /** The outcome of a run another attempt of its command executes here, once it ends. */
  private async awaitEnd(runId: string, sessionId: string | undefined): Promise<RunOutcome> {
    const { store, config } = this.deps;
    const run = await store.runs.get(runId);
    if (!run) throw new AsmError('not_found', `run ${runId} not found`);
    const session = (await store.sessions.get(sessionId ?? run.session_id))!;
    const { interruptGraceMs, killGraceMs, exitGraceMs } = config.limits;
    if (!isTerminalRunState(run.state)) await waitForRun(store, runId, session.run_deadline_ms + interruptGraceMs + killGraceMs + exitGraceMs, run.session_id);
    return this.outcome(runId);
  }

  /**
   * The run, taken for this process in the same step where it is queued, unowned and local
   * (RunStore.claimLocal): one round trip before its CLI starts where a read and then the claim were
   * two in Redis mode. Only read where its command was cancelled, which never starts it, and where a
   * run may wait for memory (runHere takes it once admitted then): a run waiting so is not its node's
   * yet, and if the node dies meanwhile, another one runs it instead of ending it with node_lost
   * (sweeps.ts). A claim whose answer was lost with the connection may have landed: the run is given
   * up again where it can be, as a start that failed is (retryStart), so its lane's retry runs it.
   */
  private readClaiming(runId: string, ctx: CommandContext): Promise<{ run: RunRecord; claimed: boolean } | undefined> {
    const { store, cluster, memory } = this.deps;
    if (ctx.signal.aborted || memory.mayWait) return store.runs.get(runId).then((run) => run && { run, claimed: false });
    return store.runs.claimLocal(runId, cluster.self).catch(async (err: unknown) => {
      await this.giveUp(runId).catch(() => undefined);
      throw err;
    });
  }

  /** Give up a queued run this process took and did not start: its owner is nobody again. */
  private async giveUp(runId: string): Promise<void> {
    const run = await this.deps.store.runs.get(runId);
    if (run?.state === 'queued' && run.owner === this.deps.cluster.self) await this.deps.store.runs.update(runId, { owner: null });
  }

  /** A queued run (`claimed` for this process already, or not), started here or handed to a worker. */
  private async start(run: RunRecord, session: SessionRecord, ctx: CommandContext, claimed: boolean): Promise<RunOutcome> {
    const { recorder, config } = this.deps;
    const runId = run.id;
    if (ctx.signal.aborted) {
      await recorder.finishWithoutStart(runId, fromLaneAbort(ctx.signal.reason, 'before it started'));
      return { run_id: runId, state: 'interrupted' };
    }
    // A run of a session that is closing is never started: its close interrupts whatever runs, and a
    // CLI started now would only be interrupted in its first moments (issue 13, finding 7).
    if (session.state !== 'open') {
      await recorder.finishWithoutStart(runId, cancelledRun('before it started: its session is closing'));
      return { run_id: runId, state: 'interrupted' };
    }
    if (run.options.remote && !config.worker) {
      await this.handToWorker(run, session, ctx);
      return this.outcome(runId);
    }
    return this.runHere(run, session, ctx, claimed);
  }

  /**
   * A run that failed before its agent did anything (SPEC §8): with a retryable error and retries
   * left, its lane retries it (it stays queued, no terminal event yet); otherwise it ends here.
   */
  private async failedToStart(run: RunRecord, error: AsmError, ctx: CommandContext): Promise<void> {
    if (laneRetries(error, ctx)) throw await this.retryStart(run, error);
    await this.deps.recorder.finishWithoutStart(run.id, error);
  }

  /**
   * A start that threw where no step expected it (a defect, a store write that failed) ends its run
   * like any start failure, instead of leaving it queued with no command left to run it (a worker's
   * engine drops a failed command; an API lane dead-letters it).
   */
  private async endUnstarted(run: RunRecord, err: unknown, ctx: CommandContext): Promise<RunOutcome> {
    const error = AsmError.from(err);
    // Ended already: its command fails with its end.
    if ((await this.deps.store.runs.get(run.id))?.state !== 'queued') throw err;
    // Queued again for its lane's retry, given up first: a run its retry finds owned by this process is ended (execute).
    if (laneRetries(error, ctx)) throw await this.retryStart(run, error);
    this.deps.log.error({ err, ...runLogFields(run) }, 'a run failed to start');
    await this.deps.recorder.finishWithoutStart(run.id, error);
    return this.outcome(run.id);
  }

  private async retryStart(run: RunRecord, error: AsmError): Promise<AsmError> {
    await this.deps.store.runs.update(run.id, { owner: null });
    this.deps.log.info({ ...runLogFields(run), kind: error.kind }, 'run failed before its agent started; its lane retries it');
    return new AsmError(error.kind, `run ${run.id} did not start: ${error.message}`, { retryable: true, details: error.details });
  }

  private async handToWorker(run: RunRecord, session: SessionRecord, ctx: CommandContext): Promise<void> {
    const { cluster, log, control } = this.deps;
    const { signal } = ctx;
    try {
      await handOff({ cluster, log }, run, session, signal);
    } catch (err) {
      await this.failedToStart(run, signal.aborted ? fromLaneAbort(signal.reason, 'before it started') : AsmError.from(err), ctx);
      return;
    }
    // Interrupted while the node was acknowledging: the node owns the run now, so the interrupt goes there.
    if (signal.aborted) {
      await control.interruptElsewhere(run.id).catch((err) => log.warn({ err, ...runLogFields(run) }, 'could not hand an interrupt to the worker'));
    }
  }

  private async runHere(run: RunRecord, session: SessionRecord, ctx: CommandContext, claimed: boolean): Promise<RunOutcome> {
    const { config, store, cluster, recorder, active: activeRuns, log } = this.deps;
    const { signal } = ctx;
    const runId = run.id;
    const provider = this.deps.providers.get(session.provider)!;
    const backend = run.observability.backend === 'sdk' ? this.deps.backends.sdk : this.deps.backends.core;
    if (!backend) {
      await recorder.finishWithoutStart(runId, new AsmError('config_invalid', `lane: this process does not serve the ${run.observability.backend} lane`));
      return { run_id: runId, state: 'failed' };
    }
    let cwd: string;
    let surface: ExecutionSurface;
    try {
      // Checked again at the start: the run may have waited in a queue since it was accepted, and its
      // directory or key files may have been replaced meanwhile (by a symlink leading out of the root).
      cwd = run.options.remote ? await workerPreflight(config, run, provider) : await resolveWorkspaceDir(this.deps.tenants.get(session.tenant).workspaceRoot, session.cwd);
      surface = confineSshFiles(run.options.execution_surface ?? LOCAL_SURFACE, 'execution_surface', config.sshFilesDir);
    } catch (err) {
      await this.failedToStart(run, AsmError.from(err), ctx);
      return this.outcome(runId);
    }

    // The session's sandbox folders are made while the run is admitted, ahead of its agent's spawn.
    const binary = resolveBinary(provider, config.binaries);
    const local = surface.kind === 'local_subprocess';
    // A remote surface's host has a binary of its own, which its own PATH finds.
    const launch = local ? await resolveLaunch(provider, binary, process.env.PATH ?? '') : { binary, env: {} };
    if (local) backend.prepare(session.id, { provider, ...launch });
    const active: ActiveRun = { record: run, events: [], ended: false, outputLeft: this.outputLimit(run), retriesLeft: ctx.retriesLeft, checkedLapses: cluster.heartbeatLapses(), mayHaveApprovals: ctx.attempt > 1 };
    activeRuns.set(runId, active);
    try {
      // Still queued while it waits: an interrupt meanwhile aborts the signal, checked below.
      await this.deps.memory.admit(signal, session.id);
      // Ownership is taken before the interrupt flag is read (a claim reads it in the same step), and
      // an interrupter sets the flag before it reads the owner: whichever write lands second sees the
      // other, so no interrupt is lost. An interrupt of this process that came while the run had no
      // backend yet aborted the signal.
      const owned = (active.record = claimed ? run : await store.runs.update(runId, { owner: cluster.self }));
      if (owned.interrupt_requested || signal.aborted) {
        await recorder.finishWithoutStart(runId, signal.aborted ? fromLaneAbort(signal.reason, 'before it started') : cancelledRun('before it started'));
        return this.outcome(runId);
      }
      const backendRun = backend.start(
        {
          ...this.agentSpec(session, run.options.agent, { runId, prompt: run.prompt, cwd, surface }, launch),
          ...conversationOf(run.options.continuation, session),
          // Taken when the backend asks, while the agent starts (BackendRunSpec.workspaceSnapshot).
          workspaceSnapshot: () => (active.snapshot ??= this.deps.diffs.before(run, cwd)).then(() => undefined),
          // A run of a warm session on another lane than core (a per-run lane) starts cold.
          ...(session.warm && backend === this.deps.backends.core && { warm: { idleMs: this.warmIdleMs(session) } }),
        },
        // The recording's promise is the backend's backpressure (EventSink).
        (event) =>
          recorder.serialize(runId, () => this.record(run, session, active, event)).catch((err) =>
            log.error({ err, ...runLogFields(run), kind: event.kind }, 'failed to record a run event'),
          ),
      );
      active.backend = backendRun;
      const onAbort = () => void backendRun.interrupt(interruptReasonOf(signal.reason));
      signal.addEventListener('abort', onAbort, { once: true });
      await backendRun.done;
      signal.removeEventListener('abort', onAbort);
      // Wait for the run's queued event appends to land before reporting the outcome.
      await recorder.serialize(runId, async () => undefined);
    } finally {
      activeRuns.delete(runId);
    }
    if (active.startFailure) throw await this.retryStart(run, active.startFailure);
    return this.outcome(runId, active.endedAs);
  }

  /**
   * ASM_PREWARM: a new local core-lane session's agent process, started now as its first run would
   * start it (the session's options, a new conversation), to wait for that run; its place is taken
   * before the first await, so a first run submitted meanwhile waits for it. False when none was
   * started (backends/core.ts says when).
   */
  prewarm(session: SessionRecord): Promise<boolean> {
    const { config, backends, memory } = this.deps;
    const core = backends.core;
    if (!core.prewarm || session.execution_surface.kind !== 'local_subprocess') return Promise.resolve(false);
    return core.prewarm(session.id, session.provider, this.warmIdleMs(session), async () => {
      if (!(await memory.hasRoom())) return null;
      const provider = this.deps.providers.get(session.provider)!;
      const cwd = await resolveWorkspaceDir(this.deps.tenants.get(session.tenant).workspaceRoot, session.cwd);
      const launch = await resolveLaunch(provider, resolveBinary(provider, config.binaries), process.env.PATH ?? '');
      core.prepare(session.id, { provider, ...launch });
      const agent = runAgentOptions(provider, session, { prompt: '' });
      const spec = this.agentSpec(session, agent, { runId: `prewarm_${session.id}`, prompt: '', cwd, surface: LOCAL_SURFACE }, launch);
      return { ...spec, ...(session.warm && { warm: { idleMs: this.warmIdleMs(session) } }) };
    });
  }

  /** What a run of the session starts its agent with (the program `launch` names), but for its conversation, its workspace snapshot and warmth. */
  private agentSpec(session: SessionRecord, agent: AgentRunOptions, run: Pick<BackendRunSpec, 'runId' | 'prompt' | 'cwd' | 'surface'>, launch: DirectLaunch): BackendRunSpec {
    const { config, cluster } = this.deps;
    const provider = this.deps.providers.get(session.provider)!;
    return {
      provider,
      ...run,
      binary: launch.binary,
      sessionId: session.id,
      model: agent.model ?? undefined,
      permissionMode: agent.provider_permission_mode,
      ...(agent.system_prompt !== null && { systemPrompt: agent.system_prompt }),
      ...(agent.max_turns !== null && { maxTurns: agent.max_turns }),
      ...(agent.reasoning_effort !== null && { reasoningEffort: agent.reasoning_effort }),
      env: buildCliEnv(process.env, provider.env, config.passEnv, { ...provider.setEnv, ...launch.env }),
      node: config.nodeName,
      deadlineMs: session.run_deadline_ms,
      // Sessions stored before idle_timeout_ms existed take the service's default.
      idleTimeoutMs: session.idle_timeout_ms ?? config.limits.idleTimeoutMs,
      approvalTimeoutMs: session.approval_timeout_ms,
      now: () => cluster.now(),
      mcpServers: session.mcp_server_config,
    };
  }

  /** How long the session's kept or prewarmed process waits idle. */
  private warmIdleMs(session: SessionRecord): number {
    return session.warm_idle_ms ?? this.deps.config.limits.warmIdleMs;
  }

  /** One event from the backend, in order (inside the run's chain). */
  private async record(run: RunRecord, session: SessionRecord, active: ActiveRun, event: ProviderEvent): Promise<void> {
    const { recorder, store } = this.deps;
    if (active.ended) return;
    if (TERMINAL_KINDS.has(event.kind)) {
      active.ended = true;
      // The CLI could not start (no run_started: the agent did nothing) and its lane may try again.
      if (event.kind === 'error' && event.payload.retryable && active.retriesLeft > 0 && !active.events.some((e) => e.kind === 'run_started')) {
        active.startFailure = new AsmError(event.payload.kind, event.payload.message, { domain: event.payload.domain, retryable: true, details: event.payload.details });
        return;
      }
      await recorder.denyPendingApprovals(run.id);
      await this.rememberConversation(run, session, event.payload);
      await this.recordDiff(run, active);
      active.endedAs = await recorder.finish(run, active.events, event);
      return;
    }
    active.outputLeft -= Buffer.byteLength(JSON.stringify(event.payload));
    if (active.outputLeft < 0) return this.stopOverQuota(run, active);
    // The approval exists before its event does: a client that answers the event at once finds it.
    if (event.kind === 'approval_requested') {
      active.mayHaveApprovals = true;
      await this.deps.approvals.record(run, event.payload);
    }
    const stored = event.kind === 'run_started' ? await recorder.start(run, event.payload) : await recorder.append(run, event.kind, event.payload);
    active.events.push(stored);
    if (event.kind === 'run_started') {
      const providerSessionId = event.payload.provider_session_id;
      const conversation = { ...(providerSessionId && { provider_session_id: providerSessionId }), ...(run.options.remote && { conversation_node: this.deps.config.nodeName }) };
      if (Object.keys(conversation).length > 0) await recorder.durably(run.id, () => store.sessions.update(run.session_id, conversation));
    }
    // The tool_use stays in the record, followed by the error that ends the run.
    const blocked = event.kind === 'tool_use' ? guardrailBlock(run.options.agent.allowed_tools, event.payload.tool_name) : null;
    if (blocked) await this.stop(run, active, blocked);
  }

  /** The run's workspace_diff, before its terminal event, where it changed something. */
  private async recordDiff(run: RunRecord, active: ActiveRun): Promise<void> {
    const snapshot = await active.snapshot;
    if (!snapshot) return;
    const summary = await this.deps.diffs.after(run, snapshot);
    if (summary) active.events.push(await this.deps.recorder.append(run, 'workspace_diff', summary));
  }

  /**
   * The run printed more than it may: it ends now with quota_exceeded, keeping the events recorded
   * so far (its result is their projection), and its CLI is stopped; what it prints meanwhile is dropped.
   */
  private stopOverQuota(run: RunRecord, active: ActiveRun): Promise<void> {
    const limit = this.outputLimit(run);
    const error = new AsmError('quota_exceeded', `the run's output exceeded ${limit} bytes (ASM_MAX_RUN_OUTPUT_BYTES, or the tenant's output_bytes_per_run); it was stopped, and its events so far are kept`, {
      details: { quota: 'run_output_bytes', limit },
    });
    return this.stop(run, active, error);
  }

  /** End the run now with `error`, keeping its events so far; its CLI is stopped and what it prints meanwhile is dropped. */
  private async stop(run: RunRecord, active: ActiveRun, error: AsmError): Promise<void> {
    active.ended = true;
    this.deps.log.warn({ ...runLogFields(run), kind: error.kind }, `stopping the run: ${error.message}`);
    await this.deps.recorder.denyPendingApprovals(run.id);
    active.endedAs = await this.deps.recorder.finish(run, active.events, { kind: 'error', payload: error.toBody() });
    void active.backend?.interrupt('user').catch(() => undefined);
  }

  /** The output a run may produce: its own limit (set at submit), or this process's where that is lower (a worker's operator may set less). */
  private outputLimit(run: RunRecord): number {
    return Math.min(this.deps.config.limits.runOutputBytes, run.options.output_limit_bytes);
  }

  /**
   * The terminal event carries the provider's session id (some CLIs only print it mid-run) and the
   * conversation's cumulative totals after this run (none for a new conversation that reported none):
   * both are kept on the session, for the next run that continues the conversation.
   */
  private async rememberConversation(run: RunRecord, session: SessionRecord, payload: Record<string, unknown>): Promise<void> {
    const totals = (payload.provider_totals as Record<string, number> | undefined) ?? null;
    const sessionId = payload.provider_session_id;
    // Nothing to remember and nothing to forget (the session, as this run found it, holds no totals):
    // no write (a shell run's end, say).
    if (totals === null && typeof sessionId !== 'string' && (session.provider_totals ?? null) === null) return;
    await this.deps.recorder.durably(run.id, () =>
      this.deps.store.sessions.update(run.session_id, {
        provider_totals: totals,
        ...(typeof sessionId === 'string' && { provider_session_id: sessionId }),
      }),
    );
  }

  /** A run command's outcome, from the run's record: `endedAs`, where this process recorded its end, else read (a round trip in Redis mode). */
  private async outcome(runId: string, endedAs?: RunRecord): Promise<RunOutcome> {
    const final = endedAs ?? (await this.deps.store.runs.get(runId))!;
    if (final.state === 'failed') {
      // Failing the command records the run in the lane's metrics and dead-letter queue. Its run has
      // ended for good (one terminal event), so the lane must not run it again: not retryable.
      const error = final.result?.error;
      throw new AsmError(error && isErrorKind(error.kind) ? error.kind : 'unknown', error ? `${error.kind}: ${error.message}` : 'run failed', { retryable: false });
    }
    return { run_id: runId, state: final.state };
  }
}

function interruptReasonOf(abortReason: unknown): InterruptReason {
  return abortedByTimeout(abortReason) ? 'timeout' : 'user';
}

/** Whether the lane runs the command again after `error`: retryable, retries left, not aborted. */
function laneRetries(error: AsmError, ctx: CommandContext): boolean {
  return error.retryable && ctx.retriesLeft > 0 && !ctx.signal.aborted;
}
