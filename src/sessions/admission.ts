import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AsmConfig } from '../config.js';
import { AsmError } from '../errors/kinds.js';
import { fromLaneError } from '../errors/from-lanes.js';
import { LaneError, type CommandHandle, type LaneErrorCode } from '../lanes/types.js';
import type { Cluster } from '../nodes/cluster.js';
import { sessionRemoteOptions } from '../nodes/remote-options.js';
import type { ProviderDefinition } from '../providers/types.js';
import type { CreateRunBody } from '../schemas/api.js';
import type { TenantDirectory } from '../tenants.js';
import type { AdmissionCounts, RunRecord, SessionRecord, Store } from '../store/types.js';
import type { CommandBus } from './commands.js';
import type { Placement } from './placement.js';
import type { Quotas } from './quotas.js';
import type { RunRecorder } from './recorder.js';
import { runAgentOptions } from './run-options.js';
import { sessionLockHeld, withSessionLock } from './session-lock.js';
import { currentTraceparent } from './tracing.js';

/** Lane errors of a command cancelled by someone who ends its run. */
const ENDED_BY_CANCELLER = new Set<LaneErrorCode>(['cancelled', 'shutdown_in_progress']);

export interface AdmissionDeps {
  config: AsmConfig;
  store: Store;
  cluster: Cluster;
  commands: CommandBus;
  recorder: RunRecorder;
  placement: Placement;
  quotas: Quotas;
  providers: Map<string, ProviderDefinition>;
  tenants: TenantDirectory;
  log: Logger;
}

/**
 * Per-session admission, above the lanes: a session runs at most max_concurrent_runs at once and
 * holds at most max_queued_runs more in its own FIFO; beyond that a submit is refused with
 * at_capacity. A run that may start is handed to its queue lane; when a run ends, the session's
 * oldest waiting run is handed over. Decisions of one session hold its lock across processes.
 *
 * Across the tenant's sessions, a run that would start holds one of its `active_runs` and a run
 * that would wait one of its `queued_runs` (quotas.ts); beyond either the submit is refused with
 * quota_exceeded. A waiting run handed over takes the slot of the run that ended, before that run
 * lets it go, so no submit meanwhile finds the tenant below its quota.
 */
/** The request a session or run came from: a run's is stamped on its record and every event of it, and named on the log lines about it. */
export interface RequestOrigin {
  /** The x-request-id of the HTTP request that created it. */
  requestId?: string;
}

export class Admission {
  /** Runs being handed over again after their command failed: one hand-over each, however many watched the command. */
  private readonly handingOverAgain = new Set<string>();

  constructor(private readonly deps: AdmissionDeps) {
    deps.recorder.onRunEnded((run) => this.runEnded(run));
  }

  /**
   * Admit a run to an open session of `tenant`: dispatched now, or queued in the session's FIFO. The
   * session is read once, under its lock: a session of another tenant is not found, as one that does not exist.
   */
  submit(tenant: string, sessionId: string, body: CreateRunBody, origin: RequestOrigin = {}): Promise<RunRecord> {
    // Read here, in the caller's context: the trace of the request that creates the run.
    const traceparent = currentTraceparent();
    return withSessionLock(this.deps.cluster, sessionId, () => this.admit(tenant, sessionId, body, { ...origin, ...(traceparent && { traceparent }) }));
  }

  private async admit(tenant: string, sessionId: string, body: CreateRunBody, origin: RequestOrigin & { traceparent?: string }): Promise<RunRecord> {
    const { store, placement, recorder } = this.deps;
    // The session, its counts and its last seq in one read (unused if the session refuses).
    const view = await store.admissionView(sessionId);
    if (!view || view.session.tenant !== tenant) throw new AsmError('not_found', `session ${sessionId} not found`);
    const { session, counts, lastSeq } = view;
    // Checked at each run too: the operator may have withdrawn the grant since the session was created.
    this.deps.tenants.assertProvider(tenant, session.provider);
    if (session.state !== 'open') throw new AsmError('conflict', `session ${sessionId} is ${session.state}; it takes no new runs`);
    const provider = this.deps.providers.get(session.provider)!;
    const queue = body.queue ?? session.queue;
    // Checked again for the session's own queue: the operator may have unmarked its lane since.
    placement.assertRunQueue(queue);
    const lane = body.lane ?? session.lane;
    const executionMode = body.execution_mode ?? session.execution_mode;
    const agent = runAgentOptions(provider, session, body);
    const observability = await placement.resolve(provider, { requested: lane, executionMode, queue, providerPermissionMode: agent.provider_permission_mode });
    const remote = executionMode === 'remote_node' ? await sessionRemoteOptions(this.deps.config, session, body.driver_opts) : undefined;
    if (remote) await placement.assertRemoteCli(provider, remote.remote_node);
    const surface = body.execution_surface ?? session.execution_surface;
    placement.assertSurface(surface, executionMode, observability);
    const caller = { ...session.metadata, ...body.metadata };

    const { inFlight, waiting } = await this.checked(session, counts, (c) => c.waiting === 0 || c.waiting >= session.max_queued_runs);
    const dispatchNow = inFlight < session.max_concurrent_runs;
    if (!dispatchNow && waiting >= session.max_queued_runs) {
      throw new AsmError('at_capacity', `session ${sessionId} is at capacity: ${inFlight} running, ${waiting} queued (max_queued_runs ${session.max_queued_runs})`, {
        details: { running: inFlight, queued: waiting },
      });
    }

    const runId = `run_${randomUUID()}`;
    await this.deps.quotas.take(session.tenant, dispatchNow ? 'active_runs' : 'queued_runs', runId);
    const run: RunRecord = {
      id: runId,
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
      // Recorded as handed over already, so the hand-over below needs no write of its own; a process
      // that dies before the lane has it leaves it to resumeQueued, as a crash right after an update would.
      dispatched: dispatchNow,
      owner: null,
      interrupt_requested: false,
      events_after: lastSeq,
      // The caller's metadata (the session's, then the run's) rides on every event, and so on the result;
      // so do the id and the trace of the request that created the run.
      observability: {
        ...observability,
        ...(Object.keys(caller).length > 0 && { caller }),
        ...(origin.requestId && { request_id: origin.requestId }),
        ...(origin.traceparent && { traceparent: origin.traceparent }),
      },
      options: {
        lane,
        execution_mode: executionMode,
        driver_opts: { ...session.driver_opts, ...(body.driver_opts ?? {}) },
        continuation: body.continuation ?? true,
        agent,
        ...(remote && { remote }),
        ...(surface.kind !== 'local_subprocess' && { execution_surface: surface }),
        output_limit_bytes: this.deps.quotas.runOutputLimit(session.tenant, this.deps.config.limits.runOutputBytes),
      },
    };
    await recorder.serialize(run.id, () => recorder.createRun(run, 'run_queued', { queue, position: dispatchNow ? 0 : waiting + 1 }, () => this.releaseHoldings(run)));
    if (dispatchNow) {
      // A full run lane refuses the submit itself (429): the run is recorded as failed, never left queued.
      const refused = await this.handOver(run);
      if (refused?.kind === 'queue_full') {
        throw new AsmError('queue_full', `queue: ${refused.message}; retry later`, { details: { field: 'queue', queue, run_id: run.id } });
      }
    }
    return run;
  }

  /** Mark a waiting run dispatched and hand it to its queue lane (handOver). */
  private async dispatch(run: RunRecord): Promise<AsmError | undefined> {
    await this.deps.store.runs.update(run.id, { dispatched: true });
    return this.handOver(run);
  }

  /** Hand a run recorded as dispatched to its queue lane; a lane that refuses it (full, shutting down) ends it, and the refusal is returned. */
  private async handOver(run: RunRecord): Promise<AsmError | undefined> {
    try {
      this.watch(await this.deps.commands.submitRun(run.queue, run), run.id, this.deps.config.cluster.runHandOvers);
      return undefined;
    } catch (err) {
      const refusal = fromLaneError(err);
      await this.deps.recorder.finishWithoutStart(run.id, refusal);
      return refusal;
    }
  }

  /**
   * A run ended, freeing a slot of its session: the oldest waiting run takes it; then the ended run's
   * holdings go. Where nothing waits and nobody holds the session's lock, the holdings just go, and
   * the lock is not taken: taking it held up the session's next submit, which waited for this end's
   * three round trips in Redis mode (bench/RESULTS.md, twenty-seventh pass). Read in this order, the
   * two cannot miss a run: the ended run left the session's in-flight index before this is called, so
   * a submit that could still queue a run behind it read the session before that, under the lock,
   * which it holds until its run is written. The lock is free at the first read only if that submit
   * wrote its run before it, and then the second read sees the run.
   */
  private runEnded(ended: RunRecord): void {
    const { cluster, store, log } = this.deps;
    const sessionId = ended.session_id;
    const nothingWaits = async () => {
      if (await sessionLockHeld(cluster, sessionId)) return false;
      const view = await store.admissionView(sessionId);
      return !view || view.session.state !== 'open' || view.counts.waiting === 0;
    };
    void (async () => {
      if (await nothingWaits()) return this.releaseHoldings(ended);
      await withSessionLock(cluster, sessionId, async () => {
        try {
          await this.startNext(sessionId);
        } finally {
          await this.releaseHoldings(ended);
        }
      });
    })().catch((err) => log.error({ err, sessionId }, 'failed to start the next queued run'));
  }

  /**
   * After the store came back from an outage (sweeps.ts): a queued run whose hand-over to its lane
   * may be missing, because the write was refused while Redis was away or Redis lost it with its last
   * second of writes (`appendfsync everysec`), is handed over again. A dispatched one is submitted
   * again under its own id, which joins its job if the job is still there, or revived from the
   * dead-letter queue if its command failed there meanwhile (CommandBus.resubmitRuns); a waiting one is started
   * if its session has a free slot (the end that should have started it may have failed meanwhile).
   */
  async resumeQueued(): Promise<void> {
    const waitingIn = new Set<string>();
    const dispatched: RunRecord[] = [];
    for (const run of await this.deps.store.runs.listUnfinished()) {
      if (run.state !== 'queued' || run.owner !== null) continue;
      if (run.dispatched) dispatched.push(run);
      else waitingIn.add(run.session_id);
    }
    const handles = await this.deps.commands.resubmitRuns(dispatched);
    handles.forEach((handle, i) => this.watch(handle, dispatched[i]!.id, this.deps.config.cluster.runHandOvers));
    for (const sessionId of waitingIn) await withSessionLock(this.deps.cluster, sessionId, async () => {
      while (await this.startNext(sessionId));
    });
  }

  /**
   * A run's outcome is recorded by its own events; its command's failure only feeds the DLQ and
   * metrics, except in one case: a command that failed while its run is still queued, dispatched and
   * unowned never got as far as reading the run (the store was away when its lane ran it), and no
   * command is left to run it. Nothing else would: the reconcile after the outage (resumeQueued) may
   * have read the DLQ before the failure landed there, and joined the failing command instead (found
   * by test/faults/redis-aof-restart.test.ts). Such a run is handed over again, from the DLQ, at most
   * `handOversLeft` times (ASM_RUN_HAND_OVERS); after that it waits in the DLQ for the next reconcile
   * (resumeQueued). A cancelled command (an interrupt, a close, a shutdown) is being ended by
   * whoever cancelled it.
   */
  private watch(handle: CommandHandle, runId: string, handOversLeft: number): void {
    handle.result
      .catch(async (err: unknown) => {
        if ((err instanceof LaneError && ENDED_BY_CANCELLER.has(err.code)) || this.handingOverAgain.has(runId)) return;
        this.handingOverAgain.add(runId);
        try {
          const run = await this.deps.store.runs.get(runId);
          if (run?.state !== 'queued' || !run.dispatched || run.owner !== null) return;
          if (handOversLeft === 0) {
            this.deps.log.warn({ runId, err }, 'the command of a queued run failed again before it read the run; it waits in the dead-letter queue for the next reconcile (ASM_RUN_HAND_OVERS)');
            return;
          }
          this.deps.log.warn({ runId, err }, 'the command of a queued run failed before it read the run; handing it over again');
          const [again] = await this.deps.commands.resubmitRuns([run]);
          this.watch(again!, runId, handOversLeft - 1);
        } finally {
          this.handingOverAgain.delete(runId);
        }
      })
      .catch((err: unknown) => this.deps.log.error({ err, runId }, 'failed to hand a run over again after its command failed'));
  }

  /** The session's oldest waiting run takes a free slot, if there is one (call holding the session's lock); false when none did. */
  private async startNext(sessionId: string): Promise<boolean> {
    const { store, quotas } = this.deps;
    const view = await store.admissionView(sessionId);
    if (!view || view.session.state !== 'open') return false;
    const { session, counts } = view;
    const { inFlight, waiting } = await this.checked(session, counts, () => true);
    if (waiting === 0 || inFlight >= session.max_concurrent_runs) return false;
    const next = await store.runs.oldestWaiting(sessionId);
    if (!next) return false;
    // Whatever the limit: a run waits only while its session is full, so this slot is the ended run's.
    await quotas.add(next.tenant, 'active_runs', next.id);
    await quotas.release(next.tenant, 'queued_runs', next.id);
    await this.dispatch(next);
    return true;
  }

  /**
   * The session's runs in flight and waiting, `counts` as read from the store's indexes: O(1) in the
   * session's history. When the session looks full and `decisive` says a stale entry would change the
   * answer (a run waiting behind nothing, or refused), its in-flight index is checked against the
   * records (O(max_concurrent_runs)), so an entry left by a process that died mid-update holds no slot.
   */
  private async checked(session: SessionRecord, counts: AdmissionCounts, decisive: (counts: AdmissionCounts) => boolean): Promise<AdmissionCounts> {
    return counts.inFlight >= session.max_concurrent_runs && decisive(counts) ? this.deps.store.runs.recountInFlight(session.id) : counts;
  }

  private async releaseHoldings(run: RunRecord): Promise<void> {
    await Promise.all([this.deps.quotas.release(run.tenant, 'active_runs', run.id), this.deps.quotas.release(run.tenant, 'queued_runs', run.id)]);
  }
}
