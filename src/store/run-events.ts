import type { RunRecord } from './types.js';

/**
 * Where a read of one run's events starts in its session's log: after `after`, and after the
 * session's last seq when the run was created (`events_after`), since no event of a run comes before
 * its record. So a run's page does not scan the session's earlier runs' events.
 */
export function runEventsAfter(run: Pick<RunRecord, 'events_after'>, after: number): number {
  return Math.max(after, run.events_after ?? 0);
}
