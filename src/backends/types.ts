import type { ProviderEvent } from '../schemas/events.js';
import type { ExecutionSurface } from '../schemas/api.js';
import type { ApprovalDecision, ProviderDefinition, ProviderRunInput } from '../providers/types.js';

/**
 * A backend executes one run and reports normalized events. The core backend runs the provider's CLI
 * as a subprocess, on an API process or, for a remote_node run, on the worker that owns the run.
 */

export type InterruptReason = 'user' | 'deadline' | 'timeout' | 'shutdown';

export interface BackendRunSpec extends ProviderRunInput {
  provider: ProviderDefinition;
  /** Resolved binary path or name. */
  binary: string;
  /** Where the CLI process is placed (surfaces.ts); the SDK lane runs in-process and has none but local. */
  surface: ExecutionSurface;
  /** Name of the node executing the run, reported in run_started. */
  node: string;
  /** Deadline for the whole run; the backend interrupts with reason 'deadline' when it passes. */
  deadlineMs: number;
  /** When approvals expire; stamped on approval_requested as expires_at. */
  approvalTimeoutMs: number;
}

/**
 * Receives events in order. The first is always run_started (or a terminal error when the CLI could not
 * start); exactly one terminal event (result, error, run_completed) comes last. `approval_requested`
 * events carry the approval_id the backend assigned.
 */
export type EventSink = (event: ProviderEvent) => void;

export interface BackendRun {
  /** Resolves once the terminal event was emitted and the process is gone. Never rejects. */
  readonly done: Promise<void>;
  /** Forward a decision to the CLI. Rejects with AsmError not_found if the approval is not pending here. */
  decide(approvalId: string, decision: ApprovalDecision, reason: string | null): Promise<void>;
  /** Stop the run; its terminal event is error user_cancelled (user/shutdown) or timeout (deadline/timeout). */
  interrupt(reason: InterruptReason): Promise<void>;
}

export interface Backend {
  readonly name: string;
  start(spec: BackendRunSpec, sink: EventSink): BackendRun;
}
