import { AsmError, cancelledRun } from '../errors/kinds.js';
import type { LaneEngine } from '../lanes/types.js';
import { OwnerUnreachable, type Cluster, type ControlReply, type ControlRequest } from '../nodes/cluster.js';
import type { ApprovalDecision } from '../providers/types.js';
import { isTerminalRunState } from '../schemas/api.js';
import type { ApprovalRecord, RunRecord, Store } from '../store/types.js';
import type { ActiveRuns } from './active-runs.js';
import { notFound, type ApprovalBook } from './approvals.js';
import type { RunRecorder } from './recorder.js';

export interface ControlRouterDeps {
  store: Store;
  engine: LaneEngine;
  cluster: Cluster;
  recorder: RunRecorder;
  approvals: ApprovalBook;
  active: ActiveRuns;
  /** How long a run's owner may take to acknowledge a control request (ASM_CONTROL_TIMEOUT_MS). */
  controlTimeoutMs: number;
  /** A worker's acceptance of a remote_node run handed to it (nodes/accept.ts); absent on an API process. */
  acceptRemoteRun?: (runId: string) => Promise<unknown>;
}

/**
 * Interrupts and approval decisions, wherever their run is. A run belongs to the process executing
 * it (its `owner`), the only one that holds its CLI: control requests for a run of another process
 * are handed to that owner through the cluster, and this process serves the ones addressed to it.
 */
export class ControlRouter {
  constructor(private readonly deps: ControlRouterDeps) {}

  /** Interrupt a run: a queued one ends at once, a running one is stopped by whoever runs it. */
  async interrupt(runId: string): Promise<RunRecord> {
    const { store, engine, recorder, active } = this.deps;
    const local = active.get(runId);
    // A run whose CLI runs here and has not ended is stopped, and answered as this process holds it,
    // with nothing read (two round trips less in Redis mode): only this process writes it, short of
    // one ended elsewhere while this process was unreachable, whose CLI is being stopped anyway
    // (RunRecorder.stillOwned).
    if (local?.backend && !local.ended) {
      await local.backend.interrupt('user');
      return local.record;
    }
    const run = await store.runs.get(runId);
    if (!run) throw new AsmError('not_found', `run ${runId} not found`);
    if (isTerminalRunState(run.state)) throw new AsmError('conflict', `run ${runId} already ended (${run.state})`);
    if (local?.backend) {
      await local.backend.interrupt('user');
    } else if (!run.dispatched) {
      await recorder.finishWithoutStart(runId, cancelledRun('before it started'));
    } else if (run.owner !== null && run.owner !== this.deps.cluster.self) {
      // Its owner holds it: its CLI, or a worker's queue. A lane command of this process for it only
      // handed it over (execution.ts, handToWorker), and no longer reads its signal: cancelled, it
      // would answer 'active' and the run would start on the worker all the same.
      await this.interruptElsewhere(runId);
    } else {
      const where = await engine.cancel(runId, 'user');
      if (where === 'pending') await recorder.finishWithoutStart(runId, cancelledRun('before it started'));
      else if (where === 'unknown') await this.interruptElsewhere(runId);
    }
    return (await store.runs.get(runId))!;
  }

  /** The run's lane job is held by another process, or is between processes: reach it through the flag and its owner. */
  async interruptElsewhere(runId: string): Promise<void> {
    const flagged = await this.deps.store.runs.update(runId, { interrupt_requested: true });
    const owner = flagged.owner;
    if (owner === null) return; // its executor reads the flag when it takes the run
    if (owner === this.deps.cluster.self) return this.interruptHere(runId);
    const reply = await this.toOwner(owner, { kind: 'interrupt', runId }, this.timeoutFor(flagged));
    if (reply && !reply.ok) throw AsmError.fromBody(reply.error);
  }

  /** Decide an approval; the decision goes to the process running the approval's run, which holds its CLI. */
  async decide(approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<ApprovalRecord> {
    const { store, cluster, approvals } = this.deps;
    const approval = await store.approvals.get(approvalId);
    if (!approval) throw notFound(approvalId);
    const run = await store.runs.get(approval.run_id);
    const owner = run?.owner;
    if (owner && owner !== cluster.self && !isTerminalRunState(run.state)) {
      const reply = await this.toOwner(owner, { kind: 'decide', approvalId, decision, reason }, this.timeoutFor(run));
      if (reply) {
        if (!reply.ok) throw AsmError.fromBody(reply.error);
        return reply.value as ApprovalRecord;
      }
    }
    return approvals.decide(approvalId, decision, reason);
  }

  /** A control request another process handed to this one, as the owner of its run (or the worker asked to start one). */
  async handle(request: ControlRequest): Promise<ControlReply> {
    try {
      if (request.kind === 'start') {
        if (!this.deps.acceptRemoteRun) throw new AsmError('conflict', `${this.deps.cluster.self} is an API process; only workers take remote_node runs`);
        return { ok: true, value: await this.deps.acceptRemoteRun(request.runId) };
      }
      if (request.kind === 'interrupt') {
        await this.interruptHere(request.runId);
        return { ok: true, value: null };
      }
      return { ok: true, value: await this.deps.approvals.decide(request.approvalId, request.decision, request.reason) };
    } catch (err) {
      return { ok: false, error: AsmError.from(err).toBody() };
    }
  }

  /**
   * An interrupt for a run this process owns: its CLI, or its lane command (still queued on a
   * worker's engine, or starting here with no CLI yet: the cancel aborts its signal, which the
   * executor reads before it starts the CLI).
   */
  private async interruptHere(runId: string): Promise<void> {
    const local = this.deps.active.get(runId);
    if (local?.backend) await local.backend.interrupt('user');
    else if ((await this.deps.engine.cancel(runId, 'user')) === 'pending') await this.deps.recorder.finishWithoutStart(runId, cancelledRun('before it started'));
  }

  /** A control request for the owner of a run; undefined when the owner is gone (the caller acts itself). */
  private async toOwner(owner: string, request: ControlRequest, timeoutMs: number): Promise<ControlReply | undefined> {
    try {
      return await this.deps.cluster.send(owner, request, timeoutMs);
    } catch (err) {
      if (err instanceof OwnerUnreachable) return undefined;
      throw err;
    }
  }

  /** How long a run's owner may take to acknowledge: remote_transport_call_timeout_ms for a remote run. */
  private timeoutFor(run: RunRecord): number {
    return run.options.remote?.remote_transport_call_timeout_ms ?? this.deps.controlTimeoutMs;
  }
}
