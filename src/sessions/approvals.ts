import { context, trace } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { AsmError } from '../errors/kinds.js';
import { runLogFields } from '../logger.js';
import type { Cluster } from '../nodes/cluster.js';
import type { ApprovalDecision } from '../providers/types.js';
import type { EventPayload } from '../schemas/events.js';
import type { ApprovalRecord, RunRecord, Store } from '../store/types.js';
import type { ActiveRuns } from './active-runs.js';
import type { RunRecorder } from './recorder.js';
import { withSessionLock } from './session-lock.js';
import { contextOf, tracer } from './tracing.js';

export interface ApprovalBookDeps {
  store: Store;
  recorder: RunRecorder;
  active: ActiveRuns;
  cluster: Cluster;
  /** A decision submitted as the API's are: a command on the control lane (service.ts). */
  decideOnControlLane: (approvalId: string, decision: ApprovalDecision, reason: string) => Promise<unknown>;
  log: Logger;
}

/**
 * The approvals of the runs this process executes: recording a request, and deciding one, which
 * appends approval_resolved and hands the decision to the run's CLI. Deadlines are not timers here:
 * the store indexes them and the sweep (sweeps.ts) expires them, so a deadline still fires when the
 * process that recorded the approval is gone. Decisions for runs of other processes are routed to
 * their owner first (control.ts).
 */
export class ApprovalBook {
  constructor(private readonly deps: ApprovalBookDeps) {}

  /**
   * Store the approval a backend asked for, before its event is appended, so a client that answers
   * the event at once finds it. A tool granted for the session (allow_for_session) is allowed at once.
   */
  async record(run: RunRecord, payload: EventPayload<'approval_requested'>): Promise<void> {
    const { store, recorder, log } = this.deps;
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
    await recorder.durably(run.id, () => store.approvals.create(approval));
    const session = await store.sessions.get(run.session_id);
    if (session?.granted_tools.includes(payload.subject)) {
      // Decided outside this event's turn of the run's chain, which the decision itself joins:
      // so its approval_resolved follows the approval_requested appended in this turn.
      // Through the control lane, as every decision: it overtakes agent work and is counted there.
      void this.deps.decideOnControlLane(payload.approval_id, 'allow', 'allowed_for_session').catch((err) =>
        log.warn({ err, ...runLogFields(run), approvalId: payload.approval_id }, 'auto-allow failed'),
      );
    }
  }

  /**
   * Resolve a pending approval: 404 when unknown, 409 when already decided. The resolution event is
   * appended before the decision reaches the CLI, so it precedes whatever the tool does next.
   */
  async decide(approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<ApprovalRecord> {
    const { store, recorder } = this.deps;
    const known = await store.approvals.get(approvalId);
    if (!known) throw notFound(approvalId);
    return recorder.serialize(known.run_id, async () => {
      const outcome = await store.approvals.resolve(approvalId, decision, reason);
      if (outcome.outcome === 'not_found') throw notFound(approvalId);
      if (outcome.outcome === 'already_resolved') {
        throw new AsmError('conflict', `approval ${approvalId} was already resolved (${outcome.approval.decision})`, {
          domain: 'approval',
          details: { decision: outcome.approval.decision, reason: outcome.approval.reason },
        });
      }
      await this.traceWait(outcome.approval);
      if (await recorder.appendIfRunning(known.run_id, 'approval_resolved', { approval_id: approvalId, decision, reason })) {
        if (decision === 'allow_for_session') await this.grantForSession(outcome.approval);
        await this.toCli(known.run_id, approvalId, decision, reason);
      }
      return outcome.approval;
    });
  }

  /**
   * The approval's span: from its request to its decision, in the run's trace, linked to what decided
   * it (a request's span; none for a timeout). Drawn once decided, as a span may not outlive its process.
   */
  private async traceWait(approval: ApprovalRecord): Promise<void> {
    // Decisions reach the process that runs the run, whose events carry its trace: no store read then.
    const active = this.deps.active.get(approval.run_id);
    const traceparent = active ? active.events[0]?.metadata.traceparent : (await this.deps.store.runs.get(approval.run_id))?.observability.traceparent;
    const decider = trace.getSpan(context.active())?.spanContext();
    const span = tracer.startSpan(
      'approval',
      {
        startTime: new Date(approval.requested_at),
        attributes: { 'asm.approval_id': approval.id, 'asm.run_id': approval.run_id, 'asm.approval.subject': approval.subject, 'asm.approval.decision': approval.decision ?? '', 'asm.approval.reason': approval.reason ?? '' },
        links: decider ? [{ context: decider }] : [],
      },
      contextOf(traceparent),
    );
    span.end(approval.resolved_at ? new Date(approval.resolved_at) : undefined);
  }

  /**
   * Later approvals for the same tool in this session are allowed without asking. A grant never
   * widens a guardrail: a tool outside the run's non-empty allowed_tools is allowed this once only.
   */
  private async grantForSession(approval: ApprovalRecord): Promise<void> {
    const { store, cluster } = this.deps;
    const guardrail = (await store.runs.get(approval.run_id))?.options.agent.allowed_tools ?? [];
    if (guardrail.length > 0 && !guardrail.includes(approval.subject)) return;
    await withSessionLock(cluster, approval.session_id, async () => {
      const session = await store.sessions.get(approval.session_id);
      if (session && !session.granted_tools.includes(approval.subject)) {
        await store.sessions.update(session.id, { granted_tools: [...session.granted_tools, approval.subject] });
      }
    });
  }

  private async toCli(runId: string, approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<void> {
    const active = this.deps.active.get(runId);
    if (!active?.backend || active.ended) return;
    await active.backend.decide(approvalId, decision, reason).catch((err) => {
      // The CLI may have withdrawn the request or the run may be ending; the decision is recorded either way.
      if (!(err instanceof AsmError && err.kind === 'not_found')) throw err;
    });
  }
}

export function notFound(approvalId: string): AsmError {
  return new AsmError('not_found', `approval ${approvalId} not found`, { domain: 'approval' });
}
