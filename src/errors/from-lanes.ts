import { AsmError, badField, cancelledRun } from './kinds.js';
import { LaneError } from '../lanes/types.js';

/** The lane engine's refusals (lanes/errors.ts) as error kinds: queue_full stays 429, an unreachable store 503. */
export function fromLaneError(err: unknown): AsmError {
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
      return cancelledRun('before it started');
    case 'unavailable':
      return new AsmError('not_ready', err.message);
    default:
      return new AsmError('unknown', err.message);
  }
}

/** Whether a lane command was aborted by its lane's timeout (as opposed to a cancel). */
export function abortedByTimeout(reason: unknown): boolean {
  return reason instanceof LaneError && reason.code === 'timeout';
}

/** The terminal error of a run whose lane command was aborted `when` (e.g. "before it started"). */
export function fromLaneAbort(reason: unknown, when: string): AsmError {
  return abortedByTimeout(reason) ? new AsmError('timeout', `run timed out in its queue lane ${when}`) : cancelledRun(when);
}
