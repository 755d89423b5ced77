import { AsmError } from '../errors.js';
import type { ApprovalDecision } from '../providers/types.js';
import type { EventPayload } from '../schemas/events.js';
import type { ApprovalRecord, Store } from '../store/types.js';

/**
 * The approval index: approval_id → run, and the one path by which a decision (from REST, WebSocket,
 * the deadline sweep, or an allow_for_session rule) reaches the run's CLI. Deadlines are not timers
 * here: the store indexes them and the session service's sweep expires them, so a deadline still
 * fires when the process that recorded the approval is gone.
 */

export interface ApprovalRunLink {
  /** Serialise with the run's own events, so nothing is appended after its terminal event. */
  withRun<T>(runId: string, work: () => Promise<T>): Promise<T>;
  /** Append an event to the run (inside withRun). Returns false when the run already ended. */
  emit(runId: string, kind: 'approval_resolved', payload: EventPayload<'approval_resolved'>): Promise<boolean>;
  /** Forward the decision to the backend executing the run, wherever it is. */
  forward(runId: string, approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<void>;
}

export class ApprovalBook {
  constructor(
    private readonly store: Store,
    private readonly link: ApprovalRunLink,
  ) {}

  /**
   * Resolve a pending approval: 404 when unknown, 409 when already decided. The resolution event is
   * appended before the decision reaches the CLI, so it precedes whatever the tool does next.
   */
  async decide(approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<ApprovalRecord> {
    const known = await this.store.approvals.get(approvalId);
    if (!known) throw new AsmError('not_found', `approval ${approvalId} not found`, { domain: 'approval' });
    return this.link.withRun(known.run_id, async () => {
      const outcome = await this.store.approvals.resolve(approvalId, decision, reason);
      if (outcome.outcome === 'not_found') throw new AsmError('not_found', `approval ${approvalId} not found`, { domain: 'approval' });
      if (outcome.outcome === 'already_resolved') {
        throw new AsmError('conflict', `approval ${approvalId} was already resolved (${outcome.approval.decision})`, {
          domain: 'approval',
          details: { decision: outcome.approval.decision, reason: outcome.approval.reason },
        });
      }
      const emitted = await this.link.emit(known.run_id, 'approval_resolved', { approval_id: approvalId, decision, reason });
      if (emitted) await this.link.forward(known.run_id, approvalId, decision, reason);
      return outcome.approval;
    });
  }

  /**
   * A run is ending: resolve what it still waits on as denied (reason "run_ended"), inside the run's
   * serialised event path and before its terminal event.
   */
  async closeForRun(runId: string): Promise<void> {
    for (const approval of await this.store.approvals.listPending({ runId })) {
      const outcome = await this.store.approvals.resolve(approval.id, 'deny', 'run_ended');
      if (outcome.outcome !== 'resolved') continue;
      await this.link.emit(runId, 'approval_resolved', { approval_id: approval.id, decision: 'deny', reason: 'run_ended' });
    }
  }
}
