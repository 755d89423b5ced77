import type { BackendRun } from '../backends/types.js';
import type { AsmError } from '../errors/kinds.js';
import type { AsmEvent } from '../schemas/events.js';
import type { RunRecord } from '../store/types.js';
import type { RunSnapshot } from './run-diffs.js';

/** A run executing in this process. */
export interface ActiveRun {
  /**
   * The run as this process last wrote it (its owner's claim, its start, its end): what an interrupt of it
   * here answers with, and whose tenant it is checked against, without a read (one round trip less
   * each in Redis mode). Only this process writes a run while it executes it.
   */
  record: RunRecord;
  /** Set once the backend is started; absent only for the instant between registration and start. */
  backend?: BackendRun;
  /** Events of this run so far, for the projection of its result. */
  events: AsmEvent[];
  /** Its terminal event is recorded (or it was fenced): nothing more is written for it. */
  ended: boolean;
  /** The run as its terminal event left it, where this process recorded that: its lane command's outcome, with no read. */
  endedAs?: RunRecord;
  /** Bytes of output (event payloads, as JSON) the run may still produce: its limit, counted down. */
  outputLeft: number;
  /**
   * Retries its lane command still allows (CommandContext.retriesLeft): a retryable failure before
   * the agent started (no run_started yet) is then left to the retry instead of ending the run.
   */
  retriesLeft: number;
  /** Such a failure, held back for the retry: the run stays queued, with no terminal event. */
  startFailure?: AsmError;
  /**
   * The workspace as the run found it (run-diffs.ts), taken while the agent starts; null when no
   * diff is kept, absent when the backend never asked for it (its agent did not start). Never rejects.
   */
  snapshot?: Promise<RunSnapshot | null>;
  /** The cluster's heartbeat-lapse count when this run was last confirmed to be this process's. */
  checkedLapses: number;
  /**
   * The run may have pending approvals: it asked for one here, or an earlier attempt of its lane
   * command may have. Only the process executing a run creates its approvals, so while this is
   * false its end has none to deny, and reads none (RunRecorder.denyPendingApprovals).
   */
  mayHaveApprovals: boolean;
}

/** The runs executing in this process, by run id: the only place that holds their backends. */
export type ActiveRuns = Map<string, ActiveRun>;
